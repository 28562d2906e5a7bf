"""What the tests need from JAX that moved between the versions jaxmargin supports (0.6.2 on)."""

from __future__ import annotations

import jax
import jax.experimental

# ``with enable_x64(flag):`` turns 64-bit types on or off inside the block:
# ``jax.enable_x64`` from JAX 0.7, ``jax.experimental.enable_x64`` before.
enable_x64 = getattr(jax, "enable_x64", None)
if enable_x64 is None:
  enable_x64 = jax.experimental.enable_x64
