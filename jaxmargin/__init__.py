"""jaxmargin: PyTorch's margin-based losses for JAX, with torch's exact semantics."""

from jaxmargin import functional, linear, losses
from jaxmargin.functional import (
    multi_margin_loss,
    multilabel_margin_loss,
    multilabel_soft_margin_loss,
)
from jaxmargin._settings import value_checks

__version__ = "0.1.0"

__all__ = [
    "functional",
    "linear",
    "losses",
    "multi_margin_loss",
    "multilabel_margin_loss",
    "multilabel_soft_margin_loss",
    "value_checks",
]
