"""The multi-label margin core under ``vmap``: one batch of rows, one method choice.

The core (:mod:`jaxmargin._multilabel_margin`) picks its method and sizes its
loops from the longest label list of the batch. Under ``vmap`` JAX would
batch those decisions per example (a ``lax.cond`` with a batched predicate
runs both branches, a batched trip count adds a select per carry and
iteration) and every scatter and gather of the loops. These two
``custom_vmap`` rules keep the batched call's program instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import custom_batching


@custom_batching.custom_vmap
def batch_wide(longest):
  """``longest``, as the maximum over every ``vmap`` axis it is batched along.

  The method choice and the loops' trip counts read the longest list of the
  whole batch. Under ``vmap`` over examples each example sees only its own
  list; a batched predicate turns the ``lax.cond`` into a select that runs
  both methods for every example, and a batched trip count runs each loop to
  the batch's longest anyway, with a select per carry and iteration. With the
  batch's maximum, a vmapped call makes the choice and the loops of the
  batched call. (A vmap over examples does not get here:
  :func:`folded_under_vmap` makes their rows one batch. This serves the
  vmaps it leaves to JAX, over a margin per example.)
  """
  return longest


@batch_wide.def_vmap
def _batch_wide_vmap(axis_size, in_batched, longest):
  del axis_size
  (batched,) = in_batched
  if not batched:
    return longest, False
  # Again through ``batch_wide``: inside a nested ``vmap`` the maximum is
  # still batched along the outer axes.
  return batch_wide(jnp.max(longest, axis=0, initial=0)), False


def folded_under_vmap(rows):
  """``rows(x, target, margin, *label_weights)``, its ``vmap`` folding the mapped axis into rows.

  Rows are independent, so a batch of ``(N, C)`` problems is one ``(B*N, C)``
  problem: under ``vmap`` over examples this runs the batched call's program
  (one method choice and one loop over the longest list of all rows), where
  JAX's rule would batch every scatter and gather of the loops (about 20% more
  time on XLA:CPU). A margin per example keeps JAX's rule, whose method choice
  is still batch wide (:func:`batch_wide`).

  Args:
    rows: the core's per-row computation: ``(N, C)`` scores, target and
      (optionally) label weights, and a scalar margin, to a pytree of arrays
      with ``N`` rows each.
  """

  @custom_batching.custom_vmap
  def folded(x, target, margin, *label_weights):
    return rows(x, target, margin, *label_weights)

  @folded.def_vmap
  def _fold(axis_size, in_batched, x, target, margin, *label_weights):
    if in_batched[2]:
      axes = tuple(0 if b else None for b in in_batched)
      out = jax.vmap(rows, in_axes=axes)(x, target, margin, *label_weights)
      return out, jax.tree.map(lambda _: True, out)
    # Every (N, C) argument: the scores, the target and the label weights.
    row_arrays = [
      a if b else jnp.broadcast_to(a, (axis_size, *a.shape))
      for a, b in zip((x, target, *label_weights), in_batched[:2] + in_batched[3:], strict=True)
    ]
    num_rows = axis_size * x.shape[-2]
    x, target, *label_weights = (a.reshape(num_rows, a.shape[2]) for a in row_arrays)
    # Again through ``folded``: a nested vmap folds its own axis too.
    out = folded(x, target, margin, *label_weights)
    out = jax.tree.map(lambda a: a.reshape(axis_size, num_rows // axis_size, *a.shape[1:]), out)
    return out, jax.tree.map(lambda _: True, out)

  return folded
