"""The pairwise margin losses' values and gradients, as torch 2.13's.

That is margin_ranking_loss, hinge_embedding_loss and soft_margin_loss.

The torch-compatible functions over shapes (the no-batch 0-D and 1-D forms
included), reductions, float32 and float64, eager and jit, broadcasting where
torch broadcasts, ties at the margin, NaN and inf, integer, bool, half and
mixed dtypes and empty inputs; gradients of every argument torch
differentiates through :func:`tests.oracle.assert_matches_torch`, and those
torch does not give (the margin, the soft margin loss's target). Arguments and
errors: ``test_pairwise_arguments.py``; the Optax-style losses, the Flax
modules and the transformations: ``test_pairwise_apis.py``.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jaxmargin
from tests.oracle import assert_matches_torch
from tests.pairwise_cases import (
  MARGINS,
  NAMES,
  REDUCTIONS,
  arrays,
  assert_close,
  labels,
  to_torch,
  torch_loss,
)

# --- torch parity: shapes, reductions, dtypes, eager and jit -------------------------------


# Every shape, reduction, dtype and jit, each with several of the others: the
# losses are elementwise, so a reduction does not depend on the shape, and each
# case compiles its own programs (the full product would cost 8x the time).
CONFIGS = [
  ((), "none", np.float64, False),
  ((), "mean", np.float32, True),
  ((5,), "sum", np.float64, True),
  ((5,), "none", np.float32, False),
  ((3, 4), "mean", np.float64, False),
  ((3, 4), "sum", np.float32, True),
  ((2, 3, 4), "none", np.float64, True),
  ((2, 3, 4), "mean", np.float32, False),
]


@pytest.mark.parametrize("shape, reduction, dtype, jit", CONFIGS, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_matches_torch(name, shape, reduction, dtype, jit):
  rng = np.random.default_rng(len(shape))
  assert_matches_torch(
    name, *arrays(name, rng, shape, dtype), reduction=reduction, jit=jit, **MARGINS[name]
  )


@pytest.mark.parametrize("margin", [0.0, -0.75, 2])
@pytest.mark.parametrize("name", ["margin_ranking_loss", "hinge_embedding_loss"])
def test_margins_match_torch(name, margin):
  rng = np.random.default_rng(1)
  assert_matches_torch(name, *arrays(name, rng, (6, 5), np.float64), margin=margin)
  # A scalar array is a margin too (torch wants a Python number there).
  ours = getattr(jaxmargin, name)(*arrays(name, rng, (6,), np.float64), margin=jnp.array(margin))
  assert ours.shape == ()


def test_defaults_are_torchs():
  rng = np.random.default_rng(2)
  for name in NAMES:
    args = arrays(name, rng, (4, 3), np.float64)
    np.testing.assert_allclose(getattr(jaxmargin, name)(*args), torch_loss(name, *args), rtol=1e-12)


# Broadcasting where torch broadcasts: equal numbers of dimensions for the
# ranking loss, any shapes for hinge embedding, the target into the input's
# shape for soft margin.
BROADCASTS = [
  ("margin_ranking_loss", [(3, 1), (1, 4), (3, 4)]),
  ("margin_ranking_loss", [(5, 2), (5, 1), (1, 1)]),
  ("margin_ranking_loss", [(2, 1, 3), (1, 4, 3), (2, 4, 1)]),
  ("hinge_embedding_loss", [(5, 5), (1, 5)]),
  ("hinge_embedding_loss", [(3, 1), (1, 4)]),
  ("hinge_embedding_loss", [(4,), (3, 4)]),
  ("hinge_embedding_loss", [(), (2, 3)]),
  ("soft_margin_loss", [(3, 4), (4,)]),
  ("soft_margin_loss", [(3, 4), ()]),
  ("soft_margin_loss", [(2, 3, 4), (3, 1)]),
]


@pytest.mark.parametrize("case", range(len(BROADCASTS)))
def test_broadcasting_matches_torch(case):
  name, shapes = BROADCASTS[case]
  reduction = REDUCTIONS[case % 3]
  rng = np.random.default_rng(3)
  values = [rng.normal(size=s) for s in shapes[:-1]]
  if name == "hinge_embedding_loss":
    values = [np.abs(v) for v in values]
  args = [*values, labels(rng, shapes[-1])]
  assert_matches_torch(name, *args, reduction=reduction, **MARGINS[name])


# --- ties, NaN and inf -----------------------------------------------------------------------


def test_margin_ranking_tie_passes_the_whole_gradient():
  # z = -y (x1 - x2) + margin is exactly 0 everywhere: torch's clamp_min passes
  # the gradient in full there (jnp.maximum would pass half of it).
  x1, x2 = np.array([0.5, 0.25, 1.0]), np.array([0.25, 0.5, 1.0])
  y, margin = np.array([1.0, -1.0, 1.0]), np.array([0.25, 0.25, 0.0])
  for i in range(3):
    args = x1[i : i + 1], x2[i : i + 1], y[i : i + 1]
    grads = jax.grad(jaxmargin.margin_ranking_loss, argnums=(0, 1, 2))(*args, margin=margin[i])
    np.testing.assert_array_equal([g[0] for g in grads], [-y[i], y[i], -(x1[i] - x2[i])])
    assert_matches_torch("margin_ranking_loss", *args, margin=float(margin[i]))


def test_hinge_embedding_tie_passes_the_whole_gradient():
  # margin - x == 0 for the dissimilar pair.
  grad = jax.grad(jaxmargin.hinge_embedding_loss)(jnp.array([0.75]), jnp.array([-1]), margin=0.75)
  np.testing.assert_array_equal(grad, [-1.0])
  assert_matches_torch(
    "hinge_embedding_loss", np.array([0.75, 0.75]), np.array([-1.0, 1.0]), margin=0.75
  )


SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0, -1.0, 1e30, -1e30])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_margin_ranking_non_finite_values_match_torch(reduction):
  x1, x2 = np.meshgrid(SPECIALS, SPECIALS)
  for y in (1.0, -1.0, 0.0, np.nan):
    assert_matches_torch(
      "margin_ranking_loss",
      x1.ravel(),
      x2.ravel(),
      np.full(x1.size, y),
      margin=0.5,
      reduction=reduction,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_hinge_embedding_non_finite_values_and_odd_labels_match_torch(reduction):
  # Labels that are neither 1 nor -1 (0, 2, NaN, inf) get both terms; a NaN
  # input keeps the gradient 1 of its identity term only.
  x = np.repeat(SPECIALS, 6)
  y = np.tile([1.0, -1.0, 0.0, 2.0, np.nan, np.inf], SPECIALS.size)
  assert_matches_torch("hinge_embedding_loss", x, y, margin=0.5, reduction=reduction)
  assert_matches_torch("hinge_embedding_loss", x, y, margin=np.inf, reduction=reduction)


def test_soft_margin_matches_torch_where_torch_is_finite():
  x = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0, -1.0, 30.0, -30.0, 700.0])
  for y in (1.0, -1.0, 0.0, 0.5):
    # torch overflows where -y x > 709.78 (inf, NaN gradient); here only at
    # -y x = inf, where both give inf and torch's gradient is NaN, ours -y.
    with np.errstate(invalid="ignore"):  # 0 * inf
      keep = ~np.isposinf(-y * x)
    assert_matches_torch("soft_margin_loss", x[keep], np.full(keep.sum(), y), reduction="none")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_soft_margin_is_finite_where_torchs_formula_overflows(dtype):
  x = np.array([-100.0, -1000.0, -1e30, 100.0, 1000.0, -1e4], dtype)
  y = np.ones_like(x)
  with torch.no_grad():
    torch_value = F.soft_margin_loss(torch.from_numpy(x), torch.from_numpy(y), reduction="none")
  overflows = np.isinf(torch_value.numpy())
  assert overflows.sum() >= 3  # torch gives inf there (and a NaN gradient)
  value, grad = jax.vmap(
    jax.value_and_grad(lambda x, y: jaxmargin.soft_margin_loss(x, y, reduction="sum"))
  )(x, y)
  # The exact values, in float64: log(1 + e^-yx) = logaddexp(0, -yx), derivative -y sigmoid(-yx).
  z = -(y * x).astype(np.float64)
  # XLA:CPU flushes subnormal results to 0 (softplus(-100) in float32), torch does not.
  tiny = float(np.finfo(dtype).tiny)
  np.testing.assert_allclose(
    value, np.logaddexp(0, z).astype(dtype), rtol=1e-6 if dtype == np.float32 else 1e-12, atol=tiny
  )
  with np.errstate(over="ignore"):  # exp(1e30): the sigmoid is then 1
    np.testing.assert_allclose(grad, -y / (1 + np.exp(-z)), rtol=1e-6, atol=tiny)
  assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))


# --- integer, bool, half and mixed dtypes -----------------------------------------------------


@pytest.mark.parametrize(
  "label_dtype",
  [np.int64, np.int32, np.int8, np.uint8, np.float32, np.float16, ml_dtypes.bfloat16, np.bool_],
)
@pytest.mark.parametrize("name", NAMES)
def test_label_dtypes_as_torch(name, label_dtype):
  rng = np.random.default_rng(4)
  args = list(arrays(name, rng, (4, 5), np.float64))
  y = rng.choice([-1, 1, 0, 2], size=(4, 5))
  if label_dtype == np.uint8:
    y = np.where(y == -1, 255, y)  # -1 as uint8: torch and JAX both wrap it
  args[-1] = y.astype(label_dtype)
  call = [to_torch(a) for a in args]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
      expected = getattr(F, name)(*call, reduction="none", **MARGINS[name]).numpy()
    except RuntimeError:  # torch cannot negate a bool target (margin_ranking_loss)
      assert name == "margin_ranking_loss" and label_dtype == np.bool_
      with pytest.raises(TypeError, match="margin_ranking_loss: target dtype bool"):
        jaxmargin.margin_ranking_loss(args[0], args[1], args[2])
      return
  got = getattr(jaxmargin, name)(*args, reduction="none", **MARGINS[name])
  assert got.dtype == expected.dtype
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  # And the gradients (of the floating arguments) through the oracle, where it
  # keeps the dtype: integers reach torch as int64, with the same values.
  if label_dtype == np.int32:
    assert_matches_torch(name, *args, **MARGINS[name])


@pytest.mark.parametrize(
  "dtypes",
  [
    (np.uint8, np.uint8, np.uint8),
    (np.uint8, np.int8, np.int64),
    (np.int32, np.int64, np.float64),
    (np.int64, np.int64, np.int64),
    (np.int8, np.float32, np.int8),
  ],
)
def test_margin_ranking_takes_integer_scores_as_torch(dtypes):
  # torch's OpInfo lists every integer dtype; unsigned differences and
  # negations wrap as in torch, and all-integer arrays give float32.
  rng = np.random.default_rng(5)
  x1 = rng.integers(0, 5, size=(3, 4)).astype(dtypes[0])
  x2 = rng.integers(0, 5, size=(3, 4)).astype(dtypes[1])
  y = (
    rng.choice([-1, 1], size=(3, 4)).astype(dtypes[2])
    if dtypes[2] != np.uint8
    else rng.choice([255, 1], size=(3, 4)).astype(np.uint8)
  )
  for reduction in REDUCTIONS:
    expected = torch_loss("margin_ranking_loss", x1, x2, y, margin=0.5, reduction=reduction)
    got = jaxmargin.margin_ranking_loss(x1, x2, y, margin=0.5, reduction=reduction)
    assert got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize(
  "dtypes",
  [
    (np.float32, np.float64),
    (np.float64, np.float32),
    (np.float16, np.float64),
    (np.float32, np.float16),
  ],
)
@pytest.mark.parametrize("name", NAMES)
def test_mixed_float_dtypes_round_as_torch(name, dtypes):
  rng = np.random.default_rng(6)
  args = list(arrays(name, rng, (4, 5), dtypes[0]))
  args[0] = args[0] + rng.normal(size=(4, 5)).astype(dtypes[0]) / 3
  args[-1] = (args[-1] * rng.uniform(0.5, 1.5, size=(4, 5))).astype(dtypes[1])
  expected = torch_loss(name, *args, reduction="none", **MARGINS[name])
  got = getattr(jaxmargin, name)(*args, reduction="none", **MARGINS[name])
  assert got.dtype == expected.dtype
  if np.float16 in dtypes:  # torch rounds each step to float16, we once
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3)
  else:
    assert_close(got, expected, expected.dtype)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_half_types_within_their_rounding_of_torch(name, dtype):
  # torch rounds every step to the half type; we compute in float32 and round once.
  rng = np.random.default_rng(7)
  args = arrays(name, rng, (6, 5), np.float32)
  args = [args[0] + rng.normal(size=(6, 5)).astype(np.float32) / 3, *args[1:]]
  args = [a.astype(dtype) for a in args]
  unit = 2.0**-8 if dtype == ml_dtypes.bfloat16 else 2.0**-11
  for reduction in REDUCTIONS:
    expected = torch_loss(name, *args, reduction=reduction, **MARGINS[name])
    got = getattr(jaxmargin, name)(*args, reduction=reduction, **MARGINS[name])
    assert got.dtype == dtype
    np.testing.assert_allclose(np.asarray(got, np.float32), expected, rtol=8 * unit, atol=8 * unit)
  grad = jax.grad(lambda x: getattr(jaxmargin, name)(x, *args[1:], **MARGINS[name]))(args[0])
  assert grad.dtype == dtype


@pytest.mark.parametrize("name", NAMES)
def test_empty_input_as_torch(name):
  args = arrays(name, np.random.default_rng(0), (0,), np.float64)
  for reduction in REDUCTIONS:
    expected = torch_loss(name, *args, reduction=reduction, **MARGINS[name])
    got = getattr(jaxmargin, name)(*args, reduction=reduction, **MARGINS[name])
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)  # NaN for 'mean', 0 for 'sum'


# --- gradients torch does not give ------------------------------------------------------------


def test_margin_gradients():
  rng = np.random.default_rng(8)
  x1, x2, y = arrays("margin_ranking_loss", rng, (5, 4), np.float64)
  grad = jax.grad(lambda m: jaxmargin.margin_ranking_loss(x1, x2, y, margin=m))(0.25)
  np.testing.assert_allclose(grad, np.mean(-y * (x1 - x2) + 0.25 >= 0), rtol=1e-15)
  x, y = arrays("hinge_embedding_loss", rng, (5, 4), np.float64)
  grad = jax.grad(lambda m: jaxmargin.hinge_embedding_loss(x, y, margin=m))(1.25)
  np.testing.assert_allclose(grad, np.mean((y != 1) & (1.25 - x >= 0)), rtol=1e-15)


def test_soft_margin_target_gets_its_derivative_and_hinge_target_none():
  rng = np.random.default_rng(9)
  x = rng.normal(size=(4, 3)) * 3
  y = rng.uniform(-1.5, 1.5, size=(4, 3))
  grad = jax.grad(jaxmargin.soft_margin_loss, argnums=1)(x, y)
  np.testing.assert_allclose(grad, -x / (1 + np.exp(y * x)) / y.size, rtol=1e-12)
  assert not np.any(jax.grad(jaxmargin.hinge_embedding_loss, argnums=1)(np.abs(x), y))
