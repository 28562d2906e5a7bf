"""The fused classifier + multi-label soft margin loss of :mod:`jaxmargin.linear`."""

from __future__ import annotations

import functools

import jax

from jaxmargin import _fused
from jaxmargin import _linear_validation as lv
from jaxmargin import _validation as v
from jaxmargin._linear_sweep import fused_loss, plan_of, with_checked_labels
from jaxmargin._multilabel_margin import LabelLists
from jaxmargin._reduction import Reduction
from jaxmargin._soft_margin import FusedSoftMargin


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
  h, w, b, out_dtype = lv.classifier_inputs(fn, features, kernel, bias)
  num_rows = h.shape[0]
  plan, num_classes = plan_of(fn, chunk_size, num_rows, w.shape[1], class_axis_name, num_classes)
  y = lv.label_list_array(fn, labels, num_rows)
  # Split over the classes like the bias (in shard_map), sliced with the chunks.
  weights = v.class_weight_vector(fn, class_weights, w.shape[1], h.dtype)
  class_args = () if weights is None else (weights,)
  lists = LabelLists(y, num_classes)
  return fused_loss(
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
  return with_checked_labels(
    "multilabel_soft_margin_loss", loss, labels, -1, kernel, class_axis_name, num_classes
  )
