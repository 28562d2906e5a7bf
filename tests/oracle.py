"""Runs torch's losses (the reference) and ours the same way, returning numpy."""

from __future__ import annotations

import functools
import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

import jaxmargin

LOSSES = ("multilabel_margin_loss", "multi_margin_loss", "multilabel_soft_margin_loss")

# How many leading positional arguments of each function are differentiated
# (torch gives each of them a gradient); 1 for any function not listed.
DIFFERENTIATED = {
  "margin_ranking_loss": 3,
  "cosine_embedding_loss": 2,
  "triplet_margin_loss": 3,
  "triplet_margin_with_distance_loss": 3,
  "pairwise_distance": 2,
}


def num_differentiated(name):
  return DIFFERENTIATED.get(name, 1)


def _to_torch(value):
  if isinstance(value, functools.partial) and value.func is jaxmargin.pairwise_distance:
    # A distance_function of ours: torch's is the same distance as a module.
    return torch.nn.PairwiseDistance(**value.keywords)
  if isinstance(value, np.ndarray):
    if value.dtype.kind in "iu":
      return torch.from_numpy(value.astype(np.int64))
    return torch.from_numpy(value.copy())
  return value


def _cotangent(shape, dtype):
  """A fixed, non-uniform cotangent, so per-row scaling is really tested."""
  return (1.0 + np.arange(int(np.prod(shape)), dtype=np.float64) % 3).reshape(shape).astype(dtype)


def _floating(a):
  # jnp.issubdtype, not dtype.kind: bfloat16 (ml_dtypes) is kind "V".
  return jnp.issubdtype(np.asarray(a).dtype, jnp.floating)


def _split(name, args):
  count = num_differentiated(name)
  return list(args[:count]), list(args[count:])


def torch_value_and_grads(name, *args, **kwargs):
  """torch's value and the gradients of the differentiated arguments.

  A differentiated argument that is not a floating array (an integer target
  of ``margin_ranking_loss``) gets ``None``.
  """
  wrt, rest = _split(name, args)
  tensors = []
  for a in wrt:
    a = np.asarray(a)
    t = _to_torch(a)
    if _floating(a):
      t.requires_grad_(True)
    tensors.append(t)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    out = getattr(F, name)(*tensors, *[_to_torch(a) for a in rest],
                           **{k: _to_torch(a) for k, a in kwargs.items()})
  value = out.detach().numpy()
  if out.numel() == 0 or not out.requires_grad:
    return value, [np.zeros_like(np.asarray(a)) if t.requires_grad else None
                   for a, t in zip(wrt, tensors)]
  out.backward(torch.from_numpy(_cotangent(value.shape, value.dtype)))
  grads = []
  for a, t in zip(wrt, tensors):
    if not t.requires_grad:
      grads.append(None)
    else:
      grads.append(np.zeros_like(np.asarray(a)) if t.grad is None else t.grad.numpy())
  return value, grads


def torch_value_and_grad(name, x, *args, **kwargs):
  """torch's value and the gradient of the first argument."""
  value, grads = torch_value_and_grads(name, x, *args, **kwargs)
  return value, grads[0]


_STATIC = ("p", "reduction", "size_average", "reduce", "swap", "distance_function", "keepdim")


@functools.cache
def jitted(name):
  """The public loss under ``jax.jit``, arrays traced, hyperparameters static.

  One function per loss, so calls with equal shapes share one compilation.
  """
  fn = getattr(jaxmargin, name)
  static = [a for a in _STATIC if a in inspect.signature(fn).parameters]
  return jax.jit(fn, static_argnames=static)


def jax_value_and_grads(name, *args, jit=False, **kwargs):
  """Our value and the differentiated arguments' gradients, through ``jax.vjp``.

  The cotangent is torch's; a differentiated argument that is not a floating
  array gets ``None``, as in :func:`torch_value_and_grads`.
  """
  fn = jitted(name) if jit else getattr(jaxmargin, name)
  wrt, rest = _split(name, args)
  floating = [_floating(a) for a in wrt]

  def loss(*diff):
    it = iter(diff)
    full = [next(it) if f else a for a, f in zip(wrt, floating)]
    return fn(*full, *rest, **kwargs)

  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    value, vjp = jax.vjp(loss, *[jnp.asarray(a) for a, f in zip(wrt, floating) if f])
  grads = iter(vjp(jnp.asarray(_cotangent(value.shape, value.dtype))))
  return np.asarray(value), [np.asarray(next(grads)) if f else None for f in floating]


def jax_value_and_grad(name, x, *args, jit=False, **kwargs):
  """Our value and the gradient of the first argument."""
  value, grads = jax_value_and_grads(name, x, *args, jit=jit, **kwargs)
  return value, grads[0]


def tolerance(dtype):
  if np.dtype(dtype) == np.float64:
    return dict(rtol=1e-9, atol=1e-12)
  return dict(rtol=2e-5, atol=1e-6)


def assert_matches_torch(name, x, *args, jit=False, **kwargs):
  """Asserts equal value, shape, dtype and gradients; NaN must match NaN.

  The gradients are those of the first :func:`num_differentiated` arguments.
  """
  ref_value, ref_grads = torch_value_and_grads(name, x, *args, **kwargs)
  value, grads = jax_value_and_grads(name, x, *args, jit=jit, **kwargs)
  assert value.shape == ref_value.shape, (value.shape, ref_value.shape)
  assert value.dtype == ref_value.dtype, (value.dtype, ref_value.dtype)
  tol = tolerance(np.asarray(x).dtype)
  np.testing.assert_allclose(value, ref_value, equal_nan=True, **tol)
  for index, (grad, ref_grad) in enumerate(zip(grads, ref_grads)):
    if ref_grad is None:
      assert grad is None, index
      continue
    assert grad.shape == ref_grad.shape, (index, grad.shape, ref_grad.shape)
    np.testing.assert_allclose(grad, ref_grad, equal_nan=True, err_msg=f"argument {index}", **tol)
