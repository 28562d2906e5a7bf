"""Flax NNX modules with the names and arguments of ``torch.nn``'s margin losses.

Each module stores its torch-style configuration and calls the matching
function of :mod:`jaxmargin.functional`. A class ``weight`` is held as
:class:`LossWeight` state: it is saved and restored with ``nnx.state`` /
``nnx.update`` like any other state, but it is not an ``nnx.Param``, so an
``nnx.Optimizer(model, tx, wrt=nnx.Param)`` never updates it.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxmargin import nnx as jm_nnx
  >>> loss_fn = jm_nnx.MultiMarginLoss(margin=1.0)
  >>> print(f"{loss_fn(jnp.array([[0.1, 0.2, 0.4, 0.8]]), jnp.array([3])):.4f}")
  0.3250
"""

from __future__ import annotations

import jax

try:
  from flax import nnx
except ImportError as exc:
  # Flax is an optional extra: say how to install it, not just what is missing
  # (the chained error still shows a Flax that is installed but fails to import).
  raise ImportError(
    "jaxmargin.nnx needs Flax (>= 0.11), an optional dependency of jaxmargin: "
    'pip install "jaxmargin[flax]"'
  ) from exc

from jaxmargin import functional
from jaxmargin._modules import (
  check_module_reduction,
  checked_margin,
  checked_soft_weight,
  checked_weight,
  module_reduction,
)
from jaxmargin._nnx_embedding import (
  CosineEmbeddingLoss,
  TripletMarginLoss,
  TripletMarginWithDistanceLoss,
)
from jaxmargin._nnx_pairwise import (
  HingeEmbeddingLoss,
  MarginRankingLoss,
  SoftMarginLoss,
)
from jaxmargin._reduction import Reduction
from jaxmargin._validation import check_p

__all__: list[str] = [
  "CosineEmbeddingLoss",
  "HingeEmbeddingLoss",
  "LossWeight",
  "MarginRankingLoss",
  "MultiLabelMarginLoss",
  "MultiLabelSoftMarginLoss",
  "MultiMarginLoss",
  "SoftMarginLoss",
  "TripletMarginLoss",
  "TripletMarginWithDistanceLoss",
]


class LossWeight(nnx.Variable):
  """Constant per-class weights of a loss: module state, not a trainable ``Param``.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from jaxmargin import nnx as jm_nnx
    >>> loss_fn = jm_nnx.MultiMarginLoss(weight=jnp.array([1.0, 2.0, 1.0]))
    >>> print(type(loss_fn.weight).__name__, loss_fn.weight[...])
    LossWeight [1. 2. 1.]
    >>> print(len(nnx.state(loss_fn, nnx.Param)))  # nothing for an optimizer
    0
  """


def _weight_value(variable):
  return None if variable is None else variable[...]


class MultiLabelMarginLoss(nnx.Module):
  r"""``torch.nn.MultiLabelMarginLoss``: see :func:`jaxmargin.multilabel_margin_loss`.

  Per sample, with the label list :math:`L` (the target row before its first
  ``-1``) and :math:`C` classes,

  .. math::
    \ell(x, L) = \frac{1}{C} \sum_{j \in L} \sum_{d \notin L}
                 \max(0,\ 1 - x_j + x_d).

  Args:
    size_average: deprecated (torch's legacy argument; warns).
    reduce: deprecated (torch's legacy argument; warns).
    reduction: ``'none'``, ``'mean'`` or ``'sum'``, checked when the module is
      built (torch checks it at the first call).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin import nnx as jm_nnx
    >>> loss_fn = jm_nnx.MultiLabelMarginLoss()
    >>> x, y = jnp.array([[0.1, 0.2, 0.4, 0.8]]), jnp.array([[3, 0, -1, 1]])
    >>> print(f"{loss_fn(x, y):.4f}")
    0.8500
  """

  def __init__(
    self,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
  ):
    check_module_reduction(type(self).__name__, size_average, reduce, reduction, soft=False)
    self.reduction: Reduction = module_reduction(size_average, reduce, reduction)

  def __call__(self, input: jax.typing.ArrayLike, target: jax.typing.ArrayLike) -> jax.Array:
    """The loss of scores ``input`` against a ``-1``-padded ``target``.

    Args:
      input: scores of shape ``(C,)`` or ``(N, C)``.
      target: integer label indices padded with ``-1``, shaped as ``input``.

    Returns:
      A scalar, or the ``(N,)`` per-sample losses for ``reduction='none'``.
    """
    return functional.multilabel_margin_loss(input, target, reduction=self.reduction)


class MultiMarginLoss(nnx.Module):
  r"""``torch.nn.MultiMarginLoss``: see :func:`jaxmargin.multi_margin_loss`.

  Per sample, with target class :math:`y` and :math:`C` classes,

  .. math::
    \ell(x, y) = \frac{1}{C} \sum_{d \ne y}
                 w_y \max(0,\ \mathrm{margin} - x_y + x_d)^p .

  Args:
    p: 1 or 2.
    margin: the margin (a real number).
    weight: optional ``(C,)`` class weights, held as :class:`LossWeight`.
      Checked when the module is built (1-D, real numbers); its length ``C``
      is checked against the input at the call.
    size_average: deprecated (torch's legacy argument; warns).
    reduce: deprecated (torch's legacy argument; warns).
    reduction: ``'none'``, ``'mean'`` or ``'sum'``, checked when the module is
      built (torch checks it at the first call).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin import nnx as jm_nnx
    >>> loss_fn = jm_nnx.MultiMarginLoss(reduction="none")
    >>> x = jnp.array([[0.1, 0.2, 0.4, 0.8], [0.9, 0.2, 0.1, 0.0]])
    >>> print([round(float(v), 4) for v in loss_fn(x, jnp.array([3, 0]))])
    [0.325, 0.15]
  """

  def __init__(
    self,
    p: int = 1,
    margin: float = 1.0,
    weight: jax.typing.ArrayLike | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
  ):
    name = type(self).__name__
    self.p = check_p(name, p)
    self.margin = float(checked_margin(name, margin))
    self.weight = None if weight is None else LossWeight(checked_weight(name, weight))
    check_module_reduction(name, size_average, reduce, reduction, soft=False)
    self.reduction: Reduction = module_reduction(size_average, reduce, reduction)

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
      weight=_weight_value(self.weight),
      reduction=self.reduction,
    )


class MultiLabelSoftMarginLoss(nnx.Module):
  r"""``torch.nn.MultiLabelSoftMarginLoss``: see :func:`jaxmargin.multilabel_soft_margin_loss`.

  Per sample, with multi-hot (or soft) targets :math:`t` over :math:`C` classes,

  .. math::
    \ell(x, t) = -\frac{1}{C} \sum_{c} w_c \left[ t_c \log\sigma(x_c)
                 + (1 - t_c) \log\sigma(-x_c) \right].

  Args:
    weight: optional class weights broadcastable to the input (usually
      ``(C,)``), held as :class:`LossWeight`. Its dtype is checked when the
      module is built, its shape against the input at the call.
    size_average: deprecated (torch's legacy argument; warns).
    reduce: deprecated (torch's legacy argument; warns).
    reduction: ``'none'``, ``'mean'`` or ``'sum'``, checked when the module is
      built (torch checks it at the first call).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin import nnx as jm_nnx
    >>> loss_fn = jm_nnx.MultiLabelSoftMarginLoss()
    >>> x, t = jnp.array([[0.1, 0.2, 0.4, 0.8]]), jnp.array([[1, 0, 0, 1]])
    >>> print(f"{loss_fn(x, t):.4f}")
    0.6817
  """

  def __init__(
    self,
    weight: jax.typing.ArrayLike | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
  ):
    name = type(self).__name__
    self.weight = None if weight is None else LossWeight(checked_soft_weight(name, weight))
    check_module_reduction(name, size_average, reduce, reduction, soft=True)
    self.reduction: Reduction = module_reduction(size_average, reduce, reduction)

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
      input, target, weight=_weight_value(self.weight), reduction=self.reduction
    )


def __dir__() -> list[str]:
  # What the module offers: its public API, not the names it imports.
  return sorted(__all__)
