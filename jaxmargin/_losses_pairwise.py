"""Optax-style elementwise margin losses: ranking, hinge embedding, binary soft margin.

One loss per element of the broadcast shape of the arrays (as
``optax.hinge_loss``), no reduction, keyword-only hyperparameters; ordinary
NumPy broadcasting, without torch's rule that the arrays have equal numbers of
dimensions. Followed by ``jnp.mean``, each equals its torch-compatible twin with
``reduction='mean'``: both run the core of :mod:`jaxmargin._pairwise`.
Re-exported by :mod:`jaxmargin.losses`.
"""

from __future__ import annotations

import jax

from jaxmargin import _validation as v
from jaxmargin._functional_pairwise import broadcast_shape, label_array
from jaxmargin._pairwise import (
  hinge_embedding_terms,
  margin_ranking_dtype,
  margin_ranking_terms,
  soft_margin_terms,
)


@jax.jit
def _margin_ranking(scores1, scores2, labels, margin):
  fn = "margin_ranking_loss"
  x1 = v.as_real_array(fn, "scores1", scores1)
  x2 = v.as_real_array(fn, "scores2", scores2)
  y = v.as_real_array(fn, "labels", labels)
  broadcast_shape(fn, scores1=x1, scores2=x2, labels=y)
  m = v.as_scalar_margin(fn, margin)
  return margin_ranking_terms(x1, x2, y, m).astype(margin_ranking_dtype(x1, x2, y))


def margin_ranking_loss(
  scores1: jax.typing.ArrayLike,
  scores2: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  margin: float | jax.typing.ArrayLike = 0.0,
) -> jax.Array:
  r"""Margin ranking loss per element: torch's ``margin_ranking_loss`` without reduction.

  .. math::
    \ell(s_1, s_2, y) = \max(0,\ -y\,(s_1 - s_2) + \mathrm{margin})

  ``labels`` says which score should be higher: 1 for ``scores1``, -1 for
  ``scores2``. Gradients reach both scores, the labels and the margin (torch's
  rule at the kink: the whole gradient passes where the argument is 0).

  Args:
    scores1: scores of any shape and real dtype (integers too; not bool).
    scores2: scores broadcastable with ``scores1``.
    labels: labels broadcastable with both, any real dtype.
    margin: the margin (a number or a scalar array).

  Returns:
    Losses of the broadcast shape, in the promoted dtype of the three arrays
    (float32 if all are integers).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin.losses import margin_ranking_loss
    >>> s1, s2 = jnp.array([0.8, 0.1, 0.5]), jnp.array([0.2, 0.4, 0.5])
    >>> loss = margin_ranking_loss(s1, s2, jnp.array([1, 1, -1]), margin=0.1)
    >>> print([round(float(v), 4) for v in loss])
    [0.0, 0.4, 0.1]
  """
  fn = "margin_ranking_loss"
  arrays = v.array_args(fn, scores1=scores1, scores2=scores2, labels=labels, margin=margin)
  return _margin_ranking(*arrays)


@jax.jit
def _hinge_embedding(distances, labels, margin):
  fn = "hinge_embedding_loss"
  x = v.as_float_array(fn, "distances", distances)
  y = label_array(fn, "labels", labels)
  broadcast_shape(fn, distances=x, labels=y)
  m = v.as_scalar_margin(fn, margin)
  return hinge_embedding_terms(x, y, m).astype(x.dtype)


def hinge_embedding_loss(
  distances: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  *,
  margin: float | jax.typing.ArrayLike = 1.0,
) -> jax.Array:
  r"""Hinge embedding loss per element: torch's ``hinge_embedding_loss`` without reduction.

  .. math::
    \ell(d, y) = [y \ne 1]\,\max(0,\ \mathrm{margin} - d) + [y \ne -1]\,d

  A similar pair (label 1) is charged its distance, a dissimilar one (-1)
  what its distance falls short of the margin; any other label gets both
  terms, as in torch.

  Args:
    distances: floating values (usually distances between two embeddings).
    labels: 1 or -1, broadcastable with ``distances``; any real or bool
      dtype; not differentiated.
    margin: the margin (a number or a scalar array); differentiable.

  Returns:
    Losses of the broadcast shape, in the dtype of ``distances``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin.losses import hinge_embedding_loss
    >>> loss = hinge_embedding_loss(jnp.array([0.3, 0.3, 1.5]), jnp.array([1, -1, -1]))
    >>> print([round(float(v), 4) for v in loss])
    [0.3, 0.7, 0.0]
  """
  fn = "hinge_embedding_loss"
  distances, labels, margin = v.array_args(fn, distances=distances, labels=labels, margin=margin)
  return _hinge_embedding(distances, labels, margin)


@jax.jit
def _soft_margin(logits, labels):
  fn = "soft_margin_loss"
  x = v.as_float_array(fn, "logits", logits)
  y = label_array(fn, "labels", labels)
  broadcast_shape(fn, logits=x, labels=y)
  return soft_margin_terms(x, y).astype(x.dtype)


def soft_margin_loss(logits: jax.typing.ArrayLike, labels: jax.typing.ArrayLike) -> jax.Array:
  r"""Two-class logistic loss per element: torch's ``soft_margin_loss`` without reduction.

  .. math::
    \ell(x, y) = \log\left(1 + e^{-y x}\right)

  For labels in {-1, 1} this is ``optax.sigmoid_binary_cross_entropy`` with
  labels :math:`(1 + y) / 2`. Finite where torch's formula overflows (see
  :func:`jaxmargin.soft_margin_loss`); gradients reach the logits and the
  labels.

  Args:
    logits: floating logits of any shape.
    labels: 1 or -1 (soft labels work too), broadcastable with ``logits``;
      any real or bool dtype.

  Returns:
    Losses of the broadcast shape, in the dtype of ``logits``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin.losses import soft_margin_loss
    >>> loss = soft_margin_loss(jnp.array([2.0, -1.0, 0.5]), jnp.array([1, -1, -1]))
    >>> print([round(float(v), 4) for v in loss])
    [0.1269, 0.3133, 0.9741]
  """
  logits, labels = v.array_args("soft_margin_loss", logits=logits, labels=labels)
  return _soft_margin(logits, labels)
