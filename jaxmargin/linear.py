r"""Fused classifier + margin loss for extreme label spaces: no ``(N, C)`` scores.

Each function takes the inputs of a linear classifier head, with scores

.. math::
  s = \mathrm{features} \cdot \mathrm{kernel} + \mathrm{bias}

in Flax's ``Dense`` / ``nnx.Linear`` layout (``kernel`` is ``(D, C)``), and
computes the loss on those scores one chunk of classes at a time. Neither the
``(N, C)`` scores nor their gradient is ever stored: memory is
``O(N * chunk_size + N * K * D)`` on top of the kernel and its gradient, so a
million classes fit where the unfused loss needs tens of GB.

Each loss equals the unfused loss of the materialised scores, in value and
in gradients (to the float rounding of the matmul), with torch's conventions:
strict kink, NaN terms dropped, and a label outside the valid range gives
NaN under ``jit``, ``ValueError`` when concrete, and an error under
``checkify``. Labels of the multi-label losses are compact **label lists**
``(N, K)``: class indices padded with ``-1`` after the last label (torch's
padded format at width ``K`` instead of ``C``); :mod:`jaxmargin.losses` has
converters from multi-hot and padded targets.

``reduction="none"`` (the default, as in Optax) gives one loss per example;
its backward pass computes each chunk's scores again (four matmuls a step
against three unfused). ``reduction="mean"`` or ``"sum"`` gives a scalar and
computes the gradients during the forward pass, as fused cross-entropy
kernels do, so a training step costs the three matmuls of the unfused one.

A classifier too large for one device is split over devices by class: under
``jax.jit``, a ``kernel`` (and ``bias``) placed with a ``NamedSharding`` that
splits its classes is enough, with Auto or Explicit mesh axes; inside
``jax.shard_map``, ``class_axis_name`` names the mesh axis that splits them.
Each device then sweeps its own classes, and only per-row quantities cross
devices. ``num_classes`` leaves out padding columns, for a class count the
devices do not divide.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from jaxmargin import linear
  >>> features = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  >>> kernel = jnp.array([[0.1, 0.2, 0.4, 0.8], [0.9, 0.2, 0.1, 0.0]])
  >>> labels = jnp.array([[3, 0], [0, -1]])       # label lists, -1 padded
  >>> loss = linear.multilabel_margin_loss(features, kernel, labels)
  >>> print([round(float(v), 4) for v in loss])
  [0.85, 0.15]
  >>> grads = jax.grad(linear.multilabel_margin_loss, argnums=(0, 1))(
  ...     features, kernel, labels, reduction="mean")
"""

from __future__ import annotations

from jaxmargin._linear_multi_margin import multi_margin_loss
from jaxmargin._linear_multilabel_margin import multilabel_margin_loss
from jaxmargin._linear_soft_margin import multilabel_soft_margin_loss
from jaxmargin._linear_top_k import top_k

__all__: list[str] = [
  "multi_margin_loss",
  "multilabel_margin_loss",
  "multilabel_soft_margin_loss",
  "top_k",
]


def __dir__() -> list[str]:
  # What the module offers: its public API, not the names it imports.
  return sorted(__all__)
