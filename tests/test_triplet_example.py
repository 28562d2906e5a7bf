"""Smoke tests of ``examples/digits_triplet_nnx.py``: mining, retrieval metrics, and it learns.

The example's parts are checked against brute-force references (the mined
triplets, the retrieval metrics by hand and against scikit-learn), and a short
run must beat nearest-neighbour retrieval on the raw pixels; one full run
checks the numbers that the README and the docs quote. Like the digits
examples, it is loaded with ``runpy`` and finds ``digits_data`` on
``sys.path``, as when run as ``python examples/...``.
"""

from __future__ import annotations

import pathlib
import re
import runpy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from tests.jax_versions import enable_x64
from tests.test_training_examples import (
  README_TOLERANCE,
  assert_png,
  assert_readme_shows_the_printed_lines,
  readme_results,
)

# Runs the example: out of the fast tier (-m "not slow").
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
GETTING_STARTED = ROOT / "docs" / "getting-started.md"
RESULT_LINE = re.compile(
  r"^(raw pixels|triplet embedding): recall@1 (\S+), recall@5 (\S+), mAP (\S+)$", re.M
)
# 10 epochs of 10 steps: a few seconds.
SHORT = ["--epochs", "10"]


@pytest.fixture
def example(monkeypatch):
  """The example's namespace, loaded without running ``main``."""
  monkeypatch.syspath_prepend(str(EXAMPLES))
  return runpy.run_path(str(EXAMPLES / "digits_triplet_nnx.py"), run_name="not_main")


def semi_hard_reference(distance, labels):
  """The semi-hard negative of each anchor-positive pair, by loops: {(a, p): n}."""
  chosen = {}
  for a in range(len(labels)):
    negatives = [n for n in range(len(labels)) if labels[n] != labels[a]]
    for p in range(len(labels)):
      if p == a or labels[p] != labels[a] or not negatives:
        continue
      farther = [n for n in negatives if distance[a, n] > distance[a, p]]
      if farther:
        chosen[a, p] = min(farther, key=lambda n: distance[a, n])
      else:
        chosen[a, p] = max(negatives, key=lambda n: distance[a, n])
  return chosen


def mined(example, embeddings, labels, mining="semi-hard", key=None):
  key = jax.random.key(0) if key is None else key
  anchor, positive, negative, valid = example["mine_triplets"](
    jnp.asarray(embeddings), jnp.asarray(labels), mining, key
  )
  return {
    (int(a), int(p)): int(n)
    for a, p, n, v in zip(anchor, positive, negative, valid, strict=True)
    if v
  }


@pytest.mark.parametrize("seed", range(4))
def test_semi_hard_mining_matches_a_brute_force_reference(example, seed):
  rng = np.random.default_rng(seed)
  # Digit 3 has a single image: it anchors no pair but is a negative of the others.
  labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 0, 1])
  embeddings = rng.normal(size=(len(labels), 4))
  distance = np.linalg.norm(embeddings[:, None] - embeddings[None], axis=-1)
  got = mined(example, embeddings, labels)
  want = semi_hard_reference(distance, labels)
  assert got == want
  # Both cases occur: a negative farther than the positive, and none (the farthest).
  assert any(distance[a, n] > distance[a, p] for (a, p), n in got.items())
  assert any(distance[a, n] <= distance[a, p] for (a, p), n in got.items())


def test_a_batch_of_one_digit_gives_no_triplet(example):
  embeddings = np.random.default_rng(0).normal(size=(5, 3))
  for mining in ("semi-hard", "random"):
    assert mined(example, embeddings, np.full(5, 7), mining) == {}


def test_random_mining_draws_every_negative_evenly(example):
  labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 0])
  embeddings = np.random.default_rng(1).normal(size=(len(labels), 2))

  def mine(embeddings, labels, key):
    return example["mine_triplets"](embeddings, labels, "random", key)

  keys = jax.random.split(jax.random.key(5), 3000)
  _, _, negative, valid = jax.vmap(mine, in_axes=(None, None, 0))(
    jnp.asarray(embeddings), jnp.asarray(labels), keys
  )
  num = len(labels)
  negative = np.asarray(negative).reshape(len(keys), num, num)
  valid = np.asarray(valid).reshape(len(keys), num, num)
  assert valid.all(axis=0).sum() == 3 * 2 + 3 * 2 + 3 * 2
  for a in range(num):
    negatives = np.flatnonzero(labels != labels[a])
    for p in np.flatnonzero(valid[0, a]):
      drawn = negative[:, a, p]
      assert np.isin(drawn, negatives).all()
      share = np.bincount(drawn, minlength=num)[negatives] / len(keys)
      # 6 negatives: 1/6 each; 3000 draws give a standard deviation of 0.007.
      np.testing.assert_allclose(share, 1 / len(negatives), atol=0.04)


def test_retrieval_metrics_by_hand(example):
  # 1-D points; each query is ranked against the other four only.
  points = np.array([[0.0], [1.0], [2.5], [10.0], [11.0]])
  labels = np.array([0, 1, 0, 1, 1])
  got = example["retrieval_metrics"](points, labels, recall_at=(1, 2))
  # Relevance of the rankings: [F T F F], [F F T T], [F T F F], [T F T F], [T F T F].
  assert got["recall@1"] == pytest.approx(2 / 5)
  assert got["recall@2"] == pytest.approx(4 / 5)
  average_precision = [1 / 2, (1 / 3 + 2 / 4) / 2, 1 / 2, (1 + 2 / 3) / 2, (1 + 2 / 3) / 2]
  assert got["mAP"] == pytest.approx(np.mean(average_precision))
  assert list(got) == ["recall@1", "recall@2", "mAP"]


def test_retrieval_metrics_agree_with_scikit_learn(example):
  rng = np.random.default_rng(2)
  points = rng.normal(size=(60, 5))
  labels = rng.integers(0, 4, size=60)
  got = example["retrieval_metrics"](points, labels, recall_at=(1, 3))
  distance = np.linalg.norm(points[:, None] - points[None], axis=-1)
  others = ~np.eye(60, dtype=bool)
  relevant = (labels[:, None] == labels[None]) & others
  ranked = [np.argsort(distance[q][others[q]]) for q in range(60)]
  for k in (1, 3):
    hits = [relevant[q][others[q]][ranked[q][:k]].any() for q in range(60)]
    assert got[f"recall@{k}"] == pytest.approx(np.mean(hits))
  average_precision = [
    sk_metrics.average_precision_score(relevant[q][others[q]], -distance[q][others[q]])
    for q in range(60)
  ]
  assert got["mAP"] == pytest.approx(np.mean(average_precision), rel=1e-12)


def test_retrieval_metrics_need_two_of_each_label(example):
  with pytest.raises(ValueError, match="at least two rows"):
    example["retrieval_metrics"](np.eye(3), np.array([0, 0, 1]))


def test_pca_keeps_the_distances_of_2d_points_and_orders_the_axes(example):
  rng = np.random.default_rng(3)
  flat = rng.normal(size=(50, 2)) * np.array([5.0, 1.0]) + 3.0
  projected = example["pca_2d"](flat)
  np.testing.assert_allclose(
    np.linalg.norm(projected[:, None] - projected[None], axis=-1),
    np.linalg.norm(flat[:, None] - flat[None], axis=-1),
    atol=1e-9,
  )
  np.testing.assert_allclose(projected.mean(axis=0), 0.0, atol=1e-9)
  assert projected[:, 0].var() > projected[:, 1].var()


def printed_results(out):
  """The two result lines of the example's output: {"raw pixels": line, ...}."""
  lines = {m.group(1): m.group(0) for m in RESULT_LINE.finditer(out)}
  assert list(lines) == ["raw pixels", "triplet embedding"], out
  return lines


def line_values(line):
  """{"recall@1": ..., "recall@5": ..., "mAP": ...} of one result line."""
  match = RESULT_LINE.fullmatch(line)
  assert match, line
  return dict(zip(("recall@1", "recall@5", "mAP"), map(float, match.groups()[1:]), strict=True))


def test_example_beats_retrieval_on_raw_pixels_and_plots(example, tmp_path, capsys):
  results = example["main"]([*SHORT, "--out", str(tmp_path)])
  lines = printed_results(capsys.readouterr().out)
  assert_readme_shows_the_printed_lines("digits_triplet_nnx", list(lines.values()))
  values = {name: line_values(line) for name, line in lines.items()}
  for name, printed in values.items():
    for metric, value in printed.items():
      assert value == pytest.approx(results[name][metric], abs=1e-4), (name, metric)
  pixels, embedding = values["raw pixels"], values["triplet embedding"]
  # The pixels' numbers do not depend on training: 435 of the 450 queries.
  assert pixels["recall@1"] == pytest.approx(435 / 450, abs=1e-4)
  # Seeds 0-4 give recall@1 0.982-0.989 and mAP 0.948-0.952 after these 10
  # epochs; chance would be about 0.1 for both.
  assert embedding["recall@1"] > pixels["recall@1"]
  assert embedding["recall@1"] > 0.975
  assert embedding["mAP"] > pixels["mAP"] + 0.25
  assert_png(tmp_path / example["PLOT_NAME"])


def test_example_is_deterministic_with_random_negatives(example, tmp_path):
  args = ["--epochs", "2", "--mining", "random", "--seed", "1", "--out", str(tmp_path)]
  first = example["main"](args)
  assert example["main"](args) == first
  assert first["triplet embedding"]["mAP"] > first["raw pixels"]["mAP"]


def test_full_run_prints_the_numbers_of_the_readme_and_the_docs(example, tmp_path, capsys):
  # The example as the README runs it, with its defaults (10-20 s on 2
  # cores), and without the 64-bit types the test session turns on.
  with enable_x64(False):
    example["main"](["--out", str(tmp_path)])
  printed = list(printed_results(capsys.readouterr().out).values())
  shown = readme_results("digits_triplet_nnx")
  assert_readme_shows_the_printed_lines("digits_triplet_nnx", printed)
  documented = GETTING_STARTED.read_text()
  for ours, theirs in zip(printed, shown, strict=True):
    assert theirs in documented, f"docs/getting-started.md does not show {theirs}"
    np.testing.assert_allclose(
      list(line_values(ours).values()),
      list(line_values(theirs).values()),
      rtol=0,
      atol=README_TOLERANCE,
      err_msg=f"{ours} / {theirs}",
    )
