"""Sharding and manual-axis types for arrays a loss builds itself (meshes, ``shard_map``)."""

from __future__ import annotations

import inspect

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
  if not hasattr(lax, "pcast"):  # JAX before varying manual axes (< 0.7).
    return a
  missing = tuple(jax.typeof(x).manual_axis_type.varying - jax.typeof(a).manual_axis_type.varying)
  return lax.pcast(a, missing, to="varying") if missing else a


def vary_like_all(arrays: tuple[jax.Array, ...], a: jax.Array) -> jax.Array:
  """Marks ``a`` as varying over every manual mesh axis that any of ``arrays`` does."""
  for array in arrays:
    a = vary_like(array, a)
  return a


def scatter_in_rows(base: jax.Array, index: jax.Array, values: jax.Array, how: str) -> jax.Array:
  """``base[n].at[index[n]].<how>(values[n])`` for every row ``n`` at once.

  One scatter at ``[arange(N)[:, None], index]`` (not a ``vmap`` of per-row
  ones, which XLA:CPU no longer updates in place inside a loop), whose result
  is sharded as ``base`` is: explicit mesh axes cannot infer it when the row
  numbers, built from a shape, are replicated and ``index`` is batch-sharded.
  """
  rows = jnp.arange(index.shape[0], dtype=jnp.int32)[:, None]
  update = getattr(base.at[rows, index], how)
  if not _takes_out_sharding(update):
    return update(values)
  return update(values, out_sharding=jax.typeof(base).sharding)


def gather_like_index(table: jax.Array, index: jax.Array) -> jax.Array:
  """``table[index]``, sharded as ``index`` is.

  Explicit mesh axes cannot infer the sharding of a replicated table gathered
  at batch-sharded indices and ask for it; it is the sharding of ``index``.
  """
  get = table.at[index].get
  if not _takes_out_sharding(get):
    return get()
  return get(out_sharding=jax.typeof(index).sharding)


def _takes_out_sharding(method) -> bool:
  """Whether an ``.at[...]`` method takes ``out_sharding``.

  JAX added it to ``get`` before ``set``, ``add``, ``max``... (JAX 0.6.2
  has it only on ``get``); without it, the result is sharded as JAX infers.
  """
  return "out_sharding" in inspect.signature(method).parameters
