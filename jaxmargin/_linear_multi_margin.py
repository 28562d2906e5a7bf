"""The fused classifier + multi-class margin loss of :mod:`jaxmargin.linear`."""

from __future__ import annotations

import functools

import jax

from jaxmargin import _fused
from jaxmargin import _linear_validation as lv
from jaxmargin import _validation as v
from jaxmargin._deterministic import take
from jaxmargin._linear_sweep import fused_loss, plan_of, with_checked_labels
from jaxmargin._multi_margin import FusedMultiMargin, _safe_target, _valid_rows
from jaxmargin._multilabel_margin import LabelLists
from jaxmargin._reduction import Reduction


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
  h, w, b, out_dtype = lv.classifier_inputs(fn, features, kernel, bias)
  num_rows = h.shape[0]
  plan, num_classes = plan_of(fn, chunk_size, num_rows, w.shape[1], class_axis_name, num_classes)
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
  return fused_loss(
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
  return with_checked_labels(
    "multi_margin_loss", loss, labels, 0, kernel, class_axis_name, num_classes
  )
