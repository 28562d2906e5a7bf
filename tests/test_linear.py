"""jaxmargin.linear: each fused loss equals the unfused loss of the materialised scores.

Values and gradients (features, kernel, bias and the hyperparameters) are
compared in float64 at 1e-9 relative, for chunk sizes that do and do not
divide C, both methods of the multi-label margin rule, every reduction, and
the corners of the unfused losses: duplicate labels, empty and full label
lists, exact ties at the kink, NaN and inf scores, infinite class weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.experimental import checkify

import jaxmargin
from jaxmargin import linear, losses
from jaxmargin._multilabel_margin import multilabel_margin_per_sample
from jaxmargin._multilabel_margin_fused import FUSED_COMPARE_MAX_SLOTS
from jaxmargin._settings import trace_platform
from jaxmargin._linear_multilabel_margin import _multilabel_margin

N, D, C, K = 7, 5, 37, 6


def problem(seed, num_rows=N, features=D, num_classes=C, slots=K, ties=False):
  """Features, kernel, bias, label lists (with a duplicate and an empty list) and labels."""
  rng = np.random.default_rng(seed)
  if ties:
    # Small integers: exact scores, so z == 0 happens (the strict kink).
    h = rng.integers(-2, 3, size=(num_rows, features)).astype(np.float64)
    w = 0.5 * rng.integers(-2, 3, size=(features, num_classes))
    b = 0.5 * rng.integers(-2, 3, size=num_classes)
  else:
    h = rng.normal(size=(num_rows, features))
    w = rng.normal(size=(features, num_classes))
    b = rng.normal(size=num_classes)
  lists = rng.integers(0, num_classes, size=(num_rows, slots))
  lengths = rng.integers(0, slots + 1, size=num_rows)
  lengths[0], lengths[1] = slots, 0
  lists = np.where(np.arange(slots) < lengths[:, None], lists, -1)
  lists[0, 1] = lists[0, 0]                     # a duplicate label
  lists[2, lengths[2]:] = rng.integers(-1, num_classes, size=slots - lengths[2])
  lists[2, min(lengths[2], slots - 1)] = -1     # entries after the first -1 are ignored
  y = rng.integers(0, num_classes, size=num_rows)
  return (jnp.asarray(h), jnp.asarray(w), jnp.asarray(b), jnp.asarray(lists, jnp.int32),
          jnp.asarray(y, jnp.int32))


def padded(lists, num_classes=C):
  return losses.label_list_to_padded(lists, num_classes=num_classes)


# name -> (fused(h, w, b, hyper, labels, lists, **kw), unfused(same), hyper(seed))
def _mlm(method):
  def fused(h, w, b, hyper, y, lists, **kw):
    return _multilabel_margin(h, w, lists, b, hyper[0], method=method, **kw)
  return fused


def _mlm_unfused(h, w, b, hyper, y, lists):
  return multilabel_margin_per_sample(h @ w + b, padded(lists, w.shape[1]), hyper[0])


def _mm(p):
  def fused(h, w, b, hyper, y, lists, **kw):
    return linear.multi_margin_loss(h, w, y, bias=b, p=p, margin=hyper[0],
                                    class_weights=hyper[1] if len(hyper) > 1 else None, **kw)

  def unfused(h, w, b, hyper, y, lists):
    return jaxmargin.multi_margin_loss(h @ w + b, y, p=p, margin=hyper[0],
                                       weight=hyper[1] if len(hyper) > 1 else None,
                                       reduction="none")
  return fused, unfused


def _soft(h, w, b, hyper, y, lists, **kw):
  return linear.multilabel_soft_margin_loss(h, w, lists, bias=b,
                                            class_weights=hyper[0] if hyper else None, **kw)


def _soft_unfused(h, w, b, hyper, y, lists):
  multi_hot = losses.label_list_to_multi_hot(lists, num_classes=w.shape[1])
  return jaxmargin.multilabel_soft_margin_loss(h @ w + b, multi_hot,
                                               weight=hyper[0] if hyper else None,
                                               reduction="none")


def _weights(num_classes=C):
  return jnp.asarray(np.random.default_rng(9).uniform(0.5, 2.0, num_classes))


LOSSES = {
    "mlm-compare": (_mlm("compare"), _mlm_unfused, lambda: (jnp.float64(1.3),)),
    "mlm-search": (_mlm("search"), _mlm_unfused, lambda: (jnp.float64(0.7),)),
    "mm-p1": (*_mm(1), lambda: (jnp.float64(1.3),)),
    "mm-p2": (*_mm(2), lambda: (jnp.float64(0.8),)),
    "mm-p1-weighted": (*_mm(1), lambda: (jnp.float64(1.0), _weights())),
    "mm-p2-weighted": (*_mm(2), lambda: (jnp.float64(1.1), _weights())),
    "soft": (_soft, _soft_unfused, lambda: ()),
    "soft-weighted": (_soft, _soft_unfused, lambda: (_weights(),)),
}
REDUCE = {"none": lambda x: x, "mean": jnp.mean, "sum": jnp.sum}


def assert_close(actual, expected, rtol=1e-9):
  """Equal to ``rtol`` of the largest finite entry; NaN and inf where expected."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape and actual.dtype == expected.dtype
  scale = np.max(np.abs(expected[np.isfinite(expected)]), initial=1.0)
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def assert_value_and_grads_equal(name, reduction, chunk_size, args, jit=False, rtol=1e-9,
                                 jit_reference=False, scalar_primal=True):
  """The fused loss's value and VJP (under ``jit`` if asked) against the unfused loss's.

  ``jit_reference``: the unfused loss's under ``jit`` too, one program where
  eager runs compile each of its operations for shapes and dtypes of their own.
  ``scalar_primal``: for "mean" and "sum", also the value of the loss not
  differentiated (a sweep for values only, then the reduction).
  """
  fused, unfused, _ = LOSSES[name]
  h, w, b, hyper, y, lists = args

  def fused_f(h, w, b, hyper):
    return fused(h, w, b, hyper, y, lists, reduction=reduction, chunk_size=chunk_size)

  def unfused_f(h, w, b, hyper):
    return REDUCE[reduction](unfused(h, w, b, hyper, y, lists))

  def value_and_grads(f):
    def run(h, w, b, hyper):
      value, vjp = jax.vjp(f, h, w, b, hyper)
      # Uneven over the rows ("none": each row's value is compared too), so
      # that row scaling shows.
      cotangent = (1.0 + jnp.arange(h.shape[0]) % 3) if reduction == "none" else 1.7
      return value, vjp(jnp.broadcast_to(cotangent, value.shape).astype(value.dtype))
    return run

  run = jax.jit(value_and_grads(fused_f)) if jit else value_and_grads(fused_f)
  value, grads = run(h, w, b, hyper)
  reference = jax.jit(value_and_grads(unfused_f)) if jit_reference else value_and_grads(unfused_f)
  want_value, want_grads = reference(h, w, b, hyper)
  assert_close(value, want_value, rtol)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
    assert_close(got, want, rtol)
  if reduction != "none" and scalar_primal:
    # A scalar loss not differentiated sweeps the classes for values only.
    assert_close(fused_f(h, w, b, hyper), want_value, rtol)


# Every loss per row with chunks that do not divide C (a ragged tail), whose
# per-row values and uneven cotangent check each row and both sweeps (values,
# then gradients); "mean" with the default chunk (one chunk of C), and "sum"
# once each method of the multi-label rule: the two share one scalar mode
# (the same for every rule: it scales the rows by 1/N, or 1), which sweeps
# values and gradients together. Its value without gradients (the reduction of
# the sweep for values only, which "none" checks for each rule) once a
# reduction and method.
CASES = [(name, 7, "none") for name in LOSSES] + [(name, None, "mean") for name in LOSSES]
CASES += [(name, 7, "sum") for name in ("mlm-compare", "mlm-search")]


@pytest.mark.parametrize("name, chunk_size, reduction", CASES)
def test_value_and_gradients_equal_the_unfused_loss(name, chunk_size, reduction):
  h, w, b, lists, y = problem(1)
  assert_value_and_grads_equal(name, reduction, chunk_size,
                               (h, w, b, LOSSES[name][2](), y, lists),
                               scalar_primal=name.startswith("mlm"))


# Reduction "none" runs each rule in both sweeps; the scalar mode adds no rule.
@pytest.mark.parametrize("name", LOSSES)
def test_exact_ties_at_the_kink_and_one_class_chunks_under_jit(name):
  h, w, b, lists, y = problem(2, ties=True)
  hyper = LOSSES[name][2]()
  hyper = (jnp.float64(1.0),) + hyper[1:] if name.startswith(("mlm", "mm")) else hyper
  assert_value_and_grads_equal(name, "none", 1, (h, w, b, hyper, y, lists), jit=True)


@pytest.mark.parametrize("name", LOSSES)
def test_nan_and_inf_scores_as_the_unfused_loss(name):
  h, w, b, lists, y = problem(3)
  lists = lists.at[3, 0].set(4).at[4, 0].set(20)     # NaN and -inf label scores too
  hyper = LOSSES[name][2]()
  fused, unfused, _ = LOSSES[name]
  b = b.at[4].set(jnp.nan).at[20].set(-jnp.inf)
  # Per row (the scalar losses reduce these same rows), from the forward pass
  # of the VJP that assert_value_and_grads_equal takes: one program for both.
  for bias in (b, b.at[11].set(jnp.inf)):
    value, _ = jax.vjp(
        lambda h, w, b, hyper: fused(h, w, b, hyper, y, lists, reduction="none", chunk_size=8),
        h, w, bias, hyper)
    assert_close(value, unfused(h, w, bias, hyper, y, lists))
  # The gradients of the rows whose loss is finite (the soft loss sums every
  # class, and a NaN or infinite score makes every row NaN there), repeated
  # to N rows: the shapes above.
  b = b.at[4].set(0.0).at[20].set(0.0) if name.startswith("soft") else b
  rows = np.flatnonzero(np.isfinite(unfused(h, w, b, hyper, y, lists)))
  assert len(rows) >= 2
  rows = np.resize(rows, N)
  assert_value_and_grads_equal(name, "none", 8, (h[rows], w, b, hyper, y[rows], lists[rows]))


def test_the_unfused_torch_functions_are_the_contract():
  # jaxmargin.linear.X(h, W, y, bias=b) == jaxmargin.X(h @ W + b, ...): the
  # public twins, margin 1, per-row.
  h, w, b, lists, y = problem(4)
  x = h @ w + b
  assert_close(linear.multilabel_margin_loss(h, w, lists, bias=b),
               jaxmargin.multilabel_margin_loss(x, padded(lists), reduction="none"))
  assert_close(linear.multi_margin_loss(h, w, y, bias=b),
               jaxmargin.multi_margin_loss(x, y, reduction="none"))
  multi_hot = losses.label_list_to_multi_hot(lists, num_classes=C)
  assert_close(linear.multilabel_soft_margin_loss(h, w, lists, bias=b),
               jaxmargin.multilabel_soft_margin_loss(x, multi_hot, reduction="none"))


def test_torch_linear_then_loss_agrees():
  h, w, b, lists, y = problem(5)
  ht, wt, bt = (torch.from_numpy(np.array(a)).requires_grad_(True) for a in (h, w, b))
  target = torch.from_numpy(np.asarray(padded(lists)).astype(np.int64))
  out = torch.nn.functional.multilabel_margin_loss(torch.nn.functional.linear(ht, wt.T, bt),
                                                   target)
  out.backward()
  value, grads = jax.value_and_grad(linear.multilabel_margin_loss, argnums=(0, 1))(
      h, w, lists, bias=b, reduction="mean")
  assert_close(value, jnp.asarray(out.detach().numpy()))
  assert_close(grads[0], jnp.asarray(ht.grad.numpy()))
  assert_close(grads[1], jnp.asarray(wt.grad.numpy()))


# The switch of the platform the tests run on. Chunks of 40 divide C = 200:
# one copy in the program of the chunk body (with K compares at K = 128),
# not two (no ragged tail, which the other tests cover).
@pytest.mark.parametrize("slots", [FUSED_COMPARE_MAX_SLOTS[trace_platform()],
                                   FUSED_COMPARE_MAX_SLOTS[trace_platform()] + 1])
def test_auto_method_on_either_side_of_the_switch(slots):
  h, w, b, lists, y = problem(6, num_classes=200, slots=slots)
  got = jax.value_and_grad(linear.multilabel_margin_loss, argnums=(0, 1))(
      h, w, lists, bias=b, reduction="sum", chunk_size=40)
  want = jax.value_and_grad(
      lambda h, w: jnp.sum(_mlm_unfused(h, w, b, (1.0,), None, lists)), argnums=(0, 1))(h, w)
  for a, e in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert_close(a, e)


def test_every_class_a_label_and_no_label_at_all():
  h, w, b, _, _ = problem(7, num_classes=6)
  everything = jnp.tile(jnp.arange(6), (N, 1))
  nothing = jnp.full((N, 3), -1)
  for lists in (everything, nothing):
    for method in ("compare", "search"):
      value, grads = jax.value_and_grad(
          lambda h, w: _multilabel_margin(h, w, lists, b, 1.0, reduction="sum",
                                          chunk_size=4, method=method), argnums=(0, 1))(h, w)
      assert float(value) == 0 and all(float(jnp.abs(g).max()) == 0 for g in grads)


def test_infinite_class_weight_without_active_terms_gives_zero_as_torch():
  h = jnp.zeros((2, 1))
  w = jnp.zeros((1, 3))
  b = jnp.array([5.0, 0.0, 0.0])       # row target 0 beats every class by 5
  weights = jnp.array([jnp.inf, 1.0, 1.0])
  y = jnp.array([0, 1])
  got = linear.multi_margin_loss(h, w, y, bias=b, class_weights=weights)
  want = jaxmargin.multi_margin_loss(h @ w + b, y, weight=weights, reduction="none")
  np.testing.assert_array_equal(got, want)
  assert float(got[0]) == 0


def test_float32_matches_the_unfused_loss():
  h, w, b, lists, y = (a.astype(jnp.float32) if a.dtype == jnp.float64 else a
                       for a in problem(8, num_rows=16, num_classes=100))
  for name in ("mlm-compare", "mlm-search", "mm-p2-weighted", "soft-weighted"):
    hyper = tuple(a.astype(jnp.float32) for a in LOSSES[name][2]())
    hyper = hyper[:1] + (_weights(100).astype(jnp.float32),) if len(hyper) == 2 else hyper
    if name == "soft-weighted":
      hyper = (_weights(100).astype(jnp.float32),)
    assert_value_and_grads_equal(name, "mean", 32, (h, w, b, hyper, y, lists), rtol=1e-5,
                                 jit_reference=True)


def test_half_precision_inputs_are_computed_in_float32():
  h, w, b, lists, y = problem(10)
  x16 = [a.astype(jnp.bfloat16) for a in (h, w, b)]
  out = linear.multilabel_margin_loss(*x16[:2], lists, bias=x16[2])
  assert out.dtype == jnp.bfloat16
  want = linear.multilabel_margin_loss(*(a.astype(jnp.float32) for a in x16[:2]), lists,
                                       bias=x16[2].astype(jnp.float32))
  np.testing.assert_array_equal(out, want.astype(jnp.bfloat16))
  grads = jax.grad(linear.multi_margin_loss, argnums=(0, 1))(*x16[:2], y, reduction="mean")
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]


def test_vmap_over_batches_of_examples():
  h, w, b, lists, y = problem(11)
  batched = jnp.stack([h, -h, 2 * h])
  got = jax.vmap(lambda h: linear.multilabel_margin_loss(h, w, lists, bias=b,
                                                         chunk_size=10))(batched)
  for row, h_i in zip(got, batched):
    assert_close(row, linear.multilabel_margin_loss(h_i, w, lists, bias=b))
  # And the gradients of the reduced loss, computed in its forward pass.
  def loss(h):
    return linear.multilabel_margin_loss(h, w, lists, bias=b, reduction="mean", chunk_size=10)
  grads = jax.vmap(jax.grad(loss))(batched)
  for grad, h_i in zip(grads, batched):
    assert_close(grad, jax.grad(loss)(h_i))


def test_no_bias_is_a_zero_bias():
  h, w, b, lists, y = problem(12)
  assert_close(linear.multi_margin_loss(h, w, y, p=2),
               linear.multi_margin_loss(h, w, y, p=2, bias=jnp.zeros(C)))


# --- out-of-range labels ----------------------------------------------------

BAD = {
    "multilabel_margin_loss": (lambda h, w, y: linear.multilabel_margin_loss(h, w, y),
                               lambda lists, y: lists.at[1, 0].set(C), r"\[-1, 36\]"),
    "multilabel_soft_margin_loss": (lambda h, w, y: linear.multilabel_soft_margin_loss(h, w, y),
                                    lambda lists, y: lists.at[1, 0].set(-2),
                                    r"\[-1, 36\]"),
    "multi_margin_loss": (lambda h, w, y: linear.multi_margin_loss(h, w, y),
                          lambda lists, y: y.at[1].set(-1), r"\[0, 36\]"),
}


@pytest.mark.parametrize("name", BAD)
def test_out_of_range_labels_raise_when_concrete_nan_under_jit_error_under_checkify(name):
  fn, spoil, bounds = BAD[name]
  h, w, b, lists, y = problem(13)
  bad = spoil(lists, y)
  message = rf"{name}: labels values must lie in {bounds}"
  with pytest.raises(ValueError, match=message):
    fn(h, w, bad)
  value = jax.jit(fn)(h, w, bad)
  assert np.isnan(value[1]) and np.isfinite(np.delete(np.asarray(value), 1)).all()
  grads = jax.jit(jax.grad(lambda h, w: jnp.mean(fn(h, w, bad)), argnums=(0, 1)))(h, w)
  assert np.isnan(grads[0][1]).all() and np.isnan(grads[1]).all()
  err, _ = checkify.checkify(jax.jit(fn))(h, w, bad)
  with pytest.raises(checkify.JaxRuntimeError, match=message):
    err.throw()


# --- bad input ---------------------------------------------------------------

H, W, B, LISTS, Y = problem(14)
BAD_INPUT = [
    (lambda: linear.multilabel_margin_loss(H, W[:4], LISTS), ValueError,
     r"kernel shape \(4, 37\) does not fit features shape \(7, 5\); expected \(5, C\)"),
    (lambda: linear.multi_margin_loss(H, W, Y, bias=B[:5]), ValueError,
     r"multi_margin_loss: bias shape \(5,\) does not match the 37 classes"),
    (lambda: linear.multilabel_margin_loss(H, W, LISTS[0]), ValueError,
     r"labels shape \(6,\) is not a label list for the 7 rows of features"),
    (lambda: linear.multilabel_soft_margin_loss(H, W, LISTS.astype(jnp.float32)), TypeError,
     r"multilabel_soft_margin_loss: labels dtype float32 is not an integer dtype"),
    (lambda: linear.multi_margin_loss(H, W, LISTS), ValueError,
     r"labels shape \(7, 6\) does not match the 7 rows of features; expected \(7,\)"),
    (lambda: linear.top_k(H, W, 38), ValueError, r"top_k: k is 38; expected 1 <= k <= C = 37"),
    (lambda: linear.top_k(H, W, 0), ValueError, r"top_k: k is 0"),
    (lambda: linear.multilabel_margin_loss(H, W, LISTS, chunk_size=0), ValueError,
     r"chunk_size is 0; expected a positive int or None"),
    (lambda: linear.top_k(H, W, 2, chunk_size=-3), ValueError, r"top_k: chunk_size is -3"),
    (lambda: linear.multi_margin_loss(H, W, Y, chunk_size=2.0), TypeError,
     r"chunk_size is 2.0; expected a positive int"),
    (lambda: linear.multi_margin_loss(H, W, Y, p=3), ValueError, r"p is 3; expected 1 or 2"),
    (lambda: linear.multi_margin_loss(H, W, Y, margin=jnp.ones(2)), ValueError,
     r"margin shape \(2,\) is not a scalar"),
    (lambda: linear.multi_margin_loss(H, W, Y, class_weights=jnp.ones(3)), ValueError,
     r"class_weights shape \(3,\) does not match the 37 classes of kernel"),
    (lambda: linear.multilabel_margin_loss(H, W, LISTS, reduction="avg"), ValueError,
     r"multilabel_margin_loss: reduction is 'avg'; expected one of 'none', 'mean', 'sum'"),
    (lambda: linear.multilabel_margin_loss(H[0], W, LISTS), ValueError,
     r"features shape \(5,\) is not 2-D; expected \(N, D\)"),
    (lambda: linear.multilabel_margin_loss(H.astype(jnp.int32), W, LISTS), TypeError,
     r"features dtype int32 is not a floating dtype"),
    (lambda: linear.top_k(H, W[:, :0], 1), ValueError, r"kernel shape \(5, 0\) has no class"),
    (lambda: linear.multi_margin_loss(H, W, Y, num_classes=38), ValueError,
     r"multi_margin_loss: num_classes is 38; expected 1 <= num_classes <= 37, the columns"),
    (lambda: linear.multilabel_margin_loss(H, W, LISTS, num_classes=0), ValueError,
     r"num_classes is 0; expected 1 <= num_classes"),
    (lambda: linear.top_k(H, W, 2, num_classes=3.0), TypeError,
     r"top_k: num_classes is 3.0; expected an int or None"),
    (lambda: linear.top_k(H, W, 5, num_classes=4), ValueError,
     r"top_k: k is 5; expected 1 <= k <= C = 4"),
]


@pytest.mark.parametrize("call, error, message", BAD_INPUT)
def test_bad_input_names_the_argument(call, error, message):
  with pytest.raises(error, match=message):
    call()


# --- num_classes: padding columns after the real classes ---------------------

PAD = 11


def with_padding(seed, w, b, hyper):
  """The kernel, bias and class weights with ``PAD`` columns of large values after ``C``."""
  rng = np.random.default_rng(seed)
  w = jnp.concatenate([w, jnp.asarray(10 * rng.normal(size=(w.shape[0], PAD)))], axis=1)
  b = jnp.concatenate([b, jnp.asarray(10 * rng.normal(size=PAD))])
  hyper = tuple(a if a.ndim == 0 else jnp.concatenate([a, jnp.asarray(rng.uniform(1, 3, PAD))])
                for a in hyper)
  return w, b, hyper


# Each rule per row (both sweeps), and the scalar mode (its divisor) once.
@pytest.mark.parametrize("name, reduction", [
    ("mlm-compare", "none"), ("mlm-search", "none"), ("mm-p2-weighted", "none"),
    ("soft-weighted", "none"), ("mlm-search", "mean")])
def test_padding_columns_are_left_out_of_value_and_gradients(name, reduction):
  fused = LOSSES[name][0]
  h, w, b, lists, y = problem(17)
  hyper = LOSSES[name][2]()
  w_pad, b_pad, hyper_pad = with_padding(18, w, b, hyper)

  def objective(h, w, b, hyper, **kw):
    return jnp.sum(jnp.sin(fused(h, w, b, hyper, y, lists, reduction=reduction, chunk_size=7,
                                 **kw)))

  grad = jax.jit(jax.value_and_grad(objective, argnums=(0, 1, 2, 3)), static_argnames="num_classes")
  value, (gh, gw, gb, ghyper) = grad(h, w_pad, b_pad, hyper_pad, num_classes=C)
  want_value, (wh, ww, wb, whyper) = grad(h, w, b, hyper)
  assert_close(value, want_value)
  assert_close(gh, wh)
  assert_close(gw[:, :C], ww)
  assert_close(gb[:C], wb)
  for got, want in zip(ghyper, whyper):
    assert_close(got if got.ndim == 0 else got[:C], want)
  # The padding gets exact zeros: it is not in the loss at all.
  for padding in [gw[:, C:], gb[C:]] + [g[C:] for g in ghyper if g.ndim]:
    np.testing.assert_array_equal(padding, 0)


def test_top_k_never_returns_padding_even_below_real_minus_inf_scores():
  h, w, b, _, _ = problem(19)
  b = b.at[3:].set(-jnp.inf)                    # only classes 0..2 score finite
  w_pad, b_pad, _ = with_padding(20, w, b, ())
  values, index = linear.top_k(h, w_pad, 6, bias=b_pad, num_classes=C, chunk_size=4)
  want_values, want_index = jax.lax.top_k(h @ w + b, 6)
  np.testing.assert_array_equal(index, want_index)
  # A chunk's matmul may round differently from the whole one.
  np.testing.assert_allclose(values, want_values, rtol=1e-12)


def test_labels_of_padding_columns_are_out_of_range():
  h, w, b, lists, y = problem(21)
  w_pad, b_pad, _ = with_padding(22, w, b, ())
  with pytest.raises(ValueError,
                     match=r"labels values must lie in \[0, 36\]; got values in \[\d+, 40\]"):
    linear.multi_margin_loss(h, w_pad, y.at[1].set(40), bias=b_pad, num_classes=C)
  out = linear.multi_margin_loss(h, w_pad, y, bias=b_pad, num_classes=C)
  assert np.isfinite(out).all()


# --- top_k -------------------------------------------------------------------


@pytest.mark.parametrize("k, chunk_size", [(1, None), (5, 3), (5, 7), (37, 4), (12, 37)])
def test_top_k_equals_lax_top_k_ties_included(k, chunk_size):
  h, w, b, _, _ = problem(15, ties=True)
  values, index = linear.top_k(h, w, k, bias=b, chunk_size=chunk_size)
  want_values, want_index = jax.lax.top_k(h @ w + b, k)
  np.testing.assert_array_equal(index, want_index)
  np.testing.assert_array_equal(values, want_values)
  assert index.dtype == jnp.int32


def test_top_k_under_jit_and_vmap():
  h, w, b, _, _ = problem(16)
  got = jax.jit(jax.vmap(lambda h: linear.top_k(h, w, 3, bias=b, chunk_size=5)[1]))(
      jnp.stack([h, -h]))
  np.testing.assert_array_equal(got[1], jax.lax.top_k(-h @ w + b, 3)[1])
