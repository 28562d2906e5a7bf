"""Core of the multi-label soft margin loss (per-sample values)."""

from __future__ import annotations

import dataclasses
import functools
import operator

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from jaxmargin._fused import Chunk, ChunkShare, RowTotals
from jaxmargin._row_sums import row_sums
from jaxmargin._validation import compute_dtype

_HALF_DTYPES = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def _neg_log_sigmoids(x, decay=None):
  """``(-log sigmoid(x), -log sigmoid(-x))``, i.e. ``(softplus(-x), softplus(x))``.

  Both share ``log1p(exp(-|x|))``: one exp and one log1p per element instead
  of two each, and neither overflows for any finite ``x``. ``decay`` is
  ``exp(-|x|)`` if the caller has it.
  """
  shared = jnp.log1p(_decay(x) if decay is None else decay)
  return jnp.maximum(-x, 0) + shared, jnp.maximum(x, 0) + shared


def _decay(x):
  return jnp.exp(-jnp.abs(x))


def _sigmoids(x, decay):
  """``(sigmoid(x), sigmoid(-x))`` from ``decay = exp(-|x|)``: a division, no more exps."""
  near = 1 / (1 + decay)  # the sigmoid of |x|
  far = decay * near  # the sigmoid of -|x|
  positive = x >= 0
  return jnp.where(positive, near, far), jnp.where(positive, far, near)


def _weighted(weight, a):
  return a if weight is None else weight * a


@jax.custom_jvp
def soft_margin_terms(x, target, weight):
  r"""Elementwise :math:`-w [t \log\sigma(x) + (1 - t) \log\sigma(-x)]`.

  The derivative rule gives :math:`w (\sigma(x) - t)` for ``x`` (also at
  ``x = 0``, where autodiff through ``max`` and ``abs`` would not),
  :math:`w [\log\sigma(-x) - \log\sigma(x)] = -w x` for ``t`` and the
  unweighted term for ``w``. It is a ``custom_jvp``, so forward mode (``jvp``,
  ``jacfwd``, ``hessian``) works as well as reverse mode. ``weight`` may be
  ``None`` (no weight).
  """
  return _weighted(weight, _terms(target, *_neg_log_sigmoids(x)))


def _terms(target, positive_part, negative_part):
  # torch's t * (...) + (1 - t) * (...) shape keeps its NaN from 0 * inf at
  # x = +-inf.
  return target * positive_part + _one_minus(target) * negative_part


def _one_minus(target):
  """``1 - target`` in the target's own dtype, rounded there as in torch."""
  complement = 1 - target
  if complement.dtype in _HALF_DTYPES:
    # XLA:CPU computes half types in float32 and drops a rounding that a
    # wider operation undoes at once; reduce_precision keeps it.
    info = jnp.finfo(complement.dtype)
    complement = jax.lax.reduce_precision(
      complement, exponent_bits=info.nexp, mantissa_bits=info.nmant
    )
  return complement


def _soft_margin_terms_jvp(primals, tangents):
  x, target, weight = primals
  dx, dtarget, dweight = tangents
  decay = _decay(x)
  positive_part, negative_part = _neg_log_sigmoids(x, decay)
  sigmoid, sigmoid_of_minus = _sigmoids(x, decay)
  terms = _terms(target, positive_part, negative_part)
  # sigma(x) - t, written as (1 - t) sigma(x) - t sigma(-x): for t = 1 and
  # x >> 0 the plain difference cancels to 0, this keeps -sigma(-x) exact.
  # The weight goes into each branch, as torch's autograd takes it, so that an
  # infinite weight gives torch's NaN (inf * 0) in the derivatives too; in the
  # loss's dtype, as there, not in a narrower one of the target and weight.
  wide = jnp.result_type(terms, *(() if weight is None else (weight,)))
  slope = (
    _weighted(weight, _one_minus(target).astype(wide)) * sigmoid
    - _weighted(weight, target.astype(wide)) * sigmoid_of_minus
  )
  # Only the inputs that have tangents: an instantiated zero tangent of the
  # target would turn an overflowing target slope (w * softplus(-x) for
  # x near the lowest float) into inf * 0 = NaN.
  parts = [slope * dx] if not _is_zero(dx) else []
  if not _is_zero(dtarget):
    target_slope = _weighted(weight, positive_part) - _weighted(weight, negative_part)
    parts.append(target_slope * dtarget)
  if weight is not None and not _is_zero(dweight):
    parts.append(terms * dweight)
  value = _weighted(weight, terms)
  if not parts:
    return value, jnp.zeros_like(value)
  return value, functools.reduce(operator.add, parts)


def _is_zero(tangent) -> bool:
  return isinstance(tangent, SymbolicZero)


soft_margin_terms.defjvp(_soft_margin_terms_jvp, symbolic_zeros=True)


@jax.custom_jvp
def softplus(z):
  r""":math:`\log(1 + e^z)` for any finite ``z``, with the derivative :math:`\sigma(z)`.

  The binary soft margin loss's :math:`\log(1 + e^{-y x})` is ``softplus(-y * x)``.
  Computed as ``max(z, 0) + log1p(exp(-|z|))``, the same shared term as the
  multi-label loss's log-sigmoids, so that neither value nor derivative
  overflows (``log1p(exp(z))`` is ``inf`` from ``z`` = 89 in float32, 710 in
  float64). The derivative comes from the same ``exp(-|z|)``; it is a
  ``custom_jvp``, so forward mode and second derivatives work.
  """
  return _neg_log_sigmoids(z)[1]


@softplus.defjvp
def _softplus_jvp(primals, tangents):
  (z,), (dz,) = primals, tangents
  decay = _decay(z)
  return _neg_log_sigmoids(z, decay)[1], _sigmoids(z, decay)[0] * dz


def torch_order_operands(x, target, weight):
  """The loss's operands in the dtypes that make JAX round as torch does.

  torch evaluates ``-(t * logsigmoid(x) + (1 - t) * logsigmoid(-x)) * w`` one
  operation at a time, each in the promotion of its operands: the
  log-sigmoids in the input's dtype, ``1 - t`` in the target's, the weight's
  product after the terms are formed. Promoting everything first instead
  moves a float64 loss with a float32 target by about 1e-8, and one with a
  bfloat16 target by about 1e-3. Left in their own dtypes, the operands take
  torch's path through :func:`soft_margin_terms`; integer targets and weights
  become the input's dtype (exact for any count of classes).

  A half-type input is different: torch rounds its every step to the half
  type, where we promise float32 accumulation and one rounding at the end.
  Its operands are all cast to the compute dtype of their promotion, which
  is within the half type's rounding of torch.
  """
  if x.dtype in _HALF_DTYPES:
    dtype = compute_dtype(jnp.result_type(*(a for a in (x, target, weight) if a is not None)))
    return tuple(None if a is None else a.astype(dtype) for a in (x, target, weight))

  def own_dtype(a):
    if a is None or jnp.issubdtype(a.dtype, jnp.floating):
      return a
    return a.astype(x.dtype)

  return x, own_dtype(target), own_dtype(weight)


def multilabel_soft_margin_per_sample(x, target, weight, where=None):
  r"""Per-sample multi-label soft margin loss of torch's ``multilabel_soft_margin_loss``.

  .. math::
    \ell_n = -\frac{1}{C} \sum_{c} w_c \left[ t_{n,c} \log\sigma(x_{n,c})
             + (1 - t_{n,c}) \log\sigma(-x_{n,c}) \right]

  Finite in value and derivative for any finite ``x`` (``log1p(exp(-|x|))``
  never overflows); NaN and inf propagate as in torch's formula. Gradients
  with respect to ``x``, ``target`` and ``weight`` are torch's.

  Args:
    x: logits, shape ``(..., C)``, in the compute dtype.
    target: broadcastable with ``x``; the sum runs over axis ``x.ndim - 1``
      of the broadcast terms (torch's rule), the divisor is ``x``'s ``C``.
    weight: ``None`` or broadcastable to ``x``.
    where: ``None`` or a bool array broadcastable to ``x``: terms where it is
      False are left out of the sum (the divisor stays ``C``).

  Returns:
    Per-sample losses: the broadcast shape without axis ``x.ndim - 1``.
  """
  # torch sums over the input's last axis and divides by its class count, even
  # where a target or weight of higher rank widens or extends the terms.
  num_classes = x.shape[-1]
  class_axis = x.ndim - 1
  shape = jnp.broadcast_shapes(x.shape, jnp.shape(target))
  x, target = jnp.broadcast_to(x, shape), jnp.broadcast_to(target, shape)
  if where is not None:
    # Excluded entries are replaced before the terms too, so that a NaN there
    # cannot reach the gradient as 0 * NaN.
    x, target = jnp.where(where, x, 0), jnp.where(where, target, 0)
  loss = soft_margin_terms(x, target, weight)
  if where is not None:
    loss = jnp.where(where, loss, 0)
  return jnp.sum(loss, axis=class_axis) / num_classes


@dataclasses.dataclass(frozen=True)
class FusedSoftMargin:
  """Chunk rule of the multi-label soft margin loss for :mod:`jaxmargin._fused`.

  The targets are the chunk's label mask; the optional class argument is the
  class weight. The derivatives are those of :func:`soft_margin_terms`'s own
  rule, taken with ``jax.jvp``.
  """

  uses_label_scores = False

  def prepare(self, labels, label_scores, row_args):
    return None

  def chunk(self, context, chunk: Chunk, with_grads):
    x = chunk.scores
    target = chunk.is_label.astype(x.dtype)
    weight = chunk.class_args[0] if chunk.class_args else None

    def terms_of(x):
      return soft_margin_terms(x, target, weight)

    if not with_grads:
      (values,) = row_sums(terms_of(x))
      return ChunkShare(values, ())
    terms, slope = jax.jvp(terms_of, (x,), (jnp.ones_like(x),))
    (values,) = row_sums(terms)
    dclass = () if weight is None else (soft_margin_terms(x, target, None),)
    return ChunkShare(values, (), slope, dclass)

  def finish(self, context, values, sums, with_grads):
    return RowTotals(values, None, ())
