"""The embedding losses against torch 2.13: pairwise_distance, cosine embedding, triplet losses.

Every option of the torch-compatible functions is held to torch (values,
dtypes, shapes and the gradients of every differentiable input, through
``tests.oracle``), eager and under ``jit``, also at the corners: zero
difference vectors, ties of the infinity norm, ties of the hinge and of the
swap's minimum, NaN and inf. Then the errors torch raises, the legacy
arguments, the Optax-style functions, the Flax modules, and the
transformations (``vmap``, forward mode, second derivatives against torch's
double backward, ``checkify``).
"""

from __future__ import annotations

import functools
import math
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from flax import nnx
from jax.experimental import checkify

import jaxmargin
from jaxmargin import linen as jm_linen
from jaxmargin import losses
from jaxmargin import nnx as jm_nnx
from tests.oracle import assert_matches_torch, tolerance

EPS = 1e-6
P_VALUES = [2, 1, 3, 0.5, 1.5, math.inf, -math.inf, -1, 0]
# Rows whose difference x - 0 + eps has: all zeros, a tie for the largest
# magnitude, a NaN, an inf, two -inf, one zero component.
SPECIAL_ROWS = np.array(
  [
    [-EPS, -EPS, -EPS],
    [2 - EPS, -2 - EPS, 1.0],
    [np.nan, 1.0, 2.0],
    [np.inf, 1.0, 2.0],
    [-np.inf, -np.inf, 2.0],
    [-EPS, 1.0, -2.0],
  ]
)


def _rng(seed=0):
  return np.random.default_rng(seed)


def _normal(*shape, seed=0, dtype=np.float64):
  return _rng(seed).normal(size=shape).astype(dtype)


# --- pairwise_distance ------------------------------------------------------


@pytest.mark.parametrize("p", P_VALUES)
def test_pairwise_distance_matches_torch_for_every_order(p):
  # The special rows and random ones in one batch (rows are independent).
  x1 = np.concatenate([SPECIAL_ROWS, _normal(4, 3)])
  x2 = np.concatenate([np.zeros_like(SPECIAL_ROWS), _normal(4, 3, seed=1)])
  assert_matches_torch("pairwise_distance", x1, x2, p=p)
  if p in (2, math.inf, 0.5):
    assert_matches_torch("pairwise_distance", x1, x2, p=p, jit=True)
    # Broadcasting to (2, 3, 5).
    assert_matches_torch("pairwise_distance", _normal(2, 1, 5), _normal(3, 1, seed=1), p=p)


@pytest.mark.parametrize("p", [2, 1, math.inf, 0.5])
def test_pairwise_distance_of_0_d_and_float32_inputs_matches_torch(p):
  assert_matches_torch("pairwise_distance", np.float64(1.5), np.float64(-2.0), p=p)
  x32, y32 = _normal(4, 5, dtype=np.float32), _normal(4, 5, seed=1, dtype=np.float32)
  assert_matches_torch("pairwise_distance", x32, y32, p=p)


@pytest.mark.parametrize("keepdim", [False, True])
def test_pairwise_distance_eps_and_keepdim_match_torch(keepdim):
  x, y = _normal(3, 4), _normal(3, 4, seed=1)
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
  assert_matches_torch("pairwise_distance", _normal(3, 4, dtype=np.float32), _normal(3, 4, seed=1))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_types_give_torchs_values_to_their_precision(dtype):
  torch_dtype = {jnp.float16: torch.float16, jnp.bfloat16: torch.bfloat16}[dtype]
  a, p, n = (_normal(6, 8, seed=s) for s in range(3))
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
  a, pos, n = (_normal(6, 3, seed=s) for s in range(3))
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
  args = [_normal(*shape, seed=s) for s, shape in enumerate(shapes)]
  assert_matches_torch("triplet_margin_loss", *args, reduction="none")
  assert_matches_torch("triplet_margin_with_distance_loss", *args, reduction="none")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_triplet_reductions_match_torch(reduction):
  for shapes in (((3, 4), (1, 4), (3, 4)), ((0, 4), (0, 4), (0, 4))):
    args = [_normal(*shape, seed=s) for s, shape in enumerate(shapes)]
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
  args = [_normal(5, 4, seed=s) for s in range(3)]
  assert_matches_torch("triplet_margin_loss", *args, **kwargs)


def test_triplet_mixed_and_integer_dtypes_round_as_torch():
  a, pos, n = (_normal(5, 4, seed=s) for s in range(3))
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
  args = [_normal(6, 4, seed=s) for s in range(3)]
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
  x1, x2 = _normal(6, 4), _normal(6, 4, seed=1)
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
  x1, x2 = _normal(6, 4), _normal(6, 4, seed=1)
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
  x1 = _normal(4, 3)
  x1[0, 0], x1[1, 1], x1[2, 2] = np.nan, np.inf, -np.inf
  assert_matches_torch("cosine_embedding_loss", x1, _normal(4, 3, seed=1), np.array([1, -1, -1, 1]))


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


# --- errors, warnings ----------------------------------------------------------

A, B = np.ones((3, 4)), np.ones((3, 4))
T = np.array([1, -1, 1])
# (our call, torch's call, expected exception, regex of our message)
ERRORS = [
  ("pairwise_distance", (A, np.ones((3, 5))), {}, ValueError, r"x2 shape \(3, 5\)"),
  (
    "pairwise_distance",
    (np.ones((3, 0)), np.ones((3, 0))),
    {"p": math.inf},
    ValueError,
    r"x1 - x2 shape \(3, 0\) has no features",
  ),
  (
    "pairwise_distance",
    (np.ones((3, 0)), np.ones((3, 0))),
    {"p": -1.0},
    ValueError,
    "has no features",
  ),
  ("pairwise_distance", (A > 0, B > 0), {}, TypeError, "x1 dtype bool"),
  ("cosine_embedding_loss", (A, B, T[None]), {}, ValueError, r"target shape \(1, 3\)"),
  ("cosine_embedding_loss", (A, B, np.array(1)), {}, ValueError, r"input1 shape \(3, 4\)"),
  ("cosine_embedding_loss", (A[0], B[0], T), {}, ValueError, r"input1 shape \(4,\)"),
  ("cosine_embedding_loss", (A, B[None], T), {}, ValueError, r"input2 shape \(1, 3, 4\)"),
  ("cosine_embedding_loss", (A, np.ones((3, 5)), T), {}, ValueError, r"input2 shape \(3, 5\)"),
  ("cosine_embedding_loss", (A, B, T[:2]), {}, ValueError, r"target shape \(2,\)"),
  ("cosine_embedding_loss", (np.ones(()), np.ones(()), np.array(1)), {}, ValueError, "input1"),
  (
    "cosine_embedding_loss",
    (A, B, T),
    {"reduction": "abc"},
    ValueError,
    "reduction: abc is not a valid value for reduction",
  ),
  (
    "triplet_margin_loss",
    (A, B, B),
    {"margin": 0.0},
    ValueError,
    r"margin is 0\.0; expected a margin greater than 0",
  ),
  ("triplet_margin_loss", (A, B, B), {"margin": -1.0}, ValueError, "margin must be greater"),
  ("triplet_margin_loss", (A, B, B), {"reduction": "abc"}, ValueError, "abc is not a valid"),
  (
    "triplet_margin_loss",
    (A, B, B),
    {"reduction": "abc", "margin": -1.0},
    ValueError,
    "abc is not a valid",
  ),
  ("triplet_margin_loss", (A[0], B, B), {}, ValueError, "have 1, 2 and 2 dimensions"),
  ("triplet_margin_loss", (A, B, np.ones((3, 5))), {}, ValueError, r"negative shape \(3, 5\)"),
  (
    "triplet_margin_loss",
    (np.ones((1, 4)), np.ones((3, 4)), np.ones((5, 4))),
    {},
    ValueError,
    "the negative distances",
  ),
  ("triplet_margin_loss", (A, B, np.ones((2, 4))), {"swap": True}, ValueError, "negative shape"),
  ("triplet_margin_loss", (np.ones((3, 0)),) * 3, {"p": math.inf}, ValueError, "no features"),
  (
    "triplet_margin_with_distance_loss",
    (A, B, B),
    {"reduction": "elementwise_mean"},
    ValueError,
    "elementwise_mean is not a valid value for reduction",
  ),
  (
    "triplet_margin_with_distance_loss",
    (A, B, B),
    {"margin": -1.0},
    ValueError,
    "margin must be greater than 0",
  ),
  ("triplet_margin_with_distance_loss", (A, B, B[0]), {}, ValueError, "same number"),
]


@pytest.mark.parametrize("name, args, kwargs, error, pattern", ERRORS)
def test_errors_torch_raises_are_raised_naming_the_argument(name, args, kwargs, error, pattern):
  with pytest.raises((RuntimeError, ValueError, TypeError)), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    getattr(F, name)(*(torch.tensor(a) for a in args), **kwargs)
  with pytest.raises(error, match=pattern) as raised:
    getattr(jaxmargin, name)(*args, **kwargs)
  assert str(raised.value).startswith(f"{name}: ")


def test_argument_type_errors():
  with pytest.raises(TypeError, match="triplet_margin_loss: anchor is None"):
    jaxmargin.triplet_margin_loss(None, A, B)
  with pytest.raises(TypeError, match="p is 'two'; expected a real number"):
    jaxmargin.pairwise_distance(A, B, p="two")
  with pytest.raises(ValueError, match=r"eps shape \(2,\) is not a scalar"):
    jaxmargin.pairwise_distance(A, B, eps=np.ones(2))
  with pytest.raises(TypeError, match="distance_function is 3; expected a callable"):
    jaxmargin.triplet_margin_with_distance_loss(A, B, B, distance_function=3)
  with pytest.raises(TypeError, match="target dtype complex"):
    jaxmargin.cosine_embedding_loss(A, B, T.astype(complex))
  with pytest.raises(TypeError, match="p is a traced value"):
    jax.jit(lambda p: jaxmargin.pairwise_distance(A, B, p=p))(2.0)
  with pytest.raises(TypeError, match="keepdim is a traced value"):
    jax.jit(lambda k: jaxmargin.pairwise_distance(A, B, keepdim=k))(True)
  with pytest.raises(TypeError, match="swap is a traced value"):
    jax.jit(lambda s: jaxmargin.triplet_margin_loss(A, B, B, swap=s))(True)


@pytest.mark.parametrize(
  "name, args", [("cosine_embedding_loss", (A, B, T)), ("triplet_margin_loss", (A, B, B))]
)
def test_legacy_arguments_and_elementwise_mean_warn_as_torch(name, args):
  with pytest.warns(UserWarning, match=r"please use reduction='sum' instead"):
    assert getattr(jaxmargin, name)(*args, size_average=False).shape == ()
  with pytest.warns(UserWarning, match=r"please use reduction='none' instead"):
    assert getattr(jaxmargin, name)(*args, reduce=False).shape == (3,)
  with pytest.warns(UserWarning, match="'elementwise_mean' is deprecated"):
    getattr(jaxmargin, name)(*args, reduction="elementwise_mean")


# --- the Optax-style functions -----------------------------------------------


def test_optax_style_losses_take_any_batch_shape_and_axis_and_equal_torch_after_mean():
  a, pos, n = (_normal(2, 3, 5, seed=s) for s in range(3))
  ref = F.triplet_margin_loss(
    *(torch.tensor(x.reshape(6, 5)) for x in (a, pos, n)), p=1.5, swap=True
  )
  per_example = losses.triplet_margin_loss(a, pos, n, p=1.5, swap=True)
  assert per_example.shape == (2, 3)
  np.testing.assert_allclose(jnp.mean(per_example), ref.numpy(), rtol=1e-12)
  moved = [np.moveaxis(x, -1, 0) for x in (a, pos, n)]
  np.testing.assert_allclose(
    losses.triplet_margin_loss(*moved, p=1.5, swap=True, axis=0), per_example, rtol=1e-14
  )
  # Broadcasting: one positive for all anchors.
  np.testing.assert_allclose(
    losses.triplet_margin_loss(a, pos[0, 0], n),
    jaxmargin.triplet_margin_loss(a, np.broadcast_to(pos[0, 0], a.shape), n, reduction="none"),
    rtol=1e-14,
  )
  labels = np.array([[1, -1, 1], [-1, 1, 0]])
  per_pair = losses.cosine_embedding_loss(a, pos, labels, margin=0.2)
  ref = F.cosine_embedding_loss(
    torch.tensor(a.reshape(6, 5)),
    torch.tensor(pos.reshape(6, 5)),
    torch.tensor(labels.reshape(6)),
    margin=0.2,
  )
  assert per_pair.shape == (2, 3)
  np.testing.assert_allclose(jnp.mean(per_pair), ref.numpy(), rtol=1e-12)
  np.testing.assert_allclose(
    losses.cosine_embedding_loss(
      np.moveaxis(a, -1, 1), np.moveaxis(pos, -1, 1), labels, margin=0.2, axis=1
    ),
    per_pair,
    rtol=1e-14,
  )
  # Gradients equal the torch-compatible function's.
  grad = jax.grad(lambda x: jnp.mean(losses.triplet_margin_loss(x, pos, n, p=3)))(a)
  grad_t = jax.grad(
    lambda x: jaxmargin.triplet_margin_loss(
      x.reshape(6, 5), pos.reshape(6, 5), n.reshape(6, 5), p=3
    )
  )(a)
  np.testing.assert_allclose(grad, grad_t, rtol=1e-13)


def test_optax_style_errors_name_the_argument():
  with pytest.raises(ValueError, match="triplet_margin_loss: axis 2 is out of range for anchors"):
    losses.triplet_margin_loss(A, B, B, axis=2)
  with pytest.raises(ValueError, match="anchors shape \\(\\) has no feature axis"):
    losses.triplet_margin_loss(1.0, 1.0, 1.0)
  with pytest.raises(ValueError, match="margin is -1"):
    losses.triplet_margin_loss(A, B, B, margin=-1.0)
  with pytest.raises(ValueError, match=r"negatives shape \(3, 5\)"):
    losses.triplet_margin_loss(A, B, np.ones((3, 5)))
  with pytest.raises(ValueError, match=r"labels shape \(2,\) does not broadcast"):
    losses.cosine_embedding_loss(A, B, np.ones(2))
  with pytest.raises(TypeError, match="embeddings1 dtype bool"):
    losses.cosine_embedding_loss(A > 0, B, T)


def test_optax_triplet_loss_differs_from_torch_and_ours_does_not():
  # optax.losses.triplet_margin_loss: (sum((a - p)^deg) + eps)^(1/deg), no
  # magnitudes, eps once; no swap. torch: ||a - p + eps||_p.
  a, pos, n = (_normal(4, 3, seed=s) for s in range(3))
  torch_loss = F.triplet_margin_loss(
    *(torch.tensor(x) for x in (a, pos, n)), p=1, reduction="none"
  ).numpy()
  ours = losses.triplet_margin_loss(a, pos, n, p=1)
  np.testing.assert_allclose(ours, torch_loss, rtol=1e-12)
  theirs = optax.losses.triplet_margin_loss(a, pos, n, norm_degree=1)
  # Odd degree without magnitudes: signed sums, "distances" that can be negative.
  signed = np.sum(a - pos, -1) + EPS
  assert np.any(signed < 0)
  np.testing.assert_allclose(
    theirs, np.maximum(signed - (np.sum(a - n, -1) + EPS) + 1, 0), rtol=1e-12
  )
  assert not np.allclose(theirs, torch_loss)
  # p = 2: eps placement. Identical anchor and positive: torch's distance is
  # eps * sqrt(D), optax's sqrt(eps) (1.7e-6 against 1e-3).
  same = optax.losses.triplet_margin_loss(a, a, n, margin=10.0)
  ours_same = losses.triplet_margin_loss(a, a, n, margin=10.0)
  d_neg = np.linalg.norm(a - n + EPS, axis=-1)
  np.testing.assert_allclose(ours_same, 10 + EPS * np.sqrt(3) - d_neg, rtol=1e-12)
  np.testing.assert_allclose(
    same, 10 + np.sqrt(EPS) - np.sqrt(np.sum((a - n) ** 2, -1) + EPS), rtol=1e-12
  )


# --- the Flax modules --------------------------------------------------------

ANCHOR, POSITIVE, NEGATIVE = (jnp.asarray(_normal(4, 3, seed=s)) for s in range(3))
TARGET = jnp.array([1, -1, -1, 1])


def _manhattan(x, y):
  return jaxmargin.pairwise_distance(x, y, p=1)


MODULE_CASES = [
  (
    "CosineEmbeddingLoss",
    {"margin": 0.2, "reduction": "sum"},
    (ANCHOR, POSITIVE, TARGET),
    functools.partial(jaxmargin.cosine_embedding_loss, margin=0.2, reduction="sum"),
  ),
  (
    "TripletMarginLoss",
    {"margin": 0.5, "p": 1.5, "eps": 0.1, "swap": True},
    (ANCHOR, POSITIVE, NEGATIVE),
    functools.partial(jaxmargin.triplet_margin_loss, margin=0.5, p=1.5, eps=0.1, swap=True),
  ),
  (
    "TripletMarginLoss",
    {"reduction": "none"},
    (ANCHOR, POSITIVE, NEGATIVE),
    functools.partial(jaxmargin.triplet_margin_loss, reduction="none"),
  ),
  (
    "TripletMarginWithDistanceLoss",
    {"distance_function": _manhattan, "swap": True},
    (ANCHOR, POSITIVE, NEGATIVE),
    functools.partial(
      jaxmargin.triplet_margin_with_distance_loss, distance_function=_manhattan, swap=True
    ),
  ),
  (
    "TripletMarginWithDistanceLoss",
    {},
    (ANCHOR, POSITIVE, NEGATIVE),
    jaxmargin.triplet_margin_with_distance_loss,
  ),
]


@pytest.mark.parametrize("name, kwargs, args, fn", MODULE_CASES)
def test_nnx_and_linen_modules_equal_the_functions(name, kwargs, args, fn):
  expected = fn(*args)
  np.testing.assert_array_equal(getattr(jm_nnx, name)(**kwargs)(*args), expected)
  np.testing.assert_array_equal(getattr(jm_linen, name)(**kwargs).apply({}, *args), expected)


@pytest.mark.parametrize("module", [jm_nnx, jm_linen])
def test_modules_check_torchs_rules_when_built(module):
  with pytest.raises(ValueError, match=r"TripletMarginLoss: margin is 0\.0; expected a margin"):
    module.TripletMarginLoss(margin=0.0)
  with pytest.raises(ValueError, match="TripletMarginWithDistanceLoss: margin is -1"):
    module.TripletMarginWithDistanceLoss(margin=-1.0)
  with pytest.raises(ValueError, match="elementwise_mean is not a valid value for reduction"):
    module.TripletMarginWithDistanceLoss(reduction="elementwise_mean")
  with pytest.raises(TypeError, match="distance_function is 'l2'"):
    module.TripletMarginWithDistanceLoss(distance_function="l2")
  with pytest.raises(ValueError, match="CosineEmbeddingLoss: reduction: abc is not a valid"):
    module.CosineEmbeddingLoss(reduction="abc")
  with pytest.raises(TypeError, match="CosineEmbeddingLoss: margin is None"):
    module.CosineEmbeddingLoss(margin=None)
  with pytest.raises(TypeError, match="TripletMarginLoss: p is 'x'"):
    module.TripletMarginLoss(p="x")
  with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
    loss = module.TripletMarginLoss(reduce=False)
    out = (
      loss(ANCHOR, POSITIVE, NEGATIVE)
      if module is jm_nnx
      else loss.apply({}, ANCHOR, POSITIVE, NEGATIVE)
    )
  assert out.shape == (4,)


def test_nnx_module_holds_no_trainable_state_and_works_inside_a_model():
  loss_fn = jm_nnx.TripletMarginWithDistanceLoss(distance_function=_manhattan)
  assert len(nnx.state(loss_fn, nnx.Param)) == 0
  linear = nnx.Linear(3, 2, rngs=nnx.Rngs(0))

  def loss(model):
    return loss_fn(model(ANCHOR), model(POSITIVE), model(NEGATIVE))

  grads = nnx.grad(loss)(linear)
  assert np.all(np.isfinite(grads["kernel"][...]))


# --- transformations -----------------------------------------------------------


def test_vmap_over_a_batch_of_batches_equals_the_batched_call():
  a, pos, n = (_normal(3, 4, 5, seed=s) for s in range(3))
  t = np.array([[1, -1, 1, -1]] * 3)
  vmapped = jax.vmap(
    lambda a, p, n: jaxmargin.triplet_margin_loss(a, p, n, reduction="none", swap=True)
  )(a, pos, n)
  np.testing.assert_allclose(
    vmapped, jaxmargin.triplet_margin_loss(a, pos, n, reduction="none", swap=True), rtol=1e-14
  )
  vmapped = jax.vmap(lambda x, y, t: jaxmargin.cosine_embedding_loss(x, y, t, reduction="none"))(
    a, pos, t
  )
  np.testing.assert_allclose(vmapped, losses.cosine_embedding_loss(a, pos, t), rtol=1e-14)
  vmapped = jax.vmap(jax.grad(lambda x, y: jnp.sum(jaxmargin.pairwise_distance(x, y, p=3))))(a, pos)
  batched = jax.grad(lambda x, y: jnp.sum(jaxmargin.pairwise_distance(x, y, p=3)))(a, pos)
  np.testing.assert_allclose(vmapped, batched, rtol=1e-14)


def _torch_hessian(fn, args):
  return torch.autograd.functional.hessian(fn, tuple(torch.tensor(a) for a in args))


def _assert_hessians(ours, ref):
  for i, row in enumerate(ours):
    for j, block in enumerate(row):
      np.testing.assert_allclose(
        block, ref[i][j].numpy(), rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=f"block {i}, {j}"
      )


@pytest.mark.parametrize("p", [2, 3, 1.5, 0.5, 1, math.inf, -1, 0])
def test_second_derivatives_match_torchs_double_backward(p):
  # Reverse over reverse, torch's own method, at regular rows and at the zero
  # vector, a zero component, a tie, NaN and inf, where the derivatives are
  # torch's masked formulas; forward over reverse (jax.hessian) at regular rows.
  x, y = _normal(3, 3), _normal(3, 3, seed=1)

  def ours(a, b):
    return jnp.sum(jaxmargin.pairwise_distance(a, b, p=p))

  def theirs(a, b):
    return F.pairwise_distance(a, b, p=p).sum()

  rows = np.concatenate([x, SPECIAL_ROWS]), np.concatenate([y, np.zeros_like(SPECIAL_ROWS)])
  reverse_reverse = jax.jacrev(jax.jacrev(ours, argnums=(0, 1)), argnums=(0, 1))(*rows)
  _assert_hessians(reverse_reverse, _torch_hessian(theirs, rows))
  if p in (2, 3, 0.5, math.inf):
    _assert_hessians(jax.hessian(ours, argnums=(0, 1))(x, y), _torch_hessian(theirs, (x, y)))
  if p in (2, 3, math.inf):  # the triplet's own second derivatives, for three orders
    a, pos, n = (_normal(4, 3, seed=s) for s in range(3))
    ours_triplet = functools.partial(jaxmargin.triplet_margin_loss, p=p, swap=True, margin=2.0)
    torch_triplet = functools.partial(F.triplet_margin_loss, p=p, swap=True, margin=2.0)
    _assert_hessians(
      jax.hessian(ours_triplet, argnums=(0, 1, 2))(a, pos, n),
      _torch_hessian(torch_triplet, (a, pos, n)),
    )


def test_cosine_second_derivatives_match_torch_also_at_a_zero_vector():
  x1, x2 = _normal(4, 3), _normal(4, 3, seed=1)
  x1[0] = 0.0
  t = np.array([1, -1, 1, -1])
  _assert_hessians(
    jax.hessian(lambda a, b: jaxmargin.cosine_embedding_loss(a, b, t, margin=-0.5), argnums=(0, 1))(
      x1, x2
    ),
    _torch_hessian(
      lambda a, b: F.cosine_embedding_loss(a, b, torch.tensor(t), margin=-0.5), (x1, x2)
    ),
  )


@pytest.mark.parametrize("p", [2, math.inf])
def test_forward_mode_matches_torchs_forward_ad(p):
  x, y = _normal(3, 4), _normal(3, 4, seed=1)
  dx, dy = _normal(3, 4, seed=2), _normal(3, 4, seed=3)
  _, ours = jax.jvp(
    lambda a, b: jaxmargin.triplet_margin_loss(a, b, y[::-1], p=p, swap=True, reduction="none"),
    (x, y),
    (dx, dy),
  )
  with warnings.catch_warnings():  # torch.func scripts a helper, which torch deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    _, ref = torch.func.jvp(
      lambda a, b: F.triplet_margin_loss(
        a, b, torch.tensor(y[::-1].copy()), p=p, swap=True, reduction="none"
      ),
      (torch.tensor(x), torch.tensor(y)),
      (torch.tensor(dx), torch.tensor(dy)),
    )
  np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-12)
  np.testing.assert_allclose(
    jax.jacfwd(lambda a: jnp.sum(jaxmargin.pairwise_distance(a, y, p=p)))(x),
    jax.grad(lambda a: jnp.sum(jaxmargin.pairwise_distance(a, y, p=p)))(x),
    rtol=1e-13,
  )


def test_margin_is_differentiable():
  a, pos, n = (_normal(6, 3, seed=s) for s in range(3))
  active = np.asarray(jaxmargin.triplet_margin_loss(a, pos, n, reduction="none") > 0)
  grad = jax.grad(lambda m: jaxmargin.triplet_margin_loss(a, pos, n, margin=m))(1.0)
  np.testing.assert_allclose(grad, active.mean(), rtol=1e-15)
  t = np.array([-1, -1, -1, -1, -1, -1])
  grad = jax.grad(lambda m: jaxmargin.cosine_embedding_loss(a, pos, t, margin=m))(-0.2)
  cos = np.sum(a * pos, -1) / np.sqrt(np.sum(a * a, -1) * np.sum(pos * pos, -1))
  np.testing.assert_allclose(grad, -np.mean(cos >= -0.2), rtol=1e-15)


@pytest.mark.parametrize(
  "fn",
  [
    lambda m: jaxmargin.triplet_margin_loss(A, B, B * 2, margin=m, reduction="none"),
    lambda m: jaxmargin.triplet_margin_with_distance_loss(A, B, B * 2, margin=m),
    lambda m: jaxmargin.triplet_margin_with_distance_loss(
      A, B, B * 2, margin=m, distance_function=_manhattan
    ),
    lambda m: losses.triplet_margin_loss(A, B, B * 2, margin=m),
  ],
  ids=["torch", "with_distance", "with_custom_distance", "optax"],
)
def test_a_traced_margin_is_checked_by_checkify_and_gives_nan(fn):
  checked = jax.jit(checkify.checkify(fn))
  error, out = checked(-1.0)
  assert re.search(r"margin is -1.0; expected a margin greater than 0", error.get())
  assert np.all(np.isnan(out))
  error, out = checked(0.5)
  assert error.get() is None and np.all(np.isfinite(out))
  # Without checkify: NaN, and no error.
  assert np.all(np.isnan(jax.jit(fn)(0.0)))
