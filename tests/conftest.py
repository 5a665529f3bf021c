"""Test configuration: 8 simulated host devices, set before JAX initialises.

Nothing here names a backend: on a GPU or TPU machine the same suite runs on
the accelerator, and the flag below only affects the host platform.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

import jax  # noqa: E402  (must come after XLA_FLAGS is set)
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def n_devices() -> int:
  return jax.local_device_count()
