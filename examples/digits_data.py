"""Shared helpers for the digits training examples: data, metrics, loop, plots.

The data is scikit-learn's bundled copy of the UCI handwritten digits (1797
grey 8x8 images, pixel values 0..16); nothing is downloaded. This module holds
no model code, so the Flax NNX and linen examples share it unchanged:

* :func:`load_digits_split`: the images scaled to ``[0, 1]`` and a fixed,
  stratified train/test split.
* :func:`make_multilabel_set`: 8x24 images made of 2 or 3 real digits side by
  side (blank tiles fill the free slots), labelled with the set of digits
  present, in both target formats: multi-hot and torch's ``-1``-padded lists.
* :func:`multilabel_metrics`: label ranking average precision and Hamming loss.
* :func:`train_epochs`: a shuffled-minibatch loop with a tqdm progress bar.
* :func:`save_curves`: a PNG of the per-epoch training curves (Agg backend).

Run the examples, not this module, e.g. ``python examples/digits_multilabel_nnx.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn import datasets, model_selection
from tqdm.auto import tqdm

from multilabel_metrics import average_precision, hamming_loss
from jaxmargin.losses import multi_hot_to_padded

NUM_CLASSES = 10
TILE = 8
SLOTS = 3
MIN_DIGITS = 2
TEST_FRACTION = 0.25
# The split does not follow the training seed, so every run is scored on the
# same held-out digits.
SPLIT_SEED = 0
# Scores above this count as "label present" for the Hamming loss; see
# multilabel_metrics for why 0 suits all three losses.
THRESHOLD = 0.0


@dataclasses.dataclass(frozen=True)
class DigitsSplit:
  """Single digits: images ``(N, 8, 8)`` float32 in ``[0, 1]``, labels ``(N,)`` int32."""

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray


@dataclasses.dataclass(frozen=True)
class MultiLabelSet:
  """Composite images and the set of digits in each, in two target formats.

  Attributes:
    images: ``(N, 8, 24)`` float32.
    multi_hot: ``(N, 10)`` float32, 1 for each digit present.
    padded: ``(N, 10)`` int32, torch's format: the digits present in
      increasing order, then ``-1``.
  """

  images: np.ndarray
  multi_hot: np.ndarray
  padded: np.ndarray

  @property
  def features(self) -> np.ndarray:
    """The images flattened to ``(N, 192)`` for an MLP."""
    return self.images.reshape(len(self.images), -1)


def load_digits_split(test_fraction: float = TEST_FRACTION,
                      seed: int = SPLIT_SEED) -> DigitsSplit:
  """Loads the digits, scales pixels to ``[0, 1]`` and splits them, stratified by class.

  Args:
    test_fraction: share of the images held out for testing.
    seed: seed of the split; the default gives the same split every time.

  Returns:
    The train and test images and labels.
  """
  digits = datasets.load_digits()
  images = (digits.images / 16.0).astype(np.float32)
  labels = digits.target.astype(np.int32)
  train_x, test_x, train_y, test_y = model_selection.train_test_split(
      images, labels, test_size=test_fraction, random_state=seed, stratify=labels)
  return DigitsSplit(train_x, train_y, test_x, test_y)


def _pick_of_class(labels, classes, rng):
  """Index of a random image of each requested class, for an array of classes."""
  order = np.argsort(labels, kind="stable")
  sizes = np.bincount(labels, minlength=NUM_CLASSES)
  starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  offsets = (rng.random(classes.shape) * sizes[classes]).astype(np.int64)
  return order[starts[classes] + offsets]


def make_multilabel_set(images: np.ndarray, labels: np.ndarray, num_samples: int,
                        rng: np.random.Generator) -> MultiLabelSet:
  """Builds composite images of 2 or 3 digits and their label sets.

  Each composite has 3 slots of 8x8. It holds 2 or 3 different digit classes
  (equally likely), each drawn as a random image of that class from
  ``images``, placed in random slots; a free slot stays blank. The digits are
  distinct so that the number of labels equals the number of digits shown.

  Args:
    images: ``(M, 8, 8)`` source digits; pass one split only, so that no
      digit image is shared between the train and test composites.
    labels: ``(M,)`` their classes; every class must occur.
    num_samples: number of composites.
    rng: the source of randomness.

  Returns:
    The composites and their targets in both formats.
  """
  if np.bincount(labels, minlength=NUM_CLASSES).min() == 0:
    raise ValueError("make_multilabel_set: every digit class needs at least one image")
  counts = rng.integers(MIN_DIGITS, SLOTS + 1, size=num_samples)
  # The first SLOTS entries of a random permutation: distinct classes and slots.
  classes = np.argsort(rng.random((num_samples, NUM_CLASSES)), axis=1)[:, :SLOTS]
  slots = np.argsort(rng.random((num_samples, SLOTS)), axis=1)
  used = np.arange(SLOTS) < counts[:, None]
  tiles = images[_pick_of_class(labels, classes, rng)] * used[:, :, None, None]
  placed = np.zeros((num_samples, SLOTS, TILE, TILE), np.float32)
  placed[np.arange(num_samples)[:, None], slots] = tiles
  composites = placed.transpose(0, 2, 1, 3).reshape(num_samples, TILE, SLOTS * TILE)
  multi_hot = np.zeros((num_samples, NUM_CLASSES), np.float32)
  rows = np.broadcast_to(np.arange(num_samples)[:, None], classes.shape)
  multi_hot[rows[used], classes[used]] = 1.0
  padded = np.asarray(multi_hot_to_padded(multi_hot), dtype=np.int32)
  return MultiLabelSet(composites, multi_hot, padded)


def make_multilabel_split(split: DigitsSplit, num_train: int, num_test: int,
                          seed: int) -> tuple[MultiLabelSet, MultiLabelSet]:
  """Train composites from train digits only, test composites from test digits only."""
  train_rng, test_rng = (np.random.default_rng(s)
                         for s in np.random.SeedSequence(seed).spawn(2))
  train = make_multilabel_set(split.train_images, split.train_labels, num_train,
                              train_rng)
  test = make_multilabel_set(split.test_images, split.test_labels, num_test, test_rng)
  return train, test


def positive_int(text: str) -> int:
  """An ``argparse`` type for counts such as ``--epochs``: an integer of at least 1."""
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
  return value


def multilabel_metrics(scores: np.ndarray, multi_hot: np.ndarray,
                       threshold: float = THRESHOLD) -> dict[str, float]:
  """Label ranking average precision and Hamming loss of multi-label scores.

  LRAP only ranks the scores, so it needs no threshold. The Hamming loss
  predicts the classes whose score exceeds ``threshold``. 0 is the natural
  threshold of all three losses: for ``multilabel_soft_margin_loss`` a score
  above 0 is a sigmoid above 0.5; for the hinge losses it is the midpoint of
  a margin of 1 straddling 0. The hinge losses only compare scores, though (a
  shift of all of a row's scores leaves them unchanged), so nothing in them
  pins the scores to 0: the threshold works only as well as training happens
  to keep them centred.

  Args:
    scores: ``(N, C)`` scores or logits.
    multi_hot: ``(N, C)`` true labels, nonzero for present.
    threshold: decision threshold on the scores.

  Returns:
    ``{"lrap": ..., "hamming": ...}``.
  """
  scores = np.asarray(scores, dtype=np.float64)
  # multilabel_metrics.py's average precision is scikit-learn's LRAP (tested
  # against it), vectorised, so that evaluating every epoch stays cheap.
  return {
      "lrap": average_precision(scores, multi_hot),
      "hamming": hamming_loss(scores > threshold, multi_hot),
  }


def train_epochs(step: Callable, state, arrays: Sequence[np.ndarray], *, epochs: int,
                 batch_size: int, rng: np.random.Generator,
                 evaluate: Callable[[object], Mapping[str, float]],
                 desc: str) -> tuple[object, dict[str, list[float]]]:
  """Trains on shuffled minibatches, one tqdm bar tick per epoch.

  The incomplete last batch of an epoch is dropped, so every step has one
  shape and the jitted ``step`` compiles once; reshuffling each epoch lets
  every example take part.

  Args:
    step: ``step(state, *batch) -> (state, loss)``; ``batch`` holds the same
      rows of each of ``arrays``.
    state: the initial training state (anything ``step`` accepts).
    arrays: the training arrays, with the examples on the first axis.
    epochs: number of passes over the data.
    batch_size: examples per step.
    rng: shuffles the examples.
    evaluate: ``evaluate(state) -> {metric: value}``, run after each epoch.
    desc: the progress bar's label.

  Returns:
    The final state and the history: ``"train_loss"`` (the mean step loss of
    each epoch) and each metric of ``evaluate``, one value per epoch.
  """
  num_examples = len(arrays[0])
  num_steps = num_examples // batch_size
  if num_steps == 0:
    raise ValueError(f"train_epochs: batch_size {batch_size} exceeds the "
                     f"{num_examples} training examples")
  history: dict[str, list[float]] = {"train_loss": []}
  with tqdm(range(epochs), desc=desc, unit="epoch") as bar:
    for _ in bar:
      order = rng.permutation(num_examples)
      losses = []
      for i in range(num_steps):
        rows = order[i * batch_size:(i + 1) * batch_size]
        state, loss = step(state, *(array[rows] for array in arrays))
        losses.append(loss)
      # One device-to-host transfer per epoch keeps the steps asynchronous.
      history["train_loss"].append(float(np.mean(jax.device_get(losses))))
      for name, value in evaluate(state).items():
        history.setdefault(name, []).append(float(value))
      bar.set_postfix({name: f"{values[-1]:.4f}" for name, values in history.items()})
  return state, history


def save_curves(path: str | pathlib.Path,
                histories: Mapping[str, Mapping[str, Sequence[float]]],
                panels: Sequence[tuple[str, str]], title: str) -> pathlib.Path:
  """Saves per-epoch curves as a PNG, one panel per metric, one line per run.

  Args:
    path: the PNG file; its directory is created if needed.
    histories: ``{run name: {metric: values per epoch}}``, e.g. from
      :func:`train_epochs`.
    panels: ``(metric, axis label)`` pairs, one panel each, left to right.
    title: the figure title.

  Returns:
    The path written.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  # A bare Figure on the Agg canvas: no pyplot, so no global backend state.
  figure = Figure(figsize=(5 * len(panels), 4), layout="constrained")
  FigureCanvasAgg(figure)
  for axes, (metric, label) in zip(figure.subplots(1, len(panels), squeeze=False)[0],
                                   panels):
    for run, history in histories.items():
      values = history[metric]
      axes.plot(range(1, len(values) + 1), values, marker=".", label=run)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(label)
    axes.grid(alpha=0.3)
    axes.legend()
  figure.suptitle(title)
  figure.savefig(path, dpi=100)
  return path


DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / "output"


def multilabel_arguments(description: str, argv=None) -> argparse.Namespace:
  """The command line of the two multi-label examples (NNX and linen)."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--epochs", type=positive_int, default=20)
  parser.add_argument("--batch-size", type=positive_int, default=128)
  parser.add_argument("--learning-rate", type=float, default=2e-3)
  parser.add_argument("--hidden", type=positive_int, default=256)
  parser.add_argument("--train-size", type=positive_int, default=12000,
                      help="number of training composites (from the train digits)")
  parser.add_argument("--test-size", type=positive_int, default=3000,
                      help="number of test composites (from the test digits)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT,
                      help="directory for the PNG of the training curves "
                      "(default: examples/output)")
  return parser.parse_args(argv)


def report_multilabel(results: Mapping[str, Mapping[str, float]],
                      histories: Mapping[str, Mapping[str, Sequence[float]]],
                      plot_path: pathlib.Path, title: str) -> None:
  """Prints each loss's final test metrics and saves the training curves."""
  for name, result in results.items():
    print(f"{name}: LRAP {result['lrap']:.4f}, hamming loss {result['hamming']:.4f}")
  plot = save_curves(plot_path, histories,
                     [("train_loss", "training loss"), ("test_lrap", "test LRAP")], title)
  print(f"training curves: {plot}")
