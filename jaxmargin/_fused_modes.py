"""The fused losses' two differentiation modes, each sweep split as the kernel is.

Both are ``custom_vjp`` functions over :func:`jaxmargin._fused.sweep`:

* per-row losses (``reduction="none"``): the forward sweep computes values
  only; the backward sweep recomputes each chunk's scores and applies the
  per-row cotangent (four matmuls a step, as against three unfused);
* scalar losses (``"mean"``/``"sum"``): the forward sweep computes the
  gradients too, as fused cross-entropy kernels do, and the backward pass
  scales them by the incoming cotangent (three matmuls a step).

Each sweep (and :func:`split_top_k`) runs per shard when ``jit``'s mesh
splits the kernel by class (:mod:`jaxmargin._class_parallel`); inside
``shard_map`` the plan's class axis says the split already.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxmargin import _class_parallel as class_parallel
from jaxmargin._class_parallel import Layout
from jaxmargin._fused import Inputs, LabelSlots, Plan, Rule, sweep, top_k
from jaxmargin._sharding import vary_like_all


def split_sweep(
  rule: Rule,
  inputs: Inputs,
  labels: LabelSlots,
  row_valid: jax.Array,
  plan: Plan,
  row_scale: jax.Array | None = None,
):
  """:func:`sweep`, per shard when ``jit``'s mesh splits the kernel by class.

  With ``class_axis`` (inside ``shard_map``) the caller has split it already.
  """
  if plan.class_axis is not None:
    return sweep(rule, inputs, labels, row_valid, plan, row_scale)
  features, kernel, bias, class_args, row_args = inputs
  with_grads = row_scale is not None
  # The label lists (N, K), and the kept lists (N, J) when given.
  lists = tuple(a for a in labels if a is not None)
  operands = (
    (features, kernel)
    + (() if bias is None else (bias,))
    + class_args
    + row_args
    + lists
    + (row_valid,)
    + ((row_scale,) if with_grads else ())
  )
  # A row argument is a scalar, one value per row, or one per label slot.
  row_layouts = tuple(Layout(("", "n", "n k")[jnp.ndim(a)]) for a in row_args)
  in_layouts = (
    (Layout("n d"), Layout("d c"))
    + (() if bias is None else (Layout("c"),))
    + (Layout("c"),) * len(class_args)
    + row_layouts
    + (Layout("n k"), Layout("n k"), Layout("n h"), Layout("n h"))[: len(lists)]
    + (Layout("n"),)
    + ((Layout("n"),) if with_grads else ())
  )
  out_layouts = (Layout("n"),)
  if with_grads:
    out_layouts += (
      (Layout("n d", "c"), Layout("d c", "n"))
      + (() if bias is None else (Layout("c", "n"),))
      + (Layout("c", "n"),) * len(class_args)
      + tuple(Layout(r.dims, "" if r.dims else "n") for r in row_layouts)
    )

  def local(axis, *ops):
    # In the shard_map of explicit mesh axes, the loop carries that start from
    # the features vary over the class axis too.
    num_classifier = 2 + (bias is not None) + len(class_args)
    classifier = [vary_like_all(ops[:2], a) for a in ops[:num_classifier]]
    h, w, *rest = classifier + list(ops[num_classifier:])
    b = None if bias is None else rest.pop(0)
    c_args, rest = tuple(rest[: len(class_args)]), rest[len(class_args) :]
    r_args, rest = tuple(rest[: len(row_args)]), rest[len(row_args) :]
    slots, rest = LabelSlots(*rest[: len(lists)]), rest[len(lists) :]
    valid, scale = rest[0], (rest[1] if with_grads else None)
    result = sweep(
      rule, Inputs(h, w, b, c_args, r_args), slots, valid, plan._replace(class_axis=axis), scale
    )
    if not with_grads:
      return (result,)
    per_row, grads = result
    return (
      (per_row, grads.features, grads.kernel)
      + (() if grads.bias is None else (grads.bias,))
      + grads.class_args
      + grads.row_args
    )

  outputs = class_parallel.call(
    local, operands, in_layouts, out_layouts, kernel_index=1, rows_index=0
  )
  if not with_grads:
    return outputs[0]
  per_row, g_features, g_kernel, *rest = outputs
  g_bias = None if bias is None else rest.pop(0)
  return per_row, Inputs(
    g_features, g_kernel, g_bias, tuple(rest[: len(class_args)]), tuple(rest[len(class_args) :])
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 4))
def per_row_loss(rule, inputs, labels, row_valid, plan):
  """The per-row losses; the backward pass sweeps the chunks again."""
  return split_sweep(rule, inputs, labels, row_valid, plan)


def _per_row_fwd(rule, inputs, labels, row_valid, plan):
  return split_sweep(rule, inputs, labels, row_valid, plan), (inputs, labels, row_valid)


def _per_row_bwd(rule, plan, residuals, cotangent):
  inputs, labels, row_valid = residuals
  scale = cotangent / plan.classes(inputs.kernel.shape[1])
  _, grads = split_sweep(rule, inputs, labels, row_valid, plan, row_scale=scale)
  return grads, None, None


per_row_loss.defvjp(_per_row_fwd, _per_row_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 4, 5))
def reduced_loss(rule, inputs, labels, row_valid, plan, reduction):
  """The mean or sum of the per-row losses; the gradients come with the value."""
  return _reduce(split_sweep(rule, inputs, labels, row_valid, plan), reduction)


def _reduce(per_row, reduction):
  return jnp.mean(per_row) if reduction == "mean" else jnp.sum(per_row)


def _reduced_fwd(rule, inputs, labels, row_valid, plan, reduction):
  num_rows = inputs.features.shape[0]
  weight = 1 / num_rows if reduction == "mean" and num_rows else 1
  scale = jnp.full(
    (num_rows,), weight / plan.classes(inputs.kernel.shape[1]), inputs.features.dtype
  )
  per_row, grads = split_sweep(rule, inputs, labels, row_valid, plan, row_scale=scale)
  return _reduce(per_row, reduction), grads


def _reduced_bwd(rule, plan, reduction, grads, cotangent):
  del rule, plan, reduction
  return jax.tree.map(lambda g: cotangent * g, grads), None, None


reduced_loss.defvjp(_reduced_fwd, _reduced_bwd)


def split_top_k(
  features: jax.Array,
  kernel: jax.Array,
  bias: jax.Array | None,
  k: int,
  plan: Plan,
  what: str = "top_k: k",
) -> tuple[jax.Array, jax.Array]:
  """:func:`top_k`, per shard when ``jit``'s mesh splits the kernel by class.

  ``what`` starts the error for a ``k`` above a shard's classes (the caller's
  function and argument).
  """
  if plan.class_axis is not None:
    return top_k(features, kernel, bias, k, plan)

  def local(axis, h, w, b=None):
    if axis is not None and k > w.shape[1]:
      raise ValueError(
        f"{what} is {k}; expected k <= {w.shape[1]}, the classes each "
        f"device holds of the kernel split along {axis!r}"
      )
    return top_k(h, w, b, k, plan._replace(class_axis=axis))

  operands = (features, kernel) + (() if bias is None else (bias,))
  layouts = (Layout("n d"), Layout("d c"), Layout("c"))[: len(operands)]
  return class_parallel.call(
    local, operands, layouts, (Layout("n j"), Layout("n j")), kernel_index=1, rows_index=0
  )
