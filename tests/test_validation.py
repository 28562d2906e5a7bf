"""Bad input: clear errors at call/trace time, NaN (never a plausible number) under jit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmargin

X = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4)))


def test_shape_error_message_names_argument_got_and_expected():
  with pytest.raises(ValueError) as raised:
    jaxmargin.multilabel_margin_loss(X, jnp.array([0, 1, -1, 0]))
  assert str(raised.value) == ("multilabel_margin_loss: target shape (4,) does not match "
                               "input shape (5, 4); expected (5, 4)")


@pytest.mark.parametrize("call, match", [
    (lambda: jaxmargin.multi_margin_loss(X, jnp.zeros(5)), "target dtype float"),
    (lambda: jaxmargin.multilabel_margin_loss(X, jnp.zeros((5, 4))), "target dtype float"),
    (lambda: jaxmargin.multi_margin_loss(X, jnp.zeros(5, bool)), "target dtype bool"),
    (lambda: jaxmargin.multi_margin_loss(jnp.zeros((5, 4), int), jnp.zeros(5, int)),
     "input dtype int"),
    (lambda: jaxmargin.multilabel_soft_margin_loss(jnp.zeros((5, 4), int), X), "input dtype"),
    (lambda: jaxmargin.multilabel_soft_margin_loss(X, X, weight=jnp.ones(4, bool)),
     "weight dtype bool"),
    (lambda: jaxmargin.multi_margin_loss(X, jnp.zeros(5, int), weight=jnp.ones(4, complex)),
     "weight dtype complex"),
])
def test_dtype_errors_are_type_errors(call, match):
  with pytest.raises(TypeError, match=match):
    call()


@pytest.mark.parametrize("call, match", [
    (lambda: jaxmargin.multi_margin_loss(X, jnp.zeros(5, int), p=3), "p is 3; expected 1 or 2"),
    (lambda: jaxmargin.multi_margin_loss(X, jnp.zeros(4, int)), r"target shape \(4,\)"),
    (lambda: jaxmargin.multi_margin_loss(X, jnp.zeros(5, int), weight=jnp.ones(3)),
     r"weight shape \(3,\) does not match the 4 classes"),
    (lambda: jaxmargin.multi_margin_loss(X, jnp.zeros(5, int), margin=jnp.ones(2)),
     r"margin shape \(2,\)"),
    (lambda: jaxmargin.multi_margin_loss(jnp.zeros((2, 3, 4)), jnp.zeros(2, int)),
     r"input shape \(2, 3, 4\)"),
    (lambda: jaxmargin.multilabel_margin_loss(jnp.zeros(4), jnp.zeros((2, 2), int)),
     r"target shape \(2, 2\)"),
    (lambda: jaxmargin.multilabel_margin_loss(X, X.astype(int), reduction="avg"),
     "avg is not a valid value for reduction"),
    (lambda: jaxmargin.multilabel_soft_margin_loss(jnp.array(1.0), jnp.array(1.0)),
     r"input shape \(\) has no class axis"),
    (lambda: jaxmargin.multilabel_soft_margin_loss(X, jnp.ones((3, 4))),
     r"target shape \(3, 4\) does not broadcast"),
    (lambda: jaxmargin.multilabel_soft_margin_loss(X, X, weight=jnp.ones(3)),
     r"weight shape \(3,\) does not broadcast"),
])
def test_shape_and_value_errors_are_value_errors(call, match):
  with pytest.raises(ValueError, match=match):
    call()


@pytest.mark.parametrize("target", [
    [[0, -1, 4, 0]],   # after the padding: still checked, as in torch
    [[0, -2, 1, 0]],
    [[4, 0, 0, 0]],
])
def test_concrete_multilabel_target_out_of_range_raises(target):
  with pytest.raises(ValueError, match=r"target values must lie in \[-1, 3\]"):
    jaxmargin.multilabel_margin_loss(X[:1], jnp.array(target))
  with pytest.raises(ValueError):  # numpy and lists are concrete too
    jaxmargin.multilabel_margin_loss(np.asarray(X[:1]), target)


@pytest.mark.parametrize("bad", [-1, 4, 2**31 - 1])
def test_concrete_multi_margin_target_out_of_range_raises(bad):
  with pytest.raises(ValueError, match=r"target values must lie in \[0, 3\]"):
    jaxmargin.multi_margin_loss(X, jnp.array([0, 1, bad, 2, 3]))


@pytest.mark.parametrize("bad", [-1, -7, 4, 2**31 - 1, -(2**31)])
def test_jitted_invalid_multi_margin_target_gives_nan_rows_and_never_reads_out_of_bounds(bad):
  target = jnp.array([0, 1, bad, 2, 3], jnp.int32)
  loss = jax.jit(lambda x, t: jaxmargin.multi_margin_loss(x, t, reduction="none"))
  values = loss(X, target)
  valid = jaxmargin.multi_margin_loss(X, jnp.array([0, 1, 0, 2, 3]), reduction="none")
  assert np.isnan(values[2])
  np.testing.assert_array_equal(np.delete(values, 2), np.delete(valid, 2))
  grad = jax.jit(jax.grad(lambda x, t: jaxmargin.multi_margin_loss(x, t)))(X, target)
  assert np.all(np.isnan(grad[2])) and np.all(np.isfinite(np.delete(grad, 2, axis=0)))
  assert np.isnan(jax.jit(jaxmargin.multi_margin_loss)(X, target))


@pytest.mark.parametrize("bad", [-2, 4, 2**31 - 1, -(2**31)])
@pytest.mark.parametrize("position", [0, 3])  # before and after the padding
def test_jitted_invalid_multilabel_target_gives_nan_rows(bad, position):
  target = np.array([[0, -1, 0, 0]] * 5, np.int32)
  target[1, position] = bad
  values = jax.jit(lambda x, t: jaxmargin.multilabel_margin_loss(x, t, reduction="none"))(
      X, jnp.asarray(target))
  assert np.isnan(values[1]) and np.all(np.isfinite(np.delete(values, 1)))
  grad = jax.jit(jax.grad(jaxmargin.multilabel_margin_loss))(X, jnp.asarray(target))
  assert np.all(np.isnan(grad[1])) and np.all(np.isfinite(np.delete(grad, 1, axis=0)))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                   np.uint32, np.uint64])
def test_targets_of_every_integer_dtype_give_the_same_loss(dtype):
  mlm_target = np.array([[3, 0, -1, 1]] * 5)
  mm_target = np.array([3, 0, 1, 2, 0])
  if np.dtype(dtype).kind == "u":
    mlm_target = np.array([[3, 0, 2, 1]] * 5)  # no padding in an unsigned dtype
  for name, target in (("multilabel_margin_loss", mlm_target), ("multi_margin_loss", mm_target)):
    fn = getattr(jaxmargin, name)
    expected = fn(X, target.astype(np.int64))
    np.testing.assert_array_equal(fn(X, jnp.asarray(target.astype(dtype))), expected)
    np.testing.assert_array_equal(jax.jit(fn)(X, jnp.asarray(target.astype(dtype))), expected)


@pytest.mark.parametrize("dtype", [jnp.uint8, jnp.uint32])
def test_unsigned_out_of_range_targets_under_jit_are_nan_not_wrapped(dtype):
  # 255 must not wrap to -1 (padding) and 2**32 - 1 must not wrap to a label.
  big = jnp.iinfo(dtype).max
  target = jnp.array([[0, big, 1, 2]] * 5, dtype)
  values = jax.jit(lambda x, t: jaxmargin.multilabel_margin_loss(x, t, reduction="none"))(X, target)
  assert np.all(np.isnan(values))
  mm = jax.jit(lambda x, t: jaxmargin.multi_margin_loss(x, t, reduction="none"))(
      X, jnp.array([0, big, 1, 2, 3], dtype))
  assert np.isnan(mm[1]) and np.isfinite(mm[0])


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_low_precision_inputs_keep_their_dtype_and_stay_close_to_float64(dtype):
  rng = np.random.default_rng(1)
  x64 = rng.normal(size=(16, 50))
  tolerance = {jnp.float16: 2e-3, jnp.bfloat16: 1.6e-2, jnp.float32: 1e-6}[dtype]
  mlm_target = np.full((16, 50), -1)
  mlm_target[:, :5] = rng.integers(0, 50, (16, 5))
  problems = (
      ("multilabel_margin_loss", mlm_target, {}),
      ("multi_margin_loss", rng.integers(0, 50, 16), {"p": 2}),
      ("multilabel_soft_margin_loss", rng.random((16, 50)).astype(dtype), {}),
  )
  for name, target, kwargs in problems:
    fn = getattr(jaxmargin, name)
    # Rounding the input is part of low precision; compare on the rounded scores.
    x = jnp.asarray(x64, dtype)
    exact = fn(np.asarray(x, np.float64), np.asarray(target).astype(
        np.float64 if name.endswith("soft_margin_loss") else np.int64), **kwargs)
    for reduction in ("mean", "sum", "none"):
      value = fn(x, target, reduction=reduction, **kwargs)
      assert value.dtype == dtype, (name, reduction, value.dtype)
    value, grad = jax.value_and_grad(fn)(x, target, **kwargs)
    assert grad.dtype == dtype
    assert float(value) == pytest.approx(float(exact), rel=tolerance)


def test_half_precision_sums_do_not_overflow():
  # 60000 scores of 1 with 8 labels: the float16 sum of hinge terms would
  # overflow (max 65504); accumulated in float32 the mean loss is about 8.
  x = jnp.zeros((1, 60000), jnp.float16)
  target = jnp.full((1, 60000), -1).at[0, :8].set(jnp.arange(8))
  value = jaxmargin.multilabel_margin_loss(x, target, reduction="sum")
  assert value.dtype == jnp.float16
  assert float(value) == pytest.approx(8 * (60000 - 8) / 60000, rel=1e-3)
