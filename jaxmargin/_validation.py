"""Trace-time checks of shapes and dtypes, and eager range checks of targets.

Every error names the loss, the argument, what it got and what it expected.
Shape and value problems raise ``ValueError``; dtype problems raise
``TypeError``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_HALF_DTYPES = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def as_float_array(fn: str, name: str, value: jax.typing.ArrayLike) -> jax.Array:
  """Converts ``value`` to an array and checks that it has a floating dtype."""
  array = jnp.asarray(value)
  if not jnp.issubdtype(array.dtype, jnp.floating):
    raise TypeError(
        f"{fn}: {name} dtype {array.dtype} is not a floating dtype; expected "
        "float16, bfloat16, float32 or float64"
    )
  return array


def as_real_array(fn: str, name: str, value: jax.typing.ArrayLike) -> jax.Array:
  """Converts ``value`` to an array and checks that it holds real numbers."""
  array = jnp.asarray(value)
  if array.dtype == jnp.bool_ or not (
      jnp.issubdtype(array.dtype, jnp.floating)
      or jnp.issubdtype(array.dtype, jnp.integer)
  ):
    raise TypeError(
        f"{fn}: {name} dtype {array.dtype} is not a real number dtype; "
        "expected a floating or integer dtype"
    )
  return array


def as_index_array(fn: str, name: str, value: jax.typing.ArrayLike) -> jax.Array:
  """Converts ``value`` to an array and checks that it holds class indices."""
  array = jnp.asarray(value)
  if not jnp.issubdtype(array.dtype, jnp.integer):
    raise TypeError(
        f"{fn}: {name} dtype {array.dtype} is not an integer dtype; expected "
        "integer class indices (any signed or unsigned integer dtype)"
    )
  return array


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
  """The dtype to compute in: half types accumulate in float32."""
  return jnp.dtype(jnp.float32) if jnp.dtype(dtype) in _HALF_DTYPES else jnp.dtype(dtype)


def check_matrix_input(fn: str, array: jax.Array) -> tuple[int, int]:
  """Checks torch's 'non-empty vector or matrix' rule; returns ``(N, C)``.

  A 0-D input is one sample with one class, a 1-D input ``(C,)`` is one
  sample, a 2-D input is ``(N, C)`` with ``N = 0`` allowed and ``C >= 1``.
  """
  if array.ndim > 2 or (array.ndim == 2 and array.shape[1] == 0) or (
      array.ndim == 1 and array.shape[0] == 0
  ):
    raise ValueError(
        f"{fn}: input shape {array.shape} is not a non-empty vector or matrix; "
        "expected (), (C,) or (N, C) with C >= 1"
    )
  if array.ndim == 2:
    return array.shape[0], array.shape[1]
  return 1, (array.shape[0] if array.ndim == 1 else 1)


def is_concrete(value: jax.typing.ArrayLike) -> bool:
  """Whether the values are known now (not abstract under a transformation)."""
  return not isinstance(value, jax.core.Tracer)


def check_p(fn: str, p: int) -> int:
  """Checks the hinge exponent of the multi-class margin loss (torch's rule)."""
  if p != 1 and p != 2:
    raise ValueError(f"{fn}: p is {p!r}; expected 1 or 2 (only p == 1 and p == 2 "
                     "supported)")
  return int(p)


def as_scalar_margin(fn: str, margin: jax.typing.ArrayLike) -> jax.Array:
  """Converts ``margin`` to a real scalar array."""
  array = as_real_array(fn, "margin", margin)
  if array.ndim != 0:
    raise ValueError(f"{fn}: margin shape {array.shape} is not a scalar; expected ()")
  return array


def check_target_range(
    fn: str, target: jax.typing.ArrayLike, low: int, high: int, name: str = "target"
) -> None:
  """Raises ``ValueError`` if a concrete target has a value outside [low, high].

  Traced targets are skipped: their values are unknown at trace time and the
  losses turn the rows holding them into NaN instead.
  """
  if not is_concrete(target):
    return
  values = np.asarray(target)
  if values.size == 0:
    return
  smallest, largest = values.min(), values.max()
  if smallest < low or largest > high:
    raise ValueError(
        f"{fn}: {name} values must lie in [{low}, {high}]; got values in "
        f"[{smallest}, {largest}]"
    )
