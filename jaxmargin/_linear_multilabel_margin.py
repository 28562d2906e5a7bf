"""The fused classifier + multi-label margin loss of :mod:`jaxmargin.linear`."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxmargin import _fused
from jaxmargin import _linear_validation as lv
from jaxmargin import _validation as v
from jaxmargin._deterministic import take
from jaxmargin._hard_negatives import check_hard_negatives, fused_hard_negatives
from jaxmargin._linear_sweep import fused_loss, plan_of, with_checked_labels
from jaxmargin._multilabel_margin import LabelLists
from jaxmargin._multilabel_margin_fused import FusedMultilabelMargin, fused_method
from jaxmargin._reduction import Reduction


@functools.partial(
  jax.jit,
  static_argnames=(
    "reduction",
    "chunk_size",
    "class_axis_name",
    "num_classes",
    "method",
    "hard_negatives",
  ),
)
def _multilabel_margin(
  features,
  kernel,
  labels,
  bias,
  margin,
  class_weights=None,
  *,
  reduction,
  chunk_size,
  class_axis_name=None,
  num_classes=None,
  method="auto",
  hard_negatives=None,
):
  fn = "multilabel_margin_loss"
  v.check_reduction_name(fn, reduction)
  h, w, b, out_dtype = lv.classifier_inputs(fn, features, kernel, bias)
  num_rows = h.shape[0]
  plan, num_classes = plan_of(fn, chunk_size, num_rows, w.shape[1], class_axis_name, num_classes)
  y = lv.label_list_array(fn, labels, num_rows)
  m = v.as_scalar_margin(fn, margin).astype(h.dtype)
  if method == "auto":
    method = fused_method(y.shape[1])
  lists = LabelLists(y, num_classes)
  row_args = (m,)
  # One weight per column of the whole kernel, padding included.
  weights = v.class_weight_vector(
    fn, class_weights, _fused.total_classes(w.shape[1], class_axis_name), h.dtype
  )
  if weights is not None:
    # Each label slot's weight, gathered outside the fused rule; the
    # gather's gradient sums in a fixed order (reproducible on a GPU).
    row_args += (take(weights, jnp.minimum(lists.slot_index, weights.shape[0] - 1)),)
  kept = ()
  if hard_negatives is not None and hard_negatives < num_classes:
    kept = fused_hard_negatives(fn, (h, w, b), lists, hard_negatives, plan, num_classes)
  return fused_loss(
    FusedMultilabelMargin(method, weighted=weights is not None),
    _fused.Inputs(h, w, b, (), row_args),
    lists,
    lists.row_valid,
    reduction,
    plan,
    out_dtype,
    kept,
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
  class_weights: jax.typing.ArrayLike | None = None,
  hard_negatives: int | None = None,
) -> jax.Array:
  r"""Multi-label margin loss of a linear classifier, without its ``(N, C)`` scores.

  With scores :math:`x = h W + b` over :math:`C` classes and the label list
  :math:`L` of each row (its entries before the first ``-1``),

  .. math::
    \ell(x, L) = \frac{1}{C} \sum_{j \in L} w_j \sum_{d \in N_k(x, L)}
                 \max(0,\ \mathrm{margin} - x_j + x_d),

  with :math:`w_j = 1` and :math:`N_k(x, L)` every :math:`d \notin L` by
  default: torch's ``multilabel_margin_loss`` (a label listed twice counts
  twice in the outer sum). Equals ``jaxmargin.multilabel_margin_loss(x,
  labels padded with -1 to width C, reduction="none")`` for ``margin=1``, in
  value and in the gradients with respect to ``features``, ``kernel``,
  ``bias`` and ``margin``. The hinge part costs O(N*C*K) compares for ``K``
  up to 128 and O(N*C*log K) beyond.

  ``class_weights`` and ``hard_negatives`` are those of
  :func:`jaxmargin.losses.multilabel_margin_loss` (and equal it on the
  materialised scores, in value and gradients, class weights included):
  label :math:`j`'s terms weigh :math:`w_j`, and :math:`N_k(x, L)` keeps
  only each row's ``k`` highest-scoring negatives (:func:`jax.lax.top_k`'s
  order and ties). The hard negatives come from a first sweep, a
  :func:`top_k` of ``k + K`` classes without gradients (at most ``K`` of
  them are labels), so a step costs one more matmul with the kernel and
  ``O(N * (k + K))`` more memory.

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
    class_weights: optional ``(C,)`` weights of the classes as labels, one
      per column of the whole kernel (padding included; whole on every
      device with ``class_axis_name``); differentiable, the gradient summed
      in a fixed order.
    hard_negatives: optional static positive int ``k``: the negatives each
      row keeps. With ``class_axis_name`` (or a kernel split by class under
      ``jit``), ``k + K`` may not exceed the classes each device holds
      (``ValueError``); ``k >= C`` keeps every negative.

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
    >>> hardest = linear.multilabel_margin_loss(features, kernel, jnp.array([[3, 0]]),
    ...                                         hard_negatives=1)
    >>> print(f"{float(hardest[0]):.4f}")
    0.4750
  """
  fn = "multilabel_margin_loss"
  features, kernel, labels, bias, margin, class_weights = v.array_args(
    fn,
    ("bias", "class_weights"),
    features=features,
    kernel=kernel,
    labels=labels,
    bias=bias,
    margin=margin,
    class_weights=class_weights,
  )
  loss = _multilabel_margin(
    features,
    kernel,
    labels,
    bias,
    margin,
    class_weights,
    reduction=reduction,
    chunk_size=chunk_size,
    class_axis_name=class_axis_name,
    num_classes=num_classes,
    hard_negatives=check_hard_negatives(fn, hard_negatives),
  )
  return with_checked_labels(
    "multilabel_margin_loss", loss, labels, -1, kernel, class_axis_name, num_classes
  )
