"""The command line: ``python -m softjax SCORE [SCORE ...]``.

Prints the distribution that each normaliser gives the scores, one row per
normaliser (softmax, sparsemax, entmax15, then α-entmax for each ``--alpha``),
with the support size (the number of nonzero probabilities)::

  $ python -m softjax 2.3 1.1 -0.4 --alpha 1.25
  scores [2.3, 1.1, -0.4], temperature 1
  normaliser       p[0]    p[1]    p[2]  support
  ----------------------------------------------
  softmax        0.7308  0.2201  0.0491      3/3
  sparsemax      1.0000       0       0      1/3
  entmax15       0.8842  0.1158       0      2/3
  entmax α=1.25  0.8154  0.1788  0.0057      3/3

Exact zeros print as ``0``; the support is the number of nonzero entries.
Negative scores such as ``-0.4`` or ``-1e-3`` are read as scores, not options.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import math
import os
import re
import sys
from typing import TextIO

# A token that looks like a negative number ("-0.4", "-1e-3", "-.5"); argparse
# alone would take "-1e-3" for an option.
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _finite_float(text: str) -> float:
  """argparse ``type``: a finite float (``nan`` and ``inf`` refused)."""
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(
      f"not a number: {text.strip()!r}"
    ) from None
  if not math.isfinite(value):
    raise argparse.ArgumentTypeError(f"must be finite, got {text.strip()!r}")
  return value


def _build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m softjax",
    description="Print the distribution that each softjax normaliser "
    "(softmax, sparsemax, entmax15, α-entmax) gives to a few "
    "scores, with the support size of each.",
    epilog="example: python -m softjax 2.3 1.1 -0.4 --alpha 1.25 3",
  )
  parser.add_argument(
    "scores",
    nargs="+",
    type=_finite_float,
    metavar="SCORE",
    help="the scores (logits), e.g. 2.3 1.1 -0.4",
  )
  parser.add_argument(
    "-t",
    "--temperature",
    type=_finite_float,
    default=1.0,
    metavar="T",
    help="positive temperature: the maps are applied to scores / T (default 1)",
  )
  parser.add_argument(
    "-a",
    "--alpha",
    type=_finite_float,
    nargs="+",
    action="extend",
    default=[],
    metavar="A",
    help="also show α-entmax for each α >= 1 given (may be "
    "repeated; put it after the scores)",
  )
  parser.add_argument(
    "--digits",
    type=int,
    default=4,
    metavar="N",
    help="decimals shown (default 4)",
  )
  return parser


def _protect_negative_numbers(argv: Sequence[str]) -> list[str]:
  """Marks negative numbers so that argparse reads them as values.

  argparse treats ``-1e-3`` as an unknown option; a leading space is ignored
  by ``float`` but stops argparse from seeing an option.
  """
  return [f" {arg}" if _NEGATIVE_NUMBER.match(arg) else arg for arg in argv]


def _format_probability(p: float, digits: int) -> str:
  if p == 0.0:
    return "0"  # an exact zero: outside the support
  if p < 0.5 * 10.0**-digits:
    return f"{p:.1e}"  # nonzero, but would print as 0.0000
  return f"{p:.{digits}f}"


def _format_score(value: float) -> str:
  return f"{value:g}"


def compute_rows(
  scores: Sequence[float], temperature: float, alphas: Sequence[float]
) -> list[tuple[str, list[float]]]:
  """``(name, probabilities)`` for each normaliser, in display order."""
  import jax.numpy as jnp  # noqa: PLC0415  (keeps `--help` fast)
  import numpy as np  # noqa: PLC0415

  import softjax  # noqa: PLC0415

  x = jnp.asarray(scores, dtype=jnp.float32)
  maps = [
    ("softmax", lambda v: softjax.softmax(v, temperature=temperature)),
    ("sparsemax", lambda v: softjax.sparsemax(v, temperature=temperature)),
    ("entmax15", lambda v: softjax.entmax15(v, temperature=temperature)),
  ]
  for alpha in alphas:
    maps.append(
      (
        f"entmax α={alpha:g}",
        lambda v, a=alpha: softjax.entmax(v, a, temperature=temperature),
      )
    )
  return [(name, [float(p) for p in np.asarray(f(x))]) for name, f in maps]


def format_rows(
  rows: Sequence[tuple[str, Sequence[float]]], digits: int = 4
) -> str:
  """An aligned table: a column per score, then the support size."""
  n = len(rows[0][1])
  cells = [[_format_probability(p, digits) for p in probs] for _, probs in rows]
  width = max(
    [len(c) for row in cells for c in row] + [digits + 2] + [len(f"p[{n - 1}]")]
  )
  name_width = max(len("normaliser"), *(len(name) for name, _ in rows))
  header = (
    "normaliser".ljust(name_width)
    + "  "
    + "  ".join(f"p[{i}]".rjust(width) for i in range(n))
    + "  "
    + "support"
  )
  lines = [header, "-" * len(header)]
  for (name, probs), row in zip(rows, cells):
    support = sum(p > 0 for p in probs)
    lines.append(
      name.ljust(name_width)
      + "  "
      + "  ".join(c.rjust(width) for c in row)
      + "  "
      + f"{support}/{n}".rjust(len("support"))
    )
  dense = {"softmax", "entmax α=1"}
  if any(name in dense and 0.0 in probs for name, probs in rows):
    lines.append(
      "(softmax is never sparse: its zeros here are float32 underflow)"
    )
  return "\n".join(lines)


def main(
  argv: Sequence[str] | None = None, stdout: TextIO | None = None
) -> int:
  """Runs the command line on ``argv`` (default ``sys.argv[1:]``).

  Returns the exit status: 0 on success, 141 (SIGPIPE's) when the reader
  of the output closes it early (``| head``), without a traceback. Bad
  arguments print a usage message to stderr and raise ``SystemExit(2)``, as
  argparse does.
  """
  stdout = sys.stdout if stdout is None else stdout
  parser = _build_parser()
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parser.parse_args(_protect_negative_numbers(argv))
  if args.temperature <= 0:
    parser.error(
      f"argument -t/--temperature: must be positive, got {args.temperature:g}"
    )
  for alpha in args.alpha:
    if alpha < 1:
      parser.error(f"argument -a/--alpha: α must be >= 1, got {alpha:g}")
  if not 0 <= args.digits <= 12:
    parser.error(f"argument --digits: must be in 0..12, got {args.digits}")
  rows = compute_rows(args.scores, args.temperature, args.alpha)
  scores = ", ".join(_format_score(s) for s in args.scores)
  try:
    print(
      f"scores [{scores}], temperature {_format_score(args.temperature)}",
      file=stdout,
    )
    print(format_rows(rows, args.digits), file=stdout)
    stdout.flush()
  except BrokenPipeError:
    # The reader left (`python -m softjax ... | head -1`): stop quietly, as
    # Unix tools do, with the status of a process ended by SIGPIPE. Python
    # would flush stdout again at exit and print a second BrokenPipeError,
    # so stdout is pointed at /dev/null first.
    if stdout is sys.stdout:
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + 13  # SIGPIPE
  return 0
