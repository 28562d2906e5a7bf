"""Data-parallel training in Flax NNX with torch's multi-label margin loss.

The multi-label digits of ``digits_multilabel_nnx.py`` (8x24 images of 2 or 3
handwritten digits; the labels are the digits present), trained with
``jaxmargin.nnx.MultiLabelMarginLoss`` across every device JAX sees:

* a one-axis device mesh, ``("batch",)``;
* each batch split over the devices with ``NamedSharding(mesh, P("batch"))``;
* the model and optimizer state replicated with ``NamedSharding(mesh, P())``;
* the one-device example's ``nnx.jit`` train step, imported unchanged, which
  XLA partitions from those shardings: each device computes the loss terms and
  gradients of its rows, and an all-reduce combines the gradients, so every
  replica takes the same Adam step.

The loss needs nothing special for this: its value and gradients are the
one-device ones (``tests/multidevice`` checks them).

On a machine with a single CPU device, the script asks XLA for 8 virtual CPU
devices before JAX starts, unless ``XLA_FLAGS`` already sets
``--xla_force_host_platform_device_count``; on GPUs or TPUs it uses those. It
prints the devices, the training loss and test LRAP of each epoch, and then
the final metrics as ``multilabel_margin_loss: LRAP <float>, hamming loss
<float>``, and saves the curves as ``data_parallel_nnx.png`` in ``--out``.

Run from the repository root (about half a minute on a 2-core CPU)::

  python examples/data_parallel_nnx.py [--epochs 8] [--out examples/output] [--seed 0]

Needs the ``examples`` extra: ``pip install -e ".[examples]"``.
"""

from __future__ import annotations

# Before anything imports JAX (digits_data does).
import virtual_devices  # isort: skip

virtual_devices.request(8)

import argparse  # noqa: E402
import pathlib  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import digits_data  # noqa: E402
# The one-device example's model and steps, unchanged: the shardings of the
# arguments alone make them data-parallel (see main).
from digits_multilabel_nnx import MLP, predict, train_step  # noqa: E402
from jaxmargin import nnx as jm_nnx  # noqa: E402

PLOT_NAME = "data_parallel_nnx.png"
LOSS_NAME = "multilabel_margin_loss"


def parse_arguments(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epochs", type=digits_data.positive_int, default=8)
  parser.add_argument("--batch-size", type=digits_data.positive_int, default=128,
                      help="global batch, split over the devices (a multiple of "
                      "their number)")
  parser.add_argument("--learning-rate", type=float, default=2e-3)
  parser.add_argument("--hidden", type=digits_data.positive_int, default=256)
  parser.add_argument("--train-size", type=digits_data.positive_int, default=12000,
                      help="number of training composites (from the train digits)")
  parser.add_argument("--test-size", type=digits_data.positive_int, default=3000,
                      help="number of test composites (from the test digits)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", type=pathlib.Path,
                      default=digits_data.DEFAULT_OUT,
                      help="directory for the PNG of the training curves "
                      "(default: examples/output)")
  return parser.parse_args(argv)


def main(argv=None) -> dict[str, float]:
  """Trains on all devices; prints and returns the final test metrics."""
  args = parse_arguments(argv)
  devices = jax.devices()
  print(f"devices: {len(devices)} x {devices[0].platform}")
  if args.batch_size % len(devices):
    raise SystemExit(f"--batch-size {args.batch_size} does not split over "
                     f"{len(devices)} devices; use a multiple of {len(devices)}")

  # Auto axes (jax.make_mesh defaults to explicit ones since JAX 0.10): jit's
  # partitioner places the work from the arguments' shardings.
  mesh = jax.make_mesh((len(devices),), ("batch",), axis_types=(AxisType.Auto,))
  batch_sharding = NamedSharding(mesh, P("batch"))
  replicated = NamedSharding(mesh, P())

  train, test = digits_data.make_multilabel_split(
      digits_data.load_digits_split(), args.train_size, args.test_size, args.seed)
  model = MLP(train.features.shape[1], args.hidden, digits_data.NUM_CLASSES,
              rngs=nnx.Rngs(args.seed))
  optimizer = nnx.Optimizer(model, optax.adam(args.learning_rate), wrt=nnx.Param)
  # Every device holds the whole model and optimizer state.
  nnx.update((model, optimizer),
             jax.device_put(nnx.state((model, optimizer)), replicated))
  loss_fn = jm_nnx.MultiLabelMarginLoss()

  # The test set is split over the devices too, when its size allows.
  test_sharding = batch_sharding if args.test_size % len(devices) == 0 else replicated
  test_features = jax.device_put(test.features, test_sharding)
  shard_shape = batch_sharding.shard_shape((args.batch_size, train.features.shape[1]))
  print(f"each step: a batch of {args.batch_size} split into {len(devices)} shards of "
        f"{shard_shape}")

  # On virtual CPU devices, letting the next step start before this one ends
  # occasionally deadlocked in XLA:CPU's all-reduce (4 of 16 runs, JAX 0.10.2;
  # none in 16 runs with this wait), so there each step finishes first.
  wait = devices[0].platform == "cpu"

  def step(state, images, target):
    images, target = jax.device_put((images, target), batch_sharding)
    loss = train_step(*state, images, target)
    return state, jax.block_until_ready(loss) if wait else loss

  def evaluate(state):
    scores = np.asarray(predict(state[0], test_features))
    return {"test_" + k: v for k, v in digits_data.multilabel_metrics(
        scores, test.multi_hot).items()}

  (model, _, _), history = digits_data.train_epochs(
      step, (model, optimizer, loss_fn), (train.features, train.padded),
      epochs=args.epochs, batch_size=args.batch_size,
      rng=np.random.default_rng(args.seed), evaluate=evaluate, desc=LOSS_NAME)

  params = jax.tree.leaves(nnx.state(model, nnx.Param))
  replicas = min(len(p.sharding.device_set) for p in params)
  print(f"parameters: replicated on {replicas} devices: "
        f"{all(p.sharding.is_fully_replicated for p in params)}")
  for epoch, (loss, lrap) in enumerate(zip(history["train_loss"], history["test_lrap"]),
                                       start=1):
    print(f"epoch {epoch}: train loss {loss:.4f}, test LRAP {lrap:.4f}")
  result = {"lrap": history["test_lrap"][-1], "hamming": history["test_hamming"][-1]}
  digits_data.report_multilabel({LOSS_NAME: result}, {LOSS_NAME: history},
                                args.out / PLOT_NAME,
                                f"Data-parallel multi-label digits ({len(devices)} devices)")
  return result


if __name__ == "__main__":
  main()
