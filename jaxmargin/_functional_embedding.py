"""torch-compatible embedding losses: ``pairwise_distance``, cosine embedding and triplet losses.

Each function checks shapes, dtypes and static arguments at trace time, in
torch's order, then runs one jitted kernel over the core
(:mod:`jaxmargin._embedding`). Inputs of an integer dtype are computed in
float32 (torch's default dtype), half types in float32 with the result
rounded back; mixed float dtypes round as torch does, each distance (or
squared norm) in its own operands' dtype.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxmargin import _embedding as core
from jaxmargin import _validation as v
from jaxmargin._embedding_checks import (
  broadcast,
  check_distance_function,
  check_feature_axis,
  cosine_target,
  distance_shapes,
  float_dtype,
  positive_margin,
  static_flag,
  static_number,
  triplet_ranks,
)
from jaxmargin._reduction import (
  INVALID_REDUCTION,
  Reduction,
  apply_reduction,
  check_reduction,
  resolve_reduction,
)

__all__: list[str] = [
  "cosine_embedding_loss",
  "pairwise_distance",
  "triplet_margin_loss",
  "triplet_margin_with_distance_loss",
]

# --- kernels (shared with jaxmargin._losses_embedding) -------------------------


def _work(array: jax.Array) -> jax.Array:
  """An operand in the dtype to compute in: float32 for integer and half types."""
  return array.astype(v.compute_dtype(float_dtype(array)))


def _to_last(array, axis):
  return array if axis == -1 else jnp.moveaxis(array, axis, -1)


def _torch_distance(p, eps):
  """torch's ``pairwise_distance`` of two operands, each pair in its own dtype."""

  def distance(x1, x2):
    dtype = v.compute_dtype(float_dtype(x1, x2))
    return core.pairwise_distance(x1.astype(dtype), x2.astype(dtype), eps.astype(dtype), p, -1)

  return distance


def _finish(terms, margin, reduction, out_dtype):
  # A margin torch rejects, when it was traced: NaN (the checkify check reports it).
  terms = jnp.where(margin <= 0, jnp.asarray(jnp.nan, terms.dtype), terms)
  out = apply_reduction(terms, reduction)
  return out if out_dtype is None else out.astype(out_dtype)


@functools.partial(jax.jit, static_argnames=("p", "swap", "reduction", "axis"))
def triplet_kernel(anchor, positive, negative, margin, eps, *, p, swap, reduction, axis=-1):
  """Triplet losses with torch's ``pairwise_distance``, reduced (``'none'``: per triplet)."""
  a, pos, neg = _to_last(anchor, axis), _to_last(positive, axis), _to_last(negative, axis)
  terms = core.triplet_margin_terms(a, pos, neg, margin, _torch_distance(p, eps), swap)
  return _finish(terms, margin, reduction, float_dtype(a, pos, neg))


def triplet_with_distance(anchor, positive, negative, margin, distance, swap, reduction):
  """Triplet losses with any JAX distance callable, not jitted here (the caller's jit applies)."""
  terms = core.triplet_margin_terms(anchor, positive, negative, margin, distance, swap)
  return _finish(terms, margin, reduction, None)


@functools.partial(jax.jit, static_argnames=("reduction", "axis"))
def cosine_kernel(input1, input2, target, margin, *, reduction, axis=-1):
  """Cosine embedding losses over ``axis``, reduced (``'none'``: per pair)."""
  out_dtype = float_dtype(input1, input2)
  x1, x2 = _work(_to_last(input1, axis)), _work(_to_last(input2, axis))
  terms = core.cosine_embedding_terms(x1, x2, target, margin, -1)
  return apply_reduction(terms, reduction).astype(out_dtype)


@functools.partial(jax.jit, static_argnames=("p", "keepdim"))
def _pairwise_distance_kernel(x1, x2, eps, *, p, keepdim):
  out_dtype = float_dtype(x1, x2)
  dtype = v.compute_dtype(out_dtype)
  distance = core.pairwise_distance(
    x1.astype(dtype), x2.astype(dtype), eps.astype(dtype), p, -1, keepdim
  )
  return distance.astype(out_dtype)


# --- the public functions -------------------------------------------------------


def pairwise_distance(
  x1: jax.typing.ArrayLike,
  x2: jax.typing.ArrayLike,
  p: float = 2.0,
  eps: float | jax.typing.ArrayLike = 1e-6,
  keepdim: bool = False,
) -> jax.Array:
  r"""The ``p``-norm distance of ``x1`` and ``x2``, as ``torch.nn.functional.pairwise_distance``.

  Over the last dimension of the broadcast inputs,

  .. math::
    d(x_1, x_2) = \Bigl(\sum_i |x_{1,i} - x_{2,i} + \epsilon|^p\Bigr)^{1/p} .

  ``eps`` is added to every component of the difference, not to the norm:
  equal inputs are :math:`\epsilon D^{1/p}` apart, not 0. torch's special
  orders apply: ``p=0`` counts nonzero components, ``p=inf`` (``-inf``) takes
  the largest (smallest) magnitude, negative and fractional ``p`` use the
  formula above. Gradients are torch's: 0 at a zero difference, the
  ``p=inf`` gradient split evenly among tied components, none for ``p=0``.
  Forward and reverse mode work, to any order.

  Args:
    x1: array of shape ``(..., D)`` (or ``()``); floating or integer
      (integers are computed in float32, as torch does).
    x2: array broadcastable with ``x1``.
    p: the norm's order, a Python number (static under ``jax.jit``).
    eps: added to each component of ``x1 - x2`` (a number or a scalar array).
    keepdim: keep the reduced dimension (size 1); static under ``jax.jit``.

  Returns:
    The distances, of the broadcast batch shape ``(...)`` (``(..., 1)`` with
    ``keepdim``), in the inputs' promoted floating dtype.

  Raises:
    ValueError: for shapes that do not broadcast, or no features with a
      negative or infinite ``p``.
    TypeError: for a non-real input or a traced ``p`` or ``keepdim``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxmargin
    >>> x1, x2 = jnp.array([[1.0, 2.0, 3.0]]), jnp.array([[1.0, 0.0, -1.0]])
    >>> print(f"{jaxmargin.pairwise_distance(x1, x2)[0]:.4f}")
    4.4721
    >>> print(f"{jaxmargin.pairwise_distance(x1, x1)[0]:.3e}")  # eps * sqrt(3), not 0
    1.732e-06
  """
  fn = "pairwise_distance"
  a = v.as_real_array(fn, "x1", x1)
  b = v.as_real_array(fn, "x2", x2)
  p = static_number(fn, "p", p)
  keepdim = static_flag(fn, "keepdim", keepdim)
  e = v.as_real_scalar(fn, "eps", eps)
  shape = broadcast(fn, "x2", b.shape, "x1", a.shape)
  check_feature_axis(fn, "x1 - x2", shape, p)
  return _pairwise_distance_kernel(a, b, e, p=p, keepdim=keepdim)


def cosine_embedding_loss(
  input1: jax.typing.ArrayLike,
  input2: jax.typing.ArrayLike,
  target: jax.typing.ArrayLike,
  margin: float | jax.typing.ArrayLike = 0,
  size_average: bool | None = None,
  reduce: bool | None = None,
  reduction: Reduction = "mean",
) -> jax.Array:
  r"""Cosine embedding loss, as ``torch.nn.functional.cosine_embedding_loss``.

  For a pair :math:`(x_1, x_2)` with target :math:`y`,

  .. math::
    \ell = \begin{cases} 1 - \cos(x_1, x_2) & y = 1 \\
    \max(0,\ \cos(x_1, x_2) - \mathrm{margin}) & y = -1 \\
    0 & \text{otherwise} \end{cases}, \qquad
    \cos = \frac{\sum x_1 x_2}{\sqrt{(\sum x_1^2 + \epsilon)(\sum x_2^2 + \epsilon)}}

  with ATen's :math:`\epsilon` = float32(1e-12) (also in float64), which
  makes a zero vector's cosine 0 instead of NaN. A target that is neither 1
  nor -1 gives 0. Gradients reach both inputs (not the target); at
  :math:`\cos = \mathrm{margin}` the hinge passes its full gradient, as torch.

  Args:
    input1: ``(N, D)`` with a ``(N,)`` target, or ``(D,)`` with a ``()``
      target; floating or integer (computed in float32).
    input2: as ``input1``; the two broadcast.
    target: ``(N,)`` or ``()`` of 1 / -1 (any real or bool dtype); it
      broadcasts against the ``N`` cosines.
    margin: the margin for dissimilar pairs (a number or a scalar array;
      differentiable, unlike torch's).
    size_average: deprecated (torch's legacy argument); overrides ``reduction``.
    reduce: deprecated (torch's legacy argument); overrides ``reduction``.
    reduction: ``'none'`` (per pair), ``'mean'`` or ``'sum'``
      (``'elementwise_mean'``, deprecated, is ``'mean'``).

  Returns:
    The loss in the inputs' promoted floating dtype: ``(N,)`` for ``'none'``
    with a 1-D target, else a scalar (NaN for ``'mean'`` of an empty batch).

  Raises:
    ValueError: for a target of more than one dimension, inputs of the wrong
      rank for the target, shapes that do not broadcast, or a bad reduction.
    TypeError: for a non-real input or target.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxmargin
    >>> x1 = jnp.array([[1.0, 0.0], [1.0, 1.0]])
    >>> x2 = jnp.array([[1.0, 1.0], [1.0, 0.9]])
    >>> y = jnp.array([1, -1])
    >>> loss = jaxmargin.cosine_embedding_loss(x1, x2, y, margin=0.5, reduction="none")
    >>> print([round(float(v), 4) for v in loss])
    [0.2929, 0.4986]
  """
  fn = "cosine_embedding_loss"
  reduction = resolve_reduction(
    reduction,
    size_average,
    reduce,
    fn=fn,
    allow_elementwise_mean=True,
    invalid_message=INVALID_REDUCTION,
  )
  a = v.as_real_array(fn, "input1", input1)
  b = v.as_real_array(fn, "input2", input2)
  t = cosine_target(fn, target)
  m = v.as_scalar_margin(fn, margin)
  if t.ndim > 1:
    raise ValueError(
      f"{fn}: target shape {t.shape} has more than one dimension; expected () or (N,) (0D "
      "or 1D target tensor expected, multi-target not supported)"
    )
  rank = t.ndim + 1
  if a.ndim != rank or b.ndim != rank:
    expected = "(N, D)" if rank == 2 else "(D,)"
    raise ValueError(
      f"{fn}: input1 shape {a.shape} and input2 shape {b.shape} do not fit a {t.ndim}-D "
      f"target; expected {rank}-D inputs {expected} ({t.ndim}D target tensor expects "
      f"{rank}D input tensors)"
    )
  shape = broadcast(fn, "input2", b.shape, "input1", a.shape)
  broadcast(fn, "target", t.shape, "the cosines", shape[:-1])
  return cosine_kernel(a, b, t, m, reduction=reduction)


def triplet_margin_loss(
  anchor: jax.typing.ArrayLike,
  positive: jax.typing.ArrayLike,
  negative: jax.typing.ArrayLike,
  margin: float | jax.typing.ArrayLike = 1.0,
  p: float = 2,
  eps: float | jax.typing.ArrayLike = 1e-06,
  swap: bool = False,
  size_average: bool | None = None,
  reduce: bool | None = None,
  reduction: Reduction = "mean",
) -> jax.Array:
  r"""Triplet margin loss, as ``torch.nn.functional.triplet_margin_loss``.

  For an anchor :math:`a`, a positive :math:`p` and a negative :math:`n`,
  with :math:`d` = :func:`pairwise_distance` (order ``p``, ``eps``),

  .. math::
    \ell(a, p, n) = \max\bigl(0,\ \mathrm{margin} + d(a, p) - d(a, n)\bigr).

  With ``swap``, :math:`d(a, n)` becomes :math:`\min(d(a, n), d(p, n))`
  (torch's ``minimum``: half the gradient to each side at a tie). The hinge
  passes its full gradient at 0, as torch's ``clamp_min``.

  Args:
    anchor: ``(N, D)``, ``(D,)`` or any rank (features last); floating or
      integer (computed in float32).
    positive: the same number of dimensions as ``anchor``; broadcasts.
    negative: the same number of dimensions as ``anchor``; broadcasts.
    margin: greater than 0 (torch's rule; a number or a scalar array). A
      traced margin is checked by ``checkify``, and one at most 0 gives NaN.
    p: the norm's order, a Python number (static under ``jax.jit``).
    eps: added to each component of the differences.
    swap: use the distance swap (static under ``jax.jit``).
    size_average: deprecated (torch's legacy argument); overrides ``reduction``.
    reduce: deprecated (torch's legacy argument); overrides ``reduction``.
    reduction: ``'none'`` (per triplet), ``'mean'`` or ``'sum'``
      (``'elementwise_mean'``, deprecated, is ``'mean'``).

  Returns:
    The loss in the inputs' promoted floating dtype: the batch shape for
    ``'none'``, else a scalar (NaN for ``'mean'`` of an empty batch).

  Raises:
    ValueError: for inputs of different ranks, shapes that do not broadcast,
      a concrete margin at most 0, or a bad reduction.
    TypeError: for a non-real input or a traced ``p`` or ``swap``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxmargin
    >>> anchor = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    >>> positive = jnp.array([[0.1, 0.1], [1.1, 1.1]])
    >>> negative = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> print(f"{jaxmargin.triplet_margin_loss(anchor, positive, negative):.4f}")
    0.1414
  """
  fn = "triplet_margin_loss"
  reduction = resolve_reduction(
    reduction,
    size_average,
    reduce,
    fn=fn,
    allow_elementwise_mean=True,
    invalid_message=INVALID_REDUCTION,
  )
  m = positive_margin(fn, margin)
  a, pos, neg = _triplet_arrays(fn, anchor, positive, negative)
  p, swap = static_number(fn, "p", p), static_flag(fn, "swap", swap)
  e = v.as_real_scalar(fn, "eps", eps)
  distance_shapes(fn, a, pos, neg, swap, p)
  return triplet_kernel(a, pos, neg, m, e, p=p, swap=swap, reduction=reduction)


def _triplet_arrays(fn, anchor, positive, negative):
  return (
    v.as_real_array(fn, "anchor", anchor),
    v.as_real_array(fn, "positive", positive),
    v.as_real_array(fn, "negative", negative),
  )


def triplet_margin_with_distance_loss(
  anchor: jax.typing.ArrayLike,
  positive: jax.typing.ArrayLike,
  negative: jax.typing.ArrayLike,
  *,
  distance_function: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
  margin: float | jax.typing.ArrayLike = 1.0,
  swap: bool = False,
  reduction: Reduction = "mean",
) -> jax.Array:
  r"""Triplet loss with any distance, as ``torch.nn.functional.triplet_margin_with_distance_loss``.

  With :math:`d` = ``distance_function`` (default :func:`pairwise_distance`
  with ``p=2``, ``eps=1e-6``),

  .. math::
    \ell(a, p, n) = \max\bigl(0,\ \mathrm{margin} + d(a, p) - d(a, n)\bigr),

  and with ``swap``, :math:`d(a, n)` becomes :math:`\min(d(a, n), d(p, n))`.

  Args:
    anchor: embeddings of any rank; the same number of dimensions as the
      other two.
    positive: as ``anchor``.
    negative: as ``anchor``.
    distance_function: a JAX callable ``(x, y) -> distances`` (static under
      ``jax.jit``); it gets the inputs as they are and must broadcast them.
      ``None``: :func:`pairwise_distance`.
    margin: greater than 0 (torch's rule), as in :func:`triplet_margin_loss`.
    swap: use the distance swap (static under ``jax.jit``).
    reduction: ``'none'``, ``'mean'`` or ``'sum'`` (torch rejects
      ``'elementwise_mean'`` here, and so do we).

  Returns:
    The loss: the distances' shape for ``'none'``, else a scalar.

  Raises:
    ValueError: for inputs of different ranks, a concrete margin at most 0 or
      a bad reduction (and, without ``distance_function``, shapes that do
      not broadcast).
    TypeError: for a non-real input, a ``distance_function`` that is not
      callable, or a traced ``swap``.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxmargin
    >>> anchor = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    >>> positive = jnp.array([[0.1, 0.1], [1.1, 1.1]])
    >>> negative = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> def cosine_distance(x, y):
    ...   return 1 - jnp.sum(x * y, -1) / jnp.sqrt(jnp.sum(x * x, -1) * jnp.sum(y * y, -1) + 1e-8)
    >>> loss = jaxmargin.triplet_margin_with_distance_loss(
    ...     anchor, positive, negative, distance_function=cosine_distance, margin=0.5)
    >>> print(f"{loss:.4f}")
    0.3536
  """
  fn = "triplet_margin_with_distance_loss"
  check_reduction(fn, reduction, allow_elementwise_mean=False, invalid_message=INVALID_REDUCTION)
  m = positive_margin(fn, margin)
  a, pos, neg = _triplet_arrays(fn, anchor, positive, negative)
  swap = static_flag(fn, "swap", swap)
  if distance_function is None:
    distance_shapes(fn, a, pos, neg, swap, 2.0)
    return triplet_kernel(a, pos, neg, m, jnp.asarray(1e-6), p=2.0, swap=swap, reduction=reduction)
  check_distance_function(fn, distance_function)
  # A custom distance decides how the shapes broadcast; only the ranks are torch's rule.
  triplet_ranks(fn, a, pos, neg)
  return triplet_with_distance(a, pos, neg, m, distance_function, swap, reduction)
