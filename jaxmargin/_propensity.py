"""Propensity weights and the propensity-scored precision of extreme multi-label classification.

Jain, Prabhu and Varma (KDD 2016, "Extreme Multi-label Loss Functions for
Recommendation, Tagging, Ranking & Other Missing Label Applications") model
the chance that a relevant label is observed with a per-label *propensity*
:math:`p_l`, fitted to the label frequencies, and score predictions with
``1/p_l`` so that rare (tail) labels count more. The same weights serve as
class weights of a training loss (``class_weights=`` of
:func:`jaxmargin.losses.multilabel_margin_loss`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxmargin import _validation as v


def _scalar(fn: str, name: str, value) -> jax.Array:
  array = v.as_real_array(fn, name, v.as_array(fn, name, value, "a real number"))
  if array.ndim != 0:
    raise ValueError(f"{fn}: {name} shape {array.shape} is not a scalar; expected ()")
  return array


def inverse_propensity(
  label_counts: jax.typing.ArrayLike,
  num_examples: int | jax.typing.ArrayLike,
  *,
  a: float | jax.typing.ArrayLike = 0.55,
  b: float | jax.typing.ArrayLike = 1.5,
) -> jax.Array:
  r"""Inverse label propensities :math:`1/p_l` of Jain, Prabhu and Varma (KDD 2016).

  For a label seen :math:`N_l` times among :math:`N` training examples,

  .. math::
    p_l = \frac{1}{1 + c\, e^{-a \log(N_l + b)}}, \qquad c = (\log N - 1)(b + 1)^a,

  so :math:`1/p_l = 1 + c\,(N_l + b)^{-a}`: near 1 for head labels,
  :math:`\log N` for a label seen once, and :math:`1 + c\, b^{-a}` for one
  never seen. The paper fits :math:`a`
  and :math:`b` per data set: :math:`a = 0.5, b = 0.4` for Wikipedia-LSHTC,
  :math:`a = 0.6, b = 2.6` for Amazon, and :math:`a = 0.55, b = 1.5` (the
  defaults) for the others. This is pyxclib's ``compute_inv_propesity``
  (``xclib.evaluation.xc_metrics``), from the counts instead of the label
  matrix.

  Args:
    label_counts: how many training examples carry each label, any shape
      (usually ``(C,)``: ``labels.sum(axis=0)`` of multi-hot labels).
    num_examples: :math:`N`, the number of training examples (scalar).
    a: the exponent :math:`a` (scalar).
    b: the offset :math:`b` (scalar).

  Returns:
    The weights :math:`1/p_l`, of the shape of ``label_counts``, in its
    floating dtype (JAX's default float for integer counts).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin.losses import inverse_propensity
    >>> weights = inverse_propensity(jnp.array([1000, 10, 1, 0]), 2000)
    >>> print([f"{float(w):.4f}" for w in weights])
    ['1.2444', '3.8516', '7.6009', '9.7422']
  """
  fn = "inverse_propensity"
  counts = v.as_real_array(fn, "label_counts", v.as_array(fn, "label_counts", label_counts))
  num_examples = _scalar(fn, "num_examples", num_examples)
  a, b = _scalar(fn, "a", a), _scalar(fn, "b", b)
  dtype = counts.dtype if jnp.issubdtype(counts.dtype, jnp.floating) else jnp.result_type(float)
  counts, num_examples, a, b = (x.astype(dtype) for x in (counts, num_examples, a, b))
  c = (jnp.log(num_examples) - 1) * (b + 1) ** a
  return 1 + c * jnp.exp(-a * jnp.log(counts + b))


@functools.partial(jax.jit, static_argnames=("k",))
def _psp_at_k(scores, labels, inv_propensity, *, k):
  fn = "propensity_scored_precision_at_k"
  x = v.as_float_array(fn, "scores", scores)
  if x.ndim == 0:
    raise ValueError(f"{fn}: scores shape () has no class axis; expected (..., C)")
  num_classes = x.shape[-1]
  if isinstance(k, bool) or not isinstance(k, int):
    raise TypeError(f"{fn}: k is {k!r}; expected a static int in [1, {num_classes}]")
  if not 1 <= k <= num_classes:
    raise ValueError(f"{fn}: k is {k}; expected 1 <= k <= C = {num_classes}, the classes of scores")
  if labels.shape != x.shape:
    raise ValueError(
      f"{fn}: labels shape {labels.shape} does not match scores shape {x.shape}; "
      f"expected {x.shape} (multi-hot)"
    )
  q = v.as_real_array(fn, "inv_propensity", inv_propensity)
  if q.shape != (num_classes,):
    raise ValueError(
      f"{fn}: inv_propensity shape {q.shape} does not match the {num_classes} classes "
      f"of scores; expected ({num_classes},)"
    )
  dtype = v.compute_dtype(jnp.result_type(x.dtype, q.dtype))
  _, top = lax.top_k(x, k)
  gained = jnp.where(labels != 0, q.astype(dtype), 0)
  hits = jnp.take_along_axis(gained, top, axis=-1)
  return (jnp.sum(hits, axis=-1) / k).astype(jnp.result_type(x.dtype, q.dtype))


def propensity_scored_precision_at_k(
  scores: jax.typing.ArrayLike,
  labels: jax.typing.ArrayLike,
  inv_propensity: jax.typing.ArrayLike,
  *,
  k: int,
) -> jax.Array:
  r"""Propensity-scored precision at ``k`` (PSP@k) of each example, unnormalized.

  With :math:`\mathrm{top}_k(x)` the ``k`` classes of highest score
  (:func:`jax.lax.top_k`: ties to the lower class), labels :math:`y` and
  inverse propensities :math:`q_l = 1/p_l` (:func:`inverse_propensity`),

  .. math::
    \mathrm{PSP@}k(x, y) = \frac{1}{k} \sum_{l \in \mathrm{top}_k(x)} y_l\, q_l,

  Jain, Prabhu and Varma's definition (KDD 2016), as napkinxc's
  ``psprecision_at_k(normalize=False)`` at ``k``. Its mean over a data set is
  the raw PSP@k. The figures XMC papers report (pyxclib's ``psprecision``,
  napkinxc's default) are normalized: the mean PSP@k divided by the mean
  PSP@k of the best possible ranking, which ranks each example's labels by
  :math:`q_l`; that is, ``jnp.mean(psp(scores, y, q, k=k)) /
  jnp.mean(psp(y * q, y, q, k=k))``.

  Args:
    scores: floating array ``(..., C)``, classes on the last axis.
    labels: multi-hot labels of the same shape (nonzero: a label).
    inv_propensity: ``(C,)`` inverse propensities :math:`q_l`.
    k: how many top classes (static), ``1 <= k <= C``.

  Returns:
    ``(...)`` PSP@k of each example, in the result dtype of ``scores`` and
    ``inv_propensity``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin.losses import propensity_scored_precision_at_k
    >>> scores = jnp.array([[0.9, 0.1, 0.8, 0.3]])
    >>> labels = jnp.array([[1, 0, 0, 1]])
    >>> q = jnp.array([1.5, 2.0, 3.0, 4.0])
    >>> psp = propensity_scored_precision_at_k(scores, labels, q, k=2)
    >>> print(f"{float(psp[0]):.4f}")
    0.7500
  """
  fn = "propensity_scored_precision_at_k"
  scores, labels, inv_propensity = v.array_args(
    fn, scores=scores, labels=labels, inv_propensity=inv_propensity
  )
  return _psp_at_k(scores, labels, inv_propensity, k=k)
