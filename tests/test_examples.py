"""The examples run end to end: one cheap subprocess per script."""

from __future__ import annotations

import os
import re
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.py"


@pytest.fixture(scope="module")
def quickstart_output() -> str:
  env = dict(os.environ)
  # Same import path as `python -m pytest` from the repository root.
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
  proc = subprocess.run(
      [sys.executable, str(QUICKSTART), "--fast"], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, (
      f"quickstart.py --fast exited with {proc.returncode}\n"
      f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
  return proc.stdout


def test_quickstart_overflow_example(quickstart_output: str) -> None:
  blocks = quickstart_output.split("\n\n")
  overflow = [b for b in blocks if "logits = [1000, 999, 998]" in b]
  assert len(overflow) == 1, quickstart_output
  # The temperature-1 row: softmax([1000, 999, 998]) = [0.665, 0.245, 0.090].
  rows = [line for line in overflow[0].splitlines()
          if line.lstrip().startswith("1.0 |")]
  assert len(rows) == 1, overflow[0]
  for expected in ("0.665", "0.245", "0.09"):
    assert expected in rows[0], rows[0]
  assert not re.search(r"\bnan\b", quickstart_output, re.IGNORECASE)
