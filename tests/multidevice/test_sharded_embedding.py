"""The embedding losses on 8 devices: sharded ``jit`` (Auto and Explicit axes) and ``shard_map``.

``tests/test_multidevice.py`` runs this module in a process of its own with 8
virtual CPU devices (see ``conftest.py`` here), in JAX's default 32-bit mode;
the float64 checks turn x64 on for themselves.

Every loss of the family, in both APIs (``pairwise_distance``,
``cosine_embedding_loss``, ``triplet_margin_loss`` with and without the swap,
``triplet_margin_with_distance_loss`` with the default and a custom
distance), is computed with its batch split over the 8 devices and held to
the same computation on one device: the mean loss, its gradients with
respect to every input, and the per-example losses. Tolerances, float32
(float64): ``rtol=1e-6`` (``1e-13``) plus that times the largest entry, as in
``test_sharded.py`` (the shards reorder the batch sums).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable

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
from tests.jax_versions import enable_x64

NUM_DEVICES = 8
if jax.device_count() < NUM_DEVICES:
  pytest.skip(
    f"needs {NUM_DEVICES} devices, found {jax.device_count()}: run tests/test_multidevice.py",
    allow_module_level=True,
  )

AXIS = "batch"
NUM_ROWS, NUM_FEATURES, NUM_INPUTS = 16, 8, 5
TOLERANCE = {np.float32: 1e-6, np.float64: 1e-13}
MESH = Mesh(np.array(jax.devices()[:NUM_DEVICES]), (AXIS,), axis_types=(AxisType.Auto,))
BATCH = NamedSharding(MESH, P(AXIS))


def make_data(dtype):
  """Anchors, positives, negatives, ±1 targets, and a linear model's inputs and parameters."""
  rng = np.random.default_rng(0)
  anchor = rng.normal(size=(NUM_ROWS, NUM_FEATURES))
  return {
    "anchor": anchor.astype(dtype),
    "positive": (anchor + 0.5 * rng.normal(size=anchor.shape)).astype(dtype),
    "negative": rng.normal(size=anchor.shape).astype(dtype),
    "target": np.where(rng.random(NUM_ROWS) < 0.5, 1, -1).astype(np.int32),
    "features": rng.normal(size=(3, NUM_ROWS, NUM_INPUTS)).astype(dtype),
    "kernel": (rng.normal(size=(NUM_INPUTS, NUM_FEATURES)) / 2).astype(dtype),
  }


def _manhattan(x, y):
  return jaxmargin.pairwise_distance(x, y, p=1)


def _mean(per_example, reduction):
  return per_example if reduction == "none" else jnp.mean(per_example)


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  # (a, b, c, target, reduction) -> loss; b and c are the second and third
  # embeddings (c is unused by the pairs' losses).
  fn: Callable
  inputs: int = 3  # how many of the embeddings it uses


CASES = [
  Case(
    "pairwise_distance", lambda a, b, c, t, r: _mean(jaxmargin.pairwise_distance(a, b, p=3), r), 2
  ),
  Case(
    "cosine-torch",
    lambda a, b, c, t, r: jaxmargin.cosine_embedding_loss(a, b, t, margin=0.1, reduction=r),
    2,
  ),
  Case(
    "cosine-optax",
    lambda a, b, c, t, r: _mean(losses.cosine_embedding_loss(a, b, t, margin=0.1), r),
    2,
  ),
  Case(
    "triplet-torch",
    lambda a, b, c, t, r: jaxmargin.triplet_margin_loss(a, b, c, margin=2.0, reduction=r),
  ),
  Case(
    "triplet-torch-swap-p-inf",
    lambda a, b, c, t, r: jaxmargin.triplet_margin_loss(
      a, b, c, margin=2.0, p=jnp.inf, swap=True, reduction=r
    ),
  ),
  Case(
    "triplet-optax",
    lambda a, b, c, t, r: _mean(
      losses.triplet_margin_loss(a, b, c, margin=2.0, p=1.5, swap=True), r
    ),
  ),
  Case(
    "triplet-with-distance",
    lambda a, b, c, t, r: jaxmargin.triplet_margin_with_distance_loss(
      a, b, c, margin=2.0, reduction=r
    ),
  ),
  Case(
    "triplet-with-custom-distance",
    lambda a, b, c, t, r: jaxmargin.triplet_margin_with_distance_loss(
      a, b, c, distance_function=_manhattan, margin=2.0, swap=True, reduction=r
    ),
  ),
]


def params_of(cases):
  return [pytest.param(case, id=case.name) for case in cases]


def assert_close(actual, expected, dtype, what):
  rtol = TOLERANCE[dtype]
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.dtype == expected.dtype == dtype, what
  atol = rtol * float(np.max(np.abs(expected), initial=0.0))
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


@functools.cache
def embeddings_program(case):
  """The mean loss, its gradients with respect to the three embeddings, the per-example losses."""

  def program(a, b, c, t):
    value, grads = jax.value_and_grad(lambda *x: case.fn(*x, t, "mean"), argnums=(0, 1, 2))(a, b, c)
    return value, grads, case.fn(a, b, c, t, "none")

  return jax.jit(program)


def _inputs(data):
  return data["anchor"], data["positive"], data["negative"], data["target"]


def _assert_programs_agree(actual, expected, dtype):
  value, grads, per_example = actual
  assert_close(value, expected[0], dtype, "mean")
  for name, grad, wanted in zip("abc", grads, expected[1], strict=True):
    assert_close(grad, wanted, dtype, f"gradient of {name}")
  assert_close(per_example, expected[2], dtype, "per-example losses")


def test_process_has_8_devices_and_starts_without_x64():
  assert jax.device_count() == NUM_DEVICES
  assert not jax.config.jax_enable_x64


@pytest.mark.parametrize(
  "case, dtype",
  [
    *(pytest.param(c, np.float32, id=f"{c.name}-float32") for c in CASES),
    *(pytest.param(c, np.float64, id=f"{c.name}-float64") for c in CASES[::3]),
  ],
)
def test_batch_sharded_jit_matches_one_device(case, dtype):
  with enable_x64(dtype == np.float64):
    inputs = _inputs(make_data(dtype))
    program = embeddings_program(case)
    expected = program(*jax.device_put(inputs, jax.devices()[0]))
    sharded = jax.device_put(inputs, BATCH)
    actual = program(*sharded)
  _assert_programs_agree(actual, expected, dtype)
  # The mean is on every device; the gradients and per-example losses are
  # split over the batch as the embeddings are.
  value, grads, per_example = actual
  assert value.sharding.is_fully_replicated
  for grad in grads[: case.inputs]:  # an unused input's gradient is a replicated 0
    assert grad.sharding.is_equivalent_to(sharded[0].sharding, grad.ndim)
  assert per_example.sharding.is_equivalent_to(BATCH, per_example.ndim)


@pytest.mark.parametrize("case", params_of(CASES))
def test_batch_sharded_jit_with_explicit_mesh_axes(case):
  mesh = jax.make_mesh((NUM_DEVICES,), (AXIS,), axis_types=(AxisType.Explicit,))
  inputs = _inputs(make_data(np.float32))
  program = embeddings_program(case)
  expected = program(*jax.device_put(inputs, jax.devices()[0]))
  with jax.set_mesh(mesh):
    sharded = jax.device_put(inputs, NamedSharding(mesh, P(AXIS)))
    actual = program(*sharded)
  _assert_programs_agree(actual, expected, np.float32)
  assert actual[1][0].sharding.is_equivalent_to(sharded[0].sharding, 2)


# --- a data-parallel step with shard_map -------------------------------------------


def model_loss(case, kernel, features, target, reduction):
  """A linear embedding of three inputs (anchor, positive, negative features)."""
  a, b, c = (x @ kernel for x in features)
  return case.fn(a, b, c, target, reduction)


def _global_step(case, kernel, features, target):
  return jax.value_and_grad(model_loss, argnums=1)(case, kernel, features, target, "mean")


@functools.cache
def shard_map_step(case, check_vma):
  def step(kernel, features, target):
    if check_vma:
      kernel = lax.pcast(kernel, AXIS, to="varying")
    value, grad = _global_step(case, kernel, features, target)
    return lax.pmean(value, AXIS), lax.pmean(grad, AXIS)

  return jax.jit(
    jax.shard_map(
      step, mesh=MESH, in_specs=(P(), P(None, AXIS), P(AXIS)), out_specs=P(), check_vma=check_vma
    )
  )


# check_vma (JAX's default) for every case; without it for one case only:
# the embedding losses are rowwise jnp with custom_jvp helpers and no
# custom_vjp, so they mark nothing varying themselves and nothing of theirs
# depends on the check (the step's own pcast and pmean are the same for
# every case).
@pytest.mark.parametrize(
  "case, check_vma",
  [
    *(pytest.param(c, True, id=f"{c.name}-check_vma") for c in CASES),
    pytest.param(CASES[3], False, id=f"{CASES[3].name}-no_check_vma"),
  ],
)
def test_shard_map_step_matches_global_loss(case, check_vma):
  data = make_data(np.float32)
  args = (data["kernel"], data["features"], data["target"])
  expected = jax.jit(_global_step, static_argnums=0)(case, *jax.device_put(args, jax.devices()[0]))
  actual = shard_map_step(case, check_vma)(*args)
  assert_close(actual[0], expected[0], np.float32, "mean")
  assert_close(actual[1], expected[1], np.float32, "kernel gradient")
  assert all(x.sharding.is_fully_replicated for x in actual)


def test_checkify_reports_a_traced_margin_in_a_sharded_program():
  data = make_data(np.float32)
  a, b, c = jax.device_put((data["anchor"], data["positive"], data["negative"]), BATCH)

  def program(a, b, c, margin):
    return jaxmargin.triplet_margin_loss(a, b, c, margin=margin, reduction="none")

  checked = jax.jit(checkify.checkify(program))
  error, out = checked(a, b, c, -1.0)
  assert re.search(r"triplet_margin_loss: margin is -1\.0", error.get())
  assert np.all(np.isnan(out))
  error, out = checked(a, b, c, 1.0)
  assert error.get() is None and np.all(np.isfinite(out))
