"""Benchmark jaxmargin against torch 2.13 (CPU) and against simple JAX baselines.

Usage (from the repository root, after ``pip install -e ".[bench]"``)::

    python benchmarks/run.py                # full run: table, JSON and plot
    python benchmarks/run.py --quick        # fewer sizes, for a smoke test

Every case times the jitted ``jax.value_and_grad`` of our loss (float32)
against torch's forward + backward on the same data, interleaved in one process,
and reports the median of ``--repeats`` runs (after one warm-up call each). The
"baseline" column is a one-pass floor (``value_and_grad`` of ``sum(x * x)``)
for ``multi_margin_loss`` and optax's ``sigmoid_binary_cross_entropy`` mean for
``multilabel_soft_margin_loss``. "no checks" times the same step traced under
``jaxmargin.value_checks(False)``: the checks have no effect, so it should
differ from the default only by noise (the targets are judged on the
default). Results go to ``<out>/<device>.json`` and ``<out>/scaling.png``
(time against C and against P).

The "vmap" rows time ``jax.vmap`` of ``jaxmargin.losses.multilabel_margin_loss``
over N single examples against the same loss called on the batch (jitted
``value_and_grad`` of the mean, multi-hot labels): a per-example ``vmap`` must
cost about what the batched call costs (``--only vmap`` runs just these).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

# torch's OpenMP threads otherwise spin for a while after each call, taking the
# cores from XLA's thread pool in the interleaved timings that follow.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxmargin

HERE = pathlib.Path(__file__).resolve().parent


@dataclasses.dataclass
class Case:
  """One row of the table: a loss at one size, and the target it must meet."""

  loss: str
  num_rows: int
  num_classes: int
  labels: int = 0            # P, the (maximum) label-list length, for mlm
  dense: bool = False        # every row has exactly P labels
  min_speedup: float | None = None
  max_baseline_ratio: float | None = None
  min_baseline_speedup: float | None = None
  max_vmap_ratio: float | None = None   # vmap rows: vmapped time / batched time
  group: str = "targets"

  @property
  def name(self):
    size = f"N={self.num_rows} C={self.num_classes}"
    if self.loss == "multilabel_margin_loss":
      size += f" P{'=' if self.dense else '<='}{self.labels}"
    return f"{self.loss} {size}"


def target_cases():
  mlm, mm, soft = ("multilabel_margin_loss", "multi_margin_loss",
                   "multilabel_soft_margin_loss")
  return [
      Case(mlm, 1024, 100, 5, min_speedup=1.5),
      Case(mlm, 1024, 1000, 5, min_speedup=2),
      Case(mlm, 256, 10_000, 50, min_speedup=4),
      Case(mlm, 8, 10_000, 5_000, dense=True, min_speedup=20),
      Case(mm, 1024, 1000, min_speedup=5, max_baseline_ratio=1.5),
      Case(mm, 4096, 1000, min_speedup=5, max_baseline_ratio=1.5),
      Case(soft, 1024, 1000, min_speedup=1.5, min_baseline_speedup=1.2),
      Case(soft, 4096, 1000, min_speedup=1.5, min_baseline_speedup=1.2),
  ]


def vmap_cases():
  # 1,024 examples of 1-5 labels each: before the core's vmap rule folded the
  # examples into rows, vmap ran both methods for every example (12x the
  # batched time).
  return [Case("multilabel_margin_loss", 1024, 1000, 5, max_vmap_ratio=1.2, group="vmap")]


def scaling_cases(quick):
  mlm = "multilabel_margin_loss"
  classes = [100, 1000, 10_000] if quick else [100, 300, 1000, 3000, 10_000, 30_000]
  labels = [1, 16, 256] if quick else [1, 4, 16, 64, 256, 1024, 5000]
  by_c = [Case(mlm, 64, c, 5, group="scaling_c") for c in classes]
  by_p = [Case(mlm, 8, 10_000, p, dense=True, group="scaling_p") for p in labels]
  return by_c + by_p


def make_data(case, rng):
  x = rng.normal(size=(case.num_rows, case.num_classes)).astype(np.float32)
  if case.loss == "multilabel_margin_loss":
    target = np.full(x.shape, -1, np.int64)
    for row in target:
      count = case.labels if case.dense else rng.integers(1, case.labels + 1)
      row[:count] = rng.choice(case.num_classes, count, replace=False)
  elif case.loss == "multi_margin_loss":
    target = rng.integers(0, case.num_classes, case.num_rows)
  else:
    target = (rng.random(x.shape) < 0.05).astype(np.float32)
  return x, target


def median_ms(fn, repeats):
  fn()  # warm-up: compilation, caches
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times) * 1e3)


def interleaved_medians(fns, repeats):
  """Medians of several timed functions, run in turn so drifts hit all alike.

  The order rotates by one each repetition: a call that runs right after
  torch's is slower (torch's threads leave the cores and caches cold), and a
  fixed order would give that penalty to one function only.
  """
  for fn in fns:
    fn()
  times = [[] for _ in fns]
  for repeat in range(repeats):
    for k in range(len(fns)):
      i = (repeat + k) % len(fns)
      start = time.perf_counter()
      fns[i]()
      times[i].append(time.perf_counter() - start)
  return [float(np.median(t) * 1e3) for t in times]


def jax_runner(case, x, target, value_checks=True):
  loss = getattr(jaxmargin, case.loss)
  step = jax.jit(jax.value_and_grad(loss))
  x, target = jnp.asarray(x), jnp.asarray(target)
  if case.loss != "multilabel_soft_margin_loss":
    target = target.astype(jnp.int32)
  with jaxmargin.value_checks(value_checks):
    jax.block_until_ready(step(x, target))  # traced (and compiled) with this setting
  return lambda: jax.block_until_ready(step(x, target))


def torch_runner(case, x, target):
  import torch
  import torch.nn.functional as F

  xt = torch.tensor(x, requires_grad=True)
  tt = torch.tensor(target)
  loss = getattr(F, case.loss)

  def run():
    xt.grad = None
    loss(xt, tt).backward()
  return run


def baseline_runner(case, x, target):
  x = jnp.asarray(x)
  if case.loss == "multi_margin_loss":
    step = jax.jit(jax.value_and_grad(lambda x: jnp.sum(x * x)))
    return lambda: jax.block_until_ready(step(x))
  if case.loss == "multilabel_soft_margin_loss":
    import optax

    target = jnp.asarray(target)
    step = jax.jit(jax.value_and_grad(
        lambda x: optax.sigmoid_binary_cross_entropy(x, target).mean()))
    return lambda: jax.block_until_ready(step(x))
  return None


def method_runner(method, x, target):
  """The multilabel margin core with one method forced (the public API picks)."""
  from jaxmargin._multilabel_margin import multilabel_margin_per_sample

  def loss(x, target):
    return jnp.mean(multilabel_margin_per_sample(x, target, jnp.float32(1), method))
  step = jax.jit(jax.value_and_grad(loss))
  x, target = jnp.asarray(x), jnp.asarray(target, jnp.int32)
  return lambda: jax.block_until_ready(step(x, target))


def vmap_runners(x, target):
  """The batched loss step and the same step as a ``vmap`` over single examples."""
  from jaxmargin import losses

  multi_hot = np.zeros(x.shape, np.int32)
  rows, slots = np.nonzero(target >= 0)
  multi_hot[rows, target[rows, slots]] = 1
  x, labels = jnp.asarray(x), jnp.asarray(multi_hot)
  loss = losses.multilabel_margin_loss
  batched = jax.jit(jax.value_and_grad(lambda x, y: jnp.mean(loss(x, y))))
  vmapped = jax.jit(jax.value_and_grad(lambda x, y: jnp.mean(jax.vmap(loss)(x, y))))
  # Not a target, but a vmap that is fast and wrong would pass it.
  np.testing.assert_allclose(batched(x, labels)[0], vmapped(x, labels)[0], rtol=1e-6)
  return [lambda step=step: jax.block_until_ready(step(x, labels))
          for step in (vmapped, batched)]


def run_vmap_case(case, repeats, rng):
  x, target = make_data(case, rng)
  vmapped_ms, batched_ms = interleaved_medians(vmap_runners(x, target), repeats)
  result = dataclasses.asdict(case) | {"name": f"vmap of {case.name}", "jax_ms": vmapped_ms,
                                       "batched_ms": batched_ms,
                                       "vmap_ratio": vmapped_ms / batched_ms}
  result["ok"] = bool(result["vmap_ratio"] <= case.max_vmap_ratio)
  return result


def run_case(case, repeats, rng):
  if case.group == "vmap":
    return run_vmap_case(case, repeats, rng)
  x, target = make_data(case, rng)
  runners = [jax_runner(case, x, target), torch_runner(case, x, target),
             jax_runner(case, x, target, value_checks=False)]
  baseline = baseline_runner(case, x, target)
  if baseline is not None:
    runners.append(baseline)
  methods = ("slots", "sort") if case.group == "scaling_p" else ()
  runners += [method_runner(method, x, target) for method in methods]
  # torch's dense multilabel kernel takes seconds per call: fewer repeats.
  slow = case.loss == "multilabel_margin_loss" and case.labels * case.num_classes >= 5e6
  times = interleaved_medians(runners, 5 if slow else repeats)
  result = dataclasses.asdict(case) | {"name": case.name, "jax_ms": times[0],
                                       "torch_ms": times[1], "jax_no_checks_ms": times[2]}
  result["speedup"] = times[1] / times[0]
  if baseline is not None:
    result["baseline_ms"] = times[3]
    result["baseline_ratio"] = times[0] / times[3]
  for method, ms in zip(methods, times[-len(methods):] if methods else ()):
    result[f"{method}_ms"] = ms
  result["ok"] = check_targets(result)
  return result


def check_targets(result):
  ok = True
  if result["min_speedup"] is not None:
    ok &= result["speedup"] >= result["min_speedup"]
  if result["max_baseline_ratio"] is not None:
    ok &= result["baseline_ratio"] <= result["max_baseline_ratio"]
  if result["min_baseline_speedup"] is not None:
    ok &= 1 / result["baseline_ratio"] >= result["min_baseline_speedup"]
  return bool(ok)


def describe_target(result):
  parts = []
  if result["min_speedup"] is not None:
    parts.append(f">={result['min_speedup']:g}x torch")
  if result["max_baseline_ratio"] is not None:
    parts.append(f"<={result['max_baseline_ratio']:g}x floor")
  if result["min_baseline_speedup"] is not None:
    parts.append(f">={result['min_baseline_speedup']:g}x optax")
  return ", ".join(parts)


def print_table(results):
  header = (f"{'case':<48} {'jaxmargin ms':>12} {'torch ms':>10} {'speedup':>8} "
            f"{'vs baseline':>11} {'no checks ms':>12}  target")
  against_torch = [r for r in results if r["group"] != "vmap"]
  if against_torch:
    print(header)
    print("-" * len(header))
  for r in against_torch:
    ratio = f"{r['baseline_ratio']:.2f}" if "baseline_ratio" in r else "-"
    target = describe_target(r)
    verdict = ("ok" if r["ok"] else "MISSED") if target else ""
    print(f"{r['name']:<48} {r['jax_ms']:>12.2f} {r['torch_ms']:>10.2f} "
          f"{r['speedup']:>7.1f}x {ratio:>11} {r['jax_no_checks_ms']:>12.2f}  {target} {verdict}")
  vmapped = [r for r in results if r["group"] == "vmap"]
  if vmapped:
    if against_torch:
      print()
    header = f"{'case':<56} {'vmap ms':>8} {'batched ms':>10} {'ratio':>6}  target"
    print(header)
    print("-" * len(header))
    for r in vmapped:
      verdict = "ok" if r["ok"] else "MISSED"
      print(f"{r['name']:<56} {r['jax_ms']:>8.2f} {r['batched_ms']:>10.2f} "
            f"{r['vmap_ratio']:>5.2f}x  <={r['max_vmap_ratio']:g}x batched {verdict}")


def plot(results, path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  for ax, group, key, label in (
      (axes[0], "scaling_c", "num_classes", "classes C (N=64, P<=5)"),
      (axes[1], "scaling_p", "labels", "labels per row P (N=8, C=10,000)")):
    rows = [r for r in results if r["group"] == group]
    xs = [r[key] for r in rows]
    ax.loglog(xs, [r["jax_ms"] for r in rows], "o-", label="jaxmargin (jit, value_and_grad)")
    ax.loglog(xs, [r["torch_ms"] for r in rows], "s--", label="torch 2.13 CPU (fwd+bwd)")
    for method, style in (("slots", ":"), ("sort", "-.")):
      if rows and f"{method}_ms" in rows[0]:
        ax.loglog(xs, [r[f"{method}_ms"] for r in rows], style, alpha=0.7,
                  label=f'jaxmargin, method="{method}" forced')
    ax.set_xlabel(label)
    ax.set_ylabel("time per step (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
  fig.suptitle("multilabel_margin_loss, float32, " + device_description())
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def device_description():
  device = jax.devices()[0]
  if device.platform == "cpu":
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
  return f"{device.platform.upper()} {device.device_kind}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--out", type=pathlib.Path, default=HERE / "results")
  parser.add_argument("--only", choices=["targets", "scaling", "vmap"], default=None)
  args = parser.parse_args()

  import torch
  torch.set_num_threads(os.cpu_count())
  rng = np.random.default_rng(0)
  cases = []
  if args.only in (None, "targets"):
    cases += target_cases()
  if args.only in (None, "vmap"):
    cases += vmap_cases()
  if args.only in (None, "scaling"):
    cases += scaling_cases(args.quick)
  repeats = 3 if args.quick else max(args.repeats, 5)
  results = []
  for case in cases:
    results.append(run_case(case, repeats, rng))
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
      "results": results,
  }
  json_path = args.out / f"{name}{'-quick' if args.quick else ''}.json"
  json_path.write_text(json.dumps(record, indent=1))
  print(f"\nwrote {json_path}")
  if any(r["group"].startswith("scaling") for r in results):
    png = args.out / f"scaling{'-quick' if args.quick else ''}.png"
    plot(results, png)
    print(f"wrote {png}")
  return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
  raise SystemExit(main())
