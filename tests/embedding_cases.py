"""Shared data of the embedding-loss tests (``test_embedding_*.py``)."""

from __future__ import annotations

import math

import numpy as np

import jaxmargin

EPS = 1e-6
P_VALUES = [2, 1, 3, 0.5, 1.5, math.inf, -math.inf, -1, 0]
# Rows whose difference x - 0 + eps has: all zeros, a tie for the largest
# magnitude, a NaN, an inf, two -inf, one zero component.
SPECIAL_ROWS = np.array(
  [
    [-EPS, -EPS, -EPS],
    [2 - EPS, -2 - EPS, 1.0],
    [np.nan, 1.0, 2.0],
    [np.inf, 1.0, 2.0],
    [-np.inf, -np.inf, 2.0],
    [-EPS, 1.0, -2.0],
  ]
)


def normal(*shape, seed=0, dtype=np.float64):
  """Standard normal numbers of ``shape``, the same for the same seed."""
  return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def manhattan(x, y):
  """A custom distance for the triplet loss with distance: the 1-norm."""
  return jaxmargin.pairwise_distance(x, y, p=1)


# Valid inputs of every embedding loss, for the argument checks.
A, B = np.ones((3, 4)), np.ones((3, 4))
