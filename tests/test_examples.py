"""The examples run and learn something, so they cannot rot."""

from __future__ import annotations

import pathlib
import re
import runpy

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_trains_a_useful_tagger(capsys):
  runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
  out = capsys.readouterr().out
  losses = [float(v) for v in re.findall(r"step +\d+ +multilabel_margin_loss (\S+)", out)]
  assert len(losses) == 5 and losses[-1] < losses[0] / 10
  precision = float(re.search(r"precision@3 +(\S+)", out).group(1))
  assert precision > 0.85


def test_readme_python_snippets_print_what_their_comments_say():
  # Each ``print(...)  # value`` line of a README snippet states its output:
  # run the snippets and hold them to it.
  readme = (EXAMPLES.parent / "README.md").read_text()
  snippets = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
  assert snippets
  checked = 0
  for snippet in snippets:
    expected = [line.split("#", 1)[1].split(",")[0].strip()
                for line in snippet.splitlines() if line.startswith("print(")]
    printed = []
    exec(compile(snippet, "README.md", "exec"),
         {"print": lambda *args: printed.append(" ".join(map(str, args)))})
    assert len(printed) == len(expected)
    for got, want in zip(printed, expected):
      try:
        assert abs(float(got) - float(want)) < 1e-6, (got, want)
      except ValueError:
        assert got == want, (got, want)
      checked += 1
  assert checked >= 4
