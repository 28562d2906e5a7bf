"""Every code path of the multilabel margin core against torch.

The public function picks a method at run time (``"auto"``); these tests call
the core with each method forced, on inputs where the other parity tests would
only ever reach one of them, so both stay exact: ties, NaN and inf, duplicate
labels, padding anywhere, sparse and dense rows, invalid rows.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxmargin._multilabel_margin import METHODS, multilabel_margin_per_sample, sort_is_cheaper


def _labels(rng, num_rows, num_classes, longest):
  """Padded targets with up to ``longest`` labels, duplicates and junk after -1."""
  target = rng.integers(0, num_classes, size=(num_rows, num_classes))
  for row in target:
    length = rng.integers(0, longest + 1)
    if length < num_classes:
      row[length] = -1
  return target


def _scores(rng, shape, dtype, kind):
  if kind == "ties":
    # Multiples of 0.5: many z = (1 - x_j) + x_d are exactly 0.
    return (0.5 * rng.integers(-4, 5, size=shape)).astype(dtype)
  x = rng.normal(size=shape).astype(dtype)
  if kind == "nonfinite":
    x.flat[rng.choice(x.size, size=max(1, x.size // 10), replace=False)] = rng.choice(
        [np.nan, np.inf, -np.inf], size=max(1, x.size // 10))
  return x


CASES = [
    # (num_rows, num_classes, longest label list, score kind)
    (6, 7, 3, "ties"),
    (5, 9, 9, "ties"),
    (8, 40, 4, "normal"),
    (4, 64, 64, "normal"),
    (6, 12, 12, "nonfinite"),
    (3, 300, 150, "ties"),
]


def _torch(x, target, cotangent):
  xt = torch.from_numpy(x.copy()).requires_grad_(True)
  out = F.multilabel_margin_loss(xt, torch.from_numpy(target.astype(np.int64)),
                                 reduction="none")
  out.backward(torch.from_numpy(cotangent))
  return out.detach().numpy(), xt.grad.numpy()


def _ours(x, target, cotangent, method):
  def loss(x):
    return multilabel_margin_per_sample(x, jnp.asarray(target), jnp.ones((), x.dtype), method)
  value, vjp = jax.vjp(jax.jit(loss), jnp.asarray(x))
  (grad,) = vjp(jnp.asarray(cotangent))
  return np.asarray(value), np.asarray(grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("method", METHODS)
def test_each_method_matches_torch(method, case, dtype):
  num_rows, num_classes, longest, kind = case
  rng = np.random.default_rng([num_rows, num_classes, longest])
  x = _scores(rng, (num_rows, num_classes), dtype, kind)
  target = _labels(rng, num_rows, num_classes, longest)
  cotangent = (1.0 + np.arange(num_rows) % 3).astype(dtype)

  expected_value, expected_grad = _torch(x, target, cotangent)
  value, grad = _ours(x, target, cotangent, method)

  rtol, atol = (1e-12, 1e-12) if dtype == np.float64 else (1e-5, 1e-6)
  np.testing.assert_allclose(value, expected_value, rtol=rtol, atol=atol)
  # torch float32 accumulates each gradient entry term by term, so its rounding
  # grows with the number of active terms; ours is an exact count times 1/C.
  grad_atol = atol if dtype == np.float64 else 1e-6 * max(longest, 1)
  np.testing.assert_allclose(grad, expected_grad, rtol=rtol, atol=grad_atol)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_gives_zero_gradient_at_an_exact_tie(method):
  # z = (1 - 0.5) + (-0.5) = 0 for class 1: no term, no gradient.
  x = np.array([[0.5, -0.5, -2.0]])
  target = np.array([[0, -1, -1]])
  value, grad = _ours(x, target, np.ones(1), method)
  assert value[0] == 0.0
  assert np.all(grad == 0.0)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_gives_nan_for_an_invalid_row_only(method):
  x = np.random.default_rng(0).normal(size=(3, 5))
  target = np.array([[1, 2, -1, 0, 0], [0, 7, -1, 0, 0], [4, -1, -3, 0, 0]])
  value, grad = _ours(x, target, np.ones(3), method)
  assert np.isfinite(value[0]) and np.all(np.isfinite(grad[0]))
  # Out of range after the padding still invalidates the row, as torch checks.
  assert np.all(np.isnan(value[1:])) and np.all(np.isnan(grad[1:]))


@pytest.mark.parametrize("method", METHODS)
def test_each_method_margin_gradient_counts_active_terms(method):
  rng = np.random.default_rng(3)
  x = rng.normal(size=(4, 10))
  target = _labels(rng, 4, 10, 6)

  def total(margin):
    return jnp.sum(multilabel_margin_per_sample(jnp.asarray(x), jnp.asarray(target),
                                                margin, method))

  margin = 0.7
  expected = 0.0
  for row, labels in zip(x, target):
    stop = np.flatnonzero(labels < 0)
    labels = labels[:stop[0]] if stop.size else labels
    negatives = np.setdiff1d(np.arange(10), labels)
    expected += sum(((margin - row[j]) + row[negatives] > 0).sum() for j in labels) / 10
  np.testing.assert_allclose(jax.grad(total)(jnp.float64(margin)), expected, rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_supports_grad_of_grad(method):
  x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 6)))
  target = jnp.array([[0, 2, -1, 0, 0, 0]] * 3)

  def loss(x):
    return jnp.sum(multilabel_margin_per_sample(x, target, jnp.float64(1), method))
  hessian_vector = jax.grad(lambda x: jnp.sum(jax.grad(loss)(x) ** 2))(x)
  # The loss is piecewise linear: its second derivative is zero.
  assert np.all(np.asarray(hessian_vector) == 0.0)


def test_auto_switches_from_the_loop_to_the_sort_with_the_longest_list():
  assert not sort_is_cheaper(5, 1000)
  assert sort_is_cheaper(5000, 10_000)
  # The choice is made at run time: one compiled function serves both.
  rng = np.random.default_rng(2)
  num_classes = 300
  x = rng.normal(size=(2, num_classes))
  sparse = _labels(rng, 2, num_classes, 2)
  dense = np.tile(np.arange(num_classes), (2, 1))
  dense[:, 290] = -1
  assert not sort_is_cheaper(2, num_classes) and sort_is_cheaper(290, num_classes)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    for target in (sparse, dense):
      ones = np.ones(2)
      np.testing.assert_allclose(_ours(x, target, ones, "auto")[0],
                                 _torch(x, target, ones)[0], rtol=1e-12)


@pytest.mark.parametrize("width", [1, 2, 7, 8, 300])
@pytest.mark.parametrize("right", [False, True], ids=["left", "right"])
def test_row_wise_binary_search_matches_searchsorted(width, right):
  # The sort method's own search, against jnp.searchsorted row by row, with
  # duplicates, +-inf on both sides and queries equal to stored values.
  from jaxmargin._multilabel_margin import _searchsorted_rows
  rng = np.random.default_rng(width)
  values = np.concatenate([[-np.inf, np.inf], np.arange(-3, 4, 0.5)])
  sorted_rows = np.sort(rng.choice(values, size=(6, width)), axis=1)
  queries = rng.choice(values, size=(6, 11))
  side = "right" if right else "left"
  expected = np.stack([np.searchsorted(row, q, side=side)
                       for row, q in zip(sorted_rows, queries)])
  actual = jax.jit(_searchsorted_rows, static_argnums=2)(sorted_rows, queries, right)
  np.testing.assert_array_equal(actual, expected)
