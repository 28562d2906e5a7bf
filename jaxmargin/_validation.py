"""Trace-time checks of shapes and dtypes, and range checks of targets.

Every error names the loss, the argument, what it got and what it expected.
Shape and value problems raise ``ValueError``; dtype problems raise
``TypeError``. Target values can only be checked when they are known: traced
targets get a check that ``checkify.checkify`` turns into an error and that
costs nothing otherwise (:mod:`jaxmargin._checkify_guard`;
:func:`jaxmargin.value_checks` turns it off).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.core
import jax.numpy as jnp
import numpy as np

from jaxmargin._checkify_guard import Check, checked
from jaxmargin._reduction import REDUCTIONS
from jaxmargin._settings import value_checks_enabled

_HALF_DTYPES = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))
# What a margin argument may be, for error messages.
MARGIN = "a real number or a scalar array"


def _brief(value) -> str:
  """``repr(value)``, cut short: an error message quotes what it got, not all of it."""
  text = repr(value)
  return text if len(text) <= 60 else f"{text[:57]}..."


def as_array(fn: str, name: str, value, expected: str = "an array of numbers") -> jax.Array:
  """``jnp.asarray(value)``, or a ``TypeError`` naming ``name`` if it is not array-like.

  ``None``, a string or an arbitrary object would otherwise fail inside JAX
  with a message that does not say which argument it was.
  """
  if value is None or isinstance(value, (str, bytes)):
    raise TypeError(f"{fn}: {name} is {_brief(value)}; expected {expected}")
  try:
    return jnp.asarray(value)
  except (TypeError, ValueError) as error:
    raise TypeError(
      f"{fn}: {name} is {_brief(value)}, which is not an array ({error}); expected {expected}"
    ) from None


def as_optional_array(
  fn: str, name: str, value, expected: str = "an array of numbers or None"
) -> jax.Array | None:
  """:func:`as_array`, with ``None`` passed through."""
  return None if value is None else as_array(fn, name, value, expected)


def array_args(fn: str, optional: tuple[str, ...] = (), **arrays) -> list:
  """A public function's array arguments as arrays, before they enter its jitted kernel.

  A list would enter it as a pytree of scalars, one argument per element (and
  JAX warns of lists in its shape functions), and a value that is not an array
  would fail inside JAX without naming its argument. The names in
  ``optional`` may be ``None``; ``margin`` is a scalar.
  """
  out = []
  for name, value in arrays.items():
    if name == "margin":
      out.append(as_array(fn, name, value, MARGIN))
    elif name in optional:
      out.append(as_optional_array(fn, name, value))
    else:
      out.append(as_array(fn, name, value))
  return out


def as_float_array(fn: str, name: str, value: jax.typing.ArrayLike) -> jax.Array:
  """Converts ``value`` to an array and checks that it has a floating dtype."""
  array = as_array(fn, name, value, "a floating array")
  if not jnp.issubdtype(array.dtype, jnp.floating):
    raise TypeError(
      f"{fn}: {name} dtype {array.dtype} is not a floating dtype; expected "
      "float16, bfloat16, float32 or float64"
    )
  return array


def as_real_array(fn: str, name: str, value: jax.typing.ArrayLike) -> jax.Array:
  """Converts ``value`` to an array and checks that it holds real numbers."""
  array = as_array(fn, name, value, "an array of real numbers")
  if array.dtype == jnp.bool_ or not (
    jnp.issubdtype(array.dtype, jnp.floating) or jnp.issubdtype(array.dtype, jnp.integer)
  ):
    raise TypeError(
      f"{fn}: {name} dtype {array.dtype} is not a real number dtype; "
      "expected a floating or integer dtype"
    )
  return array


def as_index_array(fn: str, name: str, value: jax.typing.ArrayLike) -> jax.Array:
  """Converts ``value`` to an array and checks that it holds class indices."""
  array = as_array(fn, name, value, "an integer array of class indices")
  if not jnp.issubdtype(array.dtype, jnp.integer):
    raise TypeError(
      f"{fn}: {name} dtype {array.dtype} is not an integer dtype; expected "
      "integer class indices (any signed or unsigned integer dtype)"
    )
  return array


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
  """The dtype to compute in: half types accumulate in float32."""
  return jnp.dtype(jnp.float32) if jnp.dtype(dtype) in _HALF_DTYPES else jnp.dtype(dtype)


def check_matrix_input(fn: str, array: jax.Array) -> tuple[int, int]:
  """Checks torch's 'non-empty vector or matrix' rule; returns ``(N, C)``.

  A 0-D input is one sample with one class, a 1-D input ``(C,)`` is one
  sample, a 2-D input is ``(N, C)`` with ``N = 0`` allowed and ``C >= 1``.
  """
  if (
    array.ndim > 2
    or (array.ndim == 2 and array.shape[1] == 0)
    or (array.ndim == 1 and array.shape[0] == 0)
  ):
    raise ValueError(
      f"{fn}: input shape {array.shape} is not a non-empty vector or matrix; "
      "expected (), (C,) or (N, C) with C >= 1"
    )
  if array.ndim == 2:
    return array.shape[0], array.shape[1]
  return 1, (array.shape[0] if array.ndim == 1 else 1)


def check_values(check: Check, array: jax.Array, carrier: jax.Array | None = None) -> jax.Array:
  """Applies a value check: ``ValueError`` when known now, else a checkify check.

  When nothing is tracing, the check runs now and raises ``ValueError``.
  Under a transformation, the check is attached to ``carrier`` (see
  :mod:`jaxmargin._checkify_guard`), which ``checkify.checkify`` reports and
  which computes nothing otherwise (unless turned off with
  :func:`jaxmargin.value_checks`).

  Args:
    check: a hashable ``array -> (ok, message, values)``; the message is
      formatted with the values.
    array: the values to check.
    carrier: the array to return (default ``array``); one the caller goes on
      computing with, so that the check is not dropped as dead code.

  Returns:
    ``carrier``.
  """
  carrier = array if carrier is None else carrier
  ok, message, values = check(array)
  # ``ok`` is a tracer exactly when some transformation (``jit``, ``vmap``,
  # ``checkify`` itself) is tracing, even if ``array`` is concrete; then this
  # ``ok`` is dead code, which jit drops.
  if isinstance(ok, jax.core.Tracer):
    return checked(carrier, array, check) if value_checks_enabled() else carrier
  if not ok:
    raise ValueError(message.format(**{k: np.asarray(a) for k, a in values.items()}))
  return carrier


def check_p(fn: str, p: int) -> int:
  """Checks the hinge exponent of the multi-class margin loss (torch's rule).

  ``p`` picks the program, so it must be a Python value: under ``jax.jit``
  that means a static argument.
  """
  if isinstance(p, jax.core.Tracer):
    raise TypeError(
      f"{fn}: p is a traced value ({p.aval}); expected a static 1 or 2: "
      "under jax.jit, make it static, e.g. jax.jit(f, "
      "static_argnames=('p', 'reduction'))"
    )
  if p != 1 and p != 2:
    raise ValueError(f"{fn}: p is {p!r}; expected 1 or 2 (only p == 1 and p == 2 supported)")
  return int(p)


def check_axis(fn: str, axis) -> int:
  """Checks a static class ``axis``: an int (its range is checked with the array)."""
  if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
    raise TypeError(f"{fn}: axis is {_brief(axis)}; expected an int")
  return int(axis)


def as_real_scalar(
  fn: str, name: str, value: jax.typing.ArrayLike, expected: str = "an array of real numbers"
) -> jax.Array:
  """Converts ``value`` to a real scalar array (traced values are fine)."""
  array = as_real_array(fn, name, as_array(fn, name, value, expected))
  if array.ndim != 0:
    raise ValueError(f"{fn}: {name} shape {array.shape} is not a scalar; expected ()")
  return array


def as_scalar_margin(fn: str, margin: jax.typing.ArrayLike) -> jax.Array:
  """Converts ``margin`` to a real scalar array."""
  return as_real_scalar(fn, "margin", margin, MARGIN)


@dataclasses.dataclass(frozen=True)
class TargetRange:
  """The check that every value of an integer array lies in ``[low, high]``."""

  fn: str
  name: str
  low: int
  high: int

  def __call__(self, target: jax.Array) -> tuple[jax.Array, str, dict[str, jax.Array]]:
    smallest, largest = jnp.min(target), jnp.max(target)
    # Compare in the target's own dtype only with bounds it can hold: a bound
    # outside its range would wrap (uint8 >= -1 is False for every value).
    limits = jnp.iinfo(target.dtype)
    ok = jnp.bool_(True)
    if self.low > limits.min:
      ok = ok & (smallest >= self.low)
    if self.high < limits.max:
      ok = ok & (largest <= self.high)
    message = (
      f"{self.fn}: {self.name} values must lie in [{self.low}, {self.high}]; "
      "got values in [{smallest}, {largest}]"
    )
    return ok, message, {"smallest": smallest, "largest": largest}


def check_target_range(
  fn: str,
  target: jax.typing.ArrayLike,
  low: int,
  high: int,
  name: str = "target",
  carrier: jax.Array | None = None,
) -> jax.Array:
  """Checks that every value of an integer ``target`` lies in ``[low, high]``.

  Raises ``ValueError`` for concrete values; under a transformation see
  :func:`check_values` (the losses turn rows with a bad value into NaN).
  Returns ``carrier`` (default: ``target`` as an array).
  """
  target = jnp.asarray(target)
  carrier = target if carrier is None else carrier
  if target.size == 0:
    return carrier
  return check_values(TargetRange(fn, name, low, high), target, carrier)


def is_multi_hot(labels: jax.Array) -> jax.Array:
  """Per element, whether a multi-hot label is 0 or 1."""
  return (labels == 0) | (labels == 1)


@dataclasses.dataclass(frozen=True)
class MultiHot:
  """The check that an array holds only 0 and 1."""

  fn: str
  name: str

  def __call__(self, labels: jax.Array) -> tuple[jax.Array, str, dict[str, jax.Array]]:
    is_binary = is_multi_hot(labels)
    # Some bad value, from reductions only (an index into the flattened
    # labels needs a gather that explicit mesh axes cannot shard): the
    # largest if it is positive or NaN, else the smallest.
    bad = jnp.where(is_binary, jnp.zeros_like(labels), labels)
    highest = jnp.max(bad)
    bad_value = jnp.where(highest != 0, highest, jnp.min(bad))
    message = (
      f"{self.fn}: {self.name} values must be 0 or 1 (multi-hot); got {{value}} "
      "(a padded torch target goes to jaxmargin.multilabel_margin_loss, or "
      "convert it with padded_to_multi_hot)"
    )
    return jnp.all(is_binary), message, {"value": bad_value}


def check_multi_hot(
  fn: str, labels: jax.Array, carrier: jax.Array, name: str = "labels"
) -> jax.Array:
  """Checks that ``labels`` holds only 0 and 1; returns ``carrier``.

  Raises ``ValueError`` for concrete values; under a transformation see
  :func:`check_values` (the caller turns failing rows into NaN).
  """
  if labels.size == 0:
    return carrier
  return check_values(MultiHot(fn, name), labels, carrier)


@dataclasses.dataclass(frozen=True)
class ListLength:
  """The check that no label list is longer than ``limit``."""

  fn: str
  name: str
  limit: int

  def __call__(self, lengths: jax.Array) -> tuple[jax.Array, str, dict[str, jax.Array]]:
    longest = jnp.max(lengths, initial=0)
    message = (
      f"{self.fn}: {self.name} has a row with {{longest}} labels; expected at "
      f"most max_labels={self.limit}"
    )
    return longest <= self.limit, message, {"longest": longest}


# --- reductions and class weights (the Optax-style and the fused losses) --------


def check_reduction_name(fn: str, reduction: str) -> str:
  """Checks an Optax-style ``reduction`` (no legacy arguments, no alias)."""
  if reduction not in REDUCTIONS:
    raise ValueError(
      f"{fn}: reduction is {reduction!r}; expected one of {', '.join(map(repr, REDUCTIONS))}"
    )
  return reduction


def class_weight_vector(
  fn: str, class_weights, num_classes: int, dtype, of: str = "kernel"
) -> jax.Array | None:
  """Checks optional ``(C,)`` class weights; returns them in ``dtype`` (or ``None``).

  ``of`` names the argument whose classes they weight, for the message.
  """
  if class_weights is None:
    return None
  w = as_real_array(fn, "class_weights", class_weights)
  if w.shape != (num_classes,):
    raise ValueError(
      f"{fn}: class_weights shape {w.shape} does not match the "
      f"{num_classes} classes of {of}; expected ({num_classes},)"
    )
  return w.astype(dtype)
