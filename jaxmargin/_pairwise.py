"""Core of the elementwise margin losses: margin ranking, hinge embedding, binary soft margin.

Each function returns the loss per element of the broadcast shape of its
operands, in the compute dtype (float32 for half types), following torch's
order of operations, so that every API rounds as torch does. The output dtype
is torch's, from :func:`margin_ranking_dtype` or the input's dtype; the callers
reduce and cast.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmargin._soft_margin import softplus
from jaxmargin._validation import compute_dtype


@jax.custom_jvp
def hinge(z):
  r"""torch's ``clamp_min(z, 0)``: :math:`\max(z, 0)`, NaN kept as NaN.

  The derivative is torch's: 1 where ``z >= 0`` (the whole gradient at the
  kink ``z == 0``, where autodiff through ``jnp.maximum`` would pass half of
  it), 0 where ``z < 0`` or ``z`` is NaN. A ``custom_jvp``, so forward mode
  and second derivatives work (the second derivative is 0).
  """
  return _clamp_min_zero(z)


def _clamp_min_zero(z):
  # A select rather than jnp.maximum(z, 0): the same values (NaN stays NaN),
  # but XLA:CPU fuses it into the reduction of the loss, where maximum's
  # broadcast zero gets written out as an array of its own (about a fifth slower
  # value_and_grad of margin_ranking_loss at 10^6 elements).
  return jnp.where(z < 0, 0, z)


@hinge.defjvp
def _hinge_jvp(primals, tangents):
  (z,), (dz,) = primals, tangents
  return _clamp_min_zero(z), jnp.where(z >= 0, dz, jnp.zeros_like(dz))


def _working(a: jax.Array) -> jax.Array:
  """A floating operand in its compute dtype (half types in float32); others unchanged."""
  if jnp.issubdtype(a.dtype, jnp.floating):
    return a.astype(compute_dtype(a.dtype))
  return a


def margin_ranking_dtype(input1: jax.Array, input2: jax.Array, target: jax.Array) -> jnp.dtype:
  """torch's output dtype: the promotion of the three, float32 if all are integers.

  torch adds the margin, a Python float, to an integer product: that gives its
  default dtype, float32.
  """
  dtype = jnp.result_type(input1, input2, target)
  return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.dtype(jnp.float32)


def margin_ranking_terms(
  input1: jax.Array, input2: jax.Array, target: jax.Array, margin: jax.Array
) -> jax.Array:
  r"""Elementwise :math:`\max(0,\ -y (x_1 - x_2) + \mathrm{margin})`: torch's margin ranking loss.

  In torch's order: ``-target`` in the target's own dtype (an unsigned target
  wraps, ``-uint8(1) == 255``, as in torch), times ``input1 - input2`` in
  theirs, then the margin. Integer operands stay integers until the margin
  makes the sum floating (float32, as in torch). Gradients reach all three
  arrays where they are floating, and the margin: ``-y`` for ``input1``,
  ``y`` for ``input2``, ``-(x_1 - x_2)`` for the target, 1 for the margin,
  where the hinge is active (its argument ``>= 0``).

  Args:
    input1: scores, any real dtype.
    input2: scores broadcastable with ``input1``.
    target: labels (``1``: ``input1`` should rank higher, ``-1``: lower),
      broadcastable with both.
    margin: a real scalar.

  Returns:
    The broadcast shape, in the compute dtype of :func:`margin_ranking_dtype`.
  """
  product = -_working(target) * (_working(input1) - _working(input2))
  if not jnp.issubdtype(product.dtype, jnp.floating):
    product = product.astype(jnp.float32)
  return hinge(product + margin.astype(product.dtype))


def hinge_embedding_terms(input: jax.Array, target: jax.Array, margin: jax.Array) -> jax.Array:
  r"""Elementwise hinge embedding loss, torch's ``hinge_embedding_loss``.

  .. math::
    \ell = [y \ne 1] \max(0,\ \mathrm{margin} - x) + [y \ne -1]\, x

  A target of 1 keeps ``x``, -1 the hinge; any other value (0, 2, NaN) both,
  as in torch. The target is compared in its own dtype (a uint8 255 is -1
  there, as in torch) and gets no gradient.

  Args:
    input: floating values (usually distances).
    target: labels broadcastable with ``input``, any real or bool dtype.
    margin: a real scalar.

  Returns:
    The broadcast shape, in the input's compute dtype.
  """
  x = _working(input)
  margin_term = hinge(margin.astype(x.dtype) - x)
  # torch's where(y != 1, hinge, 0) + where(y != -1, x, 0) as one select per
  # element (the same values): XLA:CPU then writes one array of terms for the
  # reduction instead of two (a quarter faster value_and_grad at 10^6 elements).
  return jnp.where(target == 1, x, jnp.where(target == -1, margin_term, margin_term + x))


def soft_margin_terms(input: jax.Array, target: jax.Array) -> jax.Array:
  r"""Elementwise :math:`\log(1 + e^{-y x})`, torch's ``soft_margin_loss``, without overflow.

  ``-x * y`` is formed as torch forms it (in the promotion of the two, then
  rounded to the input's dtype), then :func:`jaxmargin._soft_margin.softplus`
  of it: finite where torch's ``log1p(exp(-y x))`` overflows to ``inf`` (and
  its gradient to NaN), and equal elsewhere. Differentiable in both: the
  target gets :math:`-x\,\sigma(-y x)`, where torch refuses to differentiate.

  Args:
    input: floating logits.
    target: labels (usually 1 or -1), any real or bool dtype, broadcastable
      to ``input``.

  Returns:
    The broadcast shape, in the input's compute dtype.
  """
  exponent = (-input * target).astype(input.dtype)
  return softplus(_working(exponent))
