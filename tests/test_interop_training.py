"""The same model trained with torch and with jaxmargin follows the same path.

A two-layer network, the same initial weights, plain SGD, float64, 20 steps:
the loss trajectories must agree to 1e-10 relative. Any difference in a value
or a gradient (a tie, a reduction scale, a weight) compounds over the steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jaxmargin

STEPS, LEARNING_RATE = 20, 0.5
NUM_SAMPLES, NUM_FEATURES, NUM_HIDDEN, NUM_CLASSES = 32, 6, 8, 5


def _data(loss_name, rng):
  features = rng.normal(size=(NUM_SAMPLES, NUM_FEATURES))
  if loss_name == "multi_margin_loss":
    target = rng.integers(0, NUM_CLASSES, size=NUM_SAMPLES)
  elif loss_name == "multilabel_margin_loss":
    target = np.full((NUM_SAMPLES, NUM_CLASSES), -1)
    for row in target:
      count = rng.integers(0, 4)
      row[:count] = rng.choice(NUM_CLASSES, count, replace=False)
  else:
    target = (rng.random((NUM_SAMPLES, NUM_CLASSES)) < 0.4).astype(np.float64)
  return features, target


LOSSES = {
    "multi_margin_loss": dict(p=2, margin=0.8,
                              weight=np.linspace(0.5, 1.5, NUM_CLASSES)),
    "multilabel_margin_loss": {},
    "multilabel_soft_margin_loss": dict(weight=np.linspace(1.5, 0.5, NUM_CLASSES)),
}


def _torch_trajectory(loss_name, params, features, target, kwargs):
  weights = [torch.tensor(p, requires_grad=True) for p in params]
  target_t = torch.from_numpy(target)
  kwargs = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
            for k, v in kwargs.items()}
  losses = []
  for _ in range(STEPS):
    w1, b1, w2, b2 = weights
    scores = torch.tanh(torch.from_numpy(features) @ w1 + b1) @ w2 + b2
    loss = getattr(F, loss_name)(scores, target_t, **kwargs)
    for w in weights:
      w.grad = None
    loss.backward()
    with torch.no_grad():
      for w in weights:
        w -= LEARNING_RATE * w.grad
    losses.append(loss.item())
  return np.array(losses)


def _jax_trajectory(loss_name, params, features, target, kwargs):
  fn = getattr(jaxmargin, loss_name)
  kwargs = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v
            for k, v in kwargs.items()}

  def loss(weights):
    w1, b1, w2, b2 = weights
    scores = jnp.tanh(features @ w1 + b1) @ w2 + b2
    return fn(scores, target, **kwargs)

  @jax.jit
  def step(weights):
    value, grads = jax.value_and_grad(loss)(weights)
    return [w - LEARNING_RATE * g for w, g in zip(weights, grads)], value

  weights = [jnp.asarray(p) for p in params]
  losses = []
  for _ in range(STEPS):
    weights, value = step(weights)
    losses.append(float(value))
  return np.array(losses)


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_torch_and_jaxmargin_training_agree_for_20_steps(loss_name):
  rng = np.random.default_rng(0)
  features, target = _data(loss_name, rng)
  params = [rng.normal(size=(NUM_FEATURES, NUM_HIDDEN)) * 0.5,
            rng.normal(size=NUM_HIDDEN) * 0.1,
            rng.normal(size=(NUM_HIDDEN, NUM_CLASSES)) * 0.5,
            rng.normal(size=NUM_CLASSES) * 0.1]
  expected = _torch_trajectory(loss_name, params, features, target, LOSSES[loss_name])
  got = _jax_trajectory(loss_name, params, jnp.asarray(features), jnp.asarray(target),
                        LOSSES[loss_name])
  # The model must learn, or agreeing would prove little.
  assert expected[-1] < 0.8 * expected[0]
  np.testing.assert_allclose(got, expected, rtol=1e-10, atol=0)


# --- A scoring model trained on ranked pairs: margin_ranking_loss ------------------------------


def _score_torch(weights, features):
  w1, b1, w2, b2 = weights
  return (torch.tanh(features @ w1 + b1) @ w2 + b2)[:, 0]


def _score_jax(weights, features):
  w1, b1, w2, b2 = weights
  return (jnp.tanh(features @ w1 + b1) @ w2 + b2)[:, 0]


def test_torch_and_jaxmargin_ranking_training_agree_for_20_steps():
  # Pairs of items, the label saying which of the two a hidden linear score
  # prefers (int64, as torch's MarginRankingLoss examples have it); the model
  # scores each item, and the loss asks the preferred score to win by 0.5.
  rng = np.random.default_rng(1)
  first, second = (rng.normal(size=(NUM_SAMPLES, NUM_FEATURES)) for _ in range(2))
  hidden = rng.normal(size=NUM_FEATURES)
  target = np.where(first @ hidden > second @ hidden, 1, -1)
  params = [rng.normal(size=(NUM_FEATURES, NUM_HIDDEN)) * 0.5, rng.normal(size=NUM_HIDDEN) * 0.1,
            rng.normal(size=(NUM_HIDDEN, 1)) * 0.5, rng.normal(size=1) * 0.1]
  margin = 0.5

  weights = [torch.tensor(p, requires_grad=True) for p in params]
  first_t, second_t, target_t = map(torch.from_numpy, (first, second, target))
  expected = []
  for _ in range(STEPS):
    loss = F.margin_ranking_loss(_score_torch(weights, first_t), _score_torch(weights, second_t),
                                 target_t, margin=margin)
    for w in weights:
      w.grad = None
    loss.backward()
    with torch.no_grad():
      for w in weights:
        w -= LEARNING_RATE * w.grad
    expected.append(loss.item())

  @jax.jit
  def step(weights):
    def loss(weights):
      return jaxmargin.margin_ranking_loss(_score_jax(weights, first), _score_jax(weights, second),
                                           target, margin=margin)
    value, grads = jax.value_and_grad(loss)(weights)
    return [w - LEARNING_RATE * g for w, g in zip(weights, grads)], value

  weights_jax = [jnp.asarray(p) for p in params]
  got = []
  for _ in range(STEPS):
    weights_jax, value = step(weights_jax)
    got.append(float(value))
  assert expected[-1] < 0.8 * expected[0]
  np.testing.assert_allclose(got, expected, rtol=1e-10, atol=0)


# --- An embedding trained on fixed triplets: triplet_margin_loss -------------------------------


def test_torch_and_jaxmargin_triplet_training_agree_for_20_steps():
  # Points of 4 clusters; each triplet takes an anchor and a positive from one
  # cluster and a negative from another. A linear map to 3 dimensions is
  # trained with the swap and p=2; the parameters after 20 SGD steps (and the
  # loss at each step) must agree.
  rng = np.random.default_rng(2)
  centers = rng.normal(size=(4, NUM_FEATURES))
  cluster = rng.integers(0, 4, size=NUM_SAMPLES)
  other = (cluster + rng.integers(1, 4, size=NUM_SAMPLES)) % 4

  def points(clusters):
    return centers[clusters] + 0.8 * rng.normal(size=(NUM_SAMPLES, NUM_FEATURES))

  anchor, positive, negative = points(cluster), points(cluster), points(other)
  params = [rng.normal(size=(NUM_FEATURES, 3)) * 0.3, rng.normal(size=3) * 0.1]
  kwargs = dict(margin=1.0, p=2, swap=True)

  weights = [torch.tensor(p, requires_grad=True) for p in params]
  triplet_t = [torch.from_numpy(x) for x in (anchor, positive, negative)]
  expected = []
  for _ in range(STEPS):
    w, b = weights
    loss = F.triplet_margin_loss(*(x @ w + b for x in triplet_t), **kwargs)
    for v in weights:
      v.grad = None
    loss.backward()
    with torch.no_grad():
      for v in weights:
        v -= LEARNING_RATE * v.grad
    expected.append(loss.item())

  @jax.jit
  def step(weights):
    def loss(weights):
      w, b = weights
      return jaxmargin.triplet_margin_loss(*(x @ w + b for x in (anchor, positive, negative)),
                                           **kwargs)
    value, grads = jax.value_and_grad(loss)(weights)
    return [v - LEARNING_RATE * g for v, g in zip(weights, grads, strict=True)], value

  weights_jax = [jnp.asarray(p) for p in params]
  got = []
  for _ in range(STEPS):
    weights_jax, value = step(weights_jax)
    got.append(float(value))
  assert expected[-1] < 0.8 * expected[0]
  np.testing.assert_allclose(got, expected, rtol=1e-10, atol=0)
  for ours, theirs in zip(weights_jax, weights, strict=True):
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=0)
