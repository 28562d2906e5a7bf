"""The embedding losses' errors and warnings (as torch's), Optax-style functions and Flax modules."""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

import jaxmargin
from jaxmargin import linen as jm_linen
from jaxmargin import losses
from jaxmargin import nnx as jm_nnx
from tests.embedding_cases import EPS, A, B, manhattan, normal

# --- errors, warnings ----------------------------------------------------------

T = np.array([1, -1, 1])
# (our call, torch's call, expected exception, regex of our message)
ERRORS = [
  ("pairwise_distance", (A, np.ones((3, 5))), {}, ValueError, r"x2 shape \(3, 5\)"),
  (
    "pairwise_distance",
    (np.ones((3, 0)), np.ones((3, 0))),
    {"p": math.inf},
    ValueError,
    r"x1 - x2 shape \(3, 0\) has no features",
  ),
  (
    "pairwise_distance",
    (np.ones((3, 0)), np.ones((3, 0))),
    {"p": -1.0},
    ValueError,
    "has no features",
  ),
  ("pairwise_distance", (A > 0, B > 0), {}, TypeError, "x1 dtype bool"),
  ("cosine_embedding_loss", (A, B, T[None]), {}, ValueError, r"target shape \(1, 3\)"),
  ("cosine_embedding_loss", (A, B, np.array(1)), {}, ValueError, r"input1 shape \(3, 4\)"),
  ("cosine_embedding_loss", (A[0], B[0], T), {}, ValueError, r"input1 shape \(4,\)"),
  ("cosine_embedding_loss", (A, B[None], T), {}, ValueError, r"input2 shape \(1, 3, 4\)"),
  ("cosine_embedding_loss", (A, np.ones((3, 5)), T), {}, ValueError, r"input2 shape \(3, 5\)"),
  ("cosine_embedding_loss", (A, B, T[:2]), {}, ValueError, r"target shape \(2,\)"),
  ("cosine_embedding_loss", (np.ones(()), np.ones(()), np.array(1)), {}, ValueError, "input1"),
  (
    "cosine_embedding_loss",
    (A, B, T),
    {"reduction": "abc"},
    ValueError,
    "reduction: abc is not a valid value for reduction",
  ),
  (
    "triplet_margin_loss",
    (A, B, B),
    {"margin": 0.0},
    ValueError,
    r"margin is 0\.0; expected a margin greater than 0",
  ),
  ("triplet_margin_loss", (A, B, B), {"margin": -1.0}, ValueError, "margin must be greater"),
  ("triplet_margin_loss", (A, B, B), {"reduction": "abc"}, ValueError, "abc is not a valid"),
  (
    "triplet_margin_loss",
    (A, B, B),
    {"reduction": "abc", "margin": -1.0},
    ValueError,
    "abc is not a valid",
  ),
  ("triplet_margin_loss", (A[0], B, B), {}, ValueError, "have 1, 2 and 2 dimensions"),
  ("triplet_margin_loss", (A, B, np.ones((3, 5))), {}, ValueError, r"negative shape \(3, 5\)"),
  (
    "triplet_margin_loss",
    (np.ones((1, 4)), np.ones((3, 4)), np.ones((5, 4))),
    {},
    ValueError,
    "the negative distances",
  ),
  ("triplet_margin_loss", (A, B, np.ones((2, 4))), {"swap": True}, ValueError, "negative shape"),
  ("triplet_margin_loss", (np.ones((3, 0)),) * 3, {"p": math.inf}, ValueError, "no features"),
  (
    "triplet_margin_with_distance_loss",
    (A, B, B),
    {"reduction": "elementwise_mean"},
    ValueError,
    "elementwise_mean is not a valid value for reduction",
  ),
  (
    "triplet_margin_with_distance_loss",
    (A, B, B),
    {"margin": -1.0},
    ValueError,
    "margin must be greater than 0",
  ),
  ("triplet_margin_with_distance_loss", (A, B, B[0]), {}, ValueError, "same number"),
]


@pytest.mark.parametrize("name, args, kwargs, error, pattern", ERRORS)
def test_errors_torch_raises_are_raised_naming_the_argument(name, args, kwargs, error, pattern):
  with pytest.raises((RuntimeError, ValueError, TypeError)), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    getattr(F, name)(*(torch.tensor(a) for a in args), **kwargs)
  with pytest.raises(error, match=pattern) as raised:
    getattr(jaxmargin, name)(*args, **kwargs)
  assert str(raised.value).startswith(f"{name}: ")


def test_argument_type_errors():
  with pytest.raises(TypeError, match="triplet_margin_loss: anchor is None"):
    jaxmargin.triplet_margin_loss(None, A, B)
  with pytest.raises(TypeError, match="p is 'two'; expected a real number"):
    jaxmargin.pairwise_distance(A, B, p="two")
  with pytest.raises(ValueError, match=r"eps shape \(2,\) is not a scalar"):
    jaxmargin.pairwise_distance(A, B, eps=np.ones(2))
  with pytest.raises(TypeError, match="distance_function is 3; expected a callable"):
    jaxmargin.triplet_margin_with_distance_loss(A, B, B, distance_function=3)
  with pytest.raises(TypeError, match="target dtype complex"):
    jaxmargin.cosine_embedding_loss(A, B, T.astype(complex))
  with pytest.raises(TypeError, match="p is a traced value"):
    jax.jit(lambda p: jaxmargin.pairwise_distance(A, B, p=p))(2.0)
  with pytest.raises(TypeError, match="keepdim is a traced value"):
    jax.jit(lambda k: jaxmargin.pairwise_distance(A, B, keepdim=k))(True)
  with pytest.raises(TypeError, match="swap is a traced value"):
    jax.jit(lambda s: jaxmargin.triplet_margin_loss(A, B, B, swap=s))(True)


@pytest.mark.parametrize(
  "name, args", [("cosine_embedding_loss", (A, B, T)), ("triplet_margin_loss", (A, B, B))]
)
def test_legacy_arguments_and_elementwise_mean_warn_as_torch(name, args):
  with pytest.warns(UserWarning, match=r"please use reduction='sum' instead"):
    assert getattr(jaxmargin, name)(*args, size_average=False).shape == ()
  with pytest.warns(UserWarning, match=r"please use reduction='none' instead"):
    assert getattr(jaxmargin, name)(*args, reduce=False).shape == (3,)
  with pytest.warns(UserWarning, match="'elementwise_mean' is deprecated"):
    getattr(jaxmargin, name)(*args, reduction="elementwise_mean")


# --- the Optax-style functions -----------------------------------------------


def test_optax_style_losses_take_any_batch_shape_and_axis_and_equal_torch_after_mean():
  a, pos, n = (normal(2, 3, 5, seed=s) for s in range(3))
  ref = F.triplet_margin_loss(
    *(torch.tensor(x.reshape(6, 5)) for x in (a, pos, n)), p=1.5, swap=True
  )
  per_example = losses.triplet_margin_loss(a, pos, n, p=1.5, swap=True)
  assert per_example.shape == (2, 3)
  np.testing.assert_allclose(jnp.mean(per_example), ref.numpy(), rtol=1e-12)
  moved = [np.moveaxis(x, -1, 0) for x in (a, pos, n)]
  np.testing.assert_allclose(
    losses.triplet_margin_loss(*moved, p=1.5, swap=True, axis=0), per_example, rtol=1e-14
  )
  # Broadcasting: one positive for all anchors.
  np.testing.assert_allclose(
    losses.triplet_margin_loss(a, pos[0, 0], n),
    jaxmargin.triplet_margin_loss(a, np.broadcast_to(pos[0, 0], a.shape), n, reduction="none"),
    rtol=1e-14,
  )
  labels = np.array([[1, -1, 1], [-1, 1, 0]])
  per_pair = losses.cosine_embedding_loss(a, pos, labels, margin=0.2)
  ref = F.cosine_embedding_loss(
    torch.tensor(a.reshape(6, 5)),
    torch.tensor(pos.reshape(6, 5)),
    torch.tensor(labels.reshape(6)),
    margin=0.2,
  )
  assert per_pair.shape == (2, 3)
  np.testing.assert_allclose(jnp.mean(per_pair), ref.numpy(), rtol=1e-12)
  np.testing.assert_allclose(
    losses.cosine_embedding_loss(
      np.moveaxis(a, -1, 1), np.moveaxis(pos, -1, 1), labels, margin=0.2, axis=1
    ),
    per_pair,
    rtol=1e-14,
  )
  # Gradients equal the torch-compatible function's.
  grad = jax.grad(lambda x: jnp.mean(losses.triplet_margin_loss(x, pos, n, p=3)))(a)
  grad_t = jax.grad(
    lambda x: jaxmargin.triplet_margin_loss(
      x.reshape(6, 5), pos.reshape(6, 5), n.reshape(6, 5), p=3
    )
  )(a)
  np.testing.assert_allclose(grad, grad_t, rtol=1e-13)


def test_optax_style_errors_name_the_argument():
  with pytest.raises(ValueError, match="triplet_margin_loss: axis 2 is out of range for anchors"):
    losses.triplet_margin_loss(A, B, B, axis=2)
  with pytest.raises(ValueError, match="anchors shape \\(\\) has no feature axis"):
    losses.triplet_margin_loss(1.0, 1.0, 1.0)
  with pytest.raises(ValueError, match="margin is -1"):
    losses.triplet_margin_loss(A, B, B, margin=-1.0)
  with pytest.raises(ValueError, match=r"negatives shape \(3, 5\)"):
    losses.triplet_margin_loss(A, B, np.ones((3, 5)))
  with pytest.raises(ValueError, match=r"labels shape \(2,\) does not broadcast"):
    losses.cosine_embedding_loss(A, B, np.ones(2))
  with pytest.raises(TypeError, match="embeddings1 dtype bool"):
    losses.cosine_embedding_loss(A > 0, B, T)


def test_optax_triplet_loss_differs_from_torch_and_ours_does_not():
  # optax.losses.triplet_margin_loss: (sum((a - p)^deg) + eps)^(1/deg), no
  # magnitudes, eps once; no swap. torch: ||a - p + eps||_p.
  a, pos, n = (normal(4, 3, seed=s) for s in range(3))
  torch_loss = F.triplet_margin_loss(
    *(torch.tensor(x) for x in (a, pos, n)), p=1, reduction="none"
  ).numpy()
  ours = losses.triplet_margin_loss(a, pos, n, p=1)
  np.testing.assert_allclose(ours, torch_loss, rtol=1e-12)
  theirs = optax.losses.triplet_margin_loss(a, pos, n, norm_degree=1)
  # Odd degree without magnitudes: signed sums, "distances" that can be negative.
  signed = np.sum(a - pos, -1) + EPS
  assert np.any(signed < 0)
  np.testing.assert_allclose(
    theirs, np.maximum(signed - (np.sum(a - n, -1) + EPS) + 1, 0), rtol=1e-12
  )
  assert not np.allclose(theirs, torch_loss)
  # p = 2: eps placement. Identical anchor and positive: torch's distance is
  # eps * sqrt(D), optax's sqrt(eps) (1.7e-6 against 1e-3).
  same = optax.losses.triplet_margin_loss(a, a, n, margin=10.0)
  ours_same = losses.triplet_margin_loss(a, a, n, margin=10.0)
  d_neg = np.linalg.norm(a - n + EPS, axis=-1)
  np.testing.assert_allclose(ours_same, 10 + EPS * np.sqrt(3) - d_neg, rtol=1e-12)
  np.testing.assert_allclose(
    same, 10 + np.sqrt(EPS) - np.sqrt(np.sum((a - n) ** 2, -1) + EPS), rtol=1e-12
  )


# --- the Flax modules --------------------------------------------------------

ANCHOR, POSITIVE, NEGATIVE = (jnp.asarray(normal(4, 3, seed=s)) for s in range(3))
TARGET = jnp.array([1, -1, -1, 1])


MODULE_CASES = [
  (
    "CosineEmbeddingLoss",
    {"margin": 0.2, "reduction": "sum"},
    (ANCHOR, POSITIVE, TARGET),
    functools.partial(jaxmargin.cosine_embedding_loss, margin=0.2, reduction="sum"),
  ),
  (
    "TripletMarginLoss",
    {"margin": 0.5, "p": 1.5, "eps": 0.1, "swap": True},
    (ANCHOR, POSITIVE, NEGATIVE),
    functools.partial(jaxmargin.triplet_margin_loss, margin=0.5, p=1.5, eps=0.1, swap=True),
  ),
  (
    "TripletMarginLoss",
    {"reduction": "none"},
    (ANCHOR, POSITIVE, NEGATIVE),
    functools.partial(jaxmargin.triplet_margin_loss, reduction="none"),
  ),
  (
    "TripletMarginWithDistanceLoss",
    {"distance_function": manhattan, "swap": True},
    (ANCHOR, POSITIVE, NEGATIVE),
    functools.partial(
      jaxmargin.triplet_margin_with_distance_loss, distance_function=manhattan, swap=True
    ),
  ),
  (
    "TripletMarginWithDistanceLoss",
    {},
    (ANCHOR, POSITIVE, NEGATIVE),
    jaxmargin.triplet_margin_with_distance_loss,
  ),
]


@pytest.mark.parametrize("name, kwargs, args, fn", MODULE_CASES)
def test_nnx_and_linen_modules_equal_the_functions(name, kwargs, args, fn):
  expected = fn(*args)
  np.testing.assert_array_equal(getattr(jm_nnx, name)(**kwargs)(*args), expected)
  np.testing.assert_array_equal(getattr(jm_linen, name)(**kwargs).apply({}, *args), expected)


@pytest.mark.parametrize("module", [jm_nnx, jm_linen])
def test_modules_check_torchs_rules_when_built(module):
  with pytest.raises(ValueError, match=r"TripletMarginLoss: margin is 0\.0; expected a margin"):
    module.TripletMarginLoss(margin=0.0)
  with pytest.raises(ValueError, match="TripletMarginWithDistanceLoss: margin is -1"):
    module.TripletMarginWithDistanceLoss(margin=-1.0)
  with pytest.raises(ValueError, match="elementwise_mean is not a valid value for reduction"):
    module.TripletMarginWithDistanceLoss(reduction="elementwise_mean")
  with pytest.raises(TypeError, match="distance_function is 'l2'"):
    module.TripletMarginWithDistanceLoss(distance_function="l2")
  with pytest.raises(ValueError, match="CosineEmbeddingLoss: reduction: abc is not a valid"):
    module.CosineEmbeddingLoss(reduction="abc")
  with pytest.raises(TypeError, match="CosineEmbeddingLoss: margin is None"):
    module.CosineEmbeddingLoss(margin=None)
  with pytest.raises(TypeError, match="TripletMarginLoss: p is 'x'"):
    module.TripletMarginLoss(p="x")
  with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
    loss = module.TripletMarginLoss(reduce=False)
    out = (
      loss(ANCHOR, POSITIVE, NEGATIVE)
      if module is jm_nnx
      else loss.apply({}, ANCHOR, POSITIVE, NEGATIVE)
    )
  assert out.shape == (4,)


def test_nnx_module_holds_no_trainable_state_and_works_inside_a_model():
  loss_fn = jm_nnx.TripletMarginWithDistanceLoss(distance_function=manhattan)
  assert len(nnx.state(loss_fn, nnx.Param)) == 0
  linear = nnx.Linear(3, 2, rngs=nnx.Rngs(0))

  def loss(model):
    return loss_fn(model(ANCHOR), model(POSITIVE), model(NEGATIVE))

  grads = nnx.grad(loss)(linear)
  assert np.all(np.isfinite(grads["kernel"][...]))
