"""Checks of the embedding losses' arguments, shared by all their layers.

The torch-compatible functions (:mod:`jaxmargin._functional_embedding`), the
Optax-style ones (:mod:`jaxmargin._losses_embedding`) and the Flax modules
apply torch's rules through these: shapes, dtypes and static arguments at
trace time, the margin's value eagerly or through ``checkify``. Every error
starts with the function (or module) and names the argument.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.core
import jax.numpy as jnp

from jaxmargin import _validation as v
from jaxmargin._reduction import INVALID_REDUCTION, check_reduction


def static_number(fn: str, name: str, value) -> float:
  """A Python number that picks the program (``p``); a traced one is a ``TypeError``."""
  if isinstance(value, jax.core.Tracer):
    raise TypeError(
      f"{fn}: {name} is a traced value ({value.aval}); expected a static number: under "
      f"jax.jit, make it static, e.g. jax.jit(f, static_argnames=('{name}',))"
    )
  if isinstance(value, (str, bytes, bool)) or value is None:
    raise TypeError(f"{fn}: {name} is {value!r}; expected a real number")
  try:
    return float(value)
  except (TypeError, ValueError):
    raise TypeError(f"{fn}: {name} is {value!r}; expected a real number") from None


def static_flag(fn: str, name: str, value) -> bool:
  """A Python bool that picks the program (``swap``, ``keepdim``)."""
  if isinstance(value, jax.core.Tracer):
    raise TypeError(
      f"{fn}: {name} is a traced value ({value.aval}); expected a static bool: under "
      f"jax.jit, make it static, e.g. jax.jit(f, static_argnames=('{name}',))"
    )
  return bool(value)


def broadcast(fn: str, name: str, shape, other_name: str, other_shape) -> tuple[int, ...]:
  """The broadcast of two shapes, or a ``ValueError`` naming both arguments."""
  try:
    return tuple(jnp.broadcast_shapes(tuple(shape), tuple(other_shape)))
  except ValueError:
    raise ValueError(
      f"{fn}: {name} shape {tuple(shape)} does not broadcast with {other_name} shape "
      f"{tuple(other_shape)}; expected shapes that broadcast (equal sizes or 1 in each "
      "dimension)"
    ) from None


def check_feature_axis(fn: str, name: str, shape, p: float) -> None:
  """torch's norm has no value for an empty axis when ``p`` is negative or infinite."""
  if len(shape) and shape[-1] == 0 and (p < 0 or math.isinf(p)):
    raise ValueError(
      f"{fn}: {name} shape {tuple(shape)} has no features; expected at least one for "
      f"p={p:g}, whose norm of nothing is undefined (torch: the operation does not have "
      "an identity)"
    )


def float_dtype(*arrays) -> jnp.dtype:
  """The floating dtype of a result: the promotion, float32 for integers (torch's default)."""
  dtype = jnp.result_type(*arrays)
  return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.dtype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class PositiveMargin:
  """The check that a margin is greater than 0 (torch's triplet losses; NaN passes)."""

  fn: str

  def __call__(self, margin: jax.Array) -> tuple[jax.Array, str, dict[str, jax.Array]]:
    message = (
      f"{self.fn}: margin is {{margin}}; expected a margin greater than 0 (margin must be "
      "greater than 0, got {margin})"
    )
    return jnp.all(~(margin <= 0)), message, {"margin": margin}


def positive_margin(fn: str, margin) -> jax.Array:
  """A real scalar margin, ``ValueError`` if it is at most 0 (a checkify check if traced)."""
  margin = v.as_scalar_margin(fn, margin)
  return v.check_values(PositiveMargin(fn), margin)


def triplet_ranks(fn: str, anchor, positive, negative) -> None:
  """torch's rank rule of the triplet losses: the three inputs have equal ranks."""
  if not anchor.ndim == positive.ndim == negative.ndim:
    raise ValueError(
      f"{fn}: anchor, positive and negative have {anchor.ndim}, {positive.ndim} and "
      f"{negative.ndim} dimensions; expected the same number (The anchor, positive, and "
      "negative tensors are expected to have the same number of dimensions)"
    )


def triplet_shapes(fn: str, anchor, positive, negative, swap: bool) -> None:
  """torch's shape rules of the triplet losses: equal ranks, then broadcasting distances."""
  triplet_ranks(fn, anchor, positive, negative)
  pairs = [("anchor", anchor, "positive", positive), ("anchor", anchor, "negative", negative)]
  if swap:
    pairs.append(("positive", positive, "negative", negative))
  shapes = [broadcast(fn, b, y.shape, a, x.shape)[:-1] for a, x, b, y in pairs]
  broadcast(fn, "the negative distances", shapes[1], "the positive distances", shapes[0])


def distance_shapes(fn: str, anchor, positive, negative, swap: bool, p: float) -> None:
  """:func:`triplet_shapes`, and torch's empty-feature rule of ``p``."""
  triplet_shapes(fn, anchor, positive, negative, swap)
  for name, other in (("positive", positive), ("negative", negative)):
    check_feature_axis(fn, name, jnp.broadcast_shapes(anchor.shape, other.shape), p)


def triplet_module_settings(module: str, margin, p, eps, swap) -> tuple[float, float, float, bool]:
  """A triplet module's ``(margin, p, eps, swap)``, checked when it is built (torch's rules)."""
  margin = float(positive_margin(module, margin))
  return (
    margin,
    static_number(module, "p", p),
    float(v.as_real_scalar(module, "eps", eps)),
    bool(swap),
  )


def distance_module_settings(module: str, distance_function, margin, swap, reduction):
  """``TripletMarginWithDistanceLoss``'s settings, checked when it is built."""
  check_reduction(
    module, reduction, allow_elementwise_mean=False, invalid_message=INVALID_REDUCTION
  )
  check_distance_function(module, distance_function)
  return float(positive_margin(module, margin)), bool(swap)


def check_distance_function(fn: str, distance_function) -> None:
  if distance_function is not None and not callable(distance_function):
    raise TypeError(
      f"{fn}: distance_function is {distance_function!r}; expected a callable "
      "(x, y) -> distances, or None"
    )


def cosine_target(fn: str, target) -> jax.Array:
  """A cosine embedding target: real or bool values, compared with 1 and -1."""
  array = v.as_array(fn, "target", target, "an array of 1 and -1")
  return array if array.dtype == jnp.bool_ else v.as_real_array(fn, "target", array)
