"""Flax linen modules of torch's cosine embedding and triplet margin losses.

Re-exported by :mod:`jaxmargin.linen` (which says how to install Flax); each
module is a dataclass of torch's constructor arguments, checked when it is
built, whose ``__call__`` calls the matching function of
:mod:`jaxmargin.functional`. They hold no variables.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import linen as nn

from jaxmargin import functional
from jaxmargin._embedding_checks import distance_module_settings, triplet_module_settings
from jaxmargin._modules import check_module_reduction, checked_margin, module_reduction
from jaxmargin._reduction import Reduction


class CosineEmbeddingLoss(nn.Module):
  r"""``torch.nn.CosineEmbeddingLoss``: see :func:`jaxmargin.cosine_embedding_loss`.

  Per pair, with target :math:`y` (1: similar, -1: dissimilar),

  .. math::
    \ell = \begin{cases} 1 - \cos(x_1, x_2) & y = 1 \\
    \max(0,\ \cos(x_1, x_2) - \mathrm{margin}) & y = -1 \end{cases}

  Attributes:
    margin: the margin for dissimilar pairs (a real number).
    size_average: deprecated (torch's legacy argument; warns).
    reduce: deprecated (torch's legacy argument; warns).
    reduction: ``'none'``, ``'mean'`` or ``'sum'``, checked when the module is
      built (torch checks it at the first call).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin import linen as jm_linen
    >>> loss_fn = jm_linen.CosineEmbeddingLoss(margin=0.5)
    >>> x1 = jnp.array([[1.0, 0.0], [1.0, 1.0]])
    >>> x2 = jnp.array([[1.0, 1.0], [1.0, 0.9]])
    >>> print(f"{loss_fn.apply({}, x1, x2, jnp.array([1, -1])):.4f}")
    0.3958
  """

  margin: float = 0.0
  size_average: bool | None = None
  reduce: bool | None = None
  reduction: Reduction = "mean"

  def __post_init__(self):
    name = type(self).__name__
    checked_margin(name, self.margin)
    check_module_reduction(name, self.size_average, self.reduce, self.reduction, soft=False)
    super().__post_init__()

  def __call__(
    self,
    input1: jax.typing.ArrayLike,
    input2: jax.typing.ArrayLike,
    target: jax.typing.ArrayLike,
  ) -> jax.Array:
    """The loss of the pairs ``(input1, input2)`` labelled by ``target``.

    Args:
      input1: embeddings ``(N, D)``, or ``(D,)`` for one pair.
      input2: as ``input1`` (they broadcast).
      target: 1 or -1 per pair: ``(N,)``, or ``()`` for one pair.

    Returns:
      A scalar, or the ``(N,)`` per-pair losses for ``reduction='none'``.
    """
    return functional.cosine_embedding_loss(
      input1,
      input2,
      target,
      margin=self.margin,
      reduction=module_reduction(self.size_average, self.reduce, self.reduction),
    )


class TripletMarginLoss(nn.Module):
  r"""``torch.nn.TripletMarginLoss``: see :func:`jaxmargin.triplet_margin_loss`.

  Per triplet, with :math:`d(x, y) = \|x - y + \epsilon\|_p`,

  .. math::
    \ell(a, p, n) = \max\bigl(0,\ \mathrm{margin} + d(a, p) - d(a, n)\bigr).

  Attributes:
    margin: greater than 0, checked when the module is built (as torch).
    p: the norm's order (a real number).
    eps: added to each component of the differences.
    swap: use the distance swap, :math:`\min(d(a, n), d(p, n))`.
    size_average: deprecated (torch's legacy argument; warns).
    reduce: deprecated (torch's legacy argument; warns).
    reduction: ``'none'``, ``'mean'`` or ``'sum'``, checked when the module is
      built (torch checks it at the first call).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin import linen as jm_linen
    >>> loss_fn = jm_linen.TripletMarginLoss(margin=1.0, reduction="sum")
    >>> anchor = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    >>> positive = jnp.array([[0.1, 0.1], [1.1, 1.1]])
    >>> negative = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> print(f"{loss_fn.apply({}, anchor, positive, negative):.4f}")
    0.2828
  """

  margin: float = 1.0
  p: float = 2.0
  eps: float = 1e-6
  swap: bool = False
  size_average: bool | None = None
  reduce: bool | None = None
  reduction: Reduction = "mean"

  def __post_init__(self):
    name = type(self).__name__
    check_module_reduction(name, self.size_average, self.reduce, self.reduction, soft=False)
    triplet_module_settings(name, self.margin, self.p, self.eps, self.swap)
    super().__post_init__()

  def __call__(
    self,
    anchor: jax.typing.ArrayLike,
    positive: jax.typing.ArrayLike,
    negative: jax.typing.ArrayLike,
  ) -> jax.Array:
    """The loss of the triplets ``(anchor, positive, negative)``.

    Args:
      anchor: embeddings ``(N, D)``, or ``(D,)`` for one triplet.
      positive: as many dimensions as ``anchor`` (they broadcast).
      negative: as many dimensions as ``anchor`` (they broadcast).

    Returns:
      A scalar, or the per-triplet losses for ``reduction='none'``.
    """
    return functional.triplet_margin_loss(
      anchor,
      positive,
      negative,
      margin=self.margin,
      p=self.p,
      eps=self.eps,
      swap=self.swap,
      reduction=module_reduction(self.size_average, self.reduce, self.reduction),
    )


class TripletMarginWithDistanceLoss(nn.Module):
  r"""``torch.nn.TripletMarginWithDistanceLoss``.

  See :func:`jaxmargin.triplet_margin_with_distance_loss`.

  Per triplet, with :math:`d` = ``distance_function`` (default
  :func:`jaxmargin.pairwise_distance`),

  .. math::
    \ell(a, p, n) = \max\bigl(0,\ \mathrm{margin} + d(a, p) - d(a, n)\bigr).

  Attributes:
    distance_function: a JAX callable ``(x, y) -> distances``, or ``None``.
    margin: greater than 0, checked when the module is built (as torch).
    swap: use the distance swap, :math:`\min(d(a, n), d(p, n))`.
    reduction: ``'none'``, ``'mean'`` or ``'sum'`` (not ``'elementwise_mean'``),
      checked when the module is built.

  Example:
    >>> import jax.numpy as jnp
    >>> import jaxmargin
    >>> from jaxmargin import linen as jm_linen
    >>> def manhattan(x, y):
    ...   return jaxmargin.pairwise_distance(x, y, p=1)
    >>> loss_fn = jm_linen.TripletMarginWithDistanceLoss(distance_function=manhattan)
    >>> anchor = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    >>> positive = jnp.array([[0.1, 0.1], [1.1, 1.1]])
    >>> negative = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> print(f"{loss_fn.apply({}, anchor, positive, negative):.4f}")
    0.2000
  """

  distance_function: Callable[[jax.Array, jax.Array], jax.Array] | None = None
  margin: float = 1.0
  swap: bool = False
  reduction: Reduction = "mean"

  def __post_init__(self):
    distance_module_settings(
      type(self).__name__, self.distance_function, self.margin, self.swap, self.reduction
    )
    super().__post_init__()

  def __call__(
    self,
    anchor: jax.typing.ArrayLike,
    positive: jax.typing.ArrayLike,
    negative: jax.typing.ArrayLike,
  ) -> jax.Array:
    """The loss of the triplets ``(anchor, positive, negative)``.

    Args:
      anchor: embeddings of any rank.
      positive: as many dimensions as ``anchor``.
      negative: as many dimensions as ``anchor``.

    Returns:
      A scalar, or the per-triplet losses for ``reduction='none'``.
    """
    return functional.triplet_margin_with_distance_loss(
      anchor,
      positive,
      negative,
      distance_function=self.distance_function,
      margin=self.margin,
      swap=self.swap,
      reduction=self.reduction,
    )
