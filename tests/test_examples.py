"""The examples run end to end: one cheap subprocess per script (``--fast``)."""

from __future__ import annotations

import importlib.util
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

# Each example is a subprocess that imports JAX and trains for a while.
pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _need(module: str, package: str) -> None:
  """Skips, naming the package, when an example's optional package is absent.

  The examples' packages are in the ``test`` extra, so CI has them all; a
  machine without one (a GPU machine without dm-haiku) skips its examples
  instead of failing in the subprocess.
  """
  if importlib.util.find_spec(module) is None:
    pytest.skip(
      f"{package} is not installed (no module {module!r}); "
      "pip install '.[examples]' to run this example"
    )


def _run_example(name: str, *args: str) -> str:
  """Runs ``examples/<name> --fast *args``; returns stdout (asserts rc 0)."""
  env = dict(os.environ)
  # Same import path as `python -m pytest` from the repository root.
  env["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
  )
  env["JAX_PLATFORMS"] = "cpu"
  env["MPLBACKEND"] = "Agg"
  proc = subprocess.run(
    [sys.executable, str(ROOT / "examples" / name), "--fast", *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode == 0, (
    f"{name} --fast exited with {proc.returncode}\n"
    f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
  )
  assert not re.search(r"\bnan\b", proc.stdout, re.IGNORECASE), proc.stdout
  return proc.stdout


@pytest.fixture(scope="module")
def quickstart_png(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
  return tmp_path_factory.mktemp("quickstart") / "attention.png"


@pytest.fixture(scope="module")
def quickstart_output(quickstart_png: pathlib.Path) -> str:
  return _run_example(
    "quickstart.py", "--out", str(quickstart_png), "--no-progress"
  )


def test_quickstart_overflow_example(quickstart_output: str) -> None:
  blocks = quickstart_output.split("\n\n")
  overflow = [b for b in blocks if "logits = [1000, 999, 998]" in b]
  assert len(overflow) == 1, quickstart_output
  # The temperature-1 row: softmax([1000, 999, 998]) = [0.665, 0.245, 0.090].
  rows = [
    line
    for line in overflow[0].splitlines()
    if line.lstrip().startswith("1.0 |")
  ]
  assert len(rows) == 1, overflow[0]
  for expected in ("0.665", "0.245", "0.09"):
    assert expected in rows[0], rows[0]
  assert not re.search(r"\bnan\b", quickstart_output, re.IGNORECASE)


# --- examples/flax_linen_attention.py and examples/haiku_attention.py. -------

_FINAL = re.compile(
  r"^final (?P<name>.+?): loss (?P<first>[\d.]+) -> (?P<last>[\d.]+), "
  r"sparsity (?P<sparsity>[\d.]+), weight on flagged (?P<on_flag>[\d.]+)"
  r"(?:, alphas (?P<alphas>[\d. ]+))?$",
  re.MULTILINE,
)


def _run_fast(script: str) -> str:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
  )
  proc = subprocess.run(
    [sys.executable, str(ROOT / "examples" / script), "--fast"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
    check=False,
  )
  assert proc.returncode == 0, (
    f"{script} --fast exited with {proc.returncode}\n"
    f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
  )
  return proc.stdout


def _check_attention_training(output: str, names: set[str]) -> None:
  finals = {m["name"]: m for m in _FINAL.finditer(output)}
  assert set(finals) == names, output
  for name, m in finals.items():
    first, last = float(m["first"]), float(m["last"])
    # Learning happened: the test loss at least halves in the fast run.
    assert last < 0.5 * first, (name, output)
    # Sparse attention: some weights on real tokens are exactly zero, and
    # the flagged token gets more than a uniform share (at most 1/4).
    assert float(m["sparsity"]) > 0.0, (name, output)
    assert float(m["on_flag"]) > 0.25, (name, output)
    if "alpha" in name:
      alphas = [float(a) for a in m["alphas"].split()]
      assert len(alphas) == 4 and all(a > 1.0 for a in alphas), output
      assert len(set(alphas)) > 1, output  # heads learned different alphas
  assert not re.search(r"\bnan\b", output, re.IGNORECASE)


def test_flax_linen_attention_example() -> None:
  _check_attention_training(
    _run_fast("flax_linen_attention.py"), {"entmax15", "learned alpha"}
  )


def test_haiku_attention_example() -> None:
  _need("haiku", "dm-haiku")
  _check_attention_training(
    _run_fast("haiku_attention.py"), {"haiku learned alpha"}
  )


def _comparison_rows(output: str) -> dict[str, list[float]]:
  """The quickstart's table: ``{normaliser: [accuracy, loss, ...]}``."""
  lines = output.splitlines()
  header = next(
    i
    for i, line in enumerate(lines)
    if line.startswith("normaliser") and "sparsity" in line
  )
  rows = {}
  for line in lines[header + 2 :]:
    if line.startswith("-"):
      break
    name, numbers = line[:18].strip(), line[18:].split()
    rows[name] = [float(v.rstrip("s")) for v in numbers]
  return rows


def test_quickstart_training_table(quickstart_output: str) -> None:
  rows = _comparison_rows(quickstart_output)
  assert list(rows) == ["softmax", "entmax15", "entmax (learned α)"], (
    quickstart_output
  )
  for name, (accuracy, loss, _, support, seconds) in rows.items():
    assert 0.0 <= accuracy <= 1.0 and math.isfinite(loss) and loss >= 0, name
    assert 1.0 <= support and seconds > 0, name
  # Softmax weights are never exactly 0; entmax's are, on non-padding keys.
  assert rows["softmax"][2] == 0.0
  assert rows["entmax15"][2] > 0.0
  assert rows["entmax (learned α)"][2] > 0.0
  assert "learned α per head" in quickstart_output


def test_quickstart_png(
  quickstart_output: str, quickstart_png: pathlib.Path
) -> None:
  assert f"attention maps written to {quickstart_png}" in quickstart_output
  data = quickstart_png.read_bytes()
  assert len(data) > 1000 and data.startswith(b"\x89PNG\r\n\x1a\n")


def test_haiku_classifier() -> None:
  _need("haiku", "dm-haiku")
  out = _run_example("haiku_classifier.py")
  accuracy = float(re.search(r"test accuracy ([0-9.]+)", out).group(1))
  assert accuracy > 0.6, out  # 5 classes: chance is 0.2
  assert "exact zeros" in out
  # The printed sparsemax distributions contain exact zeros ("0" cells).
  table = out.split("sparsemax predictions")[1].splitlines()[2:]
  assert any(" 0 " in f"{line} " for line in table), out


def test_gumbel_vae() -> None:
  out = _run_example("gumbel_vae.py")
  match = re.search(r"start ([0-9.]+), end ([0-9.]+)", out)
  start, end = float(match.group(1)), float(match.group(2))
  assert end < 0.8 * start, out  # reconstruction improved
  used = int(re.search(r"codes used: (\d+) of", out).group(1))
  assert used >= 4, out


def test_gradient_check() -> None:
  out = _run_example("gradient_check.py")
  assert "all checks passed" in out, out
  assert "jax.hessian == finite differences" in out
  assert "can't apply forward-mode autodiff" in out


def test_long_context():
  out = _run_example("long_context.py")
  sizes = dict(
    re.findall(
      r"^\s+(blockwise|dense)\s+attention:\s+([\d,.]+) MiB", out, re.MULTILINE
    )
  )
  assert set(sizes) == {"blockwise", "dense"}, out
  block, dense = (
    float(sizes[k].replace(",", "")) for k in ("blockwise", "dense")
  )
  assert block < dense / 4, out  # the dense step holds the scores
  match = re.search(
    r"final: train loss ([\d.]+) -> ([\d.]+), test loss "
    r"([\d.]+), test accuracy ([\d.]+)",
    out,
  )
  assert match, out
  assert all(math.isfinite(float(x)) for x in match.groups()), out


def test_vocab_lm() -> None:
  out = _run_example("vocab_lm.py")
  m = re.search(r"final: held-out loss ([0-9.]+) -> ([0-9.]+)", out)
  assert m, out
  assert float(m.group(2)) < 0.6 * float(m.group(1)), out  # it learned
  memory = re.findall(r"materialised ([0-9.]+) MiB, fused ([0-9.]+) MiB", out)
  assert len(memory) == 2, out
  full, fused = (float(v) for v in memory[-1])  # 4096 tokens, V = 32768
  assert 0 < fused <= full / 16, out
