"""The Optax-style class-axis losses of :mod:`jaxmargin.losses`: multi-class margin,
multi-label margin and multi-label soft margin, one loss per example.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxmargin import _validation as v
from jaxmargin._hard_negatives import check_hard_negatives, keep_hardest
from jaxmargin._multi_margin import multi_margin_per_sample
from jaxmargin._multilabel_margin import multilabel_margin_per_sample
from jaxmargin._soft_margin import multilabel_soft_margin_per_sample, torch_order_operands
from jaxmargin._targets import (
  hot_to_padded,
)


def _class_rows(fn, name, array, axis):
  """Moves ``axis`` last and flattens the batch: ``(B, C)`` and the batch shape."""
  if array.ndim == 0:
    raise ValueError(f"{fn}: {name} shape () has no class axis; expected at least 1-D")
  if not -array.ndim <= axis < array.ndim:
    raise ValueError(
      f"{fn}: axis {axis} is out of range for {name} of shape "
      f"{array.shape}; expected -{array.ndim} <= axis < {array.ndim}"
    )
  moved = jnp.moveaxis(array, axis, -1)
  return moved.reshape(-1, moved.shape[-1]), moved.shape[:-1]


def _class_mask(fn, where, shape, axis):
  """``where`` as a bool array of the scores' shape, or ``None``."""
  if where is None:
    return None
  where = jnp.asarray(where)
  if where.ndim == len(shape) - 1:
    where = jnp.expand_dims(where, axis)
  try:
    return jnp.broadcast_to(where.astype(bool), shape)
  except ValueError:
    raise ValueError(
      f"{fn}: where shape {where.shape} does not broadcast to the "
      f"scores' shape {shape}; expected {shape} or the batch "
      "shape"
    ) from None


def _over_included(per_sample, mask, num_classes):
  """Turns a loss divided by ``C`` into one divided by the included count."""
  if mask is None:
    return per_sample
  included = jnp.sum(mask, axis=-1, dtype=jnp.int32)  # not int64 under x64
  # Divided in the loss's dtype (an int32 / int divides in float32).
  return per_sample * (num_classes / jnp.maximum(included, 1).astype(per_sample.dtype))


def _finish(per_sample, batch_shape, dtype):
  return per_sample.reshape(batch_shape).astype(dtype)


@functools.partial(jax.jit, static_argnames=("p", "axis"))
def _multiclass_margin(scores, labels, margin, class_weights, where, *, p, axis):
  fn = "multiclass_margin_loss"
  p = v.check_p(fn, p)
  x = v.as_float_array(fn, "scores", scores)
  rows, batch_shape = _class_rows(fn, "scores", x, axis)
  num_classes = rows.shape[1]
  y = v.as_index_array(fn, "labels", labels)
  if y.shape != batch_shape:
    raise ValueError(
      f"{fn}: labels shape {y.shape} does not match the batch shape "
      f"of scores {x.shape} (axis={axis}); expected {batch_shape}"
    )
  y = y.reshape(-1)
  dtype = v.compute_dtype(x.dtype)
  work = rows.astype(dtype)
  mask = _class_mask(fn, where, x.shape, axis)
  if mask is not None:
    mask = _class_rows(fn, "where", mask, axis)[0]
    # Excluded classes score -inf, so no term with them is active (z = -inf).
    # A row whose label is excluded scores 0 at the label and -inf elsewhere:
    # no term is active, and no inf - inf makes a NaN for checkify to flag.
    is_label = (
      jnp.arange(num_classes, dtype=jnp.int32)
      == jnp.clip(y, 0, num_classes - 1).astype(jnp.int32)[:, None]
    )
    label_included = jnp.any(mask & is_label, axis=1, keepdims=True)
    mask = mask & label_included
    work = jnp.where(mask, work, jnp.where(is_label, 0, -jnp.inf))
  class_weights = v.class_weight_vector(fn, class_weights, num_classes, dtype, of="scores")
  m = v.as_scalar_margin(fn, margin)
  per_sample = multi_margin_per_sample(work, y, m.astype(dtype), class_weights, p)
  return _finish(_over_included(per_sample, mask, num_classes), batch_shape, x.dtype)


def multiclass_margin_loss(
  scores: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  p: int = 1,
  margin: float | jax.typing.ArrayLike = 1.0,
  class_weights: jax.typing.ArrayLike | None = None,
  axis: int = -1,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Multi-class margin (hinge) loss per example, torch's ``multi_margin_loss``.

  For scores :math:`x` over :math:`C` classes and an integer label :math:`y`,

  .. math::
    \ell(x, y) = \frac{1}{C} \sum_{d \ne y} w_y \max(0,\ \mathrm{margin} - x_y + x_d)^p .

  This is not ``optax.multiclass_hinge_loss`` (Crammer-Singer, which takes
  the largest competitor only): every competitor within the margin adds a term.
  Gradients are torch's (zero at an exact tie; NaN terms dropped).

  Args:
    scores: floating array of shape ``(..., C)`` (class axis ``axis``).
    labels: integer class indices with the batch shape ``(...)``. An index
      outside ``[0, C-1]`` raises ``ValueError`` when concrete, fails a
      ``checkify`` check when traced, and otherwise makes its example NaN.
    p: 1 or 2.
    margin: the margin (a number or a scalar array; differentiable).
    class_weights: optional ``(C,)`` weights; the label's weight multiplies its
      example's terms.
    axis: the class axis of ``scores``.
    where: optional bool mask of the scores' shape (or the batch shape) of the
      classes to include; see the module docstring.

  Returns:
    Losses of the batch shape, in the dtype of ``scores``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin.losses import multiclass_margin_loss
    >>> scores = jnp.array([[0.1, 0.2, 0.4, 0.8], [0.9, 0.2, 0.1, 0.0]])
    >>> loss = multiclass_margin_loss(scores, jnp.array([3, 0]))
    >>> print(loss.shape, [round(float(v), 4) for v in loss])
    (2,) [0.325, 0.15]
  """
  fn = "multiclass_margin_loss"
  scores, labels, margin, class_weights, where = v.array_args(
    fn,
    ("class_weights", "where"),
    scores=scores,
    labels=labels,
    margin=margin,
    class_weights=class_weights,
    where=where,
  )
  # Static arguments checked before the kernel, which could not take a traced p.
  p, axis = v.check_p(fn, p), v.check_axis(fn, axis)
  loss = _multiclass_margin(scores, labels, margin, class_weights, where, p=p, axis=axis)
  # Values are checked once the kernel has accepted shapes and dtypes.
  return v.check_target_range(
    fn, labels, 0, jnp.shape(scores)[axis] - 1, name="labels", carrier=loss
  )


@functools.partial(jax.jit, static_argnames=("axis", "hard_negatives"))
def _multilabel_margin(scores, labels, margin, where, class_weights, *, axis, hard_negatives):
  fn = "multilabel_margin_loss"
  x = v.as_float_array(fn, "scores", scores)
  rows, batch_shape = _class_rows(fn, "scores", x, axis)
  num_classes = rows.shape[1]
  labels = jnp.asarray(labels)
  if labels.shape != x.shape:
    raise ValueError(
      f"{fn}: labels shape {labels.shape} does not match scores shape "
      f"{x.shape}; expected {x.shape} (multi-hot)"
    )
  is_binary = _class_rows(fn, "labels", v.is_multi_hot(labels), axis)[0]
  positive = _class_rows(fn, "labels", labels, axis)[0] != 0
  dtype = v.compute_dtype(x.dtype)
  work = rows.astype(dtype)
  mask = _class_mask(fn, where, x.shape, axis)
  if mask is not None:
    mask = _class_rows(fn, "where", mask, axis)[0]
    positive = positive & mask
    # An excluded class scores -inf: as a competitor its z is -inf, never active.
    work = jnp.where(mask, work, -jnp.inf)
  if hard_negatives is not None:
    # The other negatives score -inf too, so that they drop out the same way.
    work = keep_hardest(work, positive, hard_negatives)
  m = v.as_scalar_margin(fn, margin)
  weights = v.class_weight_vector(fn, class_weights, num_classes, dtype, of="scores")
  # Each label's weight, sharded as the labels are (a bare broadcast would not be).
  label_weights = None if weights is None else jnp.where(positive, weights, 0)
  per_sample = multilabel_margin_per_sample(
    work, hot_to_padded(positive), m.astype(dtype), label_weights=label_weights
  )
  # A product, not a select, so the gradient of such a row is NaN as well.
  per_sample = per_sample * jnp.where(jnp.all(is_binary, axis=1), 1, jnp.nan).astype(dtype)
  return _finish(_over_included(per_sample, mask, num_classes), batch_shape, x.dtype)


def multilabel_margin_loss(
  scores: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  margin: float | jax.typing.ArrayLike = 1.0,
  axis: int = -1,
  where: jax.typing.ArrayLike | None = None,
  class_weights: jax.typing.ArrayLike | None = None,
  hard_negatives: int | None = None,
) -> jax.Array:
  r"""Multi-label margin (hinge) loss per example, torch's ``multilabel_margin_loss``.

  For scores :math:`x` over :math:`C` classes and the set :math:`L` of
  positive classes (the nonzero entries of ``labels``),

  .. math::
    \ell(x, L) = \frac{1}{C} \sum_{j \in L} w_j \sum_{d \in N_k(x, L)}
                 \max(0,\ \mathrm{margin} - x_j + x_d),

  with :math:`w_j = 1` and :math:`N_k(x, L)` every negative
  :math:`d \notin L` by default: torch's loss. torch fixes the margin to 1;
  here it is a (differentiable) argument. With multi-hot labels a class is a
  label at most once. Gradients are torch's. Memory is O(size of
  ``scores``); see the performance notes in the README.

  Two options go beyond torch. ``class_weights`` gives label :math:`j`'s
  terms the weight :math:`w_j` (for instance the inverse propensities of
  :func:`inverse_propensity`, which favour tail labels). ``hard_negatives=k``
  keeps in :math:`N_k(x, L)` only the row's :math:`k` highest-scoring
  negatives (:func:`jax.lax.top_k`'s order and ties: equal scores go to the
  lower class; a NaN ranks highest and enters no term), shared by all its
  labels; the divisor stays :math:`C`. Weights of 1 and ``k >= C`` give the
  plain loss exactly. Both keep memory O(size of ``scores``) and the exact
  gradients (the selection is piecewise constant in the scores).

  Args:
    scores: floating array of shape ``(..., C)`` (class axis ``axis``).
    labels: multi-hot array of the same shape with values in {0, 1}; 1 marks
      a positive class. Other values raise ``ValueError`` when concrete, fail
      a ``checkify`` check when traced, and otherwise make their example NaN.
      Not torch's padded index format: convert that with
      :func:`padded_to_multi_hot`.
    margin: the margin (a number or a scalar array).
    axis: the class axis.
    where: optional bool mask of the scores' shape (or the batch shape) of the
      classes to include; see the module docstring. An excluded class is
      never a hard negative, and the divisor is the included count.
    class_weights: optional ``(C,)`` weights of the classes as labels
      (differentiable; the gradient sums over examples in a fixed order).
    hard_negatives: optional static positive int ``k``: the negatives each
      example keeps, its ``k`` highest-scoring ones.

  Returns:
    Losses of the batch shape, in the dtype of ``scores``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin.losses import multilabel_margin_loss
    >>> scores = jnp.array([[0.1, 0.2, 0.4, 0.8]])
    >>> labels = jnp.array([[1, 0, 0, 1]])
    >>> loss = multilabel_margin_loss(scores, labels)
    >>> print(loss.shape, [round(float(v), 4) for v in loss])
    (1,) [0.85]
    >>> weighted = multilabel_margin_loss(scores, labels, class_weights=jnp.array([2., 1, 1, 1]))
    >>> hardest = multilabel_margin_loss(scores, labels, hard_negatives=1)
    >>> print(f"{float(weighted[0]):.4f} {float(hardest[0]):.4f}")
    1.4500 0.4750
  """
  fn = "multilabel_margin_loss"
  scores, labels, margin, where, class_weights = v.array_args(
    fn,
    ("where", "class_weights"),
    scores=scores,
    labels=labels,
    margin=margin,
    where=where,
    class_weights=class_weights,
  )
  loss = _multilabel_margin(
    scores,
    labels,
    margin,
    where,
    class_weights,
    axis=v.check_axis(fn, axis),
    hard_negatives=check_hard_negatives(fn, hard_negatives),
  )
  # A padded torch target (with -1) passed here by mistake must not pass as
  # multi-hot: an error now or under checkify; the kernel made its rows NaN.
  return v.check_multi_hot(fn, jnp.asarray(labels), loss)


@functools.partial(jax.jit, static_argnames=("axis",))
def _multilabel_soft_margin(logits, labels, class_weights, where, *, axis):
  fn = "multilabel_soft_margin_loss"
  x = v.as_float_array(fn, "logits", logits)
  t = v.as_real_array(fn, "labels", labels)
  w = None if class_weights is None else v.as_real_array(fn, "class_weights", class_weights)
  try:
    shape = jnp.broadcast_shapes(*(a.shape for a in (x, t, w) if a is not None))
  except ValueError:
    raise ValueError(
      f"{fn}: labels shape {t.shape} and class_weights shape "
      f"{None if w is None else w.shape} do not broadcast to logits "
      f"shape {x.shape}; expected shapes broadcastable to "
      f"{x.shape}"
    ) from None
  if shape != x.shape:
    raise ValueError(
      f"{fn}: labels and class_weights broadcast logits {x.shape} "
      f"to {shape}; expected them to broadcast to {x.shape}"
    )
  out_dtype = jnp.result_type(*(a for a in (x, t, w) if a is not None))
  # Each operand in its own dtype, so that mixed dtypes round as in torch.
  x_work, t, w = torch_order_operands(x, t, w)
  rows, batch_shape = _class_rows(fn, "logits", x_work, axis)
  num_classes = rows.shape[1]

  def as_rows(a):
    return _class_rows(fn, "labels", jnp.broadcast_to(a, shape), axis)[0]

  mask = _class_mask(fn, where, x.shape, axis)
  if mask is not None:
    mask = _class_rows(fn, "where", mask, axis)[0]
  per_sample = multilabel_soft_margin_per_sample(
    rows, as_rows(t), None if w is None else as_rows(w), where=mask
  )
  return _finish(_over_included(per_sample, mask, num_classes), batch_shape, out_dtype)


def multilabel_soft_margin_loss(
  logits: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  class_weights: jax.typing.ArrayLike | None = None,
  axis: int = -1,
  where: jax.typing.ArrayLike | None = None,
) -> jax.Array:
  r"""Multi-label soft margin loss per example, torch's ``multilabel_soft_margin_loss``.

  .. math::
    \ell(x, t) = -\frac{1}{C} \sum_{c} w_c \left[ t_c \log\sigma(x_c)
                 + (1 - t_c) \log\sigma(-x_c) \right]

  That is the class mean of ``optax.sigmoid_binary_cross_entropy``, weighted,
  computed with one ``exp`` and one ``log1p`` per element and an exact
  derivative rule (forward and reverse mode).

  Args:
    logits: floating array of shape ``(..., C)`` (class axis ``axis``).
    labels: multi-hot or soft labels in ``[0, 1]``, broadcastable to
      ``logits``; differentiable.
    class_weights: optional weights broadcastable to ``logits`` (usually
      ``(C,)`` with ``axis=-1``); differentiable.
    axis: the class axis.
    where: optional bool mask of the logits' shape (or the batch shape) of the
      classes to include; see the module docstring.

  Returns:
    Losses of the batch shape, in the result dtype of the inputs.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin.losses import multilabel_soft_margin_loss
    >>> logits = jnp.array([[0.1, 0.2, 0.4, 0.8]])
    >>> labels = jnp.array([[1.0, 0.0, 0.0, 1.0]])
    >>> loss = multilabel_soft_margin_loss(logits, labels)
    >>> print(loss.shape, [round(float(v), 4) for v in loss])
    (1,) [0.6817]
  """
  fn = "multilabel_soft_margin_loss"
  logits, labels, class_weights, where = v.array_args(
    fn,
    ("class_weights", "where"),
    logits=logits,
    labels=labels,
    class_weights=class_weights,
    where=where,
  )
  return _multilabel_soft_margin(logits, labels, class_weights, where, axis=v.check_axis(fn, axis))
