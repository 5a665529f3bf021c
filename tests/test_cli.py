"""``python -m softjax``: the normalisers' table, checked against closed forms.

Most tests call :func:`softjax._cli.main` in-process (fast); one runs the real
``python -m softjax`` in a subprocess.
"""

from __future__ import annotations

import io
import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softjax import _cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCORES = ["2.3", "1.1", "-0.4"]


def _run(argv: list[str]) -> str:
  out = io.StringIO()
  assert _cli.main(argv, stdout=out) == 0
  return out.getvalue()


def _table(text: str) -> dict[str, tuple[list[float], str]]:
  """Parses the table: ``{name: (probabilities, "k/n")}``."""
  lines = text.splitlines()
  header = next(
    i for i, line in enumerate(lines) if line.startswith("normaliser")
  )
  n = lines[header].count("p[")
  rows = {}
  for line in lines[header + 2 :]:
    if line.startswith("("):  # a footnote
      continue
    fields = line.split()
    name = " ".join(fields[: -n - 1])
    rows[name] = ([float(f) for f in fields[-n - 1 : -1]], fields[-1])
  return rows


def _entmax15_two_support(a: float, b: float) -> tuple[float, float]:
  """1.5-entmax of two scores a > b when both are in the support.

  p_i = (x_i / 2 - τ)², so with u = a/2 - τ and d = (a - b) / 2:
  u² + (u - d)² = 1, i.e. u = (d + sqrt(2 - d²)) / 2.
  """
  d = (a - b) / 2
  u = (d + math.sqrt(2 - d * d)) / 2
  return u * u, (u - d) ** 2


def test_rows_and_order() -> None:
  rows = _table(_run(SCORES + ["--alpha", "1.25", "3"]))
  assert list(rows) == [
    "softmax",
    "sparsemax",
    "entmax15",
    "entmax α=1.25",
    "entmax α=3",
  ]
  for probs, _ in rows.values():
    assert sum(probs) == pytest.approx(1.0, abs=2e-4)


def test_softmax_matches_jax_nn() -> None:
  rows = _table(_run(SCORES + ["--digits", "6"]))
  expected = jax.nn.softmax(jnp.array([2.3, 1.1, -0.4]))
  np.testing.assert_allclose(rows["softmax"][0], expected, atol=1e-6)
  assert rows["softmax"][1] == "3/3"


def test_sparsemax_closed_form() -> None:
  # Sorted z = (2.3, 1.1, -0.4): 1 + 2 * 1.1 = 3.2 < 2.3 + 1.1 = 3.4, so the
  # support is {0}, τ = 2.3 - 1 = 1.3 and sparsemax = [1, 0, 0].
  rows = _table(_run(SCORES))
  assert rows["sparsemax"] == ([1.0, 0.0, 0.0], "1/3")
  # (0.75, 0.5, -1): support {0, 1}, τ = (0.75 + 0.5 - 1) / 2 = 0.125.
  rows = _table(_run(["0.75", "0.5", "-1"]))
  assert rows["sparsemax"] == ([0.625, 0.375, 0.0], "2/3")


def test_temperature() -> None:
  # sparsemax(x / 2) with x / 2 = (1.15, 0.55, -0.2): support {0, 1},
  # τ = (1.15 + 0.55 - 1) / 2 = 0.35, p = (0.8, 0.2, 0).
  rows = _table(_run(SCORES + ["--temperature", "2"]))
  assert rows["sparsemax"] == ([0.8, 0.2, 0.0], "2/3")
  expected = jax.nn.softmax(jnp.array([2.3, 1.1, -0.4]) / 2)
  np.testing.assert_allclose(rows["softmax"][0], expected, atol=1e-4)


def test_entmax15_closed_form() -> None:
  rows = _table(_run(SCORES + ["--digits", "6"]))
  p0, p1 = _entmax15_two_support(2.3, 1.1)
  # The third entry is out: -0.4 / 2 - τ < 0, with τ = 1.15 - sqrt(p0).
  assert -0.2 - (1.15 - math.sqrt(p0)) < 0
  probs, support = rows["entmax15"]
  np.testing.assert_allclose(probs, [p0, p1, 0.0], atol=2e-6)
  assert probs[2] == 0.0 and support == "2/3"


def test_alpha_rows() -> None:
  rows = _table(_run(SCORES + ["--alpha", "2", "--alpha", "1", "1.25"]))
  assert rows["entmax α=2"] == rows["sparsemax"]  # α = 2 is sparsemax
  np.testing.assert_allclose(
    rows["entmax α=1"][0], rows["softmax"][0], atol=1e-4
  )  # α = 1 is softmax
  # Docstring value of softjax.entmax(x, 1.25), full support.
  assert rows["entmax α=1.25"] == ([0.8154, 0.1788, 0.0057], "3/3")


@pytest.mark.parametrize(
  "argv",
  [
    ["-1e-3", "2", "-0.5"],  # not matched by argparse's own pattern
    ["-.5", "1"],
    ["1", "-2", "-3", "-t", "0.5"],
  ],
)
def test_negative_numbers_are_scores(argv: list[str]) -> None:
  text = _run(argv)
  n = sum(1 for a in argv[:3] if a not in ("-t",))
  assert _table(text)["softmax"][1].endswith(f"/{n}")
  assert "scores [" in text


def test_underflow_note() -> None:
  text = _run(["100", "0", "-100"])
  assert _table(text)["softmax"][1] == "1/3"
  assert "underflow" in text


@pytest.mark.parametrize(
  "argv, message",
  [
    (["2.3", "abc"], "not a number: 'abc'"),
    (["1", "nan"], "must be finite"),
    (["1", "2", "--temperature", "0"], "must be positive"),
    (["1", "2", "--alpha", "0.5"], "must be >= 1"),
    ([], "required"),
  ],
)
def test_errors(
  argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
  with pytest.raises(SystemExit) as exit_info:
    _cli.main(argv)
  assert exit_info.value.code == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert message in captured.err
  assert "usage: python -m softjax" in captured.err


@pytest.mark.slow  # a subprocess that imports JAX
def test_python_dash_m() -> None:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
  )
  env["JAX_PLATFORMS"] = "cpu"
  proc = subprocess.run(
    [sys.executable, "-m", "softjax", *SCORES, "--alpha", "1.25"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr
  rows = _table(proc.stdout)
  assert rows["sparsemax"] == ([1.0, 0.0, 0.0], "1/3")
  assert rows["entmax15"][1] == "2/3"
  bad = subprocess.run(
    [sys.executable, "-m", "softjax", "1", "abc"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
    check=False,
  )
  assert bad.returncode == 2
  assert "not a number: 'abc'" in bad.stderr and bad.stdout == ""


class _ClosedPipe(io.StringIO):
  """A stdout whose reader has gone: every write raises BrokenPipeError."""

  def write(self, text: str) -> int:
    raise BrokenPipeError(32, "Broken pipe")


def test_closed_pipe_exits_quietly(capsys: pytest.CaptureFixture) -> None:
  """``python -m softjax ... | head -1``: no traceback, SIGPIPE's status."""
  assert _cli.main(SCORES, stdout=_ClosedPipe()) == 141
  assert capsys.readouterr().err == ""


@pytest.mark.slow  # a subprocess that imports JAX
def test_python_dash_m_into_a_closed_pipe() -> None:
  """The real pipe: the reader closes it after one line."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
  )
  env["JAX_PLATFORMS"] = "cpu"
  many = ["--alpha", *(f"1.{i}" for i in range(1, 10))]
  proc = subprocess.Popen(
    [sys.executable, "-m", "softjax", *SCORES, *many],
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
  )
  proc.stdout.readline()
  proc.stdout.close()  # as `head -1` does
  err = proc.stderr.read().decode()
  proc.stderr.close()
  assert proc.wait(timeout=120) in (0, 141)
  assert "Traceback" not in err and "BrokenPipeError" not in err, err
