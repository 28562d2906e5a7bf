"""margin_ranking, hinge_embedding and soft_margin losses, both APIs, on 8 devices.

Run by ``tests/test_multidevice.py`` in a process of its own with 8 virtual CPU
devices (see ``conftest.py`` here), which starts in JAX's default 32-bit mode;
the float64 checks turn x64 on only for themselves.

A sharded result is held to the same computation on one device: a sharded
``jit`` of the batch (``Auto`` mesh axes, where the partitioner places the
work, and ``Explicit`` ones, sharding in the types) and a ``shard_map``
data-parallel step (per-shard losses and parameter gradients reduced with
``pmean`` or ``psum``, with and without the varying-axes check). The losses are
elementwise, so nothing of theirs needs a collective: the only cross-device
work is the reduction. Tolerances as in ``test_sharded.py``: the value within
``rtol=1e-6`` (``1e-13`` in float64) of the one-device value, a gradient
within that plus the same times its largest entry (a sum over the batch,
reordered by the shards, can cancel to near 0 at one entry).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxmargin
from jaxmargin import losses
from tests.jax_versions import enable_x64

NUM_DEVICES = 8
if jax.device_count() < NUM_DEVICES:
  pytest.skip(
    f"needs {NUM_DEVICES} devices, found {jax.device_count()}: run "
    "tests/test_multidevice.py, which starts a process with 8 virtual CPU devices",
    allow_module_level=True,
  )

AXIS = "batch"
NUM_ROWS, NUM_FEATURES, NUM_OUTPUTS = 16, 8, 4
TOLERANCE = {np.float32: 1e-6, np.float64: 1e-13}
MESH = Mesh(np.array(jax.devices()[:NUM_DEVICES]), (AXIS,), axis_types=(AxisType.Auto,))
BATCH = NamedSharding(MESH, P(AXIS))


def _reduce(per_element, reduction):
  if reduction == "none":
    return per_element
  return jnp.mean(per_element) if reduction == "mean" else jnp.sum(per_element)


@dataclasses.dataclass(frozen=True)
class Case:
  loss: str
  api: str  # "torch" (jaxmargin.<loss>) or "optax" (jaxmargin.losses)
  fn: Callable  # (first, second, labels, reduction) -> loss, from two (N, K) arrays

  @property
  def id(self):
    return f"{self.loss}-{self.api}"


# Each loss of two (N, K) arrays and (N, K) labels: the ranking loss of two
# scores, the hinge embedding loss of their distance, the soft margin loss of
# the first (the second adds to it, so that both get gradients).
CASES = [
  Case(
    "margin_ranking",
    "torch",
    lambda a, b, y, r: jaxmargin.margin_ranking_loss(a, b, y, margin=0.3, reduction=r),
  ),
  Case(
    "margin_ranking",
    "optax",
    lambda a, b, y, r: _reduce(losses.margin_ranking_loss(a, b, y, margin=0.3), r),
  ),
  Case(
    "hinge_embedding",
    "torch",
    lambda a, b, y, r: jaxmargin.hinge_embedding_loss(jnp.abs(a - b), y, margin=1.5, reduction=r),
  ),
  Case(
    "hinge_embedding",
    "optax",
    lambda a, b, y, r: _reduce(losses.hinge_embedding_loss(jnp.abs(a - b), y, margin=1.5), r),
  ),
  Case(
    "soft_margin", "torch", lambda a, b, y, r: jaxmargin.soft_margin_loss(a + b, y, reduction=r)
  ),
  Case("soft_margin", "optax", lambda a, b, y, r: _reduce(losses.soft_margin_loss(a + b, y), r)),
]
PARAMS = [pytest.param(case, id=case.id) for case in CASES]


def make_data(dtype):
  rng = np.random.default_rng(0)
  return {
    "first": rng.normal(size=(NUM_ROWS, NUM_OUTPUTS)).astype(dtype),
    "second": rng.normal(size=(NUM_ROWS, NUM_OUTPUTS)).astype(dtype),
    "labels": rng.choice([-1.0, 1.0], size=(NUM_ROWS, NUM_OUTPUTS)).astype(dtype),
    "features1": rng.normal(size=(NUM_ROWS, NUM_FEATURES)).astype(dtype),
    "features2": rng.normal(size=(NUM_ROWS, NUM_FEATURES)).astype(dtype),
    "params": {
      "w": (rng.normal(size=(NUM_FEATURES, NUM_OUTPUTS)) / 2).astype(dtype),
      "b": rng.normal(size=NUM_OUTPUTS).astype(dtype),
    },
  }


def on_one_device(tree):
  return jax.device_put(tree, jax.devices()[0])


def assert_close(actual, expected, dtype, what):
  rtol = TOLERANCE[dtype]
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.dtype == expected.dtype == dtype, what
  atol = rtol * float(np.max(np.abs(expected), initial=0.0))
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


@functools.cache
def array_program(case):
  """The mean loss, its gradients with respect to both arrays, and the per-element losses."""

  def program(first, second, labels):
    value, grads = jax.value_and_grad(lambda a, b: case.fn(a, b, labels, "mean"), argnums=(0, 1))(
      first, second
    )
    return value, grads, case.fn(first, second, labels, "none")

  return jax.jit(program)


def check_program_outputs(actual, expected, dtype, sharding):
  value, (grad1, grad2), per_element = actual
  want_value, (want1, want2), want_per_element = expected
  assert_close(value, want_value, dtype, "mean")
  assert_close(grad1, want1, dtype, "gradient of the first array")
  assert_close(grad2, want2, dtype, "gradient of the second array")
  assert_close(per_element, want_per_element, dtype, "per-element losses")
  # The mean is on every device; the gradients and per-element losses are
  # split over the batch as the arrays are.
  assert value.sharding.is_fully_replicated
  for array in (grad1, grad2, per_element):
    assert array.sharding.is_equivalent_to(sharding, 2)


def test_process_has_8_devices_and_starts_without_x64():
  assert jax.device_count() == NUM_DEVICES
  assert not jax.config.read("jax_enable_x64")


# float32 for every loss in both APIs; float64 for each loss in one API (the
# APIs of a loss share its elementwise core, and the batch's sharding does not
# depend on the dtype), the APIs in turn.
FLOAT64_IDS = ("margin_ranking-torch", "hinge_embedding-optax", "soft_margin-torch")


@pytest.mark.parametrize(
  "case, dtype",
  [
    *(pytest.param(c, np.float32, id=f"{c.id}-float32") for c in CASES),
    *(pytest.param(c, np.float64, id=f"{c.id}-float64") for c in CASES if c.id in FLOAT64_IDS),
  ],
)
def test_batch_sharded_jit_matches_one_device(case, dtype):
  with enable_x64(dtype == np.float64):
    data = make_data(dtype)
    arrays = (data["first"], data["second"], data["labels"])
    program = array_program(case)
    expected = program(*on_one_device(arrays))
    sharded = jax.device_put(arrays, BATCH)
    actual = program(*sharded)
  check_program_outputs(actual, expected, dtype, BATCH)


@pytest.mark.parametrize("case", PARAMS)
def test_batch_sharded_jit_with_explicit_mesh_axes(case):
  mesh = jax.make_mesh((NUM_DEVICES,), (AXIS,), axis_types=(AxisType.Explicit,))
  data = make_data(np.float32)
  arrays = (data["first"], data["second"], data["labels"])
  program = array_program(case)
  expected = program(*on_one_device(arrays))
  with jax.set_mesh(mesh):
    sharding = NamedSharding(mesh, P(AXIS))
    actual = program(*jax.device_put(arrays, sharding))
  check_program_outputs(actual, expected, np.float32, sharding)


# --- a linear model's data-parallel step ---------------------------------------------------

REDUCTIONS = {"mean": lax.pmean, "sum": lax.psum}


def model_loss(case, params, features1, features2, labels, reduction):
  def score(features):
    return features @ params["w"] + params["b"]

  return case.fn(score(features1), score(features2), labels, reduction)


def both_reductions(case, params, features1, features2, labels, collective=False):
  out = {}
  for reduction, reduce_across in REDUCTIONS.items():
    value, grads = jax.value_and_grad(model_loss, argnums=1)(
      case, params, features1, features2, labels, reduction
    )
    if collective:
      value = reduce_across(value, AXIS)
      grads = jax.tree.map(lambda g, f=reduce_across: f(g, AXIS), grads)
    out[reduction] = value, grads
  return out


_GLOBAL_STEP = jax.jit(both_reductions, static_argnums=0)


@functools.cache
def shard_map_step(case, check_vma):
  def step(params, features1, features2, labels):
    if check_vma:
      params = jax.tree.map(lambda a: lax.pcast(a, AXIS, to="varying"), params)
    return both_reductions(case, params, features1, features2, labels, collective=True)

  return jax.jit(
    jax.shard_map(
      step,
      mesh=MESH,
      in_specs=(P(), P(AXIS), P(AXIS), P(AXIS)),
      out_specs=P(),
      check_vma=check_vma,
    )
  )


# check_vma (JAX's default) for every loss in both APIs; without it for one
# case only: these losses are elementwise jnp with custom_jvp helpers and no
# custom_vjp, so they mark nothing varying themselves and nothing of theirs
# depends on the check (the step's own pcast and collectives are the same
# for every loss).
@pytest.mark.parametrize(
  "case, check_vma",
  [
    *(pytest.param(c, True, id=f"{c.id}-check_vma") for c in CASES),
    pytest.param(CASES[0], False, id=f"{CASES[0].id}-no_check_vma"),
  ],
)
def test_shard_map_step_matches_global_loss(case, check_vma):
  data = make_data(np.float32)
  inputs = (data["params"], data["features1"], data["features2"], data["labels"])
  actual = shard_map_step(case, check_vma)(*inputs)
  expected = _GLOBAL_STEP(case, *on_one_device(inputs))
  for reduction in REDUCTIONS:
    value, grads = actual[reduction]
    want_value, want_grads = expected[reduction]
    assert_close(value, want_value, np.float32, f"{reduction}: value")
    for name in ("w", "b"):
      assert_close(grads[name], want_grads[name], np.float32, f"{reduction}: gradient of {name}")
  assert all(g.sharding.is_fully_replicated for g in jax.tree.leaves(actual))
