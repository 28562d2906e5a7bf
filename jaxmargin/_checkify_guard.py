"""A value check that ``checkify.checkify`` reports and that costs nothing otherwise.

``checkify.debug_check`` would report it too, but it gives the jaxpr an
effect, and JAX dispatches any jitted function with an effect on its slow
Python path: about 0.3 ms a call on a 2-core CPU, plus about 11 µs per array
passed in or out, paid by every training step whether or not it is
checkified (``benchmarks/dispatch.py``).

Instead, :func:`checked` binds ``checked_p``: a primitive with no effect that
returns its first operand (the *carrier*) unchanged and lowers to nothing.
Its checkify rule evaluates the check on its second operand when
``checkify.checkify`` interprets the jaxpr, exactly as checkify does for a
``debug_check``. The carrier keeps it alive: JAX drops equations whose
outputs nobody uses, so the carrier is an array the loss goes on computing
with.

The checkify rule is registered in ``jax._src.checkify`` (``error_checks``,
``assert_func``, ``FailedCheckError``, ``get_traceback``: the same names and
signatures from JAX 0.4.30 to 0.10). A custom primitive also needs
``shard_map`` to type it from its abstract evaluation, which JAX does since
its ``check_vma`` (0.6.1). Where either is missing (a future JAX that moves
those internals), :func:`checked` falls back to ``checkify.debug_check``: the
same reports, with the dispatch cost.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
from jax.experimental import checkify

# A check maps the checked array to (ok: scalar bool, message, values), the
# message formatted with the values (scalar arrays). It must be hashable (it
# is a parameter of the primitive) and, as vmap hands it a batched array,
# must test every element whatever the array's shape.
Check = Callable[[jax.Array], tuple[jax.Array, str, Mapping[str, jax.Array]]]


def _shard_map_types_custom_primitives() -> bool:
  shard_map = getattr(jax, "shard_map", None)
  return shard_map is not None and "check_vma" in inspect.signature(shard_map).parameters


def _define_checked_p():
  """``checked_p`` with its rules, or None where this JAX cannot host it."""
  if not _shard_map_types_custom_primitives():
    return None
  try:
    from jax._src import checkify as checkify_internals
    from jax.extend.core import Primitive
    from jax.interpreters import ad, batching, mlir

    error_checks = checkify_internals.error_checks
    assert_func = checkify_internals.assert_func
    failed_check_error = checkify_internals.FailedCheckError
    get_traceback = checkify_internals.get_traceback
  except (ImportError, AttributeError):
    return None

  checked_p = Primitive("jaxmargin_checked")
  checked_p.def_impl(lambda carrier, array, *, check: carrier)
  checked_p.def_abstract_eval(lambda carrier, array, *, check: carrier)
  mlir.register_lowering(checked_p, lambda ctx, carrier, array, *, check: [carrier])

  def batch(args, dims, *, check):
    # The check tests every element, so the batch axis may stay where it is.
    return checked_p.bind(*args, check=check), dims[0]

  def jvp(primals, tangents, *, check):
    # The identity on the carrier: its tangent passes through, so the
    # primitive never sees a tangent and needs no transpose rule.
    return checked_p.bind(*primals, check=check), tangents[0]

  def checkify_rule(error, enabled_errors, carrier, array, *, check):
    # What checkify does for a debug_check: a user check, reported when
    # user checks are enabled and dropped otherwise.
    if failed_check_error in enabled_errors:
      ok, message, values = check(array)
      error = assert_func(
        error, jnp.logical_not(ok), failed_check_error(get_traceback(), message, **values)
      )
    return error, carrier

  batching.primitive_batchers[checked_p] = batch
  ad.primitive_jvps[checked_p] = jvp
  error_checks[checked_p] = checkify_rule
  return checked_p


checked_p = _define_checked_p()


def checked(carrier: jax.Array, array: jax.Array, check: Check) -> jax.Array:
  """``carrier``, with ``check(array)`` attached for ``checkify.checkify`` to report.

  Args:
    carrier: the array to return; pass one that the caller computes with, so
      that JAX does not drop the check as dead code.
    array: the (traced) array to check.
    check: a hashable callable, ``array -> (ok, message, values)``.

  Returns:
    ``carrier`` unchanged.
  """
  if checked_p is not None:
    return checked_p.bind(carrier, array, check=check)
  ok, message, values = check(array)
  checkify.debug_check(ok, message, **values)
  return carrier
