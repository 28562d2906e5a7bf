"""Integer targets of any dtype brought to int32 without changing their meaning."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def canonical_indices(target: jax.Array, num_classes: int) -> jax.Array:
  """Casts class indices to int32, saturating to -2 and ``num_classes``.

  Values below -1 become -2 and values above ``num_classes - 1`` become
  ``num_classes``, so that a cast from a wider or unsigned dtype can neither
  wrap an invalid index into the valid range nor turn one into the -1 padding.
  """
  if jnp.issubdtype(target.dtype, jnp.unsignedinteger):
    return jnp.minimum(target, num_classes).astype(jnp.int32)
  return jnp.clip(target, -2, num_classes).astype(jnp.int32)
