"""``class_weights`` and ``hard_negatives`` of the fused ``linear.multilabel_margin_loss``.

The fused loss must equal the unfused ``losses.multilabel_margin_loss`` on the
materialised scores, in value and in the gradients with respect to features,
kernel, bias, margin and class weights (float64, 1e-9 relative), for both
methods of the chunk rule, every reduction, chunks that do and do not divide C,
padding columns (``num_classes``), exact ties at the k-th negative, and label
lists with a duplicate (against the pair loops of
``tests/test_label_weights_hard_negatives.py``). Weights of 1 and ``k >= C``
give the plain fused loss bit for bit. The 8-device checks are in
``tests/multidevice/test_sharded_options.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from jaxmargin import linear, losses
from jaxmargin._linear_multilabel_margin import _multilabel_margin
from tests.test_label_weights_hard_negatives import _float_scatter_adds, assert_close, pair_loops

N, D, C, K = 7, 5, 37, 6


def problem(seed, num_classes=C, ties=False, duplicate=False):
  """Features, kernel, bias, (N, K) label lists and class weights."""
  rng = np.random.default_rng(seed)
  if ties:
    # Small integers and repeated columns: exact ties, at the k-th negative too.
    h = rng.integers(-2, 3, size=(N, D)).astype(np.float64)
    w = 0.5 * rng.integers(-2, 3, size=(D, num_classes))
    w[:, 10:20] = w[:, :10]
    b = np.zeros(num_classes)
  else:
    h, w = rng.normal(size=(N, D)), rng.normal(size=(D, num_classes))
    b = rng.normal(size=num_classes)
  lists = np.full((N, K), -1)
  for row in lists:
    count = rng.integers(0, K + 1)
    row[:count] = rng.choice(num_classes, count, replace=False)
  lists[0] = rng.choice(num_classes, K, replace=False)     # a full list
  lists[1] = -1                                            # an empty one
  if duplicate:
    lists[0, 1] = lists[0, 0]
  weights = rng.uniform(0.3, 2.0, num_classes)
  return (*(jnp.asarray(a) for a in (h, w, b)), jnp.asarray(lists, jnp.int32),
          jnp.asarray(weights))


def fused(h, w, b, m, cw, lists, method, reduction, chunk, k, **kw):
  return _multilabel_margin(h, w, lists, b, m, cw, method=method, reduction=reduction,
                            chunk_size=chunk, hard_negatives=k, **kw)


def unfused(h, w, b, m, cw, lists, reduction, k):
  hot = losses.label_list_to_multi_hot(lists, num_classes=w.shape[1])
  per_row = losses.multilabel_margin_loss(h @ w + b, hot, margin=m, class_weights=cw,
                                          hard_negatives=k)
  return {"none": per_row, "mean": jnp.mean(per_row), "sum": jnp.sum(per_row)}[reduction]


def value_and_grads(fn, args, weighted):
  """Value and VJP in (features, kernel, bias, margin[, class weights])."""
  differentiable = args[:4] + (args[4:5] if weighted else ())

  def loss(*d):
    return fn(*d[:4], d[4] if weighted else None)

  value, vjp = jax.vjp(loss, *differentiable)
  cotangent = (1.0 + jnp.arange(value.size) % 3).reshape(value.shape)
  return (value, *vjp(cotangent))


# Every option with reduction="none", whose per-row values and non-uniform
# cotangent check each row (and both sweeps: values, then gradients); the
# scalar reductions once each per method, with class weights (whose rule keeps
# extra sums when a sweep computes gradients, as the scalar ones' forward
# sweep does), with and without hard negatives. The unweighted rule under
# "mean" and "sum" is in tests/test_linear.py. k=1 and k=3 take k + K < C
# classes from a chunked top-k (an unweighted k=4 took k=1's path again);
# k=31 is k + K = C.
OPTIONS = [(True, None), (False, 1), (True, 3), (True, 31)]
CASES = [(method, weighted, k, "none") for method in ("compare", "search")
         for weighted, k in OPTIONS]
CASES += [(method, True, k, reduction) for method in ("compare", "search")
          for k, reduction in ((3, "mean"), (None, "sum"))]


@pytest.mark.parametrize("method, weighted, k, reduction", CASES,
                         ids=[f"{m}-weighted={w}-k={k}-{r}" for m, w, k, r in CASES])
def test_fused_options_equal_the_unfused_loss(method, weighted, k, reduction):
  h, w, b, lists, cw = problem(sum(map(ord, method)) + (k or 0))
  margin = jnp.float64(0.8)
  args = (h, w, b, margin, cw)
  got = value_and_grads(lambda *a: fused(*a, lists, method, reduction, 5, k), args, weighted)
  want = value_and_grads(lambda *a: unfused(*a, lists, reduction, k), args, weighted)
  for name, a, e in zip(("value", "features", "kernel", "bias", "margin", "weights"), got, want,
                        strict=False):
    assert a.dtype == e.dtype, name
    assert_close(a, e, 1e-9)


# Each chunk size and each k once, each method at least once (every pairing
# would compile 9 programs a method for no more coverage: the top-k that picks
# the negatives, and splits the tied runs in chunks of 3, is the same for both
# methods; each method's ties at the kink in chunks of one class are in
# tests/test_linear.py).
@pytest.mark.parametrize("method, chunk, k", [("compare", 3, 7), ("search", 16, 2),
                                              ("compare", None, 1)])
def test_ties_at_the_kth_negative_and_chunks_that_split_them(method, chunk, k):
  # Columns 10-19 repeat 0-9: each tie goes to the lower class, as lax.top_k's.
  h, w, b, lists, cw = problem(4, ties=True)
  args = (h, w, b, jnp.float64(1.0), cw)
  got = value_and_grads(lambda *a: fused(*a, lists, method, "none", chunk, k), args, True)
  want = value_and_grads(lambda *a: unfused(*a, lists, "none", k), args, True)
  for a, e in zip(got, want, strict=True):
    assert_close(a, e, 1e-9)


@pytest.mark.parametrize("method", ["compare", "search"])
def test_duplicate_labels_and_padding_columns_match_the_pair_loops(method):
  # A label listed twice counts twice (with its weight); columns past
  # num_classes are no class, and never a hard negative.
  real = 29
  h, w, b, lists, cw = problem(6, duplicate=True)
  lists = jnp.where(lists >= real, lists % real, lists)
  margin, k = 1.2, 4
  x = np.asarray(h @ w + b)[:, :real]
  rows = [[int(c) for c in row if c >= 0] for row in np.asarray(lists)]
  # Each row's label list ends at the first -1.
  rows = [row[: list(np.asarray(lists)[n]).index(-1)] if -1 in np.asarray(lists)[n] else row
          for n, row in enumerate(rows)]
  per_class = np.broadcast_to(np.asarray(cw)[:real], x.shape)
  cotangent = 1.0 + np.arange(N) % 3
  value, grad_x, grad_w, grad_m = pair_loops(x, rows, margin, per_class, k, cotangent=cotangent)

  def loss(h, w, b, m, cw):
    return fused(h, w, b, m, cw, lists, method, "none", 4, k, num_classes=real)

  got, vjp = jax.vjp(loss, h, w, b, jnp.float64(margin), cw)
  g_h, g_w, g_b, g_m, g_cw = vjp(jnp.asarray(cotangent))
  assert_close(got, value, 1e-9)
  padded_x = np.pad(grad_x, ((0, 0), (0, C - real)))
  assert_close(g_h, padded_x @ np.asarray(w).T, 1e-9)
  assert_close(g_w, np.asarray(h).T @ padded_x, 1e-9)
  assert_close(g_b, padded_x.sum(axis=0), 1e-9)
  assert_close(g_m, grad_m, 1e-9)
  assert_close(g_cw, np.pad(grad_w.sum(axis=0), (0, C - real)), 1e-9)


# Weights of 1: "none" runs each method's rule in both sweeps (values, then
# gradients); "mean" adds the scalar mode, whose custom rule is the same for
# both methods. k >= C is dropped before the rule and the mode are chosen:
# checked in one of them.
@pytest.mark.parametrize("method, reduction, with_k", [("compare", "none", True),
                                                       ("search", "none", False),
                                                       ("search", "mean", False)])
def test_degenerate_options_give_the_plain_fused_loss(method, reduction, with_k):
  # k >= C skips the selection: the same program, bit for bit. Weights of 1
  # give the same numbers to the rounding of the sums, which XLA may fuse
  # (and order) differently in the weighted program.
  h, w, b, lists, _ = problem(7)
  args = (h, w, b, jnp.float64(0.9))

  def run(cw=None, k=None):
    def loss(h, w, b, m):
      return fused(h, w, b, m, cw, lists, method, reduction, 8, k)
    value, vjp = jax.vjp(jax.jit(loss), *args)
    return (value, *vjp(jnp.ones_like(value)))

  plain, weighted = run(), run(cw=jnp.ones(C))
  for got, expected in zip(weighted, plain, strict=True):
    assert_close(got, expected, 1e-15)
  # k = C and k > C take the same branch: k > C without weights and k = C
  # with them, each against the run without k, bit for bit.
  k_runs = (({"k": C + 9}, plain), ({"cw": jnp.ones(C), "k": C}, weighted)) if with_k else ()
  for options, want in k_runs:
    for got, expected in zip(run(**options), want, strict=True):
      np.testing.assert_array_equal(got, expected, err_msg=str(options))


def test_public_function_jit_vmap_and_float32():
  h, w, b, lists, cw = problem(8)

  def loss(h, w, b, cw):
    return linear.multilabel_margin_loss(h, w, lists, bias=b, class_weights=cw,
                                         hard_negatives=3, reduction="mean")

  want = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))(h, w, b, cw)
  got = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3)))(h, w, b, cw)
  for a, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    assert_close(a, e, 1e-12)
  # A batch of feature sets under vmap, each its own call.
  stack = jnp.stack([h, -h, 2 * h])
  mapped = jax.vmap(loss, in_axes=(0, None, None, None))(stack, w, b, cw)
  np.testing.assert_allclose(mapped, [loss(x, w, b, cw) for x in stack], rtol=1e-12)
  # float32 against the float64 result.
  got32 = loss(*(a.astype(jnp.float32) for a in (h, w, b, cw)))
  assert got32.dtype == jnp.float32
  np.testing.assert_allclose(got32, want[0], rtol=2e-5)


def test_errors_name_the_argument():
  h, w, _, lists, cw = problem(9)
  fn = "multilabel_margin_loss"
  with pytest.raises(ValueError, match=f"^{fn}: hard_negatives is 0; expected a positive int"):
    linear.multilabel_margin_loss(h, w, lists, hard_negatives=0)
  with pytest.raises(TypeError, match=f"^{fn}: hard_negatives is 'all'"):
    linear.multilabel_margin_loss(h, w, lists, hard_negatives="all")
  with pytest.raises(ValueError, match=rf"^{fn}: class_weights shape \(36,\) does not match "
                                       rf"the 37 classes of kernel; expected \(37,\)"):
    linear.multilabel_margin_loss(h, w, lists, class_weights=cw[:36])


def test_checkify_reports_bad_labels():
  # The public function (method "auto", so "compare" for these K = 6 slots).
  h, w, b, lists, cw = problem(10)
  bad = lists.at[3, 0].set(C)

  def step(h, w, labels):
    return linear.multilabel_margin_loss(h, w, labels, bias=b, class_weights=cw,
                                         hard_negatives=2, reduction="mean")

  err, _ = checkify.checkify(jax.jit(jax.value_and_grad(step, argnums=(0, 1))))(h, w, bad)
  with pytest.raises(checkify.JaxRuntimeError, match=r"labels values must lie in \[-1, 36\]"):
    err.throw()


@pytest.mark.parametrize("method", ["compare", "search"])
def test_good_labels_pass_every_check_with_each_option(method):
  # No NaN made on the way (0 * inf at a slot without terms), no bad index:
  # a training step can run under checkify's every check, with each option.
  # One program a method holds the plain loss, the weighted one and the one
  # with hard negatives (their code is disjoint: one factor at a time covers
  # it); checkify checks each operation, so any of them would fail it.
  h, w, b, lists, cw = problem(10)

  def loss(h, w, b):
    return sum(fused(h, w, b, jnp.float64(1), weights, lists, method, "mean", 5, k)
               for weights, k in ((None, None), (cw, None), (None, 2)))

  err, _ = checkify.checkify(jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))),
                             errors=checkify.all_checks)(h, w, b)
  assert err.get() is None, err.get()


@pytest.mark.parametrize("method", ["compare", "search"])
def test_no_float_scatter_add_on_a_gpu_and_no_array_of_order_n_times_c(method):
  rows, features, classes = 64, 4, 8192
  rng = np.random.default_rng(11)
  h = jnp.asarray(rng.normal(size=(rows, features)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(features, classes)), jnp.float32)
  b = jnp.zeros(classes, jnp.float32)
  lists = jnp.asarray(rng.integers(0, classes, (rows, 5)), jnp.int32)
  cw = jnp.ones(classes, jnp.float32)

  def step(h, w, b, cw):
    return jnp.sum(fused(h, w, b, jnp.float32(1), cw, lists, method, "none", 256, 16))

  grad = jax.value_and_grad(step, argnums=(0, 1, 2, 3))
  # The class-weight gradient sums in a fixed order: reproducible on a GPU.
  assert not _float_scatter_adds(grad, h, w, b, cw)
  sizes = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      sizes.extend(v.aval.size for v in eqn.outvars if hasattr(v.aval, "size"))
      for param in eqn.params.values():
        for sub in param if isinstance(param, (tuple, list)) else (param,):
          inner = getattr(sub, "jaxpr", sub)
          if hasattr(inner, "eqns"):
            walk(inner)

  walk(jax.make_jaxpr(grad)(h, w, b, cw).jaxpr)
  # The largest legitimate arrays: the kernel and its gradient (D*C), a chunk
  # (N*256); nothing near N*C.
  assert max(sizes) < rows * classes / 8, max(sizes)
