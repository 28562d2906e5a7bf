"""Runs the ```python snippets of a Markdown page and holds them to their comments.

A page's snippets run in order in one namespace, as a reader would paste them
into one session. A top-level line ``print(...)  # value`` states what it
prints: the check passes when the output equals the comment, when the comment
starts with the output followed by a comma (``# 0.85, as torch``), or when
both parse as numbers within 1e-6 (the comment's part before its first comma).
Other ``print`` calls (in loops, without a comment) are not checked.

Snippets run with JAX's default 32-bit types, as for a reader, whatever the
test session configured.
"""

from __future__ import annotations

import pathlib
import re
import sys

from tests.jax_versions import enable_x64

_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
_CHECKED_PRINT = re.compile(r"^(print\(.*\))\s{2,}#\s?(.*?)\s*$")


def python_blocks(text: str) -> list[tuple[int, str]]:
  """The ```python blocks of Markdown ``text``: (first code line's number, code)."""
  return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in _BLOCK.finditer(text)]


def output_matches(got: str, want: str) -> bool:
  """Whether printed ``got`` is what the comment ``want`` says."""
  if got == want or want.startswith(got + ","):
    return True
  try:
    return abs(float(got) - float(want.split(",")[0])) < 1e-6
  except ValueError:
    return False


def run_page(path: pathlib.Path | str, text: str | None = None) -> int:
  """Runs every ```python block of a page and checks its commented prints.

  Args:
    path: the page; its name is the file name in tracebacks, whose line
      numbers are the page's.
    text: the page's Markdown, if not to be read from ``path``.

  Returns:
    How many ``print(...)  # value`` lines were checked.

  Raises:
    AssertionError: when a commented print printed something else, or did
      not run exactly once.
  """
  path = pathlib.Path(path)
  text = path.read_text() if text is None else text
  printed: dict[int, list[str]] = {}

  def record(*args, sep=" ", **_):
    caller = sys._getframe(1)  # pylint: disable=protected-access
    line = caller.f_lineno if caller.f_code.co_filename == str(path) else 0
    printed.setdefault(line, []).append(sep.join(map(str, args)))

  namespace = {"__name__": "__main__", "print": record}
  checked = 0
  with enable_x64(False):
    for first_line, code in python_blocks(text):
      # Blank lines in front, so that tracebacks and prints carry page lines.
      exec(compile("\n" * (first_line - 1) + code, str(path), "exec"), namespace)
      for offset, source in enumerate(code.splitlines()):
        expected = _CHECKED_PRINT.match(source)
        if not expected:
          continue
        line = first_line + offset
        outputs = printed.get(line, [])
        assert len(outputs) == 1, f"{path}:{line}: printed {len(outputs)} times"
        assert output_matches(outputs[0], expected.group(2)), (
            f"{path}:{line}: printed {outputs[0]!r}, the comment says "
            f"{expected.group(2)!r}")
        checked += 1
  return checked
