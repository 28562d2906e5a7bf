"""Makes this directory a suite of its own, for a process with 8 devices.

The main test process initialises JAX with one CPU device before any test
runs, and XLA reads ``--xla_force_host_platform_device_count`` only when it
starts, so these checks cannot share that process. ``tests/test_multidevice.py``
runs them in a fresh one, with ``XLA_FLAGS`` asking for 8 virtual CPU devices
and ``JAXMARGIN_MULTIDEVICE=1``. Without that variable (the main run, or a
plain ``pytest tests/multidevice``) nothing here is collected. By hand::

  JAXMARGIN_MULTIDEVICE=1 XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      JAX_PLATFORMS=cpu python -m pytest tests/multidevice -p no:xdist -o addopts= -q
"""

import os

ENABLE_VARIABLE = "JAXMARGIN_MULTIDEVICE"

if os.environ.get(ENABLE_VARIABLE) != "1":
  collect_ignore_glob = ["*"]
else:
  import jax

  # tests/conftest.py turns x64 on for the torch comparisons. These checks
  # start from JAX's default 32-bit mode instead, as on a TPU, so that nothing
  # here can lean on x64: jaxmargin is first imported with x64 off, and the
  # float64 checks opt in with ``jax.enable_x64``.
  jax.config.update("jax_enable_x64", False)
