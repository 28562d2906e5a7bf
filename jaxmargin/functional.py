"""PyTorch-compatible functional API: ``torch.nn.functional`` names and arguments.

Each function validates shapes and dtypes at trace time, range-checks concrete
targets eagerly, and then runs one jitted kernel built on the loss's core.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxmargin import _validation as v
from jaxmargin._functional_embedding import (
  cosine_embedding_loss,
  pairwise_distance,
  triplet_margin_loss,
  triplet_margin_with_distance_loss,
)
from jaxmargin._functional_pairwise import (
  hinge_embedding_loss,
  margin_ranking_loss,
  soft_margin_loss,
)
from jaxmargin._multi_margin import multi_margin_per_sample
from jaxmargin._multilabel_margin import multilabel_margin_per_sample
from jaxmargin._reduction import (
  INVALID_REDUCTION,
  INVALID_SOFT_REDUCTION,
  Reduction,
  apply_reduction,
  resolve_reduction,
)
from jaxmargin._soft_margin import multilabel_soft_margin_per_sample, torch_order_operands

__all__: list[str] = [
  "cosine_embedding_loss",
  "hinge_embedding_loss",
  "margin_ranking_loss",
  "multi_margin_loss",
  "multilabel_margin_loss",
  "multilabel_soft_margin_loss",
  "pairwise_distance",
  "soft_margin_loss",
  "triplet_margin_loss",
  "triplet_margin_with_distance_loss",
]


def _finish(per_sample, reduction, none_shape, out_dtype):
  """Applies the reduction in the compute dtype, then casts to the output dtype."""
  out = apply_reduction(per_sample, reduction)
  if reduction == "none":
    out = out.reshape(none_shape)
  return out.astype(out_dtype)


@functools.partial(jax.jit, static_argnames=("reduction", "none_shape"))
def _multilabel_margin_kernel(x, target, *, reduction, none_shape):
  work = x.astype(v.compute_dtype(x.dtype))
  per_sample = multilabel_margin_per_sample(work, target, jnp.ones((), work.dtype))
  return _finish(per_sample, reduction, none_shape, x.dtype)


def multilabel_margin_loss(
  input: jax.typing.ArrayLike,
  target: jax.typing.ArrayLike,
  size_average: bool | None = None,
  reduce: bool | None = None,
  reduction: Reduction = "mean",
) -> jax.Array:
  r"""Multi-label margin (hinge) loss, as ``torch.nn.functional.multilabel_margin_loss``.

  For each sample, the label list :math:`L` is the prefix of its target row
  before the first negative entry (``-1`` pads the rest). With :math:`C`
  classes,

  .. math::
    \ell(x, y) = \frac{1}{C} \sum_{j \in L} \sum_{d \notin L}
                 \max(0,\ 1 - x_{y_j} + x_d).

  A label listed twice counts twice in the outer sum but once in
  :math:`d \notin L`. Gradients follow torch: a term whose argument is exactly
  0 contributes no gradient, and NaN terms are dropped.

  Args:
    input: scores of shape ``()``, ``(C,)`` or ``(N, C)``; float16, bfloat16,
      float32 or float64 (half types are accumulated in float32).
    target: integer array (any integer dtype) of label indices padded with
      ``-1``: as many elements as ``input`` for 0-D/1-D input, else ``(N, C)``.
      Every value, also after the padding, must lie in ``[-1, C-1]``.
    size_average: deprecated (torch's legacy argument); overrides ``reduction``.
    reduce: deprecated (torch's legacy argument); overrides ``reduction``.
    reduction: ``'none'`` (per sample), ``'mean'`` or ``'sum'``.

  Returns:
    The loss in the input dtype: shape ``(N,)`` for ``'none'`` with 2-D input,
    else a scalar. An empty batch gives NaN for ``'mean'`` and 0 for ``'sum'``.

  Raises:
    ValueError: for a bad shape or reduction, or, with concrete (not traced)
      arrays, for a target value outside ``[-1, C-1]``. Under ``jit`` the
      values are unknown: a row with such a value gives NaN instead.
    TypeError: for a non-floating input or a non-integer target.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxmargin
    >>> x = jnp.array([[0.1, 0.2, 0.4, 0.8]])
    >>> y = jnp.array([[3, 0, -1, 1]])  # labels 3 and 0; 1 is after the padding
    >>> print(f"{jaxmargin.multilabel_margin_loss(x, y):.4f}")
    0.8500
  """
  fn = "multilabel_margin_loss"
  reduction = resolve_reduction(
    reduction,
    size_average,
    reduce,
    fn=fn,
    allow_elementwise_mean=True,
    invalid_message=INVALID_REDUCTION,
  )
  x = v.as_float_array(fn, "input", input)
  num_rows, num_classes = v.check_matrix_input(fn, x)
  y = v.as_array(fn, "target", target, "an integer array of class indices")
  if x.ndim == 2:
    if y.shape != x.shape:
      raise ValueError(
        f"{fn}: target shape {y.shape} does not match input shape {x.shape}; expected {x.shape}"
      )
  elif y.ndim > 1 or y.size != num_classes:
    raise ValueError(
      f"{fn}: target shape {y.shape} does not match input shape "
      f"{x.shape}; expected ({num_classes},)"
    )
  y = v.as_index_array(fn, "target", y)
  y = v.check_target_range(fn, y, -1, num_classes - 1)
  none_shape = (num_rows,) if x.ndim == 2 else ()
  return _multilabel_margin_kernel(
    x.reshape(num_rows, num_classes),
    y.reshape(num_rows, num_classes),
    reduction=reduction,
    none_shape=none_shape,
  )


@functools.partial(jax.jit, static_argnames=("p", "reduction", "none_shape"))
def _multi_margin_kernel(x, target, margin, weight, *, p, reduction, none_shape):
  dtype = v.compute_dtype(x.dtype)
  work = x.astype(dtype)
  class_weight = None if weight is None else weight.astype(dtype)
  per_sample = multi_margin_per_sample(work, target, jnp.asarray(margin, dtype), class_weight, p)
  return _finish(per_sample, reduction, none_shape, x.dtype)


def multi_margin_loss(
  input: jax.typing.ArrayLike,
  target: jax.typing.ArrayLike,
  p: int = 1,
  margin: float | jax.typing.ArrayLike = 1.0,
  weight: jax.typing.ArrayLike | None = None,
  size_average: bool | None = None,
  reduce: bool | None = None,
  reduction: Reduction = "mean",
) -> jax.Array:
  r"""Multi-class margin (hinge) loss, as ``torch.nn.functional.multi_margin_loss``.

  For a sample with scores :math:`x`, target class :math:`y` and :math:`C`
  classes,

  .. math::
    \ell(x, y) = \frac{1}{C} \sum_{d \ne y}
                 w_y \max(0,\ \mathrm{margin} - x_y + x_d)^p .

  The target's class weight multiplies every term (after the power); there is
  no normalisation by the weights. Gradients follow torch: a term whose
  argument is exactly 0 contributes no gradient, and NaN terms are dropped.
  Unlike torch, ``margin`` and ``weight`` are differentiable.

  Args:
    input: scores of shape ``()``, ``(C,)`` or ``(N, C)``; float16, bfloat16,
      float32 or float64 (half types are accumulated in float32).
    target: integer class indices (any integer dtype) in ``[0, C-1]``, with
      ``N`` elements: shape ``(N,)``, or ``()``/``(1,)`` for one sample.
    p: 1 or 2, a Python value: under ``jax.jit``, a static argument
      (``static_argnames=("p", "reduction")``).
    margin: the margin (a number or a scalar array).
    weight: optional per-class weights of shape ``(C,)``, of any real dtype,
      cast to the input's (torch requires the input's dtype); to float32 for
      half types, in which they are computed.
    size_average: deprecated (torch's legacy argument); overrides ``reduction``.
    reduce: deprecated (torch's legacy argument); overrides ``reduction``.
    reduction: ``'none'`` (per sample), ``'mean'`` or ``'sum'``.

  Returns:
    The loss in the input dtype: shape ``(N,)`` for ``'none'`` with a 1-D
    target, else a scalar. An empty batch gives NaN for ``'mean'`` and 0 for
    ``'sum'``.

  Raises:
    ValueError: for a bad shape, ``p`` or reduction, or, with concrete (not
      traced) arrays, for a target outside ``[0, C-1]``. Under ``jit`` the
      values are unknown: a row with such a target gives NaN instead.
    TypeError: for a non-floating input, a non-integer target or a
      non-numeric weight.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxmargin
    >>> x = jnp.array([[0.1, 0.2, 0.4, 0.8]])
    >>> y = jnp.array([3])
    >>> print(f"{jaxmargin.multi_margin_loss(x, y):.4f}")
    0.3250
  """
  fn = "multi_margin_loss"
  p = v.check_p(fn, p)
  w = v.as_optional_array(fn, "weight", weight, "None or a (C,) array of class weights")
  if w is not None and w.ndim != 1:
    raise ValueError(
      f"{fn}: weight shape {w.shape} is not one-dimensional; "
      "expected (C,) (weight must be one-dimensional)"
    )
  reduction = resolve_reduction(
    reduction,
    size_average,
    reduce,
    fn=fn,
    allow_elementwise_mean=True,
    invalid_message=INVALID_REDUCTION,
  )
  x = v.as_float_array(fn, "input", input)
  num_rows, num_classes = v.check_matrix_input(fn, x)
  y = v.as_array(fn, "target", target, "an integer array of class indices")
  if y.ndim > 1 or y.size != num_rows:
    raise ValueError(
      f"{fn}: target shape {y.shape} does not fit input shape "
      f"{x.shape}; expected ({num_rows},), one class index per sample"
    )
  if w is not None:
    if w.shape != (num_classes,):
      raise ValueError(
        f"{fn}: weight shape {w.shape} does not match the "
        f"{num_classes} classes of input; expected ({num_classes},)"
      )
    w = v.as_real_array(fn, "weight", w)
  y = v.as_index_array(fn, "target", y)
  m = v.as_scalar_margin(fn, margin)
  y = v.check_target_range(fn, y, 0, num_classes - 1)
  none_shape = (num_rows,) if y.ndim == 1 else ()
  return _multi_margin_kernel(
    x.reshape(num_rows, num_classes),
    y.reshape(num_rows),
    m,
    w,
    p=p,
    reduction=reduction,
    none_shape=none_shape,
  )


@functools.partial(jax.jit, static_argnames=("reduction",))
def _multilabel_soft_margin_kernel(x, target, weight, *, reduction):
  out_dtype = jnp.result_type(*(a for a in (x, target, weight) if a is not None))
  out_dtype = jnp.promote_types(out_dtype, x.dtype)
  x_work, target, weight = torch_order_operands(x, target, weight)
  per_sample = multilabel_soft_margin_per_sample(x_work, target, weight)
  return _finish(per_sample, reduction, per_sample.shape, out_dtype)


def multilabel_soft_margin_loss(
  input: jax.typing.ArrayLike,
  target: jax.typing.ArrayLike,
  weight: jax.typing.ArrayLike | None = None,
  size_average: bool | None = None,
  reduce: bool | None = None,
  reduction: Reduction = "mean",
) -> jax.Array:
  r"""Multi-label soft margin loss, as ``torch.nn.functional.multilabel_soft_margin_loss``.

  One-versus-all logistic loss, averaged over the :math:`C` classes of the last
  axis:

  .. math::
    \ell(x, t) = -\frac{1}{C} \sum_{c} w_c \left[ t_c \log\sigma(x_c)
                 + (1 - t_c) \log\sigma(-x_c) \right].

  Computed through ``log_sigmoid``, so value and gradients stay finite for
  large ``|x|`` (1e4 in float32 and beyond). Forward and reverse mode both
  work (``jvp``, ``jacfwd``, ``hessian``, ``grad`` of ``grad``), and gradients
  reach ``input``, ``target`` and ``weight``.

  Args:
    input: logits of shape ``(..., C)`` (at least 1-D; the class axis is last);
      float16, bfloat16, float32 or float64.
    target: labels broadcastable to ``input``; multi-hot or soft, not checked.
    weight: optional weights broadcastable to ``input``, e.g. ``(C,)``.
      Mixed float dtypes of ``input``, ``target`` and ``weight`` are rounded
      as in torch, one operation at a time: the log-sigmoids in the input's
      dtype, ``1 - target`` in the target's, then the promoted dtype.
    size_average: deprecated (torch's legacy argument); overrides ``reduction``.
    reduce: deprecated (torch's legacy argument); overrides ``reduction``.
    reduction: ``'none'`` (per sample, shape ``input.shape[:-1]``), ``'mean'``
      or ``'sum'``.

  Returns:
    The loss, in the dtype the arguments promote to (the input dtype for
    integer or same-precision targets).

  Raises:
    ValueError: for a 0-D input, shapes that do not broadcast, or a bad
      reduction.
    TypeError: for a non-floating input or a non-numeric target or weight.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxmargin
    >>> x = jnp.array([[0.1, 0.2, 0.4, 0.8]])
    >>> t = jnp.array([[1.0, 0.0, 0.0, 1.0]])
    >>> print(f"{jaxmargin.multilabel_soft_margin_loss(x, t):.4f}")
    0.6817
  """
  fn = "multilabel_soft_margin_loss"
  reduction = resolve_reduction(
    reduction,
    size_average,
    reduce,
    fn=fn,
    allow_elementwise_mean=False,
    invalid_message=INVALID_SOFT_REDUCTION,
  )
  x = v.as_float_array(fn, "input", input)
  if x.ndim == 0:
    raise ValueError(
      f"{fn}: input shape () has no class axis; expected at least one dimension, (..., C)"
    )
  t = v.as_real_array(fn, "target", target)
  w = None if weight is None else v.as_real_array(fn, "weight", weight)
  for name, array in (("target", t), ("weight", w)):
    if array is None:
      continue
    try:
      jnp.broadcast_shapes(x.shape, array.shape)
    except ValueError:
      raise ValueError(
        f"{fn}: {name} shape {array.shape} does not broadcast with "
        f"input shape {x.shape}; expected a shape broadcastable "
        f"to {x.shape}"
      ) from None
  if w is not None:
    try:
      jnp.broadcast_shapes(x.shape, t.shape, w.shape)
    except ValueError:
      raise ValueError(
        f"{fn}: weight shape {w.shape} does not broadcast with "
        f"input shape {x.shape} and target shape {t.shape}"
      ) from None
  return _multilabel_soft_margin_kernel(x, t, w, reduction=reduction)


def __dir__() -> list[str]:
  # What the module offers: its public API, not the names it imports.
  return sorted(__all__)
