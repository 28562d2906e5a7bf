"""Hypothesis fuzzing of margin_ranking_loss, hinge_embedding_loss and soft_margin_loss.

Values: each example draws a configuration (shapes that broadcast as torch
broadcasts, dtype, label dtype, reduction) from a short fixed list, so that
every configuration compiles once, and values that may hold NaN, +-inf, +-1e30,
zeros and exact ties at the margin (a grid of halves with margins on it). Ours
must equal torch's value and the gradients of every argument torch
differentiates, NaN for NaN. The soft margin loss is also held to an exact
reference, :math:`\\log(1 + e^{-yx})` computed stably in float64, because it is
finite where torch's formula overflows to inf (and its gradient to NaN): there
torch is not the reference.

Shapes: any ranks and sizes (0 to 3 dimensions of 0 to 3 elements); ours must
raise ``ValueError`` naming the loss exactly where torch raises, and otherwise
give torch's output shape and dtype. Traced with ``jax.eval_shape``, so no
shape compiles a kernel.

Every fuzz test counts its examples, fails below its minimum and records the
count, which ``tests/conftest.py`` prints at the end of the run.
"""

from __future__ import annotations

import collections
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

import jaxmargin
from jaxmargin import losses
from tests import pairwise_cases
from tests.conftest import FUZZ_COUNT_PREFIX
from tests.oracle import jax_value_and_grads, torch_value_and_grads

jax.config.update("jax_enable_x64", True)

MIN_EXAMPLES = 150
EXAMPLES: collections.Counter = collections.Counter()

FUZZ = settings(
  max_examples=MIN_EXAMPLES,
  deadline=None,
  # The same examples on every run and machine, and no example database.
  derandomize=True,
  database=None,
  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

REDUCTIONS = ("none", "mean", "sum")
# Halves make exact ties (z == 0) common with margins on the same grid.
GRID = st.integers(-4, 4).map(lambda k: 0.5 * k)
GENERAL = st.floats(-40, 40, allow_nan=False, allow_subnormal=False)
SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf, 1e30, -1e30, 0.0, -0.0])
VALUES = st.one_of(GRID, GRID, GENERAL, SPECIAL)
# Labels: mostly 1 and -1, sometimes another value (both hinge terms, a
# scaled ranking, soft labels) or NaN.
LABELS = st.one_of(
  st.sampled_from([1.0, -1.0]),
  st.sampled_from([1.0, -1.0]),
  st.sampled_from([0.0, 2.0, 0.5, -0.5, math.nan]),
)
MARGINS = st.one_of(GRID, st.sampled_from([0.0, 1.0, -1.0, 0.25]))

# (shapes of the positional arrays, dtype of the values, labels integer?, reduction)
RANKING = [
  (((3, 4), (3, 4), (3, 4)), np.float64, False, "none"),
  (((3, 1), (1, 4), (3, 4)), np.float64, True, "mean"),
  (((2, 3), (2, 3), (1, 1)), np.float32, False, "sum"),
  (((), (), ()), np.float64, False, "mean"),
  (((6,), (6,), (6,)), np.float32, True, "none"),
]
HINGE = [
  (((3, 4), (3, 4)), np.float64, False, "none"),
  (((3, 1), (1, 4)), np.float64, True, "mean"),
  (((5,), (2, 5)), np.float32, False, "sum"),
  (((), ()), np.float64, False, "sum"),
  (((2, 3), (2, 3)), np.float32, True, "none"),
]
SOFT = [
  (((3, 4), (3, 4)), np.float64, False, "none"),
  (((3, 4), (4,)), np.float64, True, "mean"),
  (((2, 3), (2, 3)), np.float32, False, "sum"),
  (((), ()), np.float64, False, "mean"),
  (((6,), (6,)), np.float32, True, "none"),
]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
  """torch's calls here are tiny: its thread pool only adds wake-ups."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def run_counted(name, fuzz, record_property, minimum=MIN_EXAMPLES):
  """Runs a ``@given`` function, records and checks how many examples ran."""
  EXAMPLES[name] = 0
  try:
    fuzz()
  finally:
    record_property(FUZZ_COUNT_PREFIX + name, EXAMPLES[name])
  assert EXAMPLES[name] >= minimum, (
    f"only {EXAMPLES[name]} fuzz examples of {name} ran; expected {minimum}"
  )


def draw_array(draw, shape, dtype, elements):
  size = math.prod(shape)
  return (
    np.array(draw(st.lists(elements, min_size=size, max_size=size)), np.float64)
    .reshape(shape)
    .astype(dtype)
  )


def draw_labels(draw, shape, dtype, integer):
  if integer:
    return draw_array(draw, shape, np.int64, st.sampled_from([1, -1, 1, -1, 0, 2]))
  return draw_array(draw, shape, dtype, LABELS)


def assert_close(ours, theirs, dtype, what):
  pairwise_cases.assert_close(ours, theirs, dtype, err_msg=what)


def check_against_torch(name, args, kwargs, dtype):
  ref_value, ref_grads = torch_value_and_grads(name, *args, **kwargs)
  value, grads = jax_value_and_grads(name, *args, **kwargs)
  assert value.shape == ref_value.shape and value.dtype == ref_value.dtype
  assert_close(value, ref_value, dtype, "value")
  for index, (grad, ref_grad) in enumerate(zip(grads, ref_grads, strict=True)):
    if ref_grad is None:
      assert grad is None
    else:
      assert_close(grad, ref_grad, dtype, f"gradient of argument {index}")
  return value


def check_optax_mean(name, args, kwargs, value, reduction, dtype):
  """The Optax-style loss: per element torch's 'none', its mean (or sum) torch's."""
  per_element = getattr(losses, name)(*args, **kwargs)
  reduced = {"none": per_element, "mean": jnp.mean(per_element), "sum": jnp.sum(per_element)}
  assert_close(reduced[reduction], value, dtype, "Optax-style")


# --- values and gradients -----------------------------------------------------------------


@FUZZ
@given(st.data())
def fuzz_margin_ranking_loss(data):
  shapes, dtype, integer, reduction = data.draw(st.sampled_from(RANKING))
  x1 = draw_array(data.draw, shapes[0], dtype, VALUES)
  x2 = draw_array(data.draw, shapes[1], dtype, VALUES)
  y = draw_labels(data.draw, shapes[2], dtype, integer)
  margin = data.draw(MARGINS)
  value = check_against_torch(
    "margin_ranking_loss", (x1, x2, y), dict(margin=margin, reduction=reduction), dtype
  )
  check_optax_mean("margin_ranking_loss", (x1, x2, y), dict(margin=margin), value, reduction, dtype)
  EXAMPLES["margin_ranking_loss"] += 1


def test_fuzz_margin_ranking_loss(record_property):
  run_counted("margin_ranking_loss", fuzz_margin_ranking_loss, record_property)


@FUZZ
@given(st.data())
def fuzz_hinge_embedding_loss(data):
  shapes, dtype, integer, reduction = data.draw(st.sampled_from(HINGE))
  x = draw_array(data.draw, shapes[0], dtype, st.one_of(VALUES, GRID.map(abs)))
  y = draw_labels(data.draw, shapes[1], dtype, integer)
  margin = data.draw(MARGINS)
  value = check_against_torch(
    "hinge_embedding_loss", (x, y), dict(margin=margin, reduction=reduction), dtype
  )
  check_optax_mean("hinge_embedding_loss", (x, y), dict(margin=margin), value, reduction, dtype)
  EXAMPLES["hinge_embedding_loss"] += 1


def test_fuzz_hinge_embedding_loss(record_property):
  run_counted("hinge_embedding_loss", fuzz_hinge_embedding_loss, record_property)


def soft_margin_reference(x, y, reduction):
  """Value and gradient (of the sum, times the reduction's scale) of log(1 + e^-yx), stably.

  ``-x * y`` is rounded to the input's dtype, as torch (and jaxmargin) form it.
  """
  with np.errstate(invalid="ignore", over="ignore"):  # inf * 0, NaN, exp(inf)
    z = (-x * y).astype(x.dtype).astype(np.float64)
    terms = np.logaddexp(0, z)
    grad = -np.broadcast_to(y, z.shape) / (1 + np.exp(-z))  # -y sigmoid(z), exact at the tails
  scale = 1 / max(terms.size, 1) if reduction == "mean" else 1
  value = {"none": terms, "mean": np.mean(terms) if terms.size else np.nan, "sum": np.sum(terms)}
  return value[reduction], grad * scale


@FUZZ
@given(st.data())
def fuzz_soft_margin_loss(data):
  shapes, dtype, integer, reduction = data.draw(st.sampled_from(SOFT))
  x = draw_array(data.draw, shapes[0], dtype, st.one_of(VALUES, st.floats(-800, 800)))
  y = draw_labels(data.draw, shapes[1], dtype, integer)
  value, (grad,) = jax_value_and_grads("soft_margin_loss", x, y, reduction=reduction)
  torch_value, (torch_grad,) = torch_value_and_grads("soft_margin_loss", x, y, reduction=reduction)
  assert grad is not None and torch_grad is not None  # the input is floating
  assert value.shape == torch_value.shape and value.dtype == torch_value.dtype == dtype
  # Where torch's formula does not overflow, torch's numbers.
  torch_terms = torch_value_and_grads("soft_margin_loss", x, y, reduction="none")[0]
  exact_terms = soft_margin_reference(x, y, "none")[0]
  if not np.any(np.isposinf(torch_terms) & ~np.isposinf(exact_terms)):
    assert_close(value, torch_value, dtype, "value")
  trusted = np.isfinite(torch_grad)
  assert_close(grad[trusted], torch_grad[trusted], dtype, "gradient")
  # Everywhere, the exact values; the cotangent is the oracle's (1, 2, 3, 1, ...).
  exact_value, exact_grad = soft_margin_reference(x, y, reduction)
  cotangent = 1.0 + np.arange(value.size) % 3
  exact_grad = exact_grad * (cotangent.reshape(value.shape) if reduction == "none" else 1.0)
  # float32: XLA:CPU flushes subnormal results to 0 (torch does not).
  rtol, atol = (1e-12, 0.0) if dtype == np.float64 else (2e-6, float(np.finfo(np.float32).tiny))
  np.testing.assert_allclose(value, exact_value, rtol=rtol, atol=atol, equal_nan=True)
  np.testing.assert_allclose(grad, exact_grad, rtol=rtol, atol=atol, equal_nan=True)
  check_optax_mean("soft_margin_loss", (x, y), {}, value, reduction, dtype)
  EXAMPLES["soft_margin_loss"] += 1


def test_fuzz_soft_margin_loss(record_property):
  run_counted("soft_margin_loss", fuzz_soft_margin_loss, record_property)


# --- shapes and dtypes: raise exactly where torch raises -----------------------------------

SHAPE = st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple)
DTYPES = st.sampled_from([np.float32, np.float64, np.int64, np.float16])
ARITY = {"margin_ranking_loss": 3, "hinge_embedding_loss": 2, "soft_margin_loss": 2}


@FUZZ
@given(st.sampled_from(sorted(ARITY)), st.data())
def fuzz_shapes_and_dtypes(name, data):
  arity = ARITY[name]
  shapes = [data.draw(SHAPE) for _ in range(arity)]
  dtypes = [data.draw(DTYPES) for _ in range(arity)]
  reduction = data.draw(st.sampled_from(REDUCTIONS))
  arrays = [np.ones(s, d) for s, d in zip(shapes, dtypes, strict=True)]
  expected, torch_error = None, None
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      expected = getattr(F, name)(*map(torch.from_numpy, arrays), reduction=reduction)
  except (RuntimeError, ValueError, TypeError) as error:
    torch_error = error
  fn = getattr(jaxmargin, name)
  try:
    got = jax.eval_shape(lambda *a: fn(*a, reduction=reduction), *arrays)
  except (ValueError, TypeError) as error:
    assert str(error).startswith(f"{name}: "), error
    # torch accepts integer inputs for hinge_embedding_loss's 'none' and 'sum'
    # (an integer result); we ask for a floating input, as for the other losses.
    hinge_on_integers = name == "hinge_embedding_loss" and arrays[0].dtype == np.int64
    assert torch_error is not None or hinge_on_integers, (shapes, dtypes, error)
  else:
    assert torch_error is None and expected is not None, (shapes, dtypes, torch_error)
    assert got.shape == tuple(expected.shape), (shapes, got.shape, expected.shape)
    assert got.dtype == np.dtype(str(expected.dtype).removeprefix("torch.")), (dtypes, got.dtype)
  EXAMPLES["shapes_and_dtypes"] += 1


def test_fuzz_shapes_and_dtypes(record_property):
  run_counted("shapes_and_dtypes", fuzz_shapes_and_dtypes, record_property)
