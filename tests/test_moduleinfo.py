"""Driven by torch's ``module_db``: every ModuleInfo input of a ``torch.nn`` margin
loss, through our NNX and linen modules built with the same constructor
arguments, eager and under ``jit``: values, dtypes, shapes and the gradients of
every input torch differentiates, to 1e-9 in float64.

Both module families are thin wrappers over the same functional core, so every
input goes eagerly in float64 through both, under ``jit`` (float64; see MODES
for which) through the NNX module, whose weight is a Variable that jit traces
(split and merged, the functional NNX way), and eagerly in float32 through the
linen module.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from jaxmargin import linen as jm_linen
from jaxmargin import nnx as jm_nnx
from tests.oracle import tolerance

with warnings.catch_warnings():
  warnings.simplefilter("ignore")
  from torch.testing._internal.common_modules import module_db

# torch.nn's nine margin losses (torch 2.13's module_db has no entry for the two triplet ones).
MARGIN_MODULES = {
  "CosineEmbeddingLoss",
  "HingeEmbeddingLoss",
  "MarginRankingLoss",
  "MultiLabelMarginLoss",
  "MultiLabelSoftMarginLoss",
  "MultiMarginLoss",
  "SoftMarginLoss",
  "TripletMarginLoss",
  "TripletMarginWithDistanceLoss",
}
INFOS = {info.module_cls.__name__: info for info in module_db
         if info.module_cls.__name__ in MARGIN_MODULES}


def test_torchs_module_db_entries_are_all_here():
  assert len(INFOS) >= 7, sorted(INFOS)
  assert set(INFOS) <= set(jm_nnx.__all__), sorted(set(INFOS) - set(jm_nnx.__all__))
  assert set(INFOS) <= set(jm_linen.__all__), sorted(set(INFOS) - set(jm_linen.__all__))


def _numpy(value):
  if isinstance(value, torch.Tensor):
    return value.detach().numpy().copy()
  return value


# (dtype, jit, module families): every input in float64, eager through both
# families and jitted through NNX; in float32 eager only (jit adds nothing
# there that float64 does not check), through linen. Under jit, not the inputs
# built with reduction 'mean' or 'sum': the reduction is a static attribute,
# applied by the same jitted kernel as in the eager call, so jit adds tracing,
# which the per-element ('none') and default-reduction inputs cover.
MODES = (
    (torch.float64, False, ("nnx", "linen")),
    (torch.float64, True, ("nnx",)),
    (torch.float32, False, ("linen",)),
)


def _cases():
  cases = []
  for dtype in dict.fromkeys(dtype for dtype, _, _ in MODES):
    for name, info in sorted(INFOS.items()):
      if name not in jm_nnx.__all__:
        continue
      torch.manual_seed(0)
      inputs = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=True,
                                       training=True)
      for index, module_input in enumerate(inputs):
        for _, jit, families in (mode for mode in MODES if mode[0] == dtype):
          if jit and module_input.constructor_input.kwargs.get("reduction") in ("mean", "sum"):
            continue
          dtype_name = str(dtype).removeprefix("torch.")
          cases.append(pytest.param(
              name, module_input, jit, families,
              id=f"{name}-{dtype_name}-{index}-{'jit' if jit else 'eager'}-{'-'.join(families)}"))
  return cases


def _torch_value_and_grads(name, module_input):
  constructor, forward = module_input.constructor_input, module_input.forward_input
  module = INFOS[name].module_cls(*constructor.args, **constructor.kwargs)
  out = module(*forward.args, **forward.kwargs)
  value = out.detach().numpy()
  cotangent = torch.from_numpy(np.asarray(1.0 + np.arange(value.size).reshape(value.shape) % 3))
  cotangent = cotangent.to(out.dtype)
  differentiated = [a for a in forward.args if isinstance(a, torch.Tensor) and a.requires_grad]
  grads = torch.autograd.grad(out, differentiated, cotangent, allow_unused=True)
  grads = [np.zeros(a.shape, value.dtype) if g is None else g.numpy() for a, g in zip(differentiated, grads)]
  return value, cotangent.numpy(), grads


def _ours(module, call):
  """Value and gradients of the differentiated forward inputs, eager or jitted."""

  def value_and_grads(forward_args, wrt, cotangent, jit):
    def loss(*diff):
      full = list(forward_args)
      for position, array in zip(wrt, diff):
        full[position] = array
      return call(module, *full)

    fn = jax.jit(loss) if jit else loss
    value, vjp = jax.vjp(fn, *[forward_args[i] for i in wrt])
    return np.asarray(value), [np.asarray(g) for g in vjp(cotangent)]

  return value_and_grads


def _nnx_call(module, *args):
  return module(*args)


def _linen_call(module, *args):
  return module.apply({}, *args)


@pytest.mark.parametrize("name, module_input, jit, families", _cases())
def test_module_inputs_match_torch(name, module_input, jit, families):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ref_value, cotangent, ref_grads = _torch_value_and_grads(name, module_input)
  constructor, forward = module_input.constructor_input, module_input.forward_input
  args = [_numpy(a) for a in constructor.args]
  kwargs = {k: _numpy(a) for k, a in constructor.kwargs.items()}
  forward_args = [_numpy(a) for a in forward.args]
  wrt = [i for i, a in enumerate(forward.args) if isinstance(a, torch.Tensor) and a.requires_grad]
  tol = tolerance(ref_value.dtype)
  built = {"nnx": lambda: (getattr(jm_nnx, name)(*args, **kwargs), _nnx_call),
           "linen": lambda: (getattr(jm_linen, name)(*args, **kwargs), _linen_call)}
  for module, call in (built[family]() for family in families):
    if jit and isinstance(module, nnx.Module):
      # An nnx module holds its weight as a Variable: under jax.jit, rebuild it
      # from its split state, the functional NNX way.
      graphdef, state = nnx.split(module)
      module, call = state, lambda state, *args: nnx.merge(graphdef, state)(*args)
    value, grads = _ours(module, call)(forward_args, wrt, cotangent, jit)
    where = type(module).__module__
    assert value.shape == ref_value.shape, (where, value.shape, ref_value.shape)
    assert value.dtype == ref_value.dtype, (where, value.dtype, ref_value.dtype)
    np.testing.assert_allclose(value, ref_value, equal_nan=True, err_msg=where, **tol)
    for position, grad, ref_grad in zip(wrt, grads, ref_grads):
      np.testing.assert_allclose(grad, ref_grad, equal_nan=True,
                                 err_msg=f"{where}: argument {position}", **tol)
