"""Chunk rule of the multi-label margin loss for the fused sweep of :mod:`jaxmargin._fused`.

The unfused core (:mod:`jaxmargin._multilabel_margin`) sees every score of a
row at once; the fused losses of :mod:`jaxmargin.linear` see one chunk of
classes at a time, so this rule keeps per-row counts over the chunks and
finishes the row sums once every chunk is seen. It computes the same loss,
with label weights (per slot) and a list of the only negatives to count
(hard negatives) as options.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxmargin._deterministic import add_at
from jaxmargin._fused import Chunk, ChunkShare, RowTotals, count_in_rows, gather_in_rows
from jaxmargin._row_sums import row_sums
from jaxmargin._settings import trace_platform
from jaxmargin._sharding import scatter_in_rows

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
  (``_multilabel_margin._searchsorted_rows`` searches rows as long as the
  scores', with the row-wise gathers that explicit mesh axes can shard.)
  """
  count = jnp.zeros(x.shape, jnp.int32)
  for level in reversed(range((padded.shape[1] + 1).bit_length() - 1)):
    step = 1 << level
    probe = gather_in_rows(padded, count + (step - 1))
    count = jnp.where(probe < x, count + step, count)
  return count


def _suffix_past_first(histogram):
  """``out[:, r] = sum(histogram[:, r + 1:])`` for ``r < K``, from a ``(N, K + 1)`` histogram."""
  return jnp.cumsum(histogram[:, :0:-1], axis=1)[:, ::-1]


class _Context(NamedTuple):
  threshold: jax.Array  # (N, K) t_j, inf for a slot without terms
  weights: jax.Array | None  # (N, K) w_j (0 for a slot without terms), or None
  order: jax.Array | None  # search: (N, K) slot of each sorted threshold
  padded: jax.Array | None  # search: sorted thresholds padded with inf
  prefix: jax.Array | None  # search: (N, K + 1) sums of the lowest w_j t_j
  prefix_weights: jax.Array | None  # search, weighted: (N, K + 1) sums of their w_j


@dataclasses.dataclass(frozen=True)
class FusedMultilabelMargin:
  r"""Chunk rule of the multi-label margin loss for :mod:`jaxmargin._fused`.

  Label :math:`j` gives the threshold :math:`t_j = -(\mathrm{margin} - x_j)`:
  its term with negative :math:`d` is active iff :math:`x_d > t_j` (the
  sort method's exact test) and then equals :math:`x_d - t_j`. With
  :math:`c_d = \sum_{j:\, t_j < x_d} w_j` (the weighted number of thresholds
  below :math:`x_d`) and :math:`n_j` the number of negatives above
  :math:`t_j`, the row sum is :math:`\sum_d c_d x_d - \sum_j w_j n_j t_j`;
  :math:`c_d` is the gradient of score :math:`d`, :math:`-w_j n_j` that of
  label :math:`j`, :math:`\sum_j w_j n_j` that of the margin and
  :math:`S_j = \sum_{d:\, x_d > t_j} x_d - n_j t_j` that of :math:`w_j`.
  Unweighted, :math:`w_j = 1`.

  ``method="compare"`` counts with one compare per score and slot, O(N*C*K);
  ``"search"`` binary-searches the sorted thresholds, O(N*C*log K), and
  gets :math:`n_j` from a histogram of :math:`c_d` (and, for the gradient of
  the weights, the sums :math:`\sum x_d` from a histogram of the scores,
  summed in a fixed order on every platform).

  ``weighted``: the row arguments are ``(margin, w)`` with ``w`` the
  ``(N, K)`` weight of each label slot, else ``(margin,)``. A chunk's
  ``kept`` mask (hard negatives), when given, limits the negatives to it.
  """

  method: str
  weighted: bool = False
  uses_label_scores = True

  def prepare(self, labels, label_scores, row_args):
    margin = row_args[0]
    offset = margin - label_scores
    # A NaN label score drops its terms, as in torch; an inf threshold is
    # never exceeded.
    usable = labels.slot_valid & ~jnp.isnan(offset)
    threshold = jnp.where(usable, -offset, jnp.inf)
    weights = jnp.where(usable, row_args[1], 0) if self.weighted else None
    if self.method == "compare":
      return _Context(threshold, weights, None, None, None, None)
    # jnp.argsort's stable sort, with int32 positions (64-bit under x64).
    keys = (threshold, lax.broadcasted_iota(jnp.int32, threshold.shape, 1))
    ascending, order, *sorted_weights = lax.sort(
      keys + (() if weights is None else (weights,)), dimension=1, is_stable=True, num_keys=1
    )
    # Padded with inf to 2**levels - 1 entries, for a search in power-of-two
    # steps; prefix[n, c] sums the c lowest thresholds (times their weights).
    levels = ascending.shape[1].bit_length()
    padded = jnp.pad(
      ascending, ((0, 0), (0, 2**levels - 1 - ascending.shape[1])), constant_values=jnp.inf
    )

    def prefix_sums(a):
      return jnp.concatenate([jnp.zeros_like(a[:, :1]), jnp.cumsum(a, axis=1)], axis=1)

    if weights is None:
      return _Context(threshold, None, order, padded, prefix_sums(ascending), None)
    (w,) = sorted_weights
    # A slot without terms has weight 0 and threshold inf: 0, not NaN (0 * inf),
    # past the thresholds (no score reads that far).
    weighted = w * jnp.where(w != 0, ascending, 0)
    return _Context(threshold, weights, order, padded, prefix_sums(weighted), prefix_sums(w))

  def chunk(self, context, chunk: Chunk, with_grads):
    x, negative = chunk.scores, ~chunk.is_label
    if chunk.kept is not None:
      negative = negative & chunk.kept
    threshold, weights = context.threshold, context.weights
    sum_scores = self.weighted and with_grads
    if self.method == "compare":
      num_slots = threshold.shape[1]
      active = [(x > threshold[:, k : k + 1]) & negative for k in range(num_slots)]
      if weights is None:
        per_score = sum((a.astype(x.dtype) for a in active), jnp.zeros_like(x))
        any_active = per_score > 0
      else:
        per_score = sum(
          (jnp.where(a, weights[:, k : k + 1], 0) for k, a in enumerate(active)), jnp.zeros_like(x)
        )
        any_active = jnp.zeros_like(negative)
        for a in active:
          any_active = any_active | a
      if not active:
        counts = jnp.zeros_like(threshold, jnp.int32)
        sums = (counts, jnp.zeros_like(threshold)) if sum_scores else counts
      else:
        totals = row_sums(
          *(a.astype(jnp.int32) for a in active),
          *((jnp.where(a, x, 0) for a in active) if sum_scores else ()),
        )
        counts = jnp.stack(totals[:num_slots], axis=1)
        sums = (counts, jnp.stack(totals[num_slots:], axis=1)) if sum_scores else counts
      (values,) = row_sums(jnp.where(any_active, per_score * x, 0))
      return ChunkShare(values, sums, per_score)
    below = jnp.where(negative, _count_below(context.padded, x), 0)
    if weights is None:
      per_score, linear = below.astype(x.dtype), below * x
    else:
      per_score = gather_in_rows(context.prefix_weights, below)
      linear = per_score * x
    # Guard 0 * inf: a score below every threshold adds exactly 0.
    terms = jnp.where(below > 0, linear - gather_in_rows(context.prefix, below), 0)
    (values,) = row_sums(terms)
    bins = context.prefix.shape[1]
    histogram = count_in_rows(below, bins)
    if not sum_scores:
      return ChunkShare(values, histogram, per_score)
    # The scores summed by bin, in a fixed order on a GPU too (the gradient
    # of the class weights must be reproducible).
    rows = (jnp.arange(x.shape[0], dtype=jnp.int32) * bins)[:, None]
    score_sums = add_at(
      jnp.zeros((x.shape[0] * bins,), x.dtype),
      (rows + below).reshape(-1),
      jnp.where(below > 0, x, 0).reshape(-1),
    ).reshape(x.shape[0], bins)
    return ChunkShare(values, (histogram, score_sums), per_score)

  def finish(self, context, values, sums, with_grads):
    threshold, weights = context.threshold, context.weights
    sum_scores = self.weighted and with_grads
    counts, score_sums = sums if sum_scores else (sums, None)
    if self.method == "compare":
      scaled = counts if weights is None else weights * counts
      # Guard 0 * inf: a slot without terms (threshold inf) adds exactly 0.
      values = values - jnp.sum(scaled * jnp.where(counts > 0, threshold, 0), axis=1)
    else:
      # n at sorted position r is the number of scores with c_d > r.
      order = context.order
      above = jnp.cumsum(counts[:, :0:-1], axis=1, dtype=jnp.int32)[:, ::-1]
      counts = scatter_in_rows(jnp.zeros_like(above), order, above, "set")
      if score_sums is not None:
        score_sums = scatter_in_rows(
          jnp.zeros_like(threshold), order, _suffix_past_first(score_sums), "set"
        )
    n = counts.astype(values.dtype)
    scaled = n if weights is None else weights * n
    drow = (jnp.sum(scaled, axis=1),)
    if self.weighted:
      per_slot = jnp.zeros_like(threshold)
      if score_sums is not None:
        # Guard 0 * inf, as above: a slot without terms has no score above it.
        per_slot = score_sums - n * jnp.where(counts > 0, threshold, 0)
      drow += (per_slot,)
    return RowTotals(values, -scaled, drow)
