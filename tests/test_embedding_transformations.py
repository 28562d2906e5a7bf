"""The embedding losses under transformations: vmap, second derivatives (against torch's
double backward), forward mode (against torch's forward AD), a differentiable margin, and
checkify of a traced margin."""

from __future__ import annotations

import functools
import math
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax.experimental import checkify

import jaxmargin
from jaxmargin import losses
from tests.embedding_cases import SPECIAL_ROWS, A, B, manhattan, normal

# --- transformations -----------------------------------------------------------


def test_vmap_over_a_batch_of_batches_equals_the_batched_call():
  a, pos, n = (normal(3, 4, 5, seed=s) for s in range(3))
  t = np.array([[1, -1, 1, -1]] * 3)
  vmapped = jax.vmap(
    lambda a, p, n: jaxmargin.triplet_margin_loss(a, p, n, reduction="none", swap=True)
  )(a, pos, n)
  np.testing.assert_allclose(
    vmapped, jaxmargin.triplet_margin_loss(a, pos, n, reduction="none", swap=True), rtol=1e-14
  )
  vmapped = jax.vmap(lambda x, y, t: jaxmargin.cosine_embedding_loss(x, y, t, reduction="none"))(
    a, pos, t
  )
  np.testing.assert_allclose(vmapped, losses.cosine_embedding_loss(a, pos, t), rtol=1e-14)
  vmapped = jax.vmap(jax.grad(lambda x, y: jnp.sum(jaxmargin.pairwise_distance(x, y, p=3))))(a, pos)
  batched = jax.grad(lambda x, y: jnp.sum(jaxmargin.pairwise_distance(x, y, p=3)))(a, pos)
  np.testing.assert_allclose(vmapped, batched, rtol=1e-14)


def _torch_hessian(fn, args):
  return torch.autograd.functional.hessian(fn, tuple(torch.tensor(a) for a in args))


def _assert_hessians(ours, ref):
  for i, row in enumerate(ours):
    for j, block in enumerate(row):
      np.testing.assert_allclose(
        block, ref[i][j].numpy(), rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=f"block {i}, {j}"
      )


@pytest.mark.parametrize("p", [2, 3, 1.5, 0.5, 1, math.inf, -1, 0])
def test_second_derivatives_match_torchs_double_backward(p):
  # Reverse over reverse, torch's own method, at regular rows and at the zero
  # vector, a zero component, a tie, NaN and inf, where the derivatives are
  # torch's masked formulas; forward over reverse (jax.hessian) at regular rows.
  x, y = normal(3, 3), normal(3, 3, seed=1)

  def ours(a, b):
    return jnp.sum(jaxmargin.pairwise_distance(a, b, p=p))

  def theirs(a, b):
    return F.pairwise_distance(a, b, p=p).sum()

  rows = np.concatenate([x, SPECIAL_ROWS]), np.concatenate([y, np.zeros_like(SPECIAL_ROWS)])
  reverse_reverse = jax.jacrev(jax.jacrev(ours, argnums=(0, 1)), argnums=(0, 1))(*rows)
  _assert_hessians(reverse_reverse, _torch_hessian(theirs, rows))
  if p in (2, 3, 0.5, math.inf):
    _assert_hessians(jax.hessian(ours, argnums=(0, 1))(x, y), _torch_hessian(theirs, (x, y)))
  if p in (2, 3, math.inf):  # the triplet's own second derivatives, for three orders
    a, pos, n = (normal(4, 3, seed=s) for s in range(3))
    ours_triplet = functools.partial(jaxmargin.triplet_margin_loss, p=p, swap=True, margin=2.0)
    torch_triplet = functools.partial(F.triplet_margin_loss, p=p, swap=True, margin=2.0)
    _assert_hessians(
      jax.hessian(ours_triplet, argnums=(0, 1, 2))(a, pos, n),
      _torch_hessian(torch_triplet, (a, pos, n)),
    )


def test_cosine_second_derivatives_match_torch_also_at_a_zero_vector():
  x1, x2 = normal(4, 3), normal(4, 3, seed=1)
  x1[0] = 0.0
  t = np.array([1, -1, 1, -1])
  _assert_hessians(
    jax.hessian(lambda a, b: jaxmargin.cosine_embedding_loss(a, b, t, margin=-0.5), argnums=(0, 1))(
      x1, x2
    ),
    _torch_hessian(
      lambda a, b: F.cosine_embedding_loss(a, b, torch.tensor(t), margin=-0.5), (x1, x2)
    ),
  )


@pytest.mark.parametrize("p", [2, math.inf])
def test_forward_mode_matches_torchs_forward_ad(p):
  x, y = normal(3, 4), normal(3, 4, seed=1)
  dx, dy = normal(3, 4, seed=2), normal(3, 4, seed=3)
  _, ours = jax.jvp(
    lambda a, b: jaxmargin.triplet_margin_loss(a, b, y[::-1], p=p, swap=True, reduction="none"),
    (x, y),
    (dx, dy),
  )
  with warnings.catch_warnings():  # torch.func scripts a helper, which torch deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    _, ref = torch.func.jvp(
      lambda a, b: F.triplet_margin_loss(
        a, b, torch.tensor(y[::-1].copy()), p=p, swap=True, reduction="none"
      ),
      (torch.tensor(x), torch.tensor(y)),
      (torch.tensor(dx), torch.tensor(dy)),
    )
  np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-12)
  np.testing.assert_allclose(
    jax.jacfwd(lambda a: jnp.sum(jaxmargin.pairwise_distance(a, y, p=p)))(x),
    jax.grad(lambda a: jnp.sum(jaxmargin.pairwise_distance(a, y, p=p)))(x),
    rtol=1e-13,
  )


def test_margin_is_differentiable():
  a, pos, n = (normal(6, 3, seed=s) for s in range(3))
  active = np.asarray(jaxmargin.triplet_margin_loss(a, pos, n, reduction="none") > 0)
  grad = jax.grad(lambda m: jaxmargin.triplet_margin_loss(a, pos, n, margin=m))(1.0)
  np.testing.assert_allclose(grad, active.mean(), rtol=1e-15)
  t = np.array([-1, -1, -1, -1, -1, -1])
  grad = jax.grad(lambda m: jaxmargin.cosine_embedding_loss(a, pos, t, margin=m))(-0.2)
  cos = np.sum(a * pos, -1) / np.sqrt(np.sum(a * a, -1) * np.sum(pos * pos, -1))
  np.testing.assert_allclose(grad, -np.mean(cos >= -0.2), rtol=1e-15)


@pytest.mark.parametrize(
  "fn",
  [
    lambda m: jaxmargin.triplet_margin_loss(A, B, B * 2, margin=m, reduction="none"),
    lambda m: jaxmargin.triplet_margin_with_distance_loss(A, B, B * 2, margin=m),
    lambda m: jaxmargin.triplet_margin_with_distance_loss(
      A, B, B * 2, margin=m, distance_function=manhattan
    ),
    lambda m: losses.triplet_margin_loss(A, B, B * 2, margin=m),
  ],
  ids=["torch", "with_distance", "with_custom_distance", "optax"],
)
def test_a_traced_margin_is_checked_by_checkify_and_gives_nan(fn):
  checked = jax.jit(checkify.checkify(fn))
  error, out = checked(-1.0)
  assert re.search(r"margin is -1.0; expected a margin greater than 0", error.get())
  assert np.all(np.isnan(out))
  error, out = checked(0.5)
  assert error.get() is None and np.all(np.isfinite(out))
  # Without checkify: NaN, and no error.
  assert np.all(np.isnan(jax.jit(fn)(0.0)))
