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


def _to_torch(value):
  if isinstance(value, np.ndarray):
    if value.dtype.kind in "iu":
      return torch.from_numpy(value.astype(np.int64))
    return torch.from_numpy(value.copy())
  return value


def _cotangent(shape, dtype):
  """A fixed, non-uniform cotangent, so per-row scaling is really tested."""
  return (1.0 + np.arange(int(np.prod(shape)), dtype=np.float64) % 3).reshape(shape).astype(dtype)


def torch_value_and_grad(name, x, *args, **kwargs):
  """torch's value and input gradient (None if torch has no gradient here)."""
  xt = torch.from_numpy(np.array(x)).requires_grad_(True)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    out = getattr(F, name)(xt, *[_to_torch(a) for a in args],
                           **{k: _to_torch(a) for k, a in kwargs.items()})
  value = out.detach().numpy()
  cot = torch.from_numpy(_cotangent(value.shape, value.dtype))
  if out.numel() == 0 and x.size == 0:
    return value, np.zeros_like(x)
  out.backward(cot)
  return value, xt.grad.numpy()


_STATIC = ("p", "reduction", "size_average", "reduce")


@functools.cache
def jitted(name):
  """The public loss under ``jax.jit``, arrays traced, hyperparameters static.

  One function per loss, so calls with equal shapes share one compilation.
  """
  fn = getattr(jaxmargin, name)
  static = [a for a in _STATIC if a in inspect.signature(fn).parameters]
  return jax.jit(fn, static_argnames=static)


def jax_value_and_grad(name, x, *args, jit=False, **kwargs):
  """Our value and input gradient, through ``jax.vjp`` with torch's cotangent."""
  fn = jitted(name) if jit else getattr(jaxmargin, name)

  def loss(x):
    return fn(x, *args, **kwargs)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    value, vjp = jax.vjp(loss, jnp.asarray(x))
  (grad,) = vjp(jnp.asarray(_cotangent(value.shape, value.dtype)))
  return np.asarray(value), np.asarray(grad)


def tolerance(dtype):
  if np.dtype(dtype) == np.float64:
    return dict(rtol=1e-9, atol=1e-12)
  return dict(rtol=2e-5, atol=1e-6)


def assert_matches_torch(name, x, *args, jit=False, **kwargs):
  """Asserts equal value, shape, dtype and input gradient; NaN must match NaN."""
  ref_value, ref_grad = torch_value_and_grad(name, x, *args, **kwargs)
  value, grad = jax_value_and_grad(name, x, *args, jit=jit, **kwargs)
  assert value.shape == ref_value.shape, (value.shape, ref_value.shape)
  assert value.dtype == ref_value.dtype, (value.dtype, ref_value.dtype)
  tol = tolerance(x.dtype)
  np.testing.assert_allclose(value, ref_value, equal_nan=True, **tol)
  np.testing.assert_allclose(grad, ref_grad, equal_nan=True, **tol)
