"""What the fused losses of :mod:`jaxmargin.linear` share: the sweep plan, the
fused loss in either differentiation mode, and the label check.
"""

from __future__ import annotations

import functools
from typing import cast

import jax
import jax.numpy as jnp

from jaxmargin import _fused, _fused_modes
from jaxmargin import _linear_validation as lv
from jaxmargin import _validation as v
from jaxmargin._sharding import vary_like_all


def plan_of(fn, chunk_size, num_rows, local_columns, class_axis, num_classes):
  """The static sweep plan, and C: the real classes (``num_classes``, or every column)."""
  if chunk_size is None:
    chunk_size = _fused.auto_chunk_size(num_rows, local_columns)
  else:
    chunk_size = min(lv.check_chunk_size(fn, chunk_size), local_columns)
  columns = _fused.total_classes(local_columns, class_axis)
  real = lv.check_num_classes(fn, num_classes, columns)
  return _fused.Plan(chunk_size, class_axis, None if real == columns else real), real


def fused_loss(rule, inputs, lists, row_valid, reduction, plan, out_dtype, kept=()):
  """The fused loss; ``kept``: ``()``, or the ``(N, J)`` lists of the only negatives to count."""
  labels = _fused.LabelSlots(lists.slot_index, lists.slot_valid, *kept)
  # In shard_map, the classifier's inputs vary over the mesh axes that any of
  # them does (features over a data axis, the kernel over the class axis):
  # the custom rule's cotangents, partial sums, then may too, and shard_map's
  # transpose of that sums them, the features' over the class axis, the
  # kernel's over the data axis. The per-row arguments vary like the rows
  # only: the rule gives them totals, the same on every class shard.
  both = functools.partial(vary_like_all, (inputs.features, inputs.kernel))
  rows = functools.partial(vary_like_all, (inputs.features,))
  features, kernel, bias, class_args = jax.tree.map(
    both, (inputs.features, inputs.kernel, inputs.bias, inputs.class_args)
  )
  inputs = _fused.Inputs(features, kernel, bias, class_args, jax.tree.map(rows, inputs.row_args))
  if reduction == "none":
    out = _fused_modes.per_row_loss(rule, inputs, labels, row_valid, plan)
  else:
    out = _fused_modes.reduced_loss(rule, inputs, labels, row_valid, plan, reduction)
  return cast(jax.Array, out).astype(out_dtype)


def with_checked_labels(fn, loss, labels, low, kernel, class_axis_name, num_classes):
  """``loss``, with the label values checked (``ValueError`` now, or checkify)."""
  if num_classes is None:
    num_classes = _fused.total_classes(jnp.shape(kernel)[-1], class_axis_name)
  return v.check_target_range(fn, labels, low, num_classes - 1, name="labels", carrier=loss)
