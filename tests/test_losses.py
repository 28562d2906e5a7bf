"""The Optax-style API (jaxmargin.losses) against the torch-compatible one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmargin
from jaxmargin import losses


def _ties(rng, shape):
  # Multiples of 0.5 make exact ties (z == 0) common.
  return 0.5 * rng.integers(-4, 5, size=shape).astype(np.float64)


def _multi_hot(rng, shape, density=0.3):
  return (rng.random(shape) < density).astype(np.int32)


def _assert_value_and_grad_equal(f, g, x):
  value_f, grad_f = jax.value_and_grad(f)(jnp.asarray(x))
  value_g, grad_g = jax.value_and_grad(g)(jnp.asarray(x))
  np.testing.assert_allclose(value_f, value_g, rtol=1e-12, atol=1e-15)
  np.testing.assert_allclose(grad_f, grad_g, rtol=1e-12, atol=1e-15)


# --- consistency with the torch-compatible API -----------------------------


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_multiclass_margin_mean_equals_multi_margin_loss(p, weighted):
  rng = np.random.default_rng(p + 2 * weighted)
  x = _ties(rng, (7, 5))
  y = rng.integers(0, 5, size=7)
  w = rng.random(5) if weighted else None
  _assert_value_and_grad_equal(
      lambda x: jnp.mean(losses.multiclass_margin_loss(x, y, p=p, margin=0.5,
                                                       class_weights=w)),
      lambda x: jaxmargin.multi_margin_loss(x, y, p=p, margin=0.5, weight=w), x)


def test_multilabel_margin_mean_equals_torch_api_on_converted_targets():
  rng = np.random.default_rng(0)
  x = _ties(rng, (9, 6))
  labels = _multi_hot(rng, (9, 6))
  padded = losses.multi_hot_to_padded(labels)
  _assert_value_and_grad_equal(
      lambda x: jnp.mean(losses.multilabel_margin_loss(x, labels)),
      lambda x: jaxmargin.multilabel_margin_loss(x, padded), x)


@pytest.mark.parametrize("weighted", [False, True])
def test_multilabel_soft_margin_mean_equals_torch_api(weighted):
  rng = np.random.default_rng(weighted)
  x = rng.normal(size=(6, 5)) * 3
  labels = rng.random((6, 5))
  w = rng.random(5) if weighted else None
  _assert_value_and_grad_equal(
      lambda x: jnp.mean(losses.multilabel_soft_margin_loss(x, labels, class_weights=w)),
      lambda x: jaxmargin.multilabel_soft_margin_loss(x, labels, weight=w), x)


def test_soft_margin_gradients_for_labels_and_weights_match_torch_api():
  rng = np.random.default_rng(4)
  x, t, w = rng.normal(size=(4, 3)), rng.random((4, 3)), rng.random(3)
  ours = jax.grad(lambda t, w: jnp.mean(
      losses.multilabel_soft_margin_loss(x, t, class_weights=w)), argnums=(0, 1))(t, w)
  torch_api = jax.grad(lambda t, w: jaxmargin.multilabel_soft_margin_loss(
      x, t, weight=w), argnums=(0, 1))(t, w)
  for a, b in zip(ours, torch_api):
    np.testing.assert_allclose(a, b, rtol=1e-12)


# --- margin of the multi-label loss (torch fixes it to 1) ------------------


def _multilabel_reference(x, hot, margin):
  total = np.zeros(x.shape[0])
  for n, (row, labels) in enumerate(zip(x, hot)):
    for j in np.flatnonzero(labels):
      for d in np.flatnonzero(labels == 0):
        total[n] += max(0.0, (margin - row[j]) + row[d])
  return total / x.shape[1]


def test_multilabel_margin_is_configurable_and_differentiable():
  rng = np.random.default_rng(1)
  x, hot = rng.normal(size=(5, 7)), _multi_hot(rng, (5, 7), 0.4)
  for margin in (0.0, 0.3, 2.5):
    np.testing.assert_allclose(losses.multilabel_margin_loss(x, hot, margin=margin),
                               _multilabel_reference(x, hot, margin), rtol=1e-12)
  grad = jax.grad(lambda m: jnp.sum(losses.multilabel_margin_loss(x, hot, margin=m)))(
      jnp.float64(0.3))
  step = 1e-6
  numeric = (np.sum(_multilabel_reference(x, hot, 0.3 + step))
             - np.sum(_multilabel_reference(x, hot, 0.3 - step))) / (2 * step)
  np.testing.assert_allclose(grad, numeric, rtol=1e-6)


# --- batch shapes and axis ---------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_any_batch_shape_and_class_axis(axis):
  rng = np.random.default_rng(axis + 5)
  shape = [3, 4, 6]
  x = rng.normal(size=shape)
  num_classes = shape[axis]
  last = np.moveaxis(x, axis, -1)
  y = rng.integers(0, num_classes, size=last.shape[:-1])
  hot = _multi_hot(rng, last.shape)
  hot_in_place = np.moveaxis(hot, -1, axis)

  out = losses.multiclass_margin_loss(x, y, axis=axis)
  assert out.shape == last.shape[:-1]
  np.testing.assert_allclose(out, losses.multiclass_margin_loss(last, y), rtol=1e-12)
  np.testing.assert_allclose(
      out.reshape(-1),
      jaxmargin.multi_margin_loss(last.reshape(-1, num_classes), y.reshape(-1),
                                  reduction="none"), rtol=1e-12)

  out = losses.multilabel_margin_loss(x, hot_in_place, axis=axis)
  assert out.shape == last.shape[:-1]
  np.testing.assert_allclose(out, losses.multilabel_margin_loss(last, hot), rtol=1e-12)

  out = losses.multilabel_soft_margin_loss(x, hot_in_place, axis=axis)
  assert out.shape == last.shape[:-1]
  np.testing.assert_allclose(out, losses.multilabel_soft_margin_loss(last, hot),
                             rtol=1e-12)


def test_one_example_without_batch_dimensions():
  x = jnp.array([0.1, 0.2, 0.4, 0.8])
  assert losses.multiclass_margin_loss(x, 3).shape == ()
  assert float(losses.multiclass_margin_loss(x, 3)) == pytest.approx(0.325)
  assert float(losses.multilabel_margin_loss(x, jnp.array([1, 0, 0, 1]))) == pytest.approx(0.85)


# --- where -------------------------------------------------------------------


def test_where_equals_the_loss_on_the_included_classes():
  rng = np.random.default_rng(2)
  x = _ties(rng, (6, 8))
  mask = rng.random((6, 8)) < 0.7
  y = np.array([int(rng.choice(np.flatnonzero(row))) for row in mask])
  hot = _multi_hot(rng, (6, 8), 0.4)
  w = rng.random(8)

  margin_rows = losses.multiclass_margin_loss(x, y, p=2, class_weights=w, where=mask)
  multilabel_rows = losses.multilabel_margin_loss(x, hot, margin=0.5, where=mask)
  soft_rows = losses.multilabel_soft_margin_loss(x, hot, class_weights=w, where=mask)
  for n, included in enumerate(mask):
    keep = np.flatnonzero(included)
    sub_y = int(np.searchsorted(keep, y[n]))
    np.testing.assert_allclose(margin_rows[n], losses.multiclass_margin_loss(
        x[n, keep], sub_y, p=2, class_weights=w[keep]), rtol=1e-12)
    np.testing.assert_allclose(multilabel_rows[n], losses.multilabel_margin_loss(
        x[n, keep], hot[n, keep], margin=0.5), rtol=1e-12)
    np.testing.assert_allclose(soft_rows[n], losses.multilabel_soft_margin_loss(
        x[n, keep], hot[n, keep], class_weights=w[keep]), rtol=1e-12)


@pytest.mark.parametrize("name", ["multiclass_margin_loss", "multilabel_margin_loss",
                                  "multilabel_soft_margin_loss"])
def test_where_ignores_excluded_values_even_nan_and_gives_them_no_gradient(name):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(4, 5))
  mask = np.ones((4, 5), bool)
  mask[:, 4] = False
  x_nan = x.copy()
  x_nan[:, 4] = np.nan
  labels = rng.integers(0, 4, size=4) if name == "multiclass_margin_loss" else _multi_hot(
      rng, (4, 5))
  fn = getattr(losses, name)
  value, grad = jax.value_and_grad(lambda x: jnp.sum(fn(x, labels, where=mask)))(x_nan)
  assert np.isfinite(value)
  np.testing.assert_allclose(value, jnp.sum(fn(x, labels, where=mask)), rtol=1e-12)
  assert np.all(grad[:, 4] == 0) and np.all(np.isfinite(grad))


def test_where_with_the_batch_shape_masks_whole_examples():
  rng = np.random.default_rng(6)
  x = rng.normal(size=(5, 4))
  y = rng.integers(0, 4, size=5)
  keep = np.array([True, False, True, False, True])
  out = losses.multiclass_margin_loss(x, y, where=keep)
  full = losses.multiclass_margin_loss(x, y)
  np.testing.assert_allclose(out[keep], full[keep], rtol=1e-12)
  assert np.all(out[~keep] == 0)
  grad = jax.grad(lambda x: jnp.sum(losses.multiclass_margin_loss(x, y, where=keep)))(x)
  assert np.all(grad[~keep] == 0)


def test_excluded_label_gives_zero_loss_and_zero_gradient():
  x = jnp.array([[0.3, 0.2, 0.9]])
  mask = jnp.array([[False, True, True]])
  for p in (1, 2):
    value, grad = jax.value_and_grad(lambda x: jnp.sum(losses.multiclass_margin_loss(
        x, jnp.array([0]), p=p, where=mask)))(x)
    assert float(value) == 0.0 and np.all(np.asarray(grad) == 0)


# --- dtypes, jit, validation --------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_output_dtype_follows_the_scores(dtype):
  x = jnp.array([[0.1, 0.2, 0.4, 0.8]], dtype)
  assert losses.multiclass_margin_loss(x, jnp.array([3])).dtype == dtype
  assert losses.multilabel_margin_loss(x, jnp.array([[1, 0, 0, 1]])).dtype == dtype
  assert losses.multilabel_soft_margin_loss(x, jnp.array([[1, 0, 0, 1]], dtype)).dtype == dtype


def test_jit_traces_once_per_shape():
  traces = []

  @jax.jit
  def step(x, hot):
    traces.append(1)
    return jnp.mean(losses.multilabel_margin_loss(x, hot))
  rng = np.random.default_rng(7)
  for _ in range(3):
    step(jnp.asarray(rng.normal(size=(4, 6))), jnp.asarray(_multi_hot(rng, (4, 6))))
  assert len(traces) == 1


def test_hyperparameters_are_keyword_only():
  x, y = jnp.ones((2, 3)), jnp.array([0, 1])
  with pytest.raises(TypeError):
    losses.multiclass_margin_loss(x, y, 2)  # noqa


@pytest.mark.parametrize("call, error, words", [
    (lambda: losses.multiclass_margin_loss(jnp.ones((2, 3)), jnp.array([0.0, 1.0])),
     TypeError, "labels dtype"),
    (lambda: losses.multiclass_margin_loss(jnp.ones((2, 3)), jnp.array([0, 1, 2])),
     ValueError, "labels shape (3,)"),
    (lambda: losses.multiclass_margin_loss(jnp.ones((2, 3)), jnp.array([0, 3])),
     ValueError, "labels values must lie in [0, 2]"),
    (lambda: losses.multiclass_margin_loss(jnp.ones((2, 3)), jnp.array([0, 1]), p=3),
     ValueError, "p is 3"),
    (lambda: losses.multiclass_margin_loss(jnp.ones((2, 3)), jnp.array([0, 1]), axis=2),
     ValueError, "axis 2"),
    (lambda: losses.multiclass_margin_loss(jnp.ones((2, 3)), jnp.array([0, 1]),
                                           class_weights=jnp.ones(4)),
     ValueError, "class_weights shape (4,)"),
    (lambda: losses.multilabel_margin_loss(jnp.ones((2, 3)), jnp.ones((2, 4))),
     ValueError, "labels shape (2, 4)"),
    (lambda: losses.multilabel_margin_loss(jnp.ones((1, 4)), jnp.array([[0, 3, -1, -1]])),
     ValueError, "labels values must be 0 or 1 (multi-hot); got 3"),
    (lambda: losses.multilabel_margin_loss(jnp.ones((2, 3), jnp.int32), jnp.ones((2, 3))),
     TypeError, "scores dtype int32"),
    (lambda: losses.multilabel_soft_margin_loss(jnp.ones((2, 3)), jnp.ones((2, 3)),
                                                where=jnp.ones((3, 3), bool)),
     ValueError, "where shape (3, 3)"),
])
def test_bad_input_names_the_argument(call, error, words):
  with pytest.raises(error, match=".*".join(map(lambda w: w.replace("(", r"\(").replace(
      ")", r"\)").replace("[", r"\[").replace("]", r"\]"), [words]))):
    call()


# --- target converters --------------------------------------------------------


def test_padded_to_multi_hot_follows_torch_label_lists():
  target = jnp.array([[3, 0, -1, 1], [2, 2, 1, -1], [-1, 0, 1, 2], [0, 1, 2, 3]])
  expected = np.array([[1, 0, 0, 1], [0, 1, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
  np.testing.assert_array_equal(losses.padded_to_multi_hot(target), expected)
  np.testing.assert_array_equal(jax.jit(losses.padded_to_multi_hot)(target), expected)
  assert losses.padded_to_multi_hot(target, dtype=jnp.float32).dtype == jnp.float32


def test_multi_hot_to_padded_and_back_round_trip():
  rng = np.random.default_rng(8)
  hot = _multi_hot(rng, (3, 4, 7))
  padded = jax.jit(losses.multi_hot_to_padded)(hot)
  assert padded.shape == hot.shape and padded.dtype == jnp.int32
  for row_hot, row in zip(hot.reshape(-1, 7), np.asarray(padded).reshape(-1, 7)):
    count = int(row_hot.sum())
    np.testing.assert_array_equal(row[:count], np.flatnonzero(row_hot))
    assert np.all(row[count:] == -1)
  np.testing.assert_array_equal(losses.padded_to_multi_hot(padded), hot)


def test_padded_to_multi_hot_rejects_out_of_range_values_eagerly():
  with pytest.raises(ValueError, match="target values must lie in"):
    losses.padded_to_multi_hot(jnp.array([[0, 4, -1, -1]]))
