"""jaxmargin: PyTorch's margin-based losses for JAX, with torch's exact semantics."""

from jaxmargin import functional, linear, losses
from jaxmargin._settings import value_checks
from jaxmargin.functional import (
  multi_margin_loss,
  multilabel_margin_loss,
  multilabel_soft_margin_loss,
)

__version__: str = "0.1.0"

__all__: list[str] = [
  "functional",
  "linear",
  "losses",
  "multi_margin_loss",
  "multilabel_margin_loss",
  "multilabel_soft_margin_loss",
  "value_checks",
]


def __dir__() -> list[str]:
  # What the module offers: its public API and version, not the names it imports.
  return sorted([*__all__, "__version__"])
