"""The fused losses of ``jaxmargin.linear`` with the classifier split over devices by class.

Inside ``jax.shard_map``, each device holds ``kernel[:, c0:c1]`` and
``bias[c0:c1]``; ``class_axis_name`` names the mesh axis that splits them.
The result must be the one-device fused result: values and gradients
(features, kernel, bias, margin, class weights), on a mesh of 8 class shards
and on a 2 x 4 data x model mesh, with chunks that do not divide a shard's
classes, labels on every device and rows whose labels all sit on one.
``tests/test_multidevice.py`` runs this module with 8 virtual CPU devices.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.experimental import checkify
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from jaxmargin import linear
from tests.jax_versions import enable_x64

NUM_DEVICES = 8
if jax.device_count() < NUM_DEVICES:
  pytest.skip(f"needs {NUM_DEVICES} devices", allow_module_level=True)

ROWS, FEATURES, SLOTS = 16, 6, 5
CLASSES = 8 * 13           # 13 a shard on 8 shards, 26 on 4: chunks of 5 leave tails
CHUNK = 5
MESHES = {"model8": ((8,), ("model",)), "data2xmodel4": ((2, 4), ("data", "model"))}


def make_data(dtype):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, CLASSES, size=(ROWS, SLOTS))
  labels[:, 2:] = np.where(rng.random((ROWS, SLOTS - 2)) < 0.4, -1, labels[:, 2:])
  labels[3] = [5, 7, 9, 1, 2]              # every label on the first device
  labels[4] = [0, 30, 60, 90, 103]         # labels on several devices
  return {
      "features": jnp.asarray(rng.normal(size=(ROWS, FEATURES)), dtype),
      "kernel": jnp.asarray(rng.normal(size=(FEATURES, CLASSES)), dtype),
      "bias": jnp.asarray(rng.normal(size=CLASSES), dtype),
      "margin": jnp.asarray(0.9, dtype),
      "weights": jnp.asarray(rng.uniform(0.5, 2.0, CLASSES), dtype),
      "lists": jnp.asarray(labels, jnp.int32),
      "classes": jnp.asarray(labels[:, 0], jnp.int32),
  }


# name -> (loss(data, labels, class_axis_name, reduction, **linear kwargs) on a shard's arrays,
#          the labels' key, whether class weights are split like the bias)
def _mlm(d, labels, axis, reduction, **kw):
  return linear.multilabel_margin_loss(d["features"], d["kernel"], labels, bias=d["bias"],
                                       margin=d["margin"], reduction=reduction,
                                       chunk_size=CHUNK, class_axis_name=axis, **kw)


def _mm(d, labels, axis, reduction, **kw):
  return linear.multi_margin_loss(d["features"], d["kernel"], labels, bias=d["bias"], p=2,
                                  margin=d["margin"], class_weights=d["weights"],
                                  reduction=reduction, chunk_size=CHUNK,
                                  class_axis_name=axis, **kw)


def _soft(d, labels, axis, reduction, **kw):
  return linear.multilabel_soft_margin_loss(d["features"], d["kernel"], labels,
                                            bias=d["bias"], class_weights=d["weights"],
                                            reduction=reduction, chunk_size=CHUNK,
                                            class_axis_name=axis, **kw)


LOSSES = {"multilabel_margin": (_mlm, "lists", None),
          "multi_margin": (_mm, "classes", False),     # weights whole: gathered at the label
          "multilabel_soft_margin": (_soft, "lists", True)}   # weights split like the bias


def _mesh(name):
  shape, names = MESHES[name]
  return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))


def _specs(name, split_weights):
  rows = P("data") if name == "data2xmodel4" else P()
  specs = {"features": rows, "kernel": P(None, "model"), "bias": P("model"), "margin": P(),
           "weights": P("model") if split_weights else P()}
  return specs, rows


def class_parallel(name, loss, reduction, mesh_name):
  """The loss inside shard_map; per-row outputs follow the rows, a mean is averaged."""
  fn, key, split = LOSSES[name]
  specs, rows = _specs(mesh_name, split)

  def local(d, labels):
    out = fn(d, labels, "model", reduction)
    # The mean over the rows a device holds; averaging over the data axis is
    # the caller's, as for any loss under shard_map.
    return lax.pmean(out, "data") if reduction == "mean" and "data" in mesh_name else out

  mapped = jax.shard_map(local, mesh=_mesh(mesh_name), in_specs=(specs, rows),
                         out_specs=rows if reduction == "none" else P())

  def objective(d):
    return jnp.sum(jnp.sin(mapped(d, loss[key])))
  return objective


def one_device(name, loss, reduction):
  fn, key, _ = LOSSES[name]
  return lambda d: jnp.sum(jnp.sin(fn(d, loss[key], None, reduction)))


REDUCTIONS = ("none", "mean")
RTOL = {np.float32: 1e-5, np.float64: 1e-9}


@functools.cache
def reference(name, dtype):
  """``{reduction: (value, gradients)}`` of the one-device fused loss, on the host.

  Computed once for each loss and dtype, both reductions in one program, and
  shared with ``test_linear_sharded_jit.py`` (the same objective of the same
  data): the reference is the same whichever way the classifier is split.
  """
  with enable_x64(dtype == np.float64):
    data = make_data(dtype)
    labels = {k: data.pop(k) for k in ("lists", "classes")}

    def both(d):
      return {r: jax.value_and_grad(one_device(name, labels, r))(d) for r in REDUCTIONS}

    return jax.device_get(jax.jit(both)(data))


def assert_matches_reference(got, name, dtype):
  """``got``, ``{reduction: (value, gradients)}`` for some reductions, against :func:`reference`."""
  rtol = RTOL[dtype]
  want = reference(name, dtype)
  assert got and set(got) <= set(want)
  for reduction, (value, grads) in got.items():
    want_value, want_grads = want[reduction]
    np.testing.assert_allclose(value, want_value, rtol=rtol, err_msg=reduction)
    assert set(grads) == set(want_grads), reduction
    for key, grad in grads.items():
      scale = float(np.max(np.abs(want_grads[key])))
      np.testing.assert_allclose(grad, want_grads[key], rtol=rtol, atol=rtol * scale,
                                 err_msg=f"{reduction}: {key}")


# Each loss on each mesh, both reductions in one program (two programs a
# loss, not eight). The dtype alternates over meshes and losses: every loss
# and every mesh runs in both, and the class-parallel code has nothing
# dtype-specific for the other pairs to reach.
PARALLEL_CASES = [
    pytest.param(name, mesh_name, dtype, id=f"{name}-{mesh_name}-{dtype.__name__}")
    for i, name in enumerate(LOSSES) for j, mesh_name in enumerate(MESHES)
    for dtype in [(np.float64, np.float32)[(i + j) % 2]]]


@pytest.mark.parametrize("name, mesh_name, dtype", PARALLEL_CASES)
def test_class_parallel_equals_one_device(name, mesh_name, dtype):
  with enable_x64(dtype == np.float64):
    data = make_data(dtype)
    labels = {k: data.pop(k) for k in ("lists", "classes")}

    def both(d):
      return {r: jax.value_and_grad(class_parallel(name, labels, r, mesh_name))(d)
              for r in REDUCTIONS}

    got = jax.jit(both)(data)
    assert all(g.dtype == dtype for g in jax.tree.leaves(got))
  assert_matches_reference(got, name, dtype)


@pytest.mark.parametrize("mesh_name", MESHES)
def test_top_k_over_class_shards_equals_lax_top_k(mesh_name):
  data = make_data(np.float32)
  # Ties across shards: the lower class must come first, as on one device.
  kernel = data["kernel"].at[:, 50].set(data["kernel"][:, 10])
  bias = data["bias"].at[50].set(data["bias"][10])
  specs, rows = _specs(mesh_name, True)
  mapped = jax.shard_map(
      lambda h, w, b: linear.top_k(h, w, 4, bias=b, chunk_size=CHUNK, class_axis_name="model"),
      mesh=_mesh(mesh_name), in_specs=(rows, specs["kernel"], specs["bias"]),
      out_specs=(rows, rows))
  values, index = jax.jit(mapped)(data["features"], kernel, bias)
  want_values, want_index = lax.top_k(data["features"] @ kernel + bias, 4)
  np.testing.assert_array_equal(index, want_index)
  # A shard's matmul may round differently from the whole one.
  np.testing.assert_allclose(values, want_values, rtol=1e-6)


def test_out_of_range_label_is_nan_under_jit_and_a_checkify_error():
  data = make_data(np.float32)
  bad = data.pop("lists").at[2, 0].set(CLASSES)
  data.pop("classes")
  specs, rows = _specs("model8", True)
  mapped = jax.shard_map(lambda d, y: _mlm(d, y, "model", "none"), mesh=_mesh("model8"),
                         in_specs=(specs, rows), out_specs=rows)
  out = jax.jit(mapped)(data, bad)
  assert np.isnan(out[2]) and np.isfinite(np.delete(np.asarray(out), 2)).all()
  err, _ = checkify.checkify(jax.jit(mapped))(data, bad)
  with pytest.raises(checkify.JaxRuntimeError, match=r"labels values must lie in \[-1, 103\]"):
    err.throw()
