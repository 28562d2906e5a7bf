"""Conversions between torch's padded index targets, compact label lists and multi-hot arrays."""

from __future__ import annotations

import functools

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
  return _lists_to_multi_hot(target, num_classes, dtype)


def _listed(rows, num_classes):
  """Which entries of ``(N, K)`` lists are labels: those before the first one outside [0, C-1]."""
  # The padding ends a list, or, under jit, an invalid value.
  return jnp.cumprod((rows >= 0) & (rows < num_classes), axis=1).astype(bool)


# Jitted, as hot_to_padded below: called eagerly it would compile each of its
# dozens of small ops on its own, seconds of compiling for one conversion.
@functools.partial(jax.jit, static_argnums=(1, 2))
def _lists_to_multi_hot(lists, num_classes, dtype):
  """``(..., C)`` multi-hot labels of ``(..., K)`` padded label lists."""
  rows = canonical_indices(_as_rows(lists), num_classes)
  # An OR at in-bounds indices (no dropped writes for checkify to flag).
  index = jnp.clip(rows, 0, num_classes - 1)
  hot = jnp.zeros((rows.shape[0], num_classes), bool)
  hot = scatter_in_rows(hot, index, _listed(rows, num_classes), "max").astype(dtype)
  return hot.reshape((*lists.shape[:-1], num_classes))


def multi_hot_to_padded(labels: jax.typing.ArrayLike) -> jax.Array:
  """torch's ``-1``-padded label lists from multi-hot labels.

  Args:
    labels: array of shape ``(..., C)`` with values in {0, 1} (any real or
      bool dtype); 1 marks a label.

  Returns:
    int32 array of shape ``(..., C)``: each row's label indices in increasing
    order, then ``-1`` up to width ``C``. This is the target format of
    :func:`jaxmargin.multilabel_margin_loss`.

  Raises:
    ValueError: for concrete labels with a value other than 0 and 1 (a soft
      label such as 0.9, or a padded target's -1), as
      :func:`jaxmargin.losses.multilabel_margin_loss` rejects them. Under
      ``jit`` it is a ``checkify`` check, and any nonzero value counts as a
      label.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin.losses import multi_hot_to_padded
    >>> print(multi_hot_to_padded(jnp.array([[1, 0, 0, 1]])))
    [[ 0  3 -1 -1]]
  """
  fn = "multi_hot_to_padded"
  labels = v.as_array(fn, "labels", labels)
  if labels.ndim == 0:
    raise ValueError(f"{fn}: labels shape () has no class axis; expected (..., C)")
  return v.check_multi_hot(fn, labels, hot_to_padded(labels))


@jax.jit
def hot_to_padded(labels: jax.Array) -> jax.Array:
  """:func:`multi_hot_to_padded` without the check of the values: nonzero is a label."""
  # astype, not != 0: a bool compared with an int is an int64 copy under x64.
  hot = _as_rows(labels).astype(bool)
  num_classes = hot.shape[1]
  # Label c goes to slot (number of labels before it); the rest stays -1.
  # Non-labels write to an extra last column that is then cut off, so every
  # index is in bounds (checkify's index checks stay quiet).
  slot = jnp.cumsum(hot, axis=1, dtype=jnp.int32) - 1
  slot = jnp.where(hot, slot, num_classes)
  # From ``hot``, not a bare broadcast, so that it is sharded as ``hot`` is.
  classes = jnp.where(hot, jnp.arange(num_classes, dtype=jnp.int32), -1)
  padded = scatter_in_rows(
    jnp.full_like(jnp.concatenate([hot, hot[:, :1]], axis=1), -1, jnp.int32), slot, classes, "set"
  )
  return padded[:, :num_classes].reshape(labels.shape)


def _first_slots(padded, max_labels, fn, name):
  """The first ``max_labels`` entries of padded lists ``(..., W)``, ``-1`` after each list's end.

  Checks that no list is longer (``ValueError`` now, or a checkify check);
  under jit a longer list keeps its first ``max_labels`` labels.
  """
  if isinstance(max_labels, bool) or not isinstance(max_labels, int) or max_labels < 0:
    raise ValueError(f"{fn}: max_labels is {max_labels!r}; expected an int >= 0")
  num_classes = padded.shape[-1]
  rows = canonical_indices(_as_rows(padded), num_classes)
  listed = _listed(rows, num_classes)
  lists = jnp.where(listed, rows, -1)
  width = min(max_labels, lists.shape[1])
  lists = jnp.concatenate(
    [lists[:, :width], jnp.full((lists.shape[0], max_labels - width), -1, jnp.int32)], 1
  )
  lists = lists.reshape((*padded.shape[:-1], max_labels))
  longest = jnp.sum(listed, axis=1)
  return v.check_values(v.ListLength(fn, name, max_labels), longest, lists)


def multi_hot_to_label_list(labels: jax.typing.ArrayLike, *, max_labels: int) -> jax.Array:
  """Compact label lists ``(..., K)`` from multi-hot labels ``(..., C)``.

  The format of the multi-label losses of :mod:`jaxmargin.linear`: each
  row's label indices in increasing order, then ``-1`` up to width ``K``.

  Args:
    labels: array of shape ``(..., C)`` with values in {0, 1}.
    max_labels: ``K``, the width of the lists (static).

  Returns:
    int32 array of shape ``(..., K)``.

  Raises:
    ValueError: for concrete labels with a value other than 0 and 1, or a row
      with more than ``max_labels`` labels (under ``jit``: a ``checkify``
      check, and such a row keeps its ``max_labels`` lowest labels).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin.losses import multi_hot_to_label_list
    >>> print(multi_hot_to_label_list(jnp.array([[1, 0, 0, 1]]), max_labels=3))
    [[ 0  3 -1]]
  """
  fn = "multi_hot_to_label_list"
  labels = v.as_array(fn, "labels", labels)
  if labels.ndim == 0:
    raise ValueError(f"{fn}: labels shape () has no class axis; expected (..., C)")
  labels = v.check_multi_hot(fn, labels, labels)
  return _first_slots(hot_to_padded(labels), max_labels, fn, "labels")


def padded_to_label_list(target: jax.typing.ArrayLike, *, max_labels: int) -> jax.Array:
  """Compact label lists ``(..., K)`` from torch's ``-1``-padded targets ``(..., C)``.

  Keeps each row's list (its entries before the first ``-1``) in its order,
  duplicates included, and pads it with ``-1`` to width ``K``.

  Args:
    target: integer array of shape ``(..., C)``: class indices in ``[0, C-1]``
      padded with ``-1``, the target of :func:`jaxmargin.multilabel_margin_loss`.
    max_labels: ``K``, the width of the lists (static).

  Returns:
    int32 array of shape ``(..., K)``.

  Raises:
    TypeError: for a non-integer target.
    ValueError: for a concrete target with a value outside ``[-1, C-1]`` or a
      list longer than ``max_labels`` (under ``jit``: ``checkify`` checks, and
      a longer list keeps its first ``max_labels`` labels).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin.losses import padded_to_label_list
    >>> print(padded_to_label_list(jnp.array([[3, 0, -1, 1]]), max_labels=2))
    [[3 0]]
  """
  fn = "padded_to_label_list"
  target = v.as_index_array(fn, "target", target)
  if target.ndim == 0:
    raise ValueError(f"{fn}: target shape () has no class axis; expected (..., C)")
  target = v.check_target_range(fn, target, -1, target.shape[-1] - 1)
  return _first_slots(target, max_labels, fn, "target")


def _num_classes(fn, num_classes):
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f"{fn}: num_classes is {num_classes!r}; expected an int >= 1")
  return num_classes


def label_list_to_multi_hot(
  labels: jax.typing.ArrayLike,
  *,
  num_classes: int,
  dtype: jax.typing.DTypeLike = jnp.int32,
) -> jax.Array:
  """Multi-hot labels ``(..., C)`` from compact label lists ``(..., K)``.

  Args:
    labels: integer array of shape ``(..., K)``: class indices padded with
      ``-1`` (the first ``-1`` ends the list).
    num_classes: ``C`` (static).
    dtype: dtype of the result.

  Returns:
    Array of shape ``(..., C)``, 1 at the listed classes and 0 elsewhere.

  Raises:
    TypeError: for non-integer labels.
    ValueError: for concrete labels with a value outside ``[-1, C-1]`` (under
      ``jit``: a ``checkify`` check, and such a list ends at the bad value).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin.losses import label_list_to_multi_hot
    >>> print(label_list_to_multi_hot(jnp.array([[3, 0, -1]]), num_classes=5))
    [[1 0 0 1 0]]
  """
  fn = "label_list_to_multi_hot"
  num_classes = _num_classes(fn, num_classes)
  labels = v.as_index_array(fn, "labels", labels)
  if labels.ndim == 0:
    raise ValueError(f"{fn}: labels shape () has no label axis; expected (..., K)")
  labels = v.check_target_range(fn, labels, -1, num_classes - 1, name="labels")
  return _lists_to_multi_hot(labels, num_classes, dtype)


def label_list_to_padded(labels: jax.typing.ArrayLike, *, num_classes: int) -> jax.Array:
  """torch's ``-1``-padded targets ``(..., C)`` from compact label lists ``(..., K)``.

  Args:
    labels: integer array of shape ``(..., K)`` with ``K <= C``: class
      indices padded with ``-1`` (entries after the first ``-1`` are dropped).
    num_classes: ``C`` (static).

  Returns:
    int32 array of shape ``(..., C)``, the target of
    :func:`jaxmargin.multilabel_margin_loss`.

  Raises:
    TypeError: for non-integer labels.
    ValueError: for ``K > C``, or concrete labels with a value outside
      ``[-1, C-1]`` (under ``jit``: a ``checkify`` check, and such a list
      ends at the bad value).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin.losses import label_list_to_padded
    >>> print(label_list_to_padded(jnp.array([[3, 0]]), num_classes=5))
    [[ 3  0 -1 -1 -1]]
  """
  fn = "label_list_to_padded"
  num_classes = _num_classes(fn, num_classes)
  labels = v.as_index_array(fn, "labels", labels)
  if labels.ndim == 0 or labels.shape[-1] > num_classes:
    raise ValueError(
      f"{fn}: labels shape {labels.shape} is not a list of at most "
      f"num_classes={num_classes} labels; expected (..., K) with K <= "
      f"{num_classes}"
    )
  labels = v.check_target_range(fn, labels, -1, num_classes - 1, name="labels")
  rows = canonical_indices(_as_rows(labels), num_classes)
  rows = jnp.where(_listed(rows, num_classes), rows, -1)
  padding = jnp.full((rows.shape[0], num_classes - rows.shape[1]), -1, jnp.int32)
  return jnp.concatenate([rows, padding], 1).reshape((*labels.shape[:-1], num_classes))
