"""Driven by torch's own OpInfo inputs for the three ops, so the suite also
tests what its authors did not think of: every sample and reference input must
match torch (values and input gradients to 1e-9 in float64) and every error
input must raise at call time. (Of the full product of options among
multi_margin_loss's reference inputs, every pair of option values: see
REFERENCE_PRODUCTS.)
"""

from __future__ import annotations

import functools
import inspect
import itertools
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


def _multi_margin_options(sample):
  kwargs = sample.kwargs
  return ((tuple(sample.input.shape), tuple(sample.args[0].shape)), kwargs["p"],
          kwargs["margin"], kwargs["weight"] is None, kwargs.get("reduction", "default"))


# The ops whose reference inputs, after their samples, are the full product of
# a few options, each with a function giving a reference input's options.
# multi_margin_loss's product is 4 inputs (0-D, 1-D with either target shape,
# 2-D) x p x 3 margins x weight or none x 4 reductions (the default and the
# three): 192 inputs, 96 compilations (one per input, p, margin type, weight
# and reduction). The test takes every sample and, of the product, a set in
# which every pair of values of any two options occurs (17 inputs). The
# product's other combinations repeat those paths; tests/test_parity_torch.py
# also crosses p and weight with every shape, and with ties and special values.
REFERENCE_PRODUCTS = {"multi_margin_loss": _multi_margin_options}


def _all_pairs(options):
  """Indices of a subset of ``options`` (tuples) with every pair of any two values.

  Greedy: each next the tuple with the most pairs not yet covered (the first
  such), until every pair that occurs is covered.
  """
  pairs = [set(itertools.combinations(enumerate(o), 2)) for o in options]
  wanted = set().union(*pairs)
  covered, kept = set(), []
  while covered != wanted:
    best = max(range(len(options)), key=lambda i: (len(pairs[i] - covered), -i))
    covered |= pairs[best]
    kept.append(best)
  return sorted(kept)


def _collect(kind, dtype):
  torch.manual_seed(0)
  cases = []
  for name, op in sorted(OPS.items()):
    indexed = list(enumerate(getattr(op, kind)("cpu", dtype, requires_grad=True)))
    if kind == "reference_inputs" and name in REFERENCE_PRODUCTS:
      # torch seeds each sample: the kept ones are the same whatever else is kept.
      first = sum(1 for _ in op.sample_inputs("cpu", dtype))
      product = indexed[first:]
      options = [REFERENCE_PRODUCTS[name](sample) for _, sample in product]
      indexed = indexed[:first] + [product[i] for i in _all_pairs(options)]
    for index, sample in indexed:
      cases.append(pytest.param(name, sample, id=f"{name}-{index}"))
  return cases


def test_all_three_ops_are_in_torchs_database():
  assert sorted(OPS) == sorted(jaxmargin.functional.__all__)


def _check_sample(name, sample):
  x = _numpy(sample.input)
  args = [_numpy(a) for a in sample.args]
  kwargs = {k: _numpy(a) for k, a in sample.kwargs.items()}
  assert_matches_torch(name, x, *args, **kwargs)


def _same(a, b):
  """Whether two sample arguments are equal: tensors in dtype, shape and value (NaN too)."""
  if isinstance(a, torch.Tensor):
    return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
            and bool(torch.equal(a.isnan(), b.isnan())) and bool(torch.equal(
                a.detach().nan_to_num(), b.detach().nan_to_num())))
  if isinstance(a, (list, tuple)):
    return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
  if isinstance(a, dict):
    return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
  if isinstance(a, torch.nn.Module):
    return type(a) is type(b) and vars(a) == vars(b)
  return a == b


def test_reference_inputs_begin_with_the_sample_inputs():
  # So in float64 the reference inputs' test runs every sample input too, and
  # the sample inputs need no float64 test of their own. torch seeds each
  # sample, and an op's reference inputs are its samples, then (if it has a
  # reference_inputs_func) more.
  for name, op in sorted(OPS.items()):
    torch.manual_seed(0)
    samples = list(op.sample_inputs("cpu", torch.float64, requires_grad=True))
    references = list(op.reference_inputs("cpu", torch.float64, requires_grad=True))
    assert len(references) >= len(samples), name
    for index, (sample, reference) in enumerate(zip(samples, references, strict=False)):
      assert _same((sample.input, sample.args, sample.kwargs),
                   (reference.input, reference.args, reference.kwargs)), (name, index)


@pytest.mark.parametrize("name, sample", _collect("reference_inputs", torch.float64))
def test_reference_inputs_match_torch(name, sample):
  # The float64 sample inputs among them (see the test above).
  _check_sample(name, sample)


# All but the first three ops (tests.oracle.LOSSES), whose float32 runs are
# tests/test_parity_torch.py's: every p, weight and reduction, with ties and
# special values.
@pytest.mark.parametrize("name, sample", [
    case for case in _collect("sample_inputs", torch.float32) if case.values[0] not in LOSSES])
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
# tests/test_parity_torch.py): their OpInfo samples also run under jax.jit,
# but for those with reduction 'mean' or 'sum'. The reduction is a static
# argument of the jitted kernel that the eager call runs too, so jit adds
# tracing, which a sample's per-element losses ('none') or its default
# reduction covers; its 'mean' and 'sum' repeat those samples with the eager
# tests' reductions.
LATER_OPS = sorted(set(OPS) - set(LOSSES))


def _later(cases):
  return [case for case in cases if case.values[0] in LATER_OPS]


@pytest.mark.parametrize("name, sample", [
    case for case in _later(_collect("sample_inputs", torch.float64))
    if case.values[1].kwargs.get("reduction") not in ("mean", "sum")])
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
