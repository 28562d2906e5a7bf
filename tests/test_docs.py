"""The documentation cannot rot: its snippets run, and the API reference is complete."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import re
import runpy
import sys

import pytest

from tests import snippets

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
PAGES = [page for page in PAGES if "_build" not in page.relative_to(DOCS).parts]
API_PAGES = sorted((DOCS / "api").glob("*.md"))
PUBLIC_MODULES = ("jaxmargin", "jaxmargin.functional", "jaxmargin.losses", "jaxmargin.linear",
                  "jaxmargin.nnx", "jaxmargin.linen")

# An autodoc directive, in MyST's ```{autofunction} form or in an eval-rst
# block's ``.. autofunction::`` form, and the option lines that follow it.
_DIRECTIVE = re.compile(
    r"^(?:```\{(?P<md>auto\w+)\}|[ \t]*\.\. (?P<rst>auto\w+)::)[ \t]*(?P<target>\S+)[ \t]*\n"
    r"(?P<options>(?:[ \t]*:[\w-]+:.*\n)*)", re.M)
_MEMBERS = re.compile(r"^[ \t]*:members:(.*)$", re.M)


def documented_names(pages: dict[str, str]) -> set[str]:
  """The full names that the autodoc directives of ``pages`` document.

  A directive documents its target; ``:members: a, b`` documents ``target.a``
  and ``target.b``. A bare ``:members:`` documents nothing more: every public
  name must be listed on its own, so that removing one is noticed.
  """
  names = set()
  for text in pages.values():
    for directive in _DIRECTIVE.finditer(text):
      target = directive["target"]
      names.add(target)
      for members in _MEMBERS.finditer(directive["options"]):
        names.update(f"{target}.{m.strip()}" for m in members[1].split(",") if m.strip())
  return names


def public_names() -> list[str]:
  """``module.name`` for every name in the ``__all__`` of every public module."""
  names = []
  for module_name in PUBLIC_MODULES:
    module = importlib.import_module(module_name)
    assert hasattr(module, "__all__"), f"{module_name} has no __all__"
    names.extend(f"{module_name}.{name}" for name in module.__all__)
  return names


def missing_from_reference(pages: dict[str, str]) -> list[str]:
  documented = documented_names(pages)
  return [name for name in public_names() if name not in documented]


def api_pages() -> dict[str, str]:
  return {page.name: page.read_text() for page in API_PAGES}


def test_every_public_name_exists():
  for name in public_names():
    module_name, attribute = name.rsplit(".", 1)
    assert hasattr(importlib.import_module(module_name), attribute), name


def test_every_public_name_is_in_the_api_reference():
  assert missing_from_reference(api_pages()) == []


def test_the_reference_check_notices_a_missing_name():
  pages = api_pages()
  removed = "jaxmargin.losses.padded_to_multi_hot"
  pages["losses.md"] = pages["losses.md"].replace(f".. autofunction:: {removed}\n", "")
  assert missing_from_reference(pages) == [removed]
  pages = api_pages()
  pages["nnx.md"] = re.sub(r"^```\{eval-rst\}\n\.\. autoclass:: jaxmargin\.nnx\.LossWeight\n",
                           "```{eval-rst}\n", pages["nnx.md"], flags=re.M)
  assert missing_from_reference(pages) == ["jaxmargin.nnx.LossWeight"]


def test_every_public_function_and_class_has_an_example_and_each_loss_its_formula():
  # The reference pages show the docstrings; pytest's --doctest-modules runs
  # their examples.
  for name in public_names():
    module_name, attribute = name.rsplit(".", 1)
    obj = getattr(importlib.import_module(module_name), attribute)
    if inspect.ismodule(obj):
      continue
    doc = inspect.getdoc(obj) or ""
    assert "\nExample:\n" in doc, f"{name} has no Example section"
    if attribute.endswith(("_loss", "Loss")):
      assert ".. math::" in doc, f"{name} has no formula"


def test_directives_in_both_syntaxes_and_member_lists_are_read():
  pages = {"a.md": "```{autofunction} m.f\n```\n",
           "b.md": "```{eval-rst}\n.. automodule:: m.sub\n   :members: g, h\n```\n"}
  assert documented_names(pages) == {"m.f", "m.sub", "m.sub.g", "m.sub.h"}


def test_every_page_has_a_python_snippet_or_is_known_not_to():
  # A page whose ```python fence was mistyped would silently run nothing.
  without = {p.relative_to(DOCS).as_posix() for p in PAGES
             if not snippets.python_blocks(p.read_text())}
  assert without <= {"changelog.md", "performance.md", "api/index.md", "api/jaxmargin.md",
                     "api/functional.md", "api/losses.md", "api/linear.md", "api/nnx.md",
                     "api/linen.md"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_snippets_run_and_print_what_their_comments_say(page):
  snippets.run_page(page)


def test_a_wrong_comment_fails_the_snippet_check(tmp_path):
  page = tmp_path / "page.md"
  page.write_text("```python\nprint(1 + 1)  # 3\n```\n")
  with pytest.raises(AssertionError, match="the comment says '3'"):
    snippets.run_page(page)
  page.write_text("```python\nfor _ in range(2):\n  pass\nprint(0.85000001)  # 0.85, as torch\n"
                  "print((1,))  # (1,)\n```\n")
  assert snippets.run_page(page) == 2


def test_loss_curves_script_draws_the_figure(tmp_path, monkeypatch):
  out = tmp_path / "curves.png"
  monkeypatch.setattr(sys, "argv", ["make_loss_curves.py", "--out", str(out)])
  runpy.run_path(str(DOCS / "figures" / "make_loss_curves.py"), run_name="__main__")
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
