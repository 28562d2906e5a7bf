"""What the losses compile to, for accelerators: vmap, platform constants, determinism, int32.

* ``jax.vmap`` over examples keeps ``multilabel_margin_loss``'s method choice
  a ``cond`` (the batch's longest list decides), so it runs one method, and
  gives the batched call's values and gradients.
* The method switches are per platform, chosen for the platform a program is
  lowered for.
* Gradients that sum over repeated labels (class weights; the kernel and bias
  of ``jaxmargin.linear``'s margin losses) hold no float scatter-add where one
  is not reproducible (GPUs), and equal the scatter-add's sums.
* Under ``jax_enable_x64`` (on in this suite) no index array as large as the
  scores is 64-bit.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmargin
from jaxmargin import _fused, functional, linear, losses
from jaxmargin._deterministic import add_at, sorted_add_at, take
from jaxmargin._multilabel_margin import (
  SORT_PASSES_PER_LOG2,
  LabelLists,
  _sort_is_cheaper_here,
  sort_is_cheaper,
)
from jaxmargin._multilabel_margin_fused import FUSED_COMPARE_MAX_SLOTS, fused_method
from jaxmargin._settings import trace_platform
from tests import programs


def _multi_hot(rng, num_rows, num_classes, most):
  labels = np.zeros((num_rows, num_classes), np.int32)
  for row in labels:
    row[rng.choice(num_classes, rng.integers(1, most + 1), replace=False)] = 1
  return jnp.asarray(labels)


def _sorts_outside_a_cond(jaxpr):
  return [within for eqn, within in programs.equations(jaxpr)
          if eqn.primitive.name == "sort" and "cond" not in within]


def _conds_that_sort(jaxpr):
  return [eqn for eqn, _ in programs.equations(jaxpr) if eqn.primitive.name == "cond"
          and any(e.primitive.name == "sort"
                  for branch in eqn.params["branches"] for e, _ in programs.equations(branch))]


# --- vmap over examples -----------------------------------------------------

@pytest.mark.parametrize("api", ["losses", "functional"])
def test_vmap_over_examples_runs_one_method_and_equals_the_batched_call(api):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(16, 50)))
  hot = _multi_hot(rng, 16, 50, 5)
  if api == "losses":
    loss, target, examples = losses.multilabel_margin_loss, hot, x
  else:
    # torch's API: each example a batch of one row, (1, C) scores and target.
    loss, target = jaxmargin.multilabel_margin_loss, losses.multi_hot_to_padded(hot)
    examples = x[:, None, :]
  step = jax.jit(jax.value_and_grad(lambda e: jnp.mean(jax.vmap(loss)(e, target.reshape(e.shape)))))
  jaxpr = jax.make_jaxpr(step)(examples)
  # Under vmap a cond with a batched predicate becomes a select of both
  # branches, each then run at top level: the sort would leave the cond.
  assert _conds_that_sort(jaxpr)
  assert not _sorts_outside_a_cond(jaxpr)
  value, grad = step(examples)
  want_value, want_grad = jax.value_and_grad(lambda x: jnp.mean(loss(x, target)))(x)
  np.testing.assert_allclose(value, want_value, rtol=1e-12)
  np.testing.assert_allclose(grad.reshape(x.shape), want_grad, rtol=1e-12, atol=1e-15)


def test_vmap_sees_the_longest_list_of_the_whole_batch():
  # Example 2 is dense enough to sort, the others would loop: every example
  # takes the batch's choice (the sort), as the batched call does.
  rng = np.random.default_rng(1)
  num_classes = 300
  hot = np.array(_multi_hot(rng, 4, num_classes, 2))
  hot[2] = 0
  hot[2, :250] = 1
  padded = losses.multi_hot_to_padded(jnp.asarray(hot))
  longest = jax.vmap(lambda t: LabelLists(t[None], num_classes).longest)(padded)
  np.testing.assert_array_equal(longest, [250] * 4)
  assert sort_is_cheaper(250, num_classes) and not sort_is_cheaper(2, num_classes)
  x = jnp.asarray(rng.normal(size=(4, num_classes)))
  values = jax.jit(jax.vmap(losses.multilabel_margin_loss))(x, jnp.asarray(hot))
  np.testing.assert_allclose(values, losses.multilabel_margin_loss(x, jnp.asarray(hot)),
                             rtol=1e-12)


def test_nested_vmap_reduces_the_choice_over_every_axis():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(3, 4, 30)))
  hot = _multi_hot(rng, 12, 30, 4).reshape(3, 4, 30)
  loss = jax.vmap(jax.vmap(losses.multilabel_margin_loss))
  jaxpr = jax.make_jaxpr(jax.grad(lambda x: jnp.sum(loss(x, hot))))(x)
  assert _conds_that_sort(jaxpr) and not _sorts_outside_a_cond(jaxpr)
  grad = jax.grad(lambda x: jnp.sum(loss(x, hot)))(x)
  want = jax.grad(lambda x: jnp.sum(losses.multilabel_margin_loss(x, hot)))(x)
  np.testing.assert_allclose(grad, want, rtol=1e-12, atol=1e-15)


def test_vmap_over_margins_keeps_the_cond_and_each_margin():
  # A margin per example: JAX's own batching of the rows, with the batch-wide
  # method choice.
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.normal(size=(4, 30)))
  hot = _multi_hot(rng, 4, 30, 3)
  margins = jnp.asarray([0.5, 1.0, 1.5])
  loss = jax.vmap(lambda m: jnp.sum(losses.multilabel_margin_loss(x, hot, margin=m)))
  jaxpr = jax.make_jaxpr(jax.vmap(jax.grad(
      lambda m: jnp.sum(losses.multilabel_margin_loss(x, hot, margin=m)))))(margins)
  assert _conds_that_sort(jaxpr) and not _sorts_outside_a_cond(jaxpr)
  want = [jnp.sum(losses.multilabel_margin_loss(x, hot, margin=m)) for m in margins]
  np.testing.assert_allclose(loss(margins), want, rtol=1e-12)


def test_vmap_over_models_with_shared_targets_keeps_the_cond():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(5, 6, 30)))
  target = losses.multi_hot_to_padded(_multi_hot(rng, 6, 30, 3))
  step = jax.vmap(jax.value_and_grad(jaxmargin.multilabel_margin_loss), in_axes=(0, None))
  jaxpr = jax.make_jaxpr(step)(x, target)
  assert _conds_that_sort(jaxpr) and not _sorts_outside_a_cond(jaxpr)


# --- per-platform constants ----------------------------------------------------

def test_every_platform_has_its_constants():
  for table in (SORT_PASSES_PER_LOG2, FUSED_COMPARE_MAX_SLOTS):
    assert set(table) == {"cpu", "gpu", "tpu"}
  assert trace_platform() in ("cpu", "gpu", "tpu")
  for platform in ("cpu", "gpu", "tpu"):
    limit = FUSED_COMPARE_MAX_SLOTS[platform]
    assert fused_method(limit, platform) == "compare"
    assert fused_method(limit + 1, platform) == "search"


@pytest.mark.parametrize("platform,table", [("cpu", "cpu"), ("cuda", "gpu"), ("rocm", "gpu"),
                                            ("tpu", "tpu")])
def test_the_sort_switch_takes_the_constant_of_the_lowering_platform(platform, table):
  num_classes = 1000
  thresholds = {p: math.floor(SORT_PASSES_PER_LOG2[p] * math.log2(num_classes))
                for p in ("cpu", "gpu", "tpu")}
  want = thresholds[table]
  exported = jax.export.export(jax.jit(lambda n: _sort_is_cheaper_here(n, num_classes)),
                               platforms=(platform,))(jnp.int32(1))
  constants = {int(c) for c in re.findall(r"dense<(\d+)> : tensor<i32>", exported.mlir_module())}
  # Lowered for one platform, the program holds that platform's threshold only.
  assert want in constants
  assert not constants & (set(thresholds.values()) - {want})


def test_the_sort_switch_is_per_platform_in_a_program_exported_for_several():
  exported = jax.export.export(jax.jit(lambda n: _sort_is_cheaper_here(n, 1000)),
                               platforms=("cpu", "cuda"))(jnp.int32(1))
  text = exported.mlir_module()
  for platform in ("cpu", "gpu"):
    assert f"dense<{math.floor(SORT_PASSES_PER_LOG2[platform] * math.log2(1000))}>" in text


# --- reproducible sums over repeated labels -------------------------------------

def _float_scatter_adds(jaxpr, platform):
  return [eqn for eqn, _ in programs.equations(jaxpr, platform=platform)
          if eqn.primitive.name == "scatter-add"
          and jnp.issubdtype(eqn.invars[0].aval.dtype, jnp.floating)]


@pytest.mark.parametrize("shape,num_slots", [((7,), 5), ((3, 40), 6), ((2, 64), 3),
                                             ((4, 1), 9), ((5, 0), 4), ((2, 33), 100)])
def test_sorted_add_at_equals_the_scatter_add(shape, num_slots):
  rng = np.random.default_rng(sum(shape) + num_slots)
  index = jnp.asarray(rng.integers(0, num_slots, shape[-1]), jnp.int32)
  updates = jnp.asarray(rng.normal(size=shape))
  base = jnp.asarray(rng.normal(size=shape[:-1] + (num_slots,)))
  want = base.at[..., index].add(updates)
  for fn in (sorted_add_at, add_at):
    np.testing.assert_allclose(jax.jit(fn)(base, index, updates), want, rtol=1e-13, atol=1e-14)


def test_sorted_add_at_sums_a_long_run_in_input_order_and_differentiates():
  # 100 equal indices: 7 doubling steps; the sum has the scatter-add's value.
  updates = jnp.asarray(np.random.default_rng(4).normal(size=100))
  index = jnp.zeros(100, jnp.int32).at[::7].set(2)
  base = jnp.zeros(3)
  np.testing.assert_allclose(sorted_add_at(base, index, updates),
                             base.at[index].add(updates), rtol=1e-13)
  # Linear in the updates, in reverse and forward mode and under vmap.
  probe = jnp.asarray([1.0, -2.0, 0.5])
  grad = jax.grad(lambda u: jnp.sum(sorted_add_at(base, index, u) * probe))(updates)
  np.testing.assert_array_equal(grad, probe[index])
  _, tangent = jax.jvp(lambda u: sorted_add_at(base, index, u), (updates,), (updates,))
  np.testing.assert_allclose(tangent, base.at[index].add(updates), rtol=1e-13)
  batched = jax.vmap(sorted_add_at, in_axes=(None, 0, 0))(base, jnp.stack([index, index[::-1]]),
                                                         jnp.stack([updates, updates]))
  np.testing.assert_allclose(batched[1], base.at[index[::-1]].add(updates), rtol=1e-13)


def test_take_gradient_is_the_scatter_add_and_second_order_works():
  rng = np.random.default_rng(5)
  table = jnp.asarray(rng.normal(size=9))
  index = jnp.asarray(rng.integers(0, 9, 40), jnp.int32)

  def loss(gather, table):
    return jnp.sum(jnp.sin(gather(table, index)) * jnp.arange(40))
  plain = lambda t, i: t[i]  # noqa: E731
  np.testing.assert_allclose(jax.grad(loss, 1)(take, table), jax.grad(loss, 1)(plain, table),
                             rtol=1e-13)
  np.testing.assert_allclose(jax.hessian(loss, 1)(take, table),
                             jax.hessian(loss, 1)(plain, table), rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(jax.jacrev(jax.grad(loss, 1), 1)(take, table),
                             jax.hessian(loss, 1)(plain, table), rtol=1e-12, atol=1e-14)


def _weighted_cases(d):
  x, y = d["scores"], d["classes"]
  h, k, b = d["features"], d["kernel"], d["bias"]
  return {
      "functional.multi_margin_loss": (
          lambda w: functional.multi_margin_loss(x, y, weight=w, reduction="sum"),
          lambda: functional.multi_margin_loss(x, y, reduction="none")),
      "losses.multiclass_margin_loss": (
          lambda w: jnp.sum(losses.multiclass_margin_loss(x, y, class_weights=w)),
          lambda: losses.multiclass_margin_loss(x, y)),
      "linear.multi_margin_loss": (
          lambda w: linear.multi_margin_loss(h, k, y, bias=b, class_weights=w, reduction="sum"),
          lambda: linear.multi_margin_loss(h, k, y, bias=b)),
  }


@pytest.mark.parametrize("name", ["functional.multi_margin_loss", "losses.multiclass_margin_loss",
                                  "linear.multi_margin_loss"])
def test_class_weight_gradient_is_the_scatter_add_without_one(name):
  d = programs.data(jnp.float64)
  d["classes"] = d["classes"].at[::2].set(3)       # a class that many rows share
  weighted, unweighted = _weighted_cases(d)[name]
  grad_fn = jax.grad(weighted)
  # The loss is linear in each row's weight: its gradient sums the rows'
  # unweighted losses per class, which JAX's gather rule scatter-adds.
  want = jnp.zeros(programs.C).at[d["classes"]].add(unweighted())
  np.testing.assert_allclose(grad_fn(d["weights"]), want, rtol=1e-12, atol=1e-15)
  jaxpr = jax.make_jaxpr(grad_fn)(d["weights"])
  # On every platform for the weights' own sum; linear's kernel and bias
  # gradients, in the same program, keep a scatter-add on the CPU only.
  platforms = ("cuda", "rocm", "tpu") + (() if name.startswith("linear") else ("cpu",))
  for platform in platforms:
    assert not _float_scatter_adds(jaxpr, platform), platform


@pytest.mark.parametrize("name", programs.DIFFERENTIABLE)
def test_no_gradient_holds_a_float_scatter_add_on_a_gpu(name):
  program = programs.programs(programs.data(jnp.float32))[name]
  jaxpr = jax.make_jaxpr(programs.value_and_grad(program))(*program.args)
  for platform in ("cuda", "rocm"):
    assert not _float_scatter_adds(jaxpr, platform), platform


@pytest.mark.parametrize("name", ["linear.multilabel_margin_loss", "linear.multi_margin_loss"])
def test_the_sorted_label_gradient_of_linear_equals_the_scatter_add(name, monkeypatch):
  # The CPU runs the scatter-add; here the sweep takes the GPU's sums instead.
  d = programs.data(jnp.float64)
  d["lists"] = d["lists"].at[:, 0].set(7)          # label 7 in every row
  d["classes"] = d["classes"].at[::2].set(7)
  program = programs.programs(d)[name]
  step = jax.value_and_grad(program.fn, argnums=tuple(range(len(program.args))))
  jax.clear_caches()
  want = step(*program.args)
  monkeypatch.setattr(_fused, "add_at", sorted_add_at)
  jax.clear_caches()
  try:
    jaxpr = jax.make_jaxpr(step)(*program.args)
    assert not _float_scatter_adds(jaxpr, "cpu")
    got = step(*program.args)
  finally:
    monkeypatch.undo()
    jax.clear_caches()
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


# --- int32 indices under x64 ------------------------------------------------------

@pytest.mark.parametrize("name", programs.NAMES)
def test_no_index_array_as_large_as_the_scores_is_64_bit_under_x64(name):
  assert jax.config.read("jax_enable_x64")
  program = programs.programs(programs.data(jnp.float64))[name]
  jaxpr = jax.make_jaxpr(programs.value_and_grad(program))(*program.args)
  wide = [eqn for eqn, _ in programs.equations(jaxpr) for v in eqn.outvars
          if jnp.issubdtype(v.aval.dtype, jnp.integer) and v.aval.dtype.itemsize == 8
          and math.prod(v.aval.shape) >= programs.N * programs.C]
  assert not wide, wide[:3]
