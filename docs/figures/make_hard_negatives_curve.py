"""Draws the multi-label margin loss against hard_negatives=k: docs/_static/hard_negatives.png.

A batch of 512 examples over C = 32 classes, 3 labels each. The scores are
Gaussian, with the labels' scores raised by a separation s: s = 0 is an
untrained model, a larger s a better one. For each s the mean loss with
``hard_negatives=k`` is drawn against k, as a fraction of the loss over every
negative (k = C). Values come from ``jaxmargin.losses.multilabel_margin_loss``.

Run from the repository root (needs matplotlib, e.g. the ``docs`` extra)::

  python docs/figures/make_hard_negatives_curve.py [--out docs/_static/hard_negatives.png]
"""

from __future__ import annotations

import argparse
import pathlib

import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")  # Files only: no display needed, as in CI.
import matplotlib.pyplot as plt

from jaxmargin import losses

NUM_EXAMPLES, NUM_CLASSES, NUM_LABELS = 512, 32, 3
KS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 29)  # 29 = C - 3: every negative
SEPARATIONS = (0.0, 1.0, 2.0, 3.0)
DEFAULT_OUT = pathlib.Path(__file__).resolve().parents[1] / "_static" / "hard_negatives.png"


def problem(separation):
  """Gaussian scores with the labels' raised by ``separation``, and the multi-hot labels."""
  rng = np.random.default_rng(0)
  labels = np.zeros((NUM_EXAMPLES, NUM_CLASSES), np.int32)
  for row in labels:
    row[rng.choice(NUM_CLASSES, NUM_LABELS, replace=False)] = 1
  scores = rng.normal(size=labels.shape) + separation * labels
  return jnp.asarray(scores, jnp.float32), jnp.asarray(labels)


def mean_loss(scores, labels, k):
  return float(jnp.mean(losses.multilabel_margin_loss(scores, labels, hard_negatives=k)))


def draw(out: pathlib.Path) -> None:
  fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
  for separation in SEPARATIONS:
    scores, labels = problem(separation)
    curve = np.array([mean_loss(scores, labels, k) for k in KS])
    label = f"label scores + {separation:g}"
    left.plot(KS, curve, marker="o", markersize=3, label=label)
    right.plot(KS, curve / curve[-1], marker="o", markersize=3, label=label)
  left.set_ylabel("mean loss")
  right.set_ylabel("fraction of the loss over every negative")
  for axes in (left, right):
    axes.set_xlabel("hard_negatives = k")
    axes.set_xscale("log", base=2)
    axes.set_xticks(KS, [str(k) for k in KS])
    axes.grid(alpha=0.3)
  right.legend(fontsize=8)
  fig.suptitle(
    f"multilabel_margin_loss(..., hard_negatives=k): {NUM_EXAMPLES} examples, "
    f"C = {NUM_CLASSES}, {NUM_LABELS} labels each, Gaussian scores",
    fontsize=10,
  )
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=110)
  plt.close(fig)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
  draw(parser.parse_args(argv).out)


if __name__ == "__main__":
  main()
