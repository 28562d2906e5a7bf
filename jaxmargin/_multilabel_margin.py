"""Core of the multi-label margin loss: per-sample values and their exact VJP.

Memory stays O(N*C): the label slots are visited in blocks of ``SLOT_BLOCK``
inside a loop that stops after the longest label list of the batch, so no
``(N, C, C)`` or ``(P, N, C)`` array is ever built. The forward pass used for
differentiation also counts, per score, how many hinge terms it enters; the
backward pass is then a scale and one scatter, with no second loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxmargin._indices import canonical_indices

SLOT_BLOCK = 4


class LabelLists:
  """The label lists of a padded ``(N, C)`` target, in array form.

  Attributes:
    slot_valid: ``(N, S)`` bool, slot ``k`` of row ``n`` holds a label (it lies
      before the first negative entry); ``S`` is ``C`` rounded up to a multiple
      of ``SLOT_BLOCK``.
    slot_index: ``(N, S)`` label index of each valid slot, ``C`` elsewhere (an
      index that scatters drop and gathers never use).
    negative: ``(N, C)`` bool, class ``d`` is not a label of row ``n``.
    row_valid: ``(N,)`` bool, every target value of the row lies in [-1, C-1].
    longest: scalar, the longest label list in the batch.
  """

  def __init__(self, target, num_classes):
    target = canonical_indices(target, num_classes)
    num_rows, width = target.shape
    padded_width = -(-width // SLOT_BLOCK) * SLOT_BLOCK
    in_prefix = jnp.cumsum(target < 0, axis=1) == 0
    in_range = target < num_classes
    self.row_valid = jnp.all((target >= -1) & in_range, axis=1)
    slot_valid = in_prefix & in_range
    slot_index = jnp.where(slot_valid, target, num_classes)
    pad = ((0, 0), (0, padded_width - width))
    self.slot_valid = jnp.pad(slot_valid, pad)
    self.slot_index = jnp.pad(slot_index, pad, constant_values=num_classes)
    rows = jnp.arange(num_rows)[:, None]
    is_label = jnp.zeros((num_rows, num_classes), bool).at[rows, slot_index].set(
        True, mode="drop"
    )
    self.negative = ~is_label
    self.longest = jnp.max(jnp.sum(in_prefix, axis=1), initial=0)


def _hinge_sums(x, labels, margin, with_counts):
  """Sums the hinge terms over label slots, a block of slots per iteration.

  Returns the per-row sums and, with ``with_counts``, the number of active
  terms each negative score enters (``(N, C)``) and each label slot enters
  (``(N, S)``).
  """
  num_rows, num_classes = x.shape
  safe_index = jnp.minimum(labels.slot_index, num_classes - 1)
  label_scores = jnp.take_along_axis(x, safe_index, axis=1)
  num_blocks = (labels.longest + SLOT_BLOCK - 1) // SLOT_BLOCK

  def body(block, carry):
    sums, negative_counts, slot_counts = carry
    start = block * SLOT_BLOCK
    scores = lax.dynamic_slice_in_dim(label_scores, start, SLOT_BLOCK, axis=1)
    valid = lax.dynamic_slice_in_dim(labels.slot_valid, start, SLOT_BLOCK, axis=1)
    # torch evaluates (margin - x[label]) + x[d]; the same order gives the same
    # z, so ties are ties here too. ``z > 0`` is false for NaN.
    z = (margin - scores)[:, :, None] + x[:, None, :]
    active = (z > 0) & valid[:, :, None] & labels.negative[:, None, :]
    sums = sums + jnp.sum(jnp.where(active, z, 0), axis=(1, 2))
    if with_counts:
      negative_counts = negative_counts + jnp.sum(active, axis=1, dtype=jnp.int32)
      slot_counts = lax.dynamic_update_slice_in_dim(
          slot_counts, jnp.sum(active, axis=2, dtype=jnp.int32), start, axis=1
      )
    return sums, negative_counts, slot_counts

  count_shape = (num_rows, num_classes) if with_counts else (num_rows, 0)
  slot_shape = labels.slot_valid.shape if with_counts else (num_rows, 0)
  init = (
      jnp.zeros((num_rows,), x.dtype),
      jnp.zeros(count_shape, jnp.int32),
      jnp.zeros(slot_shape, jnp.int32),
  )
  return lax.fori_loop(0, num_blocks, body, init)


def _per_sample(sums, labels, num_classes):
  return jnp.where(labels.row_valid, sums / num_classes, jnp.nan)


@jax.custom_vjp
def multilabel_margin_per_sample(x, target, margin):
  r"""Per-sample multi-label margin loss of torch's ``multilabel_margin_loss``.

  .. math::
    \ell_n = \frac{1}{C} \sum_{j \in L_n} \sum_{d \notin L_n}
             \max(0,\ \mathrm{margin} - x_{n,j} + x_{n,d})

  where :math:`L_n` is the prefix of ``target[n]`` before its first negative
  entry (a label listed twice counts twice in the outer sum), torch's strict
  kink (zero gradient at an exact tie) and NaN terms dropped.

  Args:
    x: scores, shape ``(N, C)``, in the compute dtype.
    target: padded label lists, shape ``(N, C)``, any integer dtype. A row with
      a value outside ``[-1, C-1]`` gives NaN (value and gradient).
    margin: scalar array (torch fixes it to 1).

  Returns:
    Per-sample losses of shape ``(N,)``.
  """
  labels = LabelLists(target, x.shape[1])
  sums, _, _ = _hinge_sums(x, labels, margin, with_counts=False)
  return _per_sample(sums, labels, x.shape[1])


def _fwd(x, target, margin):
  labels = LabelLists(target, x.shape[1])
  # The counts are piecewise constant in x: cutting the gradient here lets
  # grad-of-grad see a zero second derivative instead of a while loop.
  sums, negative_counts, slot_counts = _hinge_sums(
      lax.stop_gradient(x), labels, lax.stop_gradient(margin), with_counts=True
  )
  residuals = (labels.slot_index, labels.slot_valid, labels.row_valid,
               negative_counts, slot_counts, margin)
  return _per_sample(sums, labels, x.shape[1]), residuals


def _bwd(residuals, cotangent):
  slot_index, slot_valid, row_valid, negative_counts, slot_counts, margin = residuals
  num_rows, num_classes = negative_counts.shape
  scale = (cotangent / num_classes)[:, None]
  grad_x = negative_counts * scale
  slot_grad = jnp.where(slot_valid, -slot_counts * scale, 0)
  rows = jnp.arange(num_rows)[:, None]
  grad_x = grad_x.at[rows, slot_index].add(slot_grad, mode="drop")
  grad_x = jnp.where(row_valid[:, None], grad_x, jnp.nan)
  grad_margin = -jnp.sum(jnp.where(row_valid[:, None], slot_grad, 0))
  return grad_x.astype(cotangent.dtype), None, grad_margin.astype(margin.dtype)


multilabel_margin_per_sample.defvjp(_fwd, _bwd)
