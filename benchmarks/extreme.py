"""Benchmark the fused classifier + losses of ``jaxmargin.linear`` at many classes.

Usage (from the repository root, after ``pip install -e ".[bench]"``)::

    python benchmarks/extreme.py                  # full run: table, JSON and plot
    python benchmarks/extreme.py --quick          # small sizes, for a smoke test
    python benchmarks/extreme.py --skip-headline  # without the C=10^6 step
    python benchmarks/extreme.py --headline-only  # only that step (run as a subprocess)

Every case times the jitted ``jax.value_and_grad`` (float32) of a loss of
``scores = features @ kernel + bias`` with respect to features, kernel and bias,
interleaved in one process, and reports the median of ``--repeats`` runs after
a warm-up call. "fused" is ``jaxmargin.linear`` (the scores are never
materialized); "unfused" builds the scores and calls ``jaxmargin``'s loss on
them with the dense target (padded to width C, or multi-hot); "torch" is
``F.linear`` + ``F.multilabel_margin_loss`` forward + backward on the CPU; the
"floor" is ``value_and_grad`` of ``jnp.sum(features @ kernel)`` with respect to
features and kernel: the same three matrix products and nothing else. The
headline step (C=10^6) runs in a subprocess of its own so that its peak RSS is
its own. Results go to ``<out>/extreme-<device>.json`` and ``<out>/extreme.png``
(time against C and against K).
"""

from __future__ import annotations

import argparse
import json
import math
import os

# torch's OpenMP threads otherwise spin for a while after each call, taking the
# cores from XLA's thread pool in the interleaved timings that follow.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import pathlib
import platform
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxmargin
from jaxmargin import linear
from run import device_description  # benchmarks/run.py, beside this script

HERE = pathlib.Path(__file__).resolve().parent
MLM, MM, SOFT = "multilabel_margin_loss", "multi_margin_loss", "multilabel_soft_margin_loss"
# Unfused steps (and torch's) hold at least four (N, C) arrays: the scores,
# their gradient, the dense target and the loss's residuals. Skip them where
# four already pass this, and the unfused JAX step where XLA's compiled
# temporary memory does (its slot loop and sort method under one cond hold
# many more: 29 GB at N=1024, C=100,000).
MEMORY_LIMIT = 8 * 2**30
# torch's multilabel margin kernel loops over every (label, class) pair of a
# row; about 1e8 pairs a second forward + backward on a 2-core CPU. Points
# estimated above TORCH_MAX_S a call are skipped, and its repeats are capped
# to about TORCH_BUDGET_S a point.
TORCH_PAIRS_PER_S, TORCH_MAX_S, TORCH_BUDGET_S = 1e8, 120.0, 10.0
SERIES = ("fused", "unfused", "torch", "floor")


def dense_data(seed, n, d, c):
  """Features, kernel and bias in float32.

  Drawn with numpy in float32: ``jax.random`` would hold several times the
  kernel's size in random bits at once, and that peak, not the loss's, would
  be the headline's peak RSS.
  """
  rng = np.random.default_rng(seed)
  features = rng.standard_normal((n, d), np.float32)
  # Scores of unit scale, so that hinge terms are both active and inactive.
  kernel = rng.standard_normal((d, c), np.float32) / np.float32(math.sqrt(d))
  bias = np.float32(0.1) * rng.standard_normal(c, np.float32)
  return jnp.asarray(features), jnp.asarray(kernel), jnp.asarray(bias)


def label_lists(rng, n, c, k, exact=False):
  """(N, K) distinct labels per row, 1..K of them (K with ``exact``), -1 after."""
  labels = np.full((n, k), -1, np.int32)
  for row in labels:
    count = k if exact else rng.integers(1, k + 1)
    row[:count] = rng.choice(c, count, replace=False)
  return labels


def dense_target(loss, labels, c):
  """The target the unfused loss takes: padded to width C, multi-hot or (N,)."""
  if loss == MM:
    return labels
  rows, slots = np.nonzero(labels >= 0)
  if loss == MLM:
    target = np.full((labels.shape[0], c), -1, np.int32)
    target[:, :labels.shape[1]] = labels
    return target
  target = np.zeros((labels.shape[0], c), np.float32)
  target[rows, labels[rows, slots]] = 1
  return target


def fused_loss(loss, reduction):
  fn = getattr(linear, loss)
  if reduction == "none":
    return lambda f, w, b, y: jnp.mean(fn(f, w, y, bias=b, reduction="none"))
  return lambda f, w, b, y: fn(f, w, y, bias=b, reduction=reduction)


def unfused_loss(loss):
  fn = getattr(jaxmargin, loss)
  return lambda f, w, b, target: fn(f @ w + b, target)  # reduction="mean"


def floor_loss(f, w):
  return jnp.sum(f @ w)


def jax_runner(fn, args, argnums=(0, 1, 2)):
  step = jax.jit(jax.value_and_grad(fn, argnums=argnums))
  args = [jnp.asarray(a) for a in args]
  return lambda: jax.block_until_ready(step(*args))


def torch_runner(features, kernel, bias, target):
  import torch
  import torch.nn.functional as F

  h = torch.tensor(np.asarray(features), requires_grad=True)
  w = torch.tensor(np.asarray(kernel).T, requires_grad=True)  # torch's (C, D) layout
  b = torch.tensor(np.asarray(bias), requires_grad=True)
  t = torch.tensor(target, dtype=torch.int64)

  def run():
    h.grad = w.grad = b.grad = None
    F.multilabel_margin_loss(F.linear(h, w, b), t).backward()
  return run


def interleaved_medians(fns, repeats, caps=None):
  """Medians (ms) of several timed functions, run in turn so drifts hit all alike.

  The order rotates by one each repetition: a call right after torch's is
  slower (its threads leave the cores and caches cold), and a fixed order
  would give that penalty to one function only. ``caps`` limits the repeats of
  slow functions; one capped to a single run gets no warm-up, which would
  only double a wait of many seconds. Also returns the warm-up outputs.
  """
  counts = [min(repeats, cap) for cap in (caps or [repeats] * len(fns))]
  outputs = [fn() if count > 1 else None for fn, count in zip(fns, counts)]
  times = [[] for _ in fns]
  for repeat in range(max(counts)):
    for j in range(len(fns)):
      i = (repeat + j) % len(fns)
      if len(times[i]) < counts[i]:
        start = time.perf_counter()
        fns[i]()
        times[i].append(time.perf_counter() - start)
  return [float(np.median(t) * 1e3) for t in times], outputs


def speed_rows(quick, repeats, rng):
  """Section 1: fused against unfused and the floor where both fit."""
  n, d, c, k = (256, 64, 2000, 16) if quick else (1024, 256, 20_000, 16)
  features, kernel, bias = dense_data(0, n, d, c)
  lists, classes = label_lists(rng, n, c, k), rng.integers(0, c, n).astype(np.int32)
  rows = []
  for loss in (MLM, MM, SOFT):
    labels = classes if loss == MM else lists
    fused_args = (features, kernel, bias, labels)
    (none_ms, mean_ms, unfused_ms, floor_ms), outs = interleaved_medians([
        jax_runner(fused_loss(loss, "none"), fused_args),
        jax_runner(fused_loss(loss, "mean"), fused_args),
        jax_runner(unfused_loss(loss), (features, kernel, bias, dense_target(loss, labels, c))),
        jax_runner(floor_loss, (features, kernel), argnums=(0, 1))], repeats)
    # Not a target, but a fused loss that is fast and wrong would pass them.
    values = [float(out[0]) for out in outs[:3]]
    row = {"loss": loss, "n": n, "d": d, "c": c, "k": k, "fused_none_ms": none_ms,
           "fused_mean_ms": mean_ms, "unfused_ms": unfused_ms, "floor_ms": floor_ms,
           "none_vs_unfused": none_ms / unfused_ms, "mean_vs_unfused": mean_ms / unfused_ms,
           "mean_vs_floor": mean_ms / floor_ms,
           "value_rel_diff": max(abs(v - values[2]) for v in values[:2]) / abs(values[2])}
    row["ok"] = bool(row["none_vs_unfused"] <= 1.5 and row["mean_vs_unfused"] <= 1.15
                     and row["mean_vs_floor"] <= 1.3)
    rows.append(row)
    print(f"  done: speed {loss}", flush=True)
  return rows


def scaling_point(axis, n, d, c, k, exact, repeats, rng):
  """One point of section 2: fused mean multilabel margin loss and what fits beside it."""
  features, kernel, bias = dense_data(1, n, d, c)
  labels = label_lists(rng, n, c, k, exact)
  fns = {"fused": jax_runner(fused_loss(MLM, "mean"), (features, kernel, bias, labels))}
  caps = {}
  if n * c * 4 * 4 <= MEMORY_LIMIT:
    target = dense_target(MLM, labels, c)
    if temp_bytes(unfused_loss(MLM), (features, kernel, bias, target)) <= MEMORY_LIMIT:
      fns["unfused"] = jax_runner(unfused_loss(MLM), (features, kernel, bias, target))
    torch_s = float(np.sum(labels >= 0)) * c / TORCH_PAIRS_PER_S
    if torch_s <= TORCH_MAX_S:
      fns["torch"] = torch_runner(features, kernel, bias, target)
      caps["torch"] = max(1, int(TORCH_BUDGET_S / torch_s))
  if n * c * 4 * 2 <= MEMORY_LIMIT:
    fns["floor"] = jax_runner(floor_loss, (features, kernel), argnums=(0, 1))
  # Steps of several seconds each: three runs are enough for a median.
  jax_cap = 3 if n * c >= 5e8 else repeats
  times, _ = interleaved_medians(list(fns.values()), repeats,
                                 [caps.get(name, jax_cap) for name in fns])
  ms = dict(zip(fns, times))
  print(f"  done: {axis} C={c} K={k}", flush=True)
  return {"axis": axis, "n": n, "d": d, "c": c, "k": k, "exact_k": exact,
          **{f"{name}_ms": ms.get(name) for name in SERIES}}


def scaling_rows(quick, repeats, rng):
  """Section 2: time against C (K<=16) and against K (exactly K labels a row)."""
  n, d = (256, 64) if quick else (1024, 128)
  classes = [1000, 10_000] if quick else [10_000, 100_000, 1_000_000]
  counts = [1, 16, 64] if quick else [1, 4, 16, 64, 256]
  c_for_k = 10_000 if quick else 100_000
  return ([scaling_point("C", n, d, c, 16, False, repeats, rng) for c in classes]
          + [scaling_point("K", n, d, c_for_k, k, True, repeats, rng) for k in counts])


def temp_bytes(fn, args, argnums=(0, 1, 2)):
  compiled = jax.jit(jax.value_and_grad(fn, argnums=argnums)).lower(*args).compile()
  stats = compiled.memory_analysis()
  return None if stats is None else int(stats.temp_size_in_bytes)


def memory_rows():
  """Section 4: compiled temporary memory of the steps (compiled, never run)."""
  n, d, k = 1024, 64, 16
  rows = []
  for c in (100_000, 1_000_000):
    spec = jax.ShapeDtypeStruct
    dense = (spec((n, d), jnp.float32), spec((d, c), jnp.float32), spec((c,), jnp.float32))
    rows.append({"n": n, "d": d, "c": c, "k": k,
                 "fused_temp_bytes": temp_bytes(fused_loss(MLM, "mean"),
                                                dense + (spec((n, k), jnp.int32),)),
                 "unfused_temp_bytes": temp_bytes(unfused_loss(MLM),
                                                  dense + (spec((n, c), jnp.int32),)),
                 "scores_bytes": n * c * 4})
  return rows


def peak_rss_bytes():
  """This process's peak resident memory.

  Linux's ``VmHWM`` when there is one: ``getrusage``'s ``ru_maxrss`` would
  include the parent's resident memory at the ``fork`` that started this
  process (it keeps the largest of the old and new images across ``exec``).
  """
  try:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) * 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def headline(quick, repeats):
  """Section 3: one fused step where the unfused one would need tens of GB."""
  n, d, c, k = (512, 64, 100_000, 32) if quick else (4096, 128, 1_000_000, 32)
  features, kernel, bias = dense_data(2, n, d, c)
  labels = jnp.asarray(label_lists(np.random.default_rng(2), n, c, k))
  rss_data = peak_rss_bytes()
  step = jax.jit(jax.value_and_grad(fused_loss(MLM, "mean"), argnums=(0, 1, 2)))
  start = time.perf_counter()
  loss, _ = jax.block_until_ready(step(features, kernel, bias, labels))
  first_s = time.perf_counter() - start
  times = []
  for _ in range(min(repeats, 2)):  # a step takes minutes on a 2-core CPU
    start = time.perf_counter()
    jax.block_until_ready(step(features, kernel, bias, labels))
    times.append(time.perf_counter() - start)
  return {"n": n, "d": d, "c": c, "k": k, "loss": float(loss), "first_call_s": first_s,
          "step_s": float(np.median(times)), "repeats": len(times),
          "rss_after_data_bytes": rss_data, "peak_rss_bytes": peak_rss_bytes(),
          "unfused_bytes": 2 * n * c * 4}  # scores and their gradient alone


def run_headline(quick, repeats):
  command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--headline-only",
             "--repeats", str(repeats)] + (["--quick"] if quick else [])
  proc = subprocess.run(command, capture_output=True, text=True)
  lines = proc.stdout.strip().splitlines()
  if proc.returncode != 0 or not lines:
    print(proc.stdout + proc.stderr[-3000:])
    return {"error": f"exit status {proc.returncode}"}
  return json.loads(lines[-1])


def fmt(value, spec=".2f"):
  return "-" if value is None else format(value, spec)


def print_tables(speed, scaling, memory, head, quick):
  if speed:
    print("\nFused against unfused (value_and_grad w.r.t. features, kernel, bias)")
    print(f"{'loss':<28} {'none ms':>9} {'mean ms':>9} {'unfused':>9} {'floor':>9} "
          f"{'none/unf':>8} {'mean/unf':>8} {'mean/flr':>8} {'val diff':>8}  verdict")
    for r in speed:
      print(f"{r['loss']:<28} {r['fused_none_ms']:>9.2f} {r['fused_mean_ms']:>9.2f} "
            f"{r['unfused_ms']:>9.2f} {r['floor_ms']:>9.2f} {r['none_vs_unfused']:>8.2f} "
            f"{r['mean_vs_unfused']:>8.2f} {r['mean_vs_floor']:>8.2f} "
            f"{r['value_rel_diff']:>8.1e}  {'PASS' if r['ok'] else 'FAIL'}")
    print("targets: none/unf <= 1.5, mean/unf <= 1.15, mean/flr <= 1.3"
          f" (N={speed[0]['n']} D={speed[0]['d']} C={speed[0]['c']} K<={speed[0]['k']})"
          + ("; --quick: not the targets' sizes, verdicts only for show" if quick else ""))
  if scaling:
    print("\nmultilabel_margin_loss, reduction='mean' (ms; - where skipped)")
    print(f"{'axis':<4} {'N':>5} {'D':>4} {'C':>9} {'K':>5} {'fused':>10} {'unfused':>10} "
          f"{'torch':>10} {'floor':>10} {'fus/unf':>8} {'fus/flr':>8}")
    for r in scaling:
      k = f"{'=' if r['exact_k'] else '<='}{r['k']}"
      ratios = [r["fused_ms"] / r[key] if r[key] else None for key in ("unfused_ms", "floor_ms")]
      print(f"{r['axis']:<4} {r['n']:>5} {r['d']:>4} {r['c']:>9} {k:>5} "
            + " ".join(f"{fmt(r[f'{s}_ms']):>10}" for s in SERIES)
            + " " + " ".join(f"{fmt(x):>8}" for x in ratios))
  if memory:
    print("\nCompiled temporary memory of value_and_grad (MB)")
    for r in memory:
      fused, unfused = (fmt(r[key] and r[key] / 1e6, ".1f")
                        for key in ("fused_temp_bytes", "unfused_temp_bytes"))
      print(f"  N={r['n']} D={r['d']} C={r['c']} K<={r['k']}: fused {fused}, unfused "
            f"{unfused} (the scores alone: {r['scores_bytes'] / 1e6:.1f})")
  if head:
    if "error" in head:
      print(f"\nHeadline step failed: {head['error']}")
    else:
      print(f"\nHeadline: N={head['n']} D={head['d']} C={head['c']:,} K<={head['k']}, fused "
            f"multilabel_margin_loss(reduction='mean'), one value_and_grad step: "
            f"{head['step_s']:.2f} s (first call with compilation {head['first_call_s']:.1f} s), "
            f"loss {head['loss']:.4f}; peak RSS {head['peak_rss_bytes'] / 1e9:.2f} GB "
            f"({head['rss_after_data_bytes'] / 1e9:.2f} GB after creating the data); the "
            f"unfused step would need {head['unfused_bytes'] / 1e9:.1f} GB for the scores and "
            f"their gradient alone")


def plot(scaling, path, description):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  labels = {"fused": "fused (jaxmargin.linear)", "unfused": "unfused (h @ W + b, jaxmargin)",
            "torch": "torch 2.13 CPU (F.linear + loss)", "floor": "matmul floor (3 products)"}
  styles = {"fused": "o-", "unfused": "s--", "torch": "^:", "floor": "k-."}
  for ax, axis, key in ((axes[0], "C", "c"), (axes[1], "K", "k")):
    rows = [r for r in scaling if r["axis"] == axis]
    for series in SERIES:
      points = [(r[key], r[f"{series}_ms"]) for r in rows if r[f"{series}_ms"] is not None]
      if points:
        ax.loglog(*zip(*points), styles[series], label=labels[series], alpha=0.85)
    if rows:
      r = rows[0]
      ax.set_xlabel(f"classes C (N={r['n']}, D={r['d']}, K<=16)" if axis == "C" else
                    f"labels per row K (N={r['n']}, D={r['d']}, C={r['c']:,})")
    ax.set_ylabel("time per step (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle("multilabel_margin_loss value_and_grad, float32, " + description)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small sizes and few repeats")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--out", type=pathlib.Path, default=HERE / "results")
  parser.add_argument("--headline-only", action="store_true",
                      help="run only the headline step and print its result as JSON")
  parser.add_argument("--skip-headline", action="store_true")
  args = parser.parse_args()
  repeats = 3 if args.quick else max(args.repeats, 3)
  if args.headline_only:
    print(json.dumps(headline(args.quick, repeats)))
    return 0

  import torch
  torch.set_num_threads(2)
  rng = np.random.default_rng(0)
  speed = speed_rows(args.quick, repeats, rng)
  scaling = scaling_rows(args.quick, repeats, rng)
  memory = memory_rows()
  head = None if args.skip_headline else run_headline(args.quick, repeats)
  print_tables(speed, scaling, memory, head, args.quick)

  args.out.mkdir(parents=True, exist_ok=True)
  device = jax.devices()[0]
  name = "cpu" if device.platform == "cpu" else device.device_kind.replace(" ", "-").lower()
  suffix = "-quick" if args.quick else ""
  record = {"device": device_description(), "platform": device.platform,
            "jax": jax.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "repeats": repeats, "quick": args.quick,
            "speed": speed, "scaling": scaling, "memory": memory, "headline": head}
  json_path = args.out / f"extreme-{name}{suffix}.json"
  json_path.write_text(json.dumps(record, indent=1))
  png = args.out / f"extreme{suffix}.png"
  plot(scaling, png, device_description())
  print(f"\nwrote {json_path}\nwrote {png}")
  return 0 if args.quick or all(r["ok"] for r in speed) else 1


if __name__ == "__main__":
  raise SystemExit(main())
