"""Sharding and manual-axis types for arrays a loss builds itself (meshes, ``shard_map``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def vary_like(x: jax.Array, a: jax.Array) -> jax.Array:
  """Marks ``a`` as varying over every manual mesh axis that ``x`` varies over.

  Inside ``jax.shard_map`` (with its default ``check_vma=True``) a
  ``custom_vjp`` needs its cotangents to vary like its primals. A
  hyperparameter such as ``margin`` arrives replicated while the scores vary
  per shard, so its cotangent (a sum over the scores) would not type-check.
  Outside ``shard_map`` both sets are empty and ``a`` is returned unchanged.
  """
  if not hasattr(lax, "pcast"):   # JAX before varying manual axes (< 0.7).
    return a
  missing = tuple(jax.typeof(x).manual_axis_type.varying
                  - jax.typeof(a).manual_axis_type.varying)
  return lax.pcast(a, missing, to="varying") if missing else a


def scatter_in_rows(base: jax.Array, index: jax.Array, values: jax.Array,
                    how: str) -> jax.Array:
  """``base[n].at[index[n]].<how>(values[n])`` for every row ``n`` at once.

  One scatter at ``[arange(N)[:, None], index]`` (not a ``vmap`` of per-row
  ones, which XLA:CPU no longer updates in place inside a loop), whose result
  is sharded as ``base`` is: explicit mesh axes cannot infer it when the row
  numbers, built from a shape, are replicated and ``index`` is batch-sharded.
  """
  rows = jnp.arange(index.shape[0])[:, None]
  update = getattr(base.at[rows, index], how)
  if not hasattr(jax, "typeof"):   # JAX before sharding in types (< 0.6).
    return update(values)
  return update(values, out_sharding=jax.typeof(base).sharding)


def gather_like_index(table: jax.Array, index: jax.Array) -> jax.Array:
  """``table[index]``, sharded as ``index`` is.

  Explicit mesh axes cannot infer the sharding of a replicated table gathered
  at batch-sharded indices and ask for it; it is the sharding of ``index``.
  """
  if not hasattr(jax, "typeof"):   # JAX before sharding in types (< 0.6).
    return table[index]
  return table.at[index].get(out_sharding=jax.typeof(index).sharding)
