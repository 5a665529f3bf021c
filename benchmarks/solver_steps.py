"""Where the threshold solver's forward time goes: time against its step cap.

Usage::

  python benchmarks/solver_steps.py [--shapes 512x4096,...] [--alphas 2,3]
                                    [--repeats N] [--quick] [--out DIR]

softjax's sparse maps find their threshold with a ``lax.while_loop``
(``softjax/_core/solver.py``): one pass over the rows at the start point, then
at most ``n_iter - 1`` loop iterations, each one fused pass with one
reduction. Rows of at least 256 entries first solve a 16 times smaller
problem (their block maxima) with the same cap. This script times the
forward pass of sparsemax, entmax15, entmax(α=1.3) and entmax(α=3) with
``n_iter`` = 1, 2, 4, 8 and the default (30), interleaved with
``jax.nn.softmax`` on the same input, and derives the cost of one more
unit of ``n_iter``. On XLA:CPU a loop iteration is one more pass over the
data; on a GPU it may instead be dominated by what every iteration pays
whatever the row length (kernel launches, the loop condition's trip to the
host). That is what decides whether a fused solver kernel would pay.

The loop stops early once the rows have converged, so a larger cap only
costs time while the rows still need it. The column "same as default from"
gives the smallest cap whose output equals the default's bit for bit (the
loop had converged); the per-step cost is fitted only over caps below it,
where every allowed iteration ran. α = 3 bisects (no warm start, no early
secant convergence): it shows the bare cost of an iteration.

Results are printed as markdown and written to ``<out>/solver_steps.md``.
``--quick`` (3 repeats, first shape only) writes no file unless ``--out``
is given.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import functools
from pathlib import Path
import statistics
import sys

# bench.py lies beside this file: `python benchmarks/solver_steps.py` puts
# benchmarks/ on the path, and bench puts the checkout's softjax on it.
import bench  # noqa: E402
import jax
import numpy as np
import timing  # noqa: E402  (benchmarks/timing.py)

import softjax  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

SHAPES = [(512, 4096), (64, 32768), (8, 262144), (32768, 512)]
CAPS = (1, 2, 4, 8, None)  # None: the default cap (30 in float32)
FUNCTIONS = {
  "sparsemax (α=2)": 2.0,
  "entmax15 (α=1.5)": 1.5,
  "entmax(α=1.3)": 1.3,
  "entmax(α=3), bisection": 3.0,
}
METHOD = (
  "Forward pass only (the backward pass does not iterate). Each function "
  "is `jax.jit(lambda x: softjax.entmax(x, alpha, n_iter=k))` for the "
  "listed α (sparsemax is α = 2 and entmax15 α = 1.5: the same solver), "
  "timed per call with `.block_until_ready()`, interleaved with "
  "`jax.nn.softmax` on the same float32 input (`jax.random.normal * 3`); "
  "times are medians over the repeats (column n), ratios paired per "
  "repeat as in `bench.py`. *n_iter = 1* is the start pass alone (no warm "
  "start); each further unit of `n_iter` allows one more iteration of "
  "the main loop and of the warm start's loop. *per step* is the slope of "
  "the median time over the caps ≥ 2 at which the output still differs "
  "from the default's (every allowed iteration ran); *step / softmax* "
  "divides it by `jax.nn.softmax`'s forward time."
)


def _fn(alpha: float, n_iter: int | None):
  return jax.jit(functools.partial(softjax.entmax, alpha=alpha, n_iter=n_iter))


def _label(cap: int | None) -> str:
  return "default" if cap is None else str(cap)


def _converged_from(outputs: dict[int | None, np.ndarray]) -> int | None:
  """The smallest cap whose output equals the default cap's, bit for bit."""
  for cap in CAPS[:-1]:
    if np.array_equal(outputs[cap], outputs[None], equal_nan=True):
      return cap
  return None


def _per_step(
  times: dict[int | None, float], converged: int | None
) -> float | None:
  """Least-squares slope of time over the caps >= 2 below ``converged``."""
  caps = [
    c for c in CAPS[:-1] if c >= 2 and (converged is None or c < converged)
  ]
  if len(caps) < 2:
    return None
  return float(np.polyfit(caps, [times[c] for c in caps], 1)[0])


def measure_function(
  x: jax.Array, alpha: float, repeats: int | None
) -> tuple[list[str], float]:
  """One table row (times per cap, convergence, per-step cost), and the
  median time of ``jax.nn.softmax`` in the same group."""
  thunks = {"softmax": lambda: jax.block_until_ready(jax.nn.softmax(x))}
  outputs = {}
  for cap in CAPS:
    f = _fn(alpha, cap)
    outputs[cap] = np.asarray(f(x))  # compiles; warms up with the next call
    f(x).block_until_ready()
    thunks[_label(cap)] = lambda f=f: jax.block_until_ready(f(x))
  jax.block_until_ready(jax.nn.softmax(x))
  n = repeats or bench.choose_repeats(list(thunks.values()))
  samples = timing.time_interleaved(thunks, n)
  med = timing.medians(samples)
  times = {cap: med[_label(cap)] for cap in CAPS}
  converged = _converged_from(outputs)
  step = _per_step(times, converged)
  ratio_default = timing.paired_ratio(samples["default"], samples["softmax"])
  row = [timing.ms(times[c]) for c in CAPS]
  row += [
    f"{ratio_default:.2f}",
    "> 8" if converged is None else f"n_iter = {converged}",
    "—" if step is None else f"{step * 1e6:.1f}",
    "—" if step is None else f"{step / med['softmax']:.2f}",
    str(n),
  ]
  return row, med["softmax"]


def run(
  shapes: Sequence[tuple[int, ...]],
  functions: dict[str, float],
  repeats: int | None,
) -> str:
  header = (
    ["function"]
    + [f"n_iter={_label(c)} (ms)" for c in CAPS]
    + [
      "default / softmax",
      "same as default from",
      "per step (µs)",
      "step / softmax",
      "n",
    ]
  )
  sections = []
  for shape in shapes:
    x, _ = bench.make_inputs(shape)
    name_of_shape = timing.shape_text(shape)
    rows, base = [], []
    for name, alpha in functions.items():
      row, softmax_s = measure_function(x, alpha, repeats)
      rows.append([f"`{name}`"] + row)
      base.append(softmax_s)
      print(
        f"  solver steps {name} {name_of_shape} done",
        file=sys.stderr,
        flush=True,
      )
    sections.append(
      f"## {name_of_shape}\n\n`jax.nn.softmax` forward: "
      f"{timing.ms(statistics.median(base))} ms (median over the groups).\n\n"
      + timing.markdown_table(header, rows)
    )
  return "\n\n".join(sections)


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument(
    "--shapes",
    type=bench.parse_shapes,
    default=None,
    help="shapes instead of the default "
    + ",".join("x".join(map(str, s)) for s in SHAPES),
  )
  p.add_argument(
    "--alphas",
    default=None,
    help="the α values to time, a subset of "
    + ",".join(f"{a:g}" for a in FUNCTIONS.values()),
  )
  p.add_argument(
    "--repeats",
    type=int,
    default=None,
    help="repeats per group (default: chosen per group)",
  )
  p.add_argument(
    "--quick",
    action="store_true",
    help="3 repeats, first shape only, no file unless --out",
  )
  p.add_argument(
    "--out",
    type=Path,
    default=None,
    help="folder for solver_steps.md (default docs/benchmarks)",
  )
  args = p.parse_args(argv)
  shapes = args.shapes or SHAPES
  functions = FUNCTIONS
  if args.alphas is not None:
    wanted = {a.strip() for a in args.alphas.split(",")}
    functions = {n: a for n, a in FUNCTIONS.items() if f"{a:g}" in wanted}
    unknown = wanted - {f"{a:g}" for a in FUNCTIONS.values()}
    if unknown or not functions:
      p.error(
        f"--alphas: choose from "
        f"{', '.join(f'{a:g}' for a in FUNCTIONS.values())}; "
        f"got {args.alphas!r}"
      )
  repeats = args.repeats
  out_dir = args.out
  if args.quick:
    repeats = repeats or bench.QUICK_REPEATS
    shapes = shapes[:1]
  elif out_dir is None:
    out_dir = ROOT / "docs" / "benchmarks"
  if repeats is not None and repeats < 1:
    p.error("--repeats must be at least 1")

  body = run(shapes, functions, repeats)
  argv_text = " ".join(
    [
      "python benchmarks/solver_steps.py",
      *(sys.argv[1:] if argv is None else argv),
    ]
  )
  text = "\n".join(
    [
      "# softjax solver: time per step",
      "",
      bench.environment_line(repeats, args.quick),
      "",
      f"Command: `{argv_text}`",
      "",
      f"**Method.** {METHOD}",
      "",
      body,
      "",
    ]
  )
  timing.print_and_write(text, out_dir, "solver_steps.md", end="\n\n")


if __name__ == "__main__":
  main()
