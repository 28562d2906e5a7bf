"""The examples run and learn something, so they cannot rot."""

from __future__ import annotations

import pathlib
import re
import runpy

from tests import snippets

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_trains_a_useful_tagger(capsys):
  runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
  out = capsys.readouterr().out
  losses = [float(v) for v in re.findall(r"step +\d+ +multilabel_margin_loss (\S+)", out)]
  assert len(losses) == 5 and losses[-1] < losses[0] / 10
  precision = float(re.search(r"precision@3 +(\S+)", out).group(1))
  assert precision > 0.85


def test_readme_python_snippets_print_what_their_comments_say():
  # Each ``print(...)  # value`` line of a README snippet states its output.
  assert snippets.run_page(EXAMPLES.parent / "README.md") >= 4
