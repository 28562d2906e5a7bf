"""Core of the multi-class margin loss: per-sample values and their exact VJP."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxmargin._indices import canonical_indices
from jaxmargin._sharding import vary_like


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
  # The row sums the backward pass needs are taken here, from the same z, so
  # that the backward pass is one elementwise pass with no reduction.
  # ``slope_sum`` (a count, or a sum of 2z > 0) is positive iff some term is
  # active, so rows without one keep 0 even for an inf or NaN weight, as in
  # torch (which multiplies each term by the weight).
  hinge_sum = jnp.sum(jnp.where(active, powered, 0), axis=1)
  slope_sum = (jnp.sum(active, axis=1, dtype=x.dtype) if p == 1
               else jnp.sum(jnp.where(active, 2 * z, 0), axis=1))
  total = jnp.where(slope_sum > 0, row_weight * hinge_sum, 0)
  valid = _valid_rows(target, x.shape[1])
  per_sample = jnp.where(valid, total / x.shape[1], jnp.nan)
  return per_sample, (x, target, margin, row_weight, hinge_sum, slope_sum, valid)


def _bwd(p, residuals, cotangent):
  x, target, margin, row_weight, hinge_sum, slope_sum, valid = residuals
  num_classes = x.shape[1]
  z, active, _, is_target = _active_terms(x, target, margin, p)
  scale = cotangent * row_weight / num_classes
  slope = 1 if p == 1 else 2 * z
  # Rows without an active term keep a 0 gradient even for an inf or NaN
  # weight (0 * inf would be NaN), as in torch.
  target_grad = jnp.where(slope_sum > 0, -(slope_sum * scale), 0)
  grad_x = jnp.where(is_target, target_grad[:, None],
                     jnp.where(active, slope * scale[:, None], 0))
  grad_x = jnp.where(valid[:, None], grad_x, jnp.nan)
  grad_row_weight = jnp.where(valid, cotangent * hinge_sum / num_classes, jnp.nan)
  grad_margin = jnp.sum(jnp.where(valid, slope_sum * scale, 0)).astype(margin.dtype)
  return grad_x.astype(x.dtype), None, grad_margin, grad_row_weight


_multi_margin_vjp.defvjp(_fwd, _bwd)
