"""Memory: no N*C*C (or P*N*C) intermediate anywhere, forward or backward.

Deterministic properties asserted instead of timings: the shapes of every
intermediate in the traced program, and XLA's compiled temporary memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import jaxmargin

# Runs examples, subprocesses or large compiles: out of the fast tier (-m "not slow").
pytestmark = pytest.mark.slow


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


# --- jaxmargin.linear: nothing of order N*C ----------------------------------


def _fused_value_and_grad(name, reduction, num_rows, features, num_classes, slots=16,
                          chunk_size=None):
  from jaxmargin import linear
  h = jax.ShapeDtypeStruct((num_rows, features), jnp.float32)
  w = jax.ShapeDtypeStruct((features, num_classes), jnp.float32)
  b = jax.ShapeDtypeStruct((num_classes,), jnp.float32)
  if name == "multi_margin_loss":
    labels = jax.ShapeDtypeStruct((num_rows,), jnp.int32)
  else:
    labels = jax.ShapeDtypeStruct((num_rows, slots), jnp.int32)

  def loss(h, w, b, labels):
    return jnp.mean(getattr(linear, name)(h, w, labels, bias=b, reduction=reduction,
                                          chunk_size=chunk_size))

  return jax.value_and_grad(loss, argnums=(0, 1, 2)), (h, w, b, labels)


FUSED = ["multilabel_margin_loss", "multi_margin_loss", "multilabel_soft_margin_loss"]


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("name", FUSED)
def test_fused_compiled_temp_does_not_grow_with_c(name, reduction):
  # N=1024, D=64, K=16: the temp at C=1,000,000 is at most 1.2x that at
  # C=100,000 and below N*C*4/8 bytes. The kernel's gradient is an output.
  num_rows, features = 1024, 64
  temps = {}
  for num_classes in (100_000, 1_000_000):
    fn, args = _fused_value_and_grad(name, reduction, num_rows, features, num_classes)
    compiled = jax.jit(fn).lower(*args).compile()
    temps[num_classes] = compiled.memory_analysis().temp_size_in_bytes
  assert temps[1_000_000] <= 1.2 * temps[100_000], temps
  assert temps[1_000_000] < num_rows * 1_000_000 * 4 / 8, temps


@pytest.mark.parametrize("name", FUSED)
def test_fused_program_holds_no_array_of_order_n_times_c(name):
  # Every value of the traced program, loop bodies and custom rules included,
  # is far below N*C (the largest legitimate ones are the kernel and its
  # gradient, D*C, and a chunk of scores, N*256).
  num_rows, features, num_classes = 256, 4, 4096
  fn, args = _fused_value_and_grad(name, "none", num_rows, features, num_classes,
                                   chunk_size=256)
  sizes = _all_intermediate_sizes(jax.make_jaxpr(fn)(*args).jaxpr)
  assert max(sizes) < num_rows * num_classes / 8, max(sizes)
