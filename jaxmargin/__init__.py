"""jaxmargin: PyTorch's margin-based losses for JAX, with torch's exact semantics."""

from jaxmargin import functional, linear, losses
from jaxmargin._settings import value_checks
from jaxmargin.functional import (
  cosine_embedding_loss,
  hinge_embedding_loss,
  margin_ranking_loss,
  multi_margin_loss,
  multilabel_margin_loss,
  multilabel_soft_margin_loss,
  pairwise_distance,
  soft_margin_loss,
  triplet_margin_loss,
  triplet_margin_with_distance_loss,
)

__version__: str = "0.1.0"

__all__: list[str] = [
  "cosine_embedding_loss",
  "functional",
  "hinge_embedding_loss",
  "linear",
  "losses",
  "margin_ranking_loss",
  "multi_margin_loss",
  "multilabel_margin_loss",
  "multilabel_soft_margin_loss",
  "pairwise_distance",
  "soft_margin_loss",
  "triplet_margin_loss",
  "triplet_margin_with_distance_loss",
  "value_checks",
]


def __dir__() -> list[str]:
  # What the module offers: its public API and version, not the names it imports.
  return sorted([*__all__, "__version__"])
