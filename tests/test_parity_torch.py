"""Values and input gradients equal torch 2.13's, over shapes, options and corners."""

from __future__ import annotations

import warnings
import zlib

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jaxmargin
from tests.oracle import assert_matches_torch, jax_value_and_grad, torch_value_and_grad

REDUCTIONS = ("none", "mean", "sum")
SHAPES = ((), (6,), (1, 5), (7, 4), (3, 1))
KINDS = ("normal", "grid", "special")
BASE_SHAPE = (7, 4)
# Every case checks every kind of scores (and, for multi_margin_loss, weighted
# and unweighted), and each case is its own compilation, so the cases vary one
# factor at a time rather than crossing shape x reduction x dtype x jit:
# - every shape per sample (reduction='none': the output's shape, and each
#   row's gradient under a non-uniform cotangent) in eager float64. A shape
#   changes the validation and the output's shape, static code that is the
#   same in float32 and under jit;
# - every reduction in eager float32 at BASE_SHAPE. A reduction is applied to
#   the per-sample losses after the kernel, whatever the shape, in the compute
#   dtype, where float32 rounds as float64 does not;
# - jitted in float64, per sample at BASE_SHAPE. The eager call runs the same
#   jitted kernel, with the reduction as a static argument, so jit adds tracing
#   (no concrete values), which one dtype and one reduction cover; a jitted
#   float32 run would repeat the eager one's numbers.
# Eager float64 'mean' and 'sum' of random scores are tests/test_opinfo.py's:
# torch's reference inputs of the two hinge losses cross every reduction with
# every rank (0-D, 1-D with either target shape, 2-D), and multi_margin_loss's
# also with every p, margin and weight. Here they are kept for what those lack:
# C = 1 rows of the hinge losses (tests/test_numerics.py counts on them) and the
# soft margin loss, whose OpInfo inputs have the default reduction only (a full
# and an empty batch).


def one_factor_cases(shapes, eager_float64_reductions):
  """``(shape, reduction, dtype, jit)`` params: see the comment above."""
  cases = [(shape, "none", np.float64, False, "float64-eager") for shape in shapes]
  cases += [(shape, reduction, np.float64, False, "float64-eager")
            for shape in eager_float64_reductions for reduction in ("mean", "sum")]
  cases += [(BASE_SHAPE, reduction, np.float32, False, "float32-eager")
            for reduction in REDUCTIONS]
  cases += [(BASE_SHAPE, "none", np.float64, True, "float64-jit")]
  return [pytest.param(*case[:4], id=f"{case[1]}-{case[0]}-{case[4]}") for case in cases]


HINGE_CASES = one_factor_cases(SHAPES, eager_float64_reductions=[(3, 1)])
SOFT_CASES = one_factor_cases([(1,), (6,), (7, 4), (2, 3, 5), (0, 4), (4, 0)],
                              eager_float64_reductions=[(7, 4), (0, 4)])


def make_rng(*key):
  """A generator seeded from the test's parameters, the same in every process."""
  return np.random.default_rng(zlib.crc32(repr(key).encode()))


def scores(rng, shape, dtype, *, kind):
  """Random scores; 'grid' makes exact ties, 'special' adds NaN and +-inf."""
  if kind == "grid":
    x = rng.choice(np.arange(-3, 4) * 0.5, size=shape)
  else:
    x = rng.normal(size=shape) * 2
  if kind == "special" and x.size:
    flat = x.reshape(-1)
    for value in (np.nan, np.inf, -np.inf, 1e30, -1e30):
      flat[rng.integers(flat.size)] = value
    x = flat.reshape(shape)
  return np.asarray(x, dtype=dtype)


def padded_labels(rng, num_rows, num_classes):
  """Label lists with duplicates and -1 padding at any position (also first)."""
  target = rng.integers(-1, num_classes, size=(num_rows, num_classes))
  for row in target:
    # Put the first -1 anywhere, including position 0 and nowhere at all.
    stop = rng.integers(0, num_classes + 1)
    if stop < num_classes:
      row[stop] = -1
  return target


@pytest.mark.parametrize("shape, reduction, dtype, jit", HINGE_CASES)
def test_multilabel_margin_matches_torch(reduction, shape, dtype, jit):
  rng = make_rng(reduction, shape)
  num_classes = shape[-1] if shape else 1
  for kind in KINDS:
    x = scores(rng, shape, dtype, kind=kind)
    target = padded_labels(rng, 1 if len(shape) < 2 else shape[0], num_classes)
    target = target.reshape(shape)
    assert_matches_torch("multilabel_margin_loss", x, target, reduction=reduction, jit=jit)


@pytest.mark.parametrize("shape, reduction, dtype, jit", HINGE_CASES)
@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_matches_torch(p, reduction, shape, dtype, jit):
  rng = make_rng(p, reduction, shape)
  num_classes = shape[-1] if shape else 1
  num_rows = shape[0] if len(shape) == 2 else 1
  for kind, margin, weighted in zip(KINDS, (1.0, 0.5, -3.14), (False, True, True)):
    x = scores(rng, shape, dtype, kind=kind)
    target = rng.integers(0, num_classes, size=(num_rows,))
    if len(shape) < 2 and kind == "grid":
      target = target.reshape(())
    weight = rng.normal(size=num_classes).astype(dtype) if weighted else None
    assert_matches_torch("multi_margin_loss", x, target, p=p, margin=margin, weight=weight,
                         reduction=reduction, jit=jit)


@pytest.mark.parametrize("shape, reduction, dtype, jit", SOFT_CASES)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_multilabel_soft_margin_matches_torch(weighted, reduction, shape, dtype, jit):
  rng = make_rng(weighted, reduction, shape)
  for kind in KINDS:
    x = scores(rng, shape, dtype, kind=kind)
    target = rng.random(size=shape).astype(dtype)
    weight = rng.normal(size=shape[-1:]).astype(dtype) if weighted else None
    assert_matches_torch("multilabel_soft_margin_loss", x, target, weight=weight,
                         reduction=reduction, jit=jit)


def test_soft_margin_broadcasts_target_and_weight_like_torch():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 4))
  assert_matches_torch("multilabel_soft_margin_loss", x, rng.random(size=(4,)),
                       weight=rng.random(size=(3, 4)), reduction="none")
  # The divisor is the input's class count even when the target widens the sum.
  assert_matches_torch("multilabel_soft_margin_loss", rng.normal(size=(3, 1)),
                       rng.random(size=(3, 4)), reduction="none")


@pytest.mark.parametrize("name", ["multilabel_margin_loss", "multi_margin_loss"])
@pytest.mark.parametrize("legacy, expected", [
    (dict(size_average=True), "mean"), (dict(size_average=False), "sum"),
    (dict(reduce=True), "mean"), (dict(reduce=False), "none"),
    (dict(size_average=False, reduce=False), "none"),
    (dict(size_average=True, reduce=True), "mean"),
])
def test_legacy_arguments_warn_and_pick_torchs_reduction(name, legacy, expected):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(5, 4))
  target = padded_labels(rng, 5, 4) if name == "multilabel_margin_loss" else rng.integers(0, 4, 5)
  fn = getattr(jaxmargin, name)
  with pytest.warns(UserWarning, match=f"please use reduction='{expected}' instead"):
    ours = fn(x, target, reduction="sum" if expected != "sum" else "mean", **legacy)
  np.testing.assert_allclose(ours, fn(x, target, reduction=expected), rtol=1e-12)
  assert_matches_torch(name, x, target, **legacy)


@pytest.mark.parametrize("legacy, expected", [
    (dict(size_average=False), "sum"), (dict(reduce=False), "none"), (dict(reduce=True), "mean")])
def test_soft_margin_legacy_arguments(legacy, expected):
  rng = np.random.default_rng(3)
  x, t = rng.normal(size=(5, 4)), rng.random(size=(5, 4))
  with pytest.warns(UserWarning, match=f"reduction='{expected}'"):
    ours = jaxmargin.multilabel_soft_margin_loss(x, t, **legacy)
  np.testing.assert_allclose(ours, jaxmargin.multilabel_soft_margin_loss(x, t, reduction=expected))
  assert_matches_torch("multilabel_soft_margin_loss", x, t, **legacy)


@pytest.mark.parametrize("name", ["multilabel_margin_loss", "multi_margin_loss"])
def test_elementwise_mean_is_a_deprecated_mean(name):
  rng = np.random.default_rng(4)
  x = rng.normal(size=(5, 4))
  target = padded_labels(rng, 5, 4) if name == "multilabel_margin_loss" else rng.integers(0, 4, 5)
  with pytest.warns(UserWarning, match="elementwise_mean' is deprecated"):
    ours = getattr(jaxmargin, name)(x, target, reduction="elementwise_mean")
  np.testing.assert_allclose(ours, getattr(jaxmargin, name)(x, target), rtol=1e-12)
  assert_matches_torch(name, x, target, reduction="elementwise_mean")


def test_soft_margin_rejects_elementwise_mean_like_torch():
  with pytest.raises(ValueError, match="elementwise_mean is not valid"):
    jaxmargin.multilabel_soft_margin_loss(jnp.zeros((2, 3)), jnp.zeros((2, 3)),
                                          reduction="elementwise_mean")


def test_documented_examples():
  x = np.array([[0.1, 0.2, 0.4, 0.8]])
  mlm = jaxmargin.multilabel_margin_loss(x, np.array([[3, 0, -1, 1]]))
  assert abs(float(mlm) - 0.85) < 1e-12
  assert abs(float(jaxmargin.multilabel_margin_loss(x, np.array([[3, 3, -1, 1]]))) - 0.65) < 1e-12
  assert abs(float(jaxmargin.multi_margin_loss(x, np.array([3]))) - 0.325) < 1e-12


def test_empty_batch_gives_nan_mean_and_zero_sum():
  for name, target in (("multilabel_margin_loss", np.zeros((0, 4), int)),
                       ("multi_margin_loss", np.zeros((0,), int))):
    fn = getattr(jaxmargin, name)
    x = np.zeros((0, 4))
    assert np.isnan(fn(x, target))
    assert float(fn(x, target, reduction="sum")) == 0.0
    assert fn(x, target, reduction="none").shape == (0,)
    ref = getattr(F, name)(torch.zeros(0, 4, dtype=torch.float64),
                           torch.from_numpy(target), reduction="none")
    assert tuple(ref.shape) == (0,)


def test_wide_float32_rows_stay_close_to_the_float64_result():
  # torch sums float32 rows of this loss in float64, but accumulates the
  # gradient of a label in float32, one term at a time (3.5e-5 off here). Ours
  # must be at least as close as torch's float32 value to the float64 truth.
  rng = np.random.default_rng(5)
  x = rng.normal(size=(4, 3000))
  target = np.full((4, 3000), -1)
  target[:, :40] = rng.integers(0, 3000, size=(4, 40))
  exact_value, exact_grad = torch_value_and_grad("multilabel_margin_loss", x, target,
                                                 reduction="none")
  value, grad = jax_value_and_grad("multilabel_margin_loss", x.astype(np.float32), target,
                                   reduction="none")
  np.testing.assert_allclose(value, exact_value, rtol=2e-6)
  np.testing.assert_allclose(grad, exact_grad, rtol=2e-6, atol=1e-9)


def test_duplicate_labels_count_per_occurrence_but_mask_once():
  x = np.array([[0.1, 0.2, 0.4, 0.8]])
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    twice = float(jaxmargin.multilabel_margin_loss(x, np.array([[3, 3, -1, 1]])))
    once = float(jaxmargin.multilabel_margin_loss(x, np.array([[3, -1, -1, 1]])))
  assert abs(twice - 2 * once) < 1e-12
  assert_matches_torch("multilabel_margin_loss", x, np.array([[3, 3, 0, 3]]))
