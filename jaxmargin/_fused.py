"""Fused classifier + loss: the class axis in chunks, never the ``(N, C)`` scores.

The scores ``features @ kernel + bias`` are computed one chunk of ``B``
classes at a time; a loss's *chunk rule* (in the loss's own core file) turns
a chunk of scores into its share of the per-row loss and into the derivative
of that share with respect to the chunk's scores. Everything a rule adds up
over chunks is a per-row quantity, so memory is ``O(N*B + N*K*D)`` whatever
``C`` is; the kernel's gradient, an output, is written chunk by chunk.

A rule may also ask for the scores of each row's listed classes (its *label
scores*, gathered as ``features . kernel[:, label] + bias[label]``): their
gradient goes straight to the gathered kernel columns, features and bias.

With ``row_scale`` the sweep also gives the gradients; ``_fused_modes``
builds the two differentiation modes of the fused losses on it. Inside
``shard_map`` a :class:`Plan`'s class axis makes each device sweep its own
classes and sum the per-row quantities over the devices.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jax import lax

from jaxmargin._deterministic import add_at
from jaxmargin._sharding import scatter_in_rows, vary_like

# About this many scores per chunk (4 MB in float32), which stays in cache on a CPU
# and is a small fraction of an accelerator's memory.
_CHUNK_ELEMENTS = 1 << 20
_CHUNK_ALIGN = 128


def auto_chunk_size(num_rows: int, num_classes: int) -> int:
  """The chunk width used when the caller gives none."""
  width = _CHUNK_ELEMENTS // max(num_rows, 1)
  width = max(_CHUNK_ALIGN, width // _CHUNK_ALIGN * _CHUNK_ALIGN)
  return max(1, min(width, num_classes))


class Chunk(NamedTuple):
  """What a rule sees of one chunk of ``B`` classes."""

  scores: jax.Array  # (N, B) in the compute dtype
  is_label: jax.Array  # (N, B) bool: the class is in the row's label list
  class_args: tuple  # (B,) slices of the per-class arrays
  kept: jax.Array | None = None  # (N, B) bool: in the row's kept list (LabelSlots.kept_index)


class ChunkShare(NamedTuple):
  """A rule's result for one chunk; ``dscores`` and ``dclass`` only with gradients."""

  values: jax.Array  # (N,) this chunk's share of the row sums
  sums: Any  # pytree of per-row arrays, added over chunks
  dscores: jax.Array | None = None  # (N, B) d(row sum) / d(score)
  dclass: tuple = ()  # (N, B) d(row sum) / d(class arg), per class arg


class RowTotals(NamedTuple):
  """A rule's per-row results once every chunk is seen (all before the ``1/C``)."""

  values: jax.Array  # (N,)
  dlabel: jax.Array | None  # (N, K) d(row sum) / d(label score)
  drow: tuple  # (N,) d(row sum) / d(row arg), per row arg


class Rule(Protocol):
  """A loss's chunk rule; hashable (it is a static argument)."""

  uses_label_scores: bool

  def prepare(self, labels: LabelSlots, label_scores: jax.Array | None, row_args: tuple) -> Any: ...

  def chunk(self, context: Any, chunk: Chunk, with_grads: bool) -> ChunkShare: ...

  def finish(self, context: Any, values: jax.Array, sums: Any, with_grads: bool) -> RowTotals: ...


class Plan(NamedTuple):
  """How a fused loss sweeps the classes (static)."""

  chunk_size: int  # classes per chunk
  class_axis: str | tuple[str, ...] | None = None  # the mesh axes that split the classes
  num_classes: int | None = None  # the real classes; later columns are padding

  def classes(self, local_classes: int) -> int:
    """C of the loss (its divisor): the real classes, or every column of the kernel."""
    if self.num_classes is not None:
      return self.num_classes
    return total_classes(local_classes, self.class_axis)

  def real_columns(self, local_classes: int, offset) -> Any:
    """How many of a device's columns (from global ``offset``) are real; ``None``: all."""
    if self.num_classes is None or self.num_classes == total_classes(
      local_classes, self.class_axis
    ):
      return None
    return self.num_classes - offset


class LabelSlots(NamedTuple):
  """Each row's label list: the ``(N, K)`` arrays of ``_multilabel_margin.LabelLists``."""

  slot_index: jax.Array  # int32 class index of each valid slot, C elsewhere
  slot_valid: jax.Array  # bool: the slot holds a label
  # Optional (N, J) list of classes, as slot_index/slot_valid, that a rule may
  # limit its non-label classes to (the hard negatives); chunks see it as ``kept``.
  kept_index: jax.Array | None = None
  kept_valid: jax.Array | None = None

  def kept_slots(self) -> LabelSlots | None:
    """The kept list as slots of its own, or ``None``."""
    if self.kept_index is None or self.kept_valid is None:
      return None
    return LabelSlots(self.kept_index, self.kept_valid)


class Inputs(NamedTuple):
  """The differentiable inputs of a fused loss, in the compute dtype."""

  features: jax.Array  # (N, D)
  kernel: jax.Array  # (D, C)
  bias: jax.Array | None  # (C,)
  class_args: tuple  # (C,) arrays sliced with the classes
  row_args: tuple  # scalars, or (N,) or (N, K) arrays: values per row


def gather_in_rows(table: jax.Array, index: jax.Array) -> jax.Array:
  """``table[n, index[n, b]]`` for a small per-row ``table`` and in-bounds ``index``.

  One gather from the flattened table: on XLA:CPU about twice as fast in a
  chunk as ``take_along_axis``, whose row-and-column indices it builds in full.
  """
  width = table.shape[1]
  rows = (jnp.arange(index.shape[0], dtype=index.dtype) * width)[:, None]
  return table.reshape(-1).at[rows + index].get(mode="promise_in_bounds")


def count_in_rows(index: jax.Array, bins: int) -> jax.Array:
  """``(N, bins)`` histogram of each row of an in-bounds ``(N, B)`` index."""
  rows = (jnp.arange(index.shape[0], dtype=index.dtype) * bins)[:, None]
  counts = jnp.zeros(index.shape[0] * bins, jnp.int32)
  counts = counts.at[(rows + index).reshape(-1)].add(1, mode="promise_in_bounds")
  return counts.reshape(index.shape[0], bins)


def _labels_in_chunk(labels, start, width):
  """``(N, width)`` mask of the listed classes among ``start .. start + width - 1``."""
  local = labels.slot_index - start
  inside = labels.slot_valid & (local >= 0) & (local < width)
  mask = jnp.zeros((labels.slot_index.shape[0], width), bool)
  # An OR at an in-bounds index for the slots outside the chunk too, so that
  # checkify's index checks stay quiet.
  return scatter_in_rows(mask, jnp.clip(local, 0, width - 1), inside, "max")


def _chunk_scores(features, kernel, bias, start, width, real_columns=None, padding_score=-jnp.inf):
  kernel_chunk = lax.dynamic_slice_in_dim(kernel, start, width, axis=1)
  scores = jnp.matmul(features, kernel_chunk, preferred_element_type=features.dtype)
  if bias is not None:
    scores = scores + lax.dynamic_slice_in_dim(bias, start, width)
  if real_columns is not None:
    column = start + lax.broadcasted_iota(jnp.int32, (1, width), 1)
    scores = jnp.where(column < real_columns, scores, padding_score)
  return scores, kernel_chunk


def _for_each_chunk(num_classes, chunk_size, visit, carry):
  """``carry = visit(carry, start, width)`` over the chunks; the last may be narrower."""
  full, tail = divmod(num_classes, chunk_size)
  if full:
    carry = lax.fori_loop(0, full, lambda i, c: visit(c, i * chunk_size, chunk_size), carry)
  if tail:
    carry = visit(carry, full * chunk_size, tail)
  return carry


def _sum_rows(arg, per_row, row_scale):
  """A per-row gradient, scaled by ``row_scale (N, 1)``, in the shape of its argument.

  A scalar argument gets the sum over the rows; an ``(N,)`` or ``(N, K)`` one
  its rows.
  """
  scaled = per_row * (row_scale if per_row.ndim == 2 else row_scale[:, 0])
  return jnp.sum(scaled) if arg.ndim == 0 else scaled


def sweep(
  rule: Rule,
  inputs: Inputs,
  labels: LabelSlots,
  row_valid: jax.Array,
  plan: Plan,
  row_scale: jax.Array | None = None,
):
  """One pass over the class chunks.

  Args:
    rule: the loss's chunk rule.
    inputs: the differentiable inputs.
    labels: the label lists, ``(N, K)``.
    row_valid: ``(N,)`` bool; other rows are NaN, value and gradient.
    plan: the chunk size, the class axis (inside ``shard_map``) and the
      real classes (static).
    row_scale: ``None`` for values only; else ``(N,)``, the cotangent of each
      row's loss (already divided by ``C``), and the gradients are returned.

  Returns:
    The per-row losses ``(N,)``, and with ``row_scale`` also the gradients,
    an :class:`Inputs` of the same structure.
  """
  features, kernel, bias, class_args, row_args = inputs
  num_rows, num_classes = features.shape[0], kernel.shape[1]
  chunk_size, class_axis = plan.chunk_size, plan.class_axis
  local, offset = labels, 0
  if class_axis is not None:
    # This device holds classes offset .. offset + C_local - 1 of the global C.
    offset = lax.axis_index(class_axis) * num_classes
    local = LabelSlots(*_on_device(labels.slot_index, labels.slot_valid, offset, num_classes))
    if labels.kept_index is not None:
      kept = _on_device(labels.kept_index, labels.kept_valid, offset, num_classes)
      local = local._replace(kept_index=kept[0], kept_valid=kept[1])
  with_grads = row_scale is not None
  safe = jnp.minimum(local.slot_index, num_classes - 1)
  label_scores = columns = None
  if rule.uses_label_scores:
    columns = jnp.take(kernel, safe, axis=1)  # (D, N, K)
    label_scores = jnp.einsum("nd,dnk->nk", features, columns)
    if bias is not None:
      label_scores = label_scores + bias[safe]
    if class_axis is not None:
      label_scores = lax.psum(jnp.where(local.slot_valid, label_scores, 0), class_axis)
  context = rule.prepare(labels, label_scores, row_args)
  if with_grads:
    # Invalid rows poison their gradients, as the unfused losses do.
    row_scale = jnp.where(row_valid, row_scale, jnp.nan)[:, None]

  real_columns = plan.real_columns(num_classes, offset)
  # The lowest finite score makes each term of a padding column exactly 0, with
  # a zero derivative: a hinge max(0, margin - x_j + min) for any label score
  # x_j short of -inf, and the log-sigmoid term of a negative class (at -inf
  # that one would be 0 * inf = NaN).
  lowest = float(jnp.finfo(features.dtype).min)

  def visit(carry, start, width):
    values, sums, grads = carry
    scores, kernel_chunk = _chunk_scores(features, kernel, bias, start, width, real_columns, lowest)
    class_chunks = tuple(lax.dynamic_slice_in_dim(a, start, width) for a in class_args)
    kept_slots = local.kept_slots()
    kept = None if kept_slots is None else _labels_in_chunk(kept_slots, start, width)
    share = rule.chunk(
      context, Chunk(scores, _labels_in_chunk(local, start, width), class_chunks, kept), with_grads
    )
    values = values + share.values
    sums = jax.tree.map(jnp.add, sums, share.sums)
    if with_grads:
      g_features, g_kernel, g_bias, g_class = grads
      assert share.dscores is not None and row_scale is not None
      d_scores = share.dscores * row_scale
      g_features = g_features + d_scores @ kernel_chunk.T
      g_kernel = lax.dynamic_update_slice_in_dim(g_kernel, features.T @ d_scores, start, 1)
      if g_bias is not None:
        g_bias = lax.dynamic_update_slice_in_dim(g_bias, jnp.sum(d_scores, 0), start, 0)
      g_class = tuple(
        lax.dynamic_update_slice_in_dim(g, jnp.sum(d * row_scale, 0), start, 0)
        for g, d in zip(g_class, share.dclass, strict=False)
      )
      grads = (g_features, g_kernel, g_bias, g_class)
    return values, sums, grads

  first_width = min(chunk_size, num_classes)
  sums_shape = jax.eval_shape(
    lambda: (
      rule.chunk(
        context,
        Chunk(
          jnp.zeros((num_rows, first_width), features.dtype),
          jnp.zeros((num_rows, first_width), bool),
          tuple(a[:first_width] for a in class_args),
          None if labels.kept_index is None else jnp.zeros((num_rows, first_width), bool),
        ),
        with_grads,
      ).sums
    )
  )

  # Loop carries vary (in shard_map) over the mesh axes that the inputs do.
  def zeros(shape, dtype):
    return vary_like(features, jnp.zeros(shape, dtype))

  sums = jax.tree.map(lambda s: zeros(s.shape, s.dtype), sums_shape)
  grads = None
  if with_grads:
    grads = (
      zeros(features.shape, features.dtype),
      zeros(kernel.shape, kernel.dtype),
      None if bias is None else zeros(bias.shape, bias.dtype),
      tuple(zeros(a.shape, a.dtype) for a in class_args),
    )
  values = zeros((num_rows,), features.dtype)
  values, sums, grads = _for_each_chunk(num_classes, chunk_size, visit, (values, sums, grads))
  if class_axis is not None:
    values, sums = lax.psum((values, sums), class_axis)
  totals = rule.finish(context, values, sums, with_grads)
  per_row = jnp.where(row_valid, totals.values / plan.classes(num_classes), jnp.nan)
  if not with_grads:
    return per_row
  assert grads is not None and row_scale is not None
  g_features, g_kernel, g_bias, g_class = grads
  if rule.uses_label_scores:
    assert totals.dlabel is not None and columns is not None
    d_label = jnp.where(local.slot_valid, totals.dlabel, 0) * row_scale
    g_features = g_features + jnp.einsum("nk,dnk->nd", d_label, columns)
    # Repeated labels summed in a fixed order where a scatter-add's is not (GPUs).
    flat = safe.reshape(-1)
    g_kernel = add_at(
      g_kernel, flat, jnp.einsum("nk,nd->dnk", d_label, features).reshape(features.shape[1], -1)
    )
    if g_bias is not None:
      g_bias = add_at(g_bias, flat, d_label.reshape(-1))
  g_rows = tuple(_sum_rows(a, d, row_scale) for a, d in zip(row_args, totals.drow, strict=False))
  return per_row, Inputs(g_features, g_kernel, g_bias, g_class, g_rows)


def _on_device(index, valid, offset, num_classes):
  """Global class lists as a device's: local indices, valid where the class is its own."""
  local = index - offset
  mine = valid & (local >= 0) & (local < num_classes)
  return jnp.where(mine, local, num_classes), mine


def total_classes(local_classes: int, class_axis: str | tuple[str, ...] | None) -> int:
  """C: a device's kernel columns, times the devices that split them in ``shard_map``."""
  if class_axis is None:
    return local_classes
  return local_classes * lax.axis_size(class_axis)


def top_k(
  features: jax.Array, kernel: jax.Array, bias: jax.Array | None, k: int, plan: Plan
) -> tuple[jax.Array, jax.Array]:
  """The ``k`` highest scores of each row and their classes, chunk by chunk.

  Equal to ``lax.top_k(features @ kernel + bias, k)``, ties included: a
  chunk's candidates come after the ones kept from earlier (lower) classes,
  and ``lax.top_k`` keeps the first of equal values.
  """
  num_classes, class_axis = kernel.shape[1], plan.class_axis
  chunk_size = max(plan.chunk_size, min(k, num_classes))
  offset = 0 if class_axis is None else lax.axis_index(class_axis) * num_classes
  real_columns = plan.real_columns(num_classes, offset)

  def best(scores, start):
    values, index = lax.top_k(scores, min(k, scores.shape[1]))
    return values, index + start

  def visit(carry, start, width):
    # Padding scores -inf, so that a real score of -inf, of a lower class,
    # still comes first.
    scores, _ = _chunk_scores(features, kernel, bias, start, width, real_columns, -jnp.inf)
    values, index = best(scores, start)
    if carry is None:
      return values, index
    values = jnp.concatenate([carry[0], values], axis=1)
    index = jnp.concatenate([carry[1], index], axis=1)
    values, position = lax.top_k(values, k)
    return values, jnp.take_along_axis(index, position, axis=1)

  first = min(chunk_size, num_classes)
  carry = visit(None, 0, first)
  rest = num_classes - first
  if rest:

    def shifted(c, start, width):
      return visit(c, start + first, width)

    carry = _for_each_chunk(rest, chunk_size, shifted, carry)
  if class_axis is None:
    return carry
  # Each device's best k, in global classes, gathered in device (so class)
  # order: the first of equal values is still the lowest class.
  values, index = carry
  shard = lax.axis_index(class_axis)
  index = index + offset
  values, index = (_gather_over(a, shard, class_axis) for a in (values, index))
  values, position = lax.top_k(values, k)
  return values, jnp.take_along_axis(index, position, axis=1)


def _gather_over(a, shard, axis_name):
  """``all_gather(a, axis_name, axis=1, tiled=True)``, typed the same on every device.

  Each device writes its block into zeros and a ``psum`` adds them: one
  nonzero term per entry, so the sum is exact, and its result is known to
  be replicated, which ``shard_map`` needs for a replicated output.
  """
  blocks = jnp.zeros((a.shape[0], a.shape[1] * lax.axis_size(axis_name)), a.dtype)
  return lax.psum(lax.dynamic_update_slice_in_dim(blocks, a, shard * a.shape[1], 1), axis_name)
