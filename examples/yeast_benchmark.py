"""The Yeast multi-label benchmark: jaxmargin's losses on the literature's fixed split.

Yeast (Elisseeff and Weston, NIPS 2001) describes 2,417 yeast genes by 103
features (micro-array expression and phylogenetic profiles); each gene has
some of 14 functional classes, 4.24 on average. The data is the copy inside
the ``river`` package (``river.datasets.Yeast``, a CSV file in its wheel:
nothing is downloaded). The split is the literature's fixed one, 1,500 genes
for training and 917 for testing, which MULAN ships as ``yeast-train.arff``
and ``yeast-test.arff``. river's file holds the rows of MULAN's test file
(917) followed by those of its training file (1,500), each in order, so the
training genes are river's *last* 1,500 rows, not its first (checked row by
row against both MULAN files; ``tests/test_yeast_example.py`` checks the
first and last row of each part).

Two models, a linear one and an MLP with one hidden layer of 64 tanh units,
are trained (Flax NNX, Optax AdamW, minibatches of 50, one compiled
``lax.scan`` per run) with each of:

* ``multilabel_margin``: ``jaxmargin.losses.multilabel_margin_loss``, the
  loss Rank-SVM minimises (torch's ``MultiLabelMarginLoss``);
* ``multilabel_soft_margin``: ``jaxmargin.losses.multilabel_soft_margin_loss``
  (torch's ``MultiLabelSoftMarginLoss``, a logistic loss per label);
* ``margin_inverse_propensity``: the margin loss with ``class_weights``
  from ``jaxmargin.losses.inverse_propensity`` (Jain, Prabhu and Varma, KDD
  2016; their A = 0.55, B = 1.5): rare labels weigh up to 2.4 times the
  most frequent;
* ``margin_hard_negatives``: the margin loss with ``hard_negatives=K``: each
  gene's labels are pushed above only its K highest-scoring non-labels
  (``--hard-negatives``, 3 by default; see ``docs/yeast.md`` for why).

It prints one table row per run, and one for a baseline that scores every
gene with the training label frequencies, with the five metrics of the
literature (see ``multilabel_metrics.py``): hamming loss, ranking loss,
one-error, coverage and average precision, on the 917 test genes. The
hamming loss needs predicted label sets: the soft margin runs predict the
labels whose score is above 0 (sigmoid above 0.5); the margin runs, whose
loss leaves the scores' offset free, predict with Elisseeff and Weston's
threshold function fitted on the training scores, as Rank-SVM and BP-MLL
do; the baseline predicts the labels of more than half the training genes.
It saves a bar chart of the five metrics as ``yeast_benchmark.png`` in
``--out``.

The hyperparameters were chosen by hand with ``--validation``, which trains on
the first 1,200 training genes and reports on the other 300, never on the
test genes.

Run from the repository root (under 2 minutes on a 2-core CPU)::

  python examples/yeast_benchmark.py [--out examples/output] [--seed 0]
      [--linear-epochs 200] [--mlp-epochs 30] [--hard-negatives 3] [--validation]
      [--losses multilabel_margin ...]

Needs the ``yeast`` extra: ``pip install -e ".[yeast]"``.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import multilabel_metrics
import numpy as np
import optax
from flax import nnx
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from river import datasets
from tqdm.auto import tqdm

from jaxmargin import losses

DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / "output"
PLOT_NAME = "yeast_benchmark.png"
NUM_FEATURES = 103
NUM_LABELS = 14
# river's rows: MULAN's 917 test genes, then its 1,500 training genes.
NUM_TEST = 917
NUM_TRAIN = 1500
# --validation: the first VALIDATION_TRAIN training genes train, the rest validate.
VALIDATION_TRAIN = 1200
BATCH_SIZE = 50
HIDDEN = 64
# Jain, Prabhu and Varma's constants for data sets other than Wikipedia-LSHTC and Amazon.
PROPENSITY_A = 0.55
PROPENSITY_B = 1.5
LOSSES = (
  "multilabel_margin",
  "multilabel_soft_margin",
  "margin_inverse_propensity",
  "margin_hard_negatives",
)
MODELS = ("linear", "mlp")
# The losses' labels on the chart's axes.
CHART_NAMES = {
  "multilabel_margin": "margin",
  "multilabel_soft_margin": "soft\nmargin",
  "margin_inverse_propensity": "margin,\n1/p weights",
  "margin_hard_negatives": "margin,\nhard neg.",
}
# (learning rate, AdamW weight decay) per model, chosen with --validation.
OPTIMIZER = {"linear": (3e-3, 1.0), "mlp": (1e-3, 3.0)}
BASELINE: tuple[str, str] = ("baseline", "label_frequencies")
COLUMNS = ("model", "loss", *multilabel_metrics.METRICS)


@dataclasses.dataclass(frozen=True)
class Split:
  """Genes and their labels: ``features (N, 103)`` float32, ``labels (N, 14)`` float32 0/1."""

  features: np.ndarray
  labels: np.ndarray


def load_yeast() -> tuple[Split, Split]:
  """The literature's split of river's Yeast: ``(train, test)``, 1,500 and 917 genes."""
  dataset = datasets.Yeast()
  feature_names = [f"Att{i}" for i in range(1, NUM_FEATURES + 1)]
  label_names = [f"Class{j}" for j in range(1, NUM_LABELS + 1)]
  features, labels = [], []
  for x, y in dataset:
    features.append([x[name] for name in feature_names])
    labels.append([y[name] for name in label_names])
  features, labels = np.asarray(features, np.float32), np.asarray(labels, np.float32)
  if len(features) != NUM_TEST + NUM_TRAIN:
    raise ValueError(f"river's Yeast has {len(features)} rows; expected {NUM_TEST + NUM_TRAIN}")
  test = Split(features[:NUM_TEST], labels[:NUM_TEST])
  train = Split(features[NUM_TEST:], labels[NUM_TEST:])
  return train, test


def splits(*, validation: bool) -> tuple[Split, Split]:
  """``(train, test)``; with ``validation``, the training genes split in two instead."""
  train, test = load_yeast()
  if not validation:
    return train, test
  return (
    Split(train.features[:VALIDATION_TRAIN], train.labels[:VALIDATION_TRAIN]),
    Split(train.features[VALIDATION_TRAIN:], train.labels[VALIDATION_TRAIN:]),
  )


def standardized(train: Split, test: Split) -> tuple[Split, Split]:
  """Both splits with each feature scaled to the training mean 0 and variance 1."""
  mean, std = train.features.mean(axis=0), train.features.std(axis=0)
  return (
    Split((train.features - mean) / std, train.labels),
    Split((test.features - mean) / std, test.labels),
  )


class Linear(nnx.Module):
  """One score per label, linear in the features."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.scores = nnx.Linear(NUM_FEATURES, NUM_LABELS, rngs=rngs)

  def __call__(self, x):
    return self.scores(x)


class MLP(nnx.Module):
  """One hidden layer of tanh units, then one score per label."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(NUM_FEATURES, HIDDEN, rngs=rngs)
    self.scores = nnx.Linear(HIDDEN, NUM_LABELS, rngs=rngs)

  def __call__(self, x):
    return self.scores(jnp.tanh(self.hidden(x)))


def objective(loss: str, train: Split, hard_negatives: int) -> Callable:
  """The batch objective ``(scores, labels) -> mean loss`` of a run of :data:`LOSSES`."""
  if loss == "multilabel_margin":
    return lambda scores, labels: losses.multilabel_margin_loss(scores, labels).mean()
  if loss == "multilabel_soft_margin":
    return lambda scores, labels: losses.multilabel_soft_margin_loss(scores, labels).mean()
  if loss == "margin_inverse_propensity":
    weights = losses.inverse_propensity(
      train.labels.sum(axis=0), len(train.labels), a=PROPENSITY_A, b=PROPENSITY_B
    )
    return lambda scores, labels: losses.multilabel_margin_loss(
      scores, labels, class_weights=weights
    ).mean()
  if loss == "margin_hard_negatives":
    return lambda scores, labels: losses.multilabel_margin_loss(
      scores, labels, hard_negatives=hard_negatives
    ).mean()
  raise ValueError(f"objective: unknown loss {loss!r}; expected one of {LOSSES}")


def batch_order(num_examples: int, epochs: int, rng: np.random.Generator) -> np.ndarray:
  """``(epochs * steps, BATCH_SIZE)`` row indices: each epoch a fresh shuffle, rest dropped."""
  steps = num_examples // BATCH_SIZE
  return np.concatenate(
    [rng.permutation(num_examples)[: steps * BATCH_SIZE].reshape(steps, -1) for _ in range(epochs)]
  )


def train(
  model: nnx.Module,
  loss_fn: Callable,
  data: Split,
  *,
  epochs: int,
  learning_rate: float,
  weight_decay: float,
  rng: np.random.Generator,
) -> nnx.Module:
  """Trains ``model`` with AdamW on minibatches; returns the trained model.

  All steps run in one jitted ``lax.scan``: the data is small, so the time
  is the steps' own, not Python's dispatch of thousands of them.
  """
  graphdef, params = nnx.split(model, nnx.Param)
  optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)
  features, labels = jnp.asarray(data.features), jnp.asarray(data.labels)

  def batch_loss(params, rows):
    return loss_fn(nnx.merge(graphdef, params)(features[rows]), labels[rows])

  def step(carry, rows):
    params, state = carry
    loss, grads = jax.value_and_grad(batch_loss)(params, rows)
    updates, state = optimizer.update(grads, state, params)
    return (optax.apply_updates(params, updates), state), loss

  @jax.jit
  def run(params, order):
    (params, _), step_losses = jax.lax.scan(step, (params, optimizer.init(params)), order)
    return params, step_losses

  params, step_losses = run(params, jnp.asarray(batch_order(len(labels), epochs, rng)))
  if not np.isfinite(np.asarray(step_losses)).all():
    raise FloatingPointError("train: a training loss is not finite")
  return nnx.merge(graphdef, params)


def scores_of(model: nnx.Module, features: np.ndarray) -> np.ndarray:
  return np.asarray(model(jnp.asarray(features)), np.float64)


def run_one(
  model_name: str, loss: str, train_split: Split, test_split: Split, args: argparse.Namespace
) -> dict[str, float]:
  """Trains one model with one loss from the seed's initialisation; its test metrics."""
  rngs = nnx.Rngs(args.seed)
  model = Linear(rngs=rngs) if model_name == "linear" else MLP(rngs=rngs)
  learning_rate, weight_decay = OPTIMIZER[model_name]
  epochs = args.linear_epochs if model_name == "linear" else args.mlp_epochs
  model = train(
    model,
    objective(loss, train_split, args.hard_negatives),
    train_split,
    epochs=epochs,
    learning_rate=learning_rate,
    weight_decay=weight_decay,
    rng=np.random.default_rng(args.seed),
  )
  test_scores = scores_of(model, test_split.features)
  if loss == "multilabel_soft_margin":
    predicted = test_scores > 0.0
  else:
    threshold = multilabel_metrics.ThresholdFunction(
      scores_of(model, train_split.features), train_split.labels
    )
    predicted = threshold.predict(test_scores)
  return multilabel_metrics.evaluate(test_scores, test_split.labels, predicted)


def baseline(train_split: Split, test_split: Split) -> dict[str, float]:
  """Every gene gets the training label frequencies as scores; predicts the majority labels."""
  frequencies = train_split.labels.mean(axis=0)
  scores = np.broadcast_to(frequencies, test_split.labels.shape)
  return multilabel_metrics.evaluate(scores, test_split.labels, scores > 0.5)


def format_table(results: dict[tuple[str, str], dict[str, float]]) -> str:
  """The results as a Markdown table, one row per (model, loss)."""
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  for (model_name, loss), metrics in results.items():
    values = [f"{metrics[name]:.4f}" for name in multilabel_metrics.METRICS]
    lines.append("| " + " | ".join([model_name, loss, *values]) + " |")
  return "\n".join(lines)


def save_chart(
  path: pathlib.Path, results: dict[tuple[str, str], dict[str, float]], title: str
) -> pathlib.Path:
  """A PNG with one bar chart per metric: a group of bars per loss, a bar per model.

  The value axes do not start at 0: the runs differ by a few hundredths.
  """
  path.parent.mkdir(parents=True, exist_ok=True)
  # A bare Figure on the Agg canvas: no pyplot, so no global backend state.
  figure = Figure(figsize=(18, 4.2), layout="constrained")
  FigureCanvasAgg(figure)
  runs = [key for key in results if key != BASELINE]
  groups = list(dict.fromkeys(loss for _, loss in runs))
  models = list(dict.fromkeys(model_name for model_name, _ in runs))
  width = 0.8 / len(models)
  metrics = multilabel_metrics.METRICS
  for axes, metric in zip(figure.subplots(1, len(metrics)), metrics, strict=True):
    for m, model_name in enumerate(models):
      offset = (m - (len(models) - 1) / 2) * width
      present = [g for g, loss in enumerate(groups) if (model_name, loss) in results]
      heights = [results[model_name, groups[g]][metric] for g in present]
      axes.bar([g + offset for g in present], heights, width, label=model_name)
    if BASELINE in results:
      axes.axhline(
        results[BASELINE][metric],
        color="grey",
        linestyle="--",
        label="baseline (label frequencies)",
      )
    shown = [values[metric] for values in results.values()]
    low, high = min(shown), max(shown)
    axes.set_ylim(low - 0.6 * (high - low) - 1e-3, high + 0.15 * (high - low) + 1e-3)
    axes.set_xticks(range(len(groups)), [CHART_NAMES.get(g, g) for g in groups], fontsize=7)
    better = "higher" if metric == "average_precision" else "lower"
    axes.set_title(f"{metric.replace('_', ' ')} ({better} is better)")
    axes.grid(axis="y", alpha=0.3)
  handles, labels = figure.axes[0].get_legend_handles_labels()
  figure.legend(handles, labels, loc="outside right center")
  figure.suptitle(title)
  figure.savefig(path, dpi=100)
  return path


def positive_int(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
  return value


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
  parser.add_argument("--linear-epochs", type=positive_int, default=200)
  parser.add_argument("--mlp-epochs", type=positive_int, default=30)
  parser.add_argument(
    "--hard-negatives", type=positive_int, default=3, help="K of the margin_hard_negatives runs"
  )
  parser.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--validation",
    action="store_true",
    help=f"train on the first {VALIDATION_TRAIN} training genes and report on "
    "the rest (for choosing hyperparameters), not on the test genes",
  )
  parser.add_argument(
    "--out",
    type=pathlib.Path,
    default=DEFAULT_OUT,
    help="directory for the PNG (default: examples/output)",
  )
  return parser.parse_args(argv)


def main(argv=None) -> dict[tuple[str, str], dict[str, float]]:
  """Trains every (model, loss) run, prints the table and saves the chart; returns the table."""
  args = parse_args(argv)
  train_split, test_split = standardized(*splits(validation=args.validation))
  part = "validation" if args.validation else "test"
  print(
    f"Yeast from river: {len(train_split.labels)} training and {len(test_split.labels)} "
    f"{part} genes, {NUM_FEATURES} features, {NUM_LABELS} labels"
  )
  results: dict[tuple[str, str], dict[str, float]] = {BASELINE: baseline(train_split, test_split)}
  runs = [(model_name, loss) for loss in args.losses for model_name in MODELS]
  for model_name, loss in tqdm(runs, desc="Yeast runs", unit="run"):
    results[model_name, loss] = run_one(model_name, loss, train_split, test_split, args)
  print(format_table(results))
  chart = save_chart(
    args.out / PLOT_NAME,
    results,
    f"Yeast, {len(test_split.labels)} {part} genes (seed {args.seed})",
  )
  print(f"bar chart: {chart}")
  return results


if __name__ == "__main__":
  main()
