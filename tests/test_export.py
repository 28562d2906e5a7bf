"""Every public loss exports with ``jax.export`` for CPU, CUDA, ROCm and TPU at once.

An exported program is what runs on an accelerator or is served without
Python: it must hold no host callback (a ``custom_call`` to Python, which
neither a TPU nor a serialized program can run) and no 64-bit type (a TPU
has none, and a GPU's are slow). Checked with x64 off, as JAX's default and
as on a TPU: the suite turns it on (tests/conftest.py) for the comparisons
with torch.

In this process there is one device. With several, ``jaxmargin.linear``
runs its sweep as a ``custom_partitioning`` op (``jaxmargin/_class_parallel.py``),
a compile-time Python callback that ``jax.export`` cannot serialize.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest
from jax.experimental import checkify

from tests import programs
from tests.jax_versions import enable_x64

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
CUSTOM_CALL = re.compile(r"custom_call\s*@([\w.$-]+)")
# A 64-bit tensor type, of data: 0-d (tensor<i64>) or shaped (tensor<4x6xf64>).
WIDE_TENSOR = re.compile(r"tensor<(?:[0-9?]+x)*(?:f64|i64|ui64|complex<f64>)>")
# StableHLO writes some attributes as 64-bit tensors whatever the data's types
# (a reduce_window's padding, a collective's groups), and the scalar ones
# (`dimension = 1 : i64`, `array<i64: 1, 40>`) are no tensors: neither is data.
TENSOR_ATTRIBUTE = re.compile(r"\b\w+ = dense<[^>]*> : tensor<[^>]*>")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
WRAPPERS = ("value", "value_and_grad", "checkify")


def host_callbacks(text: str) -> set[str]:
  """The custom-call targets of a program that call back to Python."""
  return {t for t in CUSTOM_CALL.findall(text)
          if "callback" in t.lower() or "python" in t.lower()}


def wide_types(text: str) -> list[str]:
  """The lines of a program's text with a 64-bit tensor type of data."""
  return [line.strip() for line in TENSOR_ATTRIBUTE.sub("", text).splitlines()
          if WIDE_TENSOR.search(line)]


def exported_text(name: str, dtype: str, wrapper: str) -> str:
  with enable_x64(False):
    program = programs.programs(programs.data(DTYPES[dtype]))[name]
    fn = program.fn if wrapper == "value" else programs.value_and_grad(program)
    if wrapper == "checkify":
      fn = checkify.checkify(fn, errors=checkify.all_checks)
    exported = jax.export.export(jax.jit(fn), platforms=PLATFORMS)(*program.args)
    return exported.mlir_module()


def test_the_detectors_see_a_callback_and_a_64_bit_type():
  # Lowered, not exported: jax.export refuses a host callback outright.
  def with_callback(x):
    return jax.pure_callback(lambda v: v, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

  assert host_callbacks(jax.jit(with_callback).lower(jnp.ones(3, jnp.float32)).as_text())
  with enable_x64(True):
    text = jax.export.export(jax.jit(jnp.sum), platforms=PLATFORMS)(jnp.ones(3, jnp.float64))
  assert wide_types(text.mlir_module())


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", programs.NAMES)
def test_exports_for_every_platform_without_callbacks_or_64_bit_types(name, dtype, wrapper):
  if wrapper == "value_and_grad" and name not in programs.DIFFERENTIABLE:
    pytest.skip("not differentiable")
  if name.startswith("linear.") and jax.device_count() > 1:
    pytest.skip("with several devices the fused sweep is a custom_partitioning op, which "
                "jax.export cannot serialize")
  text = exported_text(name, dtype, wrapper)
  assert not host_callbacks(text)
  assert not wide_types(text), wide_types(text)[:5]
