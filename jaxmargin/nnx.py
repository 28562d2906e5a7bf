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
import jax.numpy as jnp
from flax import nnx

from jaxmargin import functional
from jaxmargin._modules import checked_weight, module_reduction
from jaxmargin._validation import check_p

__all__ = ["LossWeight", "MultiLabelMarginLoss", "MultiMarginLoss",
           "MultiLabelSoftMarginLoss"]


class LossWeight(nnx.Variable):
  """Constant per-class weights of a loss: module state, not a trainable ``Param``."""


def _weight_value(variable):
  return None if variable is None else variable[...]


class MultiLabelMarginLoss(nnx.Module):
  """``torch.nn.MultiLabelMarginLoss``: see :func:`jaxmargin.multilabel_margin_loss`.

  Args:
    size_average: deprecated (torch's legacy argument; warns).
    reduce: deprecated (torch's legacy argument; warns).
    reduction: ``'none'``, ``'mean'`` or ``'sum'``.
  """

  def __init__(self, size_average: bool | None = None, reduce: bool | None = None,
               reduction: str = "mean"):
    self.reduction = module_reduction(size_average, reduce, reduction)

  def __call__(self, input: jax.typing.ArrayLike,
               target: jax.typing.ArrayLike) -> jax.Array:
    return functional.multilabel_margin_loss(input, target, reduction=self.reduction)


class MultiMarginLoss(nnx.Module):
  """``torch.nn.MultiMarginLoss``: see :func:`jaxmargin.multi_margin_loss`.

  Args:
    p: 1 or 2.
    margin: the margin.
    weight: optional ``(C,)`` class weights, held as :class:`LossWeight`.
    size_average: deprecated (torch's legacy argument; warns).
    reduce: deprecated (torch's legacy argument; warns).
    reduction: ``'none'``, ``'mean'`` or ``'sum'``.
  """

  def __init__(self, p: int = 1, margin: float = 1.0,
               weight: jax.typing.ArrayLike | None = None,
               size_average: bool | None = None, reduce: bool | None = None,
               reduction: str = "mean"):
    self.p = check_p(type(self).__name__, p)
    self.margin = float(margin)
    self.weight = None if weight is None else LossWeight(
        checked_weight(type(self).__name__, weight))
    self.reduction = module_reduction(size_average, reduce, reduction)

  def __call__(self, input: jax.typing.ArrayLike,
               target: jax.typing.ArrayLike) -> jax.Array:
    return functional.multi_margin_loss(input, target, p=self.p, margin=self.margin,
                                        weight=_weight_value(self.weight),
                                        reduction=self.reduction)


class MultiLabelSoftMarginLoss(nnx.Module):
  """``torch.nn.MultiLabelSoftMarginLoss``: see :func:`jaxmargin.multilabel_soft_margin_loss`.

  Args:
    weight: optional class weights broadcastable to the input (usually
      ``(C,)``), held as :class:`LossWeight`.
    size_average: deprecated (torch's legacy argument; warns).
    reduce: deprecated (torch's legacy argument; warns).
    reduction: ``'none'``, ``'mean'`` or ``'sum'``.
  """

  def __init__(self, weight: jax.typing.ArrayLike | None = None,
               size_average: bool | None = None, reduce: bool | None = None,
               reduction: str = "mean"):
    self.weight = None if weight is None else LossWeight(jnp.asarray(weight))
    self.reduction = module_reduction(size_average, reduce, reduction)

  def __call__(self, input: jax.typing.ArrayLike,
               target: jax.typing.ArrayLike) -> jax.Array:
    return functional.multilabel_soft_margin_loss(
        input, target, weight=_weight_value(self.weight), reduction=self.reduction)
