"""What the checkify checks cost a training step: JAX's dispatch, per array.

Usage (from the repository root, after ``pip install -e ".[bench]"``)::

    python benchmarks/dispatch.py

Times one jitted SGD step of a small multi-layer perceptron trained with
``jaxmargin.multi_margin_loss``, traced with the value checks on (the default)
and off (``jaxmargin.value_checks(False)``), for models of 2 to 400 parameter
arrays. The layers are tiny, so the step time is mostly dispatch: a jitted
function that holds a ``checkify.debug_check`` runs on JAX's Python dispatch
path, whose cost grows with the number of arrays passed in and out. Writes
``<out>/dispatch-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxmargin

HERE = pathlib.Path(__file__).resolve().parent
WIDTH, BATCH, CLASSES = 16, 64, 10


def init_params(num_layers, key):
  keys = jax.random.split(key, num_layers)
  sizes = [WIDTH] * num_layers + [CLASSES]
  return [{"w": jax.random.normal(k, (m, n)) / np.sqrt(m), "b": jnp.zeros(n)}
          for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def loss_fn(params, x, y):
  for layer in params[:-1]:
    x = jax.nn.relu(x @ layer["w"] + layer["b"])
  return jaxmargin.multi_margin_loss(x @ params[-1]["w"] + params[-1]["b"], y)


def sgd_step(params, x, y):
  loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
  return jax.tree.map(lambda p, g: p - 0.01 * g, params, grads), loss


def timed_steps(num_layers, repeats):
  """Median step times (ms), checks on and off, interleaved."""
  params = init_params(num_layers, jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (BATCH, WIDTH))
  y = jax.random.randint(jax.random.key(2), (BATCH,), 0, CLASSES)
  steps = []
  for checks in (True, False):
    # A fresh function per setting: the setting is read when the step is
    # traced, and JAX caches traces by function.
    step = jax.jit(lambda params, x, y: sgd_step(params, x, y))
    with jaxmargin.value_checks(checks):
      jax.block_until_ready(step(params, x, y))
    steps.append(lambda step=step: jax.block_until_ready(step(params, x, y)))
  times = [[], []]
  for repeat in range(repeats):
    for k in range(2):
      i = (repeat + k) % 2
      start = time.perf_counter()
      steps[i]()
      times[i].append(time.perf_counter() - start)
  return [float(np.median(t) * 1e3) for t in times]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=200)
  parser.add_argument("--out", type=pathlib.Path, default=HERE / "results")
  args = parser.parse_args()

  results = []
  print(f"{'parameter arrays':>16} {'checks on ms':>13} {'checks off ms':>14} {'difference ms':>14}")
  for num_layers in (1, 10, 50, 200):
    on, off = timed_steps(num_layers, args.repeats)
    arrays = 2 * num_layers
    results.append({"parameter_arrays": arrays, "checks_on_ms": on, "checks_off_ms": off})
    print(f"{arrays:>16} {on:>13.3f} {off:>14.3f} {on - off:>14.3f}")

  device = jax.devices()[0]
  name = "cpu" if device.platform == "cpu" else device.device_kind.replace(" ", "-").lower()
  args.out.mkdir(parents=True, exist_ok=True)
  path = args.out / f"dispatch-{name}.json"
  path.write_text(json.dumps({"device": device.device_kind, "jax": jax.__version__,
                              "python": platform.python_version(), "repeats": args.repeats,
                              "results": results}, indent=1))
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
