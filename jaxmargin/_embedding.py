"""Core of the embedding losses: torch's pairwise distance, cosine embedding and triplet losses.

Every function here is the arithmetic of torch 2.13, in torch's order of
operations, with torch's derivatives where autodiff would give others:

- :func:`vector_norm`: ATen's ``norm_backward`` (``x / ||x||`` with 0 at a
  zero norm, the sign with 0 at 0 and at NaN, the gradient of an infinite
  norm split evenly among ties);
- ``hinge`` (from :mod:`jaxmargin._pairwise`): ``clamp_min(z, 0)``, whose
  gradient passes in full at ``z == 0`` (``jnp.maximum`` would give 1/2) and
  is 0 at a NaN ``z``.

Both are ``custom_jvp``: forward mode (``jvp``, ``jacfwd``, ``hessian``)
works, and second derivatives are those of torch's backward formulas, which
torch's double backward also differentiates.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

# torch's clamp_min(z, 0) with its gradient (full at z == 0, none at NaN): one
# rule for every margin loss, kept with the elementwise losses.
from jaxmargin._pairwise import hinge

# ATen's cosine_embedding_loss adds ``constexpr float EPSILON = 1e-12`` to the
# squared norms: the float nearest 1e-12, also in float64.
COSINE_EPS = float(np.float32(1e-12))


def _sign(x):
  """torch's ``sgn`` of real numbers: 0 at 0 and at NaN (``jnp.sign`` gives NaN there)."""
  return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


def _norm(x, p, axis):
  if p == 0:
    # The count of nonzero entries (NaN counts), as torch's p = 0 "norm".
    return jnp.sum(x != 0, axis=axis, dtype=jnp.int32).astype(x.dtype)
  magnitude = jnp.abs(x)
  if p == math.inf:
    return jnp.max(magnitude, axis=axis)
  if p == -math.inf:
    return jnp.min(magnitude, axis=axis)
  if p == 1:
    return jnp.sum(magnitude, axis=axis)
  if p == 2:
    return jnp.sqrt(jnp.sum(x * x, axis=axis))
  return jnp.sum(magnitude**p, axis=axis) ** (1 / p)


def _norm_slope(x, norm, p, axis):
  """The derivative of the norm in ``x``: ATen's ``norm_backward`` with a unit cotangent.

  ``norm`` has the reduced axis kept. ``None`` for ``p = 0`` (no gradient).
  """
  zero = jnp.zeros((), x.dtype)
  if p == 0:
    return None
  if p == 1:
    return _sign(x)
  if p == 2:
    return jnp.where(norm == 0, zero, x / norm)
  magnitude = jnp.abs(x)
  if math.isinf(p):
    # Split evenly among the entries that reach the norm (or are NaN).
    mask = (magnitude == norm) | jnp.isnan(magnitude)
    count = jnp.sum(mask, axis=axis, keepdims=True, dtype=jnp.int32).astype(x.dtype)
    return _sign(x) * (mask.astype(x.dtype) / count)
  if p < 1:
    scaled = _sign(x) * jnp.where(x == 0, zero, magnitude ** (p - 1))
    return scaled * norm ** (1 - p)
  # 1 / norm^(p-1), 0 at a zero norm. The inner where keeps a second
  # derivative there finite, as torch's (which masks it in the norm's own
  # backward): 0 for an integer p > 2, not NaN.
  at_zero = norm == 0
  scale = jnp.where(at_zero, zero, 1 / jnp.where(at_zero, 1, norm) ** (p - 1))
  if p < 2:
    return _sign(x) * magnitude ** (p - 1) * scale
  return x * magnitude ** (p - 2) * scale


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def vector_norm(x: jax.Array, p: float, axis: int) -> jax.Array:
  r"""torch's ``p``-norm of ``x`` over ``axis``, with torch's derivative.

  .. math::
    \|x\|_p = \Bigl(\sum_i |x_i|^p\Bigr)^{1/p}

  with torch's special cases: ``p = 0`` counts the nonzero entries (no
  gradient), ``p = inf`` / ``-inf`` take the largest / smallest magnitude,
  ``p = 1`` sums magnitudes, ``p = 2`` is ``sqrt(sum(x * x))``; a negative or
  fractional ``p`` uses the general formula (magnitudes inside).

  Args:
    x: a floating array.
    p: the order, a Python number (it picks the program).
    axis: the reduced axis, a Python int.

  Returns:
    ``x``'s shape without ``axis``.
  """
  return _norm(x, p, axis)


@vector_norm.defjvp
def _vector_norm_jvp(p, axis, primals, tangents):
  (x,), (dx,) = primals, tangents
  # The norm through this rule again, as torch's double backward takes the
  # norm's own backward: its mask at a zero norm stops what a second
  # derivative sends back through the norm (0 for an integer p at 0, not NaN).
  norm = vector_norm(x, p, axis)
  slope = _norm_slope(x, jnp.expand_dims(norm, axis), p, axis)
  if slope is None:
    return norm, jnp.zeros_like(norm)
  return norm, jnp.sum(slope * dx, axis=axis)


def pairwise_distance(
  x1: jax.Array, x2: jax.Array, eps: jax.Array, p: float, axis: int, keepdims: bool = False
) -> jax.Array:
  r"""torch's ``pairwise_distance``: :math:`\|x_1 - x_2 + \epsilon\|_p` over ``axis``.

  ``eps`` is added to every component of the difference (not to the norm),
  so equal inputs are :math:`\epsilon D^{1/p}` apart, not 0. ``x1`` and
  ``x2`` broadcast; ``axis`` indexes their broadcast shape.
  """
  difference = x1 - x2 + eps
  if difference.ndim == 0:
    # torch takes the norm of a 0-D difference over its "last dimension" too.
    return vector_norm(difference[None], p, 0)
  distance = vector_norm(difference, p, axis)
  return jnp.expand_dims(distance, axis) if keepdims else distance


def triplet_margin_terms(
  anchor: jax.Array,
  positive: jax.Array,
  negative: jax.Array,
  margin: jax.Array,
  distance: Callable[[jax.Array, jax.Array], jax.Array],
  swap: bool,
) -> jax.Array:
  r"""Per-triplet hinge of torch's triplet margin losses.

  .. math::
    \ell = \max\bigl(0,\ \mathrm{margin} + d(a, p) - d_-\bigr), \quad
    d_- = \min\bigl(d(a, n),\ d(p, n)\bigr) \text{ with swap, else } d(a, n)

  in torch's order (``margin + d(a, p)`` first); ``margin`` takes the
  positive distance's dtype, as a Python number does in torch.
  """
  positive_distance = distance(anchor, positive)
  negative_distance = distance(anchor, negative)
  if swap:
    # torch.minimum's gradient is jnp.minimum's: half to each side at a tie.
    # (Where either is NaN torch passes it to both, JAX to neither; the hinge
    # of a NaN passes nothing back, so the difference cannot be seen.)
    negative_distance = jnp.minimum(negative_distance, distance(positive, negative))
  margin = jnp.asarray(margin)
  if jnp.issubdtype(jnp.result_type(positive_distance), jnp.floating):
    margin = margin.astype(jnp.result_type(positive_distance))
  return hinge(margin + positive_distance - negative_distance)


def cosine_similarity(x1: jax.Array, x2: jax.Array, axis: int) -> jax.Array:
  r"""ATen's cosine of ``cosine_embedding_loss`` over ``axis`` (not ``F.cosine_similarity``).

  .. math::
    \cos = \frac{\sum x_1 x_2}{\sqrt{(\sum x_1^2 + \epsilon)(\sum x_2^2 + \epsilon)}}

  with :data:`COSINE_EPS`. Each squared norm is summed over its own input
  (an input of one feature is not broadcast to the other's first) and in its
  own dtype, as torch does.
  """
  product = jnp.sum(x1 * x2, axis=axis)
  squares1 = jnp.sum(x1 * x1, axis=axis) + COSINE_EPS
  squares2 = jnp.sum(x2 * x2, axis=axis) + COSINE_EPS
  return product / jnp.sqrt(squares1 * squares2)


def cosine_embedding_terms(
  x1: jax.Array, x2: jax.Array, target: jax.Array, margin: jax.Array, axis: int
) -> jax.Array:
  r"""Per-pair cosine embedding loss of torch.

  .. math::
    \ell = \begin{cases} 1 - \cos(x_1, x_2) & t = 1 \\
    \max(0,\ \cos(x_1, x_2) - \mathrm{margin}) & t = -1 \\
    0 & \text{otherwise} \end{cases}

  Returns the broadcast shape of the cosines and ``target``.
  """
  cos = cosine_similarity(x1, x2, axis)
  zero = jnp.zeros((), cos.dtype)
  similar = jnp.where(target == 1, 1 - cos, zero)
  dissimilar = jnp.where(target == -1, hinge(cos - jnp.asarray(margin).astype(cos.dtype)), zero)
  return similar + dissimilar
