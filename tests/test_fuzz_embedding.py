"""Hypothesis fuzzing of the embedding losses against torch 2.13: values, gradients, errors.

Each example draws a configuration from a short fixed list (shapes, with
broadcasting; the norm's order ``p``; ``swap``; the reduction; the dtype) and
values from one of three kinds:

* ``grid``: multiples of 0.5, so that exact ties are common: zero difference
  vectors (with ``eps = 0``), tied magnitudes of the infinity norm, tied
  distances in the swap's minimum, hinges at exactly 0, zero vectors and
  orthogonal pairs (a cosine of exactly 0 at margin 0). Only for the orders
  whose arithmetic is exact or correctly rounded in both libraries
  (``p`` in 0, 1, 2, inf), so that a tie in torch is a tie here;
* ``general``: any float in [-50, 50];
* ``special``: also NaN, +inf and -inf.

``eps`` and ``margin`` are drawn too (both are traced, so they cost no
compilation). The check is ``tests.oracle.assert_matches_torch``: value,
shape, dtype and the gradients of every differentiable input, NaN for NaN.
A flawed example (mismatched features or ranks) must raise in torch and
raise ``ValueError`` naming the loss here.

Budget: every configuration compiles once (the list is short); the examples
then run at a few milliseconds each. ``MIN_EXAMPLES`` per loss is modest,
so that the whole file takes well under 20 s on one core.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jaxmargin
from tests.conftest import FUZZ_COUNT_PREFIX
from tests.oracle import assert_matches_torch

MIN_EXAMPLES = 120
FUZZ = settings(
  max_examples=MIN_EXAMPLES,
  deadline=None,
  derandomize=True,
  database=None,
  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

GRID = st.integers(-4, 4).map(lambda k: 0.5 * k)
GENERAL = st.floats(-50, 50, allow_nan=False, allow_subnormal=False)
SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf])
EXACT_ORDERS = (0, 1, 2, math.inf)


def _values(kind):
  return {
    "grid": GRID,
    "general": st.one_of(GRID, GENERAL),
    "special": st.one_of(GRID, GENERAL, SPECIAL),
  }[kind]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
  """torch's reference calls here are tiny: its thread pool only adds wake-ups."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def _run_counted(name, fuzz, record_property):
  counter = {"examples": 0}
  try:
    fuzz(counter)
  finally:
    record_property(FUZZ_COUNT_PREFIX + name, counter["examples"])
  assert counter["examples"] >= MIN_EXAMPLES, (name, counter["examples"])


def _arrays(data, shapes, dtype, kind):
  elements = _values(kind)
  return [
    data.draw(hnp.arrays(np.float64, shape, elements=elements)).astype(dtype) for shape in shapes
  ]


def _kind(data, p):
  kinds = ["grid", "general", "special"] if p in EXACT_ORDERS else ["general", "special"]
  return data.draw(st.sampled_from(kinds))


def _assert_raises_like_torch(name, args, kwargs):
  with pytest.raises((RuntimeError, ValueError)), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    getattr(F, name)(*(torch.from_numpy(a) for a in args), **kwargs)
  with pytest.raises(ValueError, match=f"^{name}: "):
    getattr(jaxmargin, name)(*args, **kwargs)


# --- pairwise_distance and the triplet losses ------------------------------------

# (shapes of anchor, positive, negative; p; swap; reduction; dtype)
TRIPLET_CONFIGS = [
  (((4, 3),) * 3, 2, True, "none", np.float64),
  (((4, 3),) * 3, 1, True, "none", np.float64),
  (((4, 3),) * 3, math.inf, True, "none", np.float64),
  (((4, 3),) * 3, 0, True, "sum", np.float64),
  (((4, 3),) * 3, 3, True, "none", np.float64),
  (((4, 3),) * 3, 0.5, False, "none", np.float64),
  (((4, 3),) * 3, -1, True, "mean", np.float64),
  (((4, 3), (1, 3), (4, 1)), 2, True, "none", np.float64),
  (((2, 3, 2), (1, 3, 2), (2, 1, 2)), 1, False, "none", np.float64),
  (((5,), (5,), (5,)), 2, False, "none", np.float64),
  (((4, 3),) * 3, 2, True, "none", np.float32),
]


@FUZZ
@given(data=st.data())
def _fuzz_triplet(counter, data):
  shapes, p, swap, reduction, dtype = data.draw(st.sampled_from(TRIPLET_CONFIGS))
  kind = _kind(data, p)
  if data.draw(st.integers(0, 9)) == 0:
    # A flaw: one input with one feature too many, or one dimension too many.
    which = data.draw(st.integers(0, 2))
    bad = list(shapes)
    bad[which] = (
      (*bad[which][:-1], bad[which][-1] + 1)
      if data.draw(st.booleans())
      else (
        2,
        *bad[which],
      )
    )
    args = _arrays(data, bad, dtype, kind)
    _assert_raises_like_torch("triplet_margin_loss", args, {"p": p, "swap": swap})
    counter["examples"] += 1
    return
  anchor, positive, negative = _arrays(data, shapes, dtype, kind)
  eps = data.draw(st.sampled_from([1e-6, 0.0, 0.5]))
  margin = data.draw(st.sampled_from([0.5, 1.0, 2.0, 3.5]))
  tie = data.draw(st.sampled_from([None, "zero", "hinge"])) if kind == "grid" else None
  if tie == "zero":
    positive = anchor.copy()  # zero differences (with eps = 0) and tied swaps
  elif tie == "hinge" and p != 0 and len(set(shapes)) == 1 and shapes[0][-1] >= 2:
    # Rows whose hinge is at exactly 0: a - p = (1.5, 2, 0, ...), whose norm
    # (2.5, 3.5 or 2) is exact, and n = a + (d(a, p) + margin) e_1, with eps = 0.
    eps = 0.0
    offset = np.zeros(shapes[0], dtype)
    offset[..., :2] = 1.5, 2.0
    positive = anchor - offset
    negative = anchor.copy()
    negative[..., 0] += {1: 3.5, 2: 2.5, math.inf: 2.0}[p] + margin
  assert_matches_torch(
    "triplet_margin_loss",
    anchor,
    positive,
    negative,
    margin=margin,
    p=p,
    eps=eps,
    swap=swap,
    reduction=reduction,
  )
  assert_matches_torch("pairwise_distance", anchor, negative, p=p, eps=eps)
  if p == 2 and eps == 1e-6:
    assert_matches_torch(
      "triplet_margin_with_distance_loss",
      anchor,
      positive,
      negative,
      margin=margin,
      swap=swap,
      reduction=reduction,
    )
  counter["examples"] += 1


def test_fuzz_triplet_margin_loss_and_pairwise_distance(record_property):
  _run_counted("triplet_margin_loss", _fuzz_triplet, record_property)


# --- cosine_embedding_loss ---------------------------------------------------------

# (input1 shape, input2 shape, target shape, reduction, dtype)
COSINE_CONFIGS = [
  ((5, 3), (5, 3), (5,), "none", np.float64),
  ((5, 3), (5, 3), (5,), "mean", np.float64),
  ((5, 3), (1, 3), (5,), "none", np.float64),
  ((5, 3), (5, 1), (1,), "sum", np.float64),
  ((4,), (4,), (), "none", np.float64),
  ((5, 3), (5, 3), (5,), "none", np.float32),
]


@FUZZ
@given(data=st.data())
def _fuzz_cosine(counter, data):
  shape1, shape2, target_shape, reduction, dtype = data.draw(st.sampled_from(COSINE_CONFIGS))
  kind = data.draw(st.sampled_from(["grid", "general", "special"]))
  target = data.draw(
    hnp.arrays(np.int64, target_shape, elements=st.sampled_from([1, -1, 1, -1, 0]))
  )
  if data.draw(st.integers(0, 9)) == 0:
    # A flaw: a target of the wrong rank, or inputs with different features.
    if data.draw(st.booleans()):
      target = target.reshape(1, *target.shape)
    else:
      shape2 = (*shape2[:-1], shape1[-1] + 1)
    x1, x2 = _arrays(data, (shape1, shape2), dtype, kind)
    _assert_raises_like_torch("cosine_embedding_loss", (x1, x2, target), {})
    counter["examples"] += 1
    return
  x1, x2 = _arrays(data, (shape1, shape2), dtype, kind)
  margin = data.draw(st.sampled_from([0.0, 0.5, -0.5]))
  if kind == "grid" and shape1 == shape2 and data.draw(st.booleans()):
    # Orthogonal pairs, dissimilar, at margin 0: the hinge at exactly 0.
    x2 = np.zeros_like(x1)
    x2[..., 0], x2[..., 1] = -x1[..., 1], x1[..., 0]
    target, margin = np.full_like(target, -1), 0.0
  assert_matches_torch("cosine_embedding_loss", x1, x2, target, margin=margin, reduction=reduction)
  counter["examples"] += 1


def test_fuzz_cosine_embedding_loss(record_property):
  _run_counted("cosine_embedding_loss", _fuzz_cosine, record_property)
