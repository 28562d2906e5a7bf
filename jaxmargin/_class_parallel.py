"""A fused sweep over a classifier whose kernel a mesh splits by class, under plain ``jit``.

Inside ``jax.shard_map`` the caller names the class axis
(``class_axis_name``). Under ``jax.jit`` the classifier's placement says it:
a ``kernel`` of ``(D, C)`` whose class dimension a ``NamedSharding`` splits.
Left to the partitioner, a loop over contiguous class chunks would gather
the whole kernel to every device; so the sweep runs per shard instead, each
device over its own classes, with the same collectives as in ``shard_map``:

* with Explicit mesh axes the placement is part of the kernel's type, and
  the sweep runs in a ``shard_map`` over the mesh in context;
* with Auto axes the placement is known only to the partitioner, so the
  sweep is a ``custom_partitioning`` op that the partitioner lowers per shard
  with the shardings it has chosen. Such an op has no batching rule: under
  ``vmap`` it runs unsplit (``custom_vmap``).

Every array the sweep takes or gives has a *layout*: its dimensions as
factor letters, ``n`` for the rows (split like the features' rows), ``c``
for the classes (split like the kernel's), any other letter unsplit. An
output may be a *partial sum* over the shards of ``n`` or ``c``: the
kernel's gradient over the row shards, the features' over the class shards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.experimental
import jax.numpy as jnp
from jax import custom_batching, lax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

ROWS, CLASSES = "n", "c"


class Layout(NamedTuple):
  """An array's dimensions as factor letters; an output's partial-sum factors."""

  dims: str
  partial: str = ""


class Split(NamedTuple):
  """The mesh axes that split the rows and the classes (``None``: not split)."""

  rows: tuple[str, ...] | None
  classes: tuple[str, ...] | None

  def spec(self, layout: Layout) -> P:
    return P(*(self._axes(f) for f in layout.dims.split()))

  def axes_of(self, factor: str) -> tuple[str, ...]:
    return {ROWS: self.rows, CLASSES: self.classes}.get(factor) or ()

  def _axes(self, factor):
    axes = self.axes_of(factor)
    return None if not axes else axes[0] if len(axes) == 1 else axes

  def class_axis(self):
    """The class axes as ``lax`` collectives name them; ``None`` when unsplit."""
    return self._axes(CLASSES)


# The local computation: (class axis or None, *operands) -> outputs (a tuple).
Local = Callable[..., tuple]


def call(
  local: Local,
  operands: Sequence[jax.Array],
  in_layouts: Sequence[Layout],
  out_layouts: Sequence[Layout],
  kernel_index: int,
  rows_index: int,
) -> tuple:
  """``local(None, *operands)``, run per shard when the kernel is split by class.

  Args:
    local: the computation on one shard's operands, given the class axis.
    operands: its arrays.
    in_layouts, out_layouts: their layouts, and its outputs'.
    kernel_index: which operand is the ``(D, C)`` kernel.
    rows_index: which operand's rows say the row split (the features).
  """
  kernel = operands[kernel_index]
  sharding = jax.typeof(kernel).sharding
  if _explicit_class_axes(sharding):
    split = _split_of(
      sharding.mesh, jax.typeof(operands[rows_index]).sharding.spec, sharding.spec, kernel.shape[1]
    )
    return _shard_mapped(local, operands, in_layouts, out_layouts, sharding.mesh, split)
  if not _may_be_partitioned():
    return local(None, *operands)
  return _partitioned(local, in_layouts, out_layouts, kernel_index, rows_index)(*operands)


def _explicit_class_axes(sharding) -> bool:
  spec = getattr(sharding, "spec", ())
  mesh = getattr(sharding, "mesh", None)
  if mesh is None or mesh.empty or len(spec) < 2:
    return False
  types = dict(zip(mesh.axis_names, mesh.axis_types, strict=False))
  return any(types[a] == AxisType.Explicit for a in _names(spec[1]))


def _may_be_partitioned() -> bool:
  """Whether the partitioner may split the kernel: several devices, outside ``shard_map``."""
  if jax.device_count() == 1:
    return False
  mesh = jax.sharding.get_abstract_mesh()
  return mesh.empty or not mesh.manual_axes


def _names(entry) -> tuple[str, ...]:
  if entry is None or not isinstance(entry, (str, tuple)):
    return ()
  return (entry,) if isinstance(entry, str) else tuple(entry)


def _split_of(mesh, rows_spec, kernel_spec, num_classes) -> Split:
  """The split a sweep can follow, from the features' and the kernel's specs."""
  classes = _names(kernel_spec[1]) if len(kernel_spec) > 1 else ()
  shards = 1
  for axis in classes:
    shards *= mesh.shape[axis]
  if num_classes % shards:
    raise ValueError(
      f"kernel: its {num_classes} classes are split over {shards} devices along "
      f"{classes}; expected a multiple of {shards}. Pad the kernel's columns (and the "
      "bias) to a multiple and pass num_classes= to leave the padding out"
    )
  rows = tuple(a for a in _names(rows_spec[0] if len(rows_spec) else None) if a not in classes)
  return Split(rows or None, classes or None)


def _local_with_sums(local, out_layouts, split):
  """``local`` on one shard, its partial-sum outputs summed over their shards."""

  def run(*operands):
    outputs = local(split.class_axis(), *operands)
    summed = []
    for out, layout in zip(outputs, out_layouts, strict=False):
      axes = tuple(a for f in layout.partial for a in split.axes_of(f))
      summed.append(lax.psum(out, axes) if axes else out)
    return tuple(summed)

  return run


def _shard_mapped(local, operands, in_layouts, out_layouts, mesh, split):
  specs = [split.spec(layout) for layout in in_layouts]
  operands = [jax.sharding.reshard(x, spec) for x, spec in zip(operands, specs, strict=False)]
  return jax.shard_map(
    _local_with_sums(local, out_layouts, split),
    mesh=mesh,
    in_specs=tuple(specs),
    out_specs=tuple(split.spec(layout) for layout in out_layouts),
  )(*operands)


def _partitioned(local, in_layouts, out_layouts, kernel_index, rows_index):
  """``local`` as an op that the partitioner splits as the kernel and features are."""

  def whole(*operands):
    return local(None, *operands)

  def split_of(mesh, arg_shapes):
    kernel = arg_shapes[kernel_index]
    return _split_of(
      mesh, arg_shapes[rows_index].sharding.spec, kernel.sharding.spec, kernel.shape[1]
    )

  def infer(mesh, arg_shapes, result_shape):
    split = split_of(mesh, arg_shapes)
    return tuple(NamedSharding(mesh, split.spec(layout)) for layout in out_layouts)

  # The partitioner calls back from the compiler, outside the thread-local
  # configuration of the trace (``with jax.enable_x64(...)``): the shard's
  # computation is traced again in the trace's.
  x64 = jax.config.read("jax_enable_x64")

  def partition(mesh, arg_shapes, result_shape):
    split = split_of(mesh, arg_shapes)
    shardings = tuple(NamedSharding(mesh, split.spec(layout)) for layout in in_layouts)
    per_shard = _local_with_sums(local, out_layouts, split)

    def traced_as_the_call(*operands):
      with _enable_x64(x64):
        return per_shard(*operands)

    return (
      mesh,
      traced_as_the_call,
      tuple(NamedSharding(mesh, split.spec(layout)) for layout in out_layouts),
      shardings,
    )

  op = custom_partitioning(whole)
  op.def_partition(
    partition=partition,
    infer_sharding_from_operands=infer,
    sharding_rule=_rule(in_layouts, out_layouts),
  )

  @custom_batching.custom_vmap
  def batchable(*operands):
    return op(*operands)

  @batchable.def_vmap
  def _unsplit(axis_size, in_batched, *operands):
    operands = [
      x if batched else jnp.broadcast_to(x, (axis_size, *x.shape))
      for x, batched in zip(operands, in_batched, strict=False)
    ]
    outputs = jax.vmap(whole)(*operands)
    return outputs, tuple(True for _ in outputs)

  return batchable


# ``jax.enable_x64`` from JAX 0.7, ``jax.experimental.enable_x64`` before.
_enable_x64: Any = getattr(jax, "enable_x64", None)
if _enable_x64 is None:
  _enable_x64 = jax.experimental.enable_x64  # pyright: ignore[reportAttributeAccessIssue]


def _rule(in_layouts, out_layouts) -> str:
  """The Shardy sharding rule: factors by letter; a scalar is ``()``-shaped."""

  def side(layouts):
    return ", ".join(layout.dims for layout in layouts)

  return f"{side(in_layouts)} -> {side(out_layouts)}"
