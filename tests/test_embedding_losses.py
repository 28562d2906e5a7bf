"""The embedding losses against torch 2.13: pairwise_distance, cosine embedding, triplet losses.

Every option of the torch-compatible functions is held to torch (values,
dtypes, shapes and the gradients of every differentiable input, through
``tests.oracle``), eager and under ``jit``, also at the corners: zero
difference vectors, ties of the infinity norm, ties of the hinge and of the
swap's minimum, NaN and inf. The errors, the other APIs and the
transformations are in ``test_embedding_apis.py`` and
``test_embedding_transformations.py``.
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jaxmargin
from tests.embedding_cases import P_VALUES, SPECIAL_ROWS, normal


from tests.oracle import assert_matches_torch, tolerance

# --- pairwise_distance ------------------------------------------------------


@pytest.mark.parametrize("p", P_VALUES)
def test_pairwise_distance_matches_torch_for_every_order(p):
  # The special rows and random ones in one batch (rows are independent).
  x1 = np.concatenate([SPECIAL_ROWS, normal(4, 3)])
  x2 = np.concatenate([np.zeros_like(SPECIAL_ROWS), normal(4, 3, seed=1)])
  assert_matches_torch("pairwise_distance", x1, x2, p=p)
  if p in (2, math.inf, 0.5):
    assert_matches_torch("pairwise_distance", x1, x2, p=p, jit=True)
    # Broadcasting to (2, 3, 5).
    assert_matches_torch("pairwise_distance", normal(2, 1, 5), normal(3, 1, seed=1), p=p)


@pytest.mark.parametrize("p", [2, 1, math.inf, 0.5])
def test_pairwise_distance_of_0_d_and_float32_inputs_matches_torch(p):
  assert_matches_torch("pairwise_distance", np.float64(1.5), np.float64(-2.0), p=p)
  x32, y32 = normal(4, 5, dtype=np.float32), normal(4, 5, seed=1, dtype=np.float32)
  assert_matches_torch("pairwise_distance", x32, y32, p=p)


@pytest.mark.parametrize("keepdim", [False, True])
def test_pairwise_distance_eps_and_keepdim_match_torch(keepdim):
  x, y = normal(3, 4), normal(3, 4, seed=1)
  for eps in (0.0, 1e-6, 1.0, -0.5):  # eps is traced: one compilation for all
    assert_matches_torch("pairwise_distance", x, y, eps=eps, keepdim=keepdim)
  assert_matches_torch("pairwise_distance", x[0], y[0], keepdim=keepdim)
  assert_matches_torch("pairwise_distance", np.float64(1.0), np.float64(2.0), keepdim=keepdim)


def test_pairwise_distance_of_equal_inputs_is_eps_times_the_root_of_d():
  x = jnp.ones((2, 9))
  np.testing.assert_allclose(jaxmargin.pairwise_distance(x, x), [3e-6, 3e-6], rtol=1e-12)
  np.testing.assert_allclose(jaxmargin.pairwise_distance(x, x, p=1), [9e-6, 9e-6], rtol=1e-12)


def test_pairwise_distance_of_integers_and_mixed_dtypes_is_torchs():
  ints = np.arange(12).reshape(3, 4)
  assert_matches_torch("pairwise_distance", ints, ints[::-1].copy())
  assert jaxmargin.pairwise_distance(ints, ints).dtype == jnp.float32
  assert_matches_torch("pairwise_distance", normal(3, 4, dtype=np.float32), normal(3, 4, seed=1))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_types_give_torchs_values_to_their_precision(dtype):
  torch_dtype = {jnp.float16: torch.float16, jnp.bfloat16: torch.bfloat16}[dtype]
  a, p, n = (normal(6, 8, seed=s) for s in range(3))
  t = np.array([1, -1, 1, -1, 1, -1])
  cases = [
    (jaxmargin.pairwise_distance, F.pairwise_distance, (a, p), {}),
    (jaxmargin.triplet_margin_loss, F.triplet_margin_loss, (a, p, n), {"reduction": "none"}),
    (jaxmargin.cosine_embedding_loss, F.cosine_embedding_loss, (a, p, t), {"reduction": "none"}),
  ]
  for ours_fn, torch_fn, args, kwargs in cases:
    ours = ours_fn(*(jnp.asarray(x, dtype) if x.ndim == 2 else x for x in args), **kwargs)
    tensors = [torch.tensor(x).to(torch_dtype) if x.ndim == 2 else torch.tensor(x) for x in args]
    ref = torch_fn(*tensors, **kwargs)
    assert ours.dtype == dtype
    np.testing.assert_allclose(
      np.asarray(ours, np.float32),
      ref.float().numpy(),
      # torch rounds each step (the distances, then their difference) to the
      # half type; we round once at the end.
      **({"rtol": 2e-2, "atol": 3e-2} if dtype == jnp.bfloat16 else {"rtol": 3e-3, "atol": 4e-3}),
    )


# --- triplet_margin_loss ----------------------------------------------------


# Every order with the swap (whose distances include those without it), and
# two without.
@pytest.mark.parametrize(
  "p, swap", [*((p, True) for p in P_VALUES), (2, False), (0.5, False)], ids=str
)
def test_triplet_margin_loss_matches_torch_for_every_order(p, swap):
  a, pos, n = (normal(6, 3, seed=s) for s in range(3))
  ones, zeros = np.ones_like(SPECIAL_ROWS), np.zeros_like(SPECIAL_ROWS)
  # One batch (rows are independent): random triplets; equal anchor and
  # positive, where the swap's two distances tie (half the gradient each);
  # the special rows as each of the three inputs.
  anchor = np.concatenate([a, a, SPECIAL_ROWS, zeros, ones])
  positive = np.concatenate([pos, a, zeros, SPECIAL_ROWS, zeros])
  negative = np.concatenate([n, n, ones, ones, SPECIAL_ROWS])
  for jit in (False, True) if p in (2, math.inf, -1) else (False,):
    assert_matches_torch(
      "triplet_margin_loss", anchor, positive, negative, p=p, swap=swap, reduction="none", jit=jit
    )


def test_triplet_hinge_at_exactly_zero_passes_the_whole_gradient():
  # margin + d(a, p) - d(a, n) = 5 + 5 - 10 = 0 exactly (eps = 0): torch's
  # clamp_min passes the gradient in full; jnp.maximum would pass half.
  a, pos, n = np.zeros((1, 2)), np.array([[3.0, 4.0]]), np.array([[6.0, 8.0]])
  for jit in (False, True):
    assert_matches_torch("triplet_margin_loss", a, pos, n, margin=5.0, eps=0.0, jit=jit)
  grads = jax.grad(lambda a: jaxmargin.triplet_margin_loss(a, pos, n, margin=5.0, eps=0.0))(a)
  np.testing.assert_allclose(grads, [[0.6 - 0.6, 0.8 - 0.8]], atol=1e-15)
  grad_p = jax.grad(lambda q: jaxmargin.triplet_margin_loss(a, q, n, margin=5.0, eps=0.0))(pos)
  np.testing.assert_allclose(grad_p, [[0.6, 0.8]], rtol=1e-15)


@pytest.mark.parametrize(
  "shapes",
  [
    ((5,), (5,), (5,)),
    ((), (), ()),
    ((2, 3, 4), (2, 3, 4), (2, 3, 4)),
    ((3, 4), (1, 4), (3, 4)),
    ((3, 4), (3, 1), (3, 4)),
    ((3, 1), (3, 4), (3, 5)),
    ((0, 4), (0, 4), (0, 4)),
  ],
)
def test_triplet_shapes_match_torch(shapes):
  args = [normal(*shape, seed=s) for s, shape in enumerate(shapes)]
  assert_matches_torch("triplet_margin_loss", *args, reduction="none")
  assert_matches_torch("triplet_margin_with_distance_loss", *args, reduction="none")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_triplet_reductions_match_torch(reduction):
  for shapes in (((3, 4), (1, 4), (3, 4)), ((0, 4), (0, 4), (0, 4))):
    args = [normal(*shape, seed=s) for s, shape in enumerate(shapes)]
    assert_matches_torch("triplet_margin_loss", *args, reduction=reduction)
    assert_matches_torch("triplet_margin_with_distance_loss", *args, reduction=reduction)


@pytest.mark.parametrize(
  "kwargs",
  [
    {"size_average": False},
    {"reduce": False},
    {"size_average": True, "reduce": True},
    {"reduction": "elementwise_mean"},
    {"margin": 1e-6},
    {"margin": 10.0},
    {"margin": np.nan},
    {"eps": 0.5},
  ],
)
def test_triplet_legacy_arguments_margins_and_eps_match_torch(kwargs):
  args = [normal(5, 4, seed=s) for s in range(3)]
  assert_matches_torch("triplet_margin_loss", *args, **kwargs)


def test_triplet_mixed_and_integer_dtypes_round_as_torch():
  a, pos, n = (normal(5, 4, seed=s) for s in range(3))
  assert_matches_torch("triplet_margin_loss", a.astype(np.float32), pos.astype(np.float32), n)
  assert_matches_torch("triplet_margin_loss", a, pos.astype(np.float32), n.astype(np.float32))
  ints = [np.arange(20).reshape(5, 4) * s % 7 for s in (1, 2, 3)]
  assert_matches_torch("triplet_margin_loss", *ints)
  assert jaxmargin.triplet_margin_loss(*ints).dtype == jnp.float32


# --- triplet_margin_with_distance_loss -----------------------------------------


def _cosine_distances():
  def ours(x, y):
    return 1 - jnp.sum(x * y, -1) / jnp.sqrt(jnp.sum(x * x, -1) * jnp.sum(y * y, -1))

  def theirs(x, y):
    return 1 - (x * y).sum(-1) / ((x * x).sum(-1) * (y * y).sum(-1)).sqrt()

  return ours, theirs


def _torch_and_ours_with_distance(ours_distance, torch_distance, args, **kwargs):
  tensors = [torch.tensor(a, requires_grad=True) for a in args]
  ref = F.triplet_margin_with_distance_loss(*tensors, distance_function=torch_distance, **kwargs)
  ref.sum().backward()

  def loss(*xs):
    out = jaxmargin.triplet_margin_with_distance_loss(
      *xs, distance_function=ours_distance, **kwargs
    )
    return jnp.sum(out), out

  # Under the caller's jit, as a custom distance runs (traced with the loss).
  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
  (_, value), grads = step(*args)
  np.testing.assert_allclose(value, ref.detach().numpy(), rtol=1e-12)
  for grad, tensor in zip(grads, tensors, strict=True):
    np.testing.assert_allclose(grad, tensor.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("swap", [False, True])
def test_triplet_with_a_custom_distance_matches_torch(swap):
  ours, theirs = _cosine_distances()
  args = [normal(6, 4, seed=s) for s in range(3)]
  for reduction in ("none", "mean", "sum"):
    _torch_and_ours_with_distance(ours, theirs, args, swap=swap, reduction=reduction, margin=0.3)
  # A tie of the swap's minimum: half the gradient to each side, as torch.minimum.
  _torch_and_ours_with_distance(ours, theirs, [args[0], args[0], args[2]], swap=swap)


def test_triplet_with_distance_runs_torchs_own_opinfo_samples():
  # torch's OpInfo samples pass torch.nn.PairwiseDistance(); ours is
  # jaxmargin.pairwise_distance with the same settings.
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch.testing._internal.common_methods_invocations import op_db

  (op,) = [o for o in op_db if o.name == "nn.functional.triplet_margin_with_distance_loss"]

  @functools.partial(jax.jit, static_argnames=("settings", "swap", "reduction"))
  def step(a, p, n, margin, *, settings, swap, reduction):
    distance = functools.partial(jaxmargin.pairwise_distance, **dict(settings))

    def loss(*xs):
      return jnp.sum(
        jaxmargin.triplet_margin_with_distance_loss(
          *xs, distance_function=distance, margin=margin, swap=swap, reduction=reduction
        )
      )

    return jax.value_and_grad(loss, argnums=(0, 1, 2))(a, p, n)

  with warnings.catch_warnings():  # torch's samples script a module, which it deprecates
    warnings.simplefilter("ignore")
    samples = list(op.sample_inputs("cpu", torch.float64, requires_grad=True))
  count = 0
  for sample in samples:
    kwargs = dict(sample.kwargs)
    module = kwargs.pop("distance_function")
    settings = (("p", module.norm), ("eps", module.eps), ("keepdim", module.keepdim))
    args = [t.detach().numpy().copy() for t in (sample.input, *sample.args)]
    tensors = [torch.tensor(a, requires_grad=True) for a in args]
    ref = F.triplet_margin_with_distance_loss(*tensors, distance_function=module, **kwargs)
    ref.sum().backward()
    value, grads = step(
      *args,
      kwargs.get("margin", 1.0),
      settings=settings,
      swap=kwargs.get("swap", False),
      reduction=kwargs.get("reduction", "mean"),
    )
    tol = tolerance(args[0].dtype)
    np.testing.assert_allclose(value, ref.detach().sum().numpy(), **tol)
    for grad, tensor in zip(grads, tensors, strict=True):
      np.testing.assert_allclose(grad, tensor.grad.numpy(), **tol)
    count += 1
  assert count == 7


# --- cosine_embedding_loss --------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_cosine_embedding_loss_matches_torch(reduction):
  x1, x2 = normal(6, 4), normal(6, 4, seed=1)
  target = np.array([1, -1, 1, -1, 0, 2])  # 0 and 2 are neither: loss 0
  for margin in (0.0, 0.5, -0.3):  # the margin is traced: one compilation for all
    for jit in (False, True):
      assert_matches_torch(
        "cosine_embedding_loss", x1, x2, target, margin=margin, reduction=reduction, jit=jit
      )
    assert_matches_torch(
      "cosine_embedding_loss", x1[0], x2[0], np.array(-1), margin=margin, reduction=reduction
    )
  assert_matches_torch("cosine_embedding_loss", x1, x2, target.astype(np.float32))


def test_cosine_embedding_corners_match_torch():
  x1, x2 = normal(6, 4), normal(6, 4, seed=1)
  t = np.array([1, -1, 1, -1, 1, -1])
  zeros = np.zeros((2, 4))
  cases = [
    # Zero vectors: ATen's float 1e-12 in each squared norm makes the cosine 0.
    (zeros, x2[:2], np.array([1, -1])),
    (zeros, zeros, np.array([1, -1])),
    # Broadcasting of the inputs (also over the features) and of the target.
    (x1, x2[:1], t),
    (x1, x2[:, :1], t),
    (x1[:1], x2[:1], t),
    (x1, x2, t[:1]),
    # Mixed dtypes: each squared norm in its own input's dtype.
    (x1.astype(np.float32), x2, t),
    (x1.astype(np.float32), x2.astype(np.float32), t),
    # Integer inputs, a bool target, an empty batch, no features.
    (np.arange(12).reshape(3, 4), np.arange(12).reshape(3, 4) % 5, np.array([1, -1, 1])),
    (x1, x2, t > 0),
    (np.zeros((0, 4)), np.zeros((0, 4)), np.zeros(0)),
    (np.zeros((2, 0)), np.zeros((2, 0)), np.array([1, -1])),
  ]
  for args in cases:
    assert_matches_torch("cosine_embedding_loss", *args, reduction="none")
  assert_matches_torch("cosine_embedding_loss", *cases[-2], reduction="mean")  # NaN


def test_cosine_embedding_hinge_tie_and_non_finite_values_match_torch():
  x, y = np.array([[0.6, 0.8]]), np.array([[0.8, 0.6]])
  # The margin equal to the cosine, computed in torch's order: the hinge is at 0.
  squares = [float(np.sum(v * v) + np.float32(1e-12)) for v in (x, y)]
  cos = float(np.sum(x * y) / np.sqrt(squares[0] * squares[1]))
  assert_matches_torch("cosine_embedding_loss", x, y, np.array([-1]), margin=cos)
  slope = jax.grad(lambda x: jaxmargin.cosine_embedding_loss(x, y, jnp.array([-1]), margin=cos))(x)
  assert np.all(slope != 0)  # the full gradient passes at the tie
  x1 = normal(4, 3)
  x1[0, 0], x1[1, 1], x1[2, 2] = np.nan, np.inf, -np.inf
  assert_matches_torch("cosine_embedding_loss", x1, normal(4, 3, seed=1), np.array([1, -1, -1, 1]))


def test_cosine_eps_is_atens_float_constant_also_in_float64():
  zero, x = jnp.zeros((1, 3)), jnp.ones((1, 3))
  # cos(0, x) = 0 / sqrt(1e-12f * (3 + 1e-12f)); the loss for target -1 with
  # margin -1 is cos + 1 = 1 exactly, and the slope is x / sqrt(eps * 3).
  grad = jax.grad(lambda z: jaxmargin.cosine_embedding_loss(z, x, jnp.array([-1]), margin=-1.0))(
    zero
  )
  eps = float(np.float32(1e-12))
  assert eps == 9.999999960041972e-13
  np.testing.assert_allclose(grad, x / np.sqrt(eps * (3 + eps)), rtol=1e-12)
