"""The helpers of extreme classification: inverse propensities and PSP@k, against their definitions.

``inverse_propensity`` is Jain, Prabhu and Varma's (KDD 2016) propensity model,
as pyxclib computes it; ``propensity_scored_precision_at_k`` their PSP@k,
unnormalized, with ``lax.top_k``'s ranking, and its normalized form (over the
best ranking's PSP@k) built from it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmargin import losses
from tests.jax_versions import enable_x64
from tests.test_label_weights_hard_negatives import _top_k_order, multi_hot, scores


def test_inverse_propensity_is_jain_et_al():
  counts = np.array([0, 1, 2, 5, 40, 1000, 123456])
  for num_examples, a, b in ((2000, 0.55, 1.5), (10**6, 0.5, 0.4), (500, 0.6, 2.6)):
    c = (np.log(num_examples) - 1) * (b + 1) ** a
    propensity = 1 / (1 + c * np.exp(-a * np.log(counts + b)))
    got = losses.inverse_propensity(counts, num_examples, a=a, b=b)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, 1 / propensity, rtol=1e-12)
  # A label seen once weighs log N.
  np.testing.assert_allclose(losses.inverse_propensity(jnp.array([1.0]), 77)[0], np.log(77))
  with enable_x64(False):
    assert losses.inverse_propensity(jnp.array([3, 4]), 9).dtype == jnp.float32
  with pytest.raises(ValueError, match=r"^inverse_propensity: num_examples shape \(2,\)"):
    losses.inverse_propensity(counts, jnp.array([1, 2]))
  with pytest.raises(TypeError, match=r"^inverse_propensity: label_counts is None"):
    losses.inverse_propensity(None, 10)


def psp_reference(scores, labels, q, k):
  out = []
  for row, hot in zip(np.asarray(scores), np.asarray(labels), strict=True):
    top = _top_k_order(row, list(range(row.size)))[:k]
    out.append(sum(q[c] for c in top if hot[c]) / k)
  return np.array(out)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_propensity_scored_precision_matches_its_definition(k):
  rng = np.random.default_rng(k)
  x = scores(rng, (2, 6, 8), "ties")          # ties: the lower class ranks first
  hot = multi_hot(rng, 12, 8, 4).reshape(2, 6, 8)
  q = rng.uniform(1.0, 5.0, 8)
  got = jax.jit(lambda x, h, q: losses.propensity_scored_precision_at_k(x, h, q, k=k))(x, hot, q)
  assert got.shape == (2, 6)
  np.testing.assert_allclose(got.reshape(-1), psp_reference(x.reshape(12, 8), hot.reshape(12, 8),
                                                            q, k), rtol=1e-12)
  # The normalization XMC tables report: over the best ranking's PSP@k.
  best = losses.propensity_scored_precision_at_k(hot * q, hot, q, k=k)
  ideal = [sum(sorted(q[np.flatnonzero(h)], reverse=True)[:k]) / k for h in hot.reshape(12, 8)]
  np.testing.assert_allclose(best.reshape(-1), ideal, rtol=1e-12)
  assert np.all(np.asarray(got) <= np.asarray(best) + 1e-12)


def test_propensity_scored_precision_checks_its_arguments():
  x, hot, q = jnp.zeros((2, 4)), jnp.zeros((2, 4)), jnp.ones(4)
  fn = "propensity_scored_precision_at_k"
  with pytest.raises(ValueError, match=f"^{fn}: k is 5; expected 1 <= k <= C = 4"):
    losses.propensity_scored_precision_at_k(x, hot, q, k=5)
  with pytest.raises(TypeError, match=f"^{fn}: k is 1.5"):
    losses.propensity_scored_precision_at_k(x, hot, q, k=1.5)
  with pytest.raises(ValueError, match=rf"^{fn}: labels shape \(2, 3\)"):
    losses.propensity_scored_precision_at_k(x, hot[:, :3], q, k=1)
  with pytest.raises(ValueError, match=rf"^{fn}: inv_propensity shape \(3,\)"):
    losses.propensity_scored_precision_at_k(x, hot, q[:3], k=1)
