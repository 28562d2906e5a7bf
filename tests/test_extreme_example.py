"""Smoke tests of ``examples/extreme_multilabel.py``: sound data and metrics, and it learns.

The example trains for one epoch on 2,000 labels and a few thousand examples,
so the tests take seconds; the full run is timed by hand. Like the digits
examples, it is loaded with ``runpy`` and finds its helper module
``digits_data`` on ``sys.path``, as when run as ``python examples/...``.
"""

from __future__ import annotations

import pathlib
import re
import runpy

import numpy as np
import pytest

# Runs examples, subprocesses or large compiles: out of the fast tier (-m "not slow").
pytestmark = pytest.mark.slow

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRIC_LINE = re.compile(r"^(baseline )?((?:precision|psp)@[135]) (\S+)$", re.M)
METRICS = {f"{name}@{k}" for name in ("precision", "psp") for k in (1, 3, 5)}
# 31 steps of 128 examples; the default learning rate.
SMALL = ["--num-labels", "2000", "--train-size", "4000", "--test-size", "500",
         "--batch-size", "128", "--epochs", "1"]


@pytest.fixture
def example(monkeypatch):
  """The example's namespace, loaded without running ``main``."""
  monkeypatch.syspath_prepend(str(EXAMPLES))
  return runpy.run_path(str(EXAMPLES / "extreme_multilabel.py"), run_name="not_main")


def test_label_lists_are_distinct_padded_and_power_law(example):
  train, test = example["make_tag_sets"](5000, 3000, 1000, seed=4)
  again, _ = example["make_tag_sets"](5000, 3000, 1000, seed=4)
  np.testing.assert_array_equal(train.features, again.features)
  np.testing.assert_array_equal(train.labels, again.labels)
  max_labels, feature_dim = example["MAX_LABELS"], example["FEATURE_DIM"]
  for part, num in ((train, 3000), (test, 1000)):
    assert part.features.shape == (num, feature_dim) and part.features.dtype == np.float32
    assert part.labels.shape == (num, max_labels) and part.labels.dtype == np.int32
    assert part.labels.min() >= -1 and part.labels.max() < 5000
    for row in part.labels:
      listed = row[row >= 0]
      assert 1 <= len(listed) == len(set(listed))
      assert (row[len(listed):] == -1).all()
  counts = example["label_counts"](train.labels, 5000)
  # A head label is in a good share of the examples; most labels are rare.
  assert counts.max() > 0.2 * 3000
  assert np.median(counts) <= 1


def test_ranking_metrics_by_hand(example):
  ranking_metrics = example["ranking_metrics"]
  inv_propensity = np.array([1.0, 2.0, 4.0, 8.0, 1.0, 1.0, 1.0])
  labels = np.array([[3, 0, -1], [1, 2, 4]])
  top = np.array([[0, 5, 6, 3, 4], [2, 1, 4, 0, 3]])
  metrics = ranking_metrics(top, labels, inv_propensity)
  assert metrics["precision@1"] == pytest.approx((1 + 1) / 2)
  assert metrics["precision@3"] == pytest.approx((1 / 3 + 3 / 3) / 2)
  assert metrics["precision@5"] == pytest.approx((2 / 5 + 3 / 5) / 2)
  # Over the data set: scored hits / the best ranking's, both summed over rows.
  assert metrics["psp@1"] == pytest.approx((1 + 4) / (8 + 4))
  assert metrics["psp@3"] == pytest.approx((1 + 7) / (9 + 7))
  assert metrics["psp@5"] == pytest.approx((9 + 7) / (9 + 7))
  # The best ranking scores 1; the propensities are those of Jain et al.
  best = ranking_metrics(np.array([[3, 0, 5, 6, 4], [2, 1, 4, 0, 3]]), labels,
                         inv_propensity)
  assert all(best[f"psp@{k}"] == pytest.approx(1.0) for k in (1, 3, 5))
  inverse = example["inverse_propensities"](np.array([0, 10, 1000]), 10000)
  c = (np.log(10000) - 1) * 2.5**0.55
  np.testing.assert_allclose(inverse, 1 + c * (np.array([0, 10, 1000]) + 1.5)**-0.55)
  assert inverse[0] > inverse[1] > inverse[2] > 1


def test_example_learns_beyond_the_most_frequent_labels_and_plots(example, tmp_path,
                                                                   capsys):
  results = example["main"](SMALL + ["--out", str(tmp_path)])
  printed = {"model": {}, "baseline": {}}
  for baseline, name, value in METRIC_LINE.findall(capsys.readouterr().out):
    printed["baseline" if baseline else "model"][name] = float(value)
  for run in ("model", "baseline"):
    assert set(printed[run]) == METRICS, run
    for name, value in printed[run].items():
      assert 0.0 <= value <= 1.0, (run, name)
      assert value == pytest.approx(results[run][name], abs=1e-4), (run, name)
  model, baseline = printed["model"], printed["baseline"]
  # Random labels give precision about 0.002 here. Over seeds 0-7 the model
  # beats the baseline by 0.25-0.38, 0.18-0.24 and 0.11-0.15 at k = 1, 3, 5,
  # and its PSP@k is 1.7-2.3 times the baseline's (seed 0 is in the middle).
  assert model["precision@1"] > baseline["precision@1"] + 0.15
  assert model["precision@3"] > baseline["precision@3"] + 0.1
  assert model["precision@5"] > baseline["precision@5"] + 0.05
  for k in (1, 3, 5):
    assert model[f"psp@{k}"] > 1.4 * baseline[f"psp@{k}"], k
  plot = tmp_path / example["PLOT_NAME"]
  assert plot.is_file() and plot.read_bytes()[:8] == PNG_SIGNATURE
