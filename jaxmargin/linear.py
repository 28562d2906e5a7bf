r"""Fused classifier + margin loss for extreme label spaces: no ``(N, C)`` scores.

Each function takes the inputs of a linear classifier head, with scores

.. math::
  s = \mathrm{features} \cdot \mathrm{kernel} + \mathrm{bias}

in Flax's ``Dense`` / ``nnx.Linear`` layout (``kernel`` is ``(D, C)``), and
computes the loss on those scores one chunk of classes at a time. Neither the
``(N, C)`` scores nor their gradient is ever stored: memory is
``O(N * chunk_size + N * K * D)`` on top of the kernel and its gradient, so a
million classes fit where the unfused loss needs tens of GB.

Each loss equals the unfused loss of the materialised scores, in value and
in gradients (to the float rounding of the matmul), with torch's conventions:
strict kink, NaN terms dropped, and a label outside the valid range gives
NaN under ``jit``, ``ValueError`` when concrete, and an error under
``checkify``. Labels of the multi-label losses are compact **label lists**
``(N, K)``: class indices padded with ``-1`` after the last label (torch's
padded format at width ``K`` instead of ``C``); :mod:`jaxmargin.losses` has
converters from multi-hot and padded targets.

``reduction="none"`` (the default, as in Optax) gives one loss per example;
its backward pass computes each chunk's scores again (four matmuls a step
against three unfused). ``reduction="mean"`` or ``"sum"`` gives a scalar and
computes the gradients during the forward pass, as fused cross-entropy
kernels do, so a training step costs the three matmuls of the unfused one.

A classifier too large for one device is split over devices by class: under
``jax.jit``, a ``kernel`` (and ``bias``) placed with a ``NamedSharding`` that
splits its classes is enough, with Auto or Explicit mesh axes; inside
``jax.shard_map``, ``class_axis_name`` names the mesh axis that splits them.
Each device then sweeps its own classes, and only per-row quantities cross
devices. ``num_classes`` leaves out padding columns, for a class count the
devices do not divide.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxmargin import linear
  >>> features = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  >>> kernel = jnp.array([[0.1, 0.2, 0.4, 0.8], [0.9, 0.2, 0.1, 0.0]])
  >>> labels = jnp.array([[3, 0], [0, -1]])       # label lists, -1 padded
  >>> loss = linear.multilabel_margin_loss(features, kernel, labels)
  >>> print([round(float(v), 4) for v in loss])
  [0.85, 0.15]
  >>> grads = jax.grad(linear.multilabel_margin_loss, argnums=(0, 1))(
  ...     features, kernel, labels, reduction="mean")
"""

from __future__ import annotations

import functools
from typing import cast

import jax
import jax.numpy as jnp

from jaxmargin import _fused, _fused_modes
from jaxmargin import _validation as v
from jaxmargin._deterministic import take
from jaxmargin._multi_margin import FusedMultiMargin, _safe_target, _valid_rows
from jaxmargin._multilabel_margin import FusedMultilabelMargin, LabelLists, fused_method
from jaxmargin._reduction import Reduction
from jaxmargin._sharding import vary_like_all
from jaxmargin._soft_margin import FusedSoftMargin

__all__: list[str] = [
  "multi_margin_loss",
  "multilabel_margin_loss",
  "multilabel_soft_margin_loss",
  "top_k",
]


def _plan(fn, chunk_size, num_rows, local_columns, class_axis, num_classes):
  """The static sweep plan, and C: the real classes (``num_classes``, or every column)."""
  if chunk_size is None:
    chunk_size = _fused.auto_chunk_size(num_rows, local_columns)
  else:
    chunk_size = min(v.check_chunk_size(fn, chunk_size), local_columns)
  columns = _fused.total_classes(local_columns, class_axis)
  real = v.check_num_classes(fn, num_classes, columns)
  return _fused.Plan(chunk_size, class_axis, None if real == columns else real), real


def _loss(rule, inputs, lists, row_valid, reduction, plan, out_dtype):
  labels = _fused.LabelSlots(lists.slot_index, lists.slot_valid)
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


def _checked(fn, loss, labels, low, kernel, class_axis_name, num_classes):
  """``loss``, with the label values checked (``ValueError`` now, or checkify)."""
  if num_classes is None:
    num_classes = _fused.total_classes(jnp.shape(kernel)[-1], class_axis_name)
  return v.check_target_range(fn, labels, low, num_classes - 1, name="labels", carrier=loss)


@functools.partial(
  jax.jit, static_argnames=("reduction", "chunk_size", "class_axis_name", "num_classes", "method")
)
def _multilabel_margin(
  features,
  kernel,
  labels,
  bias,
  margin,
  *,
  reduction,
  chunk_size,
  class_axis_name=None,
  num_classes=None,
  method="auto",
):
  fn = "multilabel_margin_loss"
  v.check_reduction_name(fn, reduction)
  h, w, b, out_dtype = v.classifier_inputs(fn, features, kernel, bias)
  num_rows = h.shape[0]
  plan, num_classes = _plan(fn, chunk_size, num_rows, w.shape[1], class_axis_name, num_classes)
  y = v.label_list_array(fn, labels, num_rows)
  m = v.as_scalar_margin(fn, margin).astype(h.dtype)
  if method == "auto":
    method = fused_method(y.shape[1])
  lists = LabelLists(y, num_classes)
  return _loss(
    FusedMultilabelMargin(method),
    _fused.Inputs(h, w, b, (), (m,)),
    lists,
    lists.row_valid,
    reduction,
    plan,
    out_dtype,
  )


def multilabel_margin_loss(
  features: jax.typing.ArrayLike,
  kernel: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  bias: jax.typing.ArrayLike | None = None,
  margin: float | jax.typing.ArrayLike = 1.0,
  reduction: Reduction = "none",
  chunk_size: int | None = None,
  class_axis_name: str | None = None,
  num_classes: int | None = None,
) -> jax.Array:
  r"""Multi-label margin loss of a linear classifier, without its ``(N, C)`` scores.

  With scores :math:`x = h W + b` over :math:`C` classes and the label list
  :math:`L` of each row (its entries before the first ``-1``),

  .. math::
    \ell(x, L) = \frac{1}{C} \sum_{j \in L} \sum_{d \notin L}
                 \max(0,\ \mathrm{margin} - x_j + x_d),

  torch's ``multilabel_margin_loss`` (a label listed twice counts twice in
  the outer sum). Equals ``jaxmargin.multilabel_margin_loss(x, labels padded
  with -1 to width C, reduction="none")`` for ``margin=1``, in value and in
  the gradients with respect to ``features``, ``kernel``, ``bias`` and
  ``margin``. The hinge part costs O(N*C*K) compares for ``K`` up to 128 and
  O(N*C*log K) beyond.

  Args:
    features: ``(N, D)`` floating inputs of the classifier.
    kernel: ``(D, C)`` classifier weights (``nnx.Linear``'s ``kernel``).
    labels: ``(N, K)`` integer label lists: class indices in ``[0, C-1]``,
      padded with ``-1`` after the last label. A value outside ``[-1, C-1]``
      raises ``ValueError`` when concrete, fails a ``checkify`` check when
      traced, and otherwise makes its row NaN.
    bias: optional ``(C,)`` classifier bias.
    margin: the margin (a number or a scalar array; differentiable).
    reduction: ``"none"`` (per row), ``"mean"`` or ``"sum"``.
    chunk_size: classes per chunk (static); ``None`` picks about a million
      scores per chunk (4 MB in float32). Any value gives the same result.
    class_axis_name: inside ``jax.shard_map``, the mesh axis that splits the
      classes (static): each device holds ``kernel[:, c0:c1]`` and ``bias[c0:c1]``,
      ``features`` and ``labels`` are the same on every device of that axis,
      and labels keep their global class indices. The result is the one-device
      result, on every device. ``None`` (the default): not split.
    num_classes: the real classes, when ``kernel`` has padding columns after
      them (static): columns ``num_classes`` and beyond are left out of the
      loss, whose :math:`C` is ``num_classes``, and get zero gradients; labels
      must be below it. For a split over devices that does not divide the
      classes. ``None`` (the default): every column is a class.

  Returns:
    ``(N,)`` losses, or a scalar for ``"mean"`` and ``"sum"``, in the result
    dtype of ``features``, ``kernel`` and ``bias``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin import linear
    >>> features = jnp.array([[1.0, 2.0]])
    >>> kernel = jnp.array([[0.1, 0.2, 0.4, 0.8], [0.0, 0.0, 0.0, 0.0]])
    >>> loss = linear.multilabel_margin_loss(features, kernel, jnp.array([[3, 0]]))
    >>> print(f"{float(loss[0]):.4f}")
    0.8500
  """
  features, kernel, labels, bias, margin = v.array_args(
    "multilabel_margin_loss",
    ("bias",),
    features=features,
    kernel=kernel,
    labels=labels,
    bias=bias,
    margin=margin,
  )
  loss = _multilabel_margin(
    features,
    kernel,
    labels,
    bias,
    margin,
    reduction=reduction,
    chunk_size=chunk_size,
    class_axis_name=class_axis_name,
    num_classes=num_classes,
  )
  return _checked("multilabel_margin_loss", loss, labels, -1, kernel, class_axis_name, num_classes)


@functools.partial(
  jax.jit, static_argnames=("p", "reduction", "chunk_size", "class_axis_name", "num_classes")
)
def _multi_margin(
  features,
  kernel,
  labels,
  bias,
  margin,
  class_weights,
  *,
  p,
  reduction,
  chunk_size,
  class_axis_name=None,
  num_classes=None,
):
  fn = "multi_margin_loss"
  p = v.check_p(fn, p)
  v.check_reduction_name(fn, reduction)
  h, w, b, out_dtype = v.classifier_inputs(fn, features, kernel, bias)
  num_rows = h.shape[0]
  plan, num_classes = _plan(fn, chunk_size, num_rows, w.shape[1], class_axis_name, num_classes)
  y = v.as_index_array(fn, "labels", labels)
  if y.shape != (num_rows,):
    raise ValueError(
      f"{fn}: labels shape {y.shape} does not match the {num_rows} rows "
      f"of features; expected ({num_rows},), one class index per row"
    )
  m = v.as_scalar_margin(fn, margin).astype(h.dtype)
  row_args = (m,)
  # One weight per column of the whole kernel, padding included.
  weights = v.class_weight_vector(
    fn, class_weights, _fused.total_classes(w.shape[1], class_axis_name), h.dtype
  )
  if weights is not None:
    # Gathered outside the fused rule, which takes a weight per row; the
    # gather's gradient sums in a fixed order (reproducible on a GPU).
    row_args += (take(weights, _safe_target(y, num_classes)),)
  lists = LabelLists(y[:, None], num_classes)
  return _loss(
    FusedMultiMargin(p),
    _fused.Inputs(h, w, b, (), row_args),
    lists,
    _valid_rows(y, num_classes),
    reduction,
    plan,
    out_dtype,
  )


def multi_margin_loss(
  features: jax.typing.ArrayLike,
  kernel: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  bias: jax.typing.ArrayLike | None = None,
  p: int = 1,
  margin: float | jax.typing.ArrayLike = 1.0,
  class_weights: jax.typing.ArrayLike | None = None,
  reduction: Reduction = "none",
  chunk_size: int | None = None,
  class_axis_name: str | None = None,
  num_classes: int | None = None,
) -> jax.Array:
  r"""Multi-class margin loss of a linear classifier, without its ``(N, C)`` scores.

  With scores :math:`x = h W + b` over :math:`C` classes and label :math:`y`,

  .. math::
    \ell(x, y) = \frac{1}{C} \sum_{d \ne y} w_y \max(0,\ \mathrm{margin} - x_y + x_d)^p,

  torch's ``multi_margin_loss``. Equals ``jaxmargin.multi_margin_loss(x, y,
  p=p, margin=margin, weight=class_weights, reduction="none")`` in value and
  in the gradients with respect to ``features``, ``kernel``, ``bias``,
  ``margin`` and ``class_weights``.

  Args:
    features: ``(N, D)`` floating inputs of the classifier.
    kernel: ``(D, C)`` classifier weights.
    labels: ``(N,)`` integer class indices in ``[0, C-1]`` (out of range: as
      in :func:`multilabel_margin_loss`).
    bias: optional ``(C,)`` classifier bias.
    p: 1 or 2.
    margin: the margin (a number or a scalar array; differentiable).
    class_weights: optional ``(C,)`` weights; the label's weight multiplies its
      row's terms (differentiable).
    reduction: ``"none"`` (per row), ``"mean"`` or ``"sum"``.
    chunk_size: classes per chunk (static); ``None`` picks one.
    class_axis_name: inside ``jax.shard_map``, the mesh axis that splits the
      classes (static): each device holds ``kernel[:, c0:c1]`` and
      ``bias[c0:c1]`` (``class_weights`` stays whole, ``(C,)``), ``features``
      and ``labels`` are the same on every device of that axis,
      and labels keep their global class indices. The result is the one-device
      result, on every device. ``None`` (the default): not split.
    num_classes: the real classes, when ``kernel`` has padding columns after
      them (static): columns ``num_classes`` and beyond are left out of the
      loss, whose :math:`C` is ``num_classes``, and get zero gradients; labels
      must be below it. For a split over devices that does not divide the
      classes. ``None`` (the default): every column is a class.

  Returns:
    ``(N,)`` losses, or a scalar for ``"mean"`` and ``"sum"``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin import linear
    >>> features = jnp.array([[1.0, 2.0]])
    >>> kernel = jnp.array([[0.1, 0.2, 0.4, 0.8], [0.0, 0.0, 0.0, 0.0]])
    >>> loss = linear.multi_margin_loss(features, kernel, jnp.array([3]))
    >>> print(f"{float(loss[0]):.4f}")
    0.3250
  """
  features, kernel, labels, bias, margin, class_weights = v.array_args(
    "multi_margin_loss",
    ("bias", "class_weights"),
    features=features,
    kernel=kernel,
    labels=labels,
    bias=bias,
    margin=margin,
    class_weights=class_weights,
  )
  # Before the kernel, whose static p cannot be a traced value.
  p = v.check_p("multi_margin_loss", p)
  loss = _multi_margin(
    features,
    kernel,
    labels,
    bias,
    margin,
    class_weights,
    p=p,
    reduction=reduction,
    chunk_size=chunk_size,
    class_axis_name=class_axis_name,
    num_classes=num_classes,
  )
  return _checked("multi_margin_loss", loss, labels, 0, kernel, class_axis_name, num_classes)


@functools.partial(
  jax.jit, static_argnames=("reduction", "chunk_size", "class_axis_name", "num_classes")
)
def _multilabel_soft_margin(
  features,
  kernel,
  labels,
  bias,
  class_weights,
  *,
  reduction,
  chunk_size,
  class_axis_name=None,
  num_classes=None,
):
  fn = "multilabel_soft_margin_loss"
  v.check_reduction_name(fn, reduction)
  h, w, b, out_dtype = v.classifier_inputs(fn, features, kernel, bias)
  num_rows = h.shape[0]
  plan, num_classes = _plan(fn, chunk_size, num_rows, w.shape[1], class_axis_name, num_classes)
  y = v.label_list_array(fn, labels, num_rows)
  # Split over the classes like the bias (in shard_map), sliced with the chunks.
  weights = v.class_weight_vector(fn, class_weights, w.shape[1], h.dtype)
  class_args = () if weights is None else (weights,)
  lists = LabelLists(y, num_classes)
  return _loss(
    FusedSoftMargin(),
    _fused.Inputs(h, w, b, class_args, ()),
    lists,
    lists.row_valid,
    reduction,
    plan,
    out_dtype,
  )


def multilabel_soft_margin_loss(
  features: jax.typing.ArrayLike,
  kernel: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  bias: jax.typing.ArrayLike | None = None,
  class_weights: jax.typing.ArrayLike | None = None,
  reduction: Reduction = "none",
  chunk_size: int | None = None,
  class_axis_name: str | None = None,
  num_classes: int | None = None,
) -> jax.Array:
  r"""Multi-label soft margin loss of a linear classifier, without its ``(N, C)`` scores.

  With scores :math:`x = h W + b` over :math:`C` classes and targets
  :math:`t_c = 1` for the listed classes, 0 otherwise,

  .. math::
    \ell(x, t) = -\frac{1}{C} \sum_{c} w_c \left[ t_c \log\sigma(x_c)
                 + (1 - t_c) \log\sigma(-x_c) \right],

  torch's ``multilabel_soft_margin_loss``. Equals
  ``jaxmargin.multilabel_soft_margin_loss(x, multi_hot, weight=class_weights,
  reduction="none")`` with the multi-hot targets of the label lists (a label
  listed twice is one label), in value and in the gradients with respect to
  ``features``, ``kernel``, ``bias`` and ``class_weights``.

  Args:
    features: ``(N, D)`` floating inputs of the classifier.
    kernel: ``(D, C)`` classifier weights.
    labels: ``(N, K)`` integer label lists padded with ``-1`` (out of range:
      as in :func:`multilabel_margin_loss`).
    bias: optional ``(C,)`` classifier bias.
    class_weights: optional ``(C,)`` weights (differentiable).
    reduction: ``"none"`` (per row), ``"mean"`` or ``"sum"``.
    chunk_size: classes per chunk (static); ``None`` picks one.
    class_axis_name: inside ``jax.shard_map``, the mesh axis that splits the
      classes (static): each device holds ``kernel[:, c0:c1]``,
      ``bias[c0:c1]`` and ``class_weights[c0:c1]``, ``features`` and
      ``labels`` are the same on every device of that axis,
      and labels keep their global class indices. The result is the one-device
      result, on every device. ``None`` (the default): not split.
    num_classes: the real classes, when ``kernel`` has padding columns after
      them (static): columns ``num_classes`` and beyond are left out of the
      loss, whose :math:`C` is ``num_classes``, and get zero gradients; labels
      must be below it. For a split over devices that does not divide the
      classes. ``None`` (the default): every column is a class.

  Returns:
    ``(N,)`` losses, or a scalar for ``"mean"`` and ``"sum"``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin import linear
    >>> features = jnp.array([[1.0, 2.0]])
    >>> kernel = jnp.array([[0.1, 0.2, 0.4, 0.8], [0.0, 0.0, 0.0, 0.0]])
    >>> loss = linear.multilabel_soft_margin_loss(features, kernel, jnp.array([[0, 3]]))
    >>> print(f"{float(loss[0]):.4f}")
    0.6817
  """
  features, kernel, labels, bias, class_weights = v.array_args(
    "multilabel_soft_margin_loss",
    ("bias", "class_weights"),
    features=features,
    kernel=kernel,
    labels=labels,
    bias=bias,
    class_weights=class_weights,
  )
  loss = _multilabel_soft_margin(
    features,
    kernel,
    labels,
    bias,
    class_weights,
    reduction=reduction,
    chunk_size=chunk_size,
    class_axis_name=class_axis_name,
    num_classes=num_classes,
  )
  return _checked(
    "multilabel_soft_margin_loss", loss, labels, -1, kernel, class_axis_name, num_classes
  )


@functools.partial(jax.jit, static_argnames=("k", "chunk_size", "class_axis_name", "num_classes"))
def _top_k(features, kernel, bias, *, k, chunk_size, class_axis_name=None, num_classes=None):
  fn = "top_k"
  h, w, b, out_dtype = v.classifier_inputs(fn, features, kernel, bias)
  num_rows = h.shape[0]
  plan, num_classes = _plan(fn, chunk_size, num_rows, w.shape[1], class_axis_name, num_classes)
  if isinstance(k, bool) or not isinstance(k, int):
    raise TypeError(f"{fn}: k is {k!r}; expected an int in [1, {num_classes}]")
  if not 1 <= k <= num_classes:
    raise ValueError(f"{fn}: k is {k}; expected 1 <= k <= C = {num_classes}, the classes of kernel")
  if class_axis_name is not None and k > w.shape[1]:
    raise ValueError(
      f"{fn}: k is {k}; expected k <= {w.shape[1]}, the classes each "
      f"device holds along {class_axis_name!r}"
    )
  values, index = _fused_modes.split_top_k(h, w, b, k, plan)
  return values.astype(out_dtype), index


def top_k(
  features: jax.typing.ArrayLike,
  kernel: jax.typing.ArrayLike,
  k: int,
  *,
  bias: jax.typing.ArrayLike | None = None,
  chunk_size: int | None = None,
  class_axis_name: str | None = None,
  num_classes: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """The ``k`` highest scores of each row of a linear classifier, and their classes.

  Equals ``jax.lax.top_k(features @ kernel + bias, k)`` (ties go to the lower
  class index) without the ``(N, C)`` scores: the inference and metrics
  counterpart of the fused losses, with the same memory bound.

  Args:
    features: ``(N, D)`` floating inputs of the classifier.
    kernel: ``(D, C)`` classifier weights.
    k: how many classes per row (static), ``1 <= k <= C``.
    bias: optional ``(C,)`` classifier bias.
    chunk_size: classes per chunk (static); ``None`` picks one.
    class_axis_name: inside ``jax.shard_map``, the mesh axis that splits the
      classes (static): each device holds ``kernel[:, c0:c1]`` and ``bias[c0:c1]``,
      ``features`` and ``labels`` are the same on every device of that axis,
      and labels keep their global class indices. The result is the one-device
      result, on every device. ``None`` (the default): not split.
    num_classes: the real classes, when ``kernel`` has padding columns after
      them (static): columns ``num_classes`` and beyond are never among the
      ``k`` (so ``k <= num_classes``). ``None`` (the default): every column
      is a class.

  Returns:
    ``(values, indices)``, both ``(N, k)``: each row's scores in decreasing
    order and their int32 class indices.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin import linear
    >>> features = jnp.array([[1.0, 2.0]])
    >>> kernel = jnp.array([[0.1, 0.2, 0.4, 0.8], [0.0, 1.0, 0.0, 0.0]])
    >>> values, indices = linear.top_k(features, kernel, 2)
    >>> print(indices, values)
    [[1 3]] [[2.2 0.8]]
  """
  features, kernel, bias = v.array_args(
    "top_k", ("bias",), features=features, kernel=kernel, bias=bias
  )
  return _top_k(
    features,
    kernel,
    bias,
    k=k,
    chunk_size=chunk_size,
    class_axis_name=class_axis_name,
    num_classes=num_classes,
  )


def __dir__() -> list[str]:
  # What the module offers: its public API, not the names it imports.
  return sorted(__all__)
