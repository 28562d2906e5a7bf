"""Digit classifier in Flax NNX trained with torch's multi-class margin loss.

An MLP reads the 64 pixels of scikit-learn's bundled 8x8 handwritten digits
(nothing is downloaded) and is trained with ``jaxmargin.nnx.MultiMarginLoss``
(``torch.nn.MultiMarginLoss``: a hinge on every class that comes within the
margin of the true one) and Adam, via ``nnx.Optimizer`` and an ``nnx.jit``
train step that takes the loss module as an argument. It prints the test
accuracy as ``test accuracy: 0.9xxx`` and saves the training curves as
``digits_classifier_nnx.png`` in ``--out``.

Run from the repository root (under a minute on a 2-core CPU)::

  python examples/digits_classifier_nnx.py [--epochs 30] [--out examples/output] [--seed 0]

Needs the ``examples`` extra: ``pip install -e ".[examples]"``.
"""

from __future__ import annotations

import argparse
import pathlib

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import digits_data
from jaxmargin import nnx as jm_nnx

# Next to the examples, wherever they are run from.
DEFAULT_OUT = digits_data.DEFAULT_OUT
PLOT_NAME = "digits_classifier_nnx.png"


class MLP(nnx.Module):
  """A one-hidden-layer perceptron giving one score per class."""

  def __init__(self, in_features: int, hidden: int, num_classes: int, *, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(in_features, hidden, rngs=rngs)
    self.scores = nnx.Linear(hidden, num_classes, rngs=rngs)

  def __call__(self, x):
    return self.scores(nnx.relu(self.hidden(x)))


@nnx.jit
def train_step(model: MLP, optimizer: nnx.Optimizer, loss_fn: jm_nnx.MultiMarginLoss,
               images, labels):
  """One Adam step; ``nnx.jit`` splits the ``loss_fn`` module like the model."""

  def batch_loss(model):
    return loss_fn(model(images), labels)

  loss, grads = nnx.value_and_grad(batch_loss)(model)
  optimizer.update(model, grads)
  return loss


@nnx.jit
def predict(model: MLP, images):
  return jnp.argmax(model(images), axis=-1)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=digits_data.positive_int, default=30)
  parser.add_argument("--batch-size", type=digits_data.positive_int, default=32)
  parser.add_argument("--learning-rate", type=float, default=1e-3)
  parser.add_argument("--hidden", type=digits_data.positive_int, default=128)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT,
                      help="directory for the PNG of the training curves "
                      "(default: examples/output)")
  return parser.parse_args(argv)


def main(argv=None) -> float:
  """Trains the classifier, prints its test accuracy and returns it."""
  args = parse_args(argv)
  split = digits_data.load_digits_split()
  train_x = split.train_images.reshape(len(split.train_images), -1)
  test_x = split.test_images.reshape(len(split.test_images), -1)

  model = MLP(train_x.shape[1], args.hidden, digits_data.NUM_CLASSES,
              rngs=nnx.Rngs(args.seed))
  optimizer = nnx.Optimizer(model, optax.adam(args.learning_rate), wrt=nnx.Param)
  loss_fn = jm_nnx.MultiMarginLoss(p=1, margin=1.0)

  def step(state, images, labels):
    return state, train_step(*state, images, labels)

  def test_accuracy(state):
    return float(np.mean(np.asarray(predict(state[0], test_x)) == split.test_labels))

  _, history = digits_data.train_epochs(
      step, (model, optimizer, loss_fn), (train_x, split.train_labels),
      epochs=args.epochs, batch_size=args.batch_size,
      rng=np.random.default_rng(args.seed),
      evaluate=lambda state: {"test_accuracy": test_accuracy(state)},
      desc="multi_margin_loss")

  accuracy = history["test_accuracy"][-1]
  print(f"test accuracy: {accuracy:.4f}")
  plot = digits_data.save_curves(
      args.out / PLOT_NAME, {"multi_margin_loss": history},
      [("train_loss", "training loss"), ("test_accuracy", "test accuracy")],
      "Digits classifier (Flax NNX, MultiMarginLoss)")
  print(f"training curves: {plot}")
  return accuracy


if __name__ == "__main__":
  main()
