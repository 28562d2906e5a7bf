"""Benchmark class-parallel training of the fused losses: the classifier split over S devices.

Usage (from the repository root, after ``pip install -e ".[bench]"``)::

    python benchmarks/extreme_sharded.py                 # full run: table, JSON and plot
    python benchmarks/extreme_sharded.py --quick         # small sizes, for a smoke test
    python benchmarks/extreme_sharded.py --devices 1 2   # other device counts
    python benchmarks/extreme_sharded.py --cpu           # virtual CPU devices beside an accelerator

For each device count S, a subprocess of its own (XLA reads the device count
at startup, and each S gets its own peak memory) builds a one-axis mesh
``("model",)`` of S devices and times the jitted ``jax.value_and_grad`` of a
fused ``jaxmargin.linear`` loss (float32, ``reduction="mean"``) with respect
to features, kernel and bias, inside ``jax.shard_map`` with the kernel split
as ``P(None, "model")``, the bias as ``P("model")`` and features and labels
replicated (``class_axis_name="model"``: mode ``sharded``), and under plain
``jax.jit`` with the same placement and no ``shard_map`` (mode ``jit``: the
functions split the sweep as the kernel is placed). S = 1 also times the
plain one-device call, without ``shard_map``, for reference (mode ``plain``). A step's time is the
median of ``--repeats`` runs after a warm-up call, the cases of one S
interleaved, pooled over ``--rounds`` processes for each S that run in
alternating order (S = 1, 2, 4, 8, then 8, 4, 2, 1), so that a busy spell
of a shared machine does not fall on one S only.

Per-device memory is XLA's compile-time account
(``compiled.memory_analysis()``: arguments, outputs and temporaries of the
SPMD program that every device runs). The bytes communicated per step are
derived from the shapes (label scores, per-row totals, the features'
gradient) and counted in the compiled HLO (every collective and its result
size); the script fails if a collective carries anything of order ``N*C`` or
``D*C`` or sits in the loop over the class chunks.

Without an accelerator (or with ``--cpu``) the S devices are virtual CPU
devices (``--xla_force_host_platform_device_count=S``) that share the same
cores: the step time then shows what splitting costs (collectives, one chunk
loop per shard), not a speed-up, while the memory per device is what S real
devices would hold. On a machine with several accelerators the same command
uses the first S real devices (``--devices`` capped at the devices there are).
Results go to ``<out>/extreme-sharded-<device>.json`` and
``<out>/extreme-sharded.png`` (per-device memory and step time against S).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import re
import subprocess
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
MLM, MM, SOFT = "multilabel_margin_loss", "multi_margin_loss", "multilabel_soft_margin_loss"
LOSSES = (MLM, MM, SOFT)
AXIS = "model"
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
# Sharded and one-device values and gradient norms must agree this closely
# (float32; the tests hold the gradients themselves to 1e-5).
MAX_REL_DIFF = 1e-4
COLLECTIVE_OPS = ("all-reduce-start", "all-reduce", "all-gather-start", "all-gather",
                  "reduce-scatter", "ragged-all-to-all", "all-to-all",
                  "collective-permute-start", "collective-permute", "collective-broadcast")
_COLLECTIVE = re.compile(r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*(?P<shape>.*?)\s+"
                         r"(?P<op>" + "|".join(re.escape(op) for op in COLLECTIVE_OPS)
                         + r")\(")
_HEADER = re.compile(r"^(?P<entry>ENTRY\s+)?%?(?P<name>[\w.\-]+)\s.*\{\s*$")
_CALLEE = re.compile(r"\b(?P<kind>body|condition|calls|to_apply|true_computation|"
                     r"false_computation|branch_computations)="
                     r"(?:\{(?P<many>[^{}]*)\}|(?P<one>%?[\w.\-]+))")
_ARRAY = re.compile(r"\b(?P<dtype>pred|[a-z]+[0-9][a-z0-9]*)\[(?P<dims>[0-9,]*)\]")


# -- Theory and HLO ----------------------------------------------------------------------

def theory_parts(loss, n, d, k):
  """Bytes each device puts into the class axis's all-reduces per step, by what they carry.

  One sweep computes the value and the gradients (``reduction="mean"``), so
  each sum happens once a step: the label scores (the margin losses), the
  per-row totals after the chunk loop, and the features' gradient, summed by
  ``shard_map``'s transpose because the features are replicated. The
  kernel's and bias's gradients stay on their devices. float32 and int32.
  """
  from jaxmargin._multilabel_margin_fused import fused_method

  if loss == MLM:
    # The per-label counts of each row's labels: (N, K) with the compare
    # method, the (N, K + 1) histogram with the search method.
    counts = k if fused_method(k) == "compare" else k + 1
    parts = {"label_scores": n * k, "row_values": n, "row_label_counts": n * counts}
  elif loss == MM:
    # The target's score; beside the hinge sum, the count of active hinges (p=1).
    parts = {"label_scores": n, "row_values": n, "row_active_counts": n}
  else:
    parts = {"row_values": n}
  parts["features_grad"] = n * d
  return {key: 4 * count for key, count in parts.items()}


def _dtype_bytes(dtype):
  if dtype == "pred":
    return 1
  bits = re.search(r"\d+", dtype)
  return max(1, int(bits.group()) // 8) if bits else 4


def hlo_collectives(text):
  """Every collective in compiled HLO text: op, result shape, bytes, and where it sits.

  ``in_loop`` marks one inside a ``while`` (reached through a body or
  condition): it runs once per iteration, so its bytes a step are not its
  size. The sizes are the results', which for an all-reduce are its operands'.
  """
  computations, entry, current = {}, None, None
  for line in text.splitlines():
    header = _HEADER.match(line)
    if header:
      current = header.group("name")
      computations[current] = {"lines": [], "callees": []}
      if header.group("entry"):
        entry = current
      continue
    if current is None:
      continue
    computations[current]["lines"].append(line)
    for callee in _CALLEE.finditer(line):
      loop = callee.group("kind") in ("body", "condition")
      for name in (callee.group("many") or callee.group("one")).split(","):
        computations[current]["callees"].append((name.strip().lstrip("%"), loop))
  # Breadth first from the entry; a computation reached both ways counts as in a loop.
  in_loop, queue = {entry: False}, [entry]
  while queue:
    name = queue.pop(0)
    for callee, loop in computations.get(name, {"callees": []})["callees"]:
      flag = in_loop[name] or loop
      if callee in computations and (callee not in in_loop or (flag and not in_loop[callee])):
        in_loop[callee] = flag
        queue.append(callee)
  found = []
  for name, computation in computations.items():
    for line in computation["lines"]:
      match = _COLLECTIVE.match(line)
      if not match:
        continue
      arrays = [(a.group("dtype"), [int(x) for x in a.group("dims").split(",") if x])
                for a in _ARRAY.finditer(match.group("shape"))]
      found.append({
          "op": match.group("op"), "name": match.group("name"),
          "shape": re.sub(r"\{[^{}]*\}", "", match.group("shape")).strip(),
          "elements": sum(math.prod(dims) for _, dims in arrays),
          "bytes": sum(math.prod(dims) * _dtype_bytes(t) for t, dims in arrays),
          "computation": name, "in_loop": bool(in_loop.get(name, False))})
  return found


def check_communication(collectives, n, d, c_local):
  """Raises if a collective is of order ``N*C`` or ``D*C``, or runs once per chunk."""
  limit = min(n, d) * c_local
  for coll in collectives:
    if coll["in_loop"]:
      raise RuntimeError(f"collective {coll['op']} {coll['shape']} sits in a loop "
                         f"({coll['computation']}): its traffic grows with the chunks of C")
    if coll["elements"] >= limit:
      raise RuntimeError(f"collective {coll['op']} {coll['shape']} carries {coll['elements']:,} "
                         f"elements, of order N*C or D*C (limit {limit:,})")


# -- One device count (runs in its own process) -------------------------------------------

def make_data(n, d, c, k, seed=0):
  """float32 features, kernel and bias (as ``extreme.dense_data``), label lists and classes."""
  from extreme import label_lists  # benchmarks/extreme.py, beside this script

  rng = np.random.default_rng(seed)
  features = rng.standard_normal((n, d), np.float32)
  kernel = rng.standard_normal((d, c), np.float32) / np.float32(math.sqrt(d))
  bias = np.float32(0.1) * rng.standard_normal(c, np.float32)
  lists = label_lists(rng, n, c, k)
  classes = rng.integers(0, c, n).astype(np.int32)
  return features, kernel, bias, lists, classes


def make_step(loss, mesh, chunk_size):
  """The jitted value_and_grad step: as on one device (``mesh=None``) or inside shard_map."""
  import jax
  from jax.sharding import PartitionSpec as P

  from jaxmargin import linear

  fn = getattr(linear, loss)
  axis = None if mesh is None else AXIS

  def objective(features, kernel, bias, labels):
    return fn(features, kernel, labels, bias=bias, reduction="mean", chunk_size=chunk_size,
              class_axis_name=axis)

  if mesh is not None:
    objective = jax.shard_map(objective, mesh=mesh,
                              in_specs=(P(), P(None, AXIS), P(AXIS), P()), out_specs=P())
  return jax.jit(jax.value_and_grad(objective, argnums=(0, 1, 2)))


def interleaved_times(fns, repeats):
  """Times (ms) of each function, run in turn, the order rotating by one.

  A call's neighbours share its drifts (another process taking the cores),
  and a fixed order would give the cost of following the slowest to one case.
  """
  times = [[] for _ in fns]
  for repeat in range(repeats):
    for j in range(len(fns)):
      i = (repeat + j) % len(fns)
      start = time.perf_counter()
      fns[i]()
      times[i].append(time.perf_counter() - start)
  return [[t * 1e3 for t in ts] for ts in times]


def worker(args, s):
  """Every case at S devices; returns the record the parent collects."""
  import jax
  from jax.sharding import AxisType, NamedSharding
  from jax.sharding import PartitionSpec as P

  import jaxmargin
  from extreme import peak_rss_bytes
  from run import device_description  # benchmarks/run.py, beside this script

  devices = jax.devices()
  if len(devices) < s:
    raise SystemExit(f"{s} devices asked for, {len(devices)} there")
  n, d, c, k = args.n, args.d, args.c, args.k
  mesh = jax.make_mesh((s,), (AXIS,), axis_types=(AxisType.Auto,), devices=devices[:s])
  features, kernel, bias, lists, classes = make_data(n, d, c, k)

  def put(arrays, specs):
    return [jax.device_put(a, NamedSharding(mesh, spec)) for a, spec in zip(arrays, specs)]

  sharded_args = put((features, kernel, bias), (P(), P(None, AXIS), P(AXIS)))
  labels = dict(zip((MLM, MM, SOFT), put((lists, classes, lists), (P(),) * 3)))
  if s == 1:
    plain_args = [jax.device_put(a, devices[0]) for a in (features, kernel, bias)]
    plain_labels = {loss: jax.device_put(y, devices[0]) for loss, y in
                    ((MLM, lists), (MM, classes), (SOFT, lists))}
  del kernel  # the host copy; the devices hold theirs

  cases = []
  for loss in args.losses:
    # "jit": the placed arrays under plain jit, which at S = 1 is the plain call.
    modes = ["plain", "sharded"] if s == 1 else ["sharded", "jit"]
    for mode in modes:
      call_args = ((*plain_args, plain_labels[loss]) if mode == "plain"
                   else (*sharded_args, labels[loss]))
      step = make_step(loss, mesh if mode == "sharded" else None, args.chunk_size)
      start = time.perf_counter()
      compiled = step.lower(*call_args).compile()
      compile_s = time.perf_counter() - start
      stats = compiled.memory_analysis()
      memory = None if stats is None else {
          key: int(getattr(stats, f"{key}_size_in_bytes"))
          for key in ("argument", "output", "temp", "alias", "generated_code")}
      collectives = hlo_collectives(compiled.as_text())
      c_local = c if mode == "plain" else c // s
      if mode == "plain" and collectives:
        raise RuntimeError(f"the one-device step has collectives: {collectives}")
      check_communication(collectives, n, d, c_local)
      parts = {} if mode == "plain" else theory_parts(loss, n, d, k)
      # At S = 1 the all-reduces stay in the program (over one device, they send nothing).
      theory = sum(parts.values())
      measured = sum(coll["bytes"] for coll in collectives)
      # The warm-up call; its value and gradient norms check the split against one device.
      value, grads = jax.block_until_ready(compiled(*call_args))
      norms = {name: float(np.linalg.norm(np.asarray(g, np.float64)))
               for name, g in zip(("features", "kernel", "bias"), grads)}
      del grads
      cases.append({
          "loss": loss, "s": s, "mode": mode, "n": n, "d": d, "c": c, "c_local": c_local,
          "k": k if loss != MM else 1, "compile_s": compile_s, "memory": memory,
          "kernel_share_bytes": 4 * d * c_local,
          "collectives": collectives, "communicated_bytes_hlo": measured,
          "communicated_bytes_theory": theory,
          "theory_parts_bytes": parts,
          "hlo_matches_theory": measured == theory,
          "ring_bytes_per_device": 2 * (s - 1) / s * theory,
          "value": float(value), "grad_norms": norms,
          "step": lambda compiled=compiled, call_args=call_args:
              jax.block_until_ready(compiled(*call_args))})
      print(f"  S={s}: compiled {mode} {loss} ({compile_s:.1f} s)", file=sys.stderr, flush=True)
  # Other work on the machine slows every case of this S alike, but not the
  # other S: the load is kept beside the times.
  load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
  timings = interleaved_times([case.pop("step") for case in cases], args.repeats)
  load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
  for case, times in zip(cases, timings):
    case["times_ms"] = times
  device_peak = [dev.memory_stats() for dev in devices[:s]]
  device_peak = [m.get("peak_bytes_in_use") for m in device_peak if m]
  return {"s": s, "device": device_description(), "platform": devices[0].platform,
          "jaxmargin_path": str(pathlib.Path(jaxmargin.__file__).resolve().parent),
          "device_kind": devices[0].device_kind, "jax": jax.__version__, "cases": cases,
          # One process holds every (virtual) device: this is all of them together.
          "process_peak_rss_bytes": peak_rss_bytes(),
          "device_peak_bytes_in_use": max(device_peak) if device_peak else None,
          "load_average_1min": [load_before, load_after]}


def probe():
  import jax

  device = jax.devices()[0]
  return {"platform": device.platform, "device_kind": device.device_kind,
          "device_count": jax.device_count()}


# -- The parent: one subprocess per S ------------------------------------------------------

def child_env(cpu, s=None):
  env = dict(os.environ)
  if cpu:
    env["JAX_PLATFORMS"] = "cpu"
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT_FLAG)]
    if s is not None:
      flags.append(f"{DEVICE_COUNT_FLAG}={s}")
    env["XLA_FLAGS"] = " ".join(flags)
  return env


def run_child(extra, env):
  """Runs this script with ``extra`` arguments; its last line of output is JSON."""
  command = [sys.executable, str(pathlib.Path(__file__).resolve())] + extra
  proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env)
  lines = proc.stdout.strip().splitlines()
  if proc.returncode != 0 or not lines:
    raise SystemExit(f"{' '.join(extra)} failed (exit status {proc.returncode}):\n{proc.stdout}")
  return json.loads(lines[-1])


def source_of(path):
  """Where the workers' jaxmargin came from: its path, git commit and whether it was edited."""
  def git(*command):
    proc = subprocess.run(["git", "-C", path, *command], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None

  commit = git("rev-parse", "HEAD")
  status = git("status", "--porcelain", "--", ".") if commit else None
  return {"path": path, "commit": commit, "modified": None if status is None else bool(status)}


def check_against_reference(rows):
  """Relative differences of values and gradient norms from the first case of each loss."""
  for loss in {r["loss"] for r in rows}:
    mine = [r for r in rows if r["loss"] == loss]
    ref = mine[0]  # S=1 plain where S=1 ran
    for r in mine:
      diffs = [abs(r["value"] - ref["value"]) / abs(ref["value"])]
      diffs += [abs(r["grad_norms"][g] - ref["grad_norms"][g]) / ref["grad_norms"][g]
                for g in ref["grad_norms"]]
      r["rel_diff_vs_reference"] = max(diffs)
      r["reference"] = f"S={ref['s']} {ref['mode']}"
  bad = [r for r in rows if r["rel_diff_vs_reference"] > MAX_REL_DIFF]
  if bad:
    raise SystemExit("the split step differs from the one-device step: " + ", ".join(
        f"{r['loss']} S={r['s']} {r['mode']}: {r['rel_diff_vs_reference']:.1e}" for r in bad))


def mb(x):
  return "-" if x is None else f"{x / 1e6:.1f}"


def print_table(rows, sizes, virtual):
  print(f"\nClass-parallel value_and_grad, reduction='mean', float32, N={sizes['n']} "
        f"D={sizes['d']} C={sizes['c']:,} K<={sizes['k']}; memory per device (MB, XLA's "
        "compiled account); communication per step per device (all-reduce payload, bytes)")
  header = (f"{'loss':<28} {'S':>2} {'mode':<7} {'step ms':>9} {'vs S=1':>7} {'args':>7} "
            f"{'outputs':>7} {'temp':>7} {'total':>7} {'colls':>5} {'comm HLO':>9} "
            f"{'theory':>9}")
  print(header)
  print("-" * len(header))
  for r in rows:
    base = next((b for b in rows if b["loss"] == r["loss"] and b["s"] == 1
                 and b["mode"] == "sharded"), None)
    memory = r["memory"] or {}
    total = (sum(memory[key] for key in ("argument", "output", "temp")) if memory else None)
    ratio = f"{r['step_ms'] / base['step_ms']:.2f}" if base else "-"
    print(f"{r['loss']:<28} {r['s']:>2} {r['mode']:<7} {r['step_ms']:>9.1f} {ratio:>7} "
          f"{mb(memory.get('argument')):>7} {mb(memory.get('output')):>7} "
          f"{mb(memory.get('temp')):>7} {mb(total):>7} {len(r['collectives']):>5} "
          f"{r['communicated_bytes_hlo']:>9,} {r['communicated_bytes_theory']:>9,}")
  if virtual:
    print("The S devices are virtual CPU devices on the same cores: the step time shows the "
          "cost of splitting, not a speed-up; the memory per device is what S real devices "
          "would hold.")


def plot(rows, path, title):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import matplotlib.ticker

  fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
  colors = dict(zip(LOSSES, ("C0", "C1", "C2")))
  for loss in LOSSES:
    sharded = [r for r in rows if r["loss"] == loss and r["mode"] == "sharded" and r["memory"]]
    plain = [r for r in rows if r["loss"] == loss and r["mode"] == "plain"]
    if not sharded:
      continue
    xs = [r["s"] for r in sharded]
    total = [sum(r["memory"][key] for key in ("argument", "output", "temp")) / 1e6
             for r in sharded]
    axes[0].plot(xs, total, "o-", color=colors[loss], label=f"{loss}: total")
    axes[0].plot(xs, [r["memory"]["temp"] / 1e6 for r in sharded], "s--", color=colors[loss],
                 alpha=0.7, label=f"{loss}: temporaries")
    axes[1].plot(xs, [r["step_ms"] for r in sharded], "o-", color=colors[loss],
                 label=f"{loss} (shard_map)")
    placed = [r for r in rows if r["loss"] == loss and r["mode"] == "jit"]
    if placed:
      axes[1].plot([r["s"] for r in placed], [r["step_ms"] for r in placed], "^:",
                   color=colors[loss], alpha=0.7, label=f"{loss} (jit, kernel placed)")
    for r in plain:
      axes[1].plot([1], [r["step_ms"]], "x", color=colors[loss], markersize=9,
                   label=f"{loss} (one device, no shard_map)")
  share = sorted({(r["s"], r["kernel_share_bytes"] / 1e6) for r in rows
                  if r["mode"] == "sharded"})
  if share:
    axes[0].plot(*zip(*share), "k:", label="kernel share D*C/S (float32)")
  axes[0].set_ylabel("memory per device (MB)")
  axes[1].set_ylabel("time per step (ms)")
  axes[1].set_ylim(bottom=0)
  for ax in axes:
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({r["s"] for r in rows}), [str(s) for s in sorted({r["s"] for r in rows})])
    ax.set_xlabel("devices S splitting the classes")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
  axes[0].set_yscale("log")
  axes[0].yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
  axes[0].set_title("total = arguments + outputs + temporaries (XLA's compiled account)",
                    fontsize=8)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="small sizes (C=80,000, N=256), 3 repeats, one round")
  parser.add_argument("--n", type=int, default=512, help="rows N")
  parser.add_argument("--d", type=int, default=64, help="features D")
  parser.add_argument("--c", type=int, default=800_000,
                      help="classes C, in total (a multiple of every device count)")
  parser.add_argument("--k", type=int, default=16, help="at most K labels a row")
  parser.add_argument("--chunk-size", type=int, default=None,
                      help="classes per chunk (default: the losses' own)")
  parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8],
                      help="device counts S (beyond the CPU, capped at the devices there are)")
  parser.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
  parser.add_argument("--repeats", type=int, default=3, help="timed steps a case and round")
  parser.add_argument("--rounds", type=int, default=2,
                      help="runs of every S (a process each), in alternating order")
  parser.add_argument("--cpu", action="store_true",
                      help="virtual CPU devices even where an accelerator is")
  parser.add_argument("--out", type=pathlib.Path, default=HERE / "results",
                      help="folder of the JSON and the plot")
  parser.add_argument("--json", type=pathlib.Path, default=None,
                      help="the JSON's path (default: <out>/extreme-sharded-<device>.json)")
  parser.add_argument("--png", type=pathlib.Path, default=None,
                      help="the plot's path (default: <out>/extreme-sharded.png)")
  parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
  parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.quick:
    args.n, args.c, args.repeats, args.rounds = 256, 80_000, 3, 1
  args.repeats, args.rounds = max(args.repeats, 1), max(args.rounds, 1)
  if args.probe:
    print(json.dumps(probe()))
    return 0
  if args.worker is not None:
    print(json.dumps(worker(args, args.worker)))
    return 0

  started = time.perf_counter()
  info = run_child(["--probe"], child_env(args.cpu))
  virtual = info["platform"] == "cpu"
  counts = sorted(set(args.devices))
  if not virtual:
    kept = [s for s in counts if s <= info["device_count"]]
    if kept != counts:
      print(f"{info['device_count']} {info['platform']} devices: skipping S="
            f"{[s for s in counts if s not in kept]}")
    counts = kept
  if not counts:
    raise SystemExit("no device count to run")
  if any(args.c % s for s in counts):
    raise SystemExit(f"C={args.c} is not a multiple of every device count {counts}")
  forward = ["--n", str(args.n), "--d", str(args.d), "--c", str(args.c), "--k", str(args.k),
             "--repeats", str(args.repeats), "--losses", *args.losses]
  if args.chunk_size:
    forward += ["--chunk-size", str(args.chunk_size)]
  # Rounds over the device counts, the order reversed each round, so that a
  # busy spell of the machine falls on several S; the times are pooled.
  rounds = {s: [] for s in counts}
  for r in range(args.rounds):
    for s in counts if r % 2 == 0 else counts[::-1]:
      print(f"S={s}: running (round {r + 1} of {args.rounds})", flush=True)
      rounds[s].append(run_child(["--worker", str(s)] + forward, child_env(virtual, s)))
  workers = [rounds[s][0] for s in counts]
  rows = [case for w in workers for case in w["cases"]]
  for row in rows:
    runs = [next(c for c in w["cases"] if c["loss"] == row["loss"] and c["mode"] == row["mode"])
            for w in rounds[row["s"]]]
    times = [t for run in runs for t in run["times_ms"]]
    row["times_ms"] = times
    row["step_ms"], row["step_ms_min"] = float(np.median(times)), float(np.min(times))
    row["step_ms_round_medians"] = [float(np.median(run["times_ms"])) for run in runs]
  check_against_reference(rows)
  sizes = {"n": args.n, "d": args.d, "c": args.c, "k": args.k, "dtype": "float32"}
  print_table(rows, sizes, virtual)
  runtime_s = time.perf_counter() - started

  description = workers[0]["device"]
  name = "cpu" if virtual else info["device_kind"].replace(" ", "-").lower()
  suffix = "-quick" if args.quick else ""
  note = ("virtual CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=S) that "
          f"share the same {os.cpu_count()} cores: the step time shows the overhead of splitting "
          "(collectives, one chunk loop per shard), not a speed-up; the memory per device "
          "(kernel share 1/S, temporaries flat) is what S real devices would hold"
          if virtual else f"the first S of {info['device_count']} {info['platform']} devices")
  record = {
      "device": description, "platform": info["platform"], "devices": note,
      "jax": workers[0]["jax"], "python": platform.python_version(),
      "jaxmargin": source_of(workers[0]["jaxmargin_path"]),
      "repeats": args.repeats, "rounds": args.rounds, "quick": args.quick, "sizes": sizes,
      "chunk_size": args.chunk_size,
      "step": ("jit(value_and_grad(loss, argnums=(features, kernel, bias))), reduction='mean', "
               "inside shard_map with kernel P(None, 'model'), bias P('model'), features and "
               "labels P(); mode 'jit' is the same placement under plain jit without "
               "shard_map; mode 'plain' is the one-device call"),
      "memory": ("compiled.memory_analysis(), per device: argument, output and temp "
                 "(temporaries) bytes of the SPMD program"),
      "communication": ("communicated_bytes_theory: the all-reduce payload a device sums per "
                        "step, from the shapes (theory_parts_bytes); communicated_bytes_hlo: the "
                        "result bytes of the collectives in compiled.as_text(); "
                        "ring_bytes_per_device: 2 (S-1)/S times the payload, what a ring "
                        "all-reduce sends from each device"),
      "runtime_s": runtime_s,
      "workers": [{key: w[key] for key in ("s", "process_peak_rss_bytes",
                                           "device_peak_bytes_in_use", "load_average_1min")}
                  for s in counts for w in rounds[s]],
      "results": rows,
  }
  json_path = args.json or args.out / f"extreme-sharded-{name}{suffix}.json"
  png_path = args.png or args.out / f"extreme-sharded{suffix}.png"
  json_path.parent.mkdir(parents=True, exist_ok=True)
  png_path.parent.mkdir(parents=True, exist_ok=True)
  json_path.write_text(json.dumps(record, indent=1))
  title = (f"fused losses, class-parallel value_and_grad, N={args.n} D={args.d} C={args.c:,} "
           f"K<={args.k}, float32; {description}"
           + (", S virtual devices on the same cores" if virtual else ""))
  plot(rows, png_path, title)
  print(f"\ntotal runtime {runtime_s:.0f} s\nwrote {json_path}\nwrote {png_path}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
