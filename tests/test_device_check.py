"""``benchmarks/device_check.sh`` cannot rot between GPU runs.

Its ``--dry-run`` goes through every stage on the CPU (tiny shapes, one
repeat, ``pytest --collect-only``) and writes the same files as a GPU run;
the helpers that read pytest's log are checked on logs written here.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))

import device_report  # noqa: E402  (benchmarks/ is not a package)

FILES = {
  "device_check.log",
  "env.md",
  "dense.md",
  "sparse.md",
  "solver_steps.md",
  "tests.txt",
  "gpu.md",
}


def _run(
  *args: str, python: str = sys.executable, timeout: float = 300
) -> subprocess.CompletedProcess:
  if shutil.which("bash") is None or shutil.which("timeout") is None:
    pytest.skip("bash and GNU timeout are needed to run device_check.sh")
  env = dict(os.environ, PYTHON=python)
  env.pop("SOFTJAX_DEVICE_OUT", None)
  return subprocess.run(
    ["bash", str(SCRIPT), *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
    check=False,
  )


@pytest.fixture(scope="module")
def dry_run(
  tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess, pathlib.Path]:
  out = tmp_path_factory.mktemp("device_check")
  docs_page = ROOT / "docs" / "benchmarks" / "gpu.md"
  before = docs_page.read_bytes() if docs_page.exists() else None
  proc = _run("--dry-run", "--write-docs", str(out))
  # A dry run never writes the docs page, even when asked to.
  after = docs_page.read_bytes() if docs_page.exists() else None
  assert after == before
  return proc, out


@pytest.mark.slow  # the dry run: every stage, on the CPU
def test_dry_run_passes_and_writes_every_file(dry_run) -> None:
  proc, out = dry_run
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert {p.name for p in out.iterdir()} == FILES
  log = (out / "device_check.log").read_text()
  for stage in ("env", "dense", "sparse", "solver steps", "tests", "test log"):
    assert f"::: {stage}: ok" in log, log
  assert log.rstrip().endswith("::: device check passed"), log[-2000:]
  assert "docs/benchmarks/gpu.md left alone" in log


@pytest.mark.slow  # the dry run: every stage, on the CPU
def test_dry_run_tables(dry_run) -> None:
  _, out = dry_run
  env = (out / "env.md").read_text()
  assert "jax.devices(): [" in env and "- jax " in env
  assert "softjax.sparsemax([2.3, 1.1, -0.4]) = [1.0, 0.0, 0.0]" in env
  dense = (out / "dense.md").read_text()
  # --shapes and --extra-shapes both reached the suite.
  for row in (
    "| `softmax` | (8, 256) |",
    "| `softmax` | (4, 512) |",
    "| `log_softmax` | (4, 512) |",
  ):
    assert row in dense, dense
  sparse = (out / "sparse.md").read_text()
  assert "## (8, 256)" in sparse
  for name in (
    "jax.nn.softmax",
    "softjax.sparsemax",
    "softjax.entmax15",
    "softjax.entmax(alpha=1.3)",
  ):
    assert f"| `{name}" in sparse, sparse
  steps = (out / "solver_steps.md").read_text()
  assert (
    "| n_iter=1 (ms) | n_iter=2 (ms) | n_iter=4 (ms) | n_iter=8 (ms) |" in steps
  )
  assert "| `sparsemax (α=2)` |" in steps
  assert "| `entmax(α=3), bisection` |" in steps
  tests = device_report.read_test_log((out / "tests.txt").read_text())
  assert tests.finished and "tests collected" in tests.summary


@pytest.mark.slow  # the dry run: every stage, on the CPU
def test_dry_run_report_page(dry_run) -> None:
  _, out = dry_run
  page = (out / "gpu.md").read_text()
  assert page.startswith("# softjax device check: DRY RUN")
  assert "| dense | ok |" in page and "| tests | ok |" in page
  # The parts follow, their headings one level down.
  for heading in (
    "## Environment",
    "## softjax dense benchmarks",
    "## softjax sparse benchmarks",
    "## softjax solver: time per step",
    "### (8, 256)",
  ):
    assert f"\n{heading}\n" in page, heading
  assert "\n# softjax dense" not in page


def test_failed_stages_do_not_stop_the_run(tmp_path: pathlib.Path) -> None:
  proc = _run(str(tmp_path), python="false", timeout=60)
  assert proc.returncode == 1
  log = (tmp_path / "device_check.log").read_text()
  for stage in ("env", "dense", "sparse", "solver steps", "tests", "test log"):
    assert f"::: {stage}: FAILED (exit 1)" in log, log
  assert "::: device check FAILED" in log


def test_only_runs_the_stages_named(tmp_path: pathlib.Path) -> None:
  proc = _run(
    "--only", "dense,tests", str(tmp_path), python="false", timeout=60
  )
  assert proc.returncode == 1
  log = (tmp_path / "device_check.log").read_text()
  stages = [
    line.split(":")[3].strip()
    for line in log.splitlines()
    if line.startswith("::: ") and ": FAILED" in line
  ]
  assert stages == ["env", "dense", "tests", "test log"], log


@pytest.mark.parametrize(
  "args", [("--gpu",), ("--only", "dense,gpu"), ("--only", ""), ("--only",)]
)
def test_bad_options_are_errors(tmp_path: pathlib.Path, args) -> None:
  proc = _run(*args, str(tmp_path), timeout=30)
  assert proc.returncode == 2, proc.stderr
  assert "unknown option" in proc.stderr or "--only takes" in proc.stderr


LOG = (
  "\n".join(
    [
      "[gw0] [ 50%] PASSED tests/test_dense.py::test_a",
      "[gw1] [100%] SKIPPED tests/test_examples.py::test_haiku_classifier",
      "=" * 27 + " short test summary info " + "=" * 28,
      "SKIPPED [1] tests/test_examples.py:26: dm-haiku is not installed "
      "(no module 'haiku'); pip install '.[examples]' to run this example",
      "SKIPPED [2] tests/test_losses.py:258: could not import 'entmax': "
      "No module named 'entmax'",
      "SKIPPED [1] tests/test_sharding.py:22: needs 8 devices "
      "(see tests/conftest.py)",
      "FAILED tests/test_dense.py::test_b - AssertionError: boom",
      "=" * 18
      + " 1 failed, 1 passed, 4 skipped in 12.34s (0:00:12) "
      + "=" * 18,
    ]
  )
  + "\n"
)


def test_log_reader_sorts_skips_and_failures() -> None:
  log = device_report.read_test_log(LOG)
  assert log.finished
  assert log.summary == "1 failed, 1 passed, 4 skipped in 12.34s (0:00:12)"
  assert log.failures == [
    "FAILED tests/test_dense.py::test_b - AssertionError: boom"
  ]
  assert len(log.allowed_skips) == 2
  assert log.other_skips == [
    "1 × tests/test_sharding.py:22: needs 8 devices (see tests/conftest.py)"
  ]
  report = "\n".join(device_report.describe_tests(log))
  assert "**skipped for another reason**" in report


def test_log_reader_flags_a_killed_run(tmp_path: pathlib.Path) -> None:
  log = device_report.read_test_log(LOG.split("=====")[0])
  assert not log.finished and log.summary is None
  path = tmp_path / "tests.txt"
  path.write_text("[gw0] [ 50%] PASSED tests/test_dense.py::test_a\n")
  assert device_report.main(["tests", str(path)]) == 1
  path.write_text(
    "3 passed, 1 skipped in 2.00s\nSKIPPED [1] t.py:1: could "
    "not import 'haiku': No module named 'haiku'\n"
  )
  assert device_report.main(["tests", str(path)]) == 0
