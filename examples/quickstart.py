"""Quickstart: train a linear multi-label tagger with jaxmargin's torch-exact losses.

Synthetic data: each of 512 samples has 3 of 20 tags; a hidden linear map from
32 features decides which. We fit a linear model with plain gradient descent on
``multilabel_margin_loss`` (torch's target format: label indices padded with
-1), then report the loss, the multi-label soft margin loss and precision@3.
Runs on the CPU in a few seconds; needs only jax and jaxmargin.
"""

import jax
import jax.numpy as jnp

import jaxmargin

NUM_SAMPLES, NUM_FEATURES, NUM_TAGS, TAGS_PER_SAMPLE = 512, 32, 20, 3


def make_data(key):
  k_features, k_map, k_noise = jax.random.split(key, 3)
  features = jax.random.normal(k_features, (NUM_SAMPLES, NUM_FEATURES))
  hidden_map = jax.random.normal(k_map, (NUM_FEATURES, NUM_TAGS))
  scores = features @ hidden_map + 0.5 * jax.random.normal(k_noise, (NUM_SAMPLES, NUM_TAGS))
  tags = jnp.argsort(-scores, axis=1)[:, :TAGS_PER_SAMPLE]
  # torch's format: the labels first, then -1 padding up to the number of classes.
  target = jnp.full((NUM_SAMPLES, NUM_TAGS), -1).at[:, :TAGS_PER_SAMPLE].set(tags)
  multi_hot = jnp.zeros((NUM_SAMPLES, NUM_TAGS)).at[jnp.arange(NUM_SAMPLES)[:, None], tags].set(1)
  return features, target, multi_hot


def precision_at_k(scores, multi_hot, k=TAGS_PER_SAMPLE):
  top = jnp.argsort(-scores, axis=1)[:, :k]
  return float(jnp.mean(jnp.take_along_axis(multi_hot, top, axis=1)))


def main():
  features, target, multi_hot = make_data(jax.random.key(0))
  weights = jnp.zeros((NUM_FEATURES, NUM_TAGS))

  def loss_fn(weights):
    return jaxmargin.multilabel_margin_loss(features @ weights, target)

  @jax.jit
  def step(weights):
    loss, grad = jax.value_and_grad(loss_fn)(weights)
    return weights - 0.5 * grad, loss

  for epoch in range(201):
    weights, loss = step(weights)
    if epoch % 50 == 0:
      print(f"step {epoch:3d}  multilabel_margin_loss {float(loss):.4f}")

  scores = features @ weights
  soft = jaxmargin.multilabel_soft_margin_loss(scores, multi_hot)
  print(f"final multilabel_margin_loss {float(loss_fn(weights)):.4f}")
  print(f"multilabel_soft_margin_loss  {float(soft):.4f}")
  print(f"precision@{TAGS_PER_SAMPLE}                  {precision_at_k(scores, multi_hot):.3f}")


if __name__ == "__main__":
  main()
