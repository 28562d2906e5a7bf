"""Multi-label digit recognition in Flax NNX with torch's two multi-label losses.

Each input is an 8x24 image of 2 or 3 different real handwritten digits side by
side (scikit-learn's bundled 8x8 digits; nothing is downloaded; blank tiles
fill the free slots), and its labels are the set of digits present. The same
MLP is trained twice, from the same initialisation and batch order:

* with ``jaxmargin.nnx.MultiLabelMarginLoss`` (``torch.nn.MultiLabelMarginLoss``),
  whose target is torch's format: the label indices, padded with ``-1``;
* with ``jaxmargin.nnx.MultiLabelSoftMarginLoss``
  (``torch.nn.MultiLabelSoftMarginLoss``), whose target is multi-hot.

For each it prints the test label ranking average precision and the Hamming
loss of the scores thresholded at 0, as
``<loss name>: LRAP <float>, hamming loss <float>``, and it saves both runs'
training loss and test LRAP per epoch as ``digits_multilabel_nnx.png`` in
``--out``.

Run from the repository root (under a minute on a 2-core CPU)::

  python examples/digits_multilabel_nnx.py [--epochs 20] [--out examples/output] [--seed 0]

Needs the ``examples`` extra: ``pip install -e ".[examples]"``.
"""

from __future__ import annotations

import argparse

import numpy as np
import optax
from flax import nnx

import digits_data
from jaxmargin import nnx as jm_nnx

# Next to the examples, wherever they are run from.
PLOT_NAME = "digits_multilabel_nnx.png"


class MLP(nnx.Module):
  """A two-hidden-layer perceptron giving one score per class."""

  def __init__(self, in_features: int, hidden: int, num_classes: int, *, rngs: nnx.Rngs):
    self.hidden1 = nnx.Linear(in_features, hidden, rngs=rngs)
    self.hidden2 = nnx.Linear(hidden, hidden, rngs=rngs)
    self.scores = nnx.Linear(hidden, num_classes, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.hidden1(x))
    x = nnx.relu(self.hidden2(x))
    return self.scores(x)


@nnx.jit
def train_step(model: MLP, optimizer: nnx.Optimizer, loss_fn: nnx.Module, images,
               target):
  """One Adam step; ``loss_fn`` is either loss module, with its own target format."""

  def batch_loss(model):
    return loss_fn(model(images), target)

  loss, grads = nnx.value_and_grad(batch_loss)(model)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def predict(model: MLP, images):
  return model(images)


def train_one(name: str, loss_fn: nnx.Module, train_target: np.ndarray,
              train: digits_data.MultiLabelSet, test: digits_data.MultiLabelSet,
              args: argparse.Namespace) -> tuple[dict[str, float], dict[str, list[float]]]:
  """Trains a fresh model with ``loss_fn``; returns its final test metrics and history."""
  model = MLP(train.features.shape[1], args.hidden, digits_data.NUM_CLASSES,
              rngs=nnx.Rngs(args.seed))
  optimizer = nnx.Optimizer(model, optax.adam(args.learning_rate), wrt=nnx.Param)

  def step(state, images, target):
    return state, train_step(*state, images, target)

  def evaluate(state):
    scores = np.asarray(predict(state[0], test.features))
    return {"test_" + k: v for k, v in digits_data.multilabel_metrics(
        scores, test.multi_hot).items()}

  _, history = digits_data.train_epochs(
      step, (model, optimizer, loss_fn), (train.features, train_target),
      epochs=args.epochs, batch_size=args.batch_size,
      rng=np.random.default_rng(args.seed), evaluate=evaluate, desc=name)
  final = {"lrap": history["test_lrap"][-1], "hamming": history["test_hamming"][-1]}
  return final, history


def main(argv=None) -> dict[str, dict[str, float]]:
  """Trains with both losses, prints their test metrics and returns them by loss name."""
  args = digits_data.multilabel_arguments(__doc__.splitlines()[0], argv)
  train, test = digits_data.make_multilabel_split(
      digits_data.load_digits_split(), args.train_size, args.test_size, args.seed)
  runs = {
      "multilabel_margin_loss": (jm_nnx.MultiLabelMarginLoss(), train.padded),
      "multilabel_soft_margin_loss": (jm_nnx.MultiLabelSoftMarginLoss(), train.multi_hot),
  }
  results, histories = {}, {}
  for name, (loss_fn, train_target) in runs.items():
    results[name], histories[name] = train_one(name, loss_fn, train_target, train, test,
                                               args)

  digits_data.report_multilabel(results, histories, args.out / PLOT_NAME,
                                "Multi-label digits (Flax NNX)")
  return results


if __name__ == "__main__":
  main()
