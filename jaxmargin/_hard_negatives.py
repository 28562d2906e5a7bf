"""Hard negatives of the multi-label margin loss: each row's ``k`` highest-scoring negatives.

With ``hard_negatives=k`` only the ``k`` highest-scoring negatives of a row
enter its hinge sums, shared by all its labels; the divisor stays ``C``.
"Highest" is :func:`jax.lax.top_k`'s order, ties included: equal scores go
to the lower class index, ``+0.0`` ranks above ``-0.0``, and NaN above
``+inf`` (a NaN negative takes a place and, as in torch, enters no term).

The selection is piecewise constant in the scores, so the gradient is the
loss's on the kept negatives, exactly. Two forms share that definition:

* :func:`keep_hardest` for the scores at hand, ``(N, C)``: the negatives
  outside the ``k`` score ``-inf``, which makes every term with them inactive
  (the unfused losses drop excluded classes the same way);
* :func:`fused_hard_negatives` for the fused losses, which never hold the
  scores: the ``k`` classes as a list (:func:`hardest_negative_lists`),
  picked from the ``k + K`` best classes of a chunked top-k (at most ``K`` of
  those can be labels).
"""

from __future__ import annotations

import jax
import jax.core
import jax.numpy as jnp
from jax import lax

from jaxmargin import _fused_modes
from jaxmargin._multilabel_margin import _searchsorted_rows
from jaxmargin._sharding import scatter_in_rows


def check_hard_negatives(fn: str, k) -> int | None:
  """Checks a static ``hard_negatives``: ``None`` or a positive int."""
  if k is None:
    return None
  if isinstance(k, jax.core.Tracer):
    raise TypeError(
      f"{fn}: hard_negatives is a traced value ({k.aval}); expected a static positive int "
      "or None: under jax.jit, make it static (static_argnames=('hard_negatives',))"
    )
  if isinstance(k, bool) or not isinstance(k, int):
    raise TypeError(f"{fn}: hard_negatives is {k!r}; expected a positive int or None")
  if k < 1:
    raise ValueError(f"{fn}: hard_negatives is {k}; expected a positive int or None")
  return k


def keep_hardest(scores: jax.Array, is_label: jax.Array, k: int) -> jax.Array:
  """``scores`` with every negative outside its row's ``k`` highest at ``-inf``.

  Args:
    scores: ``(N, C)`` floating scores; an excluded class already at ``-inf``.
    is_label: ``(N, C)`` bool, the labels (kept whatever their score).
    k: how many negatives to keep (static); ``k >= C`` keeps every class.

  Returns:
    ``(N, C)`` scores, differentiable at the kept entries (zero gradient elsewhere).
  """
  if k >= scores.shape[1]:
    return scores
  # A label in the top k (only ever among -inf scores: below every negative
  # that can enter a term) takes the place of a negative that adds nothing.
  candidates = jnp.where(is_label, -jnp.inf, lax.stop_gradient(scores))
  _, index = lax.top_k(candidates, k)
  kept = scatter_in_rows(jnp.zeros_like(is_label), index, jnp.ones_like(index, bool), "max")
  return jnp.where(kept | is_label, scores, -jnp.inf)


def hardest_negative_lists(
  candidates: jax.Array, slot_index: jax.Array, slot_valid: jax.Array, k: int
) -> tuple[jax.Array, jax.Array]:
  """The first ``k`` candidates of each row that are not among its labels.

  Args:
    candidates: ``(N, M)`` int32 classes in decreasing score order: a top-k
      over all classes, ``M = min(k + K, C) >= k``, so that at least ``k`` are
      negatives when the row has ``k``.
    slot_index: ``(N, K)`` label lists (``C`` at the invalid slots).
    slot_valid: ``(N, K)`` bool, the valid slots.
    k: how many negatives (static).

  Returns:
    ``(kept_index, kept_valid)``, both ``(N, k)``: the hard negatives in
    decreasing score order, and which entries hold one (all but when the
    row has fewer than ``k`` negatives).
  """
  if slot_index.shape[1] == 0:
    is_label = jnp.zeros(candidates.shape, bool)
  else:
    # Each candidate looked up in its row's sorted labels: O(N*M*log K).
    listed = jnp.sort(jnp.where(slot_valid, slot_index, jnp.iinfo(jnp.int32).max), axis=1)
    position = _searchsorted_rows(listed, candidates, right=False)
    found = jnp.take_along_axis(listed, jnp.minimum(position, listed.shape[1] - 1), axis=1)
    is_label = found == candidates
  # A stable partition: the negatives first, in their order.
  _, partitioned = lax.sort(
    (is_label.astype(jnp.int32), candidates), dimension=1, is_stable=True, num_keys=1
  )
  num_negatives = jnp.sum(~is_label, axis=1, dtype=jnp.int32)
  kept_valid = jnp.arange(k, dtype=jnp.int32) < num_negatives[:, None]
  return partitioned[:, :k], kept_valid


def fused_hard_negatives(fn, classifier, lists, k, plan, num_classes):
  """The fused losses' kept lists: each row's ``k`` hardest negatives, ``(N, k)`` twice.

  Args:
    fn: the calling function's name, for errors.
    classifier: ``(features, kernel, bias)`` in the compute dtype.
    lists: the rows' :class:`~jaxmargin._multilabel_margin.LabelLists` (``K`` slots).
    k: how many negatives (static), below ``num_classes``.
    plan: the sweep's :class:`~jaxmargin._fused.Plan`.
    num_classes: C, the real classes.

  Returns:
    ``(kept_index, kept_valid)`` of :func:`hardest_negative_lists`, from a
    :func:`~jaxmargin._fused_modes.split_top_k` of ``k + K`` classes without
    gradients (the selection is piecewise constant).
  """
  width = min(k + lists.slot_index.shape[1], num_classes)
  local_columns = classifier[1].shape[1]
  what = f"{fn}: hard_negatives plus the label slots, k + K,"
  if plan.class_axis is not None and width > local_columns:
    raise ValueError(
      f"{what} is {width}; expected at most {local_columns}, the classes each device "
      f"holds along {plan.class_axis!r}"
    )
  h, w, b = jax.tree.map(lax.stop_gradient, classifier)
  _, candidates = _fused_modes.split_top_k(h, w, b, width, plan, what=what)
  return hardest_negative_lists(candidates, lists.slot_index, lists.slot_valid, k)
