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
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import custom_batching, lax

from jaxmargin._fused import Chunk, ChunkShare, RowTotals, count_in_rows, gather_in_rows
from jaxmargin._indices import canonical_indices
from jaxmargin._row_sums import row_sums
from jaxmargin._settings import trace_platform
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


@custom_batching.custom_vmap
def _batch_wide(longest):
  """``longest``, as the maximum over every ``vmap`` axis it is batched along.

  The method choice and the loops' trip counts read the longest list of the
  whole batch. Under ``vmap`` over examples each example sees only its own
  list; a batched predicate turns the ``lax.cond`` into a select that runs
  both methods for every example, and a batched trip count runs each loop to
  the batch's longest anyway, with a select per carry and iteration. With the
  batch's maximum, a vmapped call makes the choice and the loops of the
  batched call. (A vmap over examples does not get here:
  :func:`_folded_under_vmap` makes their rows one batch. This serves the
  vmaps it leaves to JAX, over a margin per example.)
  """
  return longest


@_batch_wide.def_vmap
def _batch_wide_vmap(axis_size, in_batched, longest):
  del axis_size
  (batched,) = in_batched
  if not batched:
    return longest, False
  # Again through ``_batch_wide``: inside a nested ``vmap`` the maximum is
  # still batched along the outer axes.
  return _batch_wide(jnp.max(longest, axis=0, initial=0)), False


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
    self.longest = _batch_wide(jnp.max(length, initial=0))

  def slot(self, array, slot):
    """Column ``slot`` of an ``(N, C)`` array, as ``(N, 1)``."""
    return lax.dynamic_slice_in_dim(array, slot, 1, axis=1)


def _hinge_by_slots(x, labels, margin, with_counts):
  """Per-row hinge sums and (optionally) net counts, one label slot at a time.

  Each iteration is one fused 2-D pass over the scores; the loop stops after
  the longest label list of the batch.
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
    sums, counts = carry
    # torch evaluates (margin - x[label]) + x[d]; the same order gives the same
    # z, so ties are ties here too. ``z > 0`` is false for NaN, so a NaN label
    # score drops its terms, as in torch.
    z = (margin - labels.slot(label_scores, slot)) + x
    active = (z > 0) & negative & labels.slot(labels.slot_valid, slot)
    if not with_counts:
      (slot_sum,) = row_sums(jnp.where(active, z, 0))
      return sums + slot_sum, counts
    slot_sum, slot_count = row_sums(jnp.where(active, z, 0), active.astype(jnp.int32))
    # The label loses one per active term; a one-hot compare, because a
    # scatter here makes XLA copy ``counts`` every iteration.
    is_this_label = labels.slot(labels.slot_index, slot) == classes
    counts = counts + active - jnp.where(is_this_label, slot_count[:, None], 0)
    return sums + slot_sum, counts

  init = (jnp.zeros_like(x[:, 0]), jnp.zeros_like(x if with_counts else x[:, :0], jnp.int32))
  return lax.fori_loop(0, labels.longest, body, init)


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


def _hinge_by_sorting(x, labels, margin, with_counts):
  """Per-row hinge sums and (optionally) net counts from sorted scores."""
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
  sums = jnp.sum(terms, axis=1)
  if not with_counts:
    return sums, jnp.zeros_like(x[:, :0], jnp.int32)
  ascending_thresholds = jnp.sort(threshold, axis=1)
  below = _searchsorted_rows(ascending_thresholds, x, right=False)
  counts = jnp.where(counted, below, 0).astype(jnp.int32)
  # Unusable slots (empty ones included) have a count of 0.
  counts = scatter_in_rows(counts, safe_index, -slot_counts.astype(jnp.int32), "add")
  return sums, counts


def _hinge(x, labels, margin, with_counts, method):
  if method == "slots":
    return _hinge_by_slots(x, labels, margin, with_counts)
  if method == "sort":
    return _hinge_by_sorting(x, labels, margin, with_counts)
  return lax.cond(
    _sort_is_cheaper_here(labels.longest, x.shape[1]),
    lambda: _hinge_by_sorting(x, labels, margin, with_counts),
    lambda: _hinge_by_slots(x, labels, margin, with_counts),
  )


def _per_sample(sums, labels, num_classes):
  return jnp.where(labels.row_valid, sums / num_classes, jnp.nan)


def _rows(x, target, margin, with_counts, method):
  """Per-sample losses, net counts (if asked) and valid rows of ``(N, C)`` scores."""
  labels = LabelLists(target, x.shape[1])
  sums, counts = _hinge(x, labels, margin, with_counts, method)
  return _per_sample(sums, labels, x.shape[1]), counts, labels.row_valid


@functools.cache
def _folded_under_vmap(with_counts, method):
  """:func:`_rows`, whose ``vmap`` folds the mapped axis into the rows.

  Rows are independent, so a batch of ``(N, C)`` problems is one ``(B*N, C)``
  problem: under ``vmap`` over examples this runs the batched call's program
  (one method choice and one loop over the longest list of all rows), where
  JAX's rule would batch every scatter and gather of the loops (about 20% more
  time on XLA:CPU). A margin per example keeps JAX's rule, whose method choice
  is still batch wide (:func:`_batch_wide`).
  """
  rows = functools.partial(_rows, with_counts=with_counts, method=method)

  @custom_batching.custom_vmap
  def folded(x, target, margin):
    return rows(x, target, margin)

  @folded.def_vmap
  def _fold(axis_size, in_batched, x, target, margin):
    x_batched, target_batched, margin_batched = in_batched
    if margin_batched:
      axes = tuple(0 if b else None for b in in_batched)
      return jax.vmap(rows, in_axes=axes)(x, target, margin), (True, True, True)
    x, target = (
      a if b else jnp.broadcast_to(a, (axis_size, *a.shape))
      for a, b in ((x, x_batched), (target, target_batched))
    )
    num_rows = axis_size * x.shape[1]
    # Again through ``folded``: a nested vmap folds its own axis too.
    out = folded(x.reshape(num_rows, x.shape[2]), target.reshape(num_rows, target.shape[2]), margin)
    out = jax.tree.map(lambda a: a.reshape(axis_size, x.shape[1], *a.shape[1:]), out)
    return out, (True, True, True)

  return folded


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _multilabel_margin_vjp(x, target, margin, method="auto"):
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
    method: ``"auto"``, ``"slots"`` or ``"sort"`` (static); see the module
      docstring. All give torch's result.

  Returns:
    Per-sample losses of shape ``(N,)``.
  """
  return _folded_under_vmap(False, method)(x, target, margin)[0]


def _fwd(x, target, margin, method):
  # The counts are piecewise constant in x: cutting the gradient here lets
  # grad-of-grad see a zero second derivative instead of a while loop.
  per_sample, counts, row_valid = _folded_under_vmap(True, method)(
    lax.stop_gradient(x), target, lax.stop_gradient(margin)
  )
  return per_sample, (counts, row_valid, margin)


def _bwd(method, residuals, cotangent):
  del method
  counts, row_valid, margin = residuals
  scale = (cotangent / counts.shape[1])[:, None]
  grad_x = jnp.where(row_valid[:, None], counts * scale, jnp.nan)
  # Each active term adds 1 at a negative and -1 at a label: the margin's
  # gradient is the number of active terms, i.e. minus the label counts.
  # Summed as floats: an int32 sum could overflow (up to C*C/4 terms a row), and
  # jnp.sum makes an int64 copy of the counts under x64.
  active_terms = jnp.sum(jnp.where(counts > 0, counts, 0).astype(scale.dtype), axis=1)
  grad_margin = jnp.sum(jnp.where(row_valid, active_terms * scale[:, 0], 0))
  return grad_x.astype(cotangent.dtype), None, grad_margin.astype(margin.dtype)


_multilabel_margin_vjp.defvjp(_fwd, _bwd)


def _margin_varying_like_x(x, target, margin, method="auto"):
  """``_multilabel_margin_vjp`` with ``margin`` varying like ``x`` in ``shard_map``."""
  return _multilabel_margin_vjp(x, target, vary_like(x, margin), method)


# Jitted so that eager callers (the Optax-style API) reuse one compiled
# kernel: run op by op, the loops and the cond would be traced and compiled
# anew on every call, their bodies being fresh closures.
multilabel_margin_per_sample = jax.jit(_margin_varying_like_x, static_argnames=("method",))


# Up to this many label slots, the fused rule compares every score with every
# label's threshold (K vectorised compares per score, no gather); longer lists
# binary-search the sorted thresholds (log2 K gathers per score, and a
# histogram). Per platform: on XLA:CPU the two cost the same at K = 128
# (N=1024, C=100,000: 1.9 s a step each; the compares take 1.6x the search's
# time at K = 256 and 0.4x at K = 16). GPU and TPU: the CPU's value until
# measured there (``benchmarks/calibrate.py --fused``).
FUSED_COMPARE_MAX_SLOTS = {"cpu": 128, "gpu": 128, "tpu": 128}


def fused_method(num_slots: int, platform: str | None = None) -> str:
  """The fused rule's method for ``num_slots`` label slots: ``"compare"`` or ``"search"``.

  A static choice (the two rules keep different per-row sums), made for the
  platform of :func:`jaxmargin._settings.trace_platform` unless given.
  """
  platform = platform or trace_platform()
  return "compare" if num_slots <= FUSED_COMPARE_MAX_SLOTS[platform] else "search"


def _count_below(padded, x):
  """How many of its row's ascending thresholds lie strictly below each score.

  ``padded`` has ``2**levels - 1`` entries per row (inf past the thresholds):
  ``levels`` branch-free halvings, each one gather from that small table.
  (:func:`_searchsorted_rows` searches rows as long as the scores', with the
  row-wise gathers that explicit mesh axes can shard.)
  """
  count = jnp.zeros(x.shape, jnp.int32)
  for level in reversed(range((padded.shape[1] + 1).bit_length() - 1)):
    step = 1 << level
    probe = gather_in_rows(padded, count + (step - 1))
    count = jnp.where(probe < x, count + step, count)
  return count


@dataclasses.dataclass(frozen=True)
class FusedMultilabelMargin:
  r"""Chunk rule of the multi-label margin loss for :mod:`jaxmargin._fused`.

  Label :math:`j` gives the threshold :math:`t_j = -(\mathrm{margin} - x_j)`:
  its term with negative :math:`d` is active iff :math:`x_d > t_j` (the
  sort method's exact test) and then equals :math:`x_d - t_j`. With
  :math:`c_d` the number of thresholds below :math:`x_d` and :math:`n_j` the
  number of negatives above :math:`t_j`, the row sum is
  :math:`\sum_d c_d x_d - \sum_j n_j t_j`; :math:`c_d` is the gradient of
  score :math:`d`, :math:`-n_j` that of label :math:`j`, and
  :math:`\sum_j n_j` that of the margin.

  ``method="compare"`` counts with one compare per score and slot, O(N*C*K);
  ``"search"`` binary-searches the sorted thresholds, O(N*C*log K), and
  gets :math:`n_j` from a histogram of :math:`c_d`.
  """

  method: str
  uses_label_scores = True

  def prepare(self, labels, label_scores, row_args):
    (margin,) = row_args
    offset = margin - label_scores
    # A NaN label score drops its terms, as in torch; an inf threshold is
    # never exceeded.
    threshold = jnp.where(labels.slot_valid & ~jnp.isnan(offset), -offset, jnp.inf)
    if self.method == "compare":
      return threshold, None, None
    # jnp.argsort's stable sort, with int32 positions (64-bit under x64).
    ascending, order = lax.sort(
      (threshold, lax.broadcasted_iota(jnp.int32, threshold.shape, 1)),
      dimension=1,
      is_stable=True,
      num_keys=1,
    )
    # Padded with inf to 2**levels - 1 entries, for a search in power-of-two
    # steps; prefix[n, c] sums the c lowest thresholds.
    levels = ascending.shape[1].bit_length()
    padded = jnp.pad(
      ascending, ((0, 0), (0, 2**levels - 1 - ascending.shape[1])), constant_values=jnp.inf
    )
    prefix = jnp.concatenate(
      [jnp.zeros_like(ascending[:, :1]), jnp.cumsum(ascending, axis=1)], axis=1
    )
    return threshold, order, (padded, prefix)

  def chunk(self, context, chunk: Chunk, with_grads):
    threshold, _, ascending = context
    x, negative = chunk.scores, ~chunk.is_label
    num_slots = threshold.shape[1]
    if self.method == "compare":
      active = [(x > threshold[:, k : k + 1]) & negative for k in range(num_slots)]
      per_score = sum((a.astype(x.dtype) for a in active), jnp.zeros_like(x))
      counts = (
        jnp.stack(row_sums(*(a.astype(jnp.int32) for a in active)), axis=1)
        if active
        else jnp.zeros_like(threshold, jnp.int32)
      )
      (values,) = row_sums(jnp.where(per_score > 0, per_score * x, 0))
      return ChunkShare(values, counts, per_score)
    padded, prefix = ascending
    below = jnp.where(negative, _count_below(padded, x), 0)
    # Guard 0 * inf: a score below every threshold adds exactly 0.
    terms = jnp.where(below > 0, below * x - gather_in_rows(prefix, below), 0)
    (values,) = row_sums(terms)
    histogram = count_in_rows(below, prefix.shape[1])
    return ChunkShare(values, histogram, below.astype(x.dtype))

  def finish(self, context, values, sums, with_grads):
    threshold, order, _ = context
    if self.method == "compare":
      counts = sums
      values = values - jnp.sum(jnp.where(counts > 0, counts * threshold, 0), axis=1)
    else:
      # n at sorted position r is the number of scores with c_d > r.
      above = jnp.cumsum(sums[:, :0:-1], axis=1, dtype=jnp.int32)[:, ::-1]
      counts = scatter_in_rows(jnp.zeros_like(above), order, above, "set")
    counts = counts.astype(values.dtype)
    return RowTotals(values, -counts, (jnp.sum(counts, axis=1),))
