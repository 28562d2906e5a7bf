"""Reduction names: torch's legacy arguments, validation, and applying a reduction."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

REDUCTIONS = ("none", "mean", "sum")


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
      "size_average and reduce args will be deprecated, please use "
      f"reduction='{name}' instead.",
      UserWarning,
      stacklevel=4,
  )
  return name


def resolve_reduction(
    reduction: str,
    size_average: bool | None,
    reduce: bool | None,
    *,
    allow_elementwise_mean: bool,
    invalid_message: str,
) -> str:
  """Returns one of :data:`REDUCTIONS` the way torch picks it.

  Args:
    reduction: the ``reduction`` argument.
    size_average: torch's legacy argument; when it or ``reduce`` is not
      ``None``, ``reduction`` is ignored (with a ``UserWarning``).
    reduce: torch's legacy argument.
    allow_elementwise_mean: whether the deprecated alias ``'elementwise_mean'``
      is accepted (torch's C++-backed losses accept it, the soft margin loss
      does not).
    invalid_message: the ``ValueError`` message for an unknown name, formatted
      with ``{reduction}``; torch words it differently per loss.
  """
  if size_average is not None or reduce is not None:
    return legacy_reduction(size_average, reduce)
  if allow_elementwise_mean and reduction == "elementwise_mean":
    warnings.warn(
        "reduction='elementwise_mean' is deprecated. Please use "
        "reduction='mean' instead.",
        UserWarning,
        stacklevel=3,
    )
    return "mean"
  if reduction not in REDUCTIONS:
    raise ValueError(invalid_message.format(reduction=reduction))
  return reduction


def apply_reduction(per_sample: jax.Array, reduction: str) -> jax.Array:
  """Reduces per-sample losses; an empty batch gives NaN for 'mean', 0 for 'sum'."""
  if reduction == "mean":
    return jnp.mean(per_sample)
  if reduction == "sum":
    return jnp.sum(per_sample)
  return per_sample
