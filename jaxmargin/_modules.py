"""What the Flax modules of both APIs share: torch's constructor-time rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmargin._reduction import legacy_reduction


def module_reduction(size_average: bool | None, reduce: bool | None,
                     reduction: str) -> str:
  """The reduction a ``torch.nn`` loss module settles on when it is built.

  torch resolves the legacy arguments (with their warning) in the module's
  constructor and checks the name only when the loss is called; so do we.
  """
  if size_average is not None or reduce is not None:
    return legacy_reduction(size_average, reduce)
  return reduction


def checked_weight(module: str, weight: jax.typing.ArrayLike) -> jax.Array:
  """A class weight as a 1-D array, rejected at construction as torch does."""
  weight = jnp.asarray(weight)
  if weight.ndim != 1:
    raise ValueError(f"{module}: weight shape {weight.shape} is not one-dimensional; "
                     "expected (C,)")
  return weight
