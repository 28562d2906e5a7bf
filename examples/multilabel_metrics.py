"""The five multi-label metrics of the Yeast literature, and its threshold function.

The definitions are those of Zhang and Zhou ("ML-KNN: A lazy learning
approach to multi-label learning", Pattern Recognition, 2007, and their
BP-MLL paper, IEEE TKDE 18(10), 2006). For ``N`` examples with scores
``f(x_i, y)`` over ``Q`` labels and label sets ``Y_i`` (every example has at
least one label):

* hamming loss: the share of (example, label) pairs predicted wrong,
  ``1/N sum_i |h(x_i) xor Y_i| / Q``, for a predicted set ``h(x_i)``;
* one-error: the share of examples whose top-ranked label is not a label;
* coverage: how far down the ranking one must go, on average, to cover all
  of an example's labels, ``1/N sum_i max_{y in Y_i} rank_i(y) - 1``;
* ranking loss: the share of (label, non-label) pairs ranked wrongly,
  ``1/N sum_i |{(y, y') in Y_i x not Y_i: f(x_i, y) <= f(x_i, y')}| /
  (|Y_i| |not Y_i|)``;
* average precision: the mean, over each example's labels ``y``, of the
  share of labels among the labels ranked at or above ``y``.

``rank_i(y)`` counts the labels scoring at least ``f(x_i, y)``, so the top
label has rank 1 and a tie counts against the prediction (the ``<=`` of the
ranking loss). These are scikit-learn's conventions for
``label_ranking_loss``, ``label_ranking_average_precision_score`` and
``coverage_error``, with which the three agree exactly, except that
scikit-learn's coverage is one more than the papers' (it counts the labels
covered, not the steps down the ranking). With the same tie rule, the
one-error counts an example as an error when any label tied for the top
score is not one of its labels.

All lower is better, except average precision. The metrics work on numpy
arrays; ``O(N Q^2)`` time, which is nothing at Yeast's 14 labels.
"""

from __future__ import annotations

import numpy as np

METRICS = ("hamming_loss", "ranking_loss", "one_error", "coverage", "average_precision")


def _checked(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  scores = np.asarray(scores, dtype=np.float64)
  truth = np.asarray(truth) != 0
  if scores.ndim != 2 or scores.shape != truth.shape:
    raise ValueError(f"scores {scores.shape} and labels {truth.shape}: expected the same (N, Q)")
  if not truth.any(axis=1).all():
    raise ValueError("every example needs at least one label: the metrics are undefined without")
  return scores, truth


def _at_least(scores: np.ndarray) -> np.ndarray:
  """``[i, j, k]``: label ``k`` scores at least as high as label ``j`` in row ``i``."""
  return scores[:, None, :] >= scores[:, :, None]


def hamming_loss(predicted: np.ndarray, truth: np.ndarray) -> float:
  """Share of (example, label) pairs where the predicted set and the label set differ."""
  predicted, truth = np.asarray(predicted) != 0, np.asarray(truth) != 0
  if predicted.shape != truth.shape:
    raise ValueError(f"predicted {predicted.shape} and labels {truth.shape}: expected one shape")
  return float(np.mean(predicted != truth))


def one_error(scores: np.ndarray, truth: np.ndarray) -> float:
  """Share of examples with a non-label among their top-scored labels."""
  scores, truth = _checked(scores, truth)
  top = scores == scores.max(axis=1, keepdims=True)
  return float(np.mean((top & ~truth).any(axis=1)))


def coverage(scores: np.ndarray, truth: np.ndarray) -> float:
  """Mean rank of each example's lowest-ranked label, minus 1 (the papers' coverage)."""
  scores, truth = _checked(scores, truth)
  rank = _at_least(scores).sum(axis=2)
  return float(np.mean(np.where(truth, rank, 0).max(axis=1) - 1))


def ranking_loss(scores: np.ndarray, truth: np.ndarray) -> float:
  """Mean share of (label, non-label) pairs whose non-label scores at least as high."""
  scores, truth = _checked(scores, truth)
  wrong = _at_least(scores) & truth[:, :, None] & ~truth[:, None, :]
  pairs = truth.sum(axis=1) * (~truth).sum(axis=1)
  # A row whose labels are all the labels has no pair to order wrongly.
  per_row = np.divide(wrong.sum(axis=(1, 2)), pairs, out=np.zeros(len(scores)), where=pairs > 0)
  return float(np.mean(per_row))


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
  """Mean over examples and their labels of the share of labels ranked at or above each."""
  scores, truth = _checked(scores, truth)
  above = _at_least(scores)
  rank = above.sum(axis=2)
  labels_above = (above & truth[:, None, :]).sum(axis=2)
  precision = np.where(truth, labels_above / rank, 0.0)
  return float(np.mean(precision.sum(axis=1) / truth.sum(axis=1)))


def evaluate(scores: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
  """All five metrics; ``predicted`` is the label sets for the hamming loss.

  Returns:
    ``{name: value}`` in the order of :data:`METRICS`.
  """
  return {
    "hamming_loss": hamming_loss(predicted, truth),
    "ranking_loss": ranking_loss(scores, truth),
    "one_error": one_error(scores, truth),
    "coverage": coverage(scores, truth),
    "average_precision": average_precision(scores, truth),
  }


def best_thresholds(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """Per example, the threshold whose predicted set ``{y: f(x, y) > t}`` errs least.

  The candidates are the midpoints between consecutive sorted scores and one
  below the lowest and above the highest score; of equally good ones the
  lowest wins.

  Returns:
    ``(N,)`` thresholds.
  """
  scores, truth = np.asarray(scores, dtype=np.float64), np.asarray(truth) != 0
  ordered = np.sort(scores, axis=1)
  candidates = np.concatenate(
    [ordered[:, :1] - 1.0, (ordered[:, 1:] + ordered[:, :-1]) / 2, ordered[:, -1:] + 1.0], axis=1
  )
  errors = ((scores[:, None, :] > candidates[:, :, None]) != truth[:, None, :]).sum(axis=2)
  return candidates[np.arange(len(scores)), errors.argmin(axis=1)]


class ThresholdFunction:
  """Elisseeff and Weston's threshold: a linear function of an example's scores.

  A ranking loss leaves the scores' offset free, so a fixed threshold on them
  need not mean anything. Rank-SVM (Elisseeff and Weston, NIPS 2001) and
  BP-MLL (Zhang and Zhou, TKDE 2006) therefore learn the threshold as
  ``t(x) = w . f(x) + b``, fitted by least squares on the training examples
  to each one's :func:`best_thresholds`, and predict the labels
  ``{y: f(x, y) > t(x)}``.

  Args:
    scores: ``(N, Q)`` training scores.
    truth: ``(N, Q)`` training labels, nonzero for present.
  """

  def __init__(self, scores: np.ndarray, truth: np.ndarray):
    scores = np.asarray(scores, dtype=np.float64)
    design = np.concatenate([scores, np.ones((len(scores), 1))], axis=1)
    self.coefficients = np.linalg.lstsq(design, best_thresholds(scores, truth), rcond=None)[0]

  def __call__(self, scores: np.ndarray) -> np.ndarray:
    """The thresholds ``(N,)`` of examples with scores ``(N, Q)``."""
    return np.asarray(scores, dtype=np.float64) @ self.coefficients[:-1] + self.coefficients[-1]

  def predict(self, scores: np.ndarray) -> np.ndarray:
    """The predicted label sets, ``(N, Q)`` bool."""
    return np.asarray(scores, dtype=np.float64) > self(scores)[:, None]
