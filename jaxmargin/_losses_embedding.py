"""Optax-style embedding losses: one loss per example, any batch shape, a feature ``axis``.

Thin layers over the kernels of :mod:`jaxmargin._functional_embedding` (and
so over the core, :mod:`jaxmargin._embedding`) with ``reduction='none'``:
followed by ``jnp.mean``, each equals its torch-compatible twin with
``reduction='mean'``.
"""

from __future__ import annotations

import jax

from jaxmargin import _embedding_checks as checks
from jaxmargin import _functional_embedding as fe
from jaxmargin import _validation as v

__all__: list[str] = ["cosine_embedding_loss", "triplet_margin_loss"]


def _feature_axis(fn: str, name: str, array: jax.Array, axis: int) -> tuple[int, ...]:
  """Checks ``axis`` against ``array``; returns its shape with the feature axis last."""
  if array.ndim == 0:
    raise ValueError(f"{fn}: {name} shape () has no feature axis; expected at least 1-D")
  if not -array.ndim <= axis < array.ndim:
    raise ValueError(
      f"{fn}: axis {axis} is out of range for {name} of shape {array.shape}; expected "
      f"-{array.ndim} <= axis < {array.ndim}"
    )
  shape = list(array.shape)
  return (*shape[: axis % array.ndim], *shape[axis % array.ndim + 1 :], shape[axis])


def _feature_last_shapes(fn: str, names, arrays, axis: int) -> list[tuple[int, ...]]:
  return [_feature_axis(fn, name, a, axis) for name, a in zip(names, arrays, strict=True)]


def triplet_margin_loss(
  anchors: jax.typing.ArrayLike,
  positives: jax.typing.ArrayLike,
  negatives: jax.typing.ArrayLike,
  *,
  margin: float | jax.typing.ArrayLike = 1.0,
  p: float = 2,
  eps: float | jax.typing.ArrayLike = 1e-6,
  swap: bool = False,
  axis: int = -1,
) -> jax.Array:
  r"""Triplet margin loss per triplet, torch's ``triplet_margin_loss``.

  With :math:`d(x, y) = \|x - y + \epsilon\|_p` over the feature axis (the
  ``eps`` on every component, magnitudes inside the norm, as torch),

  .. math::
    \ell(a, p, n) = \max\bigl(0,\ \mathrm{margin} + d(a, p) - d(a, n)\bigr),

  and with ``swap``, :math:`d(a, n)` becomes :math:`\min(d(a, n), d(p, n))`.
  Not ``optax.losses.triplet_margin_loss``, which adds ``eps`` once to the
  sum of powers, takes no magnitudes (an odd ``p`` gives negative or NaN
  "distances") and has no swap; see the triplet loss page of the docs.

  Args:
    anchors: embeddings of shape ``(..., D)`` (feature axis ``axis``);
      floating or integer (computed in float32).
    positives: broadcastable with ``anchors`` once each has its feature axis
      last.
    negatives: as ``positives``.
    margin: greater than 0 (torch's rule): a concrete margin at most 0 is a
      ``ValueError``, a traced one fails a ``checkify`` check and gives NaN.
    p: the norm's order, a Python number (static under ``jax.jit``).
    eps: added to each component of the differences.
    swap: use the distance swap (static under ``jax.jit``).
    axis: the feature axis of each input.

  Returns:
    One loss per triplet: the broadcast batch shape, in the inputs' promoted
    floating dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin.losses import triplet_margin_loss
    >>> anchors = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    >>> positives = jnp.array([[0.1, 0.1], [1.1, 1.1]])
    >>> negatives = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> loss = triplet_margin_loss(anchors, positives, negatives)
    >>> print(loss.shape, [round(float(v), 4) for v in loss])
    (2,) [0.1414, 0.1414]
  """
  fn = "triplet_margin_loss"
  names = ("anchors", "positives", "negatives")
  arrays = [
    v.as_real_array(fn, n, a) for n, a in zip(names, (anchors, positives, negatives), strict=True)
  ]
  m = checks.positive_margin(fn, margin)
  p, swap = checks.static_number(fn, "p", p), checks.static_flag(fn, "swap", swap)
  e = v.as_real_scalar(fn, "eps", eps)
  axis = v.check_axis(fn, axis)
  shapes = _feature_last_shapes(fn, names, arrays, axis)
  pairs = [(0, 1), (0, 2), (1, 2)] if swap else [(0, 1), (0, 2)]
  distances = []
  for i, j in pairs:
    shape = checks.broadcast(fn, names[j], shapes[j], names[i], shapes[i])
    checks.check_feature_axis(fn, names[j], shape, p)
    distances.append(shape[:-1])
  checks.broadcast(
    fn, "the negative distances", distances[1], "the positive distances", distances[0]
  )
  return fe.triplet_kernel(*arrays, m, e, p=p, swap=swap, reduction="none", axis=axis)


def cosine_embedding_loss(
  embeddings1: jax.typing.ArrayLike,
  embeddings2: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  margin: float | jax.typing.ArrayLike = 0.0,
  axis: int = -1,
) -> jax.Array:
  r"""Cosine embedding loss per pair, torch's ``cosine_embedding_loss``.

  .. math::
    \ell = \begin{cases} 1 - \cos(x_1, x_2) & y = 1 \\
    \max(0,\ \cos(x_1, x_2) - \mathrm{margin}) & y = -1 \\
    0 & \text{otherwise} \end{cases}, \qquad
    \cos = \frac{\sum x_1 x_2}{\sqrt{(\sum x_1^2 + \epsilon)(\sum x_2^2 + \epsilon)}}

  over the feature axis, with ATen's :math:`\epsilon` = float32(1e-12).

  Args:
    embeddings1: shape ``(..., D)`` (feature axis ``axis``); floating or
      integer (computed in float32).
    embeddings2: broadcastable with ``embeddings1`` once each has its
      feature axis last.
    labels: 1 (similar) or -1 (dissimilar), any real or bool dtype,
      broadcastable with the batch shape; other values give 0.
    margin: the margin for dissimilar pairs (a number or a scalar array).
    axis: the feature axis of both embeddings.

  Returns:
    One loss per pair: the broadcast batch shape, in the embeddings'
    promoted floating dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin.losses import cosine_embedding_loss
    >>> x1 = jnp.array([[1.0, 0.0], [1.0, 1.0]])
    >>> x2 = jnp.array([[1.0, 1.0], [1.0, 0.9]])
    >>> loss = cosine_embedding_loss(x1, x2, jnp.array([1, -1]), margin=0.5)
    >>> print(loss.shape, [round(float(v), 4) for v in loss])
    (2,) [0.2929, 0.4986]
  """
  fn = "cosine_embedding_loss"
  names = ("embeddings1", "embeddings2")
  arrays = [
    v.as_real_array(fn, n, a) for n, a in zip(names, (embeddings1, embeddings2), strict=True)
  ]
  t = checks.cosine_target(fn, labels)
  m = v.as_scalar_margin(fn, margin)
  axis = v.check_axis(fn, axis)
  shapes = _feature_last_shapes(fn, names, arrays, axis)
  shape = checks.broadcast(fn, "embeddings2", shapes[1], "embeddings1", shapes[0])
  checks.broadcast(fn, "labels", t.shape, "the batch", shape[:-1])
  return fe.cosine_kernel(*arrays, t, m, reduction="none", axis=axis)
