"""Every loss, in both APIs, under every JAX transformation a training loop uses.

Each case is a loss with per-example output (``reduction='none'`` for the
torch-compatible API) and a way to draw its inputs. A transformed result is
held to the untransformed one (a Python loop, eager values) or to finite
differences, never to itself.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxmargin
from jaxmargin import losses

NUM_ROWS, NUM_CLASSES = 3, 5
RTOL = 1e-12


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  per_example: Callable  # (x (..., N, C), target) -> (..., N)
  draw_target: Callable  # (rng, batch_shape) -> target for scores of batch_shape + (C,)
  hinge: bool            # custom_vjp: no forward mode; piecewise polynomial

  def draw(self, rng, batch_shape=(NUM_ROWS,)):
    # Continuous scores: no hinge argument lies within a finite-difference
    # step of 0 (ties have tests of their own).
    x = rng.normal(size=batch_shape + (NUM_CLASSES,))
    return jnp.asarray(x), jnp.asarray(self.draw_target(rng, batch_shape))

  def mean(self, x, target):
    return jnp.mean(self.per_example(x, target))


def _padded(rng, batch_shape):
  hot = rng.random(batch_shape + (NUM_CLASSES,)) < 0.4
  return np.asarray(losses.multi_hot_to_padded(hot))


def _class_index(rng, batch_shape):
  return rng.integers(0, NUM_CLASSES, batch_shape)


def _multi_hot(rng, batch_shape):
  return (rng.random(batch_shape + (NUM_CLASSES,)) < 0.4).astype(np.int32)


def _soft(rng, batch_shape):
  return rng.random(batch_shape + (NUM_CLASSES,))


CLASS_WEIGHT = jnp.linspace(0.5, 1.5, NUM_CLASSES)

CASES = [
    Case("torch multilabel_margin_loss",
         lambda x, t: jaxmargin.multilabel_margin_loss(x, t, reduction="none"),
         _padded, hinge=True),
    Case("torch multi_margin_loss p=1",
         lambda x, t: jaxmargin.multi_margin_loss(x, t, reduction="none"),
         _class_index, hinge=True),
    Case("torch multi_margin_loss p=2 weighted",
         lambda x, t: jaxmargin.multi_margin_loss(x, t, p=2, margin=0.7, weight=CLASS_WEIGHT,
                                                  reduction="none"),
         _class_index, hinge=True),
    Case("torch multilabel_soft_margin_loss",
         lambda x, t: jaxmargin.multilabel_soft_margin_loss(x, t, weight=CLASS_WEIGHT,
                                                            reduction="none"),
         _soft, hinge=False),
    Case("optax multiclass_margin_loss",
         lambda x, t: losses.multiclass_margin_loss(x, t, p=2, class_weights=CLASS_WEIGHT),
         _class_index, hinge=True),
    Case("optax multilabel_margin_loss",
         lambda x, t: losses.multilabel_margin_loss(x, t, margin=0.5), _multi_hot, hinge=True),
    Case("optax multilabel_soft_margin_loss",
         lambda x, t: losses.multilabel_soft_margin_loss(x, t), _soft, hinge=False),
]
HINGE = [c for c in CASES if c.hinge]
SMOOTH = [c for c in CASES if not c.hinge]


def ids(cases):
  return [c.name for c in cases]


def close(a, b):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=RTOL, atol=1e-14)


def finite_difference_gradient(f, x, eps=1e-6):
  """Central differences of a scalar ``f`` at every entry of ``x`` (float64)."""
  flat = np.asarray(x, np.float64).reshape(-1)
  grad = np.empty_like(flat)
  for i in range(flat.size):
    step = np.zeros_like(flat)
    step[i] = eps
    grad[i] = (float(f(jnp.asarray((flat + step).reshape(x.shape))))
               - float(f(jnp.asarray((flat - step).reshape(x.shape))))) / (2 * eps)
  return grad.reshape(x.shape)


def finite_difference_jacobian(g, x, eps=1e-6):
  """Central differences of a vector function ``g`` of a flat ``x``: ``J[i, j]``."""
  columns = []
  for j in range(x.size):
    step = jnp.zeros_like(x).at[j].set(eps)
    columns.append((np.asarray(g(x + step)) - np.asarray(g(x - step))) / (2 * eps))
  return np.stack(columns, axis=1)


# --- vmap ----------------------------------------------------------------------
# Where a test compiles several transformations of a loss on inputs of the same
# shapes, it compiles them as one program: XLA compiles those together in about
# the time of one (the multilabel margin loss's program takes seconds), each
# still on its own inputs and held to its own untransformed reference.

IN_AXES = {"both-0": (0, 0), "both-1": (1, 1), "scores-only": (0, None),
           "targets-only": (None, 0)}


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_vmap_with_every_in_axes_equals_a_loop(case):
  # Every in_axes under one jit, and (0, 0) also eagerly: each jitted kernel's
  # batched program, and the value checks bound outside jit.
  rng = np.random.default_rng(1)
  problems = [case.draw(rng) for _ in range(4)]
  args = {}
  for name, in_axes in IN_AXES.items():
    xs = jnp.stack([p[0] for p in problems], axis=in_axes[0] or 0)
    ts = jnp.stack([p[1] for p in problems], axis=in_axes[1] or 0)
    args[name] = (xs if in_axes[0] is not None else problems[0][0],
                  ts if in_axes[1] is not None else problems[0][1])
  vmapped = jax.jit(lambda args: {
      name: jax.vmap(case.per_example, in_axes=in_axes)(*args[name])
      for name, in_axes in IN_AXES.items()})(args)
  vmapped["both-0 eager"] = jax.vmap(case.per_example)(*args["both-0"])
  for name, got in vmapped.items():
    in_axes = IN_AXES[name.removesuffix(" eager")]
    for i in range(len(problems)):
      x = problems[i][0] if in_axes[0] is not None else problems[0][0]
      t = problems[i][1] if in_axes[1] is not None else problems[0][1]
      np.testing.assert_allclose(np.asarray(got[i]), np.asarray(case.per_example(x, t)),
                                 rtol=RTOL, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_nested_vmap_of_value_and_grad_under_jit_equals_a_loop(case):
  x, t = case.draw(np.random.default_rng(2), batch_shape=(2, 3, NUM_ROWS))
  f = jax.value_and_grad(case.mean)
  values, grads = jax.jit(jax.vmap(jax.vmap(f)))(x, t)
  for i in range(2):
    for j in range(3):
      value, grad = f(x[i, j], t[i, j])
      close(values[i, j], value)
      close(grads[i, j], grad)


# --- jit and reverse mode --------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_jit_of_reverse_mode_equals_eager_and_finite_differences(case):
  # One jitted program, each part on its own inputs: the per-example loss,
  # value_and_grad, jacrev, grad of grad (reverse over reverse), and
  # value_and_grad of a checkpointed loss. (jax.checkpoint's default policy is
  # nothing_saveable: its partial evaluation takes `policy or
  # nothing_saveable`, so that policy passed explicitly is the same program.)
  x0, t0 = case.draw(np.random.default_rng(0))
  x3, t3 = case.draw(np.random.default_rng(3))
  x4, t4 = case.draw(np.random.default_rng(4))
  x5, t5 = case.draw(np.random.default_rng(5))
  direction = jnp.asarray(np.random.default_rng(6).normal(size=x5.shape))
  x7, t7 = case.draw(np.random.default_rng(7))

  def directional_grad(x):
    return jnp.vdot(jax.grad(case.mean)(x, t5), direction)

  def transformed(x0, t0, x3, t3, x4, t4, x5, x7, t7):
    return dict(
        per_example=case.per_example(x0, t0),
        value_and_grad=jax.value_and_grad(case.mean)(x3, t3),
        jacobian=jax.jacrev(case.per_example)(x4, t4),  # (N, N, C)
        hessian_direction=jax.grad(directional_grad)(x5),
        checkpointed=jax.value_and_grad(jax.checkpoint(case.mean))(x7, t7),
    )

  got = jax.jit(transformed)(x0, t0, x3, t3, x4, t4, x5, x7, t7)

  # jit equals eager.
  close(got["per_example"], case.per_example(x0, t0))

  # value_and_grad and grad: the eager value and gradient, and finite differences.
  value, grad = got["value_and_grad"]
  close(value, case.mean(x3, t3))
  close(jax.grad(case.mean)(x3, t3), grad)
  np.testing.assert_allclose(grad, finite_difference_gradient(lambda x: case.mean(x, t3), x3),
                             rtol=1e-6, atol=1e-9)

  # jacrev: its rows are the per-example gradients.
  jacobian = got["jacobian"]
  assert jacobian.shape == (NUM_ROWS, NUM_ROWS, NUM_CLASSES)
  for n in range(NUM_ROWS):
    row_grad = jax.grad(lambda x: case.per_example(x, t4)[n])(x4)
    close(jacobian[n], row_grad)
    # Example n depends on row n only.
    assert not np.any(np.delete(np.asarray(jacobian[n]), n, axis=0))

  # grad of grad: finite differences of the gradient.
  np.testing.assert_allclose(got["hessian_direction"],
                             finite_difference_gradient(directional_grad, x5),
                             rtol=1e-5, atol=1e-8)

  # checkpoint: the same value and gradient.
  plain = jax.value_and_grad(case.mean)(x7, t7)
  close(got["checkpointed"][0], plain[0])
  close(got["checkpointed"][1], plain[1])


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_scan_over_a_training_loop_equals_a_python_loop(case):
  rng = np.random.default_rng(8)
  features = jnp.asarray(rng.normal(size=(5, NUM_ROWS, 4)))
  targets = jnp.stack([case.draw(rng)[1] for _ in range(5)])
  weights0 = jnp.asarray(rng.normal(size=(4, NUM_CLASSES)))

  def step(weights, batch):
    inputs, target = batch
    loss, grad = jax.value_and_grad(lambda w: case.mean(inputs @ w, target))(weights)
    return weights - 0.5 * grad, loss

  scanned, scanned_losses = jax.jit(lambda w: lax.scan(step, w, (features, targets)))(weights0)
  weights = weights0
  for k in range(5):
    weights, loss = step(weights, (features[k], targets[k]))
    close(scanned_losses[k], loss)
  close(scanned, weights)


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.bfloat16])
def test_eval_shape_matches_the_computed_shape_and_dtype(case, dtype):
  # A floating input is computed in its own dtype, a half one in float32 and
  # cast back. float32 takes float64's code (and float64's eager results are
  # this file's references, compiled once).
  x, t = case.draw(np.random.default_rng(9))
  x = x.astype(dtype)
  f = jax.value_and_grad(case.mean)
  for fn in (case.per_example, f):
    shapes = jax.eval_shape(fn, jax.ShapeDtypeStruct(x.shape, x.dtype),
                            jax.ShapeDtypeStruct(t.shape, t.dtype))
    computed = fn(x, t)
    assert (jax.tree.map(lambda a: (a.shape, a.dtype), shapes)
            == jax.tree.map(lambda a: (a.shape, a.dtype), computed))


# --- forward mode ------------------------------------------------------------


@pytest.mark.parametrize("case", SMOOTH, ids=ids(SMOOTH))
def test_soft_margin_forward_mode_agrees_with_reverse_mode(case):
  # One jitted program (these losses hold no value checks, the one thing jit
  # changes in the functions' own code): jvp, and forward mode against reverse
  # mode for the Jacobian and the Hessian.
  x, t = case.draw(np.random.default_rng(10))
  tangent = jnp.asarray(np.random.default_rng(11).normal(size=x.shape))
  flat = lambda v: case.mean(v.reshape(x.shape), t)  # noqa: E731

  def transformed(x, dx):
    return dict(
        jvp=jax.jvp(lambda x: case.mean(x, t), (x,), (dx,)),
        jacfwd=jax.jacfwd(case.per_example)(x, t),
        jacrev=jax.jacrev(case.per_example)(x, t),
        hessian=jax.hessian(flat)(x.reshape(-1)),
        reverse_over_reverse=jax.jacrev(jax.jacrev(flat))(x.reshape(-1)),
    )

  got = jax.jit(transformed)(x, tangent)
  value, directional = got["jvp"]
  close(value, case.mean(x, t))
  close(directional, jnp.vdot(jax.grad(case.mean)(x, t), tangent))
  close(got["jacfwd"], got["jacrev"])
  hessian = got["hessian"]
  close(hessian, got["reverse_over_reverse"])
  # Soft margin: sigma'(x) w / (N C) on the diagonal, zero elsewhere.
  assert not np.any(hessian - np.diag(np.diag(hessian)))


@pytest.mark.parametrize("case", HINGE, ids=ids(HINGE))
def test_hinge_losses_refuse_pure_forward_mode_with_jaxs_error(case):
  # They are custom_vjp functions (exact strict-kink gradients, O(N*C) memory);
  # torch has no forward mode for them either.
  x, t = case.draw(np.random.default_rng(12))
  with pytest.raises(TypeError, match=r"can't apply forward-mode autodiff \(jvp\) to a "
                                      r"custom_vjp function"):
    jax.jvp(lambda x: case.mean(x, t), (x,), (x,))
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jacfwd(case.mean)(x, t)


@pytest.mark.parametrize("case", HINGE, ids=ids(HINGE))
def test_hinge_losses_allow_forward_over_reverse_hessians(case):
  # Forward mode over the (reverse-mode) gradient works: the backward rule is
  # plain jax.numpy. p=1 and multilabel losses are piecewise linear (zero
  # Hessian), p=2 is piecewise quadratic.
  # Both Hessians, forward over reverse and reverse over reverse, in one jitted program.
  x, t = case.draw(np.random.default_rng(13))
  flat = lambda v: case.mean(v.reshape(x.shape), t)  # noqa: E731
  hessian, reverse_over_reverse = jax.jit(
      lambda v: (jax.hessian(flat)(v), jax.jacrev(jax.jacrev(flat))(v)))(x.reshape(-1))
  close(hessian, reverse_over_reverse)
  expected = finite_difference_jacobian(jax.grad(flat), x.reshape(-1))
  np.testing.assert_allclose(hessian, expected, rtol=1e-5, atol=1e-8)


# --- compilation -----------------------------------------------------------------


# Lists that JAX's timed events (compilations among them) are appended to
# while a test records. One listener for the whole session: JAX before 0.7
# has no public way to unregister one.
_recordings: list[list[str]] = []


def _record_event(event, *args, **kwargs):
  for events in _recordings:
    events.append(event)


jax.monitoring.register_event_duration_secs_listener(_record_event)


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_repeated_calls_with_the_same_shapes_compile_once(case):
  rng = np.random.default_rng(14)
  traces = []

  def step(x, t):
    traces.append(None)
    return jax.value_and_grad(case.mean)(x, t)

  jitted = jax.jit(step)
  compiles = []
  jax.block_until_ready(jitted(*case.draw(rng)))
  jax.block_until_ready(case.per_example(*case.draw(rng)))  # warm the eager path
  _recordings.append(compiles)
  try:
    for _ in range(3):
      jax.block_until_ready(jitted(*case.draw(rng)))
      jax.block_until_ready(case.per_example(*case.draw(rng)))
  finally:
    _recordings.remove(compiles)
  assert len(traces) == 1
  # Eager calls with new values of the same shapes reuse every compiled kernel.
  assert not [e for e in compiles if "compile" in e], compiles
