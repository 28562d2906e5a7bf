"""What the checkify checks cost a training step: JAX's dispatch, per array.

Usage (from the repository root, after ``pip install -e ".[bench]"``)::

    python benchmarks/dispatch.py

Times one jitted SGD step of a small multi-layer perceptron trained with
``jaxmargin.multi_margin_loss`` for models of 2 to 400 parameter arrays,
traced three ways: with the value checks on (the default: an effect-free
primitive, ``jaxmargin/_checkify_guard.py``), off
(``jaxmargin.value_checks(False)``), and with the ``checkify.debug_check``
that jaxmargin falls back to on a JAX that cannot host the primitive. The
layers are tiny, so the step time is mostly dispatch: a jitted function whose
jaxpr has an effect, as a ``debug_check`` gives it, runs on JAX's Python
dispatch path, whose cost grows with the number of arrays passed in and out.
Writes ``<out>/dispatch-<device>.json``.
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
from jaxmargin import _checkify_guard

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


SETTINGS = ("checks on", "checks off", "debug_check")


def traced_step(setting, params, x, y):
  """A jitted step, traced (first called) with the checks of ``setting``."""
  # A fresh function per setting: the setting is read when the step is
  # traced, and JAX caches traces by function.
  step = jax.jit(lambda params, x, y: sgd_step(params, x, y))
  primitive = _checkify_guard.checked_p
  if setting == "debug_check":
    _checkify_guard.checked_p = None   # the fallback of a JAX without the primitive
  try:
    with jaxmargin.value_checks(setting != "checks off"):
      jax.block_until_ready(step(params, x, y))
  finally:
    _checkify_guard.checked_p = primitive
  return lambda: jax.block_until_ready(step(params, x, y))


def timed_steps(num_layers, repeats):
  """Median step times (ms) for each of ``SETTINGS``, interleaved."""
  params = init_params(num_layers, jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (BATCH, WIDTH))
  y = jax.random.randint(jax.random.key(2), (BATCH,), 0, CLASSES)
  steps = [traced_step(setting, params, x, y) for setting in SETTINGS]
  times = [[] for _ in steps]
  for repeat in range(repeats):
    for k in range(len(steps)):
      i = (repeat + k) % len(steps)
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
  print(f"{'parameter arrays':>16} {'checks on ms':>13} {'checks off ms':>14} "
        f"{'debug_check ms':>15}")
  for num_layers in (1, 10, 50, 200):
    on, off, debug_check = timed_steps(num_layers, args.repeats)
    arrays = 2 * num_layers
    results.append({"parameter_arrays": arrays, "checks_on_ms": on, "checks_off_ms": off,
                    "debug_check_ms": debug_check})
    print(f"{arrays:>16} {on:>13.3f} {off:>14.3f} {debug_check:>15.3f}")

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
