"""Smoke tests of the digits training examples: they build sound data, learn, and plot.

Each example runs for one epoch on a small data set, so the tests take seconds;
the full runs are timed by hand (see the README). The examples are scripts,
not a package: they are loaded with ``runpy`` and find their shared
``digits_data`` module on ``sys.path``, as when run as ``python examples/...``.
The data-parallel example runs in a process of its own instead, since it sets
``XLA_FLAGS`` before JAX starts.
"""

from __future__ import annotations

import os
import pathlib
import re
import runpy
import subprocess
import sys

import numpy as np
import pytest

from tests.jax_versions import enable_x64

# Runs examples, subprocesses or large compiles: out of the fast tier (-m "not slow").
pytestmark = pytest.mark.slow

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
README = EXAMPLES.parent / "README.md"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MULTILABEL_LINE = re.compile(r"^(\w+): LRAP (\S+), hamming loss (\S+)$", re.M)
LOSS_NAMES = {"multilabel_margin_loss", "multilabel_soft_margin_loss"}
# Few composites and small batches: one epoch is a few dozen steps.
SMALL_MULTILABEL = ["--epochs", "1", "--train-size", "2000", "--test-size", "500",
                    "--batch-size", "64"]


@pytest.fixture
def load_example(monkeypatch):
  """Loads ``examples/<name>.py`` as a module namespace, without running ``main``."""
  monkeypatch.syspath_prepend(str(EXAMPLES))

  def load(name):
    return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="not_main")

  return load


def assert_png(path):
  assert path.is_file(), f"no plot at {path}"
  assert path.read_bytes()[:8] == PNG_SIGNATURE


def readme_results(example):
  """The printed results of the README's examples table for ``examples/<example>.py``."""
  for row in README.read_text().splitlines():
    if row.startswith(f"| `examples/{example}.py`"):
      return re.findall(r"`([^`]+)`", row.rsplit("|", 2)[1])
  raise AssertionError(f"the README's examples table has no row for {example}")


def assert_readme_shows_the_printed_lines(example, printed):
  """The README's row holds the lines the example prints, word for word and digit for digit.

  Only the values may differ: the README's come from full runs, whose numbers
  the README gives to within a stated tolerance (a full run takes a minute,
  too long for the tests; these runs are a few epochs short of it).
  """
  def form(line):
    return re.sub(r"\d", "0", line)
  assert [form(line) for line in readme_results(example)] == [form(line) for line in printed]


def tile_sources(split_images, split_labels):
  """Maps each image's bytes to its class, to recognise the tiles of a composite."""
  return {image.tobytes(): int(label) for image, label in zip(split_images, split_labels)}


@pytest.mark.parametrize("part", ["train", "test"])
def test_multilabel_composites_come_from_their_split_and_match_their_labels(
    load_example, part):
  data = load_example("digits_data")
  split = data["load_digits_split"]()
  train, test = data["make_multilabel_split"](split, 300, 200, seed=3)
  composites = {"train": train, "test": test}[part]
  sources = tile_sources(getattr(split, f"{part}_images"),
                         getattr(split, f"{part}_labels"))
  num = len(composites.images)
  assert composites.images.shape == (num, 8, 24)
  assert composites.images.dtype == composites.multi_hot.dtype == np.float32
  assert composites.padded.dtype == np.int32
  for image, multi_hot, padded in zip(composites.images, composites.multi_hot,
                                      composites.padded):
    tiles = [image[:, 8 * s:8 * (s + 1)] for s in range(3)]
    digits = [sources[t.tobytes()] for t in tiles if t.any()]
    assert 2 <= len(digits) <= 3 and len(set(digits)) == len(digits)
    assert set(np.flatnonzero(multi_hot)) == set(digits)
    listed = padded[padded >= 0]
    assert list(listed) == sorted(digits)
    assert (padded[len(listed):] == -1).all()
  # Both counts of digits occur, and every slot is used.
  counts = composites.multi_hot.sum(axis=1)
  assert set(counts) == {2.0, 3.0}
  assert all(composites.images[:, :, 8 * s:8 * (s + 1)].any() for s in range(3))


def test_split_is_fixed_and_stratified(load_example):
  data = load_example("digits_data")
  first, second = data["load_digits_split"](), data["load_digits_split"]()
  np.testing.assert_array_equal(first.test_images, second.test_images)
  assert len(first.train_labels) + len(first.test_labels) == 1797
  assert np.bincount(first.test_labels, minlength=10).min() >= 40


def test_multilabel_metrics_threshold_scores_at_zero(load_example):
  metrics = load_example("digits_data")["multilabel_metrics"]
  truth = np.array([[1, 0, 1, 0], [0, 1, 0, 0]], np.float32)
  perfect = metrics(np.where(truth == 1, 0.5, -0.5), truth)
  assert perfect == {"lrap": 1.0, "hamming": 0.0}
  # Well ranked but all above 0: LRAP stays 1, every negative is a Hamming error.
  shifted = metrics(np.where(truth == 1, 2.0, 1.0), truth)
  assert shifted == {"lrap": 1.0, "hamming": 5 / 8}


def test_classifier_nnx_trains_and_plots(load_example, tmp_path, capsys):
  example = load_example("digits_classifier_nnx")
  accuracy = example["main"](["--epochs", "1", "--out", str(tmp_path)])
  printed = re.search(r"^test accuracy: (\S+)$", capsys.readouterr().out, re.M)
  assert printed, "no 'test accuracy:' line"
  assert_readme_shows_the_printed_lines("digits_classifier_nnx", [printed.group(0)])
  assert float(printed.group(1)) == pytest.approx(accuracy, abs=1e-4)
  # Chance is 0.1; one epoch already gives about 0.8.
  assert 0.5 < accuracy <= 1.0
  assert_png(tmp_path / example["PLOT_NAME"])


def test_linen_multilabel_example_trains_both_losses_and_plots(load_example, tmp_path, capsys):
  # The NNX example's run, output and plot are checked by its full run below.
  name = "digits_multilabel_linen"
  example = load_example(name)
  results = example["main"](SMALL_MULTILABEL + ["--out", str(tmp_path)])
  out = capsys.readouterr().out
  lines = MULTILABEL_LINE.findall(out)
  assert {loss for loss, _, _ in lines} == LOSS_NAMES and len(lines) == 2
  assert_readme_shows_the_printed_lines(
      name, [m.group(0) for m in MULTILABEL_LINE.finditer(out)])
  for loss, lrap, hamming in lines:
    # Random scores give an LRAP near 0.4 here.
    assert 0.6 < float(lrap) <= 1.0, loss
    assert 0.0 <= float(hamming) < 0.5, loss
    assert float(lrap) == pytest.approx(results[loss]["lrap"], abs=1e-4)
  assert_png(tmp_path / example["PLOT_NAME"])


# What the README allows another CPU's full run to differ by, in its words.
README_TOLERANCE = 0.003


def test_main_example_prints_the_readme_numbers_within_their_stated_tolerance(
    load_example, tmp_path, capsys):
  # The one full run in the tests (about 35 s on 2 cores): the example the
  # README's two commands run, with its defaults, and as there without the
  # 64-bit types the test session turns on (they change its numbers).
  assert f"within about ±{README_TOLERANCE}" in README.read_text()
  example = load_example("digits_multilabel_nnx")
  with enable_x64(False):
    results = example["main"](["--out", str(tmp_path)])
  out = capsys.readouterr().out
  printed = [m.group(0) for m in MULTILABEL_LINE.finditer(out)]
  assert {loss for loss, _, _ in MULTILABEL_LINE.findall(out)} == LOSS_NAMES
  for loss, lrap, _ in MULTILABEL_LINE.findall(out):
    assert float(lrap) == pytest.approx(results[loss]["lrap"], abs=1e-4)
  assert_png(tmp_path / example["PLOT_NAME"])
  shown = readme_results("digits_multilabel_nnx")
  assert_readme_shows_the_printed_lines("digits_multilabel_nnx", printed)
  for ours, theirs in zip(printed, shown):
    np.testing.assert_allclose([float(v) for v in MULTILABEL_LINE.match(ours).groups()[1:]],
                               [float(v) for v in MULTILABEL_LINE.match(theirs).groups()[1:]],
                               rtol=0, atol=README_TOLERANCE, err_msg=f"{ours} / {theirs}")


def test_multilabel_example_is_deterministic(load_example, tmp_path):
  main = load_example("digits_multilabel_nnx")["main"]
  args = SMALL_MULTILABEL + ["--seed", "1", "--out", str(tmp_path)]
  assert main(args) == main(args)


def test_data_parallel_example_trains_on_8_virtual_devices(tmp_path):
  env = dict(os.environ)
  # No device count of our own: the example must ask for its 8 devices itself.
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                              if not f.startswith("--xla_force_host_platform_device_count"))
  env["JAX_PLATFORMS"] = "cpu"
  # jaxmargin from this checkout, installed or not.
  env["PYTHONPATH"] = os.pathsep.join(
      [str(EXAMPLES.parent)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  # Two epochs, so that the loss can be seen to fall; about 12 s on 2 cores.
  args = ["--epochs", "2", "--train-size", "2000", "--test-size", "500",
          "--batch-size", "64", "--out", str(tmp_path)]
  result = subprocess.run([sys.executable, str(EXAMPLES / "data_parallel_nnx.py"), *args],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
  output = f"{result.stdout}\n{result.stderr}"
  assert result.returncode == 0, output
  assert re.search(r"^devices: 8 x cpu$", result.stdout, re.M), output
  assert "split into 8 shards of (8, 192)" in result.stdout, output
  assert "parameters: replicated on 8 devices: True" in result.stdout, output
  epochs = [float(loss) for loss in re.findall(r"^epoch \d+: train loss (\S+),",
                                               result.stdout, re.M)]
  assert len(epochs) == 2 and epochs[1] < epochs[0], output
  lines = MULTILABEL_LINE.findall(result.stdout)
  assert [loss for loss, _, _ in lines] == ["multilabel_margin_loss"], output
  assert_readme_shows_the_printed_lines(
      "data_parallel_nnx", [m.group(0) for m in MULTILABEL_LINE.finditer(result.stdout)])
  # Random scores give an LRAP near 0.4; seeds 0-2 give 0.87-0.88 here.
  assert 0.75 < float(lines[0][1]) <= 1.0, output
  assert_png(tmp_path / "data_parallel_nnx.png")
