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
from flax import linen as nn

from jaxmargin import functional
from jaxmargin._modules import checked_weight, module_reduction
from jaxmargin._validation import check_p

__all__ = ["MultiLabelMarginLoss", "MultiMarginLoss", "MultiLabelSoftMarginLoss"]


class MultiLabelMarginLoss(nn.Module):
  """``torch.nn.MultiLabelMarginLoss``: see :func:`jaxmargin.multilabel_margin_loss`."""

  size_average: bool | None = None
  reduce: bool | None = None
  reduction: str = "mean"

  def __call__(self, input: jax.typing.ArrayLike,
               target: jax.typing.ArrayLike) -> jax.Array:
    return functional.multilabel_margin_loss(
        input, target,
        reduction=module_reduction(self.size_average, self.reduce, self.reduction))


class MultiMarginLoss(nn.Module):
  """``torch.nn.MultiMarginLoss``: see :func:`jaxmargin.multi_margin_loss`."""

  p: int = 1
  margin: float = 1.0
  weight: jax.typing.ArrayLike | None = None
  size_average: bool | None = None
  reduce: bool | None = None
  reduction: str = "mean"

  def __post_init__(self):
    check_p(type(self).__name__, self.p)
    if self.weight is not None:
      checked_weight(type(self).__name__, self.weight)
    super().__post_init__()

  def __call__(self, input: jax.typing.ArrayLike,
               target: jax.typing.ArrayLike) -> jax.Array:
    return functional.multi_margin_loss(
        input, target, p=self.p, margin=self.margin, weight=self.weight,
        reduction=module_reduction(self.size_average, self.reduce, self.reduction))


class MultiLabelSoftMarginLoss(nn.Module):
  """``torch.nn.MultiLabelSoftMarginLoss``: see :func:`jaxmargin.multilabel_soft_margin_loss`."""

  weight: jax.typing.ArrayLike | None = None
  size_average: bool | None = None
  reduce: bool | None = None
  reduction: str = "mean"

  def __call__(self, input: jax.typing.ArrayLike,
               target: jax.typing.ArrayLike) -> jax.Array:
    return functional.multilabel_soft_margin_loss(
        input, target, weight=self.weight,
        reduction=module_reduction(self.size_average, self.reduce, self.reduction))
