"""Tests of ``examples/yeast_benchmark.py`` and its metrics module ``multilabel_metrics.py``.

The metrics are checked against scikit-learn where it has them and by hand
where it has not; the data against MULAN's two Yeast files (values copied
here from ``yeast-train.arff`` and ``yeast-test.arff``); the example by a
short run (few epochs) that must print a sound table, beat the label-frequency
baseline and save its chart. The full run is timed by hand (docs/yeast.md).
Like the other examples, the scripts are loaded with ``runpy`` and find their
sibling module on ``sys.path``.
"""

from __future__ import annotations

import pathlib
import re
import runpy

import numpy as np
import pytest
from sklearn import metrics as sk

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHORT = ["--linear-epochs", "40", "--mlp-epochs", "10"]


@pytest.fixture(scope="module")
def examples_path():
  with pytest.MonkeyPatch.context() as patch:
    patch.syspath_prepend(str(EXAMPLES))
    yield


@pytest.fixture(scope="module")
def mm(examples_path):
  """The metrics module's namespace."""
  return runpy.run_path(str(EXAMPLES / "multilabel_metrics.py"), run_name="not_main")


@pytest.fixture(scope="module")
def yb(examples_path):
  """The example's namespace, loaded without running ``main``."""
  return runpy.run_path(str(EXAMPLES / "yeast_benchmark.py"), run_name="not_main")


@pytest.fixture(scope="module")
def yeast(yb):
  return yb["load_yeast"]()


def random_problem(seed, n=60, q=9, levels=None):
  """Scores (with ties when ``levels`` is set) and labels with 1 to q - 1 labels per row."""
  rng = np.random.default_rng(seed)
  scores = rng.standard_normal((n, q))
  if levels is not None:
    scores = np.round(scores * levels) / levels
  truth = rng.random((n, q)) < rng.uniform(0.1, 0.7, size=(n, 1))
  truth[np.arange(n), rng.integers(q, size=n)] = True
  return scores, truth


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("levels", [None, 2, 1], ids=["distinct", "some-ties", "many-ties"])
def test_ranking_metrics_match_scikit_learn(mm, seed, levels):
  scores, truth = random_problem(seed, levels=levels)
  if levels == 1:
    # Whole rows of equal scores and rows with every label: the edge cases.
    scores[:3] = 0.5
    truth[3] = True
  assert mm["ranking_loss"](scores, truth) == pytest.approx(
    sk.label_ranking_loss(truth, scores), rel=1e-12
  )
  assert mm["average_precision"](scores, truth) == pytest.approx(
    sk.label_ranking_average_precision_score(truth, scores), rel=1e-12
  )
  # scikit-learn counts the labels covered; the papers count steps down the ranking.
  assert mm["coverage"](scores, truth) == pytest.approx(
    sk.coverage_error(truth, scores) - 1, rel=1e-12
  )
  predicted = scores > 0
  assert mm["hamming_loss"](predicted, truth) == pytest.approx(
    sk.hamming_loss(truth, predicted), rel=1e-12
  )


def test_metrics_by_hand(mm):
  scores = np.array([[0.9, 0.5, 0.1, 0.3], [0.2, 0.8, 0.8, 0.1], [0.4, 0.4, 0.4, 0.4]])
  truth = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]])
  # Row 0's top label is a label; row 1's top is tied between a label and a
  # non-label, which counts against it; every label of row 2 ties for the top.
  assert mm["one_error"](scores, truth) == pytest.approx(2 / 3)
  # Ranks: row 0 label 3 is third (0.9, 0.5, 0.3); row 1 label 1 ties for
  # first with a non-label: rank 2; row 2: rank 4. Minus one each.
  assert mm["coverage"](scores, truth) == pytest.approx((2 + 1 + 3) / 3)
  # Row 0: label 3 (0.3) below non-label 1 (0.5): 1 of 4 pairs; row 1: the
  # tie is a wrong pair, 1 of 3; row 2: every pair tied, 3 of 3.
  assert mm["ranking_loss"](scores, truth) == pytest.approx((1 / 4 + 1 / 3 + 1) / 3)
  # Row 0: label 0 at rank 1 (1/1), label 3 at rank 3 (2/3); row 1: 1/2;
  # row 2: 1/4.
  assert mm["average_precision"](scores, truth) == pytest.approx(
    ((1 + 2 / 3) / 2 + 1 / 2 + 1 / 4) / 3
  )
  predicted = np.array([[1, 1, 0, 1], [0, 1, 1, 0], [0, 0, 0, 0]])
  assert mm["hamming_loss"](predicted, truth) == pytest.approx(3 / 12)
  evaluated = mm["evaluate"](scores, truth, predicted)
  assert list(evaluated) == list(mm["METRICS"])


def test_metrics_refuse_an_example_without_labels(mm):
  scores, truth = random_problem(0)
  truth[5] = False
  for name in ("one_error", "coverage", "ranking_loss", "average_precision"):
    with pytest.raises(ValueError, match="at least one label"):
      mm[name](scores, truth)
  with pytest.raises(ValueError, match="expected the same"):
    mm["coverage"](scores[:, :-1], truth)


def test_best_thresholds_minimise_the_errors_of_each_row(mm):
  scores, truth = random_problem(1, n=200, q=7, levels=4)
  thresholds = mm["best_thresholds"](scores, truth)
  errors = ((scores > thresholds[:, None]) != truth).sum(axis=1)
  # Brute force over many thresholds: none does better.
  grid = np.linspace(-5, 5, 4001)
  brute = ((scores[:, None, :] > grid[None, :, None]) != truth[:, None, :]).sum(axis=2).min(axis=1)
  np.testing.assert_array_equal(errors, brute)
  # Rows whose labels are their top scores are split exactly.
  distinct, _ = random_problem(2, n=50, q=7)
  separable = np.argsort(np.argsort(-distinct, axis=1), axis=1) < 3
  exact = mm["best_thresholds"](distinct, separable)
  np.testing.assert_array_equal(distinct > exact[:, None], separable)


def test_threshold_function_recovers_a_linear_threshold(mm):
  # Rows c + (0, 1, 2, 3, 4) in random column order, the top two the labels:
  # every row's best threshold is c + 2.5, the row mean plus 0.5, linear in
  # the scores, so least squares finds it and predicts every label set.
  rng = np.random.default_rng(3)
  offsets = rng.uniform(-10, 10, size=(40, 1))
  scores = offsets + np.array([rng.permutation(5) for _ in range(40)], dtype=float)
  truth = scores - offsets >= 3
  threshold = mm["ThresholdFunction"](scores, truth)
  np.testing.assert_allclose(threshold(scores), offsets[:, 0] + 2.5, atol=1e-9)
  new = rng.uniform(-10, 10, size=(10, 1)) + np.array([rng.permutation(5) for _ in range(10)])
  np.testing.assert_array_equal(threshold.predict(new), new - new.min(axis=1, keepdims=True) >= 3)


def test_split_is_mulans_train_and_test_files(yb, yeast):
  train, test = yeast
  assert train.features.shape == (1500, 103) and test.features.shape == (917, 103)
  assert train.labels.shape == (1500, 14) and test.labels.shape == (917, 14)
  for part in (train, test):
    assert part.features.dtype == part.labels.dtype == np.float32
    assert set(np.unique(part.labels)) == {0.0, 1.0}
    assert part.labels.sum(axis=1).min() >= 1
  # The first and last rows of MULAN's yeast-train.arff and yeast-test.arff.
  rows = [
    (train, 0, [0.0937, 0.139771, 0.062774], [2, 3]),
    (train, -1, [-0.171578, -0.066536, 0.168206], [1, 2, 11, 12]),
    (test, 0, [0.004168, -0.170975, -0.156748], [6, 7, 11, 12]),
    (test, -1, [-0.001043, 0.030495, 0.007199], [0, 1, 5, 6, 10, 11]),
  ]
  for part, row, features, labels in rows:
    np.testing.assert_allclose(part.features[row, :3], features, rtol=1e-6)
    np.testing.assert_array_equal(np.flatnonzero(part.labels[row]), labels)
  # MULAN's statistics of the whole set: label cardinality 4.237, 198 label sets.
  everything = np.concatenate([train.labels, test.labels])
  assert everything.sum(axis=1).mean() == pytest.approx(4.237, abs=5e-4)
  assert len({tuple(row) for row in everything}) == 198


def test_validation_split_holds_out_training_genes_only(yb, yeast):
  train, test = yeast
  fit, held_out = yb["splits"](validation=True)
  assert len(fit.labels) == 1200 and len(held_out.labels) == 300
  np.testing.assert_array_equal(np.concatenate([fit.features, held_out.features]), train.features)
  test_rows = {row.tobytes() for row in test.features}
  assert not any(row.tobytes() in test_rows for row in held_out.features)


def test_standardized_uses_training_statistics(yb, yeast):
  train, test = yeast
  scaled_train, scaled_test = yb["standardized"](train, test)
  np.testing.assert_allclose(scaled_train.features.mean(axis=0), 0, atol=1e-5)
  np.testing.assert_allclose(scaled_train.features.std(axis=0), 1, rtol=1e-4)
  mean, std = train.features.mean(axis=0), train.features.std(axis=0)
  np.testing.assert_allclose(scaled_test.features, (test.features - mean) / std, rtol=1e-6)


def test_batch_order_shuffles_each_epoch_and_drops_the_rest(yb):
  order = yb["batch_order"](130, 3, np.random.default_rng(0))
  batch = yb["BATCH_SIZE"]
  steps = 130 // batch
  assert order.shape == (3 * steps, batch)
  epochs = order.reshape(3, steps * batch)
  for epoch in epochs:
    assert len(set(epoch)) == steps * batch and epoch.max() < 130
  assert not (epochs[0] == epochs[1]).all()


def test_objective_rejects_an_unknown_loss(yb, yeast):
  with pytest.raises(ValueError, match="unknown loss"):
    yb["objective"]("hinge", yeast[0], 3)


ROW = re.compile(r"^\| (\w+) \| (\w+) \|((?: [0-9.]+ \|){5})$", re.M)


@pytest.mark.slow
def test_short_run_prints_a_sound_table_beats_the_baseline_and_plots(yb, tmp_path, capsys):
  results = yb["main"]([*SHORT, "--out", str(tmp_path)])
  out = capsys.readouterr().out
  header = "| " + " | ".join(yb["COLUMNS"]) + " |"
  assert header in out.splitlines()
  printed = {
    (model, loss): [float(v) for v in values.split("|")[:-1]]
    for model, loss, values in ROW.findall(out)
  }
  runs = [(model, loss) for loss in yb["LOSSES"] for model in yb["MODELS"]]
  assert list(printed) == [yb["BASELINE"], *runs]
  assert list(results) == list(printed)
  names = yb["multilabel_metrics"].METRICS
  for key, values in printed.items():
    metrics = dict(zip(names, values, strict=True))
    for name in names:
      assert metrics[name] == pytest.approx(results[key][name], abs=5e-5), (key, name)
    for name in ("hamming_loss", "ranking_loss", "one_error", "average_precision"):
      assert 0 <= metrics[name] <= 1, (key, name)
    assert 0 <= metrics["coverage"] <= 13, key
  base = results[yb["BASELINE"]]
  # The baseline gives every gene the training label frequencies: hamming
  # loss 0.233, ranking loss 0.210, average precision 0.705 (and a strong
  # one-error, 0.250, and coverage, 6.79: two labels are on 75% of the genes).
  # This short run scores 0.199-0.214, 0.173-0.199 (margin losses; the linear
  # soft margin run ranks about as the baseline, 0.209) and 0.737-0.757.
  for key in runs:
    assert results[key]["hamming_loss"] < base["hamming_loss"] - 0.01, key
    assert results[key]["average_precision"] > base["average_precision"] + 0.02, key
    if key[1] != "multilabel_soft_margin":
      assert results[key]["ranking_loss"] < base["ranking_loss"] - 0.005, key
  assert (tmp_path / yb["PLOT_NAME"]).read_bytes()[:8] == PNG_SIGNATURE
