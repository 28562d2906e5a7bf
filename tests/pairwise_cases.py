"""Shared data and torch calls of the pairwise-loss tests (``test_pairwise_*.py``)."""

from __future__ import annotations

import warnings

import ml_dtypes
import numpy as np
import torch
import torch.nn.functional as F

from tests.oracle import tolerance

SHAPES = [(), (5,), (3, 4), (2, 3, 4)]
REDUCTIONS = ("none", "mean", "sum")
NAMES = ("margin_ranking_loss", "hinge_embedding_loss", "soft_margin_loss")


def to_torch(a):
  """A numpy array as a tensor of the same dtype (bfloat16 through float32)."""
  a = np.asarray(a)
  if a.dtype == ml_dtypes.bfloat16:
    return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
  return torch.from_numpy(a.copy())


def torch_loss(name, *arrays, **kwargs):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    out = getattr(F, name)(*map(to_torch, arrays), **kwargs)
  return out.detach().float().numpy() if out.dtype == torch.bfloat16 else out.detach().numpy()


def labels(rng, shape, dtype=np.float64):
  return rng.choice([-1, 1], size=shape).astype(dtype)


def arrays(name, rng, shape, dtype, label_dtype=None):
  """The positional arrays of ``name`` (a list): scores on a grid of quarters, for ties."""
  label_dtype = dtype if label_dtype is None else label_dtype
  x = (rng.integers(-8, 9, size=shape) / 4).astype(dtype)
  if name == "margin_ranking_loss":
    return [x, (rng.integers(-8, 9, size=shape) / 4).astype(dtype), labels(rng, shape, label_dtype)]
  if name == "hinge_embedding_loss":
    return [np.abs(x), labels(rng, shape, label_dtype)]
  return [x, labels(rng, shape, label_dtype)]


MARGINS = {
  "margin_ranking_loss": {"margin": 0.25},
  "hinge_embedding_loss": {"margin": 1.25},
  "soft_margin_loss": {},
}


def assert_close(actual, expected, dtype, **kwargs):
  """``assert_allclose`` at the oracle's tolerance of ``dtype``, NaN equal to NaN."""
  tol = tolerance(dtype)
  np.testing.assert_allclose(
    actual, expected, rtol=tol["rtol"], atol=tol["atol"], equal_nan=True, **kwargs
  )
