"""Packaging promises: lean import, typed package, behaviour with JAX's defaults."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import tomllib

import pytest

import jaxmargin

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(code):
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        check=True, cwd=ROOT).stdout.strip()


def test_import_pulls_in_neither_flax_optax_nor_torch():
  out = _run("import jaxmargin, sys; "
             "print(sorted(m for m in ('flax','optax','torch') if m in sys.modules))")
  assert out == "[]"


def test_version_matches_pyproject_and_package_is_typed():
  meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
  assert jaxmargin.__version__ == meta["project"]["version"]
  assert (pathlib.Path(jaxmargin.__file__).parent / "py.typed").is_file()
  assert set(meta["project"]["dependencies"]) == {"jax>=0.6.2", "jaxlib>=0.6.2"}


def test_functional_module_exports_the_same_functions():
  from jaxmargin import functional
  for name in functional.__all__:
    assert getattr(jaxmargin, name) is getattr(functional, name)


def test_works_with_jax_defaults_int32_targets_and_float32():
  # The test session enables x64; users mostly do not. Check that setup too.
  out = _run(
      "import jax, jax.numpy as jnp, jaxmargin\n"
      "assert not jax.config.jax_enable_x64\n"
      "x = jnp.array([[0.1, 0.2, 0.4, 0.8]])\n"
      "y = jnp.array([[3, 0, -1, 1]])\n"
      "assert y.dtype == jnp.int32\n"
      "v, g = jax.value_and_grad(jaxmargin.multilabel_margin_loss)(x, y)\n"
      "m = jax.jit(jaxmargin.multi_margin_loss)(x, jnp.array([3]))\n"
      "s = jaxmargin.multilabel_soft_margin_loss(x, (y >= 0).astype(jnp.int32))\n"
      "print(v.dtype, g.dtype, m.dtype, s.dtype, f'{v:.4f} {m:.4f}')")
  assert out == "float32 float32 float32 float32 0.8500 0.3250"


@pytest.mark.parametrize("module", ["nnx", "linen"])
def test_flax_modules_without_flax_say_how_to_install_it(module):
  out = _run("import sys\n"
             "sys.modules['flax'] = None  # what Python does when Flax is not installed\n"
             "try:\n"
             f"  import jaxmargin.{module}\n"
             "except ImportError as exc:\n"
             "  print(type(exc.__cause__).__name__, '|', exc)\n")
  cause, message = out.split(" | ")
  assert cause == "ModuleNotFoundError"  # chained, so the real failure stays visible
  assert message.startswith(f"jaxmargin.{module} needs Flax")
  assert message.endswith('pip install "jaxmargin[flax]"')


def test_license_is_apache_2_and_declared_as_spdx():
  text = (ROOT / "LICENSE").read_text()
  for line in ("Apache License", "Version 2.0, January 2004",
               "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION",
               "END OF TERMS AND CONDITIONS"):
    assert line in text
  meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
  project = meta["project"]
  assert project["license"] == "Apache-2.0"
  assert project["license-files"] == ["LICENSE"]
  # A License classifier next to an SPDX expression is an error for setuptools and PyPI.
  assert not [c for c in project["classifiers"] if c.startswith("License ::")]
  # setuptools reads SPDX expressions and license-files from version 77 on.
  assert "setuptools>=77" in meta["build-system"]["requires"]
  assert set(project["urls"]) == {"Homepage", "Documentation", "Source", "Issues", "Changelog"}


@pytest.mark.parametrize("parser", ["yaml", "plain"])
def test_citation_cff_describes_this_release(parser, monkeypatch):
  text = (ROOT / "CITATION.cff").read_text()
  if parser == "yaml":
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load(text)
    assert cff["authors"] == [{"name": "The jaxmargin authors"}]
  else:
    # Without PyYAML (not in the test extra), the top-level scalars still say enough.
    fields = re.findall(r"^([\w-]+): *(.*?) *$", text, re.MULTILINE)
    cff = {key: value.strip('"') for key, value in fields}
  urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
  assert cff["cff-version"] == "1.2.0"
  assert str(cff["version"]) == jaxmargin.__version__
  assert cff["license"] == "Apache-2.0"
  assert cff["repository-code"] == urls["Source"]
  assert {"title", "message", "abstract", "authors"} <= set(cff)


def test_sdist_manifest_ships_what_the_test_suite_reads():
  # The CI's release step builds the sdist and lists it; this only catches a
  # MANIFEST.in edit that drops one of the directories the tests read.
  lines = [line.split("#")[0].split()
           for line in (ROOT / "MANIFEST.in").read_text().splitlines()]
  grafted = {words[1] for words in lines if words[:1] == ["graft"]}
  pruned = {words[1] for words in lines if words[:1] == ["prune"]}
  included = {name for words in lines if words[:1] == ["include"] for name in words[1:]}
  assert {"jaxmargin", "tests", "docs", "examples", "benchmarks"} <= grafted
  assert {"docs/_build", "examples/output"} <= pruned
  assert {"LICENSE", "README.md", "CONTRIBUTING.md", "CITATION.cff"} <= included
  for name in included:
    assert (ROOT / name).is_file(), name


def test_dir_of_each_public_module_is_its_public_api():
  import importlib
  for name in ("jaxmargin", "jaxmargin.functional", "jaxmargin.losses", "jaxmargin.linear",
               "jaxmargin.nnx", "jaxmargin.linen"):
    module = importlib.import_module(name)
    extra = ["__version__"] if name == "jaxmargin" else []
    assert dir(module) == sorted([*module.__all__, *extra]), name
    assert all(hasattr(module, attribute) for attribute in module.__all__), name
