"""The pairwise losses' arguments as torch 2.13 takes them: reductions, legacy arguments, errors.

``reduction`` names and torch's words for a bad one, ``'elementwise_mean'``,
``size_average``/``reduce`` with their warnings, and every error torch raises,
raised here as ``ValueError``/``TypeError`` naming the loss and the argument.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch.nn.functional as F

import jaxmargin
from tests.pairwise_cases import NAMES, arrays, to_torch, torch_loss

# --- reductions, the legacy arguments and their warnings ------------------------------------

LEGACY = [
  (None, False, "none"),
  (False, None, "sum"),
  (True, None, "mean"),
  (True, True, "mean"),
  (False, True, "sum"),
  (True, False, "none"),
  (False, False, "none"),
]


# Every combination for one loss; one per resolved reduction for the others.
@pytest.mark.parametrize(
  "name, size_average, reduce, resolved",
  [
    *(("margin_ranking_loss", *legacy) for legacy in LEGACY),
    *((name, *LEGACY[k]) for name in NAMES[1:] for k in (0, 1, 3)),
  ],
)
def test_legacy_arguments_warn_and_pick_torchs_reduction(name, size_average, reduce, resolved):
  args = arrays(name, np.random.default_rng(10), (3, 4), np.float64)
  message = f"please use reduction='{resolved}' instead"
  with pytest.warns(UserWarning, match=message):
    got = getattr(jaxmargin, name)(
      *args,
      size_average=size_average,
      reduce=reduce,
      reduction="sum" if resolved != "sum" else "none",
    )
  expected = torch_loss(name, *args, size_average=size_average, reduce=reduce)
  np.testing.assert_allclose(got, expected, rtol=1e-12)
  np.testing.assert_allclose(got, getattr(jaxmargin, name)(*args, reduction=resolved), rtol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_elementwise_mean_warns_and_means(name):
  args = arrays(name, np.random.default_rng(11), (3, 4), np.float64)
  with pytest.warns(UserWarning, match="reduction='elementwise_mean' is deprecated"):
    got = getattr(jaxmargin, name)(*args, reduction="elementwise_mean")
  np.testing.assert_allclose(got, torch_loss(name, *args, reduction="elementwise_mean"), rtol=1e-12)
  np.testing.assert_array_equal(got, getattr(jaxmargin, name)(*args))


@pytest.mark.parametrize("reduction", ["bogus", "Mean", None, "batchmean"])
@pytest.mark.parametrize("name", NAMES)
def test_bad_reduction_in_torchs_words(name, reduction):
  args = arrays(name, np.random.default_rng(12), (3,), np.float64)
  with pytest.raises(ValueError, match=f"{reduction} is not a valid value for reduction"):
    torch_loss(name, *args, reduction=reduction)
  with pytest.raises(
    ValueError,
    match=f"^{name}: reduction: {reduction} is not a valid value "
    "for reduction; expected 'none', 'mean' or 'sum'$",
  ):
    getattr(jaxmargin, name)(*args, reduction=reduction)


# --- errors: wherever torch raises, we raise, naming the argument -----------------------------

F64 = np.ones((5, 4))
ERRORS = [
  # (loss, args, kwargs, our error, regex)
  (
    "margin_ranking_loss",
    (F64, F64, np.ones(5)),
    {},
    ValueError,
    r"input1, input2 and target have 2, 2 and 1 dimensions",
  ),
  (
    "margin_ranking_loss",
    (np.ones(3), np.ones(3), np.ones(())),
    {},
    ValueError,
    r"have 1, 1 and 0 dimensions",
  ),
  (
    "margin_ranking_loss",
    (np.ones(3), np.ones(4), np.ones(3)),
    {},
    ValueError,
    r"input1 shape \(3,\), input2 shape \(4,\), target shape \(3,\) do not broadcast",
  ),
  (
    "margin_ranking_loss",
    (F64, F64, np.ones((5, 4), bool)),
    {},
    TypeError,
    r"target dtype bool is not a real number dtype",
  ),
  (
    "margin_ranking_loss",
    (F64, F64, np.ones((5, 4))),
    {"margin": "a"},
    TypeError,
    r"margin is 'a'",
  ),
  (
    "margin_ranking_loss",
    (F64, F64, np.ones((5, 4))),
    {"margin": np.ones(3)},
    ValueError,
    r"margin shape \(3,\) is not a scalar",
  ),
  (
    "margin_ranking_loss",
    (F64.astype(complex), F64, F64),
    {},
    TypeError,
    r"input1 dtype complex128 is not a real number dtype",
  ),
  ("margin_ranking_loss", (F64, None, F64), {}, TypeError, r"input2 is None"),
  (
    "hinge_embedding_loss",
    (F64, np.ones(5)),
    {},
    ValueError,
    r"input shape \(5, 4\), target shape \(5,\) do not broadcast",
  ),
  (
    "hinge_embedding_loss",
    (np.ones((5, 4), np.int64), F64),
    {},
    TypeError,
    r"input dtype int64 is not a floating dtype",
  ),
  ("hinge_embedding_loss", (F64, F64), {"margin": "a"}, TypeError, r"margin is 'a'"),
  (
    "hinge_embedding_loss",
    (F64, F64),
    {"margin": np.ones(2)},
    ValueError,
    r"margin shape \(2,\) is not a scalar",
  ),
  ("hinge_embedding_loss", (F64, "target"), {}, TypeError, r"target is 'target'"),
  (
    "soft_margin_loss",
    (F64, np.ones(5)),
    {},
    ValueError,
    r"input shape \(5, 4\), target shape \(5,\) do not broadcast",
  ),
  (
    "soft_margin_loss",
    (np.ones(4), np.ones((3, 4))),
    {},
    ValueError,
    r"target shape \(3, 4\) broadcasts input shape \(4,\) to \(3, 4\)",
  ),
  (
    "soft_margin_loss",
    (np.ones((3, 1)), np.ones((3, 4))),
    {},
    ValueError,
    r"target shape \(3, 4\) broadcasts input shape \(3, 1\)",
  ),
  (
    "soft_margin_loss",
    (np.ones(3, np.int32), np.ones(3)),
    {},
    TypeError,
    r"input dtype int32 is not a floating dtype",
  ),
  (
    "soft_margin_loss",
    (F64, F64.astype(complex)),
    {},
    TypeError,
    r"target dtype complex128 is not a real number dtype",
  ),
]


@pytest.mark.parametrize("name, args, kwargs, error, regex", ERRORS)
def test_errors_where_torch_raises(name, args, kwargs, error, regex):
  with pytest.raises((RuntimeError, TypeError, ValueError, AttributeError)):
    torch_args = [to_torch(a) if isinstance(a, np.ndarray) else a for a in args]
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      getattr(F, name)(*torch_args, **kwargs)
  with pytest.raises(error, match=f"^{name}: .*{regex}"):
    getattr(jaxmargin, name)(*args, **kwargs)


def test_errors_are_raised_at_trace_time_under_jit():
  fn = jax.jit(jaxmargin.margin_ranking_loss)
  with pytest.raises(ValueError, match="do not broadcast"):
    fn(jnp.ones(3), jnp.ones(4), jnp.ones(3))
