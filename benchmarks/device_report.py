"""Helpers of ``benchmarks/device_check.sh``: environment, test log, report.

Usage::

  python benchmarks/device_report.py env [--expect-accelerator] [--out FILE]
  python benchmarks/device_report.py tests PYTEST_LOG
  python benchmarks/device_report.py assemble --dir DIR [--stage N|S|SECS]...
                                     [--command TEXT] [--dry-run]

``env`` prints (and writes as markdown) the device, the versions,
``jax.devices()``, the optional packages found or missing, and one call of
each normaliser on the default device; with ``--expect-accelerator`` it
fails when JAX's default backend is the CPU.

``tests`` reads a pytest log and fails when a test was skipped for any
reason other than a missing optional package (the device run must skip
nothing else), printing the summary line, failures and skips.

``assemble`` joins ``env.md``, ``dense.md``, ``sparse.md``,
``solver_steps.md`` and the test summary of ``tests.txt`` from ``DIR`` into
``DIR/gpu.md``, with the stages' outcomes; headings of the parts move one
level down.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import os
from pathlib import Path
import platform
import re
import sys

# Optional packages: (import name, distribution name, what needs it).
OPTIONAL = [
  ("flax", "flax", "tests/test_attention.py, examples"),
  ("optax", "optax", "tests/test_losses.py, examples, bench.py"),
  ("chex", "chex", "softjax"),
  ("hypothesis", "hypothesis", "tests/test_properties.py"),
  ("xdist", "pytest-xdist", "pytest -n"),
  ("absl", "absl-py", "tests (parameterized)"),
  ("matplotlib", "matplotlib", "examples/quickstart.py"),
  ("tqdm", "tqdm", "examples/quickstart.py"),
  ("haiku", "dm-haiku", "examples/haiku_*.py"),
  ("mkdocs", "mkdocs", "tests/test_docs.py (site build)"),
  ("griffe", "griffe", "tests/test_docs.py"),
  ("torch", "torch", "PyTorch rows of bench.py, tests/test_losses.py"),
  ("entmax", "entmax", "PyTorch rows of bench.py, tests/test_losses.py"),
]

# Skip reasons that name a missing optional package (pytest.importorskip's
# "could not import", tests/test_docs.py's and tests/test_examples.py's
# "is not installed").
_MISSING_PACKAGE = re.compile(
  r"could not import|is not installed|"
  r"No module named"
)
_SKIPPED = re.compile(r"^SKIPPED \[(\d+)\] (.+?): (.*)$")
# pytest's last line, with or without its "=" border: "3 passed, 1 skipped
# in 2.01s (0:00:02)", "1126 tests collected in 5.20s", "no tests ran in ...".
_SUMMARY = re.compile(r"^(?:\d+ [a-z]+.*|no tests ran.*) in \d+(?:\.\d+)?s\b")
_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)")


def _version(dist: str) -> str | None:
  try:
    return importlib.metadata.version(dist)
  except importlib.metadata.PackageNotFoundError:
    return None


def _found(module: str, dist: str) -> str:
  """The package's version, "present" (no metadata: a zip) or "missing"."""
  if importlib.util.find_spec(module) is None:
    return "missing"
  return _version(dist) or "present"


def environment() -> tuple[list[str], bool]:
  """Markdown lines describing this machine, and whether JAX sees no
  accelerator (its default backend is the CPU)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jaxlib  # pylint: disable=import-outside-toplevel

  devices = jax.devices()
  try:
    host = len(jax.devices("cpu"))
  except RuntimeError as e:
    host = f"none ({e})"
  lines = [
    "- date: "
    + datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    f"- Python {platform.python_version()} ({sys.executable}), "
    f"{os.cpu_count()} CPUs",
    f"- jax {jax.__version__}, jaxlib {jaxlib.__version__}",
    f"- default backend: {jax.default_backend()}",
    f"- jax.devices(): {devices}",
    f"- device kind: {devices[0].device_kind}",
    f"- host (cpu) devices: {host} (the test suite asks for 8)",
  ]
  stats = getattr(devices[0], "memory_stats", lambda: None)()
  if stats and "bytes_limit" in stats:
    lines.append(
      f"- device memory limit: {stats['bytes_limit'] / 2**30:.1f} GiB"
    )
  for var in (
    "JAX_PLATFORMS",
    "XLA_FLAGS",
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "PYTHONPATH",
  ):
    if os.environ.get(var):
      lines.append(f"- {var}={os.environ[var]}")
  packages = []
  for module, dist, _ in OPTIONAL:
    packages.append(f"{dist} {_found(module, dist)}")
    if module == "torch" and packages[-1].split()[-1] != "missing":
      import torch  # pylint: disable=import-outside-toplevel

      if torch.cuda.is_available():
        packages[-1] += f" (CUDA: {torch.cuda.get_device_name()})"
      else:
        packages[-1] += " (no CUDA device)"
  lines.append("- packages: " + ", ".join(packages))
  return lines, jax.default_backend() == "cpu"


def smoke() -> list[str]:
  """One call of each normaliser on the default device."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  root = Path(__file__).resolve().parent.parent
  sys.path.insert(0, str(root))
  import softjax  # pylint: disable=import-outside-toplevel

  x = jnp.array([2.3, 1.1, -0.4])
  lines = []
  for name in ("softmax", "sparsemax", "entmax15"):
    out = getattr(softjax, name)(x)
    lines.append(
      f"- softjax.{name}([2.3, 1.1, -0.4]) = "
      f"{[round(float(v), 4) for v in out]} on "
      f"{sorted(out.devices())[0]}"
    )
  return lines


@dataclasses.dataclass
class PytestLog:
  """What a pytest log says: the summary line, failures and skips."""

  summary: str | None
  failures: list[str]
  allowed_skips: list[str]
  other_skips: list[str]
  finished: bool


def read_test_log(text: str) -> PytestLog:
  summary, failures, allowed, other = None, [], [], []
  for line in text.splitlines():
    bare = line.strip().strip("=").strip()
    if _SUMMARY.match(bare):
      summary = bare
    m = _FAILED.match(line)
    if m:
      failures.append(line.strip())
    m = _SKIPPED.match(line.strip())
    if m:
      count, where, reason = m.groups()
      entry = f"{count} × {where}: {reason}"
      (allowed if _MISSING_PACKAGE.search(reason) else other).append(entry)
  return PytestLog(summary, failures, allowed, other, summary is not None)


def describe_tests(log: PytestLog) -> list[str]:
  lines = [f"- pytest: {log.summary or 'no summary line (killed or crashed)'}"]
  lines += [f"- {f}" for f in log.failures[:40]]
  if len(log.failures) > 40:
    lines.append(f"- ... and {len(log.failures) - 40} more failures")
  lines += [
    f"- skipped, optional package missing: {s}" for s in log.allowed_skips
  ]
  lines += [f"- **skipped for another reason**: {s}" for s in log.other_skips]
  return lines


def _demoted(text: str) -> str:
  return "\n".join(
    "#" + line if line.startswith("#") else line for line in text.splitlines()
  )


def assemble(
  folder: Path, stages: Sequence[str], command: str, dry_run: bool
) -> str:
  """The one-page report (gpu.md) from the stage files in ``folder``."""
  title = (
    "# softjax on an accelerator"
    if not dry_run
    else "# softjax device check: DRY RUN (tiny shapes, not benchmarks)"
  )
  parts = [
    title,
    "",
    f"Command: `{command}`",
    "",
    "## Stages",
    "",
    "| stage | outcome | seconds |",
    "|---|---|---|",
  ]
  for stage in stages:
    name, status, seconds = (stage.split("|") + ["", ""])[:3]
    parts.append(f"| {name} | {status} | {seconds} |")
  parts.append("")
  tests = folder / "tests.txt"
  if tests.is_file():
    parts += ["## Test suite", ""]
    parts += describe_tests(read_test_log(tests.read_text(errors="replace")))
    parts.append("")
  for name, heading in (
    ("env.md", "## Environment"),
    ("dense.md", None),
    ("sparse.md", None),
    ("solver_steps.md", None),
  ):
    path = folder / name
    if not path.is_file():
      parts += [f"({name} was not written: see device_check.log)", ""]
      continue
    text = path.read_text()
    parts += ([heading, "", text] if heading else [_demoted(text)]) + [""]
  return "\n".join(parts).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="command", required=True)
  e = sub.add_parser("env")
  e.add_argument("--expect-accelerator", action="store_true")
  e.add_argument("--out", type=Path, default=None)
  t = sub.add_parser("tests")
  t.add_argument("log", type=Path)
  a = sub.add_parser("assemble")
  a.add_argument("--dir", type=Path, required=True)
  a.add_argument(
    "--stage",
    action="append",
    default=[],
    help="NAME|OUTCOME|SECONDS, once per stage",
  )
  a.add_argument("--command", default="bash benchmarks/device_check.sh")
  a.add_argument("--dry-run", action="store_true")
  args = p.parse_args(argv)

  if args.command == "env":
    lines, on_cpu = environment()
    lines += smoke()
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    if args.out is not None:
      args.out.write_text(text, encoding="utf-8")
    if on_cpu and args.expect_accelerator:
      print(
        "JAX's default backend is the CPU: no accelerator found.",
        file=sys.stderr,
      )
      return 1
    return 0
  if args.command == "tests":
    log = read_test_log(args.log.read_text(errors="replace"))
    print("\n".join(describe_tests(log)), flush=True)
    return 0 if log.finished and not log.other_skips else 1
  text = assemble(args.dir, args.stage, args.command, args.dry_run)
  (args.dir / "gpu.md").write_text(text, encoding="utf-8")
  print(f"[written to {args.dir / 'gpu.md'}]", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
