"""Test configuration: float64 is needed to compare with torch at 1e-9."""

import jax

jax.config.update("jax_enable_x64", True)
