"""Optax-style margin losses: per-example outputs, any batch shape, multi-hot labels.

These follow the conventions of ``optax.losses``: arrays positional,
hyperparameters keyword-only, the class axis given by ``axis`` (default -1)
over any number of leading batch dimensions, an optional ``where`` mask, and
one loss per example with no reduction (take ``jnp.mean`` yourself).

They run on the same cores as :mod:`jaxmargin.functional`, so values and
gradients are torch's: followed by ``jnp.mean`` and given converted targets,
each equals its torch-compatible twin. Each is one jitted kernel (eager calls
compile once per shape), with label values checked outside it: ``ValueError``
when they are concrete, a ``checkify`` check when they are traced.

``where`` selects the classes that take part: an excluded class is neither a
label nor a competitor, and the divisor is the number of included classes, so
an example's loss equals the loss computed on its included classes alone. An
example with no included class, or (for :func:`multiclass_margin_loss`) whose
label is excluded, gets 0. A ``where`` with the batch shape (one fewer
dimension than the scores) includes or excludes whole examples, as in optax.

The pairwise losses (:func:`margin_ranking_loss`, :func:`hinge_embedding_loss`,
:func:`soft_margin_loss`) have no class axis: they give one loss per element
of their broadcast operands. The embedding losses
(:func:`cosine_embedding_loss`, :func:`triplet_margin_loss`) give one loss per
example, with ``axis`` the feature axis. :func:`inverse_propensity` and
:func:`propensity_scored_precision_at_k` are the label weights and the metric
of extreme multi-label classification (Jain, Prabhu and Varma, KDD 2016).
"""

from __future__ import annotations

from jaxmargin._losses_classification import (
  multiclass_margin_loss,
  multilabel_margin_loss,
  multilabel_soft_margin_loss,
)
from jaxmargin._losses_embedding import cosine_embedding_loss, triplet_margin_loss
from jaxmargin._losses_pairwise import (
  hinge_embedding_loss,
  margin_ranking_loss,
  soft_margin_loss,
)
from jaxmargin._propensity import inverse_propensity, propensity_scored_precision_at_k
from jaxmargin._targets import (
  label_list_to_multi_hot,
  label_list_to_padded,
  multi_hot_to_label_list,
  multi_hot_to_padded,
  padded_to_label_list,
  padded_to_multi_hot,
)

__all__: list[str] = [
  "cosine_embedding_loss",
  "hinge_embedding_loss",
  "inverse_propensity",
  "label_list_to_multi_hot",
  "label_list_to_padded",
  "margin_ranking_loss",
  "multi_hot_to_label_list",
  "multi_hot_to_padded",
  "multiclass_margin_loss",
  "multilabel_margin_loss",
  "multilabel_soft_margin_loss",
  "padded_to_label_list",
  "padded_to_multi_hot",
  "propensity_scored_precision_at_k",
  "soft_margin_loss",
  "triplet_margin_loss",
]


def __dir__() -> list[str]:
  # What the module offers: its public API, not the names it imports.
  return sorted(__all__)
