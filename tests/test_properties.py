"""Property-based tests for the public API of ``jaxmargin.functional``.

The expected values come from plain-Python / numpy reference implementations
written here, following /work/shared/pytorch-semantics.md (torch 2.13 CPU):

* multilabel_margin_loss: the label list is the prefix of the target row before
  the first negative entry; a label listed twice counts twice in the outer sum
  but once in the negative mask; divisor C; strict ``z > 0``.
* multi_margin_loss: ``w[y] * h(z)^p`` per term (weight after the power),
  divisor C; strict ``z > 0``.
* multilabel_soft_margin_loss: ``-(t*logsig(x) + (1-t)*logsig(-x)) * w``,
  summed over the class axis and divided by C.

Values are drawn partly from a grid of multiples of 0.5 so that exact ties
(``z == 0``) and duplicate scores happen, and partly as general bounded floats.
"""

from __future__ import annotations

import functools

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from jaxmargin.functional import (  # noqa: E402
    multi_margin_loss,
    multilabel_margin_loss,
    multilabel_soft_margin_loss,
)

REDUCTIONS = ("none", "mean", "sum")
RTOL = 1e-9

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SMALL_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------



def bounded_floats(bound):
  """Finite floats in [-bound, bound] with no tiny magnitudes.

  XLA on CPU treats subnormal float64 values as zero (flush-to-zero /
  denormals-are-zero), unlike torch, so a subnormal hinge argument ``z`` would
  flip the strict ``z > 0`` test. Values below 1e-150 in magnitude are mapped to
  0 so that no sum or difference of drawn values is subnormal.
  """
  return st.floats(-bound, bound, allow_nan=False, allow_infinity=False,
                   allow_subnormal=False).map(lambda v: 0.0 if abs(v) < 1e-150 else v)


GRID = st.integers(-6, 6).map(lambda k: 0.5 * k)
GENERAL = bounded_floats(100.0)
VALUES = st.one_of(GRID, GENERAL)

# Every new (shape, dtype, reduction, p, weight-or-not) signature costs an XLA
# compile of the library's kernels (~0.3-0.6 s on CPU), so the examples share a
# fixed set of shapes: every N in 0..6, C from 1 to 8, with C = 4 and C = 8
# (whole blocks of label slots in the multilabel kernel) and C = 5 (a partial
# one), and the empty batch.
SHAPES = [(1, 1), (0, 2), (2, 5), (3, 8), (4, 3), (5, 4), (6, 6)]
# The 'mean' and 'sum' reductions of the hinge losses (and int32 targets) are
# exercised on these shapes only: the empty batch, a partial slot block and two
# whole ones. Elsewhere the per-sample values ('none') are checked.
REDUCED_SHAPES = [(0, 2), (2, 5), (3, 8)]


def reductions_for(shape, choices=("none", "mean", "sum")):
  return st.sampled_from(list(choices) if tuple(shape) in REDUCED_SHAPES else ["none"])

TARGET_DTYPE = np.int64  # int32 is covered by its own test


@st.composite
def score_matrix(draw, shapes=SHAPES):
  n, c = draw(st.sampled_from(shapes))
  # Whole-grid matrices make ties very likely; mixed ones cover general floats.
  elements = draw(st.sampled_from([GRID, VALUES, GENERAL]))
  return draw(hnp.arrays(np.float64, (n, c), elements=elements))


@st.composite
def mlm_case(draw, dtype=TARGET_DTYPE, shapes=SHAPES):
  x = draw(score_matrix(shapes))
  n, c = x.shape
  # Mostly labels, with -1 anywhere; duplicates come for free.
  entry = st.one_of(st.integers(0, c - 1), st.integers(-1, c - 1))
  target = draw(hnp.arrays(dtype, (n, c), elements=entry))
  return x, target


@st.composite
def mm_case(draw, with_weight=True, dtype=TARGET_DTYPE, shapes=SHAPES):
  x = draw(score_matrix(shapes))
  n, c = x.shape
  target = draw(hnp.arrays(dtype, (n,), elements=st.integers(0, c - 1)))
  weight = None
  if with_weight:
    weight = draw(st.one_of(
        hnp.arrays(np.float64, (c,),
                   elements=st.one_of(GRID, bounded_floats(5.0))),
        st.just(np.ones((c,), np.float64))))
  margin = draw(st.one_of(GRID, bounded_floats(5.0).map(lambda v: v if v >= -3.0 else -3.0)))
  p = draw(st.sampled_from([1, 2]))
  return x, target, weight, margin, p


def permutation(draw, c):
  return np.asarray(draw(st.permutations(list(range(c)))), dtype=np.int64)


def value_and_row_grad(fn, x):
  """``fn(x)`` and the gradient of ``sum(fn(x))`` in one eager VJP."""
  out, vjp = jax.vjp(fn, jnp.asarray(x))
  (grad,) = vjp(jnp.ones_like(out))
  return np.asarray(out), np.asarray(grad)


# Gradients are taken through jitted wrappers (the target is then traced, the
# path users take under ``jit``): one XLA program per signature, and cheap calls
# afterwards, where an eager ``jax.vjp`` re-traces the loss on every example.


def _cotangent(n, reduction, cotangent):
  if cotangent is None:
    cotangent = np.ones((n,) if reduction == "none" else ())
  return jnp.asarray(cotangent, dtype=jnp.float64)


@functools.partial(jax.jit, static_argnames=("reduction",))
def _mlm_vjp(x, target, cotangent, reduction):
  out, vjp = jax.vjp(
      lambda v: multilabel_margin_loss(v, target, reduction=reduction), x)
  return out, vjp(cotangent)[0]


def mlm_vjp(x, target, reduction, cotangent=None):
  """Loss and ``d(<cotangent, loss>)/dx`` (cotangent defaults to ones)."""
  out, grad = _mlm_vjp(jnp.asarray(x), jnp.asarray(target),
                       _cotangent(x.shape[0], reduction, cotangent), reduction)
  return np.asarray(out), np.asarray(grad)


@functools.partial(jax.jit, static_argnames=("p", "reduction"))
def _mm_vjp(x, target, weight, margin, cotangent, p, reduction):
  out, vjp = jax.vjp(
      lambda v: multi_margin_loss(v, target, p=p, margin=margin, weight=weight,
                                  reduction=reduction), x)
  return out, vjp(cotangent)[0]


def mm_vjp(x, target, weight, margin, p, reduction, cotangent=None):
  out, grad = _mm_vjp(jnp.asarray(x), jnp.asarray(target),
                      None if weight is None else jnp.asarray(weight),
                      jnp.asarray(margin, dtype=jnp.float64),
                      _cotangent(x.shape[0], reduction, cotangent), p, reduction)
  return np.asarray(out), np.asarray(grad)


@functools.partial(jax.jit, static_argnames=("reduction",))
def _mlsm_vjp(x, target, weight, cotangent, reduction):
  out, vjp = jax.vjp(
      lambda v: multilabel_soft_margin_loss(v, target, weight=weight,
                                            reduction=reduction), x)
  return out, vjp(cotangent)[0]


def mlsm_vjp(x, target, weight, reduction):
  out, grad = _mlsm_vjp(jnp.asarray(x), jnp.asarray(target),
                        None if weight is None else jnp.asarray(weight),
                        _cotangent(x.shape[0], reduction, None), reduction)
  return np.asarray(out), np.asarray(grad)


# ---------------------------------------------------------------------------
# References (plain Python loops, following the semantics notes)
# ---------------------------------------------------------------------------


def reduce_ref(per_sample, reduction):
  per_sample = np.asarray(per_sample, dtype=np.float64)
  if reduction == "none":
    return per_sample
  if reduction == "sum":
    return np.float64(np.sum(per_sample))
  if per_sample.size == 0:
    return np.float64(np.nan)
  return np.float64(np.mean(per_sample))


def label_list(row):
  labels = []
  for value in row:
    value = int(value)
    if value < 0:
      break
    labels.append(value)
  return labels


def mlm_ref(x, target):
  """Per-sample losses, per-sample sums of |terms| and d(sum of losses)/dx."""
  n, c = x.shape
  losses, scales = [], []
  grad = np.zeros((n, c))
  for i in range(n):
    labels = label_list(target[i])
    is_target = [False] * c
    for j in labels:
      is_target[j] = True
    total = 0.0
    for j in labels:  # duplicates counted once per occurrence
      for d in range(c):
        if is_target[d]:
          continue
        z = (1.0 - float(x[i, j])) + float(x[i, d])
        if z > 0:
          total += z
          grad[i, j] -= 1.0 / c
          grad[i, d] += 1.0 / c
    losses.append(total / c)
    scales.append(total / c)
  return np.asarray(losses, dtype=np.float64), np.asarray(scales), grad


def mm_ref(x, target, weight, margin, p):
  n, c = x.shape
  losses = []
  grad = np.zeros((n, c))
  for i in range(n):
    y = int(target[i])
    w = 1.0 if weight is None else float(weight[y])
    total = 0.0
    for d in range(c):
      if d == y:
        continue
      z = (float(margin) - float(x[i, y])) + float(x[i, d])
      if z > 0:
        h = z if p == 1 else z * z
        total += w * h
        slope = 1.0 if p == 1 else 2.0 * z
        grad[i, d] += w * slope / c
        grad[i, y] -= w * slope / c
    losses.append(total / c)
  return np.asarray(losses, dtype=np.float64), grad


def log_sigmoid(v):
  return -np.logaddexp(0.0, -v)


def mlsm_ref(x, t, weight):
  terms = -(t * log_sigmoid(x) + (1.0 - t) * log_sigmoid(-x))
  if weight is not None:
    terms = terms * weight
  c = x.shape[-1]
  return np.sum(terms, axis=-1) / c, np.sum(np.abs(terms), axis=-1) / c


def assert_close(actual, expected, scale=0.0):
  """Tight comparison; ``scale`` bounds the cancellation error in a sum."""
  actual = np.asarray(actual, dtype=np.float64)
  expected = np.asarray(expected, dtype=np.float64)
  assert actual.shape == expected.shape, (actual.shape, expected.shape)
  atol = 1e-12 + 1e-12 * float(np.max(np.abs(scale), initial=0.0))
  np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=atol,
                             equal_nan=True)


def check_reduced(actual, per_sample_expected, reduction, scale_per_sample):
  expected = reduce_ref(per_sample_expected, reduction)
  if reduction == "mean" and per_sample_expected.size == 0:
    assert np.isnan(np.asarray(actual)), actual
    assert np.asarray(actual).shape == ()
    return
  scale = scale_per_sample if reduction == "none" else np.sum(np.abs(scale_per_sample))
  assert_close(actual, expected, scale)


def inverse(perm):
  inv = np.empty_like(perm)
  inv[perm] = np.arange(perm.size)
  return inv


# ---------------------------------------------------------------------------
# 1. Class-permutation invariance of the hinge losses (value and gradient)
# ---------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_multilabel_margin_permutation_invariance(data):
  x, target = data.draw(mlm_case())
  reduction = data.draw(reductions_for(x.shape), label="reduction")
  n, c = x.shape
  perm = permutation(data.draw, c)
  inv = inverse(perm)
  x_p = x[:, perm]  # new class k is old class perm[k]
  target_p = np.where(target >= 0, inv[np.maximum(target, 0)], -1).astype(target.dtype)

  _, scales, _ = mlm_ref(x, target)
  out = multilabel_margin_loss(jnp.asarray(x), jnp.asarray(target), reduction=reduction)
  out_p = multilabel_margin_loss(jnp.asarray(x_p), jnp.asarray(target_p),
                                 reduction=reduction)
  assert_close(out_p, out, scales if reduction == "none" else np.sum(scales))

  # Gradient of the summed per-sample losses (reduction scaling is covered by
  # the reference test; one reduction here keeps the number of compiles down).
  row, g = mlm_vjp(x, target, "none")
  row_p, g_p = mlm_vjp(x_p, target_p, "none")
  assert_close(row_p, row, scales)
  assert g.shape == x.shape and g_p.shape == x.shape
  np.testing.assert_allclose(g_p, g[:, perm], rtol=RTOL, atol=1e-12)


@SETTINGS
@given(data=st.data())
def test_multi_margin_permutation_invariance(data):
  x, target, weight, margin, p = data.draw(mm_case())
  reduction = data.draw(reductions_for(x.shape), label="reduction")
  n, c = x.shape
  perm = permutation(data.draw, c)
  inv = inverse(perm)
  x_p = x[:, perm]
  target_p = inv[target].astype(target.dtype)
  weight_p = weight[perm]

  def loss(v, t, w):
    return multi_margin_loss(jnp.asarray(v), jnp.asarray(t), p=p, margin=margin,
                             weight=jnp.asarray(w), reduction=reduction)

  per_sample, g_ref = mm_ref(x, target, weight, margin, p)
  scale = np.abs(per_sample) if reduction == "none" else np.sum(np.abs(per_sample))
  assert_close(loss(x_p, target_p, weight_p), loss(x, target, weight), scale)

  row, g = mm_vjp(x, target, weight, margin, p, "none")
  row_p, g_p = mm_vjp(x_p, target_p, weight_p, margin, p, "none")
  assert_close(row_p, row, np.abs(per_sample))
  np.testing.assert_allclose(g_p, g[:, perm], rtol=RTOL,
                             atol=1e-12 * (1 + np.max(np.abs(g_ref), initial=0.0)))


# ---------------------------------------------------------------------------
# 2. Degenerate label lists of multilabel_margin_loss
# ---------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_multilabel_margin_empty_and_full_label_lists(data):
  x = data.draw(score_matrix([s for s in SHAPES if s[0] > 0]))
  n, c = x.shape
  dtype = TARGET_DTYPE
  kinds = data.draw(st.lists(st.sampled_from(["empty", "full", "random"]),
                             min_size=n, max_size=n))
  target = np.empty((n, c), dtype=dtype)
  for i, kind in enumerate(kinds):
    if kind == "empty":
      # Starts with -1; whatever follows is ignored (but in range).
      rest = data.draw(hnp.arrays(dtype, (c - 1,), elements=st.integers(-1, c - 1)))
      target[i] = np.concatenate([[-1], rest]).astype(dtype)
    elif kind == "full":
      target[i] = permutation(data.draw, c).astype(dtype)
    else:
      target[i] = data.draw(hnp.arrays(dtype, (c,), elements=st.integers(-1, c - 1)))
  degenerate = np.array([k != "random" for k in kinds])

  out, grad = mlm_vjp(x, target, "none")
  assert out.shape == (n,)
  assert np.all(out[degenerate] == 0.0), (out, kinds)
  assert np.all(grad[degenerate] == 0.0), (grad, kinds)
  plain = np.asarray(multilabel_margin_loss(jnp.asarray(x), jnp.asarray(target),
                                            reduction="none"))
  assert np.all(plain[degenerate] == 0.0), (plain, kinds)

  # A batch of only degenerate rows: every reduction is exactly zero.
  if degenerate.all():
    for reduction in ("mean", "sum"):
      assert float(multilabel_margin_loss(jnp.asarray(x), jnp.asarray(target),
                                          reduction=reduction)) == 0.0


@SMALL_SETTINGS
@given(x=score_matrix([(1, 1), (1, 4)]),
       lead=st.sampled_from(["empty", "full"]))
def test_multilabel_margin_degenerate_row_1d_input(x, lead):
  row = x[0]
  c = row.size
  if lead == "empty":
    target = np.full((c,), -1, dtype=TARGET_DTYPE)
  else:
    target = np.arange(c, dtype=TARGET_DTYPE)[::-1].copy()
  out, g = value_and_row_grad(
      lambda v: multilabel_margin_loss(v, jnp.asarray(target)), row)
  assert out.shape == ()
  assert float(out) == 0.0
  assert np.all(g == 0.0)


# ---------------------------------------------------------------------------
# 3. multi_margin_loss against a plain-Python reference
# ---------------------------------------------------------------------------


# Gradients are checked for 'none' (with a per-row cotangent) and 'mean' (the
# 1/(N*C) scale); 'sum' differs from 'none' only by a summation, and leaving it
# out saves a compile per shape.
AD_REDUCTIONS = ("none", "mean")
COTANGENTS = st.lists(st.sampled_from([1.0, -0.5, 2.0, 0.0]), min_size=6, max_size=6)


def cotangent_and_row_factor(cots, n, reduction):
  """The cotangent to pull back and the factor it puts on each row's gradient."""
  if reduction == "none":
    cot = np.asarray(cots[:n], dtype=np.float64)
    return cot, cot[:, None]
  factor = cots[0] / n if (reduction == "mean" and n) else cots[0]
  return np.float64(cots[0]), factor


@SETTINGS
@given(case=mm_case(), cots=COTANGENTS, data=st.data())
def test_multi_margin_matches_reference(case, cots, data):
  x, target, weight, margin, p = case
  reduction = data.draw(reductions_for(x.shape), label="reduction")
  ad_reduction = data.draw(reductions_for(x.shape, AD_REDUCTIONS), label="ad_reduction")
  n, c = x.shape

  def loss(v):
    return multi_margin_loss(v, jnp.asarray(target), p=p, margin=margin,
                             weight=jnp.asarray(weight), reduction=reduction)

  per_sample, grad_ref = mm_ref(x, target, weight, margin, p)
  out = loss(jnp.asarray(x))
  assert out.dtype == jnp.float64
  assert out.shape == ((n,) if reduction == "none" else ())
  check_reduced(out, per_sample, reduction, np.abs(per_sample))

  cot, factor = cotangent_and_row_factor(cots, n, ad_reduction)
  out_ad, g = mm_vjp(x, target, weight, margin, p, ad_reduction, cot)
  check_reduced(out_ad, per_sample, ad_reduction, np.abs(per_sample))
  np.testing.assert_allclose(g, grad_ref * factor, rtol=RTOL,
                             atol=1e-12 * (1 + np.max(np.abs(grad_ref), initial=0.0)))


@SETTINGS
@given(case=mm_case(with_weight=False), data=st.data())
def test_multi_margin_default_arguments_match_reference(case, data):
  x, target, _, _, _ = case
  reduction = data.draw(reductions_for(x.shape), label="reduction")
  out = multi_margin_loss(jnp.asarray(x), jnp.asarray(target), reduction=reduction)
  per_sample, _ = mm_ref(x, target, None, 1.0, 1)
  check_reduced(out, per_sample, reduction, per_sample)


@SETTINGS
@given(case=mm_case())
def test_multi_margin_no_weight_matches_reference_and_weight_scales_rows(case):
  # Without weight: the reference with w = 1. With weight: each row is
  # weight[y] times its unweighted loss (the weight multiplies after the power).
  x, target, weight, margin, p = case
  plain = np.asarray(multi_margin_loss(jnp.asarray(x), jnp.asarray(target), p=p,
                                       margin=margin, reduction="none"))
  per_sample, _ = mm_ref(x, target, None, margin, p)
  assert_close(plain, per_sample, per_sample)
  weighted = np.asarray(multi_margin_loss(jnp.asarray(x), jnp.asarray(target), p=p,
                                          margin=margin, weight=jnp.asarray(weight),
                                          reduction="none"))
  expected = weight[target] * per_sample
  assert_close(weighted, expected, np.abs(expected))


# ---------------------------------------------------------------------------
# 4. multilabel_margin_loss against a plain-Python reference
# ---------------------------------------------------------------------------


@SETTINGS
@given(case=mlm_case(), cots=COTANGENTS, data=st.data())
def test_multilabel_margin_matches_reference(case, cots, data):
  x, target = case
  reduction = data.draw(reductions_for(x.shape), label="reduction")
  ad_reduction = data.draw(reductions_for(x.shape, AD_REDUCTIONS), label="ad_reduction")
  n, c = x.shape

  def loss(v):
    return multilabel_margin_loss(v, jnp.asarray(target), reduction=reduction)

  per_sample, scales, grad_ref = mlm_ref(x, target)
  out = loss(jnp.asarray(x))
  assert out.dtype == jnp.float64
  assert out.shape == ((n,) if reduction == "none" else ())
  check_reduced(out, per_sample, reduction, scales)

  cot, factor = cotangent_and_row_factor(cots, n, ad_reduction)
  out_ad, g = mlm_vjp(x, target, ad_reduction, cot)
  check_reduced(out_ad, per_sample, ad_reduction, scales)
  np.testing.assert_allclose(g, grad_ref * factor, rtol=RTOL, atol=1e-12)


@SETTINGS
@given(data=st.data())
def test_multilabel_margin_ignores_entries_after_first_padding(data):
  x, target = data.draw(mlm_case())
  n, c = x.shape
  # Rewrite everything after each row's first -1 with other in-range values.
  scrambled = target.copy()
  for i in range(n):
    hits = np.flatnonzero(target[i] < 0)
    if hits.size:
      k = int(hits[0])
      tail = data.draw(hnp.arrays(target.dtype, (c - k - 1,),
                                  elements=st.integers(-1, c - 1)))
      scrambled[i, k + 1:] = tail
  a = multilabel_margin_loss(jnp.asarray(x), jnp.asarray(target), reduction="none")
  b = multilabel_margin_loss(jnp.asarray(x), jnp.asarray(scrambled), reduction="none")
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@SMALL_SETTINGS
@given(data=st.data())
def test_int32_targets_match_reference(data):
  # Only reduction 'none' and the REDUCED_SHAPES: each signature is a compile.
  shapes = REDUCED_SHAPES
  x, target = data.draw(mlm_case(dtype=np.int32, shapes=shapes))
  per_sample, scales, _ = mlm_ref(x, target)
  out = multilabel_margin_loss(jnp.asarray(x), jnp.asarray(target), reduction="none")
  assert_close(out, per_sample, scales)

  x, y, weight, margin, p = data.draw(mm_case(dtype=np.int32, shapes=shapes))
  per_sample, _ = mm_ref(x, y, weight, margin, p)
  out = multi_margin_loss(jnp.asarray(x), jnp.asarray(y), p=p, margin=margin,
                          weight=jnp.asarray(weight), reduction="none")
  assert_close(out, per_sample, np.abs(per_sample))


def test_documented_examples():
  x = jnp.array([[0.1, 0.2, 0.4, 0.8]], dtype=jnp.float64)
  cases = [([[3, 0, -1, 1]], 0.85), ([[3, 3, -1, 1]], 0.65), ([[3, -1, 0, 1]], 0.325)]
  for target, expected in cases:
    for dtype in (np.int32, np.int64):
      y = jnp.asarray(np.array(target, dtype=dtype))
      assert float(multilabel_margin_loss(x, y)) == pytest.approx(expected, rel=1e-12)
      assert float(mlm_ref(np.asarray(x), np.array(target))[0][0]) == pytest.approx(
          expected, rel=1e-12)
  y = jnp.asarray(np.array([3], dtype=np.int64))
  assert float(multi_margin_loss(x, y)) == pytest.approx(0.325, rel=1e-12)


# ---------------------------------------------------------------------------
# 5. multilabel_soft_margin_loss against a numpy reference
# ---------------------------------------------------------------------------


@st.composite
def mlsm_case(draw, binary=None, with_weight=None):
  x = draw(score_matrix())
  n, c = x.shape
  if binary is None:
    binary = draw(st.booleans())
  if binary:
    t = draw(hnp.arrays(np.float64, (n, c), elements=st.sampled_from([0.0, 1.0])))
  else:
    t = draw(hnp.arrays(np.float64, (n, c),
                        elements=bounded_floats(1.5).map(lambda v: max(v, -0.5))))
  if with_weight is None:
    with_weight = draw(st.booleans())
  weight = None
  if with_weight:
    weight = draw(hnp.arrays(np.float64, (c,),
                             elements=bounded_floats(5.0)))
  return x, t, weight


@SETTINGS
@given(case=mlsm_case(), reduction=st.sampled_from(REDUCTIONS))
def test_multilabel_soft_margin_matches_reference(case, reduction):
  x, t, weight = case
  n, c = x.shape
  w = None if weight is None else jnp.asarray(weight)
  out = multilabel_soft_margin_loss(jnp.asarray(x), jnp.asarray(t), weight=w,
                                    reduction=reduction)
  assert out.dtype == jnp.float64
  assert out.shape == ((n,) if reduction == "none" else ())
  per_sample, scales = mlsm_ref(x, t, weight)
  check_reduced(out, per_sample, reduction, scales)


# ---------------------------------------------------------------------------
# 6. multilabel_soft_margin_loss class-permutation invariance
# ---------------------------------------------------------------------------


@SETTINGS
@given(data=st.data(), reduction=st.sampled_from(REDUCTIONS))
def test_multilabel_soft_margin_permutation_invariance(data, reduction):
  # Always weighted (one compile per signature); the unweighted path is
  # covered by the reference test.
  x, t, weight = data.draw(mlsm_case(binary=True, with_weight=True))
  n, c = x.shape
  perm = permutation(data.draw, c)
  weight_p = weight[perm]

  out, g = mlsm_vjp(x, t, weight, reduction)
  out_p, g_p = mlsm_vjp(x[:, perm], t[:, perm], weight_p, reduction)
  _, scales = mlsm_ref(x, t, weight)
  if reduction == "mean" and n == 0:
    assert np.isnan(out) and np.isnan(out_p)
  else:
    assert_close(out_p, out, scales if reduction == "none" else np.sum(scales))
  np.testing.assert_allclose(g_p, g[:, perm], rtol=RTOL, atol=1e-15)
