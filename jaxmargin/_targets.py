"""Conversions between torch's padded index targets and multi-hot arrays."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmargin import _validation as v
from jaxmargin._indices import canonical_indices
from jaxmargin._sharding import scatter_in_rows


def _as_rows(array):
  return array.reshape(-1, array.shape[-1]) if array.ndim else array.reshape(1, 1)


def padded_to_multi_hot(
    target: jax.typing.ArrayLike,
    *,
    dtype: jax.typing.DTypeLike = jnp.int32,
) -> jax.Array:
  """Multi-hot labels from torch's ``-1``-padded label lists.

  The label list of a row is the prefix before its first negative entry, as
  in :func:`jaxmargin.multilabel_margin_loss`; a label listed twice is one
  label.

  Args:
    target: integer array of shape ``(..., C)``: class indices in ``[0, C-1]``
      padded with ``-1``.
    dtype: dtype of the result.

  Returns:
    Array of shape ``(..., C)``, 1 at the listed classes and 0 elsewhere.

  Raises:
    TypeError: for a non-integer target.
    ValueError: for a concrete target with a value outside ``[-1, C-1]``.
      Under ``jit`` such a row gets no labels after the bad value.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin.losses import padded_to_multi_hot
    >>> print(padded_to_multi_hot(jnp.array([[3, 0, -1, 1]])))
    [[1 0 0 1]]
  """
  fn = "padded_to_multi_hot"
  target = v.as_index_array(fn, "target", target)
  if target.ndim == 0:
    raise ValueError(f"{fn}: target shape () has no class axis; expected (..., C)")
  num_classes = target.shape[-1]
  target = v.check_target_range(fn, target, -1, num_classes - 1)
  rows = canonical_indices(_as_rows(target), num_classes)
  # A row's list ends at its first entry outside [0, C-1]: the padding, or,
  # under jit, an invalid value.
  listed = jnp.cumprod((rows >= 0) & (rows < num_classes), axis=1).astype(bool)
  # An OR at in-bounds indices (no dropped writes for checkify to flag).
  index = jnp.clip(rows, 0, num_classes - 1)
  hot = scatter_in_rows(jnp.zeros_like(rows, bool), index, listed, "max").astype(dtype)
  return hot.reshape(target.shape)


def multi_hot_to_padded(labels: jax.typing.ArrayLike) -> jax.Array:
  """torch's ``-1``-padded label lists from multi-hot labels.

  Args:
    labels: array of shape ``(..., C)``; a nonzero entry marks a label.

  Returns:
    int32 array of shape ``(..., C)``: each row's label indices in increasing
    order, then ``-1`` up to width ``C``. This is the target format of
    :func:`jaxmargin.multilabel_margin_loss`.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin.losses import multi_hot_to_padded
    >>> print(multi_hot_to_padded(jnp.array([[1, 0, 0, 1]])))
    [[ 0  3 -1 -1]]
  """
  labels = jnp.asarray(labels)
  if labels.ndim == 0:
    raise ValueError("multi_hot_to_padded: labels shape () has no class axis; "
                     "expected (..., C)")
  hot = _as_rows(labels) != 0
  num_classes = hot.shape[1]
  # Label c goes to slot (number of labels before it); the rest stays -1.
  # Non-labels write to an extra last column that is then cut off, so every
  # index is in bounds (checkify's index checks stay quiet).
  slot = jnp.cumsum(hot, axis=1, dtype=jnp.int32) - 1
  slot = jnp.where(hot, slot, num_classes)
  # From ``hot``, not a bare broadcast, so that it is sharded as ``hot`` is.
  classes = jnp.where(hot, jnp.arange(num_classes, dtype=jnp.int32), -1)
  padded = scatter_in_rows(
      jnp.full_like(jnp.concatenate([hot, hot[:, :1]], axis=1), -1, jnp.int32),
      slot, classes, "set")
  return padded[:, :num_classes].reshape(labels.shape)
