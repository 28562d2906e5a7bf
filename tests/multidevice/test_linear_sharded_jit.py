"""The fused losses under plain ``jax.jit``, with the kernel placed split by class.

No ``shard_map`` and no ``class_axis_name``: the kernel (and bias) carry a
``NamedSharding`` that splits the classes, on a mesh of Auto axes (the
partitioner's choice, seen by a ``custom_partitioning`` op) or Explicit axes
(the placement in the type, with ``jax.set_mesh``). The result must be the
one-device result, the gradients of the kernel and bias must stay split like
them, and the compiled program must not gather the kernel or any array of
order N x C: its only collectives are the small per-row ones. Also here:
``num_classes`` for a C that the devices do not divide, and the per-device
memory at N=512, D=64, C=800,000. ``tests/test_multidevice.py`` runs this
module with 8 virtual CPU devices.
"""

from __future__ import annotations

import contextlib
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmargin import linear
from tests.jax_versions import enable_x64
from tests.multidevice.test_linear_sharded import (
    CHUNK,
    LOSSES,
    MESHES,
    NUM_DEVICES,
    assert_matches_reference,
    make_data,
)

if jax.device_count() < NUM_DEVICES:
  pytest.skip(f"needs {NUM_DEVICES} devices", allow_module_level=True)

AXIS_TYPES = {"auto": AxisType.Auto, "explicit": AxisType.Explicit}
# An HLO collective: its result (an array or a tuple of arrays), its kind.
COLLECTIVE = re.compile(r"= (\(.*?\)|\S+) (all-reduce|all-gather|all-to-all|reduce-scatter|"
                        r"collective-permute)(?:-start)?\(")
ARRAY = re.compile(r"\w+\[([\d,]*)\]")


def _mesh(mesh_name, axis_type):
  shape, names = MESHES[mesh_name]
  return jax.make_mesh(shape, names, axis_types=(AXIS_TYPES[axis_type],) * len(shape))


@contextlib.contextmanager
def _placed(mesh, axis_type):
  """Explicit axes need the mesh in context; Auto ones are placed without it, as usual."""
  if axis_type == "explicit":
    with jax.set_mesh(mesh):
      yield
  else:
    yield


def _place(mesh, data, split_weights):
  rows = "data" if "data" in mesh.axis_names else None
  specs = {"features": P(rows), "kernel": P(None, "model"), "bias": P("model"),
           "margin": P(), "weights": P("model") if split_weights else P(),
           "lists": P(rows), "classes": P(rows)}
  return {k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in data.items()}


def _objective(name, reduction, **kw):
  fn, key, _ = LOSSES[name]

  def objective(d, labels):
    return jnp.sum(jnp.sin(fn(d, labels, None, reduction, **kw)))
  return objective, key


def _split(d):
  floats = {k: v for k, v in d.items() if jnp.issubdtype(v.dtype, jnp.floating)}
  return floats, {k: v for k, v in d.items() if k not in floats}


def collectives(hlo: str) -> list[tuple[str, int]]:
  """Each collective of a compiled program and the elements of each array it gives."""
  return [(m.group(2), int(np.prod([int(n) for n in dims.split(",") if n])))
          for m in COLLECTIVE.finditer(hlo) for dims in ARRAY.findall(m.group(1))]


# Each loss under each kind of axes on each mesh, one reduction and dtype a
# program: (reduction, dtype) by the parity of the loss's and the mesh's
# places. So each loss runs under each kind of axes with both reductions (the
# two differentiation modes) and both dtypes (float64 under Auto axes too,
# whose partitioner traces the shard's computation outside the caller's x64
# setting), and on each mesh with both reductions.
_ROTATION = {"auto": (("none", np.float64), ("mean", np.float32)),
             "explicit": (("mean", np.float64), ("none", np.float32))}
JIT_CASES = [
    pytest.param(name, mesh_name, axis_type, reduction, dtype,
                 id=f"{name}-{mesh_name}-{axis_type}-{reduction}-{dtype.__name__}")
    for i, name in enumerate(LOSSES) for j, mesh_name in enumerate(MESHES)
    for axis_type in AXIS_TYPES for reduction, dtype in [_ROTATION[axis_type][(i + j) % 2]]]


@pytest.mark.parametrize("name, mesh_name, axis_type, reduction, dtype", JIT_CASES)
def test_jit_over_a_class_split_kernel_equals_one_device(name, mesh_name, axis_type, reduction,
                                                         dtype):
  with enable_x64(dtype == np.float64):
    data = make_data(dtype)
    objective, key = _objective(name, reduction)
    mesh = _mesh(mesh_name, axis_type)
    with _placed(mesh, axis_type):
      floats, labels = _split(_place(mesh, data, LOSSES[name][2]))
      compiled = jax.jit(jax.value_and_grad(objective)).lower(floats, labels[key]).compile()
      got, grads = compiled(floats, labels[key])
  assert_matches_reference({reduction: (got, grads)}, name, dtype)
  assert grads["kernel"].sharding.is_equivalent_to(floats["kernel"].sharding, 2)
  assert grads["bias"].sharding.is_equivalent_to(floats["bias"].sharding, 1)
  # Nothing of the classes' size is gathered. Rows split over "data" gather,
  # for the class weights' gradient (summed per class in a fixed order, a
  # sort), each row's label and cotangent: N numbers each.
  gathered = [size for kind, size in collectives(compiled.as_text()) if kind == "all-gather"]
  assert all(size <= data["features"].shape[0] for size in gathered), gathered


@pytest.mark.parametrize("axis_type", AXIS_TYPES)
@pytest.mark.parametrize("name", [*LOSSES, "top_k"])
def test_only_per_row_arrays_cross_devices(name, axis_type):
  """Over the class axis: label scores (N, K), per-row sums (N,), the feature gradient (N, D).

  The classes far outnumber rows and features here, so an array of order
  N x C or D x C / 8 (a score chunk, a kernel shard) would stand out.
  """
  rows, dim, slots, classes = 16, 4, 5, 8 * 256
  rng = np.random.default_rng(3)
  data = {"features": jnp.asarray(rng.normal(size=(rows, dim)), jnp.float32),
          "kernel": jnp.asarray(rng.normal(size=(dim, classes)), jnp.float32),
          "bias": jnp.asarray(rng.normal(size=classes), jnp.float32),
          "margin": jnp.float32(1.0),
          "weights": jnp.asarray(rng.uniform(1, 2, classes), jnp.float32),
          "lists": jnp.asarray(rng.integers(-1, classes, (rows, slots)), jnp.int32),
          "classes": jnp.asarray(rng.integers(0, classes, rows), jnp.int32)}
  mesh = _mesh("model8", axis_type)
  with _placed(mesh, axis_type):
    placed = _place(mesh, data, name == "multilabel_soft_margin")
    floats, labels = _split(placed)
    if name == "top_k":
      hlo = jax.jit(lambda h, w, b: linear.top_k(h, w, 6, bias=b)).lower(
          floats["features"], floats["kernel"], floats["bias"]).compile().as_text()
    else:
      objective, key = _objective(name, "mean")
      hlo = jax.jit(jax.grad(objective)).lower(floats, labels[key]).compile().as_text()
  found = collectives(hlo)
  assert found, "expected the per-row collectives of the class split"
  largest = max(rows * dim, rows * slots, rows * 6 * NUM_DEVICES)   # top_k: k per device
  assert max(size for _, size in found) <= largest, found
  assert all(kind == "all-reduce" for kind, _ in found), found


@pytest.mark.parametrize("axis_type", AXIS_TYPES)
def test_top_k_under_jit_over_a_class_split_kernel(axis_type):
  data = make_data(np.float32)
  kernel = data["kernel"].at[:, 50].set(data["kernel"][:, 10])    # a tie across devices
  bias = data["bias"].at[50].set(data["bias"][10])
  want_values, want_index = jax.lax.top_k(data["features"] @ kernel + bias, 4)
  mesh = _mesh("data2xmodel4", axis_type)
  with _placed(mesh, axis_type):
    placed = _place(mesh, {"features": data["features"], "kernel": kernel, "bias": bias},
                    False)
    values, index = jax.jit(lambda h, w, b: linear.top_k(h, w, 4, bias=b, chunk_size=CHUNK))(
        placed["features"], placed["kernel"], placed["bias"])
  np.testing.assert_array_equal(index, want_index)
  np.testing.assert_allclose(values, want_values, rtol=1e-6)


def test_vmap_runs_the_sweep_unsplit_and_equals_one_device():
  """A batch of problems has no per-shard rule: vmap gives the one-device values."""
  data = make_data(np.float32)
  features = jnp.stack([data["features"], -data["features"]])
  want = jax.vmap(lambda h: linear.multilabel_soft_margin_loss(
      h, data["kernel"], data["lists"], bias=data["bias"], reduction="mean"))(features)
  mesh = _mesh("model8", "auto")
  placed = _place(mesh, data, True)
  got = jax.jit(jax.vmap(lambda h: linear.multilabel_soft_margin_loss(
      h, placed["kernel"], placed["lists"], bias=placed["bias"], reduction="mean")))(features)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_out_of_range_label_is_nan_under_jit_and_a_checkify_error():
  data = make_data(np.float32)
  mesh = _mesh("model8", "auto")
  floats, labels = _split(_place(mesh, data, False))
  bad = labels["lists"].at[2, 0].set(len(data["bias"]))

  def per_row(d, lists):
    return LOSSES["multilabel_margin"][0](d, lists, None, "none")

  out = jax.jit(per_row)(floats, bad)
  assert np.isnan(out[2]) and np.isfinite(np.delete(np.asarray(out), 2)).all()
  err, _ = checkify.checkify(jax.jit(per_row))(floats, bad)
  with pytest.raises(checkify.JaxRuntimeError, match=r"labels values must lie in \[-1, 103\]"):
    err.throw()


# --- num_classes: a classifier padded to a multiple of the devices ------------

REAL = 100     # classes; the kernel has 104 columns, 13 on each of 8 devices


def _padded_data(dtype=np.float64):
  data = make_data(dtype)
  data["lists"] = jnp.where(data["lists"] >= REAL, -1, data["lists"])
  data["classes"] = data["classes"] % REAL
  rng = np.random.default_rng(5)
  # Large padding values: if they entered the loss, it would show.
  for k, shape in (("kernel", data["kernel"][:, REAL:].shape), ("bias", (4,)),
                   ("weights", (4,))):
    data[k] = data[k].at[..., REAL:].set(jnp.asarray(50 * rng.uniform(1, 2, shape), dtype))
  return data


def _unpadded(data):
  return {**data, "kernel": data["kernel"][:, :REAL], "bias": data["bias"][:REAL],
          "weights": data["weights"][:REAL]}


# Each loss one way, the ways in turn: how the padding is left out is each
# loss's rule, the same inside shard_map and in the per-shard sweep of jit
# (both run the sweep with the class axis and the real C); what the two ways
# add (the whole C from the shards, the divisibility check of the placed
# kernel) is the same for every loss.
@pytest.mark.parametrize("name, how", [("multilabel_margin", "jit"),
                                       ("multi_margin", "shard_map"),
                                       ("multilabel_soft_margin", "jit")])
def test_num_classes_leaves_the_padding_of_a_split_classifier_out(name, how):
  with enable_x64(True):
    data = _padded_data()
    objective, key = _objective(name, "mean")
    padded_objective, _ = _objective(name, "mean", num_classes=REAL)
    floats, labels = _split(_unpadded(data))
    want, want_grads = jax.jit(jax.value_and_grad(objective))(floats, labels[key])
    mesh = _mesh("model8", "auto")
    if how == "jit":
      floats, labels = _split(_place(mesh, data, LOSSES[name][2]))
      got, grads = jax.jit(jax.value_and_grad(padded_objective))(floats, labels[key])
    else:
      fn, _, split = LOSSES[name]
      specs = {"features": P(), "kernel": P(None, "model"), "bias": P("model"),
               "margin": P(), "weights": P("model") if split else P()}
      mapped = jax.shard_map(
          lambda d, y: jnp.sum(jnp.sin(fn(d, y, "model", "mean", num_classes=REAL))),
          mesh=mesh, in_specs=(specs, P()), out_specs=P())
      floats, labels = _split(data)
      got, grads = jax.jit(jax.value_and_grad(mapped))(floats, labels[key])
    np.testing.assert_allclose(got, want, rtol=1e-9)
    for k in floats:
      g, want_g = np.asarray(grads[k]), np.asarray(want_grads[k])
      if g.shape != want_g.shape:     # kernel, bias, weights: the padding gets exact zeros
        np.testing.assert_array_equal(g[..., REAL:], 0, err_msg=k)
        g = g[..., :REAL]
      np.testing.assert_allclose(g, want_g, rtol=1e-9, atol=1e-9 * np.max(np.abs(want_g)),
                                 err_msg=k)


def test_top_k_leaves_the_padding_out():
  data = _padded_data(np.float32)
  want_values, want_index = jax.lax.top_k(
      data["features"][:, :] @ data["kernel"][:, :REAL] + data["bias"][:REAL], 5)
  for axis_type in AXIS_TYPES:
    mesh = _mesh("model8", axis_type)
    with _placed(mesh, axis_type):
      placed = _place(mesh, data, False)
      values, index = jax.jit(lambda h, w, b: linear.top_k(h, w, 5, bias=b, num_classes=REAL))(
          placed["features"], placed["kernel"], placed["bias"])
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_allclose(values, want_values, rtol=1e-6)


# --- memory per device ----------------------------------------------------------

MEMORY_ROWS, MEMORY_DIM, MEMORY_CLASSES, MEMORY_SLOTS = 512, 64, 800_000, 16


@functools.cache
def _memory(mesh, how):
  """Per-device compiled memory of a mean multi-label margin step (value and gradients)."""
  f32 = jnp.float32

  def spec(shape, dtype, partition=None):
    sharding = None if mesh is None else NamedSharding(mesh, partition or P())
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

  args = (spec((MEMORY_ROWS, MEMORY_DIM), f32),
          spec((MEMORY_DIM, MEMORY_CLASSES), f32, P(None, "model")),
          spec((MEMORY_CLASSES,), f32, P("model")),
          spec((MEMORY_ROWS, MEMORY_SLOTS), jnp.int32))

  def loss(h, w, b, lists, axis=None):
    return linear.multilabel_margin_loss(h, w, lists, bias=b, reduction="mean",
                                         class_axis_name=axis)

  if how == "shard_map":
    step = jax.shard_map(jax.value_and_grad(lambda h, w, b, y: loss(h, w, b, y, "model"),
                                            argnums=(0, 1, 2)),
                         mesh=mesh, in_specs=(P(), P(None, "model"), P("model"), P()),
                         out_specs=(P(), (P(), P(None, "model"), P("model"))))
  else:
    step = jax.value_and_grad(loss, argnums=(0, 1, 2))
  return jax.jit(step).lower(*args).compile().memory_analysis()


@pytest.mark.parametrize("how", ["shard_map", "jit"])
def test_memory_per_device_is_one_device_fused_temp_and_an_eighth_of_the_kernel(how):
  one = _memory(None, "jit")
  split = _memory(_mesh("model8", "auto"), how)
  kernel_share = MEMORY_DIM * MEMORY_CLASSES * 4 // NUM_DEVICES
  # The temp does not grow with C (as on one device) and holds nothing of
  # order N x C / 8 (one device's scores would be 205 MB).
  assert split.temp_size_in_bytes <= 1.1 * one.temp_size_in_bytes, (split, one)
  assert split.temp_size_in_bytes < MEMORY_ROWS * MEMORY_CLASSES * 4 / NUM_DEVICES / 8
  # Each device holds an eighth of the kernel and bias, and of their gradients.
  small = 4 * MEMORY_ROWS * (MEMORY_DIM + MEMORY_SLOTS) + 4 * MEMORY_CLASSES // NUM_DEVICES
  assert kernel_share <= split.argument_size_in_bytes <= kernel_share + small
  assert kernel_share <= split.output_size_in_bytes <= kernel_share + small
  assert one.argument_size_in_bytes >= NUM_DEVICES * kernel_share
