"""Class weights and hard negatives of the multi-label margin loss, against explicit pair loops.

``class_weights`` multiply each label's terms; ``hard_negatives=k`` keeps only
each row's ``k`` highest-scoring negatives (``lax.top_k``'s order: NaN first,
+0 above -0, ties to the lower class). The reference below visits every
(label, negative) pair in Python; values and the gradients with respect to the
scores, the weights and the margin are compared in float64 at 1e-9 (float32 at
2e-5), for both methods of the core (slots and sort) and the public API, eager,
jitted and vmapped, with ``where``, ties at the k-th negative and NaN/inf
scores. The degenerate settings (weights of 1, ``k >= C``) must give the plain
loss bit for bit. The fused losses' options are in
``tests/test_linear_options.py``, the propensity helpers in
``tests/test_propensity.py`` and the 8-device checks in
``tests/multidevice/test_sharded_options.py``.
"""

from __future__ import annotations

import functools
import pathlib
import runpy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from jaxmargin import losses
from jaxmargin._multilabel_margin import METHODS, multilabel_margin_per_sample

# --- the reference: explicit pair loops ------------------------------------------


def _top_k_order(row, candidates):
  """``candidates`` in ``lax.top_k``'s order of ``row``: NaN, then high to low, +0 before -0."""
  def key(d):
    value = row[d]
    if np.isnan(value):
      return (0, 0.0, 0.0, d)
    return (1, -value, -np.copysign(1.0, value), d)
  return sorted(candidates, key=key)


def pair_loops(x, lists, margin=1.0, weights=None, k=None, included=None, cotangent=None):
  """Loss and gradients (scores, per-class weights ``(N, C)``, margin) from every pair.

  ``lists``: each row's labels (a label listed twice counts twice); ``weights``:
  ``(N, C)`` weight of each class as a label; ``included``: ``(N, C)`` bool
  (the divisor is the included count, at least 1).
  """
  x = np.asarray(x, np.float64)
  num_rows, num_classes = x.shape
  weights = np.ones_like(x) if weights is None else np.asarray(weights, np.float64)
  included = np.ones(x.shape, bool) if included is None else np.asarray(included)
  cotangent = np.ones(num_rows) if cotangent is None else np.asarray(cotangent)
  value, grad_x = np.zeros(num_rows), np.zeros_like(x)
  grad_w, grad_margin = np.zeros_like(x), 0.0
  with np.errstate(invalid="ignore"):
    for n in range(num_rows):
      labels = [j for j in lists[n] if included[n, j]]
      negatives = [d for d in range(num_classes) if included[n, d] and d not in set(labels)]
      if k is not None:
        negatives = _top_k_order(x[n], negatives)[:k]
      divisor = max(int(included[n].sum()), 1)
      scale = cotangent[n] / divisor
      for j in labels:
        for d in negatives:
          z = (margin - x[n, j]) + x[n, d]
          if z > 0:  # torch's strict kink; False for NaN
            value[n] += weights[n, j] * z
            grad_x[n, j] -= weights[n, j] * scale
            grad_x[n, d] += weights[n, j] * scale
            grad_w[n, j] += z * scale
            grad_margin += weights[n, j] * scale
      value[n] /= divisor
  return value, grad_x, grad_w, grad_margin


def lists_of_hot(hot):
  return [list(np.flatnonzero(row)) for row in np.asarray(hot)]


# --- data ----------------------------------------------------------------------


def scores(rng, shape, kind, dtype=np.float64):
  if kind == "ties":
    # Multiples of 0.5: exact ties at the kink and at the k-th negative.
    return (0.5 * rng.integers(-3, 4, size=shape)).astype(dtype)
  x = rng.normal(size=shape).astype(dtype)
  if kind == "nonfinite":
    flat = x.reshape(-1)
    spots = rng.choice(flat.size, size=max(2, flat.size // 8), replace=False)
    flat[spots] = rng.choice([np.nan, np.inf, -np.inf, np.nan], size=spots.size)
  if kind == "zeros":
    x[:, ::3] = 0.0
    x[:, 1::3] = -0.0
  return x


def multi_hot(rng, num_rows, num_classes, most):
  hot = np.zeros((num_rows, num_classes), np.int32)
  for row in hot:
    row[rng.choice(num_classes, rng.integers(0, most + 1), replace=False)] = 1
  hot[0] = 0
  hot[0, :2] = 1
  if num_rows > 1:
    hot[1] = 0                       # no label: loss 0
  return hot


def padded_with_duplicates(rng, num_rows, num_classes, longest):
  """torch's padded targets: labels (some twice), -1, then junk."""
  target = rng.integers(0, num_classes, size=(num_rows, num_classes))
  lists = []
  for row in target:
    length = int(rng.integers(0, longest + 1))
    if length >= 2:
      row[1] = row[0]                # a label listed twice
    if length < num_classes:
      row[length] = -1
    lists.append(list(row[:length]))
  return target, lists


KINDS = ["normal", "ties", "nonfinite", "zeros"]


def assert_close(actual, expected, rtol):
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  finite = expected[np.isfinite(expected)]
  scale = np.max(np.abs(finite), initial=1.0)
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


# --- the core, each method ------------------------------------------------------


@functools.cache
def _core_value_and_grads(method):
  """The weighted core's value and VJP: one program a method, the target an argument."""
  @jax.jit
  def run(x, w, m, target, cotangent):
    value, vjp = jax.vjp(
        lambda x, w, m: multilabel_margin_per_sample(x, target, m, method, label_weights=w),
        x, w, m)
    return (value, *vjp(cotangent))
  return run


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
def test_core_label_weights_match_pair_loops_with_duplicates(method, kind):
  rng = np.random.default_rng([3, len(kind), METHODS.index(method)])
  num_rows, num_classes = 6, 11
  x = scores(rng, (num_rows, num_classes), kind)
  target, lists = padded_with_duplicates(rng, num_rows, num_classes, 7)
  weights = rng.uniform(0.2, 2.5, size=(num_rows, num_classes))
  cotangent = 1.0 + np.arange(num_rows) % 3
  margin = 0.8
  got = _core_value_and_grads(method)(jnp.asarray(x), jnp.asarray(weights), jnp.float64(margin),
                                      jnp.asarray(target), jnp.asarray(cotangent))
  want = pair_loops(x, lists, margin, weights, cotangent=cotangent)
  for a, expected in zip(got, want, strict=True):
    assert_close(a, expected, 1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_core_weights_of_one_give_the_unweighted_loss_bit_for_bit(method):
  rng = np.random.default_rng(11)
  for dtype in (np.float32, np.float64):
    x = jnp.asarray(scores(rng, (7, 13), "ties", dtype))
    target, _ = padded_with_duplicates(rng, 7, 13, 9)
    target = jnp.asarray(target)
    margin = jnp.asarray(1.0, dtype)

    def plain(x, m, target=target):
      return multilabel_margin_per_sample(x, target, m, method)

    def ones(x, m, target=target):
      return multilabel_margin_per_sample(x, target, m, method, label_weights=jnp.ones_like(x))

    want = jax.vjp(plain, x, margin)
    got = jax.vjp(ones, x, margin)
    assert got[0].dtype == want[0].dtype == dtype
    np.testing.assert_array_equal(got[0], want[0])
    cotangent = jnp.asarray(1.0 + np.arange(7) % 3, dtype)
    for a, b in zip(got[1](cotangent), want[1](cotangent), strict=True):
      np.testing.assert_array_equal(a, b)


# --- the public API ---------------------------------------------------------------


def public(x, hot, weights=None, k=None, where=None, margin=1.0):
  return losses.multilabel_margin_loss(x, hot, margin=margin, class_weights=weights,
                                       hard_negatives=k, where=where)


@functools.cache
def _jitted_public(k):
  """The public loss under ``jit``, the labels and mask arguments: one program an option
  (and shape) for every data set, where a jit of each test's own closure compiles its own."""
  return jax.jit(lambda x, m, w, hot, where: public(x, hot, w, k, where, m))


def check_public(x, hot, weights, k, where, margin, rtol, jit):
  cotangent = 1.0 + np.arange(x.shape[0]) % 3
  args = [jnp.asarray(x), jnp.asarray(margin, x.dtype)]
  if weights is not None:
    args.append(jnp.asarray(weights, x.dtype))
  hot, where = jnp.asarray(hot), None if where is None else jnp.asarray(where)

  def loss(x, m, w=None):
    if jit:
      return _jitted_public(k)(x, m, w, hot, where)
    return public(x, hot, w, k, where, m)

  value, vjp = jax.vjp(loss, *args)
  grads = vjp(jnp.asarray(cotangent, x.dtype))
  per_class = None if weights is None else np.broadcast_to(weights, x.shape)
  want_value, want_x, want_w, want_m = pair_loops(x, lists_of_hot(hot), margin, per_class, k,
                                                  where, cotangent)
  assert value.dtype == x.dtype
  assert_close(value, want_value, rtol)
  assert_close(grads[0], want_x, rtol)
  assert_close(grads[1], want_m, rtol)
  if weights is not None:
    assert_close(grads[2], want_w.sum(axis=0), rtol)


OPTIONS = [(False, 1), (False, 3), (False, 8), (True, None), (True, 1), (True, 3), (True, 8)]
# Every option under jit; eager (the public function's checks on concrete
# arrays, its kernel the same jitted program) with and without weights, with
# and without k, not again for each k.
CASES = [(True, *option) for option in OPTIONS]
CASES += [(False, *option) for option in ((False, 1), (True, None), (True, 3))]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("jit, weighted, k", CASES,
                         ids=[f"{('eager', 'jit')[j]}-weighted={w}-k={k}" for j, w, k in CASES])
def test_public_options_match_pair_loops(jit, weighted, k, kind):
  rng = np.random.default_rng([len(kind), k or 0, weighted])
  x = scores(rng, (8, 12), kind)
  hot = multi_hot(rng, 8, 12, 5)
  weights = rng.uniform(0.0, 3.0, size=12) if weighted else None
  if weighted and kind == "nonfinite":
    weights = np.maximum(weights, 0.1)   # 0 * inf is NaN in any order
  check_public(x, hot, weights, k, None, 0.9, 1e-9, jit)


@pytest.mark.parametrize("k", [None, 2, 5])
def test_public_options_with_where_match_pair_loops(k):
  rng = np.random.default_rng(21 + (k or 0))
  x = scores(rng, (9, 10), "ties")
  hot = multi_hot(rng, 9, 10, 6)
  where = rng.random((9, 10)) < 0.7
  where[2] = False                   # nothing included: loss 0
  check_public(x, hot, rng.uniform(0.5, 2.0, 10), k, where, 1.1, 1e-9, jit=True)


# Without and with hard negatives (k = 4 took the path of k = 1 again).
@pytest.mark.parametrize("k", [None, 1])
def test_float32_matches_the_float64_pair_loops(k):
  rng = np.random.default_rng(5)
  x = scores(rng, (6, 9), "normal", np.float32)
  hot = multi_hot(rng, 6, 9, 4)
  check_public(x, hot, rng.uniform(0.5, 2.0, 9).astype(np.float32), k, None, 1.0, 2e-5,
               jit=True)


def test_ties_at_the_kth_negative_go_to_the_lower_class():
  # Negatives 1, 2 and 4 tie at 0.5; k=2 keeps classes 1 and 2, not 4.
  x = jnp.array([[0.0, 0.5, 0.5, -1.0, 0.5]])
  hot = jnp.array([[1, 0, 0, 0, 0]])
  grad = jax.grad(lambda x: public(x, hot, k=2)[0])(x)
  np.testing.assert_array_equal(np.asarray(grad[0, 1:]) != 0, [True, True, False, False])
  assert float(public(x, hot, k=2)[0]) == pytest.approx(2 * 1.5 / 5)


def test_nan_negatives_take_their_place_and_add_nothing():
  # lax.top_k ranks NaN first: with k=1 the NaN negative is the one kept.
  x = jnp.array([[0.0, jnp.nan, 0.5, 0.2]])
  hot = jnp.array([[1, 0, 0, 0]])
  assert float(public(x, hot, k=1)[0]) == 0.0
  assert float(public(x, hot, k=2)[0]) == pytest.approx(1.5 / 4)
  # +0 ranks above -0 (the terms are equal; the gradient goes to class 2).
  grad = jax.grad(lambda x: public(x, hot, k=1)[0])(jnp.array([[0.0, -0.0, 0.0, -1.0]]))
  np.testing.assert_array_equal(grad[0], [-0.25, 0.0, 0.25, 0.0])


# Each dtype once and both modes (the public function jits its kernel: eager
# and under an outer jit it is one program); test_public_options_match_pair_loops
# runs every option both ways.
@pytest.mark.parametrize("dtype, jit", [(np.float64, False), (np.float32, True),
                                        (jnp.bfloat16, True)],
                         ids=["float64-eager", "float32-jit", "bfloat16-jit"])
def test_degenerate_options_give_the_plain_loss_exactly(dtype, jit):
  rng = np.random.default_rng(8)
  num_classes = 10
  x = jnp.asarray(scores(rng, (2, 5, num_classes), "ties"), dtype)
  hot = jnp.asarray(multi_hot(rng, 10, num_classes, 6).reshape(2, 5, num_classes))
  margin = jnp.asarray(0.5, dtype)

  def run(**options):
    def loss(x, m):
      return losses.multilabel_margin_loss(x, hot, margin=m, **options)
    fn = jax.jit(loss) if jit else loss
    value, vjp = jax.vjp(fn, x, margin)
    return (value, *vjp(jnp.ones_like(value)))

  want = run()
  # k = C and k > C take the same branch: k > C alone, k = C with the weights.
  for options in ({"class_weights": jnp.ones(num_classes)}, {"hard_negatives": num_classes + 5},
                  {"class_weights": jnp.ones(num_classes), "hard_negatives": num_classes}):
    for got, expected in zip(run(**options), want, strict=True):
      assert got.dtype == expected.dtype
      np.testing.assert_array_equal(got, expected, err_msg=str(options))


def test_options_under_vmap_equal_the_batched_call():
  rng = np.random.default_rng(9)
  x = jnp.asarray(scores(rng, (3, 4, 12), "ties"))
  hot = jnp.asarray(multi_hot(rng, 12, 12, 5).reshape(3, 4, 12))
  weights = jnp.asarray(rng.uniform(0.5, 2.0, (3, 12)))

  def loss(x, hot, w):
    return losses.multilabel_margin_loss(x, hot, class_weights=w, hard_negatives=3)

  # Over examples (scores and labels), the weights shared.
  mapped = jax.vmap(loss, in_axes=(0, 0, None))(x, hot, weights[0])
  np.testing.assert_array_equal(mapped, loss(x, hot, weights[0]))
  # Over the weights too: one set per batch element, values and gradients.
  def total(x, w):
    return jnp.sum(jax.vmap(loss)(x, hot, w) ** 2)
  got = jax.jit(jax.grad(total, argnums=(0, 1)))(x, weights)
  # Each batch element its own call: one jitted program for the three.
  single = jax.jit(jax.grad(lambda x, w, h: jnp.sum(loss(x, h, w) ** 2), argnums=(0, 1)))
  want = [single(x_b, w_b, hot_b) for x_b, hot_b, w_b in zip(x, hot, weights, strict=True)]
  for i in range(2):
    assert_close(got[i], np.stack([g[i] for g in want]), 1e-12)


def test_options_along_another_axis():
  rng = np.random.default_rng(10)
  x = scores(rng, (5, 9), "normal")
  hot = multi_hot(rng, 5, 9, 4)
  weights = jnp.asarray(rng.uniform(0.5, 2.0, 9))
  want = public(jnp.asarray(x), jnp.asarray(hot), weights, 3)
  got = losses.multilabel_margin_loss(jnp.asarray(x.T), jnp.asarray(hot.T), axis=0,
                                      class_weights=weights, hard_negatives=3)
  np.testing.assert_array_equal(got, want)


# --- errors and checks ---------------------------------------------------------------


@pytest.mark.parametrize("k, error, message", [
    (0, ValueError, "hard_negatives is 0; expected a positive int or None"),
    (-2, ValueError, "hard_negatives is -2"),
    (True, TypeError, "hard_negatives is True; expected a positive int"),
    (2.0, TypeError, "hard_negatives is 2.0"),
])
def test_bad_hard_negatives_raise(k, error, message):
  x, hot = jnp.zeros((2, 4)), jnp.zeros((2, 4), jnp.int32)
  with pytest.raises(error, match=f"^multilabel_margin_loss: {message}"):
    losses.multilabel_margin_loss(x, hot, hard_negatives=k)


def test_traced_hard_negatives_and_bad_weights_raise():
  x, hot = jnp.zeros((2, 4)), jnp.zeros((2, 4), jnp.int32)
  with pytest.raises(TypeError, match=r"hard_negatives is a traced value.*static"):
    jax.jit(lambda k: losses.multilabel_margin_loss(x, hot, hard_negatives=k))(2)
  with pytest.raises(ValueError, match=r"class_weights shape \(3,\) does not match the 4 "
                                       r"classes of scores; expected \(4,\)"):
    losses.multilabel_margin_loss(x, hot, class_weights=jnp.ones(3))
  with pytest.raises(TypeError, match="class_weights dtype bool"):
    losses.multilabel_margin_loss(x, hot, class_weights=jnp.ones(4, bool))


def test_checkify_reports_bad_labels_with_the_options_and_passes_good_ones():
  rng = np.random.default_rng(12)
  x = jnp.asarray(scores(rng, (4, 6), "normal"))
  good = jnp.asarray(multi_hot(rng, 4, 6, 3))
  bad = good.at[2, 1].set(-1)
  weights = jnp.asarray(rng.uniform(0.5, 2.0, 6))

  def step(x, hot, w):
    loss = losses.multilabel_margin_loss(x, hot, class_weights=w, hard_negatives=2)
    return jnp.mean(loss)

  err, _ = checkify.checkify(jax.jit(jax.value_and_grad(step, argnums=(0, 2))))(x, bad, weights)
  with pytest.raises(checkify.JaxRuntimeError, match="labels values must be 0 or 1"):
    err.throw()
  # Without checkify the bad example is NaN, value and gradients; the others are not.
  loss = jax.jit(lambda x, h, w: losses.multilabel_margin_loss(x, h, class_weights=w,
                                                               hard_negatives=2))(x, bad, weights)
  assert np.isnan(loss[2]) and np.all(np.isfinite(np.delete(np.asarray(loss), 2)))
  # Good labels pass every check checkify has (NaN, division, index).
  err, _ = checkify.checkify(jax.jit(jax.value_and_grad(step, argnums=(0, 2))),
                             errors=checkify.all_checks)(x, good, weights)
  assert err.get() is None, err.get()


@pytest.mark.parametrize("method", METHODS)
def test_weighted_core_passes_every_checkify_check_in_each_method(method):
  rng = np.random.default_rng(14)
  x = jnp.asarray(scores(rng, (4, 9), "normal"))
  target, _ = padded_with_duplicates(rng, 4, 9, 9)
  weights = jnp.asarray(rng.uniform(0.5, 2.0, (4, 9)))

  def total(x, w):
    return jnp.sum(multilabel_margin_per_sample(x, jnp.asarray(target), jnp.float64(1), method,
                                                label_weights=w))

  err, _ = checkify.checkify(jax.jit(jax.value_and_grad(total, argnums=(0, 1))),
                             errors=checkify.all_checks)(x, weights)
  assert err.get() is None, err.get()


# --- determinism and memory ----------------------------------------------------------


def _float_scatter_adds(fn, *args):
  from tests import programs
  jaxpr = jax.make_jaxpr(fn)(*args)
  return [eqn for platform in ("cuda", "rocm")
          for eqn, _ in programs.equations(jaxpr, platform=platform)
          if eqn.primitive.name == "scatter-add"
          and jnp.issubdtype(eqn.invars[0].aval.dtype, jnp.floating)]


def test_no_float_scatter_add_on_a_gpu_in_the_weighted_gradients():
  # The class-weight gradient must be reproducible on a GPU: summed over the
  # examples by a reduction, and no atomic float adds anywhere.
  rng = np.random.default_rng(13)
  x = jnp.asarray(scores(rng, (5, 40), "normal"), jnp.float32)
  hot = jnp.asarray(multi_hot(rng, 5, 40, 30))
  weights = jnp.ones(40, jnp.float32)

  def step(x, w):
    return jnp.mean(losses.multilabel_margin_loss(x, hot, class_weights=w, hard_negatives=7))

  assert not _float_scatter_adds(jax.value_and_grad(step, argnums=(0, 1)), x, weights)


def _largest_intermediate(fn, *args):
  sizes = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      sizes.extend(v.aval.size for v in eqn.outvars if hasattr(v.aval, "size"))
      for param in eqn.params.values():
        for sub in param if isinstance(param, (tuple, list)) else (param,):
          inner = getattr(sub, "jaxpr", sub)
          if hasattr(inner, "eqns"):
            walk(inner)

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return max(sizes)


def test_no_intermediate_grows_with_c_squared():
  num_rows, num_classes = 4, 256
  x = jax.ShapeDtypeStruct((num_rows, num_classes), jnp.float32)
  hot = jax.ShapeDtypeStruct((num_rows, num_classes), jnp.int32)
  w = jax.ShapeDtypeStruct((num_classes,), jnp.float32)

  def step(x, hot, w):
    return jnp.mean(losses.multilabel_margin_loss(x, hot, class_weights=w, hard_negatives=16))

  # N*C*C would be 262,144 elements; both methods' programs are walked.
  largest = _largest_intermediate(jax.value_and_grad(step, argnums=(0, 2)), x, hot, w)
  assert largest <= 8 * num_rows * (num_classes + 1), largest


@pytest.mark.slow
def test_compiled_value_and_grad_at_30000_classes_fits_24_nc_floats():
  # XLA's temporary memory, in units of N*C float32s (measured on CPU): 14.75
  # for the plain loss (tests/test_memory.py holds it to 16), 16.0 with hard
  # negatives, 21.75 with class weights (weighted counts, each class's hinge
  # sum for its weight's gradient, the weights per label), 23.0 with both.
  # An N*C*C intermediate would be 30,000 times more.
  num_rows, num_classes = 64, 30_000
  x = jax.ShapeDtypeStruct((num_rows, num_classes), jnp.float32)
  hot = jax.ShapeDtypeStruct((num_rows, num_classes), jnp.int32)
  w = jax.ShapeDtypeStruct((num_classes,), jnp.float32)

  def step(x, hot, w):
    return jnp.mean(losses.multilabel_margin_loss(x, hot, class_weights=w, hard_negatives=100))

  compiled = jax.jit(jax.value_and_grad(step, argnums=(0, 2))).lower(x, hot, w).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  assert temp <= 24 * num_rows * num_classes * 4, temp


# --- the figure of the docs ------------------------------------------------------------


def test_hard_negatives_figure_script_draws_the_figure(tmp_path, monkeypatch):
  script = pathlib.Path(__file__).resolve().parents[1] / "docs" / "figures"
  # Loaded as the examples are (tests/test_training_examples.py), main run below.
  namespace = runpy.run_path(str(script / "make_hard_negatives_curve.py"), run_name="not_main")
  # Its first and last k (every negative, the right panel's divisor): each k
  # compiles the loss anew, and the eight between take the same path.
  ks = namespace["KS"]
  monkeypatch.setitem(namespace["draw"].__globals__, "KS", (ks[0], ks[-1]))
  out = tmp_path / "hard.png"
  namespace["main"](["--out", str(out)])
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
