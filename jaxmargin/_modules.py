"""What the Flax modules of both APIs share: torch's constructor-time rules."""

from __future__ import annotations

from typing import cast

import jax

from jaxmargin import _validation as v
from jaxmargin._reduction import (
  INVALID_REDUCTION,
  INVALID_SOFT_REDUCTION,
  Reduction,
  check_reduction,
  legacy_reduction,
)


def module_reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> Reduction:
  """The reduction a ``torch.nn`` loss module settles on when it is built.

  torch resolves the legacy arguments (with their warning) in the module's
  constructor; so do we. The name itself is checked by
  :func:`check_module_reduction`.
  """
  if size_average is not None or reduce is not None:
    return cast(Reduction, legacy_reduction(size_average, reduce))
  return cast(Reduction, reduction)


def check_module_reduction(
  module: str, size_average: bool | None, reduce: bool | None, reduction: str, *, soft: bool
) -> None:
  """Rejects an unknown ``reduction`` when a module is built.

  torch checks the name only when the loss is called, which can be far from
  the typo; the check and its words are those of the call. ``soft``: the
  soft margin loss (no ``'elementwise_mean'`` alias, torch's other words).
  Legacy arguments override the name, as in torch, so it is not checked then.
  """
  if size_average is None and reduce is None:
    check_reduction(
      module,
      reduction,
      allow_elementwise_mean=not soft,
      invalid_message=INVALID_SOFT_REDUCTION if soft else INVALID_REDUCTION,
    )


def checked_margin(module: str, margin) -> jax.Array:
  """A margin as a real scalar array, rejected at construction (None, a string, ...)."""
  return v.as_scalar_margin(module, margin)


def checked_weight(module: str, weight: jax.typing.ArrayLike) -> jax.Array:
  """A class weight as a 1-D real array, rejected at construction as torch does.

  Its length must be the number of classes, which is known only at the call.
  """
  weight = v.as_real_array(module, "weight", weight)
  if weight.ndim != 1:
    raise ValueError(f"{module}: weight shape {weight.shape} is not one-dimensional; expected (C,)")
  if weight.shape[0] == 0:
    raise ValueError(f"{module}: weight shape (0,) has no class; expected (C,) with C >= 1")
  return weight


def checked_soft_weight(module: str, weight: jax.typing.ArrayLike) -> jax.Array:
  """A soft margin loss's weight as a real array, rejected at construction if not.

  Any shape that broadcasts to the input is allowed (as in torch), so only
  the dtype can be checked before the call.
  """
  return v.as_real_array(module, "weight", weight)
