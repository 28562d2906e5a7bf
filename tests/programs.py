"""Every public loss as a small traced program, and a walk over a jaxpr's equations.

For the tests that read what the losses compile to (tests/test_export.py,
tests/test_accelerators.py) rather than what they compute.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmargin import functional, linear, losses

N, C, D, K = 6, 40, 5, 4


def data(dtype: Any, seed: int = 0) -> dict[str, jax.Array]:
  """Scores, features, classifier and targets of every format, made in the current x64 mode."""
  rng = np.random.default_rng(seed)
  lists = np.full((N, K), -1, np.int32)
  for row in lists:
    count = rng.integers(1, K + 1)
    row[:count] = rng.choice(C, count, replace=False)
  padded = np.full((N, C), -1, np.int32)
  padded[:, :K] = lists
  multi_hot = np.zeros((N, C), np.int32)
  for n, row in enumerate(lists):
    multi_hot[n, row[row >= 0]] = 1
  return {
      "scores": jnp.asarray(rng.normal(size=(N, C)), dtype),
      "classes": jnp.asarray(rng.integers(0, C, N), jnp.int32),
      "lists": jnp.asarray(lists),
      "padded": jnp.asarray(padded),
      "multi_hot": jnp.asarray(multi_hot),
      "soft": jnp.asarray(multi_hot, dtype),
      "where": jnp.asarray(rng.random((N, C)) < 0.9),
      "weights": jnp.asarray(rng.uniform(0.5, 2.0, C), dtype),
      # The pairwise and embedding losses: N pairs (or triplets) of C-vectors.
      "other": jnp.asarray(rng.normal(size=(N, C)), dtype),
      "third": jnp.asarray(rng.normal(size=(N, C)), dtype),
      "signs": jnp.asarray(rng.choice([-1, 1], size=(N, C)), dtype),
      "row_signs": jnp.asarray(rng.choice([-1, 1], size=N), dtype),
      "features": jnp.asarray(rng.normal(size=(N, D)), dtype),
      "kernel": jnp.asarray(rng.normal(size=(D, C)) / np.sqrt(D), dtype),
      "bias": jnp.asarray(rng.normal(size=C) / 10, dtype),
  }


class Program(NamedTuple):
  """A loss as a function of its differentiable arrays (a scalar unless ``grad`` is False)."""

  fn: Callable[..., Any]
  args: tuple
  grad: bool = True


def programs(d: dict[str, jax.Array]) -> dict[str, Program]:
  """Every public loss (and ``linear.top_k``), with every differentiable argument."""
  scores, hot, soft = d["scores"], d["multi_hot"], d["soft"]
  classifier = (d["features"], d["kernel"], d["bias"])
  return {
      "functional.multilabel_margin_loss": Program(
          lambda x: functional.multilabel_margin_loss(x, d["padded"]), (scores,)),
      "functional.multi_margin_loss": Program(
          lambda x, w: functional.multi_margin_loss(x, d["classes"], weight=w),
          (scores, d["weights"])),
      "functional.multi_margin_loss p=2": Program(
          lambda x: functional.multi_margin_loss(x, d["classes"], p=2, reduction="sum"),
          (scores,)),
      "functional.multilabel_soft_margin_loss": Program(
          lambda x, w: functional.multilabel_soft_margin_loss(x, soft, weight=w),
          (scores, d["weights"])),
      "losses.multiclass_margin_loss": Program(
          lambda x, w: jnp.sum(losses.multiclass_margin_loss(x, d["classes"], class_weights=w,
                                                             where=d["where"])),
          (scores, d["weights"])),
      "losses.multilabel_margin_loss": Program(
          lambda x: jnp.mean(losses.multilabel_margin_loss(x, hot, where=d["where"])),
          (scores,)),
      "losses.multilabel_soft_margin_loss": Program(
          lambda x, w: jnp.mean(losses.multilabel_soft_margin_loss(x, soft, class_weights=w)),
          (scores, d["weights"])),
      "functional.margin_ranking_loss": Program(
          lambda x1, x2: functional.margin_ranking_loss(x1, x2, d["signs"], margin=0.1),
          (scores, d["other"])),
      "functional.hinge_embedding_loss": Program(
          lambda x: functional.hinge_embedding_loss(x, d["signs"]), (scores,)),
      "functional.soft_margin_loss": Program(
          lambda x: functional.soft_margin_loss(x, d["signs"]), (scores,)),
      "functional.cosine_embedding_loss": Program(
          lambda x1, x2: functional.cosine_embedding_loss(x1, x2, d["row_signs"], margin=0.2),
          (scores, d["other"])),
      "functional.triplet_margin_loss": Program(
          lambda a, p, n: functional.triplet_margin_loss(a, p, n, swap=True),
          (scores, d["other"], d["third"])),
      "functional.triplet_margin_with_distance_loss": Program(
          lambda a, p, n: functional.triplet_margin_with_distance_loss(a, p, n),
          (scores, d["other"], d["third"])),
      "functional.pairwise_distance": Program(
          lambda x1, x2: jnp.sum(functional.pairwise_distance(x1, x2)), (scores, d["other"])),
      "losses.margin_ranking_loss": Program(
          lambda x1, x2: jnp.mean(losses.margin_ranking_loss(x1, x2, d["signs"])),
          (scores, d["other"])),
      "losses.hinge_embedding_loss": Program(
          lambda x: jnp.mean(losses.hinge_embedding_loss(x, d["signs"])), (scores,)),
      "losses.soft_margin_loss": Program(
          lambda x: jnp.mean(losses.soft_margin_loss(x, d["signs"])), (scores,)),
      "losses.cosine_embedding_loss": Program(
          lambda x1, x2: jnp.mean(losses.cosine_embedding_loss(x1, x2, d["row_signs"])),
          (scores, d["other"])),
      "losses.triplet_margin_loss": Program(
          lambda a, p, n: jnp.mean(losses.triplet_margin_loss(a, p, n)),
          (scores, d["other"], d["third"])),
      "linear.multilabel_margin_loss": Program(
          lambda h, k, b: linear.multilabel_margin_loss(h, k, d["lists"], bias=b,
                                                        reduction="mean"), classifier),
      "linear.multilabel_margin_loss none": Program(
          lambda h, k, b: jnp.sum(linear.multilabel_margin_loss(h, k, d["lists"], bias=b)),
          classifier),
      "linear.multi_margin_loss": Program(
          lambda h, k, b, w: linear.multi_margin_loss(h, k, d["classes"], bias=b,
                                                      class_weights=w, reduction="mean"),
          classifier + (d["weights"],)),
      "linear.multilabel_soft_margin_loss": Program(
          lambda h, k, b, w: linear.multilabel_soft_margin_loss(
              h, k, d["lists"], bias=b, class_weights=w, reduction="sum"),
          classifier + (d["weights"],)),
      "linear.top_k": Program(lambda h, k, b: linear.top_k(h, k, 3, bias=b), classifier,
                              grad=False),
  }


NAMES = tuple(programs(data(np.float32)))
DIFFERENTIABLE = tuple(name for name, p in programs(data(np.float32)).items() if p.grad)


def value_and_grad(program: Program) -> Callable[..., Any]:
  """The program's ``value_and_grad`` in all its arguments (its value if not differentiable)."""
  if not program.grad:
    return program.fn
  return jax.value_and_grad(program.fn, argnums=tuple(range(len(program.args))))


def _sub_jaxprs(params: dict) -> Iterator[tuple[str, Any]]:
  for name, value in params.items():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if hasattr(item, "eqns"):
        yield name, item
      elif hasattr(getattr(item, "jaxpr", None), "eqns"):
        yield name, item.jaxpr


def _for_platform(eqn: Any, platform: str) -> Any:
  """The branch of a ``lax.platform_dependent`` cond that ``platform`` runs."""
  choices = eqn.params["branches_platforms"]
  for branch, platforms in zip(eqn.params["branches"], choices, strict=True):
    if platforms is not None and platform in platforms:
      return branch
  return eqn.params["branches"][choices.index(None)]


def equations(jaxpr: Any, within: tuple[str, ...] = (),
              platform: str | None = None) -> Iterator[tuple[Any, tuple[str, ...]]]:
  """Every equation of a (closed) jaxpr and of the jaxprs in its equations' parameters.

  Each comes with the primitives of the equations it lies inside, outermost
  first (``("jit", "cond")`` for one in a branch of a ``cond`` in a ``jit``).
  With ``platform``, of the branches of a ``lax.platform_dependent`` only the
  one that platform runs.
  """
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  for eqn in jaxpr.eqns:
    yield eqn, within
    inside = within + (eqn.primitive.name,)
    if platform is not None and eqn.params.get("branches_platforms"):
      yield from equations(_for_platform(eqn, platform), inside, platform)
      continue
    for _, sub in _sub_jaxprs(eqn.params):
      yield from equations(sub, inside, platform)
