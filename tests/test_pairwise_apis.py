"""The pairwise losses' other APIs and the transformations, against torch 2.13 and the functions.

The Optax-style per-element losses (any batch shape, NumPy broadcasting, their
mean equal to torch's), the Flax NNX and linen modules (equal to the functions
and to torch's modules, checked when built), and jit, vmap, grad, jacfwd,
hessian against torch's double backward, forward mode against torch's forward
AD, and checkify.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from flax import linen as nn
from flax import nnx
from jax.experimental import checkify
from torch.autograd.functional import hessian as torch_hessian

import jaxmargin
from jaxmargin import linen as jm_linen
from jaxmargin import losses
from jaxmargin import nnx as jm_nnx
from tests.pairwise_cases import (
  MARGINS,
  NAMES,
  arrays,
  assert_close,
  labels,
  to_torch,
  torch_loss,
)

# --- the Optax-style per-element losses -------------------------------------------------------

OPTAX = {
  "margin_ranking_loss": (losses.margin_ranking_loss, {"margin": 0.25}),
  "hinge_embedding_loss": (losses.hinge_embedding_loss, {"margin": 1.25}),
  "soft_margin_loss": (losses.soft_margin_loss, {}),
}


@pytest.mark.parametrize("shape, dtype", [((), np.float64), ((2, 3, 4), np.float32)], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_optax_style_is_elementwise_and_its_mean_is_torchs(name, shape, dtype):
  fn, kwargs = OPTAX[name]
  args = arrays(name, np.random.default_rng(13), shape, dtype)
  per_element = fn(*args, **kwargs)
  assert per_element.shape == shape and per_element.dtype == dtype
  expected = torch_loss(name, *args, reduction="none", **MARGINS[name])
  assert_close(per_element, expected, dtype)
  mean = getattr(jaxmargin, name)(*args, **MARGINS[name])
  assert_close(jnp.mean(per_element), mean, dtype)
  # The gradient of the mean too, for every argument torch differentiates.
  count = 3 if name == "margin_ranking_loss" else 1
  ours = jax.grad(
    lambda *a: jnp.mean(fn(*a, *args[count:], **kwargs)), argnums=tuple(range(count))
  )(*args[:count])
  theirs = jax.grad(
    lambda *a: getattr(jaxmargin, name)(*a, *args[count:], **MARGINS[name]),
    argnums=tuple(range(count)),
  )(*args[:count])
  for g, h in zip(ours, theirs, strict=True):
    assert_close(g, h, dtype)


def test_optax_style_broadcasts_any_batch_shapes():
  # NumPy broadcasting, without torch's equal-rank rule.
  rng = np.random.default_rng(14)
  s1, s2, y = rng.normal(size=(2, 3, 4)), rng.normal(size=(4,)), labels(rng, (3, 1))
  got = losses.margin_ranking_loss(s1, s2, y, margin=0.1)
  assert got.shape == (2, 3, 4)
  expected = torch_loss(
    "margin_ranking_loss",
    s1,
    np.broadcast_to(s2, s1.shape),
    np.broadcast_to(y, s1.shape),
    margin=0.1,
    reduction="none",
  )
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  d, y = np.abs(rng.normal(size=(4,))), labels(rng, (2, 3, 1))
  np.testing.assert_allclose(
    losses.hinge_embedding_loss(d, y),
    torch_loss("hinge_embedding_loss", d, y, reduction="none"),
    rtol=1e-12,
  )
  x, y = rng.normal(size=(4,)), labels(rng, (2, 3, 1))
  got = losses.soft_margin_loss(x, y)
  assert got.shape == (2, 3, 4)
  np.testing.assert_allclose(
    got,
    torch_loss(
      "soft_margin_loss",
      np.broadcast_to(x, (2, 3, 4)),
      np.broadcast_to(y, (2, 3, 4)),
      reduction="none",
    ),
    rtol=1e-12,
  )


def test_optax_style_vmaps_and_jits():
  rng = np.random.default_rng(15)
  x, y = rng.normal(size=(6, 5)), labels(rng, (6, 5))
  for name in NAMES:
    fn, kwargs = OPTAX[name]
    args = (x, x[::-1], y) if name == "margin_ranking_loss" else (np.abs(x), y)
    expected = fn(*args, **kwargs)
    np.testing.assert_array_equal(
      jax.jit(lambda *a, fn=fn, kw=kwargs: fn(*a, **kw))(*args), expected
    )
    np.testing.assert_allclose(
      jax.vmap(lambda *a, fn=fn, kw=kwargs: fn(*a, **kw))(*args), expected, rtol=1e-15
    )


OPTAX_ERRORS = [
  (
    losses.margin_ranking_loss,
    (np.ones(3), np.ones(4), np.ones(3)),
    {},
    ValueError,
    r"^margin_ranking_loss: scores1 shape \(3,\), scores2 shape \(4,\), labels shape",
  ),
  (
    losses.margin_ranking_loss,
    (np.ones(3), np.ones(3), np.ones(3, bool)),
    {},
    TypeError,
    r"^margin_ranking_loss: labels dtype bool",
  ),
  (
    losses.hinge_embedding_loss,
    (np.ones(3, np.int32), np.ones(3)),
    {},
    TypeError,
    r"^hinge_embedding_loss: distances dtype int32 is not a floating dtype",
  ),
  (
    losses.hinge_embedding_loss,
    (np.ones(3), np.ones(3)),
    {"margin": np.ones(2)},
    ValueError,
    r"^hinge_embedding_loss: margin shape \(2,\)",
  ),
  (
    losses.soft_margin_loss,
    (np.ones(3), np.ones(2)),
    {},
    ValueError,
    r"^soft_margin_loss: logits shape \(3,\), labels shape \(2,\) do not broadcast",
  ),
  (
    losses.soft_margin_loss,
    (np.ones(3), None),
    {},
    TypeError,
    r"^soft_margin_loss: labels is None",
  ),
]


@pytest.mark.parametrize("fn, args, kwargs, error, regex", OPTAX_ERRORS)
def test_optax_style_errors_name_their_argument(fn, args, kwargs, error, regex):
  with pytest.raises(error, match=regex):
    fn(*args, **kwargs)


def test_optax_style_hyperparameters_are_keyword_only():
  with pytest.raises(TypeError):
    losses.margin_ranking_loss(np.ones(2), np.ones(2), np.ones(2), 0.5)  # type: ignore[misc]
  with pytest.raises(TypeError):
    losses.hinge_embedding_loss(np.ones(2), np.ones(2), 0.5)  # type: ignore[misc]


# --- Flax modules -----------------------------------------------------------------------------

MODULES = [
  ("MarginRankingLoss", "margin_ranking_loss", {}),
  ("MarginRankingLoss", "margin_ranking_loss", {"margin": 0.5, "reduction": "none"}),
  ("MarginRankingLoss", "margin_ranking_loss", {"margin": -0.25, "reduction": "sum"}),
  ("HingeEmbeddingLoss", "hinge_embedding_loss", {}),
  ("HingeEmbeddingLoss", "hinge_embedding_loss", {"margin": 0.5, "reduction": "none"}),
  ("HingeEmbeddingLoss", "hinge_embedding_loss", {"margin": 2, "reduction": "sum"}),
  ("SoftMarginLoss", "soft_margin_loss", {}),
  ("SoftMarginLoss", "soft_margin_loss", {"reduction": "none"}),
  ("SoftMarginLoss", "soft_margin_loss", {"reduction": "sum"}),
]


@pytest.mark.parametrize("module, name, kwargs", MODULES)
def test_modules_equal_the_functions_and_torchs_modules(module, name, kwargs):
  args = arrays(name, np.random.default_rng(16), (4, 3), np.float64)
  expected = getattr(jaxmargin, name)(*args, **kwargs)
  np.testing.assert_array_equal(getattr(jm_nnx, module)(**kwargs)(*args), expected)
  np.testing.assert_array_equal(getattr(jm_linen, module)(**kwargs).apply({}, *args), expected)
  with torch.no_grad():
    torch_value = getattr(torch.nn, module)(**kwargs)(*map(to_torch, args)).numpy()
  np.testing.assert_allclose(expected, torch_value, rtol=1e-12)


@pytest.mark.parametrize("module", ["MarginRankingLoss", "HingeEmbeddingLoss", "SoftMarginLoss"])
def test_modules_validate_when_built(module):
  for flax_module in (jm_nnx, jm_linen):
    cls = getattr(flax_module, module)
    with pytest.raises(ValueError, match=f"^{module}: reduction: bogus is not a valid value"):
      cls(reduction="bogus")
    if module != "SoftMarginLoss":
      with pytest.raises(TypeError, match=f"^{module}: margin is 'a'"):
        cls(margin="a")
      with pytest.raises(ValueError, match=f"^{module}: margin shape"):
        cls(margin=np.ones(2))
    # The legacy arguments overrule the name, as in torch: no error then.
    with pytest.warns(UserWarning, match="reduction='none'"):
      built = cls(reduce=False, reduction="bogus")
      if flax_module is jm_linen:
        name = {
          "MarginRankingLoss": "margin_ranking_loss",
          "HingeEmbeddingLoss": "hinge_embedding_loss",
        }.get(module, "soft_margin_loss")
        args = arrays(name, np.random.default_rng(0), (3,), np.float64)
        assert built.apply({}, *args).shape == (3,)
    with pytest.raises(ValueError):
      getattr(torch.nn, module)(reduction="bogus")(
        *[torch.ones(3)] * (3 if module == "MarginRankingLoss" else 2)
      )


def test_nnx_module_in_a_jitted_training_step():
  rng = np.random.default_rng(17)
  features = jnp.asarray(rng.normal(size=(16, 3)))
  pairs = jnp.asarray(rng.normal(size=(16, 3)))
  y = jnp.asarray(labels(rng, (16,)))

  class Scorer(nnx.Module):
    def __init__(self, rngs):
      self.linear = nnx.Linear(3, 1, rngs=rngs)
      self.loss_fn = jm_nnx.MarginRankingLoss(margin=0.5)

  model = Scorer(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer):
    def loss(model):
      return model.loss_fn(model.linear(features)[:, 0], model.linear(pairs)[:, 0], y)

    value, grads = nnx.value_and_grad(loss)(model)
    optimizer.update(model, grads)
    return value

  values = [float(step(model, optimizer)) for _ in range(10)]
  assert values[-1] < values[0]
  assert len(nnx.state(model.loss_fn)) == 0  # no state: nothing to train or save


class _Verifier(nn.Module):
  @nn.compact
  def __call__(self, x1, x2, y):
    distance = jnp.sum(jnp.abs(nn.Dense(2)(x1) - nn.Dense(2)(x2)), axis=-1)
    return jm_linen.HingeEmbeddingLoss(margin=1.0)(distance, y)


def test_linen_module_inside_a_model_adds_no_variables():
  x = jnp.ones((4, 3))
  y = jnp.array([1, -1, 1, -1])
  variables = _Verifier().init(jax.random.key(0), x, x * 2, y)
  assert set(variables["params"]) == {"Dense_0", "Dense_1"}
  grads = jax.grad(lambda v: _Verifier().apply(v, x, x * 2, y))(variables)
  assert all(jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads))


# --- transformations --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_jit_with_static_reduction_and_vmap(name):
  args = arrays(name, np.random.default_rng(18), (6, 5), np.float64)
  fn = getattr(jaxmargin, name)
  for reduction in ("none", "mean"):
    jitted = jax.jit(fn, static_argnames=("reduction",))
    np.testing.assert_array_equal(
      jitted(*args, reduction=reduction), fn(*args, reduction=reduction)
    )
    # vmap over the rows: each row's own loss, as a loop of torch calls gives.
    mapped = jax.vmap(lambda *a, r=reduction: fn(*a, reduction=r, **MARGINS[name]))(*args)
    expected = np.stack(
      [
        torch_loss(name, *(a[i] for a in args), reduction=reduction, **MARGINS[name])
        for i in range(6)
      ]
    )
    np.testing.assert_allclose(mapped, expected, rtol=1e-12)


def _torch_hessian(name, args, count):
  def loss(*diff):
    rest = [to_torch(a) for a in args[count:]]
    return getattr(F, name)(*diff, *rest, **MARGINS[name])

  return torch_hessian(loss, tuple(to_torch(a) for a in args[:count]))


@pytest.mark.parametrize("name", NAMES)
def test_hessian_is_torchs_double_backward(name):
  # torch supports double backward for the three; for the ranking loss it is
  # the mixed derivatives with respect to the target (-1 and 1 where active).
  rng = np.random.default_rng(19)
  args = list(arrays(name, rng, (7,), np.float64))
  args[0] = args[0] + rng.normal(size=7) / 5  # off the grid: no exact ties
  count = 3 if name == "margin_ranking_loss" else 1
  expected = _torch_hessian(name, args, count)

  def loss(*diff):
    return getattr(jaxmargin, name)(*diff, *args[count:], **MARGINS[name])

  ours = jax.jit(jax.hessian(loss, argnums=tuple(range(count))))(*args[:count])
  for i in range(count):
    for j in range(count):
      np.testing.assert_allclose(ours[i][j], expected[i][j].numpy(), rtol=1e-10, atol=1e-15)
  # The hinge's second derivative is 0; the ranking loss's mixed terms and the
  # soft margin's curvature are not.
  assert np.any(np.asarray(ours[0][count - 1])) == (name != "hinge_embedding_loss")


@pytest.mark.parametrize("name", NAMES)
def test_forward_mode_equals_reverse_mode(name):
  args = arrays(name, np.random.default_rng(20), (4, 3), np.float64)
  count = 3 if name == "margin_ranking_loss" else 2

  def loss(*diff):
    return getattr(jaxmargin, name)(*diff, *args[count:], reduction="none", **MARGINS[name])

  forward = jax.jit(jax.jacfwd(loss, argnums=tuple(range(count))))(*args[:count])
  reverse = jax.jit(jax.jacrev(loss, argnums=tuple(range(count))))(*args[:count])
  for f, r in zip(forward, reverse, strict=True):
    np.testing.assert_allclose(f, r, rtol=1e-15, atol=0)


def test_forward_mode_matches_torchs_forward_ad():
  import torch.autograd.forward_ad as fwad

  rng = np.random.default_rng(21)
  for name in NAMES:
    args = arrays(name, rng, (6,), np.float64)
    tangent = rng.normal(size=6)
    with fwad.dual_level():
      dual = fwad.make_dual(to_torch(args[0]), to_torch(tangent))
      out = getattr(F, name)(dual, *map(to_torch, args[1:]), reduction="none", **MARGINS[name])
      tangent_out = fwad.unpack_dual(out).tangent
      assert tangent_out is not None
      expected = tangent_out.numpy()
    _, ours = jax.jvp(
      lambda x, n=name, a=args: getattr(jaxmargin, n)(x, *a[1:], reduction="none", **MARGINS[n]),
      (args[0],),
      (tangent,),
    )
    np.testing.assert_allclose(ours, expected, rtol=1e-12)


def test_checkify_finds_nothing_to_report():
  # These losses take any target values (as torch does): no value checks, and
  # checkify's own float checks pass on finite inputs.
  rng = np.random.default_rng(22)
  for name in NAMES:
    args = arrays(name, rng, (4, 3), np.float64)
    checked = checkify.checkify(
      jax.jit(getattr(jaxmargin, name)), errors=checkify.user_checks | checkify.float_checks
    )
    error, value = checked(*args)
    assert error.get() is None
    np.testing.assert_allclose(value, torch_loss(name, *args), rtol=1e-12)
