"""Test configuration: 8 simulated host devices, set before JAX initialises.

Nothing here names a backend: on a GPU or TPU machine the same suite runs on
the accelerator, and the flag below only affects the host platform.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " " + _FLAG
  ).strip()

from hypothesis import HealthCheck  # noqa: E402
from hypothesis import settings  # noqa: E402
import jax  # noqa: E402  (must come after XLA_FLAGS is set)
import pytest  # noqa: E402

# Property-based tests (tests/test_properties.py): deterministic in CI (the
# same examples every run, no flaky failures) and no per-example deadline
# (the first example of each test pays for compilation). The number of
# examples is set per test; SOFTJAX_HYPOTHESIS_SCALE multiplies it, and
# HYPOTHESIS_PROFILE=explore draws fresh random examples each run.
settings.register_profile(
  "ci",
  deadline=None,
  derandomize=True,
  print_blob=True,
  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
  "explore",
  deadline=None,
  derandomize=False,
  print_blob=True,
  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def n_devices() -> int:
  return jax.local_device_count()
