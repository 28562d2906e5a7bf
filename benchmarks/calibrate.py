"""Measure the method switches of the multi-label margin loss on this machine's device.

Usage (from the repository root, after ``pip install -e ".[bench]"``)::

    python benchmarks/calibrate.py            # both switches
    python benchmarks/calibrate.py --quick    # small sizes, for a smoke test
    python benchmarks/calibrate.py --only unfused   # or --only fused

Two constants pick a method from the label count, per platform, and were
measured on a CPU only:

* ``SORT_PASSES_PER_LOG2`` (``jaxmargin/_multilabel_margin.py``): the
  unfused loss sorts each row once the longest label list P exceeds
  ``SORT_PASSES_PER_LOG2 * log2(C)``, and loops over label slots below. Here
  both methods are timed (forced) with exactly P labels a row, over P, for each
  (N, C); the crossover P, divided by ``log2(C)``, is the constant.
* ``FUSED_COMPARE_MAX_SLOTS`` (``jaxmargin/_multilabel_margin_fused.py``): the
  fused loss of ``jaxmargin.linear`` compares every score with each of the K
  label thresholds up to that many slots, and binary-searches them beyond.
  Here both methods are timed over K; the crossover K is the constant.

Each time is the median of ``--repeats`` runs of the jitted
``value_and_grad`` (float32), the two methods interleaved. The crossover is
interpolated in log-log between the last count where the first method wins
and the next. Results go to ``<out>/calibrate-<device>.json``; put the
suggested values in the constants' tables for this platform.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import platform

import jax
import jax.numpy as jnp
import numpy as np
from run import device_description, interleaved_medians  # benchmarks/run.py, beside this

from jaxmargin._linear_multilabel_margin import _multilabel_margin as fused_multilabel_margin
from jaxmargin._multilabel_margin import multilabel_margin_per_sample
from jaxmargin._settings import trace_platform

HERE = pathlib.Path(__file__).resolve().parent


def label_lists(rng, n, c, k, width):
  """(N, width) int32 lists of exactly K distinct labels a row, -1 after."""
  lists = np.full((n, width), -1, np.int32)
  for row in lists:
    row[:k] = rng.choice(c, k, replace=False)
  return lists


def unfused_times(n, c, p, repeats, rng):
  x = jnp.asarray(rng.standard_normal((n, c), np.float32))
  target = jnp.asarray(label_lists(rng, n, c, p, c))

  def runner(method):
    # The target an argument, not a constant that XLA would fold.
    def loss(x, target):
      return jnp.mean(multilabel_margin_per_sample(x, target, jnp.float32(1), method))
    step = jax.jit(jax.value_and_grad(loss))
    return lambda: jax.block_until_ready(step(x, target))
  return interleaved_medians([runner("slots"), runner("sort")], repeats)


def fused_times(n, d, c, k, repeats, rng):
  features = jnp.asarray(rng.standard_normal((n, d), np.float32))
  kernel = jnp.asarray(rng.standard_normal((d, c), np.float32) / np.float32(math.sqrt(d)))
  lists = jnp.asarray(label_lists(rng, n, c, k, k))

  def runner(method):
    def loss(h, w, lists):
      return fused_multilabel_margin(h, w, lists, None, 1.0, reduction="mean",
                                       chunk_size=None, method=method)
    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    return lambda: jax.block_until_ready(step(features, kernel, lists))
  return interleaved_medians([runner("compare"), runner("search")], repeats)


def crossover(counts, first_ms, second_ms):
  """The count where the second method starts to win (log-log interpolation).

  ``None`` if the first wins everywhere; the smallest count if the second does.
  """
  for i, (a, b) in enumerate(zip(first_ms, second_ms, strict=True)):
    if b <= a:
      if i == 0:
        return float(counts[0])
      # log(first / second) goes from positive to <= 0 between i - 1 and i.
      before = math.log(first_ms[i - 1] / second_ms[i - 1])
      after = math.log(a / b)
      t = before / (before - after)
      return float(math.exp(math.log(counts[i - 1])
                            + t * (math.log(counts[i]) - math.log(counts[i - 1]))))
  return None


def sweep(sizes, counts, measure, describe):
  """For each size, the two methods' times over the counts and their crossover."""
  rows = []
  for size in sizes:
    usable = [k for k in counts if k <= size[-1]]
    times = [measure(*size, k) for k in usable]
    first, second = [t[0] for t in times], [t[1] for t in times]
    point = crossover(usable, first, second)
    rows.append(describe(size, usable, first, second, point))
    print(f"  done: {rows[-1]['size']}", flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small sizes and few repeats")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--only", choices=["unfused", "fused"], default=None)
  parser.add_argument("--out", type=pathlib.Path, default=HERE / "results")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  repeats = 3 if args.quick else args.repeats
  record = {"device": device_description(), "platform": jax.devices()[0].platform,
            "constants_platform": trace_platform(), "jax": jax.__version__,
            "python": platform.python_version(), "repeats": repeats, "quick": args.quick}

  if args.only in (None, "unfused"):
    sizes = [(64, 1000)] if args.quick else [(64, 1000), (256, 1000), (256, 10_000),
                                             (1024, 1000), (64, 30_000)]
    counts = ([1, 4, 16, 64, 256] if args.quick
              else [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])

    def describe(size, usable, slots, sort, point):
      n, c = size
      return {"size": f"N={n} C={c}", "n": n, "c": c, "labels": usable, "slots_ms": slots,
              "sort_ms": sort, "crossover_p": point,
              "passes_per_log2": None if point is None else point / math.log2(c)}
    record["unfused"] = sweep(sizes, counts, lambda n, c, p: unfused_times(n, c, p, repeats, rng),
                              describe)

  if args.only in (None, "fused"):
    sizes = [(256, 64, 10_000)] if args.quick else [(1024, 128, 100_000), (4096, 128, 100_000)]
    counts = [4, 16, 64, 256] if args.quick else [8, 16, 32, 64, 128, 256, 512]

    def describe(size, usable, compare, search, point):
      n, d, c = size
      return {"size": f"N={n} D={d} C={c}", "n": n, "d": d, "c": c, "slots": usable,
              "compare_ms": compare, "search_ms": search, "crossover_k": point}
    record["fused"] = sweep(sizes, counts,
                            lambda n, d, c, k: fused_times(n, d, c, k, repeats, rng), describe)

  print(f"\n{record['device']}: constants for platform {record['constants_platform']!r}")
  for row in record.get("unfused", []):
    cells = " ".join(f"P={p}:{a:.1f}/{b:.1f}" for p, a, b in
                     zip(row["labels"], row["slots_ms"], row["sort_ms"], strict=True))
    if row["crossover_p"] is None:
      verdict = f"the slots win up to P={row['labels'][-1]}"
    else:
      verdict = (f"crossover P={row['crossover_p']:.0f} = "
                 f"{row['passes_per_log2']:.1f} x log2(C)")
    print(f"unfused {row['size']}: slots/sort ms {cells}; {verdict}")
  found = [r["passes_per_log2"] for r in record.get("unfused", []) if r["passes_per_log2"]]
  if found:
    record["suggested_sort_passes_per_log2"] = float(np.median(found))
    print(f"suggested SORT_PASSES_PER_LOG2[{record['constants_platform']!r}] = "
          f"{np.median(found):.1f} (median of {len(found)} sizes)")
  for row in record.get("fused", []):
    cells = " ".join(f"K={k}:{a:.1f}/{b:.1f}" for k, a, b in
                     zip(row["slots"], row["compare_ms"], row["search_ms"], strict=True))
    verdict = (f"the compares win up to K={row['slots'][-1]}" if row["crossover_k"] is None
               else f"crossover K={row['crossover_k']:.0f}")
    print(f"fused {row['size']}: compare/search ms {cells}; {verdict}")
  found = [r["crossover_k"] for r in record.get("fused", []) if r["crossover_k"]]
  if found:
    record["suggested_fused_compare_max_slots"] = int(np.median(found))
    print(f"suggested FUSED_COMPARE_MAX_SLOTS[{record['constants_platform']!r}] = "
          f"{int(np.median(found))}")

  args.out.mkdir(parents=True, exist_ok=True)
  device = jax.devices()[0]
  name = "cpu" if device.platform == "cpu" else device.device_kind.replace(" ", "-").lower()
  path = args.out / f"calibrate-{name}{'-quick' if args.quick else ''}.json"
  path.write_text(json.dumps(record, indent=1))
  print(f"\nwrote {path}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
