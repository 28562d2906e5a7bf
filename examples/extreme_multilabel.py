"""Extreme multi-label classification in Flax NNX with the fused linear loss.

Synthetic tag data with ``--num-labels`` labels (100,000 by default; the
script also runs with 1,000,000) and a power-law label frequency, as real tag
data has: a few head labels occur in a large share of the examples, most
labels are rare or never seen in training. Each label has a random prototype
direction in a 256-dimensional feature space, and each example's features are
the sum of the prototypes of its 1 to 8 labels plus noise. The labels are
stored as the compact ``(N, 8)`` label lists of ``jaxmargin.linear``: the
label indices, padded with ``-1``.

The model is a small NNX encoder (a 2-layer MLP to a 64-dimensional
embedding) and an ``nnx.Linear(64, C)`` head. The head's kernel and bias go
straight into ``jaxmargin.linear.multilabel_margin_loss``
(``torch.nn.MultiLabelMarginLoss`` of ``embedding @ kernel + bias``), and the
held-out predictions come from ``jaxmargin.linear.top_k``: both run over the
classes in chunks, so the ``(N, C)`` scores are never built, in training or
in evaluation. Training is Adam via ``nnx.Optimizer`` in an ``nnx.jit`` step.
``extreme_multilabel_sharded.py`` trains the same with the head split over
devices by class.

After a line on the data, it prints the held-out precision@1/3/5 and
propensity-scored precision@1/3/5 (PSP@k of Jain, Prabhu and Varma, KDD 2016,
which credits rare labels more; see :func:`ranking_metrics`) of a baseline
that predicts the 5 most frequent training labels for every example, as lines
``baseline precision@1 0.xxxx`` ... ``baseline psp@5 0.xxxx``, then those of
the trained model, as lines ``precision@1 0.xxxx`` ... ``psp@5 0.xxxx``, and
it saves the training loss and held-out precision@1 per epoch as
``extreme_multilabel.png`` in ``--out``.

Run from the repository root (under 3 minutes on a 2-core CPU)::

  python examples/extreme_multilabel.py [--num-labels 100000] [--epochs 10] [--seed 0]
      [--train-size 20000] [--test-size 5000] [--batch-size 512] [--out examples/output]

``--num-labels 1000000`` takes about seven times as long per epoch.

Needs the ``examples`` extra: ``pip install -e ".[examples]"``.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from collections.abc import Callable

import jax
import numpy as np
import optax
from flax import nnx
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

import digits_data
from jaxmargin import linear, losses

# Next to the examples, wherever they are run from.
DEFAULT_OUT = digits_data.DEFAULT_OUT
PLOT_NAME = "extreme_multilabel.png"
TOP_K = 5
KS = (1, 3, 5)
# The most labels of an example, so the width of the label lists.
MAX_LABELS = 8
# Label frequency ~ 1 / rank**ZIPF_EXPONENT.
ZIPF_EXPONENT = 1.0
FEATURE_DIM = 256
# The noise's norm, against prototypes of norm 1.
NOISE = 1.0
# Jain, Prabhu and Varma (KDD 2016)'s propensity model, with their constants
# for data sets other than Wikipedia-LSHTC and Amazon.
PROPENSITY_A = 0.55
PROPENSITY_B = 1.5


@dataclasses.dataclass(frozen=True)
class TagSet:
  """Examples and their labels.

  Attributes:
    features: ``(N, FEATURE_DIM)`` float32.
    labels: ``(N, MAX_LABELS)`` int32, each row's distinct labels then ``-1``.
  """

  features: np.ndarray
  labels: np.ndarray


def sample_label_lists(num_examples: int, num_labels: int,
                       rng: np.random.Generator) -> np.ndarray:
  """Draws each example's labels from a power law over a random label order.

  Each example draws 1 to ``MAX_LABELS`` labels (equally likely) with
  replacement; a label drawn twice is kept once, so head-heavy rows can have
  fewer labels.

  Returns:
    ``(num_examples, MAX_LABELS)`` int32 label lists padded with ``-1``.
  """
  # Label ids in order of popularity: random, so that the head labels are not
  # simply the first ids.
  by_rank = rng.permutation(num_labels)
  cumulative = np.cumsum(np.arange(1, num_labels + 1, dtype=np.float64)**-ZIPF_EXPONENT)
  ranks = np.searchsorted(cumulative, rng.random((num_examples, MAX_LABELS)) * cumulative[-1],
                          side="right")
  drawn = by_rank[np.minimum(ranks, num_labels - 1)]
  counts = rng.integers(1, MAX_LABELS + 1, size=num_examples)
  # Unused slots and repeats become num_labels, which sorts last, then -1.
  drawn = np.where(np.arange(MAX_LABELS) < counts[:, None], drawn, num_labels)
  drawn.sort(axis=1)
  drawn[:, 1:][drawn[:, 1:] == drawn[:, :-1]] = num_labels
  drawn.sort(axis=1)
  return np.where(drawn == num_labels, -1, drawn).astype(np.int32)


def make_tag_sets(num_labels: int, num_train: int, num_test: int,
                  seed: int) -> tuple[TagSet, TagSet]:
  """Draws the train and test examples from one distribution.

  Only labels that occur get a prototype (a random unit vector), so the data
  costs ``O(N)`` memory and time, not ``O(C)``, beyond the label order.
  """
  rng = np.random.default_rng(seed)
  labels = sample_label_lists(num_train + num_test, num_labels, rng)
  used, slot_ids = np.unique(labels, return_inverse=True)
  slot_ids = slot_ids.reshape(labels.shape)
  prototypes = rng.standard_normal((len(used), FEATURE_DIM)).astype(np.float32)
  prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
  # -1 (the padding) sorts first in np.unique: its "prototype" is zero.
  if used[0] == -1:
    prototypes[0] = 0.0
  # Slot by slot: no (N, MAX_LABELS, FEATURE_DIM) temporary.
  features = rng.standard_normal((len(labels), FEATURE_DIM), dtype=np.float32)
  # In place, so that the float64 scale does not promote the features.
  features *= NOISE / np.sqrt(FEATURE_DIM)
  for slot in range(MAX_LABELS):
    features += prototypes[slot_ids[:, slot]]
  train = TagSet(features[:num_train], labels[:num_train])
  test = TagSet(features[num_train:], labels[num_train:])
  return train, test


def label_counts(labels: np.ndarray, num_labels: int) -> np.ndarray:
  """How many examples have each label: ``(num_labels,)`` int64."""
  return np.bincount(labels[labels >= 0], minlength=num_labels)


def inverse_propensities(train_counts: np.ndarray, num_train: int) -> np.ndarray:
  """``1 / p_l`` of every label from its training count: ``losses.inverse_propensity``."""
  return np.asarray(losses.inverse_propensity(train_counts, num_train, a=PROPENSITY_A,
                                              b=PROPENSITY_B))


def ranking_metrics(top: np.ndarray, labels: np.ndarray,
                    inv_propensity: np.ndarray) -> dict[str, float]:
  """Precision@k and propensity-scored precision@k for k in ``KS``.

  ``PSP@k`` is normalised over the data set, as in the Extreme Classification
  Repository's tools (pyxclib): the mean over examples of
  ``(1/k) * sum of 1/p_l over the true labels among the top k`` divided by
  the mean of the same sum for the best ranking, the true labels in
  decreasing ``1/p_l``. So it lies in ``[0, 1]``, and 1 means every example's
  top k are its rarest true labels (or all of them).

  Args:
    top: ``(N, >= max(KS))`` predicted labels, best first.
    labels: ``(N, K)`` true label lists padded with ``-1``.
    inv_propensity: ``(C,)`` ``1 / p_l`` of every label.

  Returns:
    ``{"precision@1": ..., "psp@1": ..., ...}``.
  """
  # -1 never equals a predicted label, so the padding is never a hit.
  hits = (top[:, :, None] == labels[:, None, :]).any(axis=2)
  scored_hits = hits * inv_propensity[top]
  true_weights = np.where(labels >= 0, inv_propensity[np.maximum(labels, 0)], 0.0)
  best_weights = -np.sort(-true_weights, axis=1)
  metrics = {}
  for k in KS:
    metrics[f"precision@{k}"] = float(hits[:, :k].sum(axis=1).mean() / k)
  for k in KS:
    metrics[f"psp@{k}"] = float(scored_hits[:, :k].sum(axis=1).mean() /
                                best_weights[:, :k].sum(axis=1).mean())
  return metrics


class Tagger(nnx.Module):
  """A 2-layer MLP encoder to an embedding, and a linear head with one score per label.

  The head is only ever read as ``kernel`` and ``bias`` by ``jaxmargin.linear``:
  calling it would build the ``(N, C)`` scores.
  """

  def __init__(self, in_features: int, hidden: int, embedding: int, num_labels: int, *,
               rngs: nnx.Rngs):
    self.hidden = nnx.Linear(in_features, hidden, rngs=rngs)
    self.embed = nnx.Linear(hidden, embedding, rngs=rngs)
    self.head = nnx.Linear(embedding, num_labels, rngs=rngs)

  def encode(self, x):
    return self.embed(nnx.relu(self.hidden(x)))


def head_loss(embedding, kernel, bias, labels):
  """The batch's mean margin loss of ``embedding @ kernel + bias``, fused."""
  return linear.multilabel_margin_loss(embedding, kernel, labels, bias=bias, reduction="mean")


def head_top_k(embedding, kernel, bias, k: int):
  """The ``k`` best labels of each row of ``embedding @ kernel + bias``: ``(N, k)``."""
  _, indices = linear.top_k(embedding, kernel, k, bias=bias)
  return indices


# The head's functions are arguments so that extreme_multilabel_sharded.py
# can reuse the steps with the classifier split over devices by class.
@nnx.jit(static_argnames="loss_fn")
def train_step(model: Tagger, optimizer: nnx.Optimizer, features, labels,
               loss_fn: Callable = head_loss):
  """One Adam step on the mean multi-label margin loss of a batch.

  ``loss_fn(embedding, kernel, bias, labels)`` gives that loss from the head's
  parameters (:func:`head_loss` by default).
  """

  def batch_loss(model):
    return loss_fn(model.encode(features), model.head.kernel[...], model.head.bias[...], labels)

  loss, grads = nnx.value_and_grad(batch_loss)(model)
  optimizer.update(model, grads)
  return loss


@nnx.jit(static_argnames=("k", "top_k_fn"))
def predict_top_k(model: Tagger, features, k: int, top_k_fn: Callable = head_top_k):
  """The ``k`` best labels of each example, best first: ``(N, k)``.

  ``top_k_fn(embedding, kernel, bias, k)`` finds them (:func:`head_top_k` by
  default).
  """
  return top_k_fn(model.encode(features), model.head.kernel[...], model.head.bias[...], k)


def save_curves(path: pathlib.Path, history: dict[str, list[float]],
                baseline_precision: float, title: str) -> pathlib.Path:
  """Saves the training loss and held-out precision@1 per epoch as a PNG."""
  path.parent.mkdir(parents=True, exist_ok=True)
  # A bare Figure on the Agg canvas: no pyplot, so no global backend state.
  figure = Figure(figsize=(10, 4), layout="constrained")
  FigureCanvasAgg(figure)
  loss_axes, precision_axes = figure.subplots(1, 2)
  epochs = range(1, len(history["train_loss"]) + 1)
  loss_axes.plot(epochs, history["train_loss"], marker=".")
  loss_axes.set_ylabel("training loss (multilabel_margin_loss)")
  precision_axes.plot(epochs, history["test_precision@1"], marker=".", label="model")
  precision_axes.axhline(baseline_precision, color="grey", linestyle="--",
                         label="most frequent labels")
  precision_axes.set_ylabel("held-out precision@1")
  precision_axes.set_ylim(0, 1)
  precision_axes.legend()
  for axes in (loss_axes, precision_axes):
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
  figure.suptitle(title)
  figure.savefig(path, dpi=100)
  return path


def argument_parser(description: str) -> argparse.ArgumentParser:
  """The command line, without checks that need the parsed values (see :func:`parse_args`)."""
  positive_int = digits_data.positive_int
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--num-labels", type=positive_int, default=100_000)
  parser.add_argument("--epochs", type=positive_int, default=10)
  parser.add_argument("--train-size", type=positive_int, default=20_000)
  parser.add_argument("--test-size", type=positive_int, default=5_000)
  parser.add_argument("--batch-size", type=positive_int, default=512)
  parser.add_argument("--learning-rate", type=float, default=1e-2)
  parser.add_argument("--hidden", type=positive_int, default=256)
  parser.add_argument("--embedding", type=positive_int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT,
                      help="directory for the PNG of the training curves "
                      "(default: examples/output)")
  return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """Exits through ``parser.error`` if the labels are too few for the top ``TOP_K``."""
  if args.num_labels < TOP_K:
    parser.error(f"--num-labels must be at least {TOP_K}")


def parse_args(argv=None) -> argparse.Namespace:
  parser = argument_parser(__doc__.splitlines()[0])
  args = parser.parse_args(argv)
  check_args(parser, args)
  return args


def run(args: argparse.Namespace, *, loss_fn: Callable = head_loss,
        top_k_fn: Callable = head_top_k, place: Callable | None = None,
        wait_each_step: bool = False, plot_name: str = PLOT_NAME,
        title: str = "Flax NNX") -> tuple[dict[str, dict[str, float]], Tagger, nnx.Optimizer]:
  """Trains the tagger, prints its held-out metrics and the baseline's.

  The defaults are this example's; ``extreme_multilabel_sharded.py`` passes
  its class-parallel head functions and placement.

  Args:
    args: from :func:`parse_args`.
    loss_fn: the head's loss, as :func:`train_step` takes it.
    top_k_fn: the head's top k, as :func:`predict_top_k` takes it.
    place: ``place(model, optimizer)``, run once before training, e.g. to put
      the parameters and optimizer state on devices.
    wait_each_step: whether each step finishes before the next starts.
    plot_name: the PNG's file name in ``args.out``.
    title: the end of the plot's title.

  Returns:
    ``{"model": {metric: value}, "baseline": {metric: value}}`` with the
    metrics of :func:`ranking_metrics`, and the trained model and optimizer.
  """
  train, test = make_tag_sets(args.num_labels, args.train_size, args.test_size, args.seed)
  counts = label_counts(train.labels, args.num_labels)
  inv_propensity = inverse_propensities(counts, args.train_size)
  print(f"labels: {args.num_labels}, {np.count_nonzero(counts)} seen in training; "
        f"examples: {args.train_size} train, {args.test_size} held out; "
        f"labels per example: {(train.labels >= 0).sum(axis=1).mean():.2f}")

  # Stable, so that ties in the counts (for tiny data) break the same way.
  most_frequent = np.argsort(-counts, kind="stable")[:TOP_K]
  baseline = ranking_metrics(np.broadcast_to(most_frequent, (args.test_size, TOP_K)),
                             test.labels, inv_propensity)
  for name, value in baseline.items():
    print(f"baseline {name} {value:.4f}")

  model = Tagger(FEATURE_DIM, args.hidden, args.embedding, args.num_labels,
                 rngs=nnx.Rngs(args.seed))
  optimizer = nnx.Optimizer(model, optax.adam(args.learning_rate), wrt=nnx.Param)
  if place is not None:
    place(model, optimizer)
  # The parameters are float32 (Flax's default); so are the inputs, also where
  # jax_enable_x64 is on, so that nothing is promoted to float64.
  train_features = train.features.astype(np.float32)
  test_features = test.features.astype(np.float32)
  final = {}

  def step(state, features, labels):
    loss = train_step(*state, features, labels, loss_fn=loss_fn)
    return state, jax.block_until_ready(loss) if wait_each_step else loss

  def evaluate(state):
    top = np.asarray(predict_top_k(state[0], test_features, TOP_K, top_k_fn=top_k_fn))
    final.update(ranking_metrics(top, test.labels, inv_propensity))
    # Only precision@1 per epoch, for the curve and the progress bar.
    return {"test_precision@1": final["precision@1"]}

  _, history = digits_data.train_epochs(
      step, (model, optimizer), (train_features, train.labels.astype(np.int32)),
      epochs=args.epochs, batch_size=args.batch_size,
      rng=np.random.default_rng(args.seed), evaluate=evaluate,
      desc="multilabel_margin_loss")

  for name, value in final.items():
    print(f"{name} {value:.4f}")
  plot = save_curves(args.out / plot_name, history, baseline["precision@1"],
                     f"Extreme multi-label, {args.num_labels:,} labels ({title})")
  print(f"training curves: {plot}")
  return {"model": dict(final), "baseline": baseline}, model, optimizer


def main(argv=None) -> dict[str, dict[str, float]]:
  """Trains the tagger, prints its held-out metrics and the baseline's; returns both.

  Returns:
    ``{"model": {metric: value}, "baseline": {metric: value}}`` with the
    metrics of :func:`ranking_metrics`.
  """
  results, _, _ = run(parse_args(argv))
  return results


if __name__ == "__main__":
  main()
