"""Core of the multi-class margin loss: per-sample values and their exact VJP."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxmargin._indices import canonical_indices
from jaxmargin._sharding import scatter_in_rows, vary_like


def _active_terms(x, target, margin, p):
  """The hinge arguments ``z``, where they count, and ``h(z)^p``.

  ``z`` is evaluated as torch does, ``(margin - x[y]) + x[d]``. A term counts
  only where ``z > 0`` strictly and ``d != y``; the strict test also drops NaN.
  Indices are clipped before the gather so an invalid target never reads out of
  bounds; such rows are turned into NaN by the caller.
  """
  num_classes = x.shape[1]
  safe_target = jnp.clip(canonical_indices(target, num_classes), 0, num_classes - 1)
  x_target = jnp.take_along_axis(x, safe_target[:, None], axis=1)
  z = (margin - x_target) + x
  is_target = jnp.arange(num_classes) == safe_target[:, None]
  active = (z > 0) & ~is_target
  powered = z if p == 1 else z * z
  return z, active, powered, is_target


def _valid_rows(target, num_classes):
  target = canonical_indices(target, num_classes)
  return (target >= 0) & (target < num_classes)


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
    row_weight: ``weight[target]``, shape ``(N,)``; ones for no weight.
    p: 1 or 2 (static).

  Returns:
    Per-sample losses of shape ``(N,)``.
  """
  return _multi_margin_vjp(x, target, vary_like(x, margin), vary_like(x, row_weight), p)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _multi_margin_vjp(x, target, margin, row_weight, p):
  # One formula for the value, differentiated or not: the same rounding in both.
  return _fwd(x, target, margin, row_weight, p)[0]


def _fwd(x, target, margin, row_weight, p):
  z, active, powered, _ = _active_terms(x, target, margin, p)
  # The weight multiplies each term, as in torch: a row without an active
  # term sums to 0 even for an inf or NaN weight, and an inf weight times a
  # term that underflowed to 0 is NaN, as there.
  total = jnp.sum(jnp.where(active, row_weight[:, None] * powered, 0), axis=1)
  valid = _valid_rows(target, x.shape[1])
  per_sample = jnp.where(valid, total / x.shape[1], jnp.nan)
  return per_sample, (x, target, margin, row_weight, valid)


def _bwd(p, residuals, cotangent):
  x, target, margin, row_weight, valid = residuals
  num_classes = x.shape[1]
  z, active, powered, _ = _active_terms(x, target, margin, p)
  # NaN for a row with an invalid target, so that its whole row is NaN.
  scale = jnp.where(valid, cotangent * row_weight / num_classes, jnp.nan)
  slope = 1 if p == 1 else 2 * z
  grad_x = jnp.where(active | ~valid[:, None], slope * scale[:, None], 0)
  # The target's score enters every active term with the opposite sign: its
  # gradient is minus the row sum of the others (all 0 without an active
  # term, whatever the weight, as in torch). Taken from the gradient itself
  # and written into it in place, this costs one read of it, not a second
  # pass over the scores in the forward pass.
  others = jnp.sum(grad_x, axis=1)
  safe_target = jnp.clip(canonical_indices(target, num_classes), 0, num_classes - 1)
  grad_x = scatter_in_rows(grad_x, safe_target[:, None], -others[:, None], "set")
  # Only when differentiated (otherwise XLA drops them): the margin enters
  # every active term as the other scores do; the weight scales the sum.
  grad_margin = jnp.sum(jnp.where(valid, others, 0)).astype(margin.dtype)
  hinge_sum = jnp.sum(jnp.where(active, powered, 0), axis=1)
  grad_row_weight = jnp.where(valid, cotangent * hinge_sum / num_classes, jnp.nan)
  return grad_x.astype(x.dtype), None, grad_margin, grad_row_weight


_multi_margin_vjp.defvjp(_fwd, _bwd)
