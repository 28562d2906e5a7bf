"""Packaging promises: lean import, typed package, behaviour with JAX's defaults."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tomllib

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
