"""Runs the 8-device checks of ``tests/multidevice`` in a process of their own.

This process initialised JAX with one CPU device before any test ran, and
XLA reads ``--xla_force_host_platform_device_count`` only when it starts, so
the checks run in a fresh ``python -m pytest`` with 8 virtual CPU devices and
JAX's default 32-bit mode (``tests/multidevice/conftest.py``). Each check is a
test there; this one fails if any of them fails or none ran, shows their
output when it does, and records how many passed as user properties
(``--junitxml``) and in its captured output (``-rP``).
"""

from __future__ import annotations

import collections
import os
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

# Runs examples, subprocesses or large compiles: out of the fast tier (-m "not slow").
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
SUITE = ROOT / "tests" / "multidevice"
DEVICE_FLAG = "--xla_force_host_platform_device_count=8"
# About 2.5 minutes alone on the project's 2-core CPU (141 checks), up to 4 beside the rest
# of the suite under xdist; the limit only stops a hang.
TIMEOUT_S = 1800


def _outcomes(junit_xml):
  """``{outcome: [test ids]}`` from a JUnit XML report."""
  outcomes = collections.defaultdict(list)
  for case in ET.parse(junit_xml).getroot().iter("testcase"):
    name = f"{case.get('classname')}::{case.get('name')}"
    if case.find("failure") is not None or case.find("error") is not None:
      outcomes["failed"].append(name)
    elif (skipped := case.find("skipped")) is not None:
      kind = "xfailed" if skipped.get("type") == "pytest.xfail" else "skipped"
      outcomes[kind].append(name)
    else:
      outcomes["passed"].append(name)
  return outcomes


def test_sharding_checks_pass_on_8_virtual_cpu_devices(tmp_path, record_property):
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags + [DEVICE_FLAG])
  # Virtual devices are CPU devices; on a machine with an accelerator the
  # checks would otherwise run on however many of those it has.
  env["JAX_PLATFORMS"] = "cpu"
  # The checks start in 32-bit mode whatever this shell asks for.
  env.pop("JAX_ENABLE_X64", None)
  env["JAXMARGIN_MULTIDEVICE"] = "1"
  report = tmp_path / "multidevice.xml"
  # "-o addopts=" drops the project's "-n auto" (no workers in a subprocess
  # that is itself one test) and "--doctest-modules".
  command = [sys.executable, "-m", "pytest", str(SUITE), "-p", "no:xdist",
             "-p", "no:cacheprovider", "-o", "addopts=", "-q", "-rfEXs",
             f"--junitxml={report}"]
  result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
  output = f"$ {' '.join(command)}\n{result.stdout}\n{result.stderr}"
  assert report.is_file(), f"no report (exit status {result.returncode}):\n{output}"
  outcomes = _outcomes(report)
  counts = {kind: len(ids) for kind, ids in sorted(outcomes.items())}
  for kind, count in counts.items():
    record_property(f"multidevice_{kind}", count)
  print(f"multidevice checks: {counts}")
  assert not outcomes["failed"], f"failed: {outcomes['failed']}\n{output}"
  # A skip here means the process did not get its 8 devices: nothing was checked.
  assert not outcomes["skipped"], f"skipped: {outcomes['skipped']}\n{output}"
  assert outcomes["passed"], f"no check ran:\n{output}"
  assert result.returncode == 0, f"exit status {result.returncode}:\n{output}"
