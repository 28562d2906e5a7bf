"""Extreme multi-label classification with the classifier split over devices by class.

``extreme_multilabel.py`` (its data, model, training loop, metrics and plot,
imported unchanged) with the ``nnx.Linear(64, C)`` head split over every
device by class, for when the classifier outgrows one device:

* a one-axis device mesh, ``("model",)``, of n devices;
* the head's kernel ``(64, C)`` and bias ``(C,)``, and their Adam moments,
  placed with ``NamedSharding`` ``P(None, "model")`` and ``P("model")``: each
  device holds ``C / n`` classes; the encoder and the rest of the optimizer
  state are replicated;
* in the jitted training step, the fused
  ``jaxmargin.linear.multilabel_margin_loss`` inside ``jax.shard_map`` with
  ``class_axis_name="model"``: each device scores its own classes, the devices
  exchange only per-row sums, and the kernel's and bias's gradients stay on
  their devices; held-out predictions come from
  ``jaxmargin.linear.top_k(..., class_axis_name="model")`` the same way. The
  features and labels (global class indices) are the same on every device.

The losses and top k equal the one-device ones up to the order of float sums,
so with the same arguments and seed it prints the one-device example's lines
with the same numbers, within float tolerance (here at most 1e-4 apart at
the default size; see ``tests/test_extreme_sharded_example.py``): after a
line on the devices and classes per device and one on the data, the
baseline's ``baseline precision@1 0.xxxx`` ... ``baseline psp@5 0.xxxx``;
then the shapes each device holds of the head's kernel and bias once placed
(``kernel per device: (64, 12500); ...`` on 8 devices; checked again after
training); then the trained model's ``precision@1 0.xxxx`` ... ``psp@5
0.xxxx``. It saves the training curves as ``extreme_multilabel_sharded.png``
in ``--out``.

On a CPU-only machine the script asks XLA for 8 virtual CPU devices before JAX
starts, unless ``XLA_FLAGS`` already sets
``--xla_force_host_platform_device_count``. That flag only concerns the host
CPU platform, so on a machine with several GPUs or TPUs the same script uses
those devices unchanged. ``--devices n`` uses the first n devices (default:
all); ``--num-labels`` must be a multiple of n, with at least 5 labels (the
top 5) per device.

Run from the repository root (about 2.5 minutes on a 2-core CPU, whose 2
cores the 8 virtual devices share; the one-device example takes 2)::

  python examples/extreme_multilabel_sharded.py [--devices N] [--num-labels 100000]
      [--epochs 10] [--seed 0] [--train-size 20000] [--test-size 5000]
      [--batch-size 512] [--out examples/output]

Needs the ``examples`` extra: ``pip install -e ".[examples]"``.
"""

from __future__ import annotations

# Before anything imports JAX (extreme_multilabel does).
import virtual_devices  # isort: skip

virtual_devices.request(8)

import argparse  # noqa: E402
import functools  # noqa: E402

import jax  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import AxisType, Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import digits_data  # noqa: E402
# The one-device example: data, model, steps, metrics and plot, unchanged; only
# the head's loss, its top k and the placement of the state differ (see main).
import extreme_multilabel  # noqa: E402
from jaxmargin import linear  # noqa: E402

PLOT_NAME = "extreme_multilabel_sharded.png"
AXIS = "model"
# The mesh axis that splits the head's parameters and their Adam moments.
HEAD_SPECS = {"kernel": P(None, AXIS), "bias": P(AXIS)}


def sharded_head_loss(embedding, kernel, bias, labels, *, mesh: Mesh):
  """:func:`extreme_multilabel.head_loss` with the classes split over ``mesh``."""

  def local(embedding, kernel, bias, labels):
    # This device's kernel[:, c0:c1] and bias[c0:c1]; labels are global ids.
    return linear.multilabel_margin_loss(embedding, kernel, labels, bias=bias,
                                         reduction="mean", class_axis_name=AXIS)

  return jax.shard_map(local, mesh=mesh, in_specs=(P(), HEAD_SPECS["kernel"],
                                                   HEAD_SPECS["bias"], P()),
                       out_specs=P())(embedding, kernel, bias, labels)


def sharded_head_top_k(embedding, kernel, bias, k: int, *, mesh: Mesh):
  """:func:`extreme_multilabel.head_top_k` with the classes split over ``mesh``."""

  def local(embedding, kernel, bias):
    # Each device's best k, merged over the axis: the same on every device.
    _, indices = linear.top_k(embedding, kernel, k, bias=bias, class_axis_name=AXIS)
    return indices

  return jax.shard_map(local, mesh=mesh, in_specs=(P(), HEAD_SPECS["kernel"],
                                                   HEAD_SPECS["bias"]),
                       out_specs=P())(embedding, kernel, bias)


def head_parameter(path) -> str | None:
  """``"kernel"`` or ``"bias"`` for the head's parameters and their Adam moments, else None.

  Both have paths ending ``head/kernel`` or ``head/bias`` (then ``.value``)
  in ``nnx.state((model, optimizer))``.
  """
  names = [getattr(key, "key", getattr(key, "name", None)) for key in path]
  for parent, name in zip(names, names[1:]):
    if parent == "head" and name in HEAD_SPECS:
      return name
  return None


def state_shardings(state, mesh: Mesh):
  """The head's parameters and moments split by class; everything else replicated."""

  def sharding(path, _):
    name = head_parameter(path)
    return NamedSharding(mesh, HEAD_SPECS[name] if name else P())

  return jax.tree_util.tree_map_with_path(sharding, state)


def head_shard_shapes(model: extreme_multilabel.Tagger, optimizer: nnx.Optimizer,
                      num_devices: int) -> dict[str, tuple[int, ...]]:
  """The per-device shapes of the head's kernel and bias, checked against their moments.

  Raises:
    RuntimeError: if any of them is not split into ``num_devices`` shards of
      one shape, or a moment is split differently from its parameter.
  """
  shapes: dict[str, set] = {name: set() for name in HEAD_SPECS}
  devices: dict[str, set] = {name: set() for name in HEAD_SPECS}
  for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state((model, optimizer))):
    if name := head_parameter(path):
      shards = leaf.addressable_shards
      shapes[name].update(shard.data.shape for shard in shards)
      devices[name].add(len({shard.device for shard in shards}))
  for name in HEAD_SPECS:
    if len(shapes[name]) != 1 or devices[name] != {num_devices}:
      raise RuntimeError(f"head {name} and its Adam moments are not split over "
                         f"{num_devices} devices alike: shard shapes {shapes[name]}, "
                         f"devices {devices[name]}")
  return {name: shapes[name].pop() for name in HEAD_SPECS}


def parse_args(argv=None) -> argparse.Namespace:
  parser = extreme_multilabel.argument_parser(__doc__.splitlines()[0])
  parser.add_argument("--devices", type=digits_data.positive_int, default=None,
                      help="how many devices split the classes (default: all)")
  args = parser.parse_args(argv)
  extreme_multilabel.check_args(parser, args)
  available = jax.device_count()
  if args.devices is None:
    args.devices = available
  elif args.devices > available:
    parser.error(f"--devices {args.devices}: only {available} devices")
  if args.num_labels % args.devices:
    parser.error(f"--num-labels {args.num_labels} does not split over {args.devices} "
                 f"devices: use a multiple of {args.devices}")
  # top_k merges each device's best TOP_K.
  if args.num_labels // args.devices < extreme_multilabel.TOP_K:
    parser.error(f"--num-labels {args.num_labels} leaves fewer than "
                 f"{extreme_multilabel.TOP_K} labels on each of {args.devices} devices")
  return args


def main(argv=None) -> dict[str, dict[str, float]]:
  """Trains the tagger with its head split by class; prints its metrics and the baseline's.

  Returns:
    ``{"model": {metric: value}, "baseline": {metric: value}}`` as
    ``extreme_multilabel.main`` does.
  """
  args = parse_args(argv)
  devices = jax.devices()[:args.devices]
  print(f"devices: {len(devices)} x {devices[0].platform}; "
        f"classes per device: {args.num_labels // len(devices)}")
  # Auto axes (jax.make_mesh defaults to explicit ones since JAX 0.10): jit's
  # partitioner follows the arguments' shardings outside the shard_map.
  mesh = jax.make_mesh((len(devices),), (AXIS,), axis_types=(AxisType.Auto,),
                       devices=devices)

  placed = {}

  def place(model, optimizer):
    state = nnx.state((model, optimizer))
    nnx.update((model, optimizer), jax.device_put(state, state_shardings(state, mesh)))
    placed.update(head_shard_shapes(model, optimizer, len(devices)))
    print(f"kernel per device: {placed['kernel']}; bias per device: {placed['bias']}; "
          "Adam moments alike")

  # On virtual CPU devices, letting the next step start before this one ends
  # occasionally deadlocked in XLA:CPU's collectives (data_parallel_nnx.py, JAX
  # 0.10.2), so there each step finishes first.
  results, model, optimizer = extreme_multilabel.run(
      args, loss_fn=functools.partial(sharded_head_loss, mesh=mesh),
      top_k_fn=functools.partial(sharded_head_top_k, mesh=mesh), place=place,
      wait_each_step=devices[0].platform == "cpu", plot_name=PLOT_NAME,
      title=f"Flax NNX, classes split over {len(devices)} devices")
  # The steps kept the head and its moments split as placed (jit chooses the
  # shardings of its outputs).
  if head_shard_shapes(model, optimizer, len(devices)) != placed:
    raise RuntimeError(f"training changed the head's split from {placed}")
  return results


if __name__ == "__main__":
  main()
