"""Out-of-range targets inside jitted code: a checkify error when asked, else NaN.

Eager calls with concrete arrays raise ``ValueError`` (test_validation.py).
Under a transformation the values are unknown at trace time, so each API
attaches a check to the trace (``jaxmargin._checkify_guard``):
``checkify.checkify`` with its default user checks reports it, and without
checkify the example's loss is NaN. The check is an effect-free primitive
where JAX can host it, else ``checkify.debug_check``; both paths are tested.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxmargin
from jaxmargin import _checkify_guard, losses

X = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)))

# (name, loss with per-example output, valid target, target with row 1 invalid, message)
CASES = [
    ("torch multilabel_margin_loss",
     lambda x, t: jaxmargin.multilabel_margin_loss(x, t, reduction="none"),
     jnp.array([[3, 0, -1, 1], [1, -1, 0, 0], [2, 3, 0, -1]]),
     jnp.array([[3, 0, -1, 1], [1, -1, 4, 0], [2, 3, 0, -1]]),
     r"multilabel_margin_loss: target values must lie in \[-1, 3\]; got values in \[-1, 4\]"),
    ("torch multi_margin_loss",
     lambda x, t: jaxmargin.multi_margin_loss(x, t, reduction="none"),
     jnp.array([3, 0, 2]), jnp.array([3, -1, 2]),
     r"multi_margin_loss: target values must lie in \[0, 3\]; got values in \[-1, 3\]"),
    ("torch multi_margin_loss uint8",
     lambda x, t: jaxmargin.multi_margin_loss(x, t, reduction="none"),
     jnp.array([3, 0, 2], jnp.uint8), jnp.array([3, 255, 2], jnp.uint8),
     r"target values must lie in \[0, 3\]; got values in \[2, 255\]"),
    ("optax multiclass_margin_loss",
     lambda x, t: losses.multiclass_margin_loss(x, t),
     jnp.array([3, 0, 2]), jnp.array([3, 9, 2]),
     r"multiclass_margin_loss: labels values must lie in \[0, 3\]; got values in \[2, 9\]"),
    ("optax multilabel_margin_loss",
     lambda x, t: losses.multilabel_margin_loss(x, t),
     jnp.array([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 0]]),
     jnp.array([[1, 0, 0, 1], [0, -1, 0, 0], [1, 1, 1, 0]]),
     r"multilabel_margin_loss: labels values must be 0 or 1 \(multi-hot\); got -1"),
]
IDS = [c[0] for c in CASES]


def mean_loss(fn):
  return lambda x, t: jnp.mean(fn(x, t))


@pytest.fixture(params=["primitive", "debug_check"])
def check_path(request, monkeypatch):
  """Runs a test with the effect-free check, then with the debug_check fallback."""
  if request.param == "debug_check":
    monkeypatch.setattr(_checkify_guard, "checked_p", None)
  elif _checkify_guard.checked_p is None:
    pytest.skip("this JAX cannot host the primitive (see the test below)")
  return request.param


def has_value_check(jaxpr) -> bool:
  """Whether a jaxpr (at any depth) holds a jaxmargin value check."""
  text = str(jaxpr)
  return "jaxmargin_checked[" in text or "check[debug=True]" in text


def test_this_jax_hosts_the_effect_free_check():
  # The primitive needs shard_map's vma typing (JAX >= 0.6.1) and checkify's
  # rule table; a JAX that renamed the latter would silently bring back the
  # debug_check and its dispatch cost.
  if jax.__version_info__ >= (0, 6, 1):
    assert _checkify_guard.checked_p is not None


@pytest.mark.parametrize("name, fn, good, bad, message", CASES, ids=IDS)
def test_checked_training_steps_have_no_effect_so_jit_takes_its_fast_path(
    name, fn, good, bad, message, check_path):
  # JAX dispatches a jitted function whose jaxpr has an effect on its slow
  # Python path (benchmarks/dispatch.py); the check must not add one.
  jaxpr = jax.make_jaxpr(jax.jit(jax.value_and_grad(mean_loss(fn))))(X, bad)
  assert has_value_check(jaxpr)
  assert bool(jaxpr.effects) == (check_path == "debug_check")


@pytest.mark.parametrize("name, fn, good, bad, message", CASES, ids=IDS)
def test_plain_checkify_of_jitted_code_reports_the_bad_target(
    name, fn, good, bad, message, check_path):
  train_step = jax.jit(jax.value_and_grad(mean_loss(fn)))
  err, _ = checkify.checkify(train_step)(X, bad)
  with pytest.raises(checkify.JaxRuntimeError, match=message):
    err.throw()
  err, (value, grad) = checkify.checkify(train_step)(X, good)
  assert err.get() is None
  np.testing.assert_allclose(value, jnp.mean(fn(X, good)), rtol=1e-12)


@pytest.mark.parametrize("name, fn, good, bad, message", CASES, ids=IDS)
def test_jit_of_checkify_and_batched_checks_report_it_too(
    name, fn, good, bad, message, check_path):
  fn = (lambda f: lambda x, t: f(x, t))(fn)   # a new function: no trace of the other path
  err, _ = jax.jit(checkify.checkify(fn))(X, bad)
  with pytest.raises(checkify.JaxRuntimeError, match=message):
    err.throw()
  # vmap of checkify over targets: one error per batch element; checkify of
  # vmap over targets: the error. (The multi-label margin losses loop over
  # label slots up to the batch's longest list, the same for every example
  # under vmap: a loop with a batched trip count would stop both.)
  targets = jnp.stack([good, bad])
  errs, _ = jax.vmap(checkify.checkify(fn), in_axes=(None, 0))(X, targets)
  assert errs.get() is not None and "at mapped index 1" in errs.get()
  err, _ = checkify.checkify(jax.vmap(fn, in_axes=(None, 0)))(X, targets)
  # The values it quotes are the whole batch's, the good example's too.
  with pytest.raises(checkify.JaxRuntimeError, match=message.split("; got")[0]):
    err.throw()
  # checkify of vmap over the scores (a batch of models, one target).
  err, _ = checkify.checkify(jax.vmap(fn, in_axes=(0, None)))(jnp.stack([X, -X]), bad)
  with pytest.raises(checkify.JaxRuntimeError, match=message):
    err.throw()
  # The check is for the user to turn on: checkify's other error sets leave it
  # out, and valid input generates no NaN, inf or division error inside.
  err, _ = checkify.checkify(jax.jit(fn), errors=checkify.index_checks)(X, bad)
  assert err.get() is None
  for f in (fn, jax.grad(mean_loss(fn))):
    err, _ = checkify.checkify(jax.jit(f), errors=checkify.float_checks)(X, good)
    assert err.get() is None


@pytest.mark.parametrize("name, fn, good, bad, message", CASES, ids=IDS)
def test_without_checkify_the_bad_row_is_nan_in_value_and_gradient(name, fn, good, bad, message):
  values = jax.jit(fn)(X, bad)
  expected = fn(X, good)
  assert np.isnan(values[1])
  np.testing.assert_allclose(np.delete(values, 1), np.delete(expected, 1), rtol=1e-12)
  grad = jax.jit(jax.grad(mean_loss(fn)))(X, bad)
  assert np.all(np.isnan(grad[1])) and np.all(np.isfinite(np.delete(grad, 1, axis=0)))


@pytest.mark.parametrize("name, fn, good, bad, message", CASES, ids=IDS)
def test_eager_calls_with_concrete_arrays_still_raise_value_error(name, fn, good, bad, message):
  with pytest.raises(ValueError, match=message):
    fn(X, bad)


def test_padded_to_multi_hot_reports_bad_targets_through_checkify():
  bad = jnp.array([[0, 9, -1, -1]])
  err, _ = checkify.checkify(jax.jit(losses.padded_to_multi_hot))(bad)
  with pytest.raises(checkify.JaxRuntimeError,
                     match=r"padded_to_multi_hot: target values must lie in \[-1, 3\]"):
    err.throw()


def test_flax_module_reports_bad_targets_through_checkify():
  from jaxmargin import nnx as jm_nnx
  loss_fn = jm_nnx.MultiMarginLoss()
  err, _ = checkify.checkify(jax.jit(lambda x, t: loss_fn(x, t)))(X, jnp.array([3, 4, 0]))
  with pytest.raises(checkify.JaxRuntimeError, match="multi_margin_loss: target values"):
    err.throw()


@pytest.mark.parametrize("method", ["slots", "sort"])
def test_valid_input_passes_every_checkify_check_in_both_multilabel_methods(method):
  # No NaN made from finite values, no division by zero, no out-of-bounds
  # index (the cores scatter only in bounds): all_checks stays quiet, so users
  # can checkify their whole train step.
  from jaxmargin._multilabel_margin import multilabel_margin_per_sample
  target = jnp.array([[3, 0, -1, 1], [1, -1, 0, 0], [2, 3, 0, 1]])

  def loss(x):
    return jnp.mean(multilabel_margin_per_sample(x, target, jnp.float64(1), method))

  for f in (loss, jax.grad(loss), lambda x: losses.multi_hot_to_padded(x > 0),
            lambda x: losses.padded_to_multi_hot(target)):
    err, _ = checkify.checkify(jax.jit(f), errors=checkify.all_checks)(X)
    assert err.get() is None


@pytest.mark.parametrize("name, fn, good, bad, message", CASES, ids=IDS)
def test_value_checks_off_leave_no_check_and_checkify_sees_nothing(name, fn, good, bad, message):
  # Turned off, the trace holds no check at all; the bad row is still NaN.
  assert has_value_check(jax.make_jaxpr(fn)(X, bad))
  with jaxmargin.value_checks(False):
    jaxpr = jax.make_jaxpr(jax.value_and_grad(mean_loss(fn)))(X, bad)
    # A new function: jit would reuse an earlier trace of ``fn`` itself.
    err, values = checkify.checkify(jax.jit(lambda x, t: fn(x, t)))(X, bad)
  assert not has_value_check(jaxpr) and not jaxpr.effects
  assert err.get() is None
  assert np.isnan(values[1]) and np.all(np.isfinite(np.delete(values, 1)))
  # Eager calls with concrete targets still raise: nothing is traced there.
  with jaxmargin.value_checks(False), pytest.raises(ValueError, match=message):
    fn(X, bad)


def test_value_checks_are_read_when_traced_and_restored_after_the_block():
  def new_step():
    return jax.jit(lambda x, t: jaxmargin.multi_margin_loss(x, t))

  bad = jnp.array([3, 7, 0])
  with jaxmargin.value_checks(False):
    with jaxmargin.value_checks(True):
      assert has_value_check(jax.make_jaxpr(new_step())(X, bad))
    assert not has_value_check(jax.make_jaxpr(new_step())(X, bad))
    step = new_step()
    step(X, bad)   # traced and compiled here, without the check
  # A function traced inside the block keeps what it was traced with...
  assert checkify.checkify(step)(X, bad)[0].get() is None
  # ...and one traced after it has the check again.
  err, _ = checkify.checkify(new_step())(X, bad)
  assert "target values must lie in [0, 3]" in err.get()


@pytest.mark.parametrize("raw, expected", [(None, True), ("1", True), (" On ", True),
                                           ("true", True), ("0", False), ("off", False),
                                           ("FALSE", False), ("no", False)])
def test_value_checks_default_comes_from_the_environment(raw, expected):
  from jaxmargin._settings import _value_checks_from_env
  assert _value_checks_from_env(raw) is expected


def test_value_checks_reject_bad_settings():
  from jaxmargin._settings import _value_checks_from_env
  with pytest.raises(ValueError, match="JAXMARGIN_VALUE_CHECKS is 'maybe'; expected one of 1"):
    _value_checks_from_env("maybe")
  with pytest.raises(TypeError, match="value_checks: enabled is 0; expected True or False"):
    with jaxmargin.value_checks(0):
      pass
