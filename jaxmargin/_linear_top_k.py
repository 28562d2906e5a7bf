"""The best classes of a linear classifier, without its ``(N, C)`` scores: ``linear.top_k``."""

from __future__ import annotations

import functools

import jax

from jaxmargin import _fused_modes
from jaxmargin import _linear_validation as lv
from jaxmargin import _validation as v
from jaxmargin._linear_sweep import plan_of


@functools.partial(jax.jit, static_argnames=("k", "chunk_size", "class_axis_name", "num_classes"))
def _top_k(features, kernel, bias, *, k, chunk_size, class_axis_name=None, num_classes=None):
  fn = "top_k"
  h, w, b, out_dtype = lv.classifier_inputs(fn, features, kernel, bias)
  num_rows = h.shape[0]
  plan, num_classes = plan_of(fn, chunk_size, num_rows, w.shape[1], class_axis_name, num_classes)
  if isinstance(k, bool) or not isinstance(k, int):
    raise TypeError(f"{fn}: k is {k!r}; expected an int in [1, {num_classes}]")
  if not 1 <= k <= num_classes:
    raise ValueError(f"{fn}: k is {k}; expected 1 <= k <= C = {num_classes}, the classes of kernel")
  if class_axis_name is not None and k > w.shape[1]:
    raise ValueError(
      f"{fn}: k is {k}; expected k <= {w.shape[1]}, the classes each "
      f"device holds along {class_axis_name!r}"
    )
  values, index = _fused_modes.split_top_k(h, w, b, k, plan)
  return values.astype(out_dtype), index


def top_k(
  features: jax.typing.ArrayLike,
  kernel: jax.typing.ArrayLike,
  k: int,
  *,
  bias: jax.typing.ArrayLike | None = None,
  chunk_size: int | None = None,
  class_axis_name: str | None = None,
  num_classes: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """The ``k`` highest scores of each row of a linear classifier, and their classes.

  Equals ``jax.lax.top_k(features @ kernel + bias, k)`` (ties go to the lower
  class index) without the ``(N, C)`` scores: the inference and metrics
  counterpart of the fused losses, with the same memory bound.

  Args:
    features: ``(N, D)`` floating inputs of the classifier.
    kernel: ``(D, C)`` classifier weights.
    k: how many classes per row (static), ``1 <= k <= C``.
    bias: optional ``(C,)`` classifier bias.
    chunk_size: classes per chunk (static); ``None`` picks one.
    class_axis_name: inside ``jax.shard_map``, the mesh axis that splits the
      classes (static): each device holds ``kernel[:, c0:c1]`` and ``bias[c0:c1]``,
      ``features`` and ``labels`` are the same on every device of that axis,
      and labels keep their global class indices. The result is the one-device
      result, on every device. ``None`` (the default): not split.
    num_classes: the real classes, when ``kernel`` has padding columns after
      them (static): columns ``num_classes`` and beyond are never among the
      ``k`` (so ``k <= num_classes``). ``None`` (the default): every column
      is a class.

  Returns:
    ``(values, indices)``, both ``(N, k)``: each row's scores in decreasing
    order and their int32 class indices.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxmargin import linear
    >>> features = jnp.array([[1.0, 2.0]])
    >>> kernel = jnp.array([[0.1, 0.2, 0.4, 0.8], [0.0, 1.0, 0.0, 0.0]])
    >>> values, indices = linear.top_k(features, kernel, 2)
    >>> print(indices, values)
    [[1 3]] [[2.2 0.8]]
  """
  features, kernel, bias = v.array_args(
    "top_k", ("bias",), features=features, kernel=kernel, bias=bias
  )
  return _top_k(
    features,
    kernel,
    bias,
    k=k,
    chunk_size=chunk_size,
    class_axis_name=class_axis_name,
    num_classes=num_classes,
  )
