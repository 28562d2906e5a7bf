"""Flax linen modules with the names and arguments of ``torch.nn``'s margin losses.

Each module is a dataclass of torch's constructor arguments whose
``__call__(input, target)`` calls the matching function of
:mod:`jaxmargin.functional`. They hold no variables (a class ``weight`` is a
constant field), so ``init`` gives empty variables and they can be used inside
a linen model or on their own.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxmargin import linen as jm_linen
  >>> loss_fn = jm_linen.MultiLabelMarginLoss()
  >>> x, y = jnp.array([[0.1, 0.2, 0.4, 0.8]]), jnp.array([[3, 0, -1, 1]])
  >>> print(f"{loss_fn.apply({}, x, y):.4f}")
  0.8500
"""

from __future__ import annotations

import jax

try:
  from flax import linen as nn
except ImportError as exc:
  # Flax is an optional extra: say how to install it, not just what is missing
  # (the chained error still shows a Flax that is installed but fails to import).
  raise ImportError(
    "jaxmargin.linen needs Flax (>= 0.11), an optional dependency of jaxmargin: "
    'pip install "jaxmargin[flax]"'
  ) from exc

from jaxmargin import functional
from jaxmargin._linen_embedding import (
  CosineEmbeddingLoss,
  TripletMarginLoss,
  TripletMarginWithDistanceLoss,
)
from jaxmargin._linen_pairwise import (
  HingeEmbeddingLoss,
  MarginRankingLoss,
  SoftMarginLoss,
)
from jaxmargin._modules import (
  check_module_reduction,
  checked_margin,
  checked_soft_weight,
  checked_weight,
  module_reduction,
)
from jaxmargin._reduction import Reduction
from jaxmargin._validation import check_p

__all__: list[str] = [
  "CosineEmbeddingLoss",
  "HingeEmbeddingLoss",
  "MarginRankingLoss",
  "MultiLabelMarginLoss",
  "MultiLabelSoftMarginLoss",
  "MultiMarginLoss",
  "SoftMarginLoss",
  "TripletMarginLoss",
  "TripletMarginWithDistanceLoss",
]


class MultiLabelMarginLoss(nn.Module):
  r"""``torch.nn.MultiLabelMarginLoss``: see :func:`jaxmargin.multilabel_margin_loss`.

  Per sample, with the label list :math:`L` (the target row before its first
  ``-1``) and :math:`C` classes,

  .. math::
    \ell(x, L) = \frac{1}{C} \sum_{j \in L} \sum_{d \notin L}
                 \max(0,\ 1 - x_j + x_d).

  Attributes:
    size_average: deprecated (torch's legacy argument; warns).
    reduce: deprecated (torch's legacy argument; warns).
    reduction: ``'none'``, ``'mean'`` or ``'sum'``, checked when the module is
      built (torch checks it at the first call).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin import linen as jm_linen
    >>> loss_fn = jm_linen.MultiLabelMarginLoss(reduction="sum")
    >>> x, y = jnp.array([[0.1, 0.2, 0.4, 0.8]]), jnp.array([[3, 0, -1, 1]])
    >>> print(f"{loss_fn.apply({}, x, y):.4f}")
    0.8500
  """

  size_average: bool | None = None
  reduce: bool | None = None
  reduction: Reduction = "mean"

  def __post_init__(self):
    # At construction, as the NNX modules do: a bad name fails where it is written.
    check_module_reduction(
      type(self).__name__, self.size_average, self.reduce, self.reduction, soft=False
    )
    super().__post_init__()

  def __call__(self, input: jax.typing.ArrayLike, target: jax.typing.ArrayLike) -> jax.Array:
    """The loss of scores ``input`` against a ``-1``-padded ``target``.

    Args:
      input: scores of shape ``(C,)`` or ``(N, C)``.
      target: integer label indices padded with ``-1``, shaped as ``input``.

    Returns:
      A scalar, or the ``(N,)`` per-sample losses for ``reduction='none'``.
    """
    return functional.multilabel_margin_loss(
      input, target, reduction=module_reduction(self.size_average, self.reduce, self.reduction)
    )


class MultiMarginLoss(nn.Module):
  r"""``torch.nn.MultiMarginLoss``: see :func:`jaxmargin.multi_margin_loss`.

  Per sample, with target class :math:`y` and :math:`C` classes,

  .. math::
    \ell(x, y) = \frac{1}{C} \sum_{d \ne y}
                 w_y \max(0,\ \mathrm{margin} - x_y + x_d)^p .

  Attributes:
    p: 1 or 2.
    margin: the margin (a real number).
    weight: optional ``(C,)`` class weights (a constant field, not a variable).
      Checked when the module is built (1-D, real numbers); its length ``C``
      is checked against the input at the call.
    size_average: deprecated (torch's legacy argument; warns).
    reduce: deprecated (torch's legacy argument; warns).
    reduction: ``'none'``, ``'mean'`` or ``'sum'``, checked when the module is
      built (torch checks it at the first call).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin import linen as jm_linen
    >>> loss_fn = jm_linen.MultiMarginLoss(p=1, margin=1.0)
    >>> x, y = jnp.array([[0.1, 0.2, 0.4, 0.8]]), jnp.array([3])
    >>> print(f"{loss_fn.apply({}, x, y):.4f}")
    0.3250
  """

  p: int = 1
  margin: float = 1.0
  weight: jax.typing.ArrayLike | None = None
  size_average: bool | None = None
  reduce: bool | None = None
  reduction: Reduction = "mean"

  def __post_init__(self):
    name = type(self).__name__
    check_p(name, self.p)
    checked_margin(name, self.margin)
    if self.weight is not None:
      checked_weight(name, self.weight)
    check_module_reduction(name, self.size_average, self.reduce, self.reduction, soft=False)
    super().__post_init__()

  def __call__(self, input: jax.typing.ArrayLike, target: jax.typing.ArrayLike) -> jax.Array:
    """The loss of scores ``input`` against class indices ``target``.

    Args:
      input: scores of shape ``(C,)`` or ``(N, C)``.
      target: integer class indices, one per sample: ``(N,)``, or ``()`` for
        1-D input.

    Returns:
      A scalar, or the ``(N,)`` per-sample losses for ``reduction='none'``.
    """
    return functional.multi_margin_loss(
      input,
      target,
      p=self.p,
      margin=self.margin,
      weight=self.weight,
      reduction=module_reduction(self.size_average, self.reduce, self.reduction),
    )


class MultiLabelSoftMarginLoss(nn.Module):
  r"""``torch.nn.MultiLabelSoftMarginLoss``: see :func:`jaxmargin.multilabel_soft_margin_loss`.

  Per sample, with multi-hot (or soft) targets :math:`t` over :math:`C` classes,

  .. math::
    \ell(x, t) = -\frac{1}{C} \sum_{c} w_c \left[ t_c \log\sigma(x_c)
                 + (1 - t_c) \log\sigma(-x_c) \right].

  Attributes:
    weight: optional class weights broadcastable to the input (usually
      ``(C,)``; a constant field, not a variable). Its dtype is checked when
      the module is built, its shape against the input at the call.
    size_average: deprecated (torch's legacy argument; warns).
    reduce: deprecated (torch's legacy argument; warns).
    reduction: ``'none'``, ``'mean'`` or ``'sum'``, checked when the module is
      built (torch checks it at the first call).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin import linen as jm_linen
    >>> loss_fn = jm_linen.MultiLabelSoftMarginLoss()
    >>> x, t = jnp.array([[0.1, 0.2, 0.4, 0.8]]), jnp.array([[1, 0, 0, 1]])
    >>> print(f"{loss_fn.apply({}, x, t):.4f}")
    0.6817
  """

  weight: jax.typing.ArrayLike | None = None
  size_average: bool | None = None
  reduce: bool | None = None
  reduction: Reduction = "mean"

  def __post_init__(self):
    name = type(self).__name__
    if self.weight is not None:
      checked_soft_weight(name, self.weight)
    check_module_reduction(name, self.size_average, self.reduce, self.reduction, soft=True)
    super().__post_init__()

  def __call__(self, input: jax.typing.ArrayLike, target: jax.typing.ArrayLike) -> jax.Array:
    """The loss of logits ``input`` against multi-hot (or soft) ``target``.

    Args:
      input: logits of shape ``(..., C)``.
      target: labels broadcastable to ``input``.

    Returns:
      A scalar, or the per-sample losses (shape ``input.shape[:-1]``) for
      ``reduction='none'``.
    """
    return functional.multilabel_soft_margin_loss(
      input,
      target,
      weight=self.weight,
      reduction=module_reduction(self.size_average, self.reduce, self.reduction),
    )


def __dir__() -> list[str]:
  # What the module offers: its public API, not the names it imports.
  return sorted(__all__)
