"""Gradients: torch's strict kink, NaN handling, higher order (transformations: test_transformations.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax.test_util import check_grads

import jaxmargin


def test_exact_tie_has_zero_gradient_in_both_hinge_losses():
  # z = (1 - x[y]) + x[d] = (1 - 1) + 0 = 0: a tie. Autodiff through
  # jnp.maximum would give 0.5 here; torch gives 0.
  x = jnp.array([[1.0, 0.0]])
  mm_grad = jax.grad(jaxmargin.multi_margin_loss)(x, jnp.array([0]))
  mlm_grad = jax.grad(jaxmargin.multilabel_margin_loss)(x, jnp.array([[0, -1]]))
  np.testing.assert_array_equal(mm_grad, np.zeros((1, 2)))
  np.testing.assert_array_equal(mlm_grad, np.zeros((1, 2)))
  naive = jax.grad(lambda x: jnp.maximum(0.0, 1 - x[0, 0] + x[0, 1]))(x)
  assert float(naive[0, 1]) == 0.5  # what the strict kink avoids


def test_nan_score_of_a_non_target_is_dropped_from_loss_and_gradient():
  x = jnp.array([[0.5, jnp.nan, 0.2]])
  for name, target in (("multi_margin_loss", jnp.array([0])),
                       ("multilabel_margin_loss", jnp.array([[0, -1, 0]]))):
    value, grad = jax.value_and_grad(getattr(jaxmargin, name))(x, target)
    xt = torch.tensor(np.asarray(x), requires_grad=True)
    ref = getattr(F, name)(xt, torch.tensor(np.asarray(target)))
    ref.backward()
    assert np.isfinite(value) and float(value) == pytest.approx(float(ref.detach()), rel=1e-12)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-12)
    assert float(grad[0, 1]) == 0.0


@pytest.mark.parametrize("reduction, scale", [("mean", 1 / (3 * 4)), ("sum", 1 / 4)])
def test_gradient_scale_is_one_over_n_c_for_mean_and_one_over_c_for_sum(reduction, scale):
  # Every term active, one label per row: d loss / d x[d] is exactly the scale.
  x = jnp.zeros((3, 4))
  y = jnp.array([0, 1, 2])
  grad = jax.grad(jaxmargin.multi_margin_loss)(x, y, reduction=reduction)
  expected = np.full((3, 4), scale)
  expected[np.arange(3), np.asarray(y)] = -3 * scale
  np.testing.assert_allclose(grad, expected, rtol=1e-12)
  target = jnp.array([[0, -1, 0, 0], [1, -1, 0, 0], [2, -1, 0, 0]])
  grad = jax.grad(jaxmargin.multilabel_margin_loss)(x, target, reduction=reduction)
  np.testing.assert_allclose(grad, expected, rtol=1e-12)


def test_multi_margin_reverse_over_reverse_gives_the_analytic_hessian():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 5)))
  y = jnp.array([1, 4, 0])
  weight = jnp.asarray(rng.random(size=5) + 0.5)
  margin = 0.7
  loss = lambda x: jaxmargin.multi_margin_loss(x, y, p=2, margin=margin, weight=weight,
                                               reduction="sum")
  hessian = jax.jacrev(jax.grad(loss))(x)
  expected = np.zeros((3, 5, 3, 5))
  for n in range(3):
    yn = int(y[n])
    for d in range(5):
      z = margin - float(x[n, yn]) + float(x[n, d])
      if d == yn or z <= 0:
        continue
      e = np.zeros(5)
      e[d], e[yn] = 1.0, -1.0
      expected[n, :, n, :] += 2 * float(weight[yn]) / 5 * np.outer(e, e)
  np.testing.assert_allclose(hessian, expected, rtol=1e-12, atol=1e-14)


def test_multilabel_margin_grad_of_grad_is_zero_almost_everywhere():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(4, 6)))
  target = jnp.asarray(np.array([[0, 3, -1, 0, 0, 0]] * 4))
  second = jax.jacrev(jax.grad(jaxmargin.multilabel_margin_loss))(x, target)
  assert second.shape == (4, 6, 4, 6)
  np.testing.assert_array_equal(second, np.zeros_like(second))
  # Higher order through a nonlinear outer function still uses our rule.
  f = lambda x: jnp.sum(jax.grad(jaxmargin.multilabel_margin_loss)(x, target) ** 2)
  assert np.all(np.isfinite(jax.grad(f)(x)))


def test_multi_margin_gradients_for_weight_and_margin_are_correct():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(6, 5)))
  y = jnp.asarray(rng.integers(0, 5, 6))
  for p in (1, 2):
    loss = lambda x, w, m: jaxmargin.multi_margin_loss(x, y, p=p, margin=m, weight=w)
    check_grads(loss, (x, jnp.asarray(rng.random(5)), jnp.asarray(0.8)), order=1,
                modes=["rev"], eps=1e-6)


def test_multilabel_margin_gradient_matches_finite_differences():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(5, 7)))
  target = jnp.asarray(np.array([[2, 5, 2, -1, 0, 0, 0], [-1] * 7, [0, 1, 2, 3, 4, 5, 6],
                                 [6, -1, 6, 6, 6, 6, 6], [1, 0, -1, 1, 1, 1, 1]]))
  check_grads(lambda x: jaxmargin.multilabel_margin_loss(x, target), (x,), order=1,
              modes=["rev"], eps=1e-6)


def test_soft_margin_is_stable_for_huge_logits_in_float32():
  x = jnp.array([[1e4, -1e4, 3e3, -7e3, 0.0]], jnp.float32)
  t = jnp.array([[0.0, 1.0, 1.0, 0.0, 0.5]], jnp.float32)
  value, grads = jax.value_and_grad(jaxmargin.multilabel_soft_margin_loss, argnums=(0, 1))(x, t)
  assert value.dtype == jnp.float32 and np.isfinite(value)
  assert all(np.all(np.isfinite(g)) for g in grads)
  # The loss is (1e4 + 1e4 + 0 + 0 + log 2) / 5 and d/dx = (sigmoid(x) - t) / C.
  assert float(value) == pytest.approx((2e4 + np.log(2)) / 5, rel=1e-6)
  np.testing.assert_allclose(grads[0], [[0.2, -0.2, 0.0, 0.0, 0.0]], atol=1e-7)


def _torch_soft_margin(x, t, w):
  return F.multilabel_soft_margin_loss(x, t, weight=w)


def test_soft_margin_gradients_for_input_target_and_weight_match_torch():
  rng = np.random.default_rng(4)
  x, t, w = rng.normal(size=(4, 6)), rng.random((4, 6)), rng.normal(size=6)
  grads = jax.grad(jaxmargin.multilabel_soft_margin_loss, argnums=(0, 1, 2))(x, t, w)
  tensors = [torch.tensor(a, requires_grad=True) for a in (x, t, w)]
  _torch_soft_margin(*tensors).backward()
  for ours, ref in zip(grads, tensors):
    np.testing.assert_allclose(ours, ref.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_soft_margin_forward_mode_jvp_jacfwd_and_hessian_match_torch():
  rng = np.random.default_rng(5)
  x, t, w = rng.normal(size=(3, 4)), rng.random((3, 4)), rng.normal(size=4)
  loss = lambda x: jaxmargin.multilabel_soft_margin_loss(x, t, w)
  tangent = rng.normal(size=(3, 4))
  _, jvp_out = jax.jvp(loss, (jnp.asarray(x),), (jnp.asarray(tangent),))
  np.testing.assert_allclose(jax.jacfwd(loss)(x), jax.grad(loss)(x), rtol=1e-12)
  np.testing.assert_allclose(jvp_out, np.sum(jax.grad(loss)(x) * tangent), rtol=1e-12)
  ours = jax.hessian(loss)(x)
  ref = torch.autograd.functional.hessian(
      lambda xt: _torch_soft_margin(xt, torch.tensor(t), torch.tensor(w)), torch.tensor(x))
  np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-10, atol=1e-14)
