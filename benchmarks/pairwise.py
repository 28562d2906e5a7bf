"""Benchmark the elementwise margin losses against torch 2.13 (CPU) and a one-pass floor.

Usage (from the repository root, after ``pip install -e ".[bench]"``)::

    python benchmarks/pairwise.py              # N = 10^6 elements, 15 repeats
    python benchmarks/pairwise.py --quick      # N = 10^5, 5 repeats, for a smoke test

For each of ``margin_ranking_loss`` (two score arrays and a label array of N
elements), ``hinge_embedding_loss`` and ``soft_margin_loss`` (an input and a
label array of N elements), float32, ``reduction='mean'``, it times

* jaxmargin: the jitted ``jax.value_and_grad`` of the loss with respect to the
  scores (both score arrays for the ranking loss);
* torch: the same loss's forward and backward, gradients of the same arrays;
* the memory floor: the jitted ``value_and_grad`` of the plainest function
  that reads the same arrays once and writes the same gradients once, the sum
  of the arrays' product (``sum(x1 * x2 * y)``, ``sum(x * y)``). No loss can do
  less memory traffic;
* the floor the target is judged against: the memory floor for the two hinge
  losses, whose arithmetic is a compare and a select; for ``soft_margin_loss``,
  whose value needs an ``exp`` and a ``log1p`` per element and whose gradient
  a division (work a product does not have, and which at 10^6 elements costs
  more than the memory traffic on a CPU), the value and gradient written out
  by hand as one pass with exactly that arithmetic and no more: no autodiff,
  no custom derivative rule, no overflow guard beyond the ``exp(-|z|)`` that
  the value needs anyway.

They run interleaved in one process, the order rotating each repeat, and
each reports the median of ``--repeats`` runs after a warm-up call: the CPU of a
shared machine is noisy, and the median of interleaved runs is what survives
it. Targets: at least 1.5x faster than torch, and within 1.5x of the floor.
Results go to ``<out>/pairwise-<device>.json`` (``-quick`` appended for
``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os

# torch's OpenMP threads otherwise spin after each call and take the cores
# from XLA's threads in the interleaved timings (as in benchmarks/run.py).
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
from run import device_description, interleaved_medians  # noqa: E402

MIN_SPEEDUP, MAX_FLOOR_RATIO = 1.5, 1.5
# (loss, arrays it reads, how many of them are differentiated, keyword arguments)
LOSSES = [
  ("margin_ranking_loss", 3, 2, {"margin": 0.1}),
  ("hinge_embedding_loss", 2, 1, {"margin": 1.0}),
  ("soft_margin_loss", 2, 1, {}),
]


def make_data(name, size, rng):
  labels = rng.choice(np.array([-1, 1], np.float32), size)
  if name == "margin_ranking_loss":
    return [rng.normal(size=size).astype(np.float32) for _ in range(2)] + [labels]
  values = rng.normal(size=size).astype(np.float32) * 2
  return [np.abs(values) if name == "hinge_embedding_loss" else values, labels]


def jax_runner(name, arrays, wrt, kwargs):
  loss = getattr(jaxmargin, name)
  step = jax.jit(jax.value_and_grad(lambda *a: loss(*a, **kwargs), argnums=tuple(range(wrt))))
  arrays = [jnp.asarray(a) for a in arrays]
  return lambda: jax.block_until_ready(step(*arrays))


def memory_floor_runner(arrays, wrt):
  def product_sum(*a):
    out = a[0]
    for b in a[1:]:
      out = out * b
    return jnp.sum(out)

  step = jax.jit(jax.value_and_grad(product_sum, argnums=tuple(range(wrt))))
  arrays = [jnp.asarray(a) for a in arrays]
  return lambda: jax.block_until_ready(step(*arrays))


def soft_margin_by_hand(x, y):
  """``mean(log(1 + exp(-y x)))`` and its gradient in ``x``, one pass, one exp, one log1p."""
  z = -y * x
  decay = jnp.exp(-jnp.abs(z))
  value = jnp.mean(jnp.maximum(z, 0) + jnp.log1p(decay))
  near = 1 / (1 + decay)
  sigmoid = jnp.where(z >= 0, near, decay * near)
  return value, -y * sigmoid / x.size


def by_hand_runner(arrays):
  step = jax.jit(soft_margin_by_hand)
  arrays = [jnp.asarray(a) for a in arrays]
  return lambda: jax.block_until_ready(step(*arrays))


def torch_runner(name, arrays, wrt, kwargs):
  import torch
  import torch.nn.functional as F

  tensors = [torch.tensor(a, requires_grad=i < wrt) for i, a in enumerate(arrays)]
  loss = getattr(F, name)

  def run():
    for t in tensors[:wrt]:
      t.grad = None
    loss(*tensors, **kwargs).backward()

  return run


def check_agreement(name, arrays, wrt, kwargs):
  """Not a target, but a fast wrong loss would pass the timings: ours equals torch's."""
  import torch
  import torch.nn.functional as F

  tensors = [torch.tensor(a, requires_grad=i < wrt) for i, a in enumerate(arrays)]
  value = getattr(F, name)(*tensors, **kwargs)
  value.backward()
  loss = getattr(jaxmargin, name)
  ours, grads = jax.value_and_grad(lambda *a: loss(*a, **kwargs), argnums=tuple(range(wrt)))(
    *map(jnp.asarray, arrays)
  )
  np.testing.assert_allclose(float(ours), value.item(), rtol=1e-4)
  for grad, tensor in zip(grads, tensors, strict=False):
    assert tensor.grad is not None
    np.testing.assert_allclose(np.asarray(grad), tensor.grad.numpy(), rtol=1e-4, atol=1e-12)
  if name == "soft_margin_loss":
    # The floor computes the same loss: a wrong one could be fast or slow.
    by_hand, by_hand_grad = soft_margin_by_hand(*map(jnp.asarray, arrays))
    np.testing.assert_allclose(float(by_hand), value.item(), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(by_hand_grad), tensors[0].grad.numpy(), rtol=1e-4)


def main():
  parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="N = 10^5 and 5 repeats")
  parser.add_argument("--repeats", type=int, default=15)
  parser.add_argument("--size", type=int, default=None, help="elements per array (10^6)")
  parser.add_argument("--out", type=pathlib.Path, default=HERE / "results")
  args = parser.parse_args()

  import torch

  torch.set_num_threads(os.cpu_count() or 1)
  size = args.size or (10**5 if args.quick else 10**6)
  repeats = 5 if args.quick else args.repeats
  rng = np.random.default_rng(0)
  results = []
  for name, count, wrt, kwargs in LOSSES:
    arrays = make_data(name, size, rng)
    assert len(arrays) == count
    check_agreement(name, arrays, wrt, kwargs)
    runners = [
      jax_runner(name, arrays, wrt, kwargs),
      torch_runner(name, arrays, wrt, kwargs),
      memory_floor_runner(arrays, wrt),
    ]
    if name == "soft_margin_loss":
      runners.append(by_hand_runner(arrays))
    jax_ms, torch_ms, memory_floor_ms, *by_hand_ms = interleaved_medians(runners, repeats)
    floor_ms = by_hand_ms[0] if by_hand_ms else memory_floor_ms
    result = {
      "name": f"{name} N={size}",
      "loss": name,
      "size": size,
      "jax_ms": jax_ms,
      "torch_ms": torch_ms,
      "floor_ms": floor_ms,
      "speedup": torch_ms / jax_ms,
      "floor_ratio": jax_ms / floor_ms,
      "floor": "by hand: one exp, one log1p" if name == "soft_margin_loss" else "memory",
      "memory_floor_ms": memory_floor_ms,
      "memory_floor_ratio": jax_ms / memory_floor_ms,
      "min_speedup": MIN_SPEEDUP,
      "max_floor_ratio": MAX_FLOOR_RATIO,
    }
    result["ok"] = bool(
      result["speedup"] >= MIN_SPEEDUP and result["floor_ratio"] <= MAX_FLOOR_RATIO
    )
    results.append(result)
    print(f"  done: {result['name']}", flush=True)

  header = (
    f"{'case':<34} {'jaxmargin ms':>12} {'torch ms':>9} {'speedup':>8} {'floor ms':>9} "
    f"{'vs floor':>8} {'vs memory floor':>15}  target"
  )
  print()
  print(header)
  print("-" * len(header))
  for r in results:
    verdict = "ok" if r["ok"] else "MISSED"
    print(
      f"{r['name']:<34} {r['jax_ms']:>12.2f} {r['torch_ms']:>9.2f} {r['speedup']:>7.1f}x "
      f"{r['floor_ms']:>9.2f} {r['floor_ratio']:>7.2f}x {r['memory_floor_ratio']:>14.2f}x  "
      f">={MIN_SPEEDUP:g}x torch, "
      f"<={MAX_FLOOR_RATIO:g}x floor {verdict}"
    )

  args.out.mkdir(parents=True, exist_ok=True)
  device = jax.devices()[0]
  device_name = "cpu" if device.platform == "cpu" else device.device_kind.replace(" ", "-").lower()
  record = {
    "device": device_description(),
    "platform": device.platform,
    "jax": jax.__version__,
    "torch": torch.__version__,
    "python": platform.python_version(),
    "repeats": repeats,
    "results": results,
  }
  path = args.out / f"pairwise-{device_name}{'-quick' if args.quick else ''}.json"
  path.write_text(json.dumps(record, indent=1))
  print(f"\nwrote {path}")
  return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
  raise SystemExit(main())
