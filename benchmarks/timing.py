"""Timing helpers shared by the benchmark scripts in this folder.

The method (``bench.py``'s METHOD spells it out for readers of the tables):
each sample is one call of a thunk that waits for its result (JAX's
``block_until_ready``), timed with ``time.perf_counter`` while Python's
garbage collector is off; the candidates compared on one input are timed
**interleaved**, one call of each per repeat with the starting candidate
rotating, so that machine noise falls on all of them alike; a time is the
median over the repeats, and a ratio the median over the repeats of the two
candidates' times in the same repeat (:func:`paired_ratio`).

Also the markdown cells and tables that every script's report uses, and
how a report is printed and written. Nothing here imports JAX or softjax.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
import gc
import math
from pathlib import Path
import statistics
import time
from typing import Any
from typing import TypeVar

Thunk = Callable[[], Any]
_Sample = TypeVar("_Sample")


# --------------------------------------------------------------------------
# One call.


def time_once(thunk: Thunk) -> float:
  """Wall-clock seconds of one call of ``thunk``."""
  start = time.perf_counter()
  thunk()
  return time.perf_counter() - start


def time_once_wall_cpu(thunk: Thunk) -> tuple[float, float]:
  """Wall-clock and CPU seconds (``time.process_time``, all threads) of one
  call; CPU time varies less with a shared machine's load than wall time."""
  start_wall, start_cpu = time.perf_counter(), time.process_time()
  thunk()
  return time.perf_counter() - start_wall, time.process_time() - start_cpu


# --------------------------------------------------------------------------
# How many repeats.


def repeats_for(
  budget_s: float, round_s: float, min_repeats: int, max_repeats: int
) -> int:
  """Repeats of a round taking ``round_s`` that fill ``budget_s``, clamped
  to ``[min_repeats, max_repeats]``."""
  wanted = math.ceil(budget_s / max(round_s, 1e-9))
  return max(min_repeats, min(max_repeats, wanted))


def choose_repeats(
  thunks: Sequence[Thunk],
  budget_s: float,
  min_repeats: int,
  max_repeats: int,
) -> int:
  """Repeats so that each thunk is timed for ~``budget_s`` on average."""
  # Median of three calls: one call can land on a noise spike.
  round_s = sum(
    statistics.median(time_once(t) for _ in range(3)) for t in thunks
  )
  return repeats_for(budget_s * len(thunks), round_s, min_repeats, max_repeats)


# --------------------------------------------------------------------------
# Repeated, interleaved runs.


def _interleaved(
  thunks: Mapping[str, Thunk],
  repeats: int,
  timer: Callable[[Thunk], _Sample],
) -> dict[str, list[_Sample]]:
  names = list(thunks)
  samples: dict[str, list[_Sample]] = {n: [] for n in names}
  gc_was_enabled = gc.isenabled()
  # A collection in the middle of one sample would be charged to it alone.
  gc.disable()
  try:
    for r in range(repeats):
      k = r % len(names)
      for name in names[k:] + names[:k]:
        samples[name].append(timer(thunks[name]))
  finally:
    if gc_was_enabled:
      gc.enable()
  return samples


def time_interleaved(
  thunks: Mapping[str, Thunk], repeats: int
) -> dict[str, list[float]]:
  """Seconds per call of each thunk, one sample per repeat, timed round-robin.

  The thunks must already be compiled (warmed up). Interleaving makes slow
  drifts (other processes, clock changes) hit every candidate alike; rotating
  the start stops one candidate always running just after the same
  neighbour, whose cache footprint it would otherwise inherit. Sample ``i``
  of every thunk comes from repeat ``i``, so samples can be compared in
  pairs (:func:`paired_ratio`).
  """
  return _interleaved(thunks, repeats, time_once)


def time_interleaved_wall_cpu(
  thunks: Mapping[str, Thunk], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
  """:func:`time_interleaved`, with each call's CPU seconds as well:
  ``(wall, cpu)``, each ``{name: [seconds per repeat]}``."""
  both = _interleaved(thunks, repeats, time_once_wall_cpu)
  wall = {n: [w for w, _ in s] for n, s in both.items()}
  cpu = {n: [c for _, c in s] for n, s in both.items()}
  return wall, cpu


# --------------------------------------------------------------------------
# Statistics.


def medians(samples: Mapping[str, Sequence[float]]) -> dict[str, float]:
  """The median of each candidate's samples."""
  return {n: statistics.median(v) for n, v in samples.items()}


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
  """Median over repeats of ``a``'s time over ``b``'s in the same repeat.

  The two calls of one repeat run back to back, so a slow spell of the
  machine (seen here: everything 2x slower for seconds) scales both and
  cancels in their quotient; a ratio of two medians would instead depend on
  how such spells fell among the repeats of each.
  """
  return statistics.median(x / y for x, y in zip(a, b))


# --------------------------------------------------------------------------
# Markdown.


def ms(seconds: float) -> str:
  """Seconds as a milliseconds cell, ``"1.234"``."""
  return f"{seconds * 1e3:.3f}"


def shape_text(shape: Sequence[int]) -> str:
  """``(64, 128)``, also for one-element shapes (no trailing comma)."""
  return "(" + ", ".join(str(n) for n in shape) + ")"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = [
    "| " + " | ".join(header) + " |",
    "|" + "|".join("---" for _ in header) + "|",
  ]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def print_and_write(
  text: str, out_dir: Path | None, name: str, *, end: str = "\n"
) -> None:
  """Prints a report, and writes it to ``out_dir/name`` unless ``out_dir``
  is None (a quick run that must not overwrite real numbers)."""
  print(text, flush=True)
  if out_dir is not None:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(text, encoding="utf-8")
    print(f"[written to {path}]", end=end, flush=True)
