"""Sums over the class axis that XLA fuses with the arrays they sum."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def row_sums(*terms: jax.Array) -> tuple[jax.Array, ...]:
  """Sums each ``(N, C)`` array over its last axis, all in one pass.

  ``jnp.sum`` lowers to a plain reduction that XLA:CPU may hand to a library
  kernel, which first writes its (fused, elementwise) input out in full; one
  variadic ``lax.reduce`` stays a single loop fusion that computes the terms
  and all their sums while reading the inputs once. On this project's CPU
  benchmark that halves the time of the loss passes.

  Args:
    *terms: arrays of equal shape ``(..., C)``, each in the dtype of its sum.

  Returns:
    A tuple with one ``(...)`` array per input.
  """
  zeros = tuple(jnp.zeros((), t.dtype) for t in terms)
  return tuple(
    lax.reduce(
      terms,
      zeros,
      lambda a, b: tuple(u + v for u, v in zip(a, b, strict=False)),
      (terms[0].ndim - 1,),
    )
  )
