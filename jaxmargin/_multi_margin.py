"""Core of the multi-class margin loss: per-sample values and their exact VJP."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxmargin._indices import canonical_indices
from jaxmargin._sharding import vary_like


def _safe_target(target, num_classes):
  """Targets clipped into range, so that an invalid one never reads out of bounds."""
  return jnp.clip(canonical_indices(target, num_classes), 0, num_classes - 1)


def _is_target(target, num_classes):
  """``(N, C)`` mask of each row's target class (clipped: see :func:`_safe_target`)."""
  return jnp.arange(num_classes) == _safe_target(target, num_classes)[:, None]


def _valid_rows(target, num_classes):
  target = canonical_indices(target, num_classes)
  return (target >= 0) & (target < num_classes)


def _active_hinges(x, target, margin):
  """``max(0, z)`` over the terms that count, 0 elsewhere (the target's own included).

  ``z`` is evaluated as torch does, ``(margin - x[y]) + x[d]``. A term counts
  only where ``z > 0`` strictly and ``d != y``; the strict test also drops NaN.
  Every later quantity, value or gradient, is read from this one array: an
  entry is positive exactly where its term is active.
  """
  num_classes = x.shape[1]
  safe_target = _safe_target(target, num_classes)
  x_target = jnp.take_along_axis(x, safe_target[:, None], axis=1)
  z = (margin - x_target) + x
  return jnp.where((z > 0) & ~_is_target(target, num_classes), z, 0)


def multi_margin_per_sample(x, target, margin, row_weight, p):
  r"""Per-sample multi-class margin loss of torch's ``multi_margin_loss``.

  .. math::
    \ell_n = \frac{1}{C} \sum_{d \ne y_n} w_{y_n}
             \max(0,\ \mathrm{margin} - x_{n,y_n} + x_{n,d})^p

  with the strict kink of torch (zero gradient where the argument is exactly 0)
  and NaN arguments dropped.

  Args:
    x: scores, shape ``(N, C)``, in the compute dtype.
    target: class indices, shape ``(N,)``, any integer dtype. A row whose
      target lies outside ``[0, C-1]`` gives NaN (value and gradient).
    margin: scalar array.
    row_weight: ``weight[target]``, shape ``(N,)``, or ``None`` for no weight.
    p: 1 or 2 (static).

  Returns:
    Per-sample losses of shape ``(N,)``.
  """
  if row_weight is not None:
    row_weight = vary_like(x, row_weight)
  return _multi_margin_vjp(x, target, vary_like(x, margin), row_weight, p)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _multi_margin_vjp(x, target, margin, row_weight, p):
  # One formula for the value, differentiated or not: the same rounding in both.
  return _fwd(x, target, margin, row_weight, p)[0]


def _fwd(x, target, margin, row_weight, p):
  num_classes = x.shape[1]
  hinges = _active_hinges(x, target, margin)
  valid = _valid_rows(target, num_classes)
  # What the target's gradient needs, summed from the same array so that the
  # backward pass is a single elementwise pass: the number of active terms
  # (p = 1) or twice the sum of their hinges (p = 2). Positive exactly when
  # the row has an active term.
  if p == 1:
    target_slope_sum = jnp.sum(jnp.sign(hinges), axis=1)
  else:
    target_slope_sum = 2 * jnp.sum(hinges, axis=1)
  hinge_sum = jnp.sum(hinges if p == 1 else hinges * hinges, axis=1)
  total = hinge_sum
  if row_weight is not None:
    # torch weights each active term; the weight is taken out of the sum here
    # (one rounding apart), so that the sum reads the hinges alone. A row
    # without an active term is 0 even for an inf or NaN weight, as there.
    total = jnp.where(target_slope_sum > 0, row_weight * hinge_sum, 0)
  per_sample = jnp.where(valid, total / num_classes, jnp.nan)
  return per_sample, (hinges, target, margin, row_weight, valid, target_slope_sum, hinge_sum)


def _bwd(p, residuals, cotangent):
  hinges, target, margin, row_weight, valid, target_slope_sum, hinge_sum = residuals
  num_classes = hinges.shape[1]
  weight = 1 if row_weight is None else row_weight
  # NaN for a row with an invalid target, so that its whole row is NaN.
  scale = jnp.where(valid, cotangent * weight / num_classes, jnp.nan)
  slope = 1 if p == 1 else 2 * hinges
  active = hinges > 0
  # The target's score enters every active term with the opposite sign. A row
  # without an active term gives it 0 whatever its weight (inf or NaN), as torch.
  others = jnp.where((target_slope_sum > 0) | ~valid, target_slope_sum * scale, 0)
  grad_x = jnp.where(_is_target(target, num_classes), -others[:, None],
                     jnp.where(active | ~valid[:, None], slope * scale[:, None], 0))
  # Only when differentiated (otherwise XLA drops them): the margin enters
  # every active term as the other scores do; the weight scales the sum.
  grad_margin = jnp.sum(jnp.where(valid, others, 0)).astype(margin.dtype)
  grad_row_weight = None
  if row_weight is not None:
    grad_row_weight = jnp.where(valid, cotangent * hinge_sum / num_classes, jnp.nan)
  return grad_x.astype(hinges.dtype), None, grad_margin, grad_row_weight


_multi_margin_vjp.defvjp(_fwd, _bwd)
