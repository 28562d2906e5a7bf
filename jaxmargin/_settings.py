"""Library-wide switches, read when a loss is traced."""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

import jax

_ENV_VALUE_CHECKS = "JAXMARGIN_VALUE_CHECKS"
_ON, _OFF = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


def _value_checks_from_env(raw: str | None) -> bool:
  """The default of :func:`value_checks` from its environment variable (unset: on)."""
  if raw is None or raw.strip().lower() in _ON:
    return True
  if raw.strip().lower() in _OFF:
    return False
  raise ValueError(f"{_ENV_VALUE_CHECKS} is {raw!r}; expected one of {', '.join(_ON + _OFF)}")


# The default is a bool, not a mutable structure: ruff cannot tell.
_value_checks: contextvars.ContextVar[bool] = contextvars.ContextVar(
  "jaxmargin_value_checks",
  default=_value_checks_from_env(os.environ.get(_ENV_VALUE_CHECKS)),  # noqa: B039
)


def value_checks_enabled() -> bool:
  """Whether traced target values get a checkify check (see :func:`value_checks`)."""
  return _value_checks.get()


@contextlib.contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
  """Turns the checkify checks on target values on or off for losses traced inside.

  Under ``jit`` (or any transformation) the losses cannot see their target
  values, so they attach a check to them, which ``checkify.checkify``
  reports. Without checkify the check computes nothing and costs nothing: it
  is a primitive without an effect, so the jitted function keeps JAX's fast
  dispatch path. (On a JAX that cannot host that primitive, the
  check is a ``checkify.debug_check``, which puts the jitted function on
  JAX's slower Python dispatch path: there, turn the checks off where you do
  not use checkify.) Turned off, traced losses hold no check and checkify
  reports nothing. Rows with an invalid target are NaN either way, and
  concrete (eager) targets always raise ``ValueError``.

  The setting is read when a loss is *traced*: a jitted function traced
  (first called) inside the block keeps it for later calls, wherever they
  are. The process-wide default is on; the environment variable
  ``JAXMARGIN_VALUE_CHECKS=0`` turns it off.

  Args:
    enabled: whether traced losses add their checkify checks.

  Example:
    >>> import jax, jax.numpy as jnp, jaxmargin
    >>> step = jax.jit(jax.grad(jaxmargin.multi_margin_loss))
    >>> with jaxmargin.value_checks(False):
    ...   grad = step(jnp.array([[0.1, 0.2, 0.4, 0.8]]), jnp.array([3]))
    >>> grad.shape
    (1, 4)
  """
  if not isinstance(enabled, bool):
    raise TypeError(f"value_checks: enabled is {enabled!r}; expected True or False")
  token = _value_checks.set(enabled)
  try:
    yield
  finally:
    _value_checks.reset(token)


def trace_platform() -> str:
  """The platform whose tuned constants a loss traced now uses: cpu, gpu or tpu.

  JAX's default backend when the loss is traced (``jax.default_backend()``),
  for the choices a trace must make in Python; a choice made in the program
  itself uses ``lax.platform_dependent``, which sees the lowering platform.
  CUDA and ROCm are both ``"gpu"``; any other platform counts as ``"cpu"``.
  """
  backend = jax.default_backend()
  if backend in ("gpu", "cuda", "rocm"):
    return "gpu"
  return backend if backend == "tpu" else "cpu"
