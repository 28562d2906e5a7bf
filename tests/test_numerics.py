"""Numerics: half precision, overflow, non-finite and extreme inputs, empty and 1-class batches.

Half types (float16, bfloat16) are accumulated in float32 and rounded once to
the input dtype, so a result is within about one unit roundoff ``u`` of the
float64 result on the same (half-rounded) inputs: ``u = 2^-8`` for bfloat16
and ``2^-11`` for float16. The tolerances below are that bound with a margin,
checked against measurements on realistic sizes (N=64, C=1000).
"""

from __future__ import annotations

import functools
import math
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jaxmargin
from jaxmargin import losses
from tests.oracle import assert_matches_torch, jax_value_and_grad, torch_value_and_grad

jax.config.update("jax_enable_x64", True)

HALF_DTYPES = (jnp.bfloat16, jnp.float16)
REDUCTIONS = ("none", "mean", "sum")

# Unit roundoff: rounding to nearest is off by at most this, relative.
UNIT_ROUNDOFF = {np.dtype(jnp.bfloat16): 2.0**-8, np.dtype(jnp.float16): 2.0**-11}
# Values: one rounding (<= 1 u) of a float32 sum of up to C*P terms. Measured
# worst, all three losses and both APIs, N=64, C=1000, sparse and dense label
# lists, all reductions: 0.94 u (hinge losses), 0.75 u (soft margin), in
# bfloat16 and float16 alike (0.99 u over more seeds). Allowed: 1.25 u, the
# margin covering float32 accumulation (C * 2^-24 = 6e-5 relative at worst,
# 0.12 u of float16).
VALUE_TOLERANCE_U = 1.25
# Gradients: the hinge losses' are an exact count times 1/(N*C) (or 1/C) in
# float32, rounded once: measured 0.997 u. The soft margin loss's is
# (sigmoid(x) - t) * w / C in float32, rounded once, so it also carries the
# float32 error of the difference, on the scale |w| * cotangent / C that all
# its entries share: measured at most 1 float32 ulp of that scale beyond one
# rounding (2.1 ulps in float32 itself); allowed 4 ulps.
GRAD_TOLERANCE_U = 1.25
SOFT_GRAD_F32_ULPS = 4
# Below the normal range one rounding is off by up to half the subnormal
# spacing instead (float16 'mean' gradients of 1/(64*1000) = 1.6e-5 are
# subnormal; measured 2.98e-8 = 2^-25 there, exactly that); the same factors apply.

N, C = 64, 1000


def zlib_key(*key):
  """A seed from the test's parameters, the same in every process."""
  return zlib.crc32(repr([str(k) for k in key]).encode())


def half_bound(ref, dtype, tolerance_u, floor=0.0):
  """What ``|ours - ref|`` may be for a half-type result approximating ``ref``.

  One rounding is off by at most ``u * |ref|``, or half the subnormal spacing
  below the normal range; ``tolerance_u`` scales both, ``floor`` is added.
  """
  dtype = np.dtype(dtype)
  subnormal = float(jnp.finfo(dtype).smallest_subnormal)
  return tolerance_u * (UNIT_ROUNDOFF[dtype] * np.abs(ref) + subnormal / 2) + floor


def assert_within(ours, ref, bound, what):
  ours = np.asarray(ours, np.float64)
  assert ours.shape == ref.shape, (what, ours.shape, ref.shape)
  assert np.all(np.isfinite(ours)), (what, "not finite")
  error = np.abs(ours - ref)
  worst = np.argmax(error - bound) if error.size else None
  assert np.all(error <= bound), (what, "worst", np.ravel(ours)[worst], np.ravel(ref)[worst])


def padded_labels(rng, num_rows, num_classes, per_row):
  """torch targets with ``per_row`` distinct labels per row, -1 after them."""
  target = np.full((num_rows, num_classes), -1)
  for row in target:
    row[:per_row] = rng.choice(num_classes, per_row, replace=False)
  return target


# --- half precision at realistic sizes: torch-compatible API -------------------


def _half_problem(case, rng, dtype):
  """``(name, target, our kwargs, torch kwargs)`` of one loss configuration.

  Float arguments (weights, soft targets) are given in the half type, and the
  reference gets the same values in float64.
  """
  if case.startswith("multilabel_margin"):
    per_row = {"sparse": 5, "dense": 500}[case.split()[-1]]
    return "multilabel_margin_loss", padded_labels(rng, N, C, per_row), {}, {}
  if case.startswith("multi_margin"):
    if "weighted" not in case:
      return "multi_margin_loss", rng.integers(0, C, N), {}, {}
    weight = jnp.asarray(rng.random(C) + 0.5, dtype)
    return ("multi_margin_loss", rng.integers(0, C, N), dict(p=2, margin=0.5, weight=weight),
            dict(p=2, margin=0.5, weight=np.asarray(weight, np.float64)))
  soft = "soft labels" in case
  target = rng.random((N, C)) if soft else rng.random((N, C)) < 0.3
  target = jnp.asarray(target, dtype)
  weight = jnp.asarray(rng.random(C) + 0.5, dtype)
  ours = dict(weight=weight) if soft else {}
  ref = dict(weight=np.asarray(weight, np.float64)) if soft else {}
  return "multilabel_soft_margin_loss", target, ours, ref


HALF_CASES = ["multilabel_margin sparse", "multilabel_margin dense", "multi_margin p=1",
              "multi_margin p=2 weighted", "multilabel_soft_margin",
              "multilabel_soft_margin soft labels weighted"]


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", HALF_CASES)
def test_half_precision_values_and_gradients_stay_within_the_tolerance(case, dtype):
  rng = np.random.default_rng(zlib_key(case, dtype))
  # Scores of scale 3: many hinge terms active, logits up to ~12 (sigmoid
  # saturated to within 2^-17).
  x = jnp.asarray(rng.normal(size=(N, C)) * 3, dtype)
  name, target, ours_kwargs, ref_kwargs = _half_problem(case, rng, dtype)
  x64 = np.asarray(x, np.float64)
  target64 = np.asarray(target, np.float64) if name.endswith("soft_margin_loss") else target
  # With N = 64, 'sum' is 'mean' times 2^6, exact in every float type, and its
  # gradient has the scale of 'none''s: two reductions cover the three.
  for reduction in ("none", "mean"):
    ref_value, ref_grad = torch_value_and_grad(name, x64, target64, reduction=reduction,
                                               **ref_kwargs)
    value, grad = jax_value_and_grad(name, x, target, reduction=reduction, **ours_kwargs)
    assert value.dtype == dtype and grad.dtype == dtype, (value.dtype, grad.dtype)
    assert_within(value, ref_value, half_bound(ref_value, dtype, VALUE_TOLERANCE_U),
                  (reduction, "value"))
    assert_within(grad, ref_grad, _grad_bound(name, ref_grad, dtype, reduction, x.shape,
                                              ours_kwargs.get("weight")),
                  (reduction, "gradient"))


def _grad_bound(name, ref_grad, dtype, reduction, shape, weight=None):
  floor = 0.0
  if name.endswith("soft_margin_loss"):
    # The float32 error of sigmoid(x) - t, on the scale |w| * cotangent / C.
    num_rows, num_classes = shape
    scale = 1 / num_classes / (num_rows if reduction == "mean" else 1)
    if weight is not None:
      scale = scale * np.abs(np.asarray(weight, np.float64))
    if reduction == "none":
      # oracle's cotangent: 1, 2, 3, 1, ... per row
      scale = scale * (1.0 + np.arange(num_rows) % 3)[:, None]
    floor = SOFT_GRAD_F32_ULPS * 2.0**-24 * scale
  return half_bound(ref_grad, dtype, GRAD_TOLERANCE_U, floor)


# --- half precision at realistic sizes: Optax-style API ------------------------


@functools.cache
def _optax_vjp(name, **static):
  """Per-example losses and the gradient of their sum weighted by ``cotangent``."""
  def run(x, target, cotangent, **traced):
    value, vjp = jax.vjp(lambda v: getattr(losses, name)(v, target, **static, **traced), x)
    return value, vjp(cotangent)[0]
  return jax.jit(run)


def _torch_rows(name, x64, target, cotangent, **kwargs):
  xt = torch.from_numpy(x64.copy()).requires_grad_(True)
  value = getattr(F, name)(xt, target, reduction="none", **kwargs)
  value.backward(torch.from_numpy(cotangent))
  return value.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", ["multiclass_margin", "multilabel_margin sparse",
                                  "multilabel_margin dense", "multilabel_soft_margin"])
def test_half_precision_optax_api_stays_within_the_tolerance(case, dtype):
  rng = np.random.default_rng(zlib_key("optax", case, dtype))
  x = jnp.asarray(rng.normal(size=(N, C)) * 3, dtype)
  x64 = np.asarray(x, np.float64)
  cotangent64 = 1.0 + np.arange(N) % 3
  cotangent = jnp.asarray(cotangent64, dtype)
  weights = jnp.asarray(rng.random(C) + 0.5, dtype)
  weights64 = torch.from_numpy(np.asarray(weights, np.float64))
  if case == "multiclass_margin":
    labels = rng.integers(0, C, N)
    value, grad = _optax_vjp("multiclass_margin_loss", p=2)(x, labels, cotangent,
                                                            class_weights=weights)
    ref_value, ref_grad = _torch_rows("multi_margin_loss", x64, torch.from_numpy(labels),
                                      cotangent64, p=2, weight=weights64)
  elif case.startswith("multilabel_margin"):
    padded = padded_labels(rng, N, C, 5 if case.endswith("sparse") else 500)
    hot = np.asarray(losses.padded_to_multi_hot(padded))
    value, grad = _optax_vjp("multilabel_margin_loss")(x, hot, cotangent)
    ref_value, ref_grad = _torch_rows("multilabel_margin_loss", x64,
                                      torch.from_numpy(padded), cotangent64)
  else:
    labels = jnp.asarray(rng.random((N, C)), dtype)
    value, grad = _optax_vjp("multilabel_soft_margin_loss")(x, labels, cotangent,
                                                            class_weights=weights)
    ref_value, ref_grad = _torch_rows(
        "multilabel_soft_margin_loss", x64, torch.from_numpy(np.asarray(labels, np.float64)),
        cotangent64, weight=weights64)
  assert value.dtype == dtype and grad.dtype == dtype
  assert_within(value, ref_value, half_bound(ref_value, dtype, VALUE_TOLERANCE_U), "value")
  floor = 0.0
  if case == "multilabel_soft_margin":
    floor = SOFT_GRAD_F32_ULPS * 2.0**-24 * cotangent64[:, None] * np.abs(
        weights64.numpy()) / C
  assert_within(grad, ref_grad, half_bound(ref_grad, dtype, GRAD_TOLERANCE_U, floor),
                "gradient")


# --- no overflow where float32 accumulation avoids it -------------------------

WIDE_ROWS, WIDE_CLASSES = 4, 30000


def _wide_problem(name, rng, x):
  """Targets whose per-row sum of terms is far above float16's max (65504)."""
  if name == "multilabel_margin_loss":
    return padded_labels(rng, WIDE_ROWS, WIDE_CLASSES, 8)
  if name == "multi_margin_loss":
    # The lowest score as the target: nearly every term is active.
    return np.argmin(np.asarray(x, np.float64), axis=1)
  return (rng.random((WIDE_ROWS, WIDE_CLASSES)) < 0.5).astype(np.float64)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["multilabel_margin_loss", "multi_margin_loss",
                                  "multilabel_soft_margin_loss"])
def test_wide_half_precision_rows_do_not_overflow(name, dtype):
  rng = np.random.default_rng(zlib_key("wide", name))
  x = jnp.asarray(rng.uniform(-10, 10, size=(WIDE_ROWS, WIDE_CLASSES)), dtype)
  x64 = np.asarray(x, np.float64)
  target = _wide_problem(name, rng, x)
  ours_target = jnp.asarray(target, dtype) if name.endswith("soft_margin_loss") else target
  per_row, _ = torch_value_and_grad(name, x64, target, reduction="none")
  # The case is the point: each row's float64 sum of terms overflows float16,
  # so a float16 accumulator would give inf; in bfloat16 it would stall (its
  # ulp at 2^17 is 1024, more than most terms).
  assert np.all(per_row * WIDE_CLASSES > np.finfo(np.float16).max), per_row
  # bfloat16 cannot overflow here: its per-row values suffice (each reduction
  # is one more compilation of a wide kernel). With 4 rows, 'sum' is 'mean'
  # times 2^2, exact in every float type.
  for reduction in ("none", "mean") if dtype == jnp.float16 else ("none",):
    ref_value, ref_grad = torch_value_and_grad(name, x64, target, reduction=reduction)
    value, grad = jax_value_and_grad(name, x, ours_target, reduction=reduction)
    assert value.dtype == dtype and grad.dtype == dtype
    assert_within(value, ref_value, half_bound(ref_value, dtype, VALUE_TOLERANCE_U),
                  (reduction, "value"))
    assert_within(grad, ref_grad, _grad_bound(name, ref_grad, dtype, reduction, x.shape),
                  (reduction, "gradient"))


@pytest.mark.parametrize("name", ["multiclass_margin_loss", "multilabel_margin_loss",
                                  "multilabel_soft_margin_loss"])
def test_wide_float16_rows_do_not_overflow_in_the_optax_api(name):
  rng = np.random.default_rng(zlib_key("wide optax", name))
  x = jnp.asarray(rng.uniform(-10, 10, size=(WIDE_ROWS, WIDE_CLASSES)), jnp.float16)
  x64 = np.asarray(x, np.float64)
  cotangent = np.ones(WIDE_ROWS)
  if name == "multiclass_margin_loss":
    labels = _wide_problem("multi_margin_loss", rng, x)
    ref = _torch_rows("multi_margin_loss", x64, torch.from_numpy(labels), cotangent)
  elif name == "multilabel_margin_loss":
    padded = padded_labels(rng, WIDE_ROWS, WIDE_CLASSES, 8)
    labels = np.asarray(losses.padded_to_multi_hot(padded))
    ref = _torch_rows(name, x64, torch.from_numpy(padded), cotangent)
  else:
    labels = (rng.random((WIDE_ROWS, WIDE_CLASSES)) < 0.5).astype(np.float16)
    ref = _torch_rows(name, x64, torch.from_numpy(labels.astype(np.float64)), cotangent)
  assert np.all(ref[0] * WIDE_CLASSES > np.finfo(np.float16).max)
  value, grad = _optax_vjp(name)(x, labels, jnp.asarray(cotangent, jnp.float16))
  assert value.dtype == jnp.float16 and grad.dtype == jnp.float16
  assert_within(value, ref[0], half_bound(ref[0], jnp.float16, VALUE_TOLERANCE_U), "value")
  floor = 0.0
  if name == "multilabel_soft_margin_loss":
    floor = SOFT_GRAD_F32_ULPS * 2.0**-24 / WIDE_CLASSES
  assert_within(grad, ref[1], half_bound(ref[1], jnp.float16, GRAD_TOLERANCE_U, floor),
                "gradient")


# --- non-finite and extreme scores: values and gradients as torch's -----------

INF, NAN = math.inf, math.nan
PLAIN_SCORES = [0.1, 0.2, 0.4, 0.8]

# (scores of the special row, its target row). The batch adds a plain row, so
# that 'mean' and 'sum' show whether a special row poisons the others. Labels
# 3 and 0; 1 and 2 are negatives (torch's doc example).
MULTILABEL_CASES = {
    "nan at a label": ([0.1, 0.2, 0.4, NAN], [3, 0, -1, 1]),
    "nan at a negative": ([0.1, NAN, 0.4, 0.8], [3, 0, -1, 1]),
    "+inf at a label": ([INF, 0.2, 0.4, 0.8], [3, 0, -1, 1]),
    "-inf at a label": ([-INF, 0.2, 0.4, 0.8], [3, 0, -1, 1]),
    "+inf at a negative": ([0.1, 0.2, INF, 0.8], [3, 0, -1, 1]),
    "-inf at a negative": ([0.1, 0.2, -INF, 0.8], [3, 0, -1, 1]),
    "+inf at a label and a negative": ([INF, 0.2, INF, 0.8], [3, 0, -1, 1]),
    "-inf at a label, +inf at a negative": ([-INF, 0.2, INF, 0.8], [3, 0, -1, 1]),
    "+1e30 at a label": ([0.1, 0.2, 0.4, 1e30], [3, 0, -1, 1]),
    "-1e30 at a label": ([0.1, 0.2, 0.4, -1e30], [3, 0, -1, 1]),
    "+1e30 at a negative": ([0.1, 1e30, 0.4, 0.8], [3, 0, -1, 1]),
    "-1e30 at a negative": ([0.1, -1e30, 0.4, 0.8], [3, 0, -1, 1]),
    # (1 - 1e30) + 1e30 == 0: an exact tie, no gradient.
    "1e30 tie": ([1e30, 1e30, 0.4, 1e30], [3, 0, -1, 1]),
    "exact ties": ([1.0, 0.0, 0.0, 1.0], [3, 0, -1, 1]),
    "all nan": ([NAN] * 4, [3, 0, -1, 1]),
    "all +inf": ([INF] * 4, [3, 0, -1, 1]),
    "duplicate label at -inf": ([0.1, 0.2, 0.4, -INF], [3, 3, -1, 1]),
    "no labels, inf scores": ([INF, -INF, NAN, 1e30], [-1, 3, 0, 1]),
    "every class a label, nan scores": ([NAN, INF, NAN, -INF], [0, 1, 2, 3]),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", MULTILABEL_CASES)
def test_multilabel_margin_non_finite_and_extreme_scores_match_torch(case, dtype):
  scores, target = MULTILABEL_CASES[case]
  x = np.array([scores, PLAIN_SCORES], dtype)
  target = np.array([target, [3, 0, -1, 1]])
  for reduction in REDUCTIONS:
    assert_matches_torch("multilabel_margin_loss", x, target, reduction=reduction)


# (scores of the special row with target 3, keyword arguments); the plain row has target 0.
MULTI_MARGIN_CASES = {
    "nan at the target": ([0.1, 0.2, 0.4, NAN], {}),
    "nan at another class": ([0.1, NAN, 0.4, 0.8], {}),
    "+inf at the target": ([0.1, 0.2, 0.4, INF], {}),
    "-inf at the target": ([0.1, 0.2, 0.4, -INF], {}),
    "+inf at another class": ([INF, 0.2, 0.4, 0.8], {}),
    "-inf at another class": ([-INF, 0.2, 0.4, 0.8], {}),
    "+inf at the target and another class": ([INF, 0.2, 0.4, INF], {}),
    "+1e30 at the target": ([0.1, 0.2, 0.4, 1e30], {}),
    "-1e30 at the target": ([0.1, 0.2, 0.4, -1e30], {}),
    "+1e30 at another class": ([1e30, 0.2, 0.4, 0.8], {}),
    "-1e30 at another class": ([-1e30, 0.2, 0.4, 0.8], {}),
    "1e30 tie": ([1e30, 0.2, 0.4, 1e30], {}),
    "exact ties": ([0.0, 0.5, 0.0, 1.0], {}),
    "ties with margin 0.5": ([0.5, 0.5, 0.0, 1.0], dict(margin=0.5)),
    "inf margin": ([0.1, 0.2, 0.4, 0.8], dict(margin=INF)),
    "-1e30 margin": ([0.1, 0.2, 0.4, 0.8], dict(margin=-1e30)),
    "nan margin": ([0.1, 0.2, 0.4, 0.8], dict(margin=NAN)),
    "inf weight, no active term": ([0.1, 0.2, 0.4, 5.0], dict(weight=[1.0, 1.0, 1.0, INF])),
    "inf weight, active terms": ([0.1, 0.2, 0.4, 0.8], dict(weight=[1.0, 1.0, 1.0, INF])),
    "nan weight, no active term": ([0.1, 0.2, 0.4, 5.0], dict(weight=[1.0, 1.0, 1.0, NAN])),
    # z = 1e-25 is active; its square underflows in float32 (inf * 0 = NaN for p=2, as torch).
    "inf weight, underflowing square": ([1e-25, -5.0, -5.0, 1.0], dict(weight=[1.0, 1.0, 1.0, INF])),
    "zero weight, inf term": ([INF, 0.2, 0.4, 0.8], dict(weight=[1.0, 1.0, 1.0, 0.0])),
    "negative weight, 1e30 term": ([1e30, 0.2, 0.4, 0.8], dict(weight=[1.0, 1.0, 1.0, -2.0])),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", MULTI_MARGIN_CASES)
def test_multi_margin_non_finite_and_extreme_scores_match_torch(case, dtype):
  scores, kwargs = MULTI_MARGIN_CASES[case]
  x = np.array([scores, PLAIN_SCORES], dtype)
  kwargs = dict(kwargs)
  if "weight" in kwargs:
    kwargs["weight"] = np.array(kwargs["weight"], dtype)
  # p=2 squares the terms: 1e30 ** 2 overflows float32 (torch's inf too). The
  # reductions do not depend on p: p=2 checks the per-sample path only.
  for p, reductions in ((1, REDUCTIONS), (2, ("none",))):
    for reduction in reductions:
      assert_matches_torch("multi_margin_loss", x, np.array([3, 0]), p=p,
                           reduction=reduction, **kwargs)


# (logits of the special row, its targets, its weights or None).
SOFT_MARGIN_CASES = {
    "+inf, target 1": ([INF, 0.2, 0.4, 0.8], [1.0, 0.0, 0.0, 1.0], None),
    "+inf, target 0": ([INF, 0.2, 0.4, 0.8], [0.0, 0.0, 0.0, 1.0], None),
    "+inf, target 0.5": ([INF, 0.2, 0.4, 0.8], [0.5, 0.0, 0.0, 1.0], None),
    "-inf, target 1": ([-INF, 0.2, 0.4, 0.8], [1.0, 0.0, 0.0, 1.0], None),
    "-inf, target 0": ([-INF, 0.2, 0.4, 0.8], [0.0, 0.0, 0.0, 1.0], None),
    "-inf, target 0.5": ([-INF, 0.2, 0.4, 0.8], [0.5, 0.0, 0.0, 1.0], None),
    "nan logit": ([NAN, 0.2, 0.4, 0.8], [1.0, 0.0, 0.0, 1.0], None),
    "nan target": ([0.1, 0.2, 0.4, 0.8], [NAN, 0.0, 0.0, 1.0], None),
    "+1e30, target 1": ([1e30, 0.2, 0.4, 0.8], [1.0, 0.0, 0.0, 1.0], None),
    "+1e30, target 0": ([1e30, 0.2, 0.4, 0.8], [0.0, 0.0, 0.0, 1.0], None),
    "-1e30, target 1": ([-1e30, 0.2, 0.4, 0.8], [1.0, 0.0, 0.0, 1.0], None),
    "-1e30, target 0.25": ([-1e30, 0.2, 0.4, 0.8], [0.25, 0.0, 0.0, 1.0], None),
    "+inf, zero weight": ([INF, 0.2, 0.4, 0.8], [0.5, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 1.0]),
    "inf weight": ([0.1, 0.2, 0.4, 0.8], [1.0, 0.0, 0.0, 1.0], [INF, 1.0, 1.0, 1.0]),
    "1e30 and -1e30, weights of both signs": ([1e30, -1e30, 0.4, 0.8], [0.0, 1.0, 0.0, 1.0],
                                              [1.0, -1.0, 1.0, 1.0]),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", SOFT_MARGIN_CASES)
def test_soft_margin_non_finite_and_extreme_logits_match_torch(case, dtype):
  logits, target, weight = SOFT_MARGIN_CASES[case]
  x = np.array([logits, PLAIN_SCORES], dtype)
  target = np.array([target, [1.0, 0.0, 0.0, 1.0]], dtype)
  kwargs = {} if weight is None else dict(weight=np.array([weight, [1.0] * 4], dtype))
  for reduction in REDUCTIONS:
    assert_matches_torch("multilabel_soft_margin_loss", x, target, reduction=reduction,
                         **kwargs)


@pytest.mark.parametrize("dtype, logit", [(np.float32, 20.0), (np.float64, 40.0)],
                         ids=["float32", "float64"])
def test_soft_margin_gradient_keeps_relative_precision_for_saturated_logits(dtype, logit):
  # x = -logit with t = 0 is exact already (sigmoid(x) - 0); x = +logit with
  # t = 1 is sigmoid(x) - 1, which rounds to 0.
  x = np.array([[logit, -logit]], dtype)
  target = np.array([[1.0, 0.0]], dtype)
  _, ref_grad = torch_value_and_grad("multilabel_soft_margin_loss", x, target)
  _, grad = jax_value_and_grad("multilabel_soft_margin_loss", x, target)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5)


# --- empty batch and one class -------------------------------------------------

ALL_DTYPES = (jnp.float16, jnp.bfloat16, np.float32, np.float64)


def _targets(name, num_rows, num_classes, rng):
  if name == "multilabel_margin_loss":
    return padded_labels(rng, num_rows, num_classes, min(num_classes, 1))
  if name == "multi_margin_loss":
    return rng.integers(0, num_classes, num_rows)
  return rng.random((num_rows, num_classes))


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["multilabel_margin_loss", "multi_margin_loss",
                                  "multilabel_soft_margin_loss"])
def test_empty_batch_gives_documented_values_shapes_and_gradients(name, dtype):
  x = jnp.zeros((0, 4), dtype)
  target = _targets(name, 0, 4, np.random.default_rng(0))
  if name.endswith("soft_margin_loss"):
    target = target.astype(dtype)
  for reduction, expected in (("none", np.zeros((0,))), ("mean", np.nan), ("sum", 0.0)):
    value, grad = jax_value_and_grad(name, x, target, reduction=reduction)
    assert value.dtype == dtype
    np.testing.assert_array_equal(np.asarray(value, np.float64), expected)
    assert grad.shape == (0, 4) and grad.dtype == dtype
    if np.dtype(dtype) in (np.float32, np.float64):
      ref_value, _ = torch_value_and_grad(name, np.zeros((0, 4), dtype), target,
                                          reduction=reduction)
      assert ref_value.shape == value.shape
      if name.endswith("soft_margin_loss") or reduction == "none":
        # torch's hinge kernels leave 'mean' and 'sum' of no rows uninitialised.
        np.testing.assert_array_equal(value, ref_value)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=lambda d: np.dtype(d).name)
def test_empty_batch_in_the_optax_api(dtype):
  x = jnp.zeros((0, 4), dtype)
  rng = np.random.default_rng(0)
  calls = {
      "multiclass_margin_loss": (np.zeros((0,), np.int32), {}),
      "multilabel_margin_loss": (np.zeros((0, 4), np.int32), {}),
      "multilabel_soft_margin_loss": (jnp.zeros((0, 4), dtype),
                                      dict(class_weights=jnp.asarray(rng.random(4), dtype))),
  }
  for name, (labels, kwargs) in calls.items():
    fn = getattr(losses, name)
    value, vjp = jax.vjp(lambda v: fn(v, labels, **kwargs), x)
    (grad,) = vjp(jnp.zeros((0,), value.dtype))
    assert value.shape == (0,) and grad.shape == (0, 4), name
    assert value.dtype == dtype and grad.dtype == dtype, name


ONE_CLASS_SCORES = [[0.5], [-2.0], [NAN], [INF], [-1e30]]


@pytest.mark.parametrize("name", ["multilabel_margin_loss", "multi_margin_loss",
                                  "multilabel_soft_margin_loss"])
def test_one_class_matches_torch(name):
  # test_parity_torch.py has C = 1 as shapes () and (3, 1) of the hinge losses
  # and (1,) of the soft margin loss; here are the rest, with special scores.
  x = np.array(ONE_CLASS_SCORES)
  targets = {
      # A list with the only class (no negatives) or an empty list.
      "multilabel_margin_loss": np.array([[0], [-1], [0], [0], [-1]]),
      # The only class: no other class, so no term.
      "multi_margin_loss": np.zeros(5, np.int64),
      "multilabel_soft_margin_loss": np.array([[1.0], [0.0], [0.5], [1.0], [0.25]]),
  }
  kwargs = dict(p=2, margin=0.5, weight=np.array([2.0])) if name == "multi_margin_loss" else {}
  hinge = name != "multilabel_soft_margin_loss"
  # The hinge losses' reductions of C = 1 rows are in test_parity_torch.py.
  for reduction in ("none",) if hinge else REDUCTIONS:
    assert_matches_torch(name, x, targets[name], reduction=reduction, **kwargs)
  if hinge:
    # A (1,) input: one sample of one class.
    for scores in ([0.5], [NAN]):
      assert_matches_torch(name, np.array(scores), np.asarray(targets[name][0]),
                           reduction="none", **kwargs)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=lambda d: np.dtype(d).name)
def test_one_class_in_half_precision_and_the_optax_api(dtype):
  x = jnp.asarray([[0.5], [-2.0], [3.0]], dtype)
  x64 = np.asarray(x, np.float64)
  cotangent = np.array([1.0, 2.0, 3.0])
  soft = np.array([[1.0], [0.0], [0.5]])
  problems = {
      "multiclass_margin_loss": (np.array([0, 0, 0]), "multi_margin_loss",
                                 torch.zeros(3, dtype=torch.int64)),
      "multilabel_margin_loss": (np.array([[1], [0], [1]]), "multilabel_margin_loss",
                                 torch.tensor([[0], [-1], [0]])),
      "multilabel_soft_margin_loss": (jnp.asarray(soft, dtype), "multilabel_soft_margin_loss",
                                      torch.from_numpy(soft)),
  }
  for name, (labels, torch_name, torch_target) in problems.items():
    value, grad = _optax_vjp(name)(x, labels, jnp.asarray(cotangent, dtype))
    ref_value, ref_grad = _torch_rows(torch_name, x64, torch_target, cotangent)
    assert value.dtype == dtype and value.shape == (3,), name
    assert grad.dtype == dtype and grad.shape == (3, 1), name
    assert_within(value, ref_value, half_bound(ref_value, dtype, VALUE_TOLERANCE_U), name)
    floor = SOFT_GRAD_F32_ULPS * 2.0**-24 * cotangent[:, None] if "soft" in name else 0.0
    assert_within(grad, ref_grad, half_bound(ref_grad, dtype, GRAD_TOLERANCE_U, floor), name)
