"""torch-compatible margin ranking, hinge embedding and soft margin losses.

Validation of shapes and dtypes at trace time, then one jitted kernel over the
core in :mod:`jaxmargin._pairwise`. Re-exported by :mod:`jaxmargin.functional`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxmargin import _validation as v
from jaxmargin._pairwise import (
  hinge_embedding_terms,
  margin_ranking_dtype,
  margin_ranking_terms,
  soft_margin_terms,
)
from jaxmargin._reduction import INVALID_REDUCTION, Reduction, apply_reduction, resolve_reduction


def _reduction(fn, reduction, size_average, reduce) -> Reduction:
  # All three go through torch's ``_Reduction.get_enum``: 'elementwise_mean'
  # is a deprecated 'mean', and an unknown name "is not a valid value".
  return resolve_reduction(
    reduction,
    size_average,
    reduce,
    fn=fn,
    allow_elementwise_mean=True,
    invalid_message=INVALID_REDUCTION,
  )


def label_array(fn: str, name: str, value: jax.typing.ArrayLike) -> jax.Array:
  """A target compared with 1 and -1 or multiplied: real numbers or bools (torch takes both)."""
  array = v.as_array(fn, name, value, "an array of real numbers or bools")
  return array if array.dtype == jnp.bool_ else v.as_real_array(fn, name, array)


def broadcast_shape(fn: str, **arrays: jax.Array) -> tuple[int, ...]:
  """The broadcast shape of ``arrays``, or a ``ValueError`` naming them and their shapes."""
  try:
    return jnp.broadcast_shapes(*(a.shape for a in arrays.values()))
  except ValueError:
    shapes = ", ".join(f"{name} shape {a.shape}" for name, a in arrays.items())
    raise ValueError(
      f"{fn}: {shapes} do not broadcast together; expected shapes that broadcast "
      "(equal, or 1, in each trailing dimension)"
    ) from None


@functools.partial(jax.jit, static_argnames=("reduction",))
def _margin_ranking_kernel(input1, input2, target, margin, *, reduction):
  terms = margin_ranking_terms(input1, input2, target, margin)
  return apply_reduction(terms, reduction).astype(margin_ranking_dtype(input1, input2, target))


def margin_ranking_loss(
  input1: jax.typing.ArrayLike,
  input2: jax.typing.ArrayLike,
  target: jax.typing.ArrayLike,
  margin: float | jax.typing.ArrayLike = 0,
  size_average: bool | None = None,
  reduce: bool | None = None,
  reduction: Reduction = "mean",
) -> jax.Array:
  r"""Margin ranking loss, as ``torch.nn.functional.margin_ranking_loss``.

  Elementwise, for scores :math:`x_1, x_2` and a label :math:`y` (1: :math:`x_1`
  should rank higher, -1: :math:`x_2` should),

  .. math::
    \ell(x_1, x_2, y) = \max(0,\ -y\,(x_1 - x_2) + \mathrm{margin}).

  Gradients follow torch: at the kink (argument exactly 0) the whole
  gradient passes, a NaN argument passes none; ``target`` is differentiated
  too (:math:`-(x_1 - x_2)` where the hinge is active). Unlike torch,
  ``margin`` is differentiable as well.

  Args:
    input1: scores of any shape and real dtype (integers too, as in torch;
      not bool).
    input2: scores with as many dimensions as ``input1``; the two broadcast.
    target: labels, usually 1 or -1, with as many dimensions, broadcasting
      with both; any real dtype (an unsigned ``-1`` wraps as in torch).
    margin: the margin (a number or a scalar array).
    size_average: deprecated (torch's legacy argument); overrides ``reduction``.
    reduce: deprecated (torch's legacy argument); overrides ``reduction``.
    reduction: ``'none'`` (per element, the broadcast shape), ``'mean'`` or
      ``'sum'`` over all elements.

  Returns:
    The loss in the promoted dtype of the three (float32 if all are integers;
    half types are computed in float32). An empty input gives NaN for
    ``'mean'`` and 0 for ``'sum'``.

  Raises:
    ValueError: for arrays of different numbers of dimensions or shapes
      that do not broadcast, a non-scalar margin, or a bad reduction.
    TypeError: for a bool, complex or non-array argument.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxmargin
    >>> x1, x2 = jnp.array([0.8, 0.1, 0.5]), jnp.array([0.2, 0.4, 0.5])
    >>> y = jnp.array([1, 1, -1])
    >>> print(f"{jaxmargin.margin_ranking_loss(x1, x2, y, margin=0.1):.4f}")
    0.1667
  """
  fn = "margin_ranking_loss"
  reduction = _reduction(fn, reduction, size_average, reduce)
  x1 = v.as_real_array(fn, "input1", input1)
  x2 = v.as_real_array(fn, "input2", input2)
  y = v.as_real_array(fn, "target", target)
  if not x1.ndim == x2.ndim == y.ndim:
    raise ValueError(
      f"{fn}: input1, input2 and target have {x1.ndim}, {x2.ndim} and {y.ndim} dimensions "
      f"(shapes {x1.shape}, {x2.shape} and {y.shape}); expected the same number of "
      "dimensions (All input tensors should have same dimension)"
    )
  broadcast_shape(fn, input1=x1, input2=x2, target=y)
  m = v.as_scalar_margin(fn, margin)
  return _margin_ranking_kernel(x1, x2, y, m, reduction=reduction)


@functools.partial(jax.jit, static_argnames=("reduction",))
def _hinge_embedding_kernel(input, target, margin, *, reduction):
  return apply_reduction(hinge_embedding_terms(input, target, margin), reduction).astype(
    input.dtype
  )


def hinge_embedding_loss(
  input: jax.typing.ArrayLike,
  target: jax.typing.ArrayLike,
  margin: float | jax.typing.ArrayLike = 1.0,
  size_average: bool | None = None,
  reduce: bool | None = None,
  reduction: Reduction = "mean",
) -> jax.Array:
  r"""Hinge embedding loss, as ``torch.nn.functional.hinge_embedding_loss``.

  Elementwise, for a value :math:`x` (usually a distance between two
  embeddings) and a label :math:`y` (1: similar, -1: dissimilar),

  .. math::
    \ell(x, y) = [y \ne 1]\,\max(0,\ \mathrm{margin} - x) + [y \ne -1]\,x,

  which is :math:`x` for :math:`y = 1` and :math:`\max(0, \mathrm{margin} - x)`
  for :math:`y = -1`; a label that is neither gets both terms, as in torch.
  The hinge passes the whole gradient at its kink and none at NaN (torch's
  ``clamp_min``). ``target`` gets no gradient; unlike torch, ``margin`` does.

  Args:
    input: floating values of any shape (float16, bfloat16, float32, float64).
    target: labels broadcastable with ``input`` (the output has the
      broadcast shape); any real or bool dtype, compared with 1 and -1 in
      its own dtype.
    margin: the margin (a number or a scalar array).
    size_average: deprecated (torch's legacy argument); overrides ``reduction``.
    reduce: deprecated (torch's legacy argument); overrides ``reduction``.
    reduction: ``'none'`` (per element), ``'mean'`` or ``'sum'``.

  Returns:
    The loss in the input's dtype (half types are computed in float32). An
    empty input gives NaN for ``'mean'`` and 0 for ``'sum'``.

  Raises:
    ValueError: for shapes that do not broadcast, a non-scalar margin or a bad
      reduction.
    TypeError: for a non-floating input or a non-numeric target.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxmargin
    >>> distance = jnp.array([0.3, 0.3, 1.5])
    >>> y = jnp.array([1, -1, -1])
    >>> print(f"{jaxmargin.hinge_embedding_loss(distance, y):.4f}")
    0.3333
  """
  fn = "hinge_embedding_loss"
  reduction = _reduction(fn, reduction, size_average, reduce)
  x = v.as_float_array(fn, "input", input)
  y = label_array(fn, "target", target)
  broadcast_shape(fn, input=x, target=y)
  m = v.as_scalar_margin(fn, margin)
  return _hinge_embedding_kernel(x, y, m, reduction=reduction)


@functools.partial(jax.jit, static_argnames=("reduction",))
def _soft_margin_kernel(input, target, *, reduction):
  return apply_reduction(soft_margin_terms(input, target), reduction).astype(input.dtype)


def soft_margin_loss(
  input: jax.typing.ArrayLike,
  target: jax.typing.ArrayLike,
  size_average: bool | None = None,
  reduce: bool | None = None,
  reduction: Reduction = "mean",
) -> jax.Array:
  r"""Two-class logistic (soft margin) loss, as ``torch.nn.functional.soft_margin_loss``.

  Elementwise, for a logit :math:`x` and a label :math:`y \in \{1, -1\}`,

  .. math::
    \ell(x, y) = \log\left(1 + e^{-y x}\right).

  Computed without overflow: where torch's ``log1p(exp(-y x))`` gives
  ``inf`` (:math:`-y x` above 88.7 in float32, 709.8 in float64) and a NaN
  gradient, this gives the finite value :math:`-y x` (to rounding) and the
  gradient :math:`-y`; elsewhere it is torch's. Unlike torch, which refuses
  to differentiate with respect to ``target``, the target gets its
  derivative :math:`-x\,\sigma(-y x)`.

  Args:
    input: floating logits of any shape (float16, bfloat16, float32, float64).
    target: labels, any real or bool dtype (not checked: soft labels work),
      whose shape broadcasts to the input's, as in torch.
    size_average: deprecated (torch's legacy argument); overrides ``reduction``.
    reduce: deprecated (torch's legacy argument); overrides ``reduction``.
    reduction: ``'none'`` (per element, the input's shape), ``'mean'`` or
      ``'sum'``.

  Returns:
    The loss in the input's dtype (half types are computed in float32). An
    empty input gives NaN for ``'mean'`` and 0 for ``'sum'``.

  Raises:
    ValueError: for a target whose shape does not broadcast to the input's,
      or a bad reduction.
    TypeError: for a non-floating input or a non-numeric target.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxmargin
    >>> x, y = jnp.array([2.0, -1.0, 0.5]), jnp.array([1, -1, -1])
    >>> print(f"{jaxmargin.soft_margin_loss(x, y):.4f}")
    0.4714
  """
  fn = "soft_margin_loss"
  reduction = _reduction(fn, reduction, size_average, reduce)
  x = v.as_float_array(fn, "input", input)
  y = label_array(fn, "target", target)
  # torch writes the loss into an array of the input's shape.
  if broadcast_shape(fn, input=x, target=y) != x.shape:
    raise ValueError(
      f"{fn}: target shape {y.shape} broadcasts input shape {x.shape} to "
      f"{jnp.broadcast_shapes(x.shape, y.shape)}; expected a target shape that broadcasts "
      f"to the input's, {x.shape}"
    )
  return _soft_margin_kernel(x, y, reduction=reduction)
