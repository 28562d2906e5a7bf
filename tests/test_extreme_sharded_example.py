"""Smoke tests of ``examples/extreme_multilabel_sharded.py``: one-device numbers, split by class.

This process initialised JAX with one CPU device, and XLA reads
``--xla_force_host_platform_device_count`` only when it starts, so the
sharded example runs in a subprocess with 8 virtual CPU devices; so does the
one-device example, with the same arguments and environment, so that the
split of the classes is the only difference between the two runs. Each takes
a few seconds (one epoch on 2,000 labels, 250 a device); the full run is timed
by hand.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from tests.test_extreme_example import METRIC_LINE, METRICS, PNG_SIGNATURE, SMALL

# Runs examples, subprocesses or large compiles: out of the fast tier (-m "not slow").
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
NUM_DEVICES = 8
# 2,000 labels over 8 devices.
CLASSES_PER_DEVICE = 250
# The two runs differ only in the order of float sums, which after 31 steps
# moves a few scores enough to swap an example's ranked labels. One swapped
# hit moves precision@k by 1 / (500 k) (0.002 at k = 1) and PSP@k by at most
# 0.0037 (k = 1, an unseen label's propensity); seeds 0-3 differ by 0.002 at
# most. So the bound allows a couple of swaps, while a wrong split (local
# class ids, a missed shard) costs 0.1 or more.
TOLERANCE = 5e-3
# Only stops a hang: the two runs take about 13 s side by side on 2 cores.
TIMEOUT_S = 300


def example_env(device_count: int | None) -> dict[str, str]:
  """This environment on CPU, with ``device_count`` virtual devices or the example's own."""
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(DEVICE_COUNT_FLAG)]
  if device_count is not None:
    flags.append(f"{DEVICE_COUNT_FLAG}={device_count}")
  env["XLA_FLAGS"] = " ".join(flags)
  # Virtual devices are CPU devices; an accelerator would otherwise be used.
  env["JAX_PLATFORMS"] = "cpu"
  # Both runs in JAX's default 32-bit mode, whatever this shell asks for.
  env.pop("JAX_ENABLE_X64", None)
  # jaxmargin from this checkout, installed or not.
  env["PYTHONPATH"] = os.pathsep.join(
      [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  return env


def start_example(name: str, args: list[str],
                  device_count: int | None = NUM_DEVICES) -> subprocess.Popen:
  command = [sys.executable, str(EXAMPLES / f"{name}.py"), *args]
  return subprocess.Popen(command, cwd=ROOT, env=example_env(device_count),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
  """The exit status, stdout and stderr; kills the process if it hangs."""
  try:
    stdout, stderr = process.communicate(timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    process.kill()
    stdout, stderr = process.communicate()
  return process.returncode, stdout, stderr


def metric_lines(stdout: str) -> dict[str, dict[str, str]]:
  """``{"model": {metric: printed value}, "baseline": {...}}``."""
  printed = {"model": {}, "baseline": {}}
  for baseline, name, value in METRIC_LINE.findall(stdout):
    printed["baseline" if baseline else "model"][name] = value
  return printed


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The stdout and PNG folder of each example, after checking that it succeeded."""
  # Side by side: each leaves part of the 2 cores idle (start-up, small steps).
  started = {}
  for name in ("extreme_multilabel", "extreme_multilabel_sharded"):
    out = tmp_path_factory.mktemp(name)
    started[name] = (start_example(name, SMALL + ["--out", str(out)]), out)
  # Both finish before either is checked: no process outlives the fixture.
  finished = {name: (finish(process), out) for name, (process, out) in started.items()}
  for name, ((status, stdout, stderr), _) in finished.items():
    assert status == 0, f"{name}: exit status {status}\n{stdout}\n{stderr}"
  return {name: (stdout, out) for name, ((_, stdout, _), out) in finished.items()}


def test_sharded_example_prints_the_one_device_metrics(runs):
  one_device, _ = runs["extreme_multilabel"]
  sharded, _ = runs["extreme_multilabel_sharded"]
  want, got = metric_lines(one_device), metric_lines(sharded)
  for run in ("model", "baseline"):
    assert set(want[run]) == set(got[run]) == METRICS, (run, sharded)
  # The data and the baseline do not depend on the model: the same lines.
  assert got["baseline"] == want["baseline"], sharded
  data_line = next(line for line in one_device.splitlines() if line.startswith("labels: "))
  assert data_line in sharded.splitlines(), sharded
  for name in METRICS:
    assert float(got["model"][name]) == pytest.approx(float(want["model"][name]),
                                                      abs=TOLERANCE), (name, sharded)
  # It learned: the one-device smoke test's bound, so a run that diverged
  # together (both near the baseline) cannot pass either.
  assert float(got["model"]["precision@1"]) > float(got["baseline"]["precision@1"]) + 0.15


def test_sharded_example_holds_an_eighth_of_the_classes_per_device_and_plots(runs):
  stdout, out = runs["extreme_multilabel_sharded"]
  lines = stdout.splitlines()
  assert f"devices: {NUM_DEVICES} x cpu; classes per device: {CLASSES_PER_DEVICE}" in lines, \
      stdout
  # Printed once placed; the example checks the Adam moments, and the split
  # again after training (it fails otherwise).
  assert (f"kernel per device: (64, {CLASSES_PER_DEVICE}); bias per device: "
          f"({CLASSES_PER_DEVICE},); Adam moments alike") in lines, stdout
  plot = out / "extreme_multilabel_sharded.png"
  assert plot.is_file() and plot.read_bytes()[:8] == PNG_SIGNATURE
  assert not (out / "extreme_multilabel.png").exists()


def test_sharded_example_asks_for_8_devices_and_refuses_labels_that_do_not_split():
  # No device count of ours: the 8 in the message are the ones the example
  # asked XLA for. It stops while parsing its arguments, before any data.
  status, stdout, stderr = finish(start_example(
      "extreme_multilabel_sharded", ["--num-labels", "2004"], device_count=None))
  assert status == 2, f"{stdout}\n{stderr}"
  assert "--num-labels 2004 does not split over 8 devices: use a multiple of 8" in stderr, \
      stderr
