"""Memory: no N*C*C (or P*N*C) intermediate anywhere, forward or backward.

Deterministic properties asserted instead of timings: the shapes of every
intermediate in the traced program, and XLA's compiled temporary memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import jaxmargin


def _all_intermediate_sizes(jaxpr):
  """Sizes of every value a jaxpr and its sub-jaxprs (loops, custom rules) build."""
  sizes = []
  for eqn in jaxpr.eqns:
    sizes += [v.aval.size for v in eqn.outvars if hasattr(v.aval, "size")]
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          sizes += _all_intermediate_sizes(inner)
  return sizes


def _value_and_grad_jaxpr(name, num_rows, num_classes):
  x = jax.ShapeDtypeStruct((num_rows, num_classes), jnp.float32)
  if name == "multi_margin_loss":
    target = jax.ShapeDtypeStruct((num_rows,), jnp.int32)
  else:
    target = jax.ShapeDtypeStruct((num_rows, num_classes), jnp.int32)
  return jax.make_jaxpr(jax.value_and_grad(getattr(jaxmargin, name)))(x, target).jaxpr


@pytest.mark.parametrize("name", ["multilabel_margin_loss", "multi_margin_loss"])
def test_no_intermediate_grows_with_c_squared(name):
  num_rows, num_classes = 4, 256
  largest = max(_all_intermediate_sizes(_value_and_grad_jaxpr(name, num_rows, num_classes)))
  # N*C*C would be 262,144 elements. The public function runs the slot loop
  # and the sort under one lax.cond, so both methods' programs are walked here.
  assert largest <= 8 * num_rows * num_classes, largest


def test_compiled_value_and_grad_at_30000_classes_fits_16_nc_floats():
  num_rows, num_classes = 64, 30_000
  x = jax.ShapeDtypeStruct((num_rows, num_classes), jnp.float32)
  target = jax.ShapeDtypeStruct((num_rows, num_classes), jnp.int32)
  compiled = jax.jit(jax.value_and_grad(jaxmargin.multilabel_margin_loss)).lower(
      x, target).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  assert temp <= 16 * num_rows * num_classes * 4, temp
