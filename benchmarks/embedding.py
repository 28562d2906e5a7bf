"""Benchmark the embedding losses against torch 2.13 (CPU) and a one-pass floor.

Usage (from the repository root, after ``pip install -e ".[bench]"``)::

    python benchmarks/embedding.py              # full run: table and JSON
    python benchmarks/embedding.py --quick      # fewer repeats, for a smoke test

Every case times the jitted ``jax.value_and_grad`` of our loss (float32, N=4096
rows, D=128 features, gradients with respect to every embedding) against
torch's forward + backward on the same data, interleaved in one process (the
order rotates each repetition), and reports the median of ``--repeats`` runs
after one warm-up call each. Two floors:

* the memory floor, a minimal jitted program that reads the embeddings once and
  writes their gradients once: ``value_and_grad`` of ``sum(x1 * x2)`` for the
  losses of pairs, of ``sum(a * p * n)`` for the triplets;
* for the triplet loss with p=2, with and without the swap, the arithmetic
  floor: the loss's value and its three gradients written out by hand as one
  jitted pass with exactly the loss's arithmetic (two distances, or three with
  the swap, their hinge and the gradients from the same differences), no
  autodiff and no custom derivative rule. It is checked against torch before it
  is timed. With the swap the loss computes a third distance ``d(p, n)``, work
  that the product does not have, so the memory floor is not a floor that any
  implementation of the swap can reach.

The target is judged against the arithmetic floor where there is one, else the
memory floor; both are recorded. Targets: at least 1.5x torch, and at most
1.5x the floor.

The machine may be shared: timings move by 2-3x within minutes, which the
interleaving and the median absorb only in part. Compare runs made close
together. Results go to ``<out>/embedding-<device>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os

# torch's OpenMP threads otherwise spin for a while after each call, taking the
# cores from XLA's thread pool in the interleaved timings that follow.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import pathlib
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jaxmargin

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import device_description, interleaved_medians  # noqa: E402  benchmarks/run.py, beside this

NUM_ROWS, NUM_FEATURES = 4096, 128
MIN_SPEEDUP, MAX_FLOOR_RATIO = 1.5, 1.5


@dataclasses.dataclass(frozen=True)
class Case:
  """One row of the table: a loss, its options, and how many embeddings it takes."""

  name: str
  loss: str
  kwargs: tuple = ()
  inputs: int = 3

  @property
  def options(self):
    return dict(self.kwargs)


CASES = [
  Case("pairwise_distance (p=2), sum", "pairwise_distance", inputs=2),
  Case("cosine_embedding_loss", "cosine_embedding_loss", inputs=2),
  Case("triplet_margin_loss", "triplet_margin_loss"),
  Case("triplet_margin_loss (swap)", "triplet_margin_loss", (("swap", True),)),
  Case("triplet_margin_loss (p=1)", "triplet_margin_loss", (("p", 1),)),
  Case("triplet_margin_with_distance_loss", "triplet_margin_with_distance_loss"),
]


def make_data(rng):
  embeddings = [rng.normal(size=(NUM_ROWS, NUM_FEATURES)).astype(np.float32) for _ in range(3)]
  target = np.where(rng.random(NUM_ROWS) < 0.5, 1, -1).astype(np.int32)
  return embeddings, target


def _arguments(case, embeddings, target):
  """The loss's array arguments: the embeddings it takes, then the target of a pair loss."""
  args = list(embeddings[: case.inputs])
  if case.loss == "cosine_embedding_loss":
    args.append(target)
  return args


def jax_runner(case, embeddings, target):
  fn = getattr(jaxmargin, case.loss)
  options = case.options

  def loss(*args):
    out = fn(*args, **options)
    return jnp.sum(out) if case.loss == "pairwise_distance" else out

  step = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(case.inputs))))
  args = [jnp.asarray(a) for a in _arguments(case, embeddings, target)]
  return lambda: jax.block_until_ready(step(*args))


def torch_runner(case, embeddings, target):
  import torch
  import torch.nn.functional as F

  tensors = [torch.tensor(e, requires_grad=True) for e in embeddings[: case.inputs]]
  extra = [torch.tensor(target)] if case.loss == "cosine_embedding_loss" else []
  fn = getattr(F, case.loss)
  options = case.options

  def run():
    for t in tensors:
      t.grad = None
    out = fn(*tensors, *extra, **options)
    (out.sum() if case.loss == "pairwise_distance" else out).backward()

  return run


def floor_runner(case, embeddings):
  """``value_and_grad`` of the product's sum: each input read once, each gradient written once."""
  if case.inputs == 2:
    step = jax.jit(jax.value_and_grad(lambda a, b: jnp.sum(a * b), argnums=(0, 1)))
  else:
    step = jax.jit(jax.value_and_grad(lambda a, b, c: jnp.sum(a * b * c), argnums=(0, 1, 2)))
  args = [jnp.asarray(e) for e in embeddings[: case.inputs]]
  return lambda: jax.block_until_ready(step(*args))


def triplet_by_hand(anchor, positive, negative, *, swap, margin=1.0, eps=1e-6):
  """Mean triplet loss (p=2) and its three gradients, one pass, no autodiff.

  torch's distance is ``||x1 - x2 + eps||``; with the swap the negative
  distance is ``min(d(a, n), d(p, n))``, whose gradient goes half to each
  side at a tie, as torch's ``min`` sends it.
  """
  to_positive = anchor - positive + eps
  to_negative = anchor - negative + eps
  d_positive = jnp.sqrt(jnp.sum(to_positive * to_positive, axis=-1))
  d_negative = jnp.sqrt(jnp.sum(to_negative * to_negative, axis=-1))
  scale = 1.0 / anchor.shape[0]
  if swap:
    positive_to_negative = positive - negative + eps
    d_swap = jnp.sqrt(jnp.sum(positive_to_negative * positive_to_negative, axis=-1))
    use_anchor = jnp.where(d_negative < d_swap, 1.0, jnp.where(d_negative == d_swap, 0.5, 0.0))
    distance = jnp.minimum(d_negative, d_swap)
  else:
    use_anchor, distance = 1.0, d_negative
  hinge = margin + d_positive - distance
  active = jnp.where(hinge > 0, scale, 0.0)
  value = jnp.sum(jnp.where(hinge > 0, hinge, 0.0)) * scale
  pull = (active / d_positive)[:, None] * to_positive
  push = (active * use_anchor / d_negative)[:, None] * to_negative
  grad_anchor = pull - push
  grad_positive = -pull
  grad_negative = push
  if swap:
    push_swap = (active * (1.0 - use_anchor) / d_swap)[:, None] * positive_to_negative
    grad_positive = grad_positive - push_swap
    grad_negative = grad_negative + push_swap
  return value, (grad_anchor, grad_positive, grad_negative)


def has_arithmetic_floor(case):
  return case.loss == "triplet_margin_loss" and case.options.get("p", 2) == 2


def by_hand_runner(case, embeddings):
  step = jax.jit(functools.partial(triplet_by_hand, swap=case.options.get("swap", False)))
  args = [jnp.asarray(e) for e in embeddings]
  return lambda: jax.block_until_ready(step(*args))


def check_by_hand(case, embeddings):
  """The arithmetic floor computes torch's loss: a wrong one could be fast or slow."""
  import torch
  import torch.nn.functional as F

  tensors = [torch.tensor(e, requires_grad=True) for e in embeddings]
  expected = F.triplet_margin_loss(*tensors, **case.options)
  expected.backward()
  value, grads = triplet_by_hand(
    *map(jnp.asarray, embeddings), swap=case.options.get("swap", False)
  )
  np.testing.assert_allclose(float(value), expected.item(), rtol=1e-4)
  for grad, tensor in zip(grads, tensors, strict=True):
    assert tensor.grad is not None
    np.testing.assert_allclose(np.asarray(grad), tensor.grad.numpy(), rtol=1e-4, atol=1e-9)


def run_case(case, repeats, embeddings, target):
  runners = [
    jax_runner(case, embeddings, target),
    torch_runner(case, embeddings, target),
    floor_runner(case, embeddings),
  ]
  if has_arithmetic_floor(case):
    check_by_hand(case, embeddings)
    runners.append(by_hand_runner(case, embeddings))
  jax_ms, torch_ms, memory_floor_ms, *by_hand_ms = interleaved_medians(runners, repeats)
  floor_ms = by_hand_ms[0] if by_hand_ms else memory_floor_ms
  result = {
    "name": case.name,
    "loss": case.loss,
    "options": case.options,
    "num_rows": NUM_ROWS,
    "num_features": NUM_FEATURES,
    "jax_ms": jax_ms,
    "torch_ms": torch_ms,
    "floor_ms": floor_ms,
    "speedup": torch_ms / jax_ms,
    "floor_ratio": jax_ms / floor_ms,
    "floor": "arithmetic: by hand, one pass" if by_hand_ms else "memory",
    "memory_floor_ms": memory_floor_ms,
    "memory_floor_ratio": jax_ms / memory_floor_ms,
    "min_speedup": MIN_SPEEDUP,
    "max_floor_ratio": MAX_FLOOR_RATIO,
  }
  result["ok"] = bool(result["speedup"] >= MIN_SPEEDUP and result["floor_ratio"] <= MAX_FLOOR_RATIO)
  return result


def print_table(results):
  header = (
    f"{'case':<36} {'jaxmargin ms':>12} {'torch ms':>9} {'speedup':>8} {'floor ms':>9} "
    f"{'vs floor':>9} {'vs memory floor':>15}  target"
  )
  print(header)
  print("-" * len(header))
  for r in results:
    verdict = "ok" if r["ok"] else "MISSED"
    print(
      f"{r['name']:<36} {r['jax_ms']:>12.3f} {r['torch_ms']:>9.3f} {r['speedup']:>7.1f}x "
      f"{r['floor_ms']:>9.3f} {r['floor_ratio']:>8.2f}x {r['memory_floor_ratio']:>14.2f}x  "
      f">={MIN_SPEEDUP:g}x torch, "
      f"<={MAX_FLOOR_RATIO:g}x floor {verdict}"
    )


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fewer repeats")
  parser.add_argument("--repeats", type=int, default=41)
  parser.add_argument("--out", type=pathlib.Path, default=HERE / "results")
  args = parser.parse_args()

  import torch

  torch.set_num_threads(os.cpu_count() or 1)
  rng = np.random.default_rng(0)
  embeddings, target = make_data(rng)
  repeats = 5 if args.quick else max(args.repeats, 5)
  results = []
  for case in CASES:
    results.append(run_case(case, repeats, embeddings, target))
    print(f"  done: {case.name}", flush=True)
  print()
  print_table(results)

  args.out.mkdir(parents=True, exist_ok=True)
  device = jax.devices()[0]
  name = "cpu" if device.platform == "cpu" else device.device_kind.replace(" ", "-").lower()
  record = {
    "device": device_description(),
    "platform": device.platform,
    "jax": jax.__version__,
    "torch": torch.__version__,
    "python": platform.python_version(),
    "repeats": repeats,
    "statistic": "median of interleaved repeats, after one warm-up call each",
    "results": results,
  }
  path = args.out / f"embedding-{name}{'-quick' if args.quick else ''}.json"
  path.write_text(json.dumps(record, indent=1))
  print(f"\nwrote {path}")
  return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
  raise SystemExit(main())
