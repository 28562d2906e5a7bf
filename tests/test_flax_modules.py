"""The Flax NNX and linen loss modules: same numbers as the functions, Flax-native state."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

import jaxmargin
from jaxmargin import linen as jm_linen
from jaxmargin import nnx as jm_nnx

X = jnp.array([[0.1, 0.2, 0.4, 0.8], [0.5, -0.3, 0.9, 0.0]])
PADDED = jnp.array([[3, 0, -1, 1], [2, -1, 0, 0]])
CLASSES = jnp.array([3, 1])
MULTI_HOT = jnp.array([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
WEIGHT = jnp.array([0.5, 1.0, 2.0, 1.5])

# (module name, constructor kwargs, target, the function and its kwargs)
CASES = [
    ("MultiLabelMarginLoss", {}, PADDED, jaxmargin.multilabel_margin_loss, {}),
    ("MultiLabelMarginLoss", {"reduction": "none"}, PADDED,
     jaxmargin.multilabel_margin_loss, {"reduction": "none"}),
    ("MultiMarginLoss", {"p": 2, "margin": 0.7, "weight": WEIGHT}, CLASSES,
     jaxmargin.multi_margin_loss, {"p": 2, "margin": 0.7, "weight": WEIGHT}),
    ("MultiMarginLoss", {"reduction": "sum"}, CLASSES, jaxmargin.multi_margin_loss,
     {"reduction": "sum"}),
    ("MultiLabelSoftMarginLoss", {"weight": WEIGHT}, MULTI_HOT,
     jaxmargin.multilabel_soft_margin_loss, {"weight": WEIGHT}),
]


@pytest.mark.parametrize("name, kwargs, target, fn, fn_kwargs", CASES)
def test_nnx_and_linen_modules_equal_the_functions(name, kwargs, target, fn, fn_kwargs):
  expected = fn(X, target, **fn_kwargs)
  np.testing.assert_array_equal(getattr(jm_nnx, name)(**kwargs)(X, target), expected)
  np.testing.assert_array_equal(getattr(jm_linen, name)(**kwargs).apply({}, X, target),
                                expected)


@pytest.mark.parametrize("module", [jm_nnx, jm_linen])
def test_legacy_arguments_warn_and_set_the_reduction(module):
  with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
    loss = module.MultiMarginLoss(reduce=False)
    out = loss(X, CLASSES) if module is jm_nnx else loss.apply({}, X, CLASSES)
  assert out.shape == (2,)


def test_nnx_rejects_bad_p_and_weight_when_built_like_torch():
  with pytest.raises(ValueError, match="p is 3"):
    jm_nnx.MultiMarginLoss(p=3)
  with pytest.raises(ValueError, match=r"weight shape \(2, 2\)"):
    jm_nnx.MultiMarginLoss(weight=jnp.ones((2, 2)))
  with pytest.raises(ValueError, match="p is 3"):
    jm_linen.MultiMarginLoss(p=3)


class _Classifier(nnx.Module):
  """A linear model that owns its loss, as users write them."""

  def __init__(self, rngs):
    self.linear = nnx.Linear(3, 4, rngs=rngs)
    self.loss_fn = jm_nnx.MultiMarginLoss(weight=WEIGHT)

  def __call__(self, x):
    return self.linear(x)


def test_nnx_weight_is_state_but_not_a_param():
  model = _Classifier(nnx.Rngs(0))
  assert isinstance(model.loss_fn.weight, jm_nnx.LossWeight)
  everything = nnx.state(model)
  params = nnx.state(model, nnx.Param)
  assert "weight" in everything["loss_fn"]
  assert "loss_fn" not in params
  np.testing.assert_array_equal(everything["loss_fn"]["weight"][...], WEIGHT)


def test_nnx_optimizer_trains_params_and_never_touches_the_weight():
  model = _Classifier(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
  features = jnp.asarray(np.random.default_rng(0).normal(size=(8, 3)), jnp.float32)
  labels = jnp.arange(8) % 4

  @nnx.jit
  def train_step(model, optimizer, features, labels):
    def loss(model):
      return model.loss_fn(model(features), labels)
    value, grads = nnx.value_and_grad(loss)(model)
    optimizer.update(model, grads)
    return value

  kernel_before = model.linear.kernel[...].copy()
  losses = [float(train_step(model, optimizer, features, labels)) for _ in range(5)]
  assert losses[-1] < losses[0]
  assert not np.array_equal(model.linear.kernel[...], kernel_before)
  np.testing.assert_array_equal(model.loss_fn.weight[...], WEIGHT)


def test_nnx_loss_module_passes_into_a_jitted_step_and_its_state_restores():
  loss_fn = jm_nnx.MultiLabelSoftMarginLoss(weight=WEIGHT)

  @nnx.jit
  def evaluate(loss_fn, x, y):
    return loss_fn(x, y)
  expected = jaxmargin.multilabel_soft_margin_loss(X, MULTI_HOT, weight=WEIGHT)
  np.testing.assert_allclose(evaluate(loss_fn, X, MULTI_HOT), expected, rtol=1e-6)

  restored = jm_nnx.MultiLabelSoftMarginLoss(weight=jnp.zeros(4))
  nnx.update(restored, nnx.state(loss_fn))
  np.testing.assert_array_equal(restored.weight[...], WEIGHT)
  np.testing.assert_allclose(restored(X, MULTI_HOT), expected, rtol=1e-6)


class _LinenTagger(nn.Module):
  """A linen model that computes its own loss with a loss submodule."""

  @nn.compact
  def __call__(self, x, target):
    scores = nn.Dense(4)(x)
    return jm_linen.MultiLabelMarginLoss()(scores, target)


def test_linen_module_inside_a_model_adds_no_variables_and_differentiates():
  model = _LinenTagger()
  features = jnp.ones((2, 3))
  variables = model.init(jax.random.key(0), features, PADDED)
  assert set(variables) == {"params"} and set(variables["params"]) == {"Dense_0"}
  assert jm_linen.MultiMarginLoss().init(jax.random.key(0), X, CLASSES) == {}
  grads = jax.grad(lambda v: model.apply(v, features, PADDED))(variables)
  assert jnp.all(jnp.isfinite(grads["params"]["Dense_0"]["kernel"]))


def test_modules_import_flax_only_when_asked_for():
  import subprocess
  import sys
  code = ("import sys, jaxmargin, jaxmargin.losses; "
          "assert 'flax' not in sys.modules and 'optax' not in sys.modules; "
          "import jaxmargin.nnx; assert 'flax' in sys.modules")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_no_warning_without_legacy_arguments():
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    jm_nnx.MultiLabelMarginLoss()(X, PADDED)
    jm_linen.MultiLabelMarginLoss().apply({}, X, PADDED)
