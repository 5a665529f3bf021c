"""The devices that the multi-device tests (pmap, shard_map, meshes) run on.

On a CPU-only machine these are the 8 simulated host devices of
``conftest.py``, the default backend, exactly as before. A machine with one
accelerator (one GPU) has a single default device, but the host platform
still has its 8 simulated devices: the multi-device tests run there instead
of being skipped, asserting the same things. A machine with 8 or more
accelerators uses its accelerators.
"""

from __future__ import annotations

import jax


def several(n: int = 8) -> list[jax.Device]:
  """All devices of the default backend if it has ``n``, else the host's.

  Falls back to the default backend's devices when the host platform is not
  available (``JAX_PLATFORMS`` without ``cpu``) or has fewer than ``n``;
  tests that need ``n`` then skip, saying so.
  """
  devices = jax.devices()
  if len(devices) >= n:
    return devices
  try:
    host = jax.devices("cpu")
  except RuntimeError:  # JAX_PLATFORMS excludes the host platform
    return devices
  return host if len(host) >= n else devices
