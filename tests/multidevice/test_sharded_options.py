"""``class_weights`` and ``hard_negatives`` of the multi-label margin loss on 8 devices.

The Optax-style loss with batch-sharded scores (``jit`` over Auto and Explicit
mesh axes, and ``shard_map``), and the fused loss of ``jaxmargin.linear``
with its classifier split by class (``shard_map`` with ``class_axis_name``,
and ``jit`` over a kernel placed split by class), must give the one-device
values and gradients, those of the class weights included. Tolerances are
those of ``test_sharded.py`` and ``test_linear_sharded.py``.
``tests/test_multidevice.py`` runs this module with 8 virtual CPU devices.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmargin import linear, losses
from tests.jax_versions import enable_x64
from tests.multidevice import test_linear_sharded as fused_data
from tests.multidevice import test_linear_sharded_jit as placed_kernel
from tests.multidevice import test_sharded as batch_data

NUM_DEVICES = 8
if jax.device_count() < NUM_DEVICES:
  pytest.skip(f"needs {NUM_DEVICES} devices", allow_module_level=True)

AXIS = batch_data.AXIS
HARD = 20          # of 256 classes; row 0 (230 labels) has only 26 negatives


# --- the Optax-style loss, batch-sharded --------------------------------------------


def _scores_program():
  def program(scores, hot, weights):
    def mean(s, w):
      return jnp.mean(losses.multilabel_margin_loss(s, hot, class_weights=w, hard_negatives=HARD))
    value, grads = jax.value_and_grad(mean, argnums=(0, 1))(scores, weights)
    per_example = losses.multilabel_margin_loss(scores, hot, class_weights=weights,
                                                hard_negatives=HARD)
    return value, grads, per_example
  return jax.jit(program)


def _inputs(dtype):
  data = batch_data.make_data(dtype)
  weights = jnp.asarray(batch_data.CLASS_WEIGHT, dtype)
  return data["scores"], data["multi_hot"], weights


def _assert_agree(got, want, dtype):
  for what, a, e in zip(("mean", "score gradient", "weight gradient", "per-example"),
                        jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    batch_data.assert_close(a, e, dtype, what)


# float64 under Auto axes here, float32 under Explicit ones below and in shard_map.
def test_batch_sharded_jit_matches_one_device():
  dtype = np.float64
  with enable_x64(True):
    scores, hot, weights = _inputs(dtype)
    program = _scores_program()
    want = program(*batch_data.on_one_device((scores, hot, weights)))
    sharded = jax.device_put((scores, hot), batch_data.BATCH)
    got = program(*sharded, weights)
  _assert_agree(got, want, dtype)
  _, (grad, grad_weights), per_example = got
  assert grad.sharding.is_equivalent_to(sharded[0].sharding, 2)
  assert grad_weights.sharding.is_fully_replicated
  assert per_example.sharding.is_equivalent_to(batch_data.BATCH, 1)


@functools.cache
def _one_device_float32():
  """The float32 program's results on one device, on the host (for two tests)."""
  scores, hot, weights = _inputs(np.float32)
  return jax.device_get(_scores_program()(*batch_data.on_one_device((scores, hot, weights))))


def test_batch_sharded_jit_with_explicit_mesh_axes():
  mesh = jax.make_mesh((NUM_DEVICES,), (AXIS,), axis_types=(AxisType.Explicit,))
  scores, hot, weights = _inputs(np.float32)
  program = _scores_program()
  want = _one_device_float32()
  with jax.set_mesh(mesh):
    sharded = jax.device_put((scores, hot), NamedSharding(mesh, P(AXIS)))
    got = program(*sharded, jax.device_put(weights, NamedSharding(mesh, P())))
  _assert_agree(got, want, np.float32)


@pytest.mark.parametrize("check_vma", [True, False], ids=["check_vma", "no_check_vma"])
def test_shard_map_matches_one_device(check_vma):
  # Each device its rows (row 0's dense list sorts on device 0, the others
  # loop over slots); the class weights' gradient is summed over devices.
  scores, hot, weights = _inputs(np.float32)

  def local_mean(s, h, w):
    loss = losses.multilabel_margin_loss(s, h, class_weights=w, hard_negatives=HARD)
    return lax.pmean(jnp.mean(loss), AXIS)

  mapped = jax.shard_map(local_mean, mesh=batch_data.MESH, in_specs=(P(AXIS), P(AXIS), P()),
                         out_specs=P(), check_vma=check_vma)

  got = jax.jit(jax.value_and_grad(mapped, argnums=(0, 2)))(scores, hot, weights)
  # The one-device mean and gradients: those of the batch-sharded jit's program.
  value, (grad, grad_weights), _ = _one_device_float32()
  for what, a, e in zip(("mean", "score gradient", "weight gradient"), jax.tree.leaves(got),
                        (value, grad, grad_weights), strict=True):
    batch_data.assert_close(a, e, np.float32, what)


# --- the fused loss, its classifier split by class -------------------------------------

K_FUSED = 6        # + 5 label slots = 11 <= 13 classes a shard holds on 8 shards


def _fused_loss(d, lists, axis, reduction):
  return linear.multilabel_margin_loss(
      d["features"], d["kernel"], lists, bias=d["bias"], margin=d["margin"],
      class_weights=d["weights"], hard_negatives=K_FUSED, reduction=reduction,
      chunk_size=fused_data.CHUNK, class_axis_name=axis)


@functools.cache
def _fused_reference(dtype):
  """``{reduction: (value, gradients)}`` of the one-device fused loss, on the host.

  Once for each dtype, both reductions in one program, for the shard_map and
  the jit tests.
  """
  with enable_x64(dtype == np.float64):
    data = fused_data.make_data(dtype)
    lists = data.pop("lists")
    data.pop("classes")

    def one_device(reduction):
      return lambda d: jnp.sum(jnp.sin(_fused_loss(d, lists, None, reduction)))

    def both(d):
      return {r: jax.value_and_grad(one_device(r))(d) for r in ("none", "mean")}

    return jax.device_get(jax.jit(both)(data))


def _assert_fused_agree(got, dtype):
  """``got``, ``{reduction: (value, gradients)}``, against :func:`_fused_reference`."""
  rtol = 1e-9 if dtype == np.float64 else 1e-5
  want = _fused_reference(dtype)
  for reduction, (value, grads) in got.items():
    want_value, want_grads = want[reduction]
    np.testing.assert_allclose(value, want_value, rtol=rtol, err_msg=reduction)
    assert set(grads) == set(want_grads), reduction
    for key in grads:
      scale = float(np.max(np.abs(want_grads[key])))
      np.testing.assert_allclose(grads[key], want_grads[key], rtol=rtol, atol=rtol * scale,
                                 err_msg=f"{reduction}: {key}")


# Each mesh with both reductions in one program, and each dtype, in two compilations.
@pytest.mark.parametrize("mesh_name, dtype", [("model8", np.float64),
                                              ("data2xmodel4", np.float32)])
def test_class_parallel_shard_map_equals_one_device(mesh_name, dtype):
  with enable_x64(dtype == np.float64):
    data = fused_data.make_data(dtype)
    lists = data.pop("lists")
    data.pop("classes")
    specs, rows = fused_data._specs(mesh_name, False)    # the weights whole on each device

    def sharded(reduction):
      def local(d, y):
        out = _fused_loss(d, y, "model", reduction)
        return lax.pmean(out, "data") if reduction == "mean" and "data" in mesh_name else out

      mapped = jax.shard_map(local, mesh=fused_data._mesh(mesh_name), in_specs=(specs, rows),
                             out_specs=rows if reduction == "none" else P())
      return lambda d: jnp.sum(jnp.sin(mapped(d, lists)))

    def both(d):
      return {r: jax.value_and_grad(sharded(r))(d) for r in ("none", "mean")}

    got = jax.jit(both)(data)
  _assert_fused_agree(got, dtype)


def test_hard_negatives_beyond_a_shards_classes_raise():
  data = fused_data.make_data(np.float32)
  lists = data.pop("lists")
  data.pop("classes")
  specs, rows = fused_data._specs("model8", False)

  def local(d, y):
    return linear.multilabel_margin_loss(d["features"], d["kernel"], y, hard_negatives=9,
                                         class_axis_name="model")

  mapped = jax.shard_map(local, mesh=fused_data._mesh("model8"), in_specs=(specs, rows),
                         out_specs=rows)
  with pytest.raises(ValueError, match=r"^multilabel_margin_loss: hard_negatives plus the label "
                                       r"slots, k \+ K, is 14; expected at most 13, the classes "
                                       r"each device holds along 'model'"):
    jax.jit(mapped)(data, lists)


# Each kind of axes and each mesh once: Auto axes (the partitioner's split of
# the candidates' top_k and of the sweep) with the rows split over "data",
# Explicit ones with the rows whole. test_linear_sharded_jit.py runs the sweep
# and top_k under every pairing of the two.
@pytest.mark.parametrize("mesh_name, axis_type", [("data2xmodel4", "auto"),
                                                  ("model8", "explicit")])
def test_jit_over_a_class_split_kernel_equals_one_device(mesh_name, axis_type):
  with enable_x64(True):
    data = fused_data.make_data(np.float64)
    data.pop("classes")

    def objective(d, lists):
      return jnp.sum(jnp.sin(_fused_loss(d, lists, None, "none")))

    mesh = placed_kernel._mesh(mesh_name, axis_type)
    with placed_kernel._placed(mesh, axis_type):
      floats, labels = placed_kernel._split(placed_kernel._place(mesh, data, False))
      compiled = jax.jit(jax.value_and_grad(objective)).lower(floats, labels["lists"]).compile()
      got, grads = compiled(floats, labels["lists"])
  _assert_fused_agree({"none": (got, grads)}, np.float64)
  assert grads["kernel"].sharding.is_equivalent_to(floats["kernel"].sharding, 2)
  # What crosses devices is per row: at most each shard's k + K candidates.
  rows = data["features"].shape[0]
  found = placed_kernel.collectives(compiled.as_text())
  largest = rows * (K_FUSED + data["lists"].shape[1]) * NUM_DEVICES
  assert max(size for _, size in found) <= largest, found
