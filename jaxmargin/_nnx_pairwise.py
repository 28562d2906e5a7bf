"""Flax NNX modules of torch's ``MarginRankingLoss``, ``HingeEmbeddingLoss``, ``SoftMarginLoss``.

Re-exported by :mod:`jaxmargin.nnx` (which says how to install Flax); each
module checks torch's constructor arguments when it is built and calls the
matching function of :mod:`jaxmargin.functional`.
"""

from __future__ import annotations

import jax
from flax import nnx

from jaxmargin import functional
from jaxmargin._modules import check_module_reduction, checked_margin, module_reduction
from jaxmargin._reduction import Reduction


class MarginRankingLoss(nnx.Module):
  r"""``torch.nn.MarginRankingLoss``: see :func:`jaxmargin.margin_ranking_loss`.

  Elementwise, with label :math:`y` (1: :math:`x_1` should rank higher, -1:
  :math:`x_2` should),

  .. math::
    \ell(x_1, x_2, y) = \max(0,\ -y\,(x_1 - x_2) + \mathrm{margin}).

  Args:
    margin: the margin (a real number).
    size_average: deprecated (torch's legacy argument; warns).
    reduce: deprecated (torch's legacy argument; warns).
    reduction: ``'none'``, ``'mean'`` or ``'sum'``, checked when the module is
      built (torch checks it at the first call).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin import nnx as jm_nnx
    >>> loss_fn = jm_nnx.MarginRankingLoss(margin=0.1)
    >>> x1, x2 = jnp.array([0.8, 0.1, 0.5]), jnp.array([0.2, 0.4, 0.5])
    >>> print(f"{loss_fn(x1, x2, jnp.array([1, 1, -1])):.4f}")
    0.1667
  """

  def __init__(
    self,
    margin: float = 0.0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
  ):
    name = type(self).__name__
    self.margin = float(checked_margin(name, margin))
    check_module_reduction(name, size_average, reduce, reduction, soft=False)
    self.reduction: Reduction = module_reduction(size_average, reduce, reduction)

  def __call__(
    self,
    input1: jax.typing.ArrayLike,
    input2: jax.typing.ArrayLike,
    target: jax.typing.ArrayLike,
  ) -> jax.Array:
    """The loss of the scores ``input1`` and ``input2`` ranked by ``target``.

    Args:
      input1: scores of any shape.
      input2: scores with as many dimensions, broadcasting with ``input1``.
      target: labels 1 or -1, with as many dimensions, broadcasting with both.

    Returns:
      A scalar, or the per-element losses for ``reduction='none'``.
    """
    return functional.margin_ranking_loss(
      input1, input2, target, margin=self.margin, reduction=self.reduction
    )


class HingeEmbeddingLoss(nnx.Module):
  r"""``torch.nn.HingeEmbeddingLoss``: see :func:`jaxmargin.hinge_embedding_loss`.

  Elementwise, for a distance :math:`x` and a label :math:`y` (1 or -1),

  .. math::
    \ell(x, y) = [y \ne 1]\,\max(0,\ \mathrm{margin} - x) + [y \ne -1]\,x.

  Args:
    margin: the margin (a real number).
    size_average: deprecated (torch's legacy argument; warns).
    reduce: deprecated (torch's legacy argument; warns).
    reduction: ``'none'``, ``'mean'`` or ``'sum'``, checked when the module is
      built (torch checks it at the first call).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin import nnx as jm_nnx
    >>> loss_fn = jm_nnx.HingeEmbeddingLoss(reduction="none")
    >>> loss = loss_fn(jnp.array([0.3, 0.3, 1.5]), jnp.array([1, -1, -1]))
    >>> print([round(float(v), 4) for v in loss])
    [0.3, 0.7, 0.0]
  """

  def __init__(
    self,
    margin: float = 1.0,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
  ):
    name = type(self).__name__
    self.margin = float(checked_margin(name, margin))
    check_module_reduction(name, size_average, reduce, reduction, soft=False)
    self.reduction: Reduction = module_reduction(size_average, reduce, reduction)

  def __call__(self, input: jax.typing.ArrayLike, target: jax.typing.ArrayLike) -> jax.Array:
    """The loss of the values (distances) ``input`` against labels ``target``.

    Args:
      input: floating values of any shape.
      target: labels 1 or -1, broadcastable with ``input``.

    Returns:
      A scalar, or the per-element losses for ``reduction='none'``.
    """
    return functional.hinge_embedding_loss(
      input, target, margin=self.margin, reduction=self.reduction
    )


class SoftMarginLoss(nnx.Module):
  r"""``torch.nn.SoftMarginLoss``: see :func:`jaxmargin.soft_margin_loss`.

  Elementwise, for a logit :math:`x` and a label :math:`y` (1 or -1),

  .. math::
    \ell(x, y) = \log\left(1 + e^{-y x}\right).

  Args:
    size_average: deprecated (torch's legacy argument; warns).
    reduce: deprecated (torch's legacy argument; warns).
    reduction: ``'none'``, ``'mean'`` or ``'sum'``, checked when the module is
      built (torch checks it at the first call).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin import nnx as jm_nnx
    >>> loss_fn = jm_nnx.SoftMarginLoss()
    >>> print(f"{loss_fn(jnp.array([2.0, -1.0, 0.5]), jnp.array([1, -1, -1])):.4f}")
    0.4714
  """

  def __init__(
    self,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: Reduction = "mean",
  ):
    # torch's binary soft margin loss takes 'elementwise_mean' and words an
    # unknown name as the hinge losses do: not the multi-label one's rule.
    check_module_reduction(type(self).__name__, size_average, reduce, reduction, soft=False)
    self.reduction: Reduction = module_reduction(size_average, reduce, reduction)

  def __call__(self, input: jax.typing.ArrayLike, target: jax.typing.ArrayLike) -> jax.Array:
    """The loss of logits ``input`` against labels ``target``.

    Args:
      input: floating logits of any shape.
      target: labels 1 or -1, whose shape broadcasts to the input's.

    Returns:
      A scalar, or the per-element losses for ``reduction='none'``.
    """
    return functional.soft_margin_loss(input, target, reduction=self.reduction)
