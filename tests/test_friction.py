"""What a new user tripped over: clear errors for bad hyperparameters, early module checks,
lists, soft multi-hot labels, jit's static arguments, and torch's rounding of mixed dtypes."""

from __future__ import annotations

import itertools
import pathlib
import re
import warnings

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import linen as nn
from jax.experimental import checkify

import jaxmargin
from jaxmargin import linear, losses
from jaxmargin import linen as jm_linen
from jaxmargin import nnx as jm_nnx

ROOT = pathlib.Path(__file__).resolve().parents[1]
X = np.array([[0.1, 0.2, 0.4, 0.8], [0.9, -0.3, 0.1, 0.0]])
CLASSES = np.array([3, 0])
PADDED = np.array([[3, 0, -1, 1], [2, -1, 0, 0]])
MULTI_HOT = np.array([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
LISTS = np.array([[3, 0], [2, -1]])
FEATURES, KERNEL = np.eye(2, 3), np.arange(12.0).reshape(3, 4) / 10


def torch_error(call):
  """The exception torch raises for ``call``."""
  with pytest.raises(Exception) as raised:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      call()
  return raised.value


# --- 1. hyperparameters that are None or not arrays ------------------------


def test_margin_none_is_a_type_error_naming_margin_as_in_torch():
  with pytest.raises(TypeError) as raised:
    jaxmargin.multi_margin_loss(X, CLASSES, margin=None)
  assert str(raised.value) == ("multi_margin_loss: margin is None; expected a real number "
                               "or a scalar array")
  assert isinstance(torch_error(lambda: F.multi_margin_loss(
      torch.tensor(X), torch.tensor(CLASSES), margin=None)), TypeError)


# (call, error, the start of its message)
BAD_HYPERPARAMETERS = [
    (lambda: jaxmargin.multi_margin_loss(X, CLASSES, margin="1"), TypeError,
     "multi_margin_loss: margin is '1'; expected a real number"),
    (lambda: jaxmargin.multi_margin_loss(X, CLASSES, weight="abc"), TypeError,
     "multi_margin_loss: weight is 'abc'; expected None or a (C,) array"),
    (lambda: jaxmargin.multi_margin_loss(X, CLASSES, weight=object()), TypeError,
     "multi_margin_loss: weight is <object object"),
    (lambda: jaxmargin.multi_margin_loss(X, CLASSES, p=None), ValueError,
     "multi_margin_loss: p is None; expected 1 or 2"),
    (lambda: jaxmargin.multi_margin_loss(X, None), TypeError,
     "multi_margin_loss: target is None; expected an integer array"),
    (lambda: jaxmargin.multilabel_margin_loss(None, PADDED), TypeError,
     "multilabel_margin_loss: input is None; expected a floating array"),
    (lambda: jaxmargin.multilabel_soft_margin_loss(X, MULTI_HOT, weight="abc"), TypeError,
     "multilabel_soft_margin_loss: weight is 'abc'; expected an array of real numbers"),
    (lambda: jaxmargin.multilabel_soft_margin_loss(X, None), TypeError,
     "multilabel_soft_margin_loss: target is None"),
    (lambda: losses.multiclass_margin_loss(X, CLASSES, margin=None), TypeError,
     "multiclass_margin_loss: margin is None; expected a real number"),
    (lambda: losses.multiclass_margin_loss(X, CLASSES, class_weights="abc"), TypeError,
     "multiclass_margin_loss: class_weights is 'abc'; expected an array of numbers or None"),
    (lambda: losses.multiclass_margin_loss(X, CLASSES, axis=None), TypeError,
     "multiclass_margin_loss: axis is None; expected an int"),
    (lambda: losses.multilabel_margin_loss(X, MULTI_HOT, margin=None), TypeError,
     "multilabel_margin_loss: margin is None"),
    (lambda: losses.multilabel_margin_loss(X, MULTI_HOT, where="all"), TypeError,
     "multilabel_margin_loss: where is 'all'"),
    (lambda: losses.multilabel_soft_margin_loss(X, MULTI_HOT, class_weights="abc"),
     TypeError, "multilabel_soft_margin_loss: class_weights is 'abc'"),
    (lambda: losses.multilabel_soft_margin_loss(X, MULTI_HOT, axis=1.0), TypeError,
     "multilabel_soft_margin_loss: axis is 1.0; expected an int"),
    (lambda: linear.multi_margin_loss(FEATURES, KERNEL, CLASSES, margin=None), TypeError,
     "multi_margin_loss: margin is None"),
    (lambda: linear.multi_margin_loss(FEATURES, KERNEL, CLASSES, class_weights="x"),
     TypeError, "multi_margin_loss: class_weights is 'x'"),
    (lambda: linear.multilabel_margin_loss(FEATURES, KERNEL, LISTS, margin=None), TypeError,
     "multilabel_margin_loss: margin is None"),
    (lambda: linear.multilabel_soft_margin_loss(FEATURES, KERNEL, LISTS, bias="x"),
     TypeError, "multilabel_soft_margin_loss: bias is 'x'"),
    (lambda: linear.top_k(FEATURES, None, 2), TypeError, "top_k: kernel is None"),
]


@pytest.mark.parametrize("call, error, message", BAD_HYPERPARAMETERS)
def test_bad_hyperparameters_name_the_argument(call, error, message):
  with pytest.raises(error) as raised:
    call()
  assert str(raised.value).startswith(message), str(raised.value)


def test_torch_raises_the_same_error_types_where_it_checks():
  x, y = torch.tensor(X), torch.tensor(CLASSES)
  assert isinstance(torch_error(lambda: F.multi_margin_loss(x, y, margin="1")), TypeError)
  assert isinstance(torch_error(lambda: F.multi_margin_loss(x, y, p=None)), ValueError)


# --- 2. the Flax modules check their configuration when built ---------------


MODULE_ERRORS = [
    ("MultiLabelMarginLoss", {"reduction": "avg"}, ValueError,
     "MultiLabelMarginLoss: reduction: avg is not a valid value for reduction; "
     "expected 'none', 'mean' or 'sum'"),
    ("MultiMarginLoss", {"reduction": "avg"}, ValueError,
     "MultiMarginLoss: reduction: avg is not a valid value for reduction; "
     "expected 'none', 'mean' or 'sum'"),
    ("MultiLabelSoftMarginLoss", {"reduction": "elementwise_mean"}, ValueError,
     "MultiLabelSoftMarginLoss: reduction: elementwise_mean is not valid; "
     "expected 'none', 'mean' or 'sum'"),
    ("MultiMarginLoss", {"weight": np.ones((2, 2))}, ValueError,
     "MultiMarginLoss: weight shape (2, 2) is not one-dimensional; expected (C,)"),
    ("MultiMarginLoss", {"weight": np.ones(0)}, ValueError,
     "MultiMarginLoss: weight shape (0,) has no class; expected (C,) with C >= 1"),
    ("MultiMarginLoss", {"weight": np.ones(4, bool)}, TypeError,
     "MultiMarginLoss: weight dtype bool is not a real number dtype"),
    ("MultiMarginLoss", {"margin": None}, TypeError,
     "MultiMarginLoss: margin is None; expected a real number or a scalar array"),
    ("MultiLabelSoftMarginLoss", {"weight": "abc"}, TypeError,
     "MultiLabelSoftMarginLoss: weight is 'abc'; expected an array of real numbers"),
]


@pytest.mark.parametrize("module", [jm_nnx, jm_linen], ids=["nnx", "linen"])
@pytest.mark.parametrize("name, kwargs, error, message", MODULE_ERRORS)
def test_modules_reject_a_bad_configuration_when_built(module, name, kwargs, error, message):
  with pytest.raises(error) as raised:
    getattr(module, name)(**kwargs)
  assert str(raised.value).startswith(message), str(raised.value)


@pytest.mark.parametrize("module", [jm_nnx, jm_linen], ids=["nnx", "linen"])
def test_modules_accept_what_torch_accepts_when_built(module):
  # The deprecated alias of the C++-backed losses, legacy arguments that
  # override the name (as in torch), and a weight whose length only the call
  # can check (a soft margin weight of any shape that broadcasts).
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # NNX warns of legacy arguments when built, linen when called
    loss = module.MultiMarginLoss(reduction="elementwise_mean")
    module.MultiLabelMarginLoss(reduction="avg", reduce=False)
  module.MultiLabelSoftMarginLoss(weight=np.ones((2, 4)))
  wrong_length = module.MultiMarginLoss(weight=np.ones(3))
  x, y = jnp.asarray(X), jnp.asarray(CLASSES)
  with pytest.warns(UserWarning, match="elementwise_mean"):
    value = loss(x, y) if module is jm_nnx else loss.apply({}, x, y)
  assert value == jaxmargin.multi_margin_loss(x, y)
  with pytest.raises(ValueError, match=r"weight shape \(3,\) does not match the 4 classes"):
    wrong_length(x, y) if module is jm_nnx else wrong_length.apply({}, x, y)


def test_linen_checks_run_inside_a_model_and_keep_flax_setup():
  class Model(nn.Module):
    @nn.compact
    def __call__(self, x, y):
      return jm_linen.MultiMarginLoss(margin=0.5)(nn.Dense(4)(x), y)

  variables = Model().init(jax.random.key(0), jnp.asarray(X), jnp.asarray(CLASSES))
  assert jnp.isfinite(Model().apply(variables, jnp.asarray(X), jnp.asarray(CLASSES)))


# --- 3. reduction errors: torch's words, after the function and the argument -


@pytest.mark.parametrize("name, target", [
    ("multilabel_margin_loss", PADDED), ("multi_margin_loss", CLASSES),
    ("multilabel_soft_margin_loss", MULTI_HOT)])
def test_reduction_error_keeps_torchs_words_and_names_the_argument(name, target):
  with pytest.raises(ValueError) as raised:
    getattr(jaxmargin, name)(X, target, reduction="avg")
  ours = str(raised.value)
  theirs = str(torch_error(lambda: getattr(F, name)(
      torch.tensor(X), torch.tensor(target), reduction="avg")))
  assert ours == f"{name}: reduction: {theirs}; expected 'none', 'mean' or 'sum'"


# --- 4. Python lists --------------------------------------------------------


def test_lists_give_the_arrays_results_without_jax_deprecation_warnings():
  x, hot, classes = X.tolist(), MULTI_HOT.astype(int).tolist(), CLASSES.tolist()
  weights = [1.0, 2.0, 0.5, 1.0]
  calls = [
      (lambda a: losses.multiclass_margin_loss(*a, class_weights=weights,
                                               where=[[True] * 4, [True, False, True, True]]),
       (x, classes)),
      (lambda a: losses.multilabel_margin_loss(*a, margin=0.5), (x, hot)),
      (lambda a: losses.multilabel_soft_margin_loss(*a, class_weights=weights), (x, hot)),
      (lambda a: losses.multi_hot_to_padded(a[0]), (hot,)),
      (lambda a: losses.multi_hot_to_label_list(a[0], max_labels=2), (hot,)),
      (lambda a: linear.multi_margin_loss(*a, bias=[0.0] * 4, class_weights=weights),
       (FEATURES.tolist(), KERNEL.tolist(), classes)),
      (lambda a: linear.multilabel_margin_loss(*a), (FEATURES.tolist(), KERNEL.tolist(),
                                                     LISTS.tolist())),
      (lambda a: jaxmargin.multi_margin_loss(*a, weight=weights), (x, classes)),
  ]
  for call, args in calls:
    with warnings.catch_warnings():
      warnings.simplefilter("error", DeprecationWarning)
      from_lists = call(args)
    from_arrays = call(tuple(np.asarray(a) for a in args))
    np.testing.assert_array_equal(from_lists, from_arrays)


# --- 5. multi-hot converters reject values other than 0 and 1 ---------------


@pytest.mark.parametrize("bad", [0.9, -1, 2, np.nan])
def test_multi_hot_to_padded_rejects_values_other_than_0_and_1(bad):
  labels = MULTI_HOT.copy()
  labels[1, 3] = bad
  with pytest.raises(ValueError, match="multi_hot_to_padded: labels values must be 0 or 1"):
    losses.multi_hot_to_padded(labels)
  with pytest.raises(ValueError, match="multi_hot_to_label_list: labels values must be 0 or 1"):
    losses.multi_hot_to_label_list(labels, max_labels=3)
  # Under jit: a checkify check, as for the losses' targets.
  err, _ = checkify.checkify(jax.jit(losses.multi_hot_to_padded))(jnp.asarray(labels))
  assert "labels values must be 0 or 1" in err.get()


@pytest.mark.parametrize("dtype", [bool, np.int8, np.float32, np.float64])
def test_multi_hot_to_padded_takes_0_and_1_of_any_dtype(dtype):
  np.testing.assert_array_equal(losses.multi_hot_to_padded(MULTI_HOT.astype(dtype)),
                                [[0, 3, -1, -1], [1, 2, -1, -1]])
  err, _ = checkify.checkify(jax.jit(losses.multi_hot_to_padded))(MULTI_HOT.astype(dtype))
  assert err.get() is None


def test_the_other_converters_check_their_label_values():
  for call in (lambda: losses.label_list_to_multi_hot(np.array([[0, 5]]), num_classes=4),
               lambda: losses.label_list_to_padded(np.array([[0, -2]]), num_classes=4),
               lambda: losses.padded_to_multi_hot(np.array([[0, 4, -1, -1]])),
               lambda: losses.padded_to_label_list(np.array([[0, 4, -1, -1]]), max_labels=2)):
    with pytest.raises(ValueError, match="values must lie in"):
      call()


# --- 6. jax.jit with the static arguments the docs give ---------------------

_JIT_WITH_STATIC = re.compile(
    r"jax\.jit\(jaxmargin\.(\w+), static_argnames=\(((?:\s*\"\w+\",?)+)\)\)")


def documented_static_argnames() -> dict[str, tuple[str, ...]]:
  """``jax.jit(jaxmargin.<loss>, static_argnames=(...))`` as the README and docs write it."""
  found = {}
  for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
    for name, names in _JIT_WITH_STATIC.findall(page.read_text()):
      found.setdefault(name, set()).add(tuple(re.findall(r"\w+", names)))
  return {name: next(iter(sets)) for name, sets in found.items() if len(sets) == 1}


# Each loss's call with every static argument away from its default.
JIT_CALLS = {
    "multilabel_margin_loss": ((X, PADDED), {"reduction": "none"}),
    "multi_margin_loss": ((X, CLASSES), {"p": 2, "margin": 0.5, "weight": np.arange(4.0),
                                         "reduction": "sum"}),
    "multilabel_soft_margin_loss": ((X, MULTI_HOT), {"weight": np.arange(4.0),
                                                     "reduction": "none"}),
}


def test_the_docs_give_static_argnames_for_every_torch_compatible_loss():
  assert set(documented_static_argnames()) == set(JIT_CALLS)


@pytest.mark.parametrize("name", sorted(JIT_CALLS))
def test_jit_with_the_documented_static_argnames_runs_and_equals_eager(name):
  fn = getattr(jaxmargin, name)
  (x, target), kwargs = JIT_CALLS[name]
  jitted = jax.jit(fn, static_argnames=documented_static_argnames()[name])
  np.testing.assert_allclose(jitted(x, target, **kwargs), fn(x, target, **kwargs),
                             rtol=1e-12)


def test_a_traced_p_is_a_type_error_that_says_to_make_it_static():
  for call in (lambda p: jaxmargin.multi_margin_loss(X, CLASSES, p=p),
               lambda p: losses.multiclass_margin_loss(X, CLASSES, p=p),
               lambda p: linear.multi_margin_loss(FEATURES, KERNEL, CLASSES, p=p)):
    with pytest.raises(TypeError, match=r"p is a traced value .*static_argnames"):
      jax.jit(call)(2)


# --- 7. mixed float dtypes round as in torch --------------------------------

FLOATS = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32,
          "float64": np.float64}
TORCH_FLOATS = {"float16": torch.float16, "bfloat16": torch.bfloat16,
                "float32": torch.float32, "float64": torch.float64}
# Relative to the largest value, per dtype. For a float32 or float64 input we
# follow torch's order of roundings, so only the log-sigmoids' implementations
# differ, in the input's dtype: a few units in its last place (float64 is
# tight: promoting the target before ``1 - target`` would be 1e-8 away). A
# half input we compute in float32 with its target and weight, where torch
# rounds every step to the half types: the lowest of the three dtypes counts.
MIXED_RTOL = {"float16": 4 * 2.0**-11, "bfloat16": 4 * 2.0**-8, "float32": 1e-6,
              "float64": 1e-13}


def mixed_rtol(input_dtype, *other_dtypes):
  if input_dtype in ("float32", "float64"):
    return MIXED_RTOL[input_dtype]
  return max(MIXED_RTOL[d] for d in (input_dtype, *other_dtypes) if d is not None)


def _torch_tensor(values, dtype_name):
  return torch.tensor(np.asarray(values, np.float64)).to(TORCH_FLOATS[dtype_name])


def _ours_value_and_grad(fn, x, cotangent):
  value, vjp = jax.vjp(fn, jnp.asarray(x))
  (grad,) = vjp(jnp.asarray(cotangent, value.dtype))
  return np.asarray(value, np.float64), np.asarray(grad, np.float64), value.dtype


def _assert_close(ours, theirs, rtol):
  scale = max(np.max(np.abs(theirs)), 1e-30)
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("input_dtype", FLOATS)
def test_soft_margin_mixed_dtypes_match_torch_for_every_combination(input_dtype):
  rng = np.random.default_rng(list(FLOATS).index(input_dtype))
  x = (rng.normal(size=(5, 7)) * 3).astype(FLOATS[input_dtype])
  targets, weights = rng.random((5, 7)), rng.random(7) * 2
  cotangent = 1.0 + np.arange(5) % 3
  for target_dtype, weight_dtype in itertools.product(FLOATS, [None, *FLOATS]):
    t = targets.astype(FLOATS[target_dtype])
    w = None if weight_dtype is None else weights.astype(FLOATS[weight_dtype])
    xt = _torch_tensor(x, input_dtype).requires_grad_(True)
    ref = F.multilabel_soft_margin_loss(
        xt, _torch_tensor(t, target_dtype),
        weight=None if w is None else _torch_tensor(w, weight_dtype), reduction="none")
    ref.backward(torch.tensor(cotangent).to(ref.dtype))
    value, grad, dtype = _ours_value_and_grad(
        lambda x: jaxmargin.multilabel_soft_margin_loss(x, t, weight=w, reduction="none"),
        x, cotangent)
    case = (input_dtype, target_dtype, weight_dtype)
    assert str(dtype) == str(ref.dtype).removeprefix("torch."), case
    rtol = mixed_rtol(input_dtype, target_dtype, weight_dtype)
    _assert_close(value, ref.detach().double().numpy(), rtol)
    _assert_close(grad, xt.grad.double().numpy(), rtol)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_soft_margin_float64_input_with_float32_target_is_torchs_to_the_last_bits(reduction):
  # The new user's case: torch computes 1 - target in float32.
  rng = np.random.default_rng(3)
  x, t = rng.normal(size=(8, 6)) * 2, rng.random((8, 6)).astype(np.float32)
  w = rng.random(6).astype(np.float32)
  ref = F.multilabel_soft_margin_loss(torch.tensor(x), torch.tensor(t), weight=torch.tensor(w),
                                      reduction=reduction).item()
  ours = float(jaxmargin.multilabel_soft_margin_loss(x, t, weight=w, reduction=reduction))
  promoted_first = float(jaxmargin.multilabel_soft_margin_loss(
      x, t.astype(np.float64), weight=w.astype(np.float64), reduction=reduction))
  assert abs(promoted_first - ref) > 1e-10  # the effect this test is about
  assert ours == pytest.approx(ref, rel=1e-14, abs=0)


def test_optax_soft_margin_rounds_mixed_dtypes_as_its_torch_compatible_twin():
  rng = np.random.default_rng(4)
  x, t = rng.normal(size=(6, 5)), rng.random((6, 5)).astype(ml_dtypes.bfloat16)
  np.testing.assert_array_equal(
      losses.multilabel_soft_margin_loss(x, t),
      jaxmargin.multilabel_soft_margin_loss(x, t, reduction="none"))


@pytest.mark.parametrize("input_dtype, weight_dtype", list(itertools.product(FLOATS, FLOATS)))
def test_multi_margin_weight_of_any_float_dtype_is_used_in_the_input_dtype(input_dtype,
                                                                           weight_dtype):
  # torch's kernel requires the weight in the input's dtype (and has no half
  # types on CPU): the reference is torch with the weight cast to the input's
  # dtype, and for half inputs torch's float32 on the half-rounded scores
  # (half inputs are computed in float32, the weight too).
  rng = np.random.default_rng(5)
  x = (rng.normal(size=(6, 5)) * 2).astype(FLOATS[input_dtype])
  w = (rng.random(5) * 2).astype(FLOATS[weight_dtype])
  y = rng.integers(0, 5, size=6)
  reference_dtype = "float64" if input_dtype == "float64" else "float32"
  cotangent = 1.0 + np.arange(6) % 3
  for p in (1, 2):
    xt = _torch_tensor(x, reference_dtype).requires_grad_(True)
    ref = F.multi_margin_loss(xt, torch.tensor(y), p=p, reduction="none",
                              weight=_torch_tensor(w, weight_dtype).to(xt.dtype))
    ref.backward(torch.tensor(cotangent).to(ref.dtype))
    value, grad, dtype = _ours_value_and_grad(
        lambda x: jaxmargin.multi_margin_loss(x, y, p=p, weight=w, reduction="none"),
        x, cotangent)
    assert str(dtype) == input_dtype
    rtol = MIXED_RTOL[input_dtype]
    _assert_close(value, ref.detach().double().numpy(), rtol)
    _assert_close(grad, xt.grad.double().numpy(), rtol)
