"""Draws each loss and its gradient as a function of one score: docs/_static/loss_curves.png.

The scores are torch's documentation example, x = [0.1, 0.2, 0.4, 0.8]; one
score at a time sweeps [-2, 2] while the others stay fixed. Values and
gradients come from jaxmargin itself (``jax.grad`` of the public functions).

Run from the repository root (needs matplotlib, e.g. the ``docs`` extra)::

  python docs/figures/make_loss_curves.py [--out docs/_static/loss_curves.png]
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")  # Files only: no display needed, as in CI.
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

import jaxmargin  # noqa: E402

SCORES = jnp.array([[0.1, 0.2, 0.4, 0.8]])
SWEEP = jnp.linspace(-2.0, 2.0, 801)
DEFAULT_OUT = pathlib.Path(__file__).resolve().parents[1] / "_static" / "loss_curves.png"

# (title, loss of the scores, [(curve label, index of the swept score)]).
PANELS = [
    ("multilabel_margin_loss\ntarget [3, 0, -1, 1]: labels {0, 3}",
     lambda x: jaxmargin.multilabel_margin_loss(x, jnp.array([[3, 0, -1, 1]])),
     [("label score $x_0$", 0), ("non-label score $x_1$", 1)]),
    ("multi_margin_loss\ntarget 3",
     lambda x: jaxmargin.multi_margin_loss(x, jnp.array([3])),
     [("target score $x_3$", 3), ("other score $x_1$", 1)]),
    ("multilabel_soft_margin_loss\ntarget [1, 0, 0, 1]",
     lambda x: jaxmargin.multilabel_soft_margin_loss(x, jnp.array([[1.0, 0.0, 0.0, 1.0]])),
     [("label score $x_0$", 0), ("non-label score $x_1$", 1)]),
]


def sweep(loss, index):
  """The loss and its derivative in score ``index`` along ``SWEEP``."""

  def at(value):
    x = SCORES.at[0, index].set(value)
    loss_value, grad = jax.value_and_grad(loss)(x)
    return loss_value, grad[0, index]

  # One compiled sweep: far quicker than running the vmapped ops one by one.
  return jax.jit(jax.vmap(at))(SWEEP)


def draw(out: pathlib.Path) -> None:
  fig, axes = plt.subplots(2, len(PANELS), figsize=(12, 6), sharex=True, layout="constrained")
  for column, (title, loss, curves) in enumerate(PANELS):
    for label, index in curves:
      values, grads = sweep(loss, index)
      axes[0, column].plot(SWEEP, values, label=label)
      axes[1, column].plot(SWEEP, grads, label=label)
      # Where the swept score sits in the fixed example.
      axes[0, column].axvline(float(SCORES[0, index]), color="0.85", linewidth=0.8, zorder=0)
    axes[0, column].set_title(title, fontsize=10)
    axes[0, column].legend(fontsize=8)
    axes[1, column].set_xlabel("swept score")
  fig.suptitle("One score swept, the others fixed at x = [0.1, 0.2, 0.4, 0.8] "
               "(grey lines: the swept score's value there)", fontsize=10)
  axes[0, 0].set_ylabel("loss ('mean')")
  axes[1, 0].set_ylabel("d loss / d swept score")
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=110)
  plt.close(fig)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
  draw(parser.parse_args(argv).out)


if __name__ == "__main__":
  main()
