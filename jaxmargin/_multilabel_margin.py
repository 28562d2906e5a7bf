"""Core of the multi-label margin loss: per-sample values and their exact VJP.

Two exact methods compute the same hinge sums; both stay in O(N*C) memory and
never build an ``(N, C, C)`` or ``(P, N, C)`` array.

``"slots"``, O(N*C*P) work for P labels per row
  Visits the label slots one per iteration, each a fused 2-D pass over the
  scores, in a loop that stops after the longest label list of the batch.
  Best when rows have few labels.

``"sort"``, O(N*C*log C) work
  Sorts each row's negative scores once. A term is active iff
  ``x[d] > -(margin - x[j])`` (rounding to nearest keeps the sign of a sum, so
  this is exactly torch's ``(margin - x[j]) + x[d] > 0``), so a binary search
  per label gives how many terms it enters and, from suffix sums, their sum;
  a binary search per negative score into the sorted label thresholds gives how
  many terms that score enters. Best for dense rows.

``"auto"`` picks between them at run time from the longest label list, so a
batch of sparse rows takes the loop and a batch with a dense row takes the sort
(the threshold is per platform). Under ``vmap`` the mapped axis folds into the
rows: the choice and the loops are the whole batch's, as in a batched call.

The forward pass used for differentiation also returns, per score, the net
number of active terms it enters (as a negative minus as a label); the
backward pass is then one scale of that ``(N, C)`` count.

Optional label weights (the weight of each class as a label, ``(N, C)``)
multiply each label's terms: the counts are then weighted (each term counts
its label's weight), and each class's hinge sum as a label, the gradient of
its weight, is kept too. Without them the computation is the unweighted one,
and weights of 1 give its result bit for bit.

The chunk rule of the fused losses is in :mod:`jaxmargin._multilabel_margin_fused`, the
``vmap`` rules in :mod:`jaxmargin._multilabel_margin_vmap`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxmargin._indices import canonical_indices
from jaxmargin._multilabel_margin_vmap import batch_wide, folded_under_vmap
from jaxmargin._row_sums import row_sums
from jaxmargin._sharding import scatter_in_rows, vary_like

METHODS = ("auto", "slots", "sort")


# The sort's cost in slot passes per log2(C), per platform
# (``benchmarks/calibrate.py`` measures it). CPU: crossover 22-26 log2(C) at
# N=64-256, C=1,000-30,000. The others are estimates until measured: on a GPU
# each iteration of the slot loop is a kernel launch and a device-to-host
# read of the loop predicate (some 10-20 us, against about 2 us for a pass
# over a million scores), and the sort method runs about 2 log2(C)
# iterations of its own binary searches plus one segmented sort, so it wins
# from a few passes per log2(C); a TPU runs loop iterations on the device
# but sorts with a bitonic network and gathers slowly, so the CPU's value
# stands in.
SORT_PASSES_PER_LOG2 = {"cpu": 24.0, "gpu": 4.0, "tpu": 24.0}


def sort_is_cheaper(longest, num_classes, platform="cpu"):
  """Whether the sort method beats the slot loop for a longest list of ``longest``.

  The loop does about ``longest`` fused passes over the scores; the sort costs
  about ``SORT_PASSES_PER_LOG2[platform] * log2(C)``. ``platform`` is
  ``"cpu"``, ``"gpu"`` or ``"tpu"``; ``longest`` may be traced.
  """
  # An integer threshold: exact for an integer ``longest``, and no float
  # (float64 under x64) array in the traced comparison.
  threshold = math.floor(SORT_PASSES_PER_LOG2[platform] * math.log2(max(num_classes, 2)))
  return longest > threshold


def _sort_is_cheaper_here(longest, num_classes):
  """:func:`sort_is_cheaper` with the constant of the platform the program is lowered for.

  ``lax.platform_dependent`` resolves when the platform is known (at lowering,
  or just before compilation for a program exported for several): the
  compiled program holds one integer threshold and no branch on the platform.
  """

  def on(platform):
    return functools.partial(sort_is_cheaper, num_classes=num_classes, platform=platform)

  return lax.platform_dependent(
    longest, cpu=on("cpu"), cuda=on("gpu"), rocm=on("gpu"), tpu=on("tpu"), default=on("cpu")
  )


class LabelLists:
  """The label lists of a padded ``(N, C)`` target, in array form.

  Attributes:
    slot_valid: ``(N, C)`` bool, slot ``k`` of row ``n`` holds a label (it lies
      before the first negative entry).
    slot_index: ``(N, C)`` label index of each valid slot, ``C`` elsewhere (an
      index that compares never match).
    row_valid: ``(N,)`` bool, every target value of the row lies in [-1, C-1].
    longest: scalar, the longest label list in the batch.
  """

  def __init__(self, target, num_classes):
    target = canonical_indices(target, num_classes)
    width = target.shape[1]
    # The first negative entry ends the list (argmax, not cumsum: XLA:CPU's
    # cumsum is an order of magnitude slower than a reduction).
    is_end = target < 0
    # int32 throughout, as every index here: 64-bit under x64 otherwise.
    length = jnp.where(jnp.any(is_end, axis=1), jnp.argmax(is_end, axis=1).astype(jnp.int32), width)
    in_range = target < num_classes
    self.row_valid = jnp.all((target >= -1) & in_range, axis=1)
    self.slot_valid = (jnp.arange(width, dtype=jnp.int32) < length[:, None]) & in_range
    self.slot_index = jnp.where(self.slot_valid, target, num_classes)
    self.longest = batch_wide(jnp.max(length, initial=0))

  def slot(self, array, slot):
    """Column ``slot`` of an ``(N, C)`` array, as ``(N, 1)``."""
    return lax.dynamic_slice_in_dim(array, slot, 1, axis=1)


def _hinge_by_slots(x, labels, margin, weights, with_counts):
  """Per-row hinge sums and (optionally) the gradient sums, one label slot at a time.

  Each iteration is one fused 2-D pass over the scores; the loop stops after
  the longest label list of the batch. See :func:`_hinge` for the results.
  """
  num_classes = x.shape[1]
  classes = jnp.arange(num_classes, dtype=jnp.int32)
  safe_index = jnp.minimum(labels.slot_index, num_classes - 1)
  # Empty slots get a finite stand-in score and are masked below: a NaN there
  # would do the same but set off jax_debug_nans and checkify's NaN checks.
  label_scores = jnp.where(labels.slot_valid, jnp.take_along_axis(x, safe_index, axis=1), 0)

  def add_label(slot, is_label):
    # Alone in its loop, this scatter updates in place (N entries per slot).
    # An OR at an in-bounds index, not a dropped write at index C, so that
    # checkify's index checks stay quiet.
    return scatter_in_rows(
      is_label, labels.slot(safe_index, slot), labels.slot(labels.slot_valid, slot), "max"
    )

  is_label = lax.fori_loop(0, labels.longest, add_label, jnp.zeros_like(x, bool))
  negative = ~is_label

  def body(slot, carry):
    sums, grads = carry
    # torch evaluates (margin - x[label]) + x[d]; the same order gives the same
    # z, so ties are ties here too. ``z > 0`` is false for NaN, so a NaN label
    # score drops its terms, as in torch.
    z = (margin - labels.slot(label_scores, slot)) + x
    active = (z > 0) & negative & labels.slot(labels.slot_valid, slot)
    weight = None if weights is None else labels.slot(weights, slot)  # (N, 1)
    if not with_counts:
      (slot_sum,) = row_sums(jnp.where(active, z, 0))
      return sums + (slot_sum if weight is None else weight[:, 0] * slot_sum), grads
    slot_sum, slot_count = row_sums(jnp.where(active, z, 0), active.astype(jnp.int32))
    # The label loses one (its weight) per active term; a one-hot compare,
    # because a scatter here makes XLA copy ``counts`` every iteration.
    is_this_label = labels.slot(labels.slot_index, slot) == classes
    if weight is None:
      (counts,) = grads
      counts = counts + active - jnp.where(is_this_label, slot_count[:, None], 0)
      return sums + slot_sum, (counts,)
    counts, label_sums, margin_terms = grads
    scaled_count = weight[:, 0] * slot_count
    counts = (
      counts + jnp.where(active, weight, 0) - jnp.where(is_this_label, scaled_count[:, None], 0)
    )
    label_sums = label_sums + jnp.where(is_this_label, slot_sum[:, None], 0)
    return sums + weight[:, 0] * slot_sum, (counts, label_sums, margin_terms + scaled_count)

  grads = ()
  if with_counts:
    grads = (jnp.zeros_like(x, jnp.int32),)
    if weights is not None:
      grads = (jnp.zeros_like(x), jnp.zeros_like(x), jnp.zeros_like(x[:, 0]))
  return lax.fori_loop(0, labels.longest, body, (jnp.zeros_like(x[:, 0]), grads))


def _searchsorted_rows(sorted_rows, queries, right):
  """``searchsorted`` of each row of ``queries`` in the same row of ``sorted_rows``.

  A binary search over all rows at once. ``vmap(jnp.searchsorted)`` gives the
  same indices (for non-NaN queries, all that is asked here) but its default
  method fails under explicit mesh axes (JAX 0.10) and its other methods are
  several times slower on CPU.
  """
  width = sorted_rows.shape[1]
  low = jnp.zeros_like(queries, jnp.int32)
  high = jnp.full_like(queries, width, jnp.int32)

  def halve(_, bounds):
    low, high = bounds
    middle = (low + high) // 2
    value = jnp.take_along_axis(sorted_rows, jnp.minimum(middle, width - 1), axis=1)
    after = (value <= queries) if right else (value < queries)
    after = after & (low < high)
    return jnp.where(after, middle + 1, low), jnp.where(after, high, middle)

  # ceil(log2(width + 1)) halvings take [0, width] down to one index. (A loop:
  # unrolled, XLA keeps every halving's (N, C) bounds alive at once.)
  return lax.fori_loop(0, width.bit_length(), halve, (low, high))[0]


def _hinge_by_sorting(x, labels, margin, weights, with_counts):
  """Per-row hinge sums and (optionally) the gradient sums, from sorted scores."""
  num_classes = x.shape[1]
  safe_index = jnp.minimum(labels.slot_index, num_classes - 1)
  is_label = scatter_in_rows(jnp.zeros_like(x, bool), safe_index, labels.slot_valid, "max")
  counted = ~is_label & ~jnp.isnan(x)
  # Labels and NaN scores never enter a term: -inf is never above a threshold.
  ascending = jnp.sort(jnp.where(counted, x, -jnp.inf), axis=1)
  # suffix[i] = sum of ascending[i:], with suffix[C] = 0.
  suffix = jnp.cumsum(ascending[:, ::-1], axis=1)[:, ::-1]
  suffix = jnp.concatenate([suffix, jnp.zeros_like(x[:, :1])], axis=1)

  offset = margin - jnp.take_along_axis(x, safe_index, axis=1)  # (N, S)
  usable = labels.slot_valid & ~jnp.isnan(offset)
  # Term (j, d) is active iff x[d] > threshold_j; unusable slots never are.
  threshold = jnp.where(usable, -offset, jnp.inf)
  first_above = _searchsorted_rows(ascending, threshold, right=True)
  slot_counts = jnp.where(usable, num_classes - first_above, 0)
  slot_sums = jnp.take_along_axis(suffix, first_above, axis=1)
  # Guard 0 * inf: a slot with no active term adds exactly 0.
  terms = jnp.where(slot_counts > 0, slot_counts * offset + slot_sums, 0)
  if weights is not None:
    weights = jnp.where(usable, weights, 0)
  sums = jnp.sum(terms if weights is None else weights * terms, axis=1)
  if not with_counts:
    return sums, ()
  if weights is None:
    ascending_thresholds = jnp.sort(threshold, axis=1)
    below = _searchsorted_rows(ascending_thresholds, x, right=False)
    counts = jnp.where(counted, below, 0).astype(jnp.int32)
    # Unusable slots (empty ones included) have a count of 0.
    counts = scatter_in_rows(counts, safe_index, -slot_counts.astype(jnp.int32), "add")
    return sums, (counts,)
  # A negative's count is the sum of the weights of the thresholds below it.
  ascending_thresholds, ascending_weights = lax.sort(
    (threshold, weights), dimension=1, is_stable=True, num_keys=1
  )
  below = _searchsorted_rows(ascending_thresholds, x, right=False)
  weight_below = jnp.cumsum(ascending_weights, axis=1)
  weight_below = jnp.concatenate([jnp.zeros_like(x[:, :1]), weight_below], axis=1)
  counts = jnp.where(counted, jnp.take_along_axis(weight_below, below, axis=1), 0)
  scaled_counts = weights * slot_counts
  # A label listed m times has m equal slots: each sets m times its value at
  # its class, a scatter reproducible on a GPU where a float scatter-add is
  # not. Empty slots write to an extra column, cut off.
  index = jnp.where(labels.slot_valid, safe_index, num_classes)
  # From x, not a bare zeros, so that it is sharded as x is.
  wide = jnp.zeros_like(jnp.concatenate([x, x[:, :1]], axis=1))
  times = jnp.take_along_axis(
    scatter_in_rows(wide.astype(jnp.int32), index, labels.slot_valid.astype(jnp.int32), "add"),
    index,
    axis=1,
  )

  def per_class(per_slot):
    return scatter_in_rows(wide, index, per_slot * times, "set")[:, :num_classes]

  counts = counts - per_class(scaled_counts)
  return sums, (counts, per_class(terms), jnp.sum(scaled_counts, axis=1))


def _hinge(x, labels, margin, weights, with_counts, method):
  """Per-row hinge sums ``(N,)`` and, ``with_counts``, the sums their gradients need.

  ``weights``: ``None``, or the ``(N, C)`` weight of each label slot. The
  gradient sums are ``(counts,)``, each score's net number of active terms
  (int32) unweighted; weighted, the weighted counts, each class's hinge sum
  as a label (``(N, C)``, the gradient of its weight) and each row's weighted
  number of active terms (the margin's gradient).
  """
  if method == "slots":
    return _hinge_by_slots(x, labels, margin, weights, with_counts)
  if method == "sort":
    return _hinge_by_sorting(x, labels, margin, weights, with_counts)
  return lax.cond(
    _sort_is_cheaper_here(labels.longest, x.shape[1]),
    lambda: _hinge_by_sorting(x, labels, margin, weights, with_counts),
    lambda: _hinge_by_slots(x, labels, margin, weights, with_counts),
  )


def _rows(x, target, margin, *label_weights, with_counts, method):
  """Per-sample losses, gradient sums (if asked) and valid rows of ``(N, C)`` scores.

  ``label_weights``: none, or the ``(N, C)`` weight of each class as a label.
  """
  num_classes = x.shape[1]
  labels = LabelLists(target, num_classes)
  weights = None
  if label_weights:
    # Each slot's weight: that of its class (a label listed twice, twice).
    safe_index = jnp.minimum(labels.slot_index, num_classes - 1)
    weights = jnp.take_along_axis(label_weights[0], safe_index, axis=1)
    weights = jnp.where(labels.slot_valid, weights, 0)
  sums, grads = _hinge(x, labels, margin, weights, with_counts, method)
  per_sample = jnp.where(labels.row_valid, sums / num_classes, jnp.nan)
  return per_sample, grads, labels.row_valid


@functools.cache
def _folded_under_vmap(with_counts, method):
  """:func:`_rows` for static ``with_counts`` and ``method``, its ``vmap`` folded into the rows."""
  return folded_under_vmap(functools.partial(_rows, with_counts=with_counts, method=method))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _multilabel_margin_vjp(x, target, margin, label_weights=(), method="auto"):
  r"""Per-sample multi-label margin loss of torch's ``multilabel_margin_loss``.

  .. math::
    \ell_n = \frac{1}{C} \sum_{j \in L_n} w_{n,j} \sum_{d \notin L_n}
             \max(0,\ \mathrm{margin} - x_{n,j} + x_{n,d})

  where :math:`L_n` is the prefix of ``target[n]`` before its first negative
  entry (a label listed twice counts twice in the outer sum), torch's strict
  kink (zero gradient at an exact tie) and NaN terms dropped.

  Args:
    x: scores, shape ``(N, C)``, in the compute dtype.
    target: padded label lists, shape ``(N, C)``, any integer dtype. A row with
      a value outside ``[-1, C-1]`` gives NaN (value and gradient).
    margin: scalar array (torch fixes it to 1).
    label_weights: ``()`` (every :math:`w_{n,j} = 1`: torch's loss, computed
      as before), or ``(w,)`` with ``w`` of shape ``(N, C)`` in the dtype of
      ``x``: :math:`w_{n,j}` for each class :math:`j` as a label
      (differentiable).
    method: ``"auto"``, ``"slots"`` or ``"sort"`` (static); see the module
      docstring. All give torch's result.

  Returns:
    Per-sample losses of shape ``(N,)``.
  """
  return _folded_under_vmap(False, method)(x, target, margin, *label_weights)[0]


def _fwd(x, target, margin, label_weights, method):
  # The counts are piecewise constant in x: cutting the gradient here lets
  # grad-of-grad see a zero second derivative instead of a while loop.
  per_sample, grads, row_valid = _folded_under_vmap(True, method)(
    lax.stop_gradient(x), target, lax.stop_gradient(margin), *map(lax.stop_gradient, label_weights)
  )
  return per_sample, (grads, row_valid, margin)


def _bwd(method, residuals, cotangent):
  del method
  grads, row_valid, margin = residuals
  counts = grads[0]
  scale = (cotangent / counts.shape[1])[:, None]
  grad_x = jnp.where(row_valid[:, None], counts * scale, jnp.nan)
  grad_weights = ()
  if len(grads) == 1:
    # Each active term adds 1 at a negative and -1 at a label: the margin's
    # gradient is the number of active terms, i.e. minus the label counts.
    # Summed as floats: an int32 sum could overflow (up to C*C/4 terms a row), and
    # jnp.sum makes an int64 copy of the counts under x64.
    active_terms = jnp.sum(jnp.where(counts > 0, counts, 0).astype(scale.dtype), axis=1)
  else:
    # Weighted, each term counts its label's weight, and a weight's gradient
    # is its label's hinge sum.
    _, label_sums, active_terms = grads
    grad_weights = (jnp.where(row_valid[:, None], label_sums * scale, jnp.nan),)
  grad_margin = jnp.sum(jnp.where(row_valid, active_terms * scale[:, 0], 0))
  return (
    grad_x.astype(cotangent.dtype),
    None,
    grad_margin.astype(margin.dtype),
    tuple(g.astype(cotangent.dtype) for g in grad_weights),
  )


_multilabel_margin_vjp.defvjp(_fwd, _bwd)


def _margin_varying_like_x(x, target, margin, method="auto", label_weights=None):
  """``_multilabel_margin_vjp``, its margin (and weights) varying like ``x`` in ``shard_map``.

  ``label_weights``: ``None`` or the ``(N, C)`` weight of each class as a label.
  """
  weights = () if label_weights is None else (vary_like(x, label_weights.astype(x.dtype)),)
  return _multilabel_margin_vjp(x, target, vary_like(x, margin), weights, method)


# Jitted so that eager callers (the Optax-style API) reuse one compiled
# kernel: run op by op, the loops and the cond would be traced and compiled
# anew on every call, their bodies being fresh closures.
multilabel_margin_per_sample = jax.jit(_margin_varying_like_x, static_argnames=("method",))
