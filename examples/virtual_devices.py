"""Virtual CPU devices for the multi-device examples on a machine without accelerators.

XLA reads its flags once, when JAX first uses a device, so :func:`request`
must run before anything imports JAX. The flag concerns the CPU platform
only: on a machine with several GPUs or TPUs the examples use those,
unchanged. A device count already in ``XLA_FLAGS`` wins.
"""

from __future__ import annotations

import os

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def request(count: int = 8) -> None:
  """Asks XLA for ``count`` CPU devices, unless ``XLA_FLAGS`` already says how many."""
  flags = os.environ.get("XLA_FLAGS", "")
  if DEVICE_COUNT_FLAG not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {DEVICE_COUNT_FLAG}={count}".strip()
