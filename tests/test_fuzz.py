"""Hypothesis fuzzing of every loss against torch 2.13: errors, shapes, dtypes, values.

Each example draws a configuration (input shape, input and target dtypes,
reduction, ...), scores that may hold NaN, +-inf, +-1e30 and exact ties, and a
target that is valid or has one flaw (a value out of range, a wrong shape, a
wrong dtype). It then calls our loss and torch's and checks that

* ours raises only ``ValueError`` or ``TypeError`` naming the loss, and exactly
  when torch raises (a flawed case must raise in both);
* otherwise the output has torch's shape and the documented dtype, and equals
  torch's value, NaN for NaN and inf for inf (an empty batch of a hinge loss
  excepted: torch returns uninitialised memory there, we NaN for 'mean' and 0
  for 'sum', as documented).

torch's CPU hinge losses take float32 and float64 only, so for float16 and
bfloat16 the reference is torch's float32 result on the same half-rounded
values; ours accumulates in float32 and rounds once to the half type, so the
two differ by at most the half type's unit roundoff (2^-8 for bfloat16, 2^-11
for float16) of the value, plus float32 accumulation error.

Budget: every new (shape, dtype, reduction, ...) signature compiles a kernel
(about 0.5 s for ``multilabel_margin_loss``, 0.1 s for the others), so each
loss draws its configuration from a short fixed list in which every shape and
reduction appears and the other axes cycle through their values, instead of
the full product. Flawed cases raise before any kernel runs, so they vary
freely. Both APIs are called eagerly, as users call them, so that concrete
checks raise.

Every fuzz test counts its examples, fails below ``MIN_EXAMPLES`` and records
the count, which ``tests/conftest.py`` prints at the end of the run.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jaxmargin
from jaxmargin import losses
from tests.conftest import FUZZ_COUNT_PREFIX

jax.config.update("jax_enable_x64", True)

MIN_EXAMPLES = 500
EXAMPLES: collections.Counter = collections.Counter()

FUZZ = settings(
    max_examples=MIN_EXAMPLES,
    deadline=None,
    # The same examples on every run and machine, and no example database
    # (which would make a run depend on the ones before it).
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FLOAT_DTYPES = tuple(np.dtype(d) for d in (jnp.float16, jnp.bfloat16, np.float32, np.float64))
HALF_DTYPES = FLOAT_DTYPES[:2]
INDEX_DTYPES = tuple(np.dtype(d) for d in (np.int8, np.int32, np.int64, np.uint8))
REDUCTIONS = ("none", "mean", "sum")

# Relative tolerance of a result computed in the dtype (hinge terms are
# non-negative; where weights or soft targets can cancel, it scales the sum of
# the terms' magnitudes instead, see ``assert_close``). float64: torch and we
# sum in different orders (C * N <= 15 terms here). float32: torch sums the
# rows of multilabel_margin_loss in float64, we in float32.
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}
# Half types: one rounding of a float32 result, at most the unit roundoff.
UNIT_ROUNDOFF = {np.dtype(jnp.bfloat16): 2.0**-8, np.dtype(jnp.float16): 2.0**-11}

# Scores: a grid of multiples of 0.5 makes exact ties (z == 0) common; general
# values stay clear of subnormal sums, which XLA:CPU flushes to zero and torch
# does not (that would flip a strict z > 0 test); specials are torch's corners.
GRID = st.integers(-4, 4).map(lambda k: 0.5 * k)
GENERAL = st.floats(-50, 50, allow_nan=False, allow_subnormal=False).map(
    lambda v: 0.0 if abs(v) < 1e-3 else v)
SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf, 1e30, -1e30])
VALUE_KINDS = {
    "grid": GRID,
    "general": st.one_of(GRID, GENERAL),
    "special": st.one_of(GRID, GENERAL, SPECIAL),
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
  """torch's reference calls here are tiny: its thread pool only adds wake-ups,
  which cost milliseconds each when CI's two cores run two xdist workers."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def count_example(name):
  EXAMPLES[name] += 1


def run_counted(name, fuzz, record_property):
  """Runs a ``@given`` function, records and checks how many examples ran."""
  EXAMPLES[name] = 0
  try:
    fuzz()
  finally:
    record_property(FUZZ_COUNT_PREFIX + name, EXAMPLES[name])
  assert EXAMPLES[name] >= MIN_EXAMPLES, (
      f"only {EXAMPLES[name]} fuzz examples of {name} ran; expected {MIN_EXAMPLES}")


def cycle(values, i):
  """The ``i``-th configuration's pick from ``values``, advancing one per row of
  ``len(values)`` so that it does not lock step with an axis of the same length."""
  return values[(i + i // len(values)) % len(values)]


@st.composite
def float_arrays(draw, shape, dtype):
  """Scores of ``shape`` in ``dtype`` (numpy; bfloat16 through ml_dtypes)."""
  elements = VALUE_KINDS[draw(st.sampled_from(sorted(VALUE_KINDS)))]
  return cast(draw(hnp.arrays(np.float64, shape, elements=elements)), dtype)


def cast(values, dtype):
  with np.errstate(over="ignore"):  # 1e30 is inf in float16, as it should be
    return values.astype(dtype)


def to_torch(array):
  """A torch tensor of ``array``: half types as float32 (exact), integers as
  int64 (torch wants int64 indices; we take any integer dtype, as documented)."""
  array = np.asarray(array)
  if array.dtype in HALF_DTYPES:
    array = array.astype(np.float32)
  elif array.dtype.kind in "iu":
    array = array.astype(np.int64)
  return torch.from_numpy(array.copy())


def call_ours(name, fn):
  """Our result as numpy, or the documented exception (checked) it raised."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      return np.asarray(fn())
  except (ValueError, TypeError) as error:
    assert name in str(error), f"error without the loss name: {error!r}"
    return error


def call_torch(fn):
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      return fn().detach().numpy()
  except (RuntimeError, ValueError, TypeError, IndexError) as error:
    return error


def assert_close(ours, ref, dtype, magnitude=None):
  """``ours`` (in ``dtype``) against torch's ``ref``; NaN and inf where torch has them.

  ``magnitude`` is the loss with every term replaced by its absolute value: the
  accumulation error of a sum scales with it when terms cancel.
  """
  ours = np.asarray(ours, np.float64)
  ref = np.asarray(ref, np.float64)
  assert ours.shape == ref.shape, (ours.shape, ref.shape)
  magnitude = np.abs(ref) if magnitude is None else np.asarray(magnitude, np.float64)
  magnitude = np.where(np.isfinite(magnitude), magnitude, 0)
  if dtype in HALF_DTYPES:
    # Where the float32 value rounds to +-inf in the half type, so must ours.
    with np.errstate(over="ignore"):
      rounded = ref.astype(dtype).astype(np.float64)
    ref = np.where(np.isinf(rounded), rounded, ref)
    rtol, acc = UNIT_ROUNDOFF[dtype] * (1 + 2**-10), RTOL[np.dtype(np.float32)]
    atol = float(jnp.finfo(dtype).smallest_subnormal) / 2
  else:
    rtol, acc, atol = 0.0, RTOL[dtype], 0.0
  np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref), err_msg="NaN positions")
  both = ~np.isnan(ref)
  np.testing.assert_array_equal(ours[both & np.isinf(ref)], ref[both & np.isinf(ref)],
                                err_msg="inf positions")
  finite = np.isfinite(ref)
  error = np.abs(ours[finite] - ref[finite])
  bound = rtol * np.abs(ref[finite]) + acc * magnitude[finite] + atol
  assert np.all(error <= bound), (ours, ref, error, bound)


def check_outcome(name, ours, ref, flaw):
  """Both raise or neither; a flawed case raises. Returns whether to compare."""
  ours_raised = isinstance(ours, Exception)
  torch_raised = isinstance(ref, Exception)
  if flaw is not None:
    assert torch_raised, f"the oracle accepted a case flawed by {flaw}"
    assert ours_raised, f"{name} accepted a case flawed by {flaw} (torch: {ref!r})"
  assert ours_raised == torch_raised, (ours, ref)
  return not ours_raised


# --- torch-compatible API: configurations ------------------------------------

# 0-D and 1-D inputs, the empty batch, C = 1, and general shapes (N <= 3, C <= 5).
HINGE_SHAPES = ((), (1,), (4,), (0, 3), (1, 1), (3, 1), (2, 4), (3, 5))


@dataclasses.dataclass(frozen=True)
class HingeConfig:
  shape: tuple
  reduction: str
  dtype: np.dtype
  index_dtype: np.dtype
  p: int = 1
  weighted: bool = False


HINGE_CONFIGS = [
    HingeConfig(shape, reduction, FLOAT_DTYPES[i % 4], cycle(INDEX_DTYPES, i),
                p=cycle((1, 2), i // 4), weighted=bool(cycle((0, 1), i // 8)))
    for i, (shape, reduction) in enumerate(itertools.product(HINGE_SHAPES, REDUCTIONS))
]


def rows_and_classes(shape):
  if len(shape) == 2:
    return shape
  return 1, (shape[0] if shape else 1)


def out_of_range_values(dtype, low, num_classes):
  """Index values outside ``[low, C-1]`` that ``dtype`` can hold."""
  info = np.iinfo(dtype)
  values = [num_classes, num_classes + 1, int(info.max)]
  if info.min < 0:
    values += [low - 1, int(info.min)]
  return [v for v in values if info.min <= v <= info.max and not low <= v < num_classes]


@st.composite
def with_flaw(draw, target, flaws, low, num_classes, wrong_shapes):
  """``target`` unchanged or with one flaw; returns ``(target, flaw)``."""
  flaw = draw(st.sampled_from((None,) * 4 + flaws))
  if flaw in ("range", "dtype") and target.size == 0:
    # No value to put out of range; and torch skips its dtype check for an
    # empty target (we raise TypeError for any non-integer target).
    flaw = "shape"
  if flaw == "range":
    flat = target.reshape(-1).copy()
    flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from(
        out_of_range_values(target.dtype, low, num_classes)))
    return flat.reshape(target.shape), flaw
  if flaw == "shape":
    shape = draw(st.sampled_from(wrong_shapes))
    return np.zeros(shape, target.dtype), flaw
  if flaw == "dtype":
    return target.astype(draw(st.sampled_from([np.float32, np.float64, np.bool_]))), flaw
  return target, flaw


def expected_empty(reduction):
  """Our documented result of a hinge loss on an empty batch."""
  return {"mean": np.nan, "sum": 0.0}[reduction]


def compare_hinge(name, cfg, x, ours, ref, flaw, magnitude=None):
  if not check_outcome(name, ours, ref, flaw):
    return
  assert ours.dtype == cfg.dtype, (ours.dtype, cfg.dtype)
  assert ours.shape == ref.shape, (ours.shape, ref.shape)
  if x.ndim == 2 and x.shape[0] == 0 and cfg.reduction != "none":
    # torch's value here is uninitialised memory; ours is documented.
    np.testing.assert_array_equal(ours, expected_empty(cfg.reduction))
    return
  assert_close(ours, ref, cfg.dtype, magnitude)


# --- multilabel_margin_loss ---------------------------------------------------


@st.composite
def mlm_cases(draw):
  cfg = draw(st.sampled_from(HINGE_CONFIGS))
  x = draw(float_arrays(cfg.shape, cfg.dtype))
  num_rows, num_classes = rows_and_classes(cfg.shape)
  # Label lists with duplicates, and -1 (signed dtypes) anywhere, also first.
  low = 0 if cfg.index_dtype.kind == "u" else -1
  target = draw(hnp.arrays(cfg.index_dtype, cfg.shape if cfg.shape else (),
                           elements=st.integers(low, num_classes - 1)))
  if cfg.shape == () and draw(st.booleans()):
    target = target.reshape(1)  # torch takes (1,) for a 0-D input too
  wrong = {0: [(2,), (1, 1)], 1: [(num_classes + 1,), (1, num_classes)],
           2: [(num_rows, num_classes + 1), (num_rows + 1, num_classes),
               (num_rows * num_classes + 1,)]}[len(cfg.shape)]
  target, flaw = draw(with_flaw(target, ("range", "shape", "dtype"), -1,
                                num_classes, wrong))
  return cfg, x, target, flaw


@FUZZ
@given(mlm_cases())
def fuzz_multilabel_margin_loss(case):
  count_example("multilabel_margin_loss")
  cfg, x, target, flaw = case
  name = "multilabel_margin_loss"
  ours = call_ours(name, lambda: jaxmargin.multilabel_margin_loss(
      x, target, reduction=cfg.reduction))
  ref = call_torch(lambda: F.multilabel_margin_loss(
      to_torch(x), to_torch(target), reduction=cfg.reduction))
  compare_hinge(name, cfg, x, ours, ref, flaw)


def test_fuzz_multilabel_margin_loss(record_property):
  run_counted("multilabel_margin_loss", fuzz_multilabel_margin_loss, record_property)


# --- multi_margin_loss --------------------------------------------------------

MARGINS = st.sampled_from([1.0, 0.5, 0.0, -0.5, 2.0, 1e30])
WEIGHTS = st.one_of(GRID, st.sampled_from([math.nan, math.inf, 1e30]))


@st.composite
def mm_cases(draw):
  cfg = draw(st.sampled_from(HINGE_CONFIGS))
  x = draw(float_arrays(cfg.shape, cfg.dtype))
  num_rows, num_classes = rows_and_classes(cfg.shape)
  target = draw(hnp.arrays(cfg.index_dtype, (num_rows,),
                           elements=st.integers(0, num_classes - 1)))
  if num_rows == 1 and draw(st.booleans()):
    target = target.reshape(())  # torch takes a 0-D target for one sample
  target, flaw = draw(with_flaw(
      target, ("range", "shape", "dtype", "weight", "p"), 0, num_classes,
      [(num_rows + 1,), (num_rows, 1), (num_rows, num_classes)]))
  weight = None
  if cfg.weighted or flaw == "weight":
    weight = cast(draw(hnp.arrays(np.float64, (num_classes,), elements=WEIGHTS)), cfg.dtype)
  if flaw == "weight":
    weight = draw(st.sampled_from([np.ones((num_classes + 1,)), np.ones((1, num_classes))]))
    weight = weight.astype(cfg.dtype)
  p = 3 if flaw == "p" else cfg.p
  return cfg, x, target, flaw, dict(p=p, margin=draw(MARGINS), weight=weight)


@FUZZ
@given(mm_cases())
def fuzz_multi_margin_loss(case):
  count_example("multi_margin_loss")
  cfg, x, target, flaw, kwargs = case
  name = "multi_margin_loss"
  weight = kwargs.pop("weight")
  ours = call_ours(name, lambda: jaxmargin.multi_margin_loss(
      x, target, weight=weight, reduction=cfg.reduction, **kwargs))

  def reference(weight):
    return call_torch(lambda: F.multi_margin_loss(
        to_torch(x), to_torch(target),
        weight=None if weight is None else to_torch(weight),
        reduction=cfg.reduction, **kwargs))

  ref = reference(weight)
  # Rows of weights of both signs can cancel in 'mean' and 'sum'.
  magnitude = None if weight is None or isinstance(ref, Exception) else reference(
      np.abs(weight))
  compare_hinge(name, cfg, x, ours, ref, flaw, magnitude)


def test_fuzz_multi_margin_loss(record_property):
  run_counted("multi_margin_loss", fuzz_multi_margin_loss, record_property)


# --- multilabel_soft_margin_loss ----------------------------------------------

# Any rank >= 1, the empty batch, C = 1 and C = 0 (NaN per sample in torch).
SOFT_SHAPES = ((1,), (4,), (0, 3), (3, 1), (2, 0), (2, 4), (2, 2, 3))
# Target dtypes: the input's own (None), wider floats (promotion), integers.
SOFT_TARGET_DTYPES = (None, np.dtype(np.float64), np.dtype(np.float32)) + INDEX_DTYPES
SOFT_TARGETS = st.sampled_from([0.0, 1.0, 0.5, 0.25, -0.5, 1.5])


@dataclasses.dataclass(frozen=True)
class SoftConfig:
  shape: tuple
  reduction: str
  dtype: np.dtype
  target_dtype: np.dtype | None
  target_shape: str  # "full", "classes" (C,) or "row" (1, ..., C)
  weight: str        # "none", "classes" (C,) or "full"


SOFT_CONFIGS = [
    SoftConfig(shape, reduction, FLOAT_DTYPES[i % 4], cycle(SOFT_TARGET_DTYPES, i),
               cycle(("full", "classes", "row"), i // 2), cycle(("none", "classes", "full"), i))
    for i, (shape, reduction) in enumerate(itertools.product(SOFT_SHAPES, REDUCTIONS))
]


def soft_shape(kind, shape):
  return {"full": shape, "classes": shape[-1:], "row": (1,) * (len(shape) - 1) + shape[-1:]}[kind]


def unbroadcastable_shape(shape):
  """A shape of the same rank that does not broadcast with ``shape``, if any.

  (A target of higher rank broadcasts; it has a test of its own below.) With
  C = 1 the last axis always broadcasts, so another must differ.
  """
  for axis in reversed(range(len(shape))):
    if shape[axis] != 1:
      return shape[:axis] + (shape[axis] + 2,) + shape[axis + 1:]
  return None


@st.composite
def mlsm_cases(draw):
  cfg = draw(st.sampled_from(SOFT_CONFIGS))
  flaw = draw(st.sampled_from((None,) * 4 + ("shape", "dtype", "weight", "input")))
  x = draw(float_arrays(cfg.shape, cfg.dtype))
  target_dtype = cfg.target_dtype or cfg.dtype
  target_shape = soft_shape(cfg.target_shape, cfg.shape)
  if target_dtype.kind in "iu":
    # Integer targets of a dtype that holds them: multi-hot, or beyond it.
    low = 0 if target_dtype.kind == "u" else -1
    target = draw(hnp.arrays(target_dtype, target_shape, elements=st.integers(low, 2)))
  else:
    target = draw(hnp.arrays(np.float64, target_shape, elements=SOFT_TARGETS))
    target = target.astype(target_dtype)
  weight = None
  if cfg.weight != "none" or flaw == "weight":
    weight_shape = soft_shape("classes" if cfg.weight == "none" else cfg.weight, cfg.shape)
    weight = cast(draw(hnp.arrays(np.float64, weight_shape, elements=WEIGHTS)), cfg.dtype)
  unbroadcastable = unbroadcastable_shape(cfg.shape)
  if flaw in ("shape", "weight") and unbroadcastable is None:
    flaw = "dtype"
  if flaw == "shape":
    target = np.zeros(unbroadcastable, target.dtype)
  elif flaw == "dtype":
    target = target != 0
  elif flaw == "weight":
    weight = np.ones(unbroadcastable, cfg.dtype)
  elif flaw == "input" and draw(st.booleans()):
    x = np.zeros(cfg.shape, np.int32)
  elif flaw == "input":
    # torch takes a 0-D input if the target adds an axis;
    # we raise for any 0-D input, as documented.
    x, target, weight = np.zeros((), cfg.dtype), np.zeros((), target.dtype), None
  return cfg, x, target, weight, flaw


def soft_margin_magnitude(x, target, weight, reduction):
  """torch's loss with every term replaced by its absolute value (float64)."""
  x, target = to_torch(x).double(), to_torch(target).double()
  terms = -(target * F.logsigmoid(x) + (1 - target) * F.logsigmoid(-x))
  if weight is not None:
    terms = terms * to_torch(weight).double()
  per_sample = terms.abs().sum(dim=-1) / x.shape[-1]
  return {"none": per_sample, "mean": per_sample.mean(),
          "sum": per_sample.sum()}[reduction].numpy()


@FUZZ
@given(mlsm_cases())
def fuzz_multilabel_soft_margin_loss(case):
  count_example("multilabel_soft_margin_loss")
  cfg, x, target, weight, flaw = case
  name = "multilabel_soft_margin_loss"
  ours = call_ours(name, lambda: jaxmargin.multilabel_soft_margin_loss(
      x, target, weight=weight, reduction=cfg.reduction))
  # Documented: the dtype the arguments promote to.
  dtype = np.dtype(jnp.result_type(*(a.dtype for a in (x, target, weight) if a is not None)))
  # A float32 or float64 input is computed in torch's order, each operand in
  # its own dtype, as the reference is. A half input and its float operands
  # are computed in the promoted dtype (float32 for half types), where torch
  # would round each step to the half type: the reference is torch there.
  work = np.float32 if dtype in HALF_DTYPES else dtype

  def promoted(a):
    if a is None or a.dtype.kind not in "fV" or x.dtype not in HALF_DTYPES:
      return a
    return a.astype(work)

  ref = call_torch(lambda: F.multilabel_soft_margin_loss(
      to_torch(promoted(x)), to_torch(promoted(target)),
      weight=None if weight is None else to_torch(promoted(weight)),
      reduction=cfg.reduction))
  if not check_outcome(name, ours, ref, flaw):
    return
  assert ours.dtype == dtype, (ours.dtype, dtype)
  if dtype not in HALF_DTYPES:
    assert ours.dtype == ref.dtype, (ours.dtype, ref.dtype)
  assert ours.shape == ref.shape, (ours.shape, ref.shape)
  assert_close(ours, ref, dtype, soft_margin_magnitude(x, target, weight, cfg.reduction))


def test_fuzz_multilabel_soft_margin_loss(record_property):
  run_counted("multilabel_soft_margin_loss", fuzz_multilabel_soft_margin_loss,
              record_property)


@pytest.mark.parametrize("case", ["target", "weight"])
def test_soft_margin_target_or_weight_of_higher_rank_matches_torch(case):
  # Found while probing torch for the fuzzer. torch: input (2, 3), target (4, 2, 3)
  # -> terms (4, 2, 3) summed over dim 1 -> 'none' gives shape (4, 3).
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 3))
  target, weight = rng.random((2, 3)), None
  if case == "target":
    target = rng.random((4, 2, 3))
  else:
    weight = rng.random((2, 1, 3))
  for reduction in REDUCTIONS:
    ours = call_ours("multilabel_soft_margin_loss", lambda: jaxmargin.multilabel_soft_margin_loss(
        x, target, weight=weight, reduction=reduction))
    ref = call_torch(lambda: F.multilabel_soft_margin_loss(
        torch.from_numpy(x), torch.from_numpy(target),
        weight=None if weight is None else torch.from_numpy(weight), reduction=reduction))
    assert not isinstance(ours, Exception) and not isinstance(ref, Exception)
    assert ours.shape == ref.shape, (reduction, ours.shape, ref.shape)
    assert_close(ours, ref, np.dtype(np.float64))


# --- Optax-style API (jaxmargin.losses) ----------------------------------------

# Batch shapes: one example, the empty batch, a batch, two batch axes.
OPTAX_SHAPES = ((3,), (0, 3), (1, 1), (3, 5), (2, 2, 4))


@dataclasses.dataclass(frozen=True)
class OptaxConfig:
  shape: tuple
  dtype: np.dtype
  label_dtype: np.dtype
  p: int
  weighted: bool


OPTAX_CONFIGS = [
    OptaxConfig(shape, FLOAT_DTYPES[i % 4], cycle(INDEX_DTYPES, i), p=cycle((1, 2), i // 2),
                weighted=bool(cycle((0, 1), i)))
    for i, shape in enumerate(OPTAX_SHAPES + OPTAX_SHAPES[1:4])
]


def call_optax(name, x, labels, **kwargs):
  return call_ours(name, lambda: getattr(losses, name)(x, labels, **kwargs))


def per_row_reference(fn, x, target, **kwargs):
  """torch's 'none' loss of the rows of ``x`` (class axis last), batch-shaped."""
  rows = to_torch(x).reshape(-1, x.shape[-1])
  return call_torch(lambda: fn(rows, target, reduction="none", **kwargs).reshape(x.shape[:-1]))


def compare_optax(name, x, ours, ref, flaw, dtype, magnitude=None):
  if flaw is not None:
    assert isinstance(ours, Exception), f"{name} accepted a case flawed by {flaw}"
    return
  assert not isinstance(ref, Exception), ref
  assert not isinstance(ours, Exception), ours
  assert ours.dtype == dtype, (ours.dtype, dtype)
  assert ours.shape == x.shape[:-1], (ours.shape, x.shape)
  assert_close(ours, ref, dtype, magnitude)


@st.composite
def optax_multiclass_cases(draw):
  cfg = draw(st.sampled_from(OPTAX_CONFIGS))
  x = draw(float_arrays(cfg.shape, cfg.dtype))
  num_classes = cfg.shape[-1]
  labels = draw(hnp.arrays(cfg.label_dtype, cfg.shape[:-1],
                           elements=st.integers(0, num_classes - 1)))
  labels, flaw = draw(with_flaw(labels, ("range", "shape", "dtype"), 0, num_classes,
                                [cfg.shape, cfg.shape[:-1] + (2,)]))
  weights = None
  if cfg.weighted:
    weights = cast(draw(hnp.arrays(np.float64, (num_classes,), elements=WEIGHTS)), cfg.dtype)
  return cfg, x, labels, weights, draw(MARGINS), flaw


@FUZZ
@given(optax_multiclass_cases())
def fuzz_optax_multiclass_margin_loss(case):
  count_example("losses.multiclass_margin_loss")
  cfg, x, labels, weights, margin, flaw = case
  name = "multiclass_margin_loss"
  ours = call_optax(name, x, labels, p=cfg.p, margin=margin, class_weights=weights)
  if flaw is not None:
    return compare_optax(name, x, ours, None, flaw, cfg.dtype)

  def reference(weights):
    return per_row_reference(F.multi_margin_loss, x, to_torch(labels).reshape(-1),
                             p=cfg.p, margin=margin,
                             weight=None if weights is None else to_torch(weights))

  magnitude = None if weights is None else reference(np.abs(weights))
  compare_optax(name, x, ours, reference(weights), flaw, cfg.dtype, magnitude)


def test_fuzz_optax_multiclass_margin_loss(record_property):
  run_counted("losses.multiclass_margin_loss", fuzz_optax_multiclass_margin_loss,
              record_property)


def padded_from_multi_hot(hot):
  """torch's target for multi-hot rows (numpy, independent of jaxmargin)."""
  rows = hot.reshape(-1, hot.shape[-1]) != 0
  padded = np.full(rows.shape, -1, np.int64)
  for padded_row, row in zip(padded, rows):
    labels = np.flatnonzero(row)
    padded_row[:labels.size] = labels
  return torch.from_numpy(padded)


@st.composite
def optax_multilabel_cases(draw):
  cfg = draw(st.sampled_from(OPTAX_CONFIGS))
  x = draw(float_arrays(cfg.shape, cfg.dtype))
  # Multi-hot labels of any integer dtype, bool or float.
  label_dtype = cycle((cfg.label_dtype, np.dtype(np.bool_), np.dtype(np.float32)),
                      OPTAX_CONFIGS.index(cfg))
  hot = draw(hnp.arrays(np.int64, cfg.shape, elements=st.integers(0, 1))).astype(label_dtype)
  flaw = draw(st.sampled_from((None,) * 4 + ("values", "shape")))
  if flaw == "values" and hot.size:
    # Not multi-hot: what a padded torch target passed here by mistake holds.
    flat = hot.astype(np.int64).reshape(-1)
    flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from([-1, 2]))
    hot = flat.reshape(cfg.shape)
  elif flaw is not None:
    flaw = "shape"
    hot = np.zeros(cfg.shape[:-1] + (cfg.shape[-1] + 1,), label_dtype)
  return cfg, x, hot, flaw


@FUZZ
@given(optax_multilabel_cases())
def fuzz_optax_multilabel_margin_loss(case):
  count_example("losses.multilabel_margin_loss")
  cfg, x, hot, flaw = case
  name = "multilabel_margin_loss"
  # torch fixes the margin to 1; other margins are tested in test_losses.py.
  ours = call_optax(name, x, hot)
  ref = None if flaw else per_row_reference(F.multilabel_margin_loss, x,
                                            padded_from_multi_hot(hot))
  compare_optax(name, x, ours, ref, flaw, cfg.dtype)


def test_fuzz_optax_multilabel_margin_loss(record_property):
  run_counted("losses.multilabel_margin_loss", fuzz_optax_multilabel_margin_loss,
              record_property)


@st.composite
def optax_soft_cases(draw):
  cfg = draw(st.sampled_from(OPTAX_CONFIGS))
  x = draw(float_arrays(cfg.shape, cfg.dtype))
  labels = draw(hnp.arrays(np.float64, cfg.shape, elements=SOFT_TARGETS)).astype(cfg.dtype)
  weights = None
  if cfg.weighted:
    weights = cast(draw(hnp.arrays(np.float64, cfg.shape[-1:], elements=WEIGHTS)), cfg.dtype)
  flaw = draw(st.sampled_from((None,) * 4 + ("shape", "dtype")))
  if flaw == "shape" and unbroadcastable_shape(cfg.shape) is None:
    flaw = "dtype"
  if flaw == "shape":
    labels = np.zeros(unbroadcastable_shape(cfg.shape), cfg.dtype)
  elif flaw == "dtype":
    labels = labels != 0
  return cfg, x, labels, weights, flaw


@FUZZ
@given(optax_soft_cases())
def fuzz_optax_multilabel_soft_margin_loss(case):
  count_example("losses.multilabel_soft_margin_loss")
  cfg, x, labels, weights, flaw = case
  name = "multilabel_soft_margin_loss"
  ours = call_optax(name, x, labels, class_weights=weights)
  if flaw is not None:
    return compare_optax(name, x, ours, None, flaw, cfg.dtype)
  rows = (-1, x.shape[-1])
  ref = per_row_reference(F.multilabel_soft_margin_loss, x,
                          to_torch(labels).reshape(rows),
                          weight=None if weights is None else to_torch(weights))
  magnitude = soft_margin_magnitude(x.reshape(rows), labels.reshape(rows), weights,
                                    "none").reshape(x.shape[:-1])
  compare_optax(name, x, ours, ref, flaw, cfg.dtype, magnitude)


def test_fuzz_optax_multilabel_soft_margin_loss(record_property):
  run_counted("losses.multilabel_soft_margin_loss", fuzz_optax_multilabel_soft_margin_loss,
              record_property)
