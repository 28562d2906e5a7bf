"""Multi-label digit recognition in Flax linen with torch's two multi-label losses.

The linen twin of ``digits_multilabel_nnx.py``: the same 8x24 images of 2 or 3
different real handwritten digits (scikit-learn's bundled 8x8 digits; nothing
is downloaded), labelled with the set of digits present, and the same MLP,
here a ``flax.linen`` module trained with a ``flax.training.train_state.TrainState``
and Adam. It is trained twice, from the same initialisation and batch order:

* with ``jaxmargin.linen.MultiLabelMarginLoss`` (``torch.nn.MultiLabelMarginLoss``),
  whose target is torch's format: the label indices, padded with ``-1``;
* with ``jaxmargin.linen.MultiLabelSoftMarginLoss``
  (``torch.nn.MultiLabelSoftMarginLoss``), whose target is multi-hot.

The loss modules hold no variables, so they are applied with empty variables,
``loss_fn.apply({}, scores, target)``. For each loss it prints the test label
ranking average precision and the Hamming loss of the scores thresholded at
0, as ``<loss name>: LRAP <float>, hamming loss <float>``, and it saves both
runs' training loss and test LRAP per epoch as ``digits_multilabel_linen.png``
in ``--out``.

Run from the repository root (under a minute on a 2-core CPU)::

  python examples/digits_multilabel_linen.py [--epochs 20] [--out examples/output] [--seed 0]

Needs the ``examples`` extra: ``pip install -e ".[examples]"``.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax.training import train_state

import digits_data
from jaxmargin import linen as jm_linen

# Next to the examples, wherever they are run from.
PLOT_NAME = "digits_multilabel_linen.png"


class MLP(nn.Module):
  """A two-hidden-layer perceptron giving one score per class."""

  hidden: int
  num_classes: int

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(self.hidden)(x))
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(self.num_classes)(x)


def make_train_step(loss_fn: nn.Module):
  """A jitted Adam step for ``loss_fn``, which the step closes over as a constant."""

  @jax.jit
  def train_step(state: train_state.TrainState, images, target):

    def batch_loss(params):
      return loss_fn.apply({}, state.apply_fn({"params": params}, images), target)

    loss, grads = jax.value_and_grad(batch_loss)(state.params)
    return state.apply_gradients(grads=grads), loss

  return train_step


def train_one(name: str, loss_fn: nn.Module, train_target: np.ndarray,
              train: digits_data.MultiLabelSet, test: digits_data.MultiLabelSet,
              args: argparse.Namespace) -> tuple[dict[str, float], dict[str, list[float]]]:
  """Trains a fresh model with ``loss_fn``; returns its final test metrics and history."""
  model = MLP(args.hidden, digits_data.NUM_CLASSES)
  params = model.init(jax.random.key(args.seed),
                      jnp.zeros((1, train.features.shape[1]), jnp.float32))["params"]
  state = train_state.TrainState.create(apply_fn=model.apply, params=params,
                                        tx=optax.adam(args.learning_rate))
  predict = jax.jit(lambda params, images: model.apply({"params": params}, images))

  def evaluate(state):
    scores = np.asarray(predict(state.params, test.features))
    return {"test_" + k: v for k, v in digits_data.multilabel_metrics(
        scores, test.multi_hot).items()}

  _, history = digits_data.train_epochs(
      make_train_step(loss_fn), state, (train.features, train_target),
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
      "multilabel_margin_loss": (jm_linen.MultiLabelMarginLoss(), train.padded),
      "multilabel_soft_margin_loss": (jm_linen.MultiLabelSoftMarginLoss(),
                                      train.multi_hot),
  }
  results, histories = {}, {}
  for name, (loss_fn, train_target) in runs.items():
    results[name], histories[name] = train_one(name, loss_fn, train_target, train, test,
                                               args)

  digits_data.report_multilabel(results, histories, args.out / PLOT_NAME,
                                "Multi-label digits (Flax linen)")
  return results


if __name__ == "__main__":
  main()
