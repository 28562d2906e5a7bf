"""Core of the multi-class margin loss: per-sample values and their exact VJP."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from jaxmargin._deterministic import take
from jaxmargin._fused import Chunk, ChunkShare, RowTotals
from jaxmargin._indices import canonical_indices
from jaxmargin._row_sums import row_sums
from jaxmargin._sharding import scatter_in_rows, vary_like


def _safe_target(target, num_classes):
  """Targets clipped into range, so that an invalid one never reads out of bounds."""
  return jnp.clip(canonical_indices(target, num_classes), 0, num_classes - 1)


def _is_target(target, num_classes):
  """``(N, C)`` mask of each row's target class (clipped: see :func:`_safe_target`)."""
  return jnp.arange(num_classes, dtype=jnp.int32) == _safe_target(target, num_classes)[:, None]


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
  return _hinges(x, x_target, _is_target(target, num_classes), margin)


def _hinges(x, x_target, is_target, margin):
  """:func:`_active_hinges` given each row's target score ``(N, 1)`` and target mask."""
  z = (margin - x_target) + x
  return jnp.where((z > 0) & ~is_target, z, 0)


def multi_margin_per_sample(x, target, margin, class_weight, p):
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
    class_weight: one weight per class, shape ``(C,)``, in the compute dtype,
      or ``None`` for no weight.
    p: 1 or 2 (static).

  Returns:
    Per-sample losses of shape ``(N,)``.
  """
  row_weight = None
  if class_weight is not None:
    # Sharded like the targets (explicit mesh axes cannot infer it), and
    # differentiated outside the custom VJP, by a sum in a fixed order (JAX's
    # gather rule scatter-adds, which a GPU does in no fixed order).
    row_weight = vary_like(x, take(class_weight, _safe_target(target, x.shape[1])))
  return _multi_margin_vjp(x, target, vary_like(x, margin), row_weight, p)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _multi_margin_vjp(x, target, margin, row_weight, p):
  # One formula for the value, differentiated or not: the same rounding in both.
  return _fwd(x, target, margin, row_weight, p)[0]


def _fwd(x, target, margin, row_weight, p):
  num_classes = x.shape[1]
  hinges = _active_hinges(x, target, margin)
  valid = _valid_rows(target, num_classes)
  # One row sum of the hinges alone: anything fused into it (a sign for the
  # count of active terms, say) costs XLA:CPU about one more pass over (N, C).
  hinge_sum = jnp.sum(hinges if p == 1 else hinges * hinges, axis=1)
  total = hinge_sum
  if row_weight is not None:
    # torch weights each active term; the weight is taken out of the sum here
    # (one rounding apart), so that the sum reads the hinges alone. A row
    # without an active term is 0 even for an inf or NaN weight, as there.
    # (For p = 2 a square can underflow to 0, so the hinges are asked.)
    has_active = hinge_sum > 0 if p == 1 else jnp.any(hinges > 0, axis=1)
    total = jnp.where(has_active, row_weight * hinge_sum, 0)
  per_sample = jnp.where(valid, total / num_classes, jnp.nan)
  return per_sample, (hinges, target, margin, row_weight, valid, hinge_sum)


def _bwd(p, residuals, cotangent):
  hinges, target, margin, row_weight, valid, hinge_sum = residuals
  num_classes = hinges.shape[1]
  weight = 1 if row_weight is None else row_weight
  # NaN for a row with an invalid target, so that its whole row is NaN.
  scale = jnp.where(valid, cotangent * weight / num_classes, jnp.nan)
  slope = 1 if p == 1 else 2 * hinges
  # Every term but the target's, which is 0 here (its hinge is 0): inactive
  # terms give exactly 0 whatever the weight (inf or NaN), as torch.
  grad_x = jnp.where((hinges > 0) | ~valid[:, None], slope * scale[:, None], 0)
  # The target's score and the margin enter every active term, the first with
  # the opposite sign: both get the row sum of the other terms' gradients, as
  # torch accumulates them. Summed from the written gradient, it costs one read
  # and no extra reduction in the forward pass.
  others = jnp.sum(grad_x, axis=1)
  grad_x = scatter_in_rows(
    grad_x, _safe_target(target, num_classes)[:, None], -others[:, None], "set"
  )
  # Only when differentiated (otherwise XLA drops them).
  grad_margin = jnp.sum(jnp.where(valid, others, 0)).astype(margin.dtype)
  grad_row_weight = None
  if row_weight is not None:
    grad_row_weight = jnp.where(valid, cotangent * hinge_sum / num_classes, jnp.nan)
  return grad_x.astype(hinges.dtype), None, grad_margin, grad_row_weight


_multi_margin_vjp.defvjp(_fwd, _bwd)


@dataclasses.dataclass(frozen=True)
class FusedMultiMargin:
  """Chunk rule of the multi-class margin loss for :mod:`jaxmargin._fused`.

  The same hinges as the unfused loss, from the target's gathered score; the
  row arguments are the margin and, for a weighted loss, each row's class
  weight (the label's, gathered before the rule).
  A row's derivatives are those of :func:`_bwd`: ``w * (1 or 2 h)`` at each
  active term, minus their sum at the target, their sum for the margin, and
  the unweighted sum for the weight.
  """

  p: int
  uses_label_scores = True

  def prepare(self, labels, label_scores, row_args):
    del labels
    margin, *weight = row_args
    return label_scores, margin, (weight[0][:, None] if weight else None)

  def chunk(self, context, chunk: Chunk, with_grads):
    target_score, margin, weight = context
    hinges = _hinges(chunk.scores, target_score, chunk.is_label, margin)
    active = hinges > 0
    # Beside the hinge sum: for p = 2 the plain sum (whether any term is
    # active; the derivatives' sum), for p = 1 with gradients the count.
    if self.p == 1:
      terms = (hinges, active.astype(hinges.dtype)) if with_grads else (hinges,)
    else:
      terms = (hinges * hinges, hinges)
    sums = row_sums(*terms)
    if not with_grads:
      return ChunkShare(sums[0], sums[1:])
    slope = 1 if self.p == 1 else 2 * hinges
    if weight is not None:
      slope = slope * weight
    # Inactive terms give exactly 0 whatever the weight (inf or NaN), as torch.
    return ChunkShare(sums[0], sums[1:], jnp.where(active, slope, 0))

  def finish(self, context, values, sums, with_grads):
    _, _, weight = context
    hinge_sum = values
    if self.p == 1:
      has_active = hinge_sum > 0
      slope_sum = sums[0] if with_grads else None
    else:
      has_active = sums[0] > 0
      slope_sum = 2 * sums[0]
    if weight is not None:
      values = jnp.where(has_active, weight[:, 0] * hinge_sum, 0)
      if with_grads:
        slope_sum = jnp.where(has_active, weight[:, 0] * slope_sum, 0)
    if not with_grads:
      return RowTotals(values, None, ())
    assert slope_sum is not None
    drow = (slope_sum,) if weight is None else (slope_sum, hinge_sum)
    return RowTotals(values, -slope_sum[:, None], drow)
