"""Driven by torch's own OpInfo inputs for the three ops, so the suite also
tests what its authors did not think of: every sample and reference input must
match torch (values and input gradients to 1e-9 in float64) and every error
input must raise at call time.
"""

from __future__ import annotations

import functools
import inspect
import re
import warnings

import numpy as np
import pytest
import torch

import jaxmargin
from jaxmargin import losses
from tests.oracle import LOSSES, assert_matches_torch, tolerance, torch_value_and_grads

with warnings.catch_warnings():
  warnings.simplefilter("ignore")
  from torch.testing._internal.common_methods_invocations import op_db

OPS = {op.name.removeprefix("nn.functional."): op for op in op_db
       if op.name.removeprefix("nn.functional.") in jaxmargin.functional.__all__}


def _numpy(value):
  if isinstance(value, torch.nn.PairwiseDistance):
    # triplet_margin_with_distance_loss's samples pass torch's distance module:
    # ours is the same distance in JAX.
    return functools.partial(jaxmargin.pairwise_distance, p=value.norm, eps=value.eps,
                             keepdim=value.keepdim)
  return value.detach().numpy().copy() if isinstance(value, torch.Tensor) else value


def _collect(kind, dtype):
  torch.manual_seed(0)
  cases = []
  for name, op in sorted(OPS.items()):
    for index, sample in enumerate(getattr(op, kind)("cpu", dtype, requires_grad=True)):
      cases.append(pytest.param(name, sample, id=f"{name}-{index}"))
  return cases


def test_all_three_ops_are_in_torchs_database():
  assert sorted(OPS) == sorted(jaxmargin.functional.__all__)


def _check_sample(name, sample):
  x = _numpy(sample.input)
  args = [_numpy(a) for a in sample.args]
  kwargs = {k: _numpy(a) for k, a in sample.kwargs.items()}
  assert_matches_torch(name, x, *args, **kwargs)


@pytest.mark.parametrize("name, sample", _collect("sample_inputs", torch.float64))
def test_sample_inputs_match_torch(name, sample):
  _check_sample(name, sample)


@pytest.mark.parametrize("name, sample", _collect("reference_inputs", torch.float64))
def test_reference_inputs_match_torch(name, sample):
  _check_sample(name, sample)


@pytest.mark.parametrize("name, sample", _collect("sample_inputs", torch.float32))
def test_float32_sample_inputs_match_torch(name, sample):
  _check_sample(name, sample)


def _error_cases():
  cases = []
  for name, op in sorted(OPS.items()):
    if op.error_inputs_func is None:
      continue
    for index, error in enumerate(op.error_inputs("cpu")):
      cases.append(pytest.param(name, error, id=f"{name}-{index}"))
  return cases


ERROR_CASES = _error_cases()


def test_error_inputs_exist_for_the_hinge_losses():
  names = {case.values[0] for case in ERROR_CASES}
  assert {"multi_margin_loss", "multilabel_margin_loss"} <= names


# Every argument name of the functions: an error message must name one.
ARGUMENT_NAMES = r"\b(" + "|".join(sorted({
    param for name in OPS for param in inspect.signature(getattr(jaxmargin, name)).parameters
})) + r")\b"


@pytest.mark.parametrize("name, error", ERROR_CASES)
def test_error_inputs_raise(name, error):
  sample = error.sample_input
  # torch raises RuntimeError for most of these; we raise TypeError for a
  # wrong dtype ("expected scalar type ...") and ValueError for the rest.
  expected = TypeError if "scalar type" in error.error_regex else ValueError
  with pytest.raises(expected) as raised:
    getattr(jaxmargin, name)(_numpy(sample.input), *[_numpy(a) for a in sample.args],
                             **{k: _numpy(a) for k, a in sample.kwargs.items()})
  message = str(raised.value)
  assert message.startswith(f"{name}: ") or re.search(error.error_regex, message), message
  # The message names the argument it is about.
  assert re.search(ARGUMENT_NAMES, message), message


# The ops that came after the first three (whose jit parity is in
# tests/test_parity_torch.py): their OpInfo samples also run under jax.jit.
LATER_OPS = sorted(set(OPS) - set(LOSSES))


def _later(cases):
  return [case for case in cases if case.values[0] in LATER_OPS]


@pytest.mark.parametrize("name, sample", _later(_collect("sample_inputs", torch.float64)))
def test_sample_inputs_match_torch_under_jit(name, sample):
  x = _numpy(sample.input)
  args = [_numpy(a) for a in sample.args]
  kwargs = {k: _numpy(a) for k, a in sample.kwargs.items()}
  assert_matches_torch(name, x, *args, jit=True, **kwargs)


# The Optax-style twins: one loss per element (pairwise) or per example
# (embedding), torch's reduction='none', with the hyperparameters they share.
OPTAX_TWINS = {name: getattr(losses, name) for name in LATER_OPS if name in losses.__all__}
SHARED_HYPERPARAMETERS = ("margin", "p", "eps", "swap")


@pytest.mark.parametrize(
    "name, sample",
    [case for case in _collect("sample_inputs", torch.float64) if case.values[0] in OPTAX_TWINS])
def test_sample_inputs_through_the_optax_style_losses(name, sample):
  kwargs = {k: _numpy(a) for k, a in sample.kwargs.items()}
  if kwargs.get("size_average") is not None or kwargs.get("reduce") is not None:
    pytest.skip("legacy reduction arguments: torch-compatible API only")
  arrays = [_numpy(sample.input), *[_numpy(a) for a in sample.args]]
  hyper = {k: v for k, v in kwargs.items() if k in SHARED_HYPERPARAMETERS}
  expected, _ = torch_value_and_grads(name, *arrays, **hyper, reduction="none")
  got = OPTAX_TWINS[name](*arrays, **hyper)
  assert got.shape == expected.shape, (got.shape, expected.shape)
  np.testing.assert_allclose(np.asarray(got), expected, equal_nan=True, **tolerance(np.float64))
