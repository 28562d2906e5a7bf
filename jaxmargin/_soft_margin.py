"""Core of the multi-label soft margin loss (per-sample values)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def multilabel_soft_margin_per_sample(x, target, weight):
  r"""Per-sample multi-label soft margin loss of torch's ``multilabel_soft_margin_loss``.

  .. math::
    \ell_n = -\frac{1}{C} \sum_{c} w_c \left[ t_{n,c} \log\sigma(x_{n,c})
             + (1 - t_{n,c}) \log\sigma(-x_{n,c}) \right]

  ``log_sigmoid`` is ``-softplus(-x)``, whose own ``custom_jvp`` keeps value
  and derivative finite for any finite ``x``; no rule of ours is needed, so
  forward mode (``jvp``, ``jacfwd``, ``hessian``) and reverse mode both work,
  and the gradients with respect to ``x``, ``target`` and ``weight`` are
  torch's. The formula is torch's term for term, so NaN and inf propagate as
  in torch.

  Args:
    x: logits, shape ``(..., C)``, in the compute dtype.
    target: broadcastable to ``x``.
    weight: ``None`` or broadcastable to ``x``.

  Returns:
    Per-sample losses of the broadcast shape without its last axis.
  """
  loss = -(target * jax.nn.log_sigmoid(x) + (1 - target) * jax.nn.log_sigmoid(-x))
  if weight is not None:
    loss = loss * weight
  return jnp.sum(loss, axis=-1) / x.shape[-1]
