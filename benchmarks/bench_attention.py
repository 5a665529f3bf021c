"""Block-wise against dense attention: fwd+bwd time and XLA temporary memory.

Usage::

  python benchmarks/bench_attention.py [--lengths 1024 4096 16384 32768]
      [--alphas 1 1.5 2 learned] [--causal-lengths 16384] [--repeats N]
      [--memory-only] [--quick] [--out docs/benchmarks]
  python benchmarks/bench_attention.py --blocks 256x256,512x512 --lengths 4096

Setting (issue 16): batch 1, 8 heads, depth 64, float32, sequence lengths L
(queries = keys); ``softjax.attention.blockwise_attention(q, k, v,
alpha=α)`` against ``softjax.attention.dot_product_attention(q, k, v,
normalizer=<the map of α>)``. ``learned`` is an array α, one per head, whose
cotangent fwd+bwd also computes.

Targets:

  memory  blockwise temp bytes at L = 4096 <= 1/8 of dense, linear in L
  time    fwd+bwd at L = 4096 <= 1.5x dense (softmax), <= 2x (entmax15,
          sparsemax); time grows no faster than L^2 from 4096 to 16384
  causal  causal fwd+bwd <= 0.6x non-causal at L = 16384

Dense attention is only run where XLA's temp bytes for it fit in half of
this machine's memory (``--max-gib``); elsewhere its memory is still
measured (compiled, not run) and the time column says "does not fit".

Results accumulate in ``<out>/attention.json`` (one entry per length, α and
measurement, replaced when measured again), so long runs can be split by
length or α; each run re-renders ``<out>/attention.md`` from all entries
(the docs build draws the memory figure from ``attention.json``:
``attention_memory`` in ``docs/figures.py``). ``--quick`` (a
smoke test: L = 1024, 2 repeats) prints but writes nothing unless ``--out``
is given. ``--blocks`` times block sizes against each other (and dense) to
choose the defaults, and only prints.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from collections.abc import Sequence
import json
import math
import os
from pathlib import Path
import statistics
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))

import bench  # noqa: E402  (benchmarks/: report helpers)
import timing  # noqa: E402  (benchmarks/: timing helpers)

import softjax  # noqa: E402
from softjax import attention  # noqa: E402

HEADS, DEPTH = 8, 64
LENGTHS = [1024, 4096, 16384, 32768]
CAUSAL_LENGTHS = [16384]
TIME_TARGETS = {"1": 1.5, "1.5": 2.0, "2": 2.0}
MEMORY_TARGET = 1 / 8
CAUSAL_TARGET = 0.6
BUDGET_S = 2.0  # per candidate, when --repeats is not given
MIN_REPEATS = 5
MAX_REPEATS = 30
QUICK_REPEATS = 2

METHOD = (
  "Inputs `q, k, v` of shape `(1, L, 8, 64)` (batch, length, heads, depth), "
  "float32 standard normal; *fwd+bwd* is one jitted "
  "`lambda g, *a: jax.vjp(f, *a)[1](g)` returning the cotangents of q, k, "
  "v (and of α for the learned row) for a fixed random cotangent `g`. "
  "Each function is compiled and run before timing; the candidates of a "
  "row are timed **interleaved** (each repeat times each once, the start "
  "rotating), and a ratio is the median over repeats of the two times in "
  "the same repeat. *Temp* is XLA's `memory_analysis().temp_size_in_bytes` "
  "of the compiled fwd+bwd (deterministic; inputs and outputs excluded). "
  "Dense rows that would not fit in memory are compiled but not run. Rows "
  "may come from different runs (each carries its own date and commit in "
  "`attention.json`); the time exponent compares rows of different runs."
)


# ---------------------------------------------------------------------------
# Candidates.


def _alpha_key(alpha: str) -> str:
  return "learned" if alpha == "learned" else f"{float(alpha):g}"


def _dense_normalizer(
  alpha: str, alpha_array: jax.Array | None
) -> Callable[..., jax.Array]:
  if alpha == "learned":
    return lambda s, **kw: softjax.entmax(s, alpha_array[:, None, None], **kw)
  a = float(alpha)
  if a == 1.0:
    return softjax.softmax
  if a == 1.5:
    return softjax.entmax15
  if a == 2.0:
    return softjax.sparsemax
  return lambda s, **kw: softjax.entmax(s, a, **kw)


def blockwise_fn(
  alpha: str, causal: bool = False, blocks: tuple[int, int] | None = None
) -> Callable[..., Any]:
  bq, bk = blocks or (None, None)
  kw = dict(is_causal=causal, block_q=bq, block_k=bk)
  if alpha == "learned":
    return lambda q, k, v, a: attention.blockwise_attention(
      q, k, v, alpha=a, **kw
    )
  return lambda q, k, v: attention.blockwise_attention(
    q, k, v, alpha=float(alpha), **kw
  )


def dense_fn(alpha: str, causal: bool = False) -> Callable[..., Any]:
  if alpha == "learned":
    return lambda q, k, v, a: attention.dot_product_attention(
      q, k, v, is_causal=causal, normalizer=_dense_normalizer(alpha, a)
    )
  return lambda q, k, v: attention.dot_product_attention(
    q, k, v, is_causal=causal, normalizer=_dense_normalizer(alpha, None)
  )


def inputs(length: int, alpha: str) -> tuple[jax.Array, ...]:
  """``(g, q, k, v[, α])``: the cotangent first, then the arguments."""
  rng = np.random.default_rng(0)
  shape = (1, length, HEADS, DEPTH)
  arrays = [
    jnp.asarray(rng.standard_normal(shape, np.float32)) for _ in range(4)
  ]
  if alpha == "learned":
    arrays.append(jnp.linspace(1.2, 1.8, HEADS, dtype=jnp.float32))
  return tuple(arrays)


class Compiled:
  """A compiled fwd+bwd, its temp bytes, and a thunk that runs it."""

  def __init__(self, f: Callable[..., Any], args: Sequence[jax.Array]):
    fwd_bwd = jax.jit(lambda g, *a: jax.vjp(f, *a)[1](g))
    self.executable = fwd_bwd.lower(*args).compile()
    self.temp_bytes = int(self.executable.memory_analysis().temp_size_in_bytes)
    self.args = args

  def __call__(self) -> Any:
    return jax.block_until_ready(self.executable(*self.args))


def warm_and_count(
  thunks: dict[str, Callable[[], Any]], repeats: int | None, warm: bool = True
) -> int:
  """Runs each thunk (twice if fast); the repeats that fill the budget.

  ``warm=False`` (with ``repeats``) runs nothing before timing: for runs of
  minutes, where a first run's extra cost (the functions are compiled
  before) is negligible and a warm-up run would double the time.
  """
  if not warm and repeats is not None:
    return repeats
  slowest = 0.0
  for thunk in thunks.values():
    first = timing.time_once(thunk)
    if first < 1.0:
      thunk()
    slowest = max(slowest, first)
  if repeats is not None:
    return repeats
  return timing.repeats_for(BUDGET_S, slowest, MIN_REPEATS, MAX_REPEATS)


# ---------------------------------------------------------------------------
# Measurements (each returns a JSON-able row).


def _machine_bytes() -> int:
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _fits(temp_bytes: int, args: Sequence[jax.Array], max_bytes: float) -> bool:
  return temp_bytes + sum(a.nbytes for a in args) * 2 < max_bytes


def measure_pair(
  length: int,
  alpha: str,
  repeats: int | None,
  max_bytes: float,
  memory_only: bool,
  env: str,
  warm: bool = True,
) -> dict:
  """Blockwise against dense at one length: temp bytes, and times."""
  args = inputs(length, alpha)
  row: dict[str, Any] = dict(
    kind="pair", length=length, alpha=_alpha_key(alpha), env=env
  )
  ours = Compiled(blockwise_fn(alpha), args)
  row["block_temp"] = ours.temp_bytes
  dense = Compiled(dense_fn(alpha), args)
  row["dense_temp"] = dense.temp_bytes
  row["dense_fits"] = _fits(dense.temp_bytes, args, max_bytes)
  row["max_bytes"] = max_bytes
  row["machine_bytes"] = _machine_bytes()
  if memory_only:
    return row
  thunks = {"block": ours}
  if row["dense_fits"]:
    thunks["dense"] = dense
  n = warm_and_count(thunks, repeats, warm)
  samples = timing.time_interleaved(thunks, n)
  row["n"] = n if warm else f"{n}, no warm-up"
  med = timing.medians(samples)
  row["block_ms"] = med["block"] * 1e3
  if "dense" in samples:
    row["dense_ms"] = med["dense"] * 1e3
    row["ratio"] = timing.paired_ratio(samples["block"], samples["dense"])
  return row


def measure_causal(
  length: int, alpha: str, repeats: int | None, env: str, warm: bool = True
) -> dict:
  """Causal against non-causal blockwise attention at one length."""
  args = inputs(length, alpha)
  plain = Compiled(blockwise_fn(alpha), args)
  causal = Compiled(blockwise_fn(alpha, causal=True), args)
  thunks = {"plain": plain, "causal": causal}
  n = warm_and_count(thunks, repeats, warm)
  samples = timing.time_interleaved(thunks, n)
  med = timing.medians(samples)
  return dict(
    kind="causal",
    length=length,
    alpha=_alpha_key(alpha),
    env=env,
    n=n if warm else f"{n}, no warm-up",
    plain_ms=med["plain"] * 1e3,
    causal_ms=med["causal"] * 1e3,
    ratio=timing.paired_ratio(samples["causal"], samples["plain"]),
    causal_temp=causal.temp_bytes,
    plain_temp=plain.temp_bytes,
  )


def sweep_blocks(
  length: int,
  alpha: str,
  blocks: list[tuple[int, int]],
  repeats: int | None,
  max_bytes: float,
) -> str:
  """Block sizes timed interleaved with each other (and dense if it fits).

  Also reports CPU seconds (``time.process_time``, all threads): on a
  shared machine they vary less with the load than wall time does.
  """
  args = inputs(length, alpha)
  thunks, temps = {}, {}
  for bq, bk in blocks:
    c = Compiled(blockwise_fn(alpha, blocks=(bq, bk)), args)
    thunks[f"{bq}x{bk}"], temps[f"{bq}x{bk}"] = c, c.temp_bytes
  dense = Compiled(dense_fn(alpha), args)
  if _fits(dense.temp_bytes, args, max_bytes):
    thunks["dense"], temps["dense"] = dense, dense.temp_bytes
  n = warm_and_count(thunks, repeats)
  wall, cpu = timing.time_interleaved_wall_cpu(thunks, n)
  names = list(thunks)
  base = "dense" if "dense" in wall else names[0]
  rows = [
    [
      name,
      timing.ms(statistics.median(wall[name])),
      f"{timing.paired_ratio(wall[name], wall[base]):.2f}",
      f"{statistics.median(cpu[name]):.2f}",
      f"{timing.paired_ratio(cpu[name], cpu[base]):.2f}",
      _mib(temps[name]),
    ]
    for name in names
  ]
  return (
    f"### L = {length}, α = {_alpha_key(alpha)} (n = {n})\n\n"
    + timing.markdown_table(
      [
        "blocks (q x k)",
        "fwd+bwd wall (ms)",
        f"ratio to {base}",
        "CPU (s)",
        f"CPU ratio to {base}",
        "temp (MiB)",
      ],
      rows,
    )
  )


# ---------------------------------------------------------------------------
# Report: markdown tables and the memory figure, from all stored rows.


def _mib(n: int | None) -> str:
  return "—" if n is None else f"{n / 2**20:,.1f}"


def _verdict(ok: bool) -> str:
  return "ok" if ok else "**over**"


def _sort_key(row: dict) -> tuple:
  alpha = row["alpha"]
  return (
    row["kind"],
    alpha == "learned",
    0.0 if alpha == "learned" else float(alpha),
    row["length"],
  )


def render(rows: list[dict]) -> str:
  pairs = sorted((r for r in rows if r["kind"] == "pair"), key=_sort_key)
  causal = sorted((r for r in rows if r["kind"] == "causal"), key=_sort_key)
  header = [
    "α",
    "L",
    "blockwise fwd+bwd (ms)",
    "dense fwd+bwd (ms)",
    "time ratio (target)",
    "blockwise temp (MiB)",
    "dense temp (MiB)",
    "memory ratio",
    "n",
  ]
  table = []
  for r in pairs:
    target = TIME_TARGETS.get(r["alpha"], 2.0)
    if "ratio" in r:
      ratio = (
        f"{r['ratio']:.2f} (≤ {target:g}) {_verdict(r['ratio'] <= target)}"
      )
    else:
      ratio = "—"
    if "dense_temp" not in r:
      dense_ms = "not measured"
    elif not r.get("dense_fits", True):
      dense_ms = f"does not fit (run limit {r['max_bytes'] / 2**30:.0f} GiB)"
    else:
      dense_ms = timing.ms(r["dense_ms"] / 1e3) if "dense_ms" in r else "—"
    mem = "—"
    if "dense_temp" in r:
      m = r["block_temp"] / r["dense_temp"]
      mem = f"1/{1 / m:.1f}" if m > 0.1 else f"1/{1 / m:.0f}"
      if r["length"] == 4096:
        mem += f" (≤ 1/8) {_verdict(m <= MEMORY_TARGET)}"
    block_ms = timing.ms(r["block_ms"] / 1e3) if "block_ms" in r else "—"
    table.append(
      [
        r["alpha"],
        str(r["length"]),
        block_ms,
        dense_ms,
        ratio,
        _mib(r["block_temp"]),
        _mib(r.get("dense_temp")),
        mem,
        str(r.get("n", "—")),
      ]
    )
  parts = ["### Time and memory", "", timing.markdown_table(header, table), ""]

  growth = []
  by_alpha: dict[str, dict[int, dict]] = {}
  for r in pairs:
    by_alpha.setdefault(r["alpha"], {})[r["length"]] = r
  # Blockwise non-causal time at a length: from the pair row or the causal
  # row's non-causal run, whichever run is the latest (lines start with
  # their date).
  timed: dict[tuple[str, int], tuple[str, float]] = {}
  for r in pairs + causal:
    ms = r.get("block_ms", r.get("plain_ms"))
    key = (r["alpha"], r["length"])
    if ms is not None and (key not in timed or r["env"] > timed[key][0]):
      timed[key] = (r["env"], ms)
  for alpha, at in by_alpha.items():
    cells = [alpha]
    a, b = (timed.get((alpha, n), (None, None))[1] for n in (4096, 16384))
    if a is not None and b is not None:
      e = math.log(b / a) / math.log(4)
      cells.append(f"{b / a:.1f} (exponent {e:.2f}, ≤ 2) {_verdict(e <= 2.0)}")
    else:
      cells.append("—")
    lengths = sorted(at)
    steps = [
      at[y]["block_temp"] / at[x]["block_temp"] * x / y
      for x, y in zip(lengths, lengths[1:])
    ]
    cells.append(", ".join(f"{s:.2f}" for s in steps) or "—")
    growth.append(cells)
  parts += [
    "### Growth with L",
    "",
    "Time: blockwise fwd+bwd at 16384 over 4096 (L² growth is 16, "
    "exponent 2; each time from the latest run that measured it, the "
    "causal table's non-causal time included). Memory: temp bytes per "
    "unit length at each length over the previous one (1.00 is exactly "
    "linear).",
    "",
    timing.markdown_table(
      ["α", "time 16384 / 4096", "temp per length, step to step"], growth
    ),
    "",
  ]
  if causal:
    rows_c = [
      [
        r["alpha"],
        str(r["length"]),
        timing.ms(r["plain_ms"] / 1e3),
        timing.ms(r["causal_ms"] / 1e3),
        f"{r['ratio']:.2f} (≤ {CAUSAL_TARGET:g}) "
        f"{_verdict(r['ratio'] <= CAUSAL_TARGET)}",
        _mib(r["causal_temp"]),
        str(r["n"]),
      ]
      for r in causal
    ]
    parts += [
      "### Causal",
      "",
      timing.markdown_table(
        [
          "α",
          "L",
          "non-causal fwd+bwd (ms)",
          "causal fwd+bwd (ms)",
          "ratio (target)",
          "causal temp (MiB)",
          "n",
        ],
        rows_c,
      ),
      "",
    ]
  runs = sorted({r["env"] for r in rows})
  parts += ["**Runs.**", ""] + [f"- {e}" for e in runs] + [""]
  return "\n".join(parts)


def _load(path: Path) -> list[dict]:
  if not path.is_file():
    return []
  return json.loads(path.read_text(encoding="utf-8"))["rows"]


def _store(path: Path, old: list[dict], new: list[dict]) -> list[dict]:
  key = lambda r: (r["kind"], r["length"], r["alpha"])
  merged = {key(r): r for r in old}
  for r in new:
    previous = merged.get(key(r), {})
    if r["kind"] == "pair" and "block_ms" not in r and "block_ms" in previous:
      # A memory-only run keeps the times an earlier run measured, and the
      # line saying when and how (memory is deterministic).
      r = {
        **r,
        **{
          k: v
          for k, v in previous.items()
          if k.endswith("_ms") or k in ("ratio", "n", "env")
        },
      }
    merged[key(r)] = r
  rows = list(merged.values())
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({"rows": rows}, indent=1) + "\n", encoding="utf-8")
  return rows


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument(
    "--lengths",
    type=int,
    nargs="*",
    default=None,
    help="lengths of the blockwise-vs-dense rows (none: only --causal-lengths)",
  )
  p.add_argument(
    "--alphas",
    nargs="+",
    default=["1"],
    help="α values (1, 1.5, 2, ...) and/or 'learned'",
  )
  p.add_argument("--causal-lengths", type=int, nargs="*", default=None)
  p.add_argument("--repeats", type=int, default=None)
  p.add_argument(
    "--no-warmup",
    action="store_true",
    help="with --repeats: time from the first run (for runs of minutes)",
  )
  p.add_argument(
    "--memory-only",
    action="store_true",
    help="compile only: temp bytes, no timing",
  )
  p.add_argument(
    "--blocks",
    default=None,
    help="comma-separated QxK block sizes to compare (prints)",
  )
  p.add_argument(
    "--max-gib",
    type=float,
    default=None,
    help="run dense only below this many GiB (default: half "
    "of physical memory)",
  )
  p.add_argument("--quick", action="store_true")
  p.add_argument("--out", type=Path, default=None)
  args = p.parse_args(argv)
  for a in args.alphas:
    if a != "learned":
      float(a)  # a clear error for anything else
  max_bytes = args.max_gib * 2**30 if args.max_gib else _machine_bytes() / 2
  repeats = args.repeats or (QUICK_REPEATS if args.quick else None)
  lengths = args.lengths
  if lengths is None:
    lengths = [1024] if args.quick else LENGTHS
  causal_lengths = args.causal_lengths
  if causal_lengths is None:
    causal_lengths = [] if args.quick else CAUSAL_LENGTHS
  env = bench.environment_line(
    repeats
    or f"auto (≥{MIN_REPEATS}, ~{BUDGET_S:g} s per candidate; column n)",
    args.quick,
  )

  if args.blocks:
    blocks = [
      tuple(int(n) for n in b.split("x")) for b in args.blocks.split(",")
    ]
    for length in lengths:
      for alpha in args.alphas:
        print(
          sweep_blocks(length, alpha, blocks, repeats, max_bytes) + "\n",
          flush=True,
        )
    return

  new = []
  for alpha in args.alphas:
    for length in lengths:
      new.append(
        measure_pair(
          length,
          alpha,
          repeats,
          max_bytes,
          args.memory_only,
          env,
          warm=not args.no_warmup,
        )
      )
      print(f"  pair α={alpha} L={length} done", file=sys.stderr, flush=True)
    if args.memory_only:
      continue
    for length in causal_lengths:
      new.append(
        measure_causal(length, alpha, repeats, env, warm=not args.no_warmup)
      )
      print(f"  causal α={alpha} L={length} done", file=sys.stderr, flush=True)

  out_dir = args.out
  if out_dir is None and not args.quick:
    out_dir = _ROOT / "docs" / "benchmarks"
  rows = new
  if out_dir is not None:
    rows = _store(
      out_dir / "attention.json", _load(out_dir / "attention.json"), new
    )
  text = "\n".join(
    [
      "# softjax block-wise attention benchmarks",
      "",
      "Command (latest run): `"
      + " ".join(["python benchmarks/bench_attention.py", *sys.argv[1:]])
      + "`",
      "",
      f"**Method.** {METHOD}",
      "",
      render(rows),
    ]
  )
  print(text, flush=True)
  if out_dir is not None:
    (out_dir / "attention.md").write_text(text, encoding="utf-8")
    print(
      f"[written to {out_dir / 'attention.md'} and attention.json; the "
      "docs build draws the memory figure from the json "
      "(attention_memory in docs/figures.py)]"
    )


if __name__ == "__main__":
  main()
