"""Sums over repeated indices in a fixed order, for gradients reproducible on GPUs.

The transpose of a gather is a scatter-add, and a float scatter-add whose
indices repeat (two rows with the same label) is not reproducible on a GPU:
the colliding updates are atomic adds, summed in whatever order the threads
run. :func:`sorted_add_at` sums each index's updates in an order fixed by
the inputs and writes the sums with a scatter that sets: where indices
repeat, every write carries the same value, so the result does not depend on
their order. XLA:CPU runs a scatter's updates one after another, in order,
so there :func:`add_at` keeps the (cheaper) scatter-add.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from jaxmargin._sharding import gather_like_index, vary_like


def _shift_right(a, shift, fill):
  """``a`` moved ``shift`` places along its last axis, ``fill`` coming in (``shift`` traced)."""
  size = a.shape[-1]
  padded = jnp.concatenate([jnp.full_like(a, fill), a], axis=-1)
  return lax.dynamic_slice_in_dim(padded, size - shift, size, axis=a.ndim - 1)


def _whole_last_axis(a):
  """``a`` with its last axis unsplit: a sort along a split axis has no sharding rule.

  Only explicit mesh axes put a split in the type (then the rows, N of them,
  are gathered); elsewhere ``a`` is returned as it is.
  """
  spec = getattr(jax.typeof(a).sharding, "spec", ())
  if len(spec) < a.ndim or spec[a.ndim - 1] is None:
    return a
  return jax.sharding.reshard(a, P(*spec[: a.ndim - 1], None))


def add_at(base: jax.Array, index: jax.Array, updates: jax.Array) -> jax.Array:
  """``base.at[..., index].add(updates)``, reproducible on every platform.

  A scatter-add where the program is compiled for a CPU; elsewhere
  :func:`sorted_add_at`, which costs two to three times as much there
  (a sort, and gathers of the updates' size).
  """

  def scatter_add(base, index, updates):
    return base.at[..., index].add(updates)

  return lax.platform_dependent(base, index, updates, cpu=scatter_add, default=sorted_add_at)


def sorted_add_at(base: jax.Array, index: jax.Array, updates: jax.Array) -> jax.Array:
  """``base.at[..., index].add(updates)`` along the last axis, in a fixed order.

  The updates are sorted by index (a stable sort: equal indices keep their
  order) and each run of equal indices is summed by a segmented scan (Hillis
  and Steele's: ``ceil(log2(L))`` doubling steps for the longest run ``L``,
  none when no index repeats). Every position of a run then reads the run's
  total (at its last position) and sets ``base[index] + total`` at its index.
  Work ``O(M log M)`` for the sort and ``O(updates.size * log L)`` for the
  rest, as against ``O(updates.size)`` for the scatter-add. Differentiable in
  every mode, as the scatter-add is (the loop has a fixed trip count,
  ``ceil(log2(M))``, and skips the steps it does not need).

  Args:
    base: ``(..., C)`` array.
    index: ``(M,)`` integer indices in ``[0, C)``.
    updates: ``(..., M)`` array, the leading dimensions those of ``base``.

  Returns:
    ``base`` with the updates added, in ``base``'s dtype.
  """
  size, _num_slots = index.shape[0], base.shape[-1]
  if size == 0:
    return base
  index = _whole_last_axis(index.astype(jnp.int32))
  updates = _whole_last_axis(updates)
  sorted_index, order = lax.sort((index, lax.iota(jnp.int32, size)), is_stable=True, num_keys=1)
  values = jnp.take(updates.astype(base.dtype), order, axis=-1, mode="clip")
  starts = sorted_index != _shift_right(sorted_index, 1, -1)

  def double(shift, carry):
    # After it, values[i] sums the run's elements within 2 * shift of i, and
    # reached_start[i] says whether that window holds the run's start.
    values, reached_start = carry
    from_before = _shift_right(values, shift, 0)
    values = values + jnp.where(reached_start, jnp.zeros_like(from_before), from_before)
    return values, reached_start | _shift_right(reached_start, shift, True)

  def step(i, carry):
    shift = jnp.left_shift(jnp.int32(1), i)
    return lax.cond(jnp.all(carry[1]), lambda _, c: c, double, shift, carry)

  # A fixed trip count, not a while loop, so that reverse mode differentiates it.
  values, _ = lax.fori_loop(0, max(1, (size - 1).bit_length()), step, (values, starts))
  # A run ends before the first position with a higher index (int32 here).
  last = jnp.searchsorted(sorted_index, sorted_index, side="right") - 1
  totals = jnp.take(values, last, axis=-1, mode="clip")
  new = jnp.take(base, sorted_index, axis=-1, mode="clip") + totals
  return base.at[..., sorted_index].set(new, mode="promise_in_bounds")


@jax.custom_vjp
def _take(table, index):
  return gather_like_index(table, index)


def _take_fwd(table, index):
  return gather_like_index(table, index), (table, index)


def _take_bwd(residuals, cotangent):
  table, index = residuals
  # Sorted on every platform: the cost is that of the rows, not of the classes.
  return sorted_add_at(jnp.zeros_like(table), index.reshape(-1), cotangent.reshape(-1)), None


_take.defvjp(_take_fwd, _take_bwd)


def take(table: jax.Array, index: jax.Array) -> jax.Array:
  """``table[index]`` for a 1-D ``table``, sharded as ``index``, differentiated in a fixed order.

  The gradient sums each index's cotangents with :func:`sorted_add_at`, on
  every platform. ``index`` must lie in ``[0, len(table))``. Inside
  ``shard_map`` the table is first marked varying like ``index``, so that its
  cotangent (a sum over the shard's rows) type-checks; the transpose of that
  mark sums over the shards.
  """
  return _take(vary_like(index, table), index)
