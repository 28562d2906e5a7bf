"""Every loss, in both APIs, on 8 devices: sharded ``jit``, ``shard_map``, ``pmap``.

``tests/test_multidevice.py`` runs this module in a process of its own with 8
virtual CPU devices (see ``conftest.py`` here). That process starts in JAX's
default 32-bit mode (float32 scores, int32 targets); the float64 checks turn
x64 on only for themselves, with int64 targets as torch has them.

A sharded result is held to the same computation on one device, and
``multilabel_margin_loss`` also to a float64 NumPy brute force. Tolerances,
float32 (float64): a value within ``rtol=1e-6`` (``1e-13``) of the one-device
value; a gradient within ``rtol=1e-6`` plus ``1e-6`` (``1e-13``) times its
largest entry, because a sum over the batch can cancel to near 0 at one entry
and the shards reorder it. Measured on CPU: gradients with respect to the
scores are bitwise equal; losses and parameter gradients differ by up to
2.3e-7 (2.4e-16) relative to the largest entry.

The batch has 16 rows, 2 per device. Row 0, on device 0, lists 230 of the 256
classes and every other row 1 to 4, so that ``multilabel_margin_loss``'s
``"auto"`` method sorts on device 0 and loops over slots on the others when
each shard decides for itself (``shard_map``, ``pmap``), while the one-device
reference sorts every row.

Both kinds of mesh axes are checked: ``Auto`` (the partitioner places the
work) and ``Explicit`` (sharding in the types, ``jax.make_mesh``'s default),
and ``shard_map`` with and without its varying-axes check (``check_vma``).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.experimental import checkify
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxmargin
from jaxmargin import losses
from jaxmargin._multilabel_margin import sort_is_cheaper
from tests.jax_versions import enable_x64

NUM_DEVICES = 8
if jax.device_count() < NUM_DEVICES:
  pytest.skip(f"needs {NUM_DEVICES} devices, found {jax.device_count()}: run "
              "tests/test_multidevice.py, which starts a process with 8 virtual "
              "CPU devices", allow_module_level=True)

AXIS = "batch"
ROWS_PER_DEVICE = 2
NUM_ROWS = NUM_DEVICES * ROWS_PER_DEVICE
NUM_CLASSES = 256
NUM_FEATURES = 8
DENSE_LABELS = 230
TOLERANCE = {np.float32: 1e-6, np.float64: 1e-13}

# Auto axes: the GSPMD partitioner places the work, as in a plain
# ``jax.jit`` over sharded arrays. (jax.make_mesh defaults to explicit axes
# in JAX 0.10; those are checked separately below.)
MESH = Mesh(np.array(jax.devices()[:NUM_DEVICES]), (AXIS,), axis_types=(AxisType.Auto,))
BATCH = NamedSharding(MESH, P(AXIS))

# --- Data ------------------------------------------------------------------

def _multi_hot(rng):
  hot = np.zeros((NUM_ROWS, NUM_CLASSES), bool)
  for row in range(NUM_ROWS):
    count = DENSE_LABELS if row == 0 else rng.integers(1, 5)
    hot[row, rng.choice(NUM_CLASSES, count, replace=False)] = True
  return hot


def make_data(dtype):
  """Scores, a linear model's features and parameters, and every target format."""
  rng = np.random.default_rng(0)
  index = np.int64 if dtype == np.float64 else np.int32
  hot = _multi_hot(rng)
  return {
      "scores": rng.normal(size=(NUM_ROWS, NUM_CLASSES)).astype(dtype),
      "features": rng.normal(size=(NUM_ROWS, NUM_FEATURES)).astype(dtype),
      "params": {
          "w": (rng.normal(size=(NUM_FEATURES, NUM_CLASSES)) / 2).astype(dtype),
          "b": rng.normal(size=NUM_CLASSES).astype(dtype),
      },
      "padded": np.asarray(losses.multi_hot_to_padded(hot)).astype(index),
      "multi_hot": hot.astype(index),
      "soft_multi_hot": hot.astype(dtype),
      "label": rng.integers(0, NUM_CLASSES, NUM_ROWS).astype(index),
  }


CLASS_WEIGHT = np.linspace(0.5, 1.5, NUM_CLASSES)


def _reduce(per_example, reduction):
  if reduction == "none":
    return per_example
  return jnp.mean(per_example) if reduction == "mean" else jnp.sum(per_example)


@dataclasses.dataclass(frozen=True)
class Case:
  loss: str                # the loss family
  api: str                 # "torch" (jaxmargin.<loss>) or "optax" (jaxmargin.losses)
  fn: Callable             # (scores, target, reduction) -> loss
  target: str              # the key of its target in make_data

  @property
  def id(self):
    return f"{self.loss}-{self.api}"


CASES = [
    Case("multilabel_margin", "torch",
         lambda s, t, r: jaxmargin.multilabel_margin_loss(s, t, reduction=r), "padded"),
    Case("multilabel_margin", "optax",
         lambda s, t, r: _reduce(losses.multilabel_margin_loss(s, t), r), "multi_hot"),
    Case("multi_margin", "torch",
         lambda s, t, r: jaxmargin.multi_margin_loss(
             s, t, weight=jnp.asarray(CLASS_WEIGHT, s.dtype), reduction=r), "label"),
    Case("multi_margin", "optax",
         lambda s, t, r: _reduce(losses.multiclass_margin_loss(
             s, t, class_weights=jnp.asarray(CLASS_WEIGHT, s.dtype)), r), "label"),
    Case("multilabel_soft_margin", "torch",
         lambda s, t, r: jaxmargin.multilabel_soft_margin_loss(s, t, reduction=r),
         "soft_multi_hot"),
    Case("multilabel_soft_margin", "optax",
         lambda s, t, r: _reduce(losses.multilabel_soft_margin_loss(
             s, t, class_weights=jnp.asarray(CLASS_WEIGHT, s.dtype)), r),
         "soft_multi_hot"),
]


def params_of(cases):
  """``pytest.param`` per case, with the case id."""
  return [pytest.param(case, id=case.id) for case in cases]


def on_one_device(tree):
  return jax.device_put(tree, jax.devices()[0])


def assert_close(actual, expected, dtype, what):
  rtol = TOLERANCE[dtype]
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.dtype == expected.dtype == dtype, what
  atol = rtol * float(np.max(np.abs(expected), initial=0.0))
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


REDUCTIONS = {"mean": lax.pmean, "sum": lax.psum}


def model_loss(case, params, features, target, reduction):
  """A linear model's loss: the parameters are what data parallelism replicates."""
  return case.fn(features @ params["w"] + params["b"], target, reduction)


def both_reductions(case, params, features, target, collective=False,
                    reductions=tuple(REDUCTIONS)):
  """``{reduction: (loss, parameter gradients)}`` for each of ``reductions``.

  One program for 'mean' and 'sum' halves the compilations (the budget of
  this suite is its compile time). With ``collective``, the per-shard values
  are reduced across ``AXIS`` with the reduction's collective: ``pmean`` for
  'mean' (equal shards), ``psum`` for 'sum'.
  """
  out = {}
  for reduction in reductions:
    reduce_across = REDUCTIONS[reduction]
    value, grads = jax.value_and_grad(model_loss, argnums=1)(case, params, features,
                                                             target, reduction)
    if collective:
      value, grads = reduce_across(value, AXIS), jax.tree.map(
          lambda g: reduce_across(g, AXIS), grads)
    out[reduction] = value, grads
  return out


# Built once, so that each case compiles once for all the tests that use it.
_GLOBAL_STEP = jax.jit(both_reductions, static_argnums=0)


def one_device_step(case, data):
  """The global losses and parameter gradients, computed on one device."""
  return _GLOBAL_STEP(
      case, *on_one_device((data["params"], data["features"], data[case.target])))


@functools.cache
def shard_map_step(case, check_vma):
  """A data-parallel step: per-shard losses and gradients, then psum or pmean."""

  def step(params, features, target):
    if check_vma:
      # Marked varying, the parameters get per-shard gradients that this step
      # reduces itself; left invariant, JAX would psum their gradients for us.
      params = jax.tree.map(lambda a: lax.pcast(a, AXIS, to="varying"), params)
    return both_reductions(case, params, features, target, collective=True)

  return jax.jit(jax.shard_map(step, mesh=MESH, in_specs=(P(), P(AXIS), P(AXIS)),
                               out_specs=P(), check_vma=check_vma))


def assert_steps_agree(actual, expected, dtype):
  for reduction in actual:
    value, grads = actual[reduction]
    expected_value, expected_grads = expected[reduction]
    assert_close(value, expected_value, dtype, f"{reduction}: value")
    for name in ("w", "b"):
      assert_close(grads[name], expected_grads[name], dtype,
                   f"{reduction}: gradient of {name}")


@functools.cache
def scores_program(case):
  """The mean loss and its gradient, and the per-example losses, of scores."""

  def program(scores, target):
    value, grad = jax.value_and_grad(lambda s: case.fn(s, target, "mean"))(scores)
    return value, grad, case.fn(scores, target, "none")

  return jax.jit(program)


def reference_multilabel_margin(scores, multi_hot):
  """Per-row losses and gradients of their sum, by brute force in float64."""
  scores = scores.astype(np.float64)
  values, grads = [], np.zeros_like(scores)
  for row, (x, hot) in enumerate(zip(scores, multi_hot.astype(bool))):
    z = 1.0 - x[hot][:, None] + x[~hot][None, :]
    active = z > 0
    values.append(np.sum(np.where(active, z, 0.0)) / NUM_CLASSES)
    grads[row, ~hot] = active.sum(axis=0) / NUM_CLASSES
    grads[row, hot] = -active.sum(axis=1) / NUM_CLASSES
  return np.array(values), grads


def assert_matches_brute_force(per_example, grad_of_sum, data):
  """multilabel_margin_loss against :func:`reference_multilabel_margin`."""
  expected_values, expected_grads = reference_multilabel_margin(data["scores"],
                                                                data["multi_hot"])
  # float32 sums of up to 230 x 26 hinge terms against float64 ones (measured:
  # 1.1e-7 relative).
  np.testing.assert_allclose(per_example, expected_values, rtol=1e-6)
  # Counts of active terms over C and N, powers of 2: exact in floating point.
  np.testing.assert_array_equal(grad_of_sum, expected_grads.astype(per_example.dtype))


# --- Batch-sharded inputs under jit -----------------------------------------

def test_process_has_8_devices_and_starts_without_x64():
  assert jax.device_count() == NUM_DEVICES
  assert not jax.config.jax_enable_x64


# float64 (with int64 targets, as torch has them) for the losses that compile
# fast (a multilabel_margin_loss program takes ~2 s, the budget of this suite),
# each in one API: the two APIs of a loss share its core, and the sharding of
# the batch does not depend on the dtype.
@pytest.mark.parametrize("case, dtype", [
    *(pytest.param(c, np.float32, id=f"{c.id}-float32") for c in CASES),
    *(pytest.param(c, np.float64, id=f"{c.id}-float64") for c in CASES
      if c.id in ("multi_margin-torch", "multilabel_soft_margin-optax"))])
def test_batch_sharded_jit_matches_one_device(case, dtype):
  with enable_x64(dtype == np.float64):
    data = make_data(dtype)
    scores, target = data["scores"], data[case.target]
    program = scores_program(case)
    expected = program(*on_one_device((scores, target)))
    sharded_scores, sharded_target = jax.device_put((scores, target), BATCH)
    value, grad, per_example = program(sharded_scores, sharded_target)
  for what, actual, wanted in zip(["mean", "its gradient", "per-example losses"],
                                  (value, grad, per_example), expected):
    assert_close(actual, wanted, dtype, what)
  # The mean is on every device; the gradient and per-example losses are
  # split over the batch as the scores are.
  assert value.sharding.is_fully_replicated
  assert grad.sharding.is_equivalent_to(sharded_scores.sharding, grad.ndim)
  assert per_example.sharding.is_equivalent_to(BATCH, per_example.ndim)
  if case.loss == "multilabel_margin":
    assert_matches_brute_force(np.asarray(per_example), np.asarray(grad) * NUM_ROWS, data)


@pytest.mark.parametrize("case", params_of(CASES))
def test_batch_sharded_jit_with_explicit_mesh_axes(case):
  # jax.make_mesh's default in JAX 0.10, used with jax.set_mesh as its docs say.
  mesh = jax.make_mesh((NUM_DEVICES,), (AXIS,), axis_types=(AxisType.Explicit,))
  data = make_data(np.float32)
  scores, target = data["scores"], data[case.target]
  program = scores_program(case)
  expected = program(*on_one_device((scores, target)))
  with jax.set_mesh(mesh):
    sharded = jax.device_put((scores, target), NamedSharding(mesh, P(AXIS)))
    actual = program(*sharded)
  for what, actual_part, wanted in zip(["mean", "its gradient", "per-example losses"],
                                       actual, expected):
    assert_close(actual_part, wanted, np.float32, what)
  assert actual[1].sharding.is_equivalent_to(sharded[0].sharding, 2)


# --- shard_map and pmap data-parallel steps ---------------------------------

# The step without check_vma, and under pmap below, in one API of each loss
# (the torch API of one, the Optax API of the next, in turn): the two APIs of
# a loss share its core (its custom derivative and the manual-axis types it marks),
# so each core runs in every mode and each API in every mode.
ONE_API_A_LOSS = [c for c in CASES if c.id in ("multilabel_margin-torch", "multi_margin-optax",
                                                "multilabel_soft_margin-torch")]
OTHER_API = [c for c in CASES if c not in ONE_API_A_LOSS]


# check_vma=True is JAX's default, for every loss in both APIs; False is the
# setting of code that predates varying manual axes, where the cores mark
# nothing varying.
@pytest.mark.parametrize("case, check_vma", [
    *(pytest.param(c, True, id=f"{c.id}-check_vma") for c in CASES),
    *(pytest.param(c, False, id=f"{c.id}-no_check_vma") for c in ONE_API_A_LOSS)])
def test_shard_map_step_matches_global_loss(case, check_vma):
  data = make_data(np.float32)
  actual = shard_map_step(case, check_vma=check_vma)(data["params"], data["features"],
                                                     data[case.target])
  assert_steps_agree(actual, one_device_step(case, data), np.float32)
  assert all(g.sharding.is_fully_replicated for g in jax.tree.leaves(actual))


@pytest.mark.parametrize("case", params_of(OTHER_API))
def test_pmap_step_matches_global_loss(case):
  data = make_data(np.float32)

  def per_device(a):
    return a.reshape(NUM_DEVICES, ROWS_PER_DEVICE, *a.shape[1:])

  # The mean only: pmap is built on shard_map, whose sum the test above checks.
  step = functools.partial(both_reductions, case, collective=True, reductions=("mean",))
  # JAX 0.10.2 calls pmap the "old way" (now built on jit and shard_map) but
  # does not deprecate it; should a later JAX warn, this check is about pmap
  # working, so the warning is expected here rather than an error.
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*pmap.*", category=DeprecationWarning)
    actual = jax.pmap(step, axis_name=AXIS, in_axes=(None, 0, 0))(
        data["params"], per_device(data["features"]), per_device(data[case.target]))
  expected = one_device_step(case, data)
  assert set(actual) == {"mean"}
  for device in range(NUM_DEVICES):
    assert_steps_agree(jax.tree.map(lambda a: a[device], actual), expected, np.float32)


# --- checkify reports a bad target in every sharded program ------------------

def with_bad_target_in_row_3(target):
  """A copy of a target array with one invalid value, on device 1 (rows 2-3)."""
  bad = np.array(target)
  if bad.ndim == 1:
    bad[3] = NUM_CLASSES         # a class index past the last class
  elif np.any(bad < 0):
    bad[3, 0] = NUM_CLASSES      # padded label lists: the same
  else:
    bad[3, 0] = -1               # multi-hot: a padded-list value by mistake
  return bad


@pytest.mark.parametrize("case", params_of([c for c in CASES
                                            if c.loss != "multilabel_soft_margin"]))
def test_checkify_reports_a_bad_target_in_every_sharded_program(case):
  # The target check is an effect-free primitive with a checkify rule; here
  # checkify finds it inside a sharded jit, with Explicit mesh axes, and in
  # each shard of a shard_map step.
  data = make_data(np.float32)
  bad = with_bad_target_in_row_3(data[case.target])
  features, scores, target = jax.device_put((data["features"], data["scores"], bad), BATCH)
  program = checkify.checkify(scores_program(case))
  assert program(scores, jax.device_put(data[case.target], BATCH))[0].get() is None
  errors = {"sharded jit": program(scores, target)[0],
            "shard_map step": checkify.checkify(shard_map_step(case, check_vma=True))(
                data["params"], features, target)[0]}
  mesh = jax.make_mesh((NUM_DEVICES,), (AXIS,), axis_types=(AxisType.Explicit,))
  with jax.set_mesh(mesh):
    errors["explicit axes"] = program(*jax.device_put((data["scores"], bad),
                                                      NamedSharding(mesh, P(AXIS))))[0]
  for what, error in errors.items():
    assert error.get() is not None and re.search(r"values must (lie in|be 0 or 1)",
                                                 error.get()), what


# --- multilabel_margin_loss's run-time method choice, per shard ---------------

def test_shards_choose_different_multilabel_margin_methods():
  # The premise of the shard_map and pmap tests of multilabel_margin_loss:
  # there, each shard picks its method from its own rows, and device 0 sorts
  # while the others loop over slots (under a sharded jit, the longest list is
  # the batch's and every device sorts).
  lengths = make_data(np.float32)["multi_hot"].sum(axis=1)
  longest = lengths.reshape(NUM_DEVICES, ROWS_PER_DEVICE).max(axis=1)
  assert [bool(sort_is_cheaper(n, NUM_CLASSES)) for n in longest] == [True] + [False] * 7


# --- Lowered programs: no host callbacks, no 64-bit types --------------------

CALLBACK_TARGET = re.compile(r"custom_call\s*@([\w.$-]+)")
WIDE_TENSOR = re.compile(r"tensor<(?:[0-9?]+x)*(?:f64|i64|ui64|complex<f64>)>")
# Attributes such as a collective's replica_groups or a reduce_window's
# padding are i64 tensors in StableHLO whatever the data's types.
TENSOR_ATTRIBUTE = re.compile(r"\b\w+ = dense<[^>]*> : tensor<[^>]*>")


def host_callbacks(text):
  """The custom-call targets of a lowered program that call back to the host."""
  found = {t for t in CALLBACK_TARGET.findall(text) if "callback" in t.lower()}
  if "callback" in text.lower() and not found:
    found.add("<'callback' in the program text>")
  return found


def test_callback_detector_sees_a_debug_callback():
  def with_callback(x):
    jax.debug.callback(lambda v: None, x)
    return jnp.sum(x)

  assert host_callbacks(jax.jit(with_callback).lower(jnp.ones(3)).as_text())


def test_64_bit_detector_sees_float64_data():
  with enable_x64(True):
    text = jax.jit(jnp.sum).lower(np.ones((2, 3), np.float64)).as_text()
  assert WIDE_TENSOR.search(TENSOR_ATTRIBUTE.sub("", text))


@pytest.mark.parametrize("case", params_of(CASES))
def test_lowered_programs_have_no_host_callbacks_or_64_bit_types(case):
  data = make_data(np.float32)
  features, scores, target = jax.device_put(
      (data["features"], data["scores"], data[case.target]), BATCH)
  lowered = {
      "sharded jit": scores_program(case).lower(scores, target),
      "shard_map step": shard_map_step(case, check_vma=False).lower(
          data["params"], features, target),
  }
  for what, program in lowered.items():
    text = program.as_text()
    assert not host_callbacks(text), what
    # Trivially so with x64 off, as on a TPU: jnp makes no 64-bit arrays.
    assert not WIDE_TENSOR.search(TENSOR_ATTRIBUTE.sub("", text)), what
