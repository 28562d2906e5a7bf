"""Reduction names: torch's legacy arguments, validation, and applying a reduction."""

from __future__ import annotations

import warnings
from typing import Literal, cast

import jax
import jax.numpy as jnp

REDUCTIONS = ("none", "mean", "sum")
# The type of a ``reduction`` argument.
Reduction = Literal["none", "mean", "sum"]


def legacy_reduction(size_average: bool | None, reduce: bool | None) -> str:
  """Maps torch's deprecated ``size_average``/``reduce`` pair to a reduction name.

  Mirrors ``torch.nn._reduction.legacy_get_string``: ``None`` counts as
  ``True`` and ``reduce=False`` wins over ``size_average``.
  """
  size_average = True if size_average is None else size_average
  reduce = True if reduce is None else reduce
  if not reduce:
    name = "none"
  elif size_average:
    name = "mean"
  else:
    name = "sum"
  warnings.warn(
    f"size_average and reduce args will be deprecated, please use reduction='{name}' instead.",
    UserWarning,
    stacklevel=4,
  )
  return name


# torch's words for an unknown name: its C++-backed losses (multilabel_margin,
# multi_margin) and its Python-level soft margin loss put it differently.
INVALID_REDUCTION = "{reduction} is not a valid value for reduction"
INVALID_SOFT_REDUCTION = "{reduction} is not valid"


def check_reduction(
  fn: str, reduction: str, *, allow_elementwise_mean: bool, invalid_message: str
) -> str:
  """Checks a torch-style ``reduction`` name; returns it unchanged.

  Args:
    fn: the loss (or module) named in the error.
    reduction: the ``reduction`` argument.
    allow_elementwise_mean: whether the deprecated alias ``'elementwise_mean'``
      is accepted (torch's C++-backed losses accept it, the soft margin loss
      does not).
    invalid_message: torch's words for an unknown name, formatted with
      ``{reduction}``; the ``ValueError`` puts the loss and the argument in
      front of them and what is expected after them.
  """
  if reduction in REDUCTIONS or (allow_elementwise_mean and reduction == "elementwise_mean"):
    return reduction
  raise ValueError(
    f"{fn}: reduction: {invalid_message.format(reduction=reduction)}; "
    "expected 'none', 'mean' or 'sum'"
  )


def resolve_reduction(
  reduction: str,
  size_average: bool | None,
  reduce: bool | None,
  *,
  fn: str,
  allow_elementwise_mean: bool,
  invalid_message: str,
) -> Reduction:
  """Returns one of :data:`REDUCTIONS` the way torch picks it.

  Args:
    reduction: the ``reduction`` argument.
    size_average: torch's legacy argument; when it or ``reduce`` is not
      ``None``, ``reduction`` is ignored (with a ``UserWarning``).
    reduce: torch's legacy argument.
    fn: the loss, for the error message.
    allow_elementwise_mean: see :func:`check_reduction`.
    invalid_message: see :func:`check_reduction`.
  """
  if size_average is not None or reduce is not None:
    return cast(Reduction, legacy_reduction(size_average, reduce))
  check_reduction(
    fn, reduction, allow_elementwise_mean=allow_elementwise_mean, invalid_message=invalid_message
  )
  if reduction == "elementwise_mean":
    warnings.warn(
      "reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.",
      UserWarning,
      stacklevel=3,
    )
    return "mean"
  return cast(Reduction, reduction)


def apply_reduction(per_sample: jax.Array, reduction: str) -> jax.Array:
  """Reduces per-sample losses; an empty batch gives NaN for 'mean', 0 for 'sum'."""
  if reduction == "mean":
    return jnp.mean(per_sample)
  if reduction == "sum":
    return jnp.sum(per_sample)
  return per_sample
