"""Test configuration: 8 simulated host devices, set before JAX initialises.

Nothing here names a backend: on a GPU or TPU machine the same suite runs on
the accelerator, and the flag below only affects the host platform. The
multi-device tests take their devices from ``tests/_devices.py``: the
accelerators when there are 8, else these 8 host devices.

Two tiers, split by the ``slow`` marker (see pyproject.toml): the full suite,
``pytest -n 2 tests``, and the unit tier (a few minutes),
``pytest -n 2 -m "not slow" tests``. Seeded inputs: ``tests/_inputs.py``.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " " + _FLAG
  ).strip()
# On a GPU, JAX reserves 75% of its memory per process at start-up, so a
# second pytest-xdist worker (or an example run in a subprocess) would run out
# of memory; allocating on demand lets them share it. No effect on the CPU.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import _devices  # noqa: E402
import _tiers  # noqa: E402
from hypothesis import HealthCheck  # noqa: E402
from hypothesis import settings  # noqa: E402
import jax  # noqa: E402  (must come after XLA_FLAGS is set)
import pytest  # noqa: E402

# The tests hold float32 results to float32 tolerances. XLA:GPU computes
# float32 matmuls (the attention einsums) in TF32 by default, and TPUs in
# bfloat16 passes, both ~1e-3 relative; full float32 dots make the same
# assertions hold there. XLA:CPU's dots are full float32 anyway, so the CPU
# run is left exactly as it was.
if jax.default_backend() != "cpu":
  jax.config.update("jax_default_matmul_precision", "float32")

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
def devices() -> list[jax.Device]:
  """The devices that pmap tests map over (see tests/_devices.py)."""
  return _devices.several()


@pytest.fixture(scope="session")
def n_devices(devices: list[jax.Device]) -> int:
  return len(devices)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  # The slow marks that tests/_tiers.py keeps for other files (UNIT_IDS).
  _tiers.mark_unit_ids(items)
