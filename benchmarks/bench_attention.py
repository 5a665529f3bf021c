"""Block-wise against dense attention: fwd+bwd time and XLA temporary memory.

Usage::

  python benchmarks/bench_attention.py [--lengths 1024 4096 16384 32768]
      [--alphas 1 1.5 2 learned] [--causal-lengths 16384] [--repeats N]
      [--memory-only] [--quick] [--out docs/benchmarks]
  python benchmarks/bench_attention.py --blocks 256x256,512x512 --lengths 4096
  python benchmarks/bench_attention.py --structure-lengths 4096 8192 16384
      32768 --alphas 1 1.5 2 [--structure-reference-max 16384] [--repeats N]

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
  packed  causal with 4 packed documents (``segment_ids``) <= 0.5x causal
          at L = 16384
  window  causal sliding window of 512 keys (``local_window_size=(512,
          0)``): fwd+bwd at 32768 <= 4.5x that at 8192 (linear: 4x)

Dense attention is only run where XLA's temp bytes for it fit in half of
this machine's memory (``--max-gib``); elsewhere its memory is still
measured (compiled, not run) and the time column says "does not fit".

``--structure-lengths`` times the token structure against full causal
attention: ``causal``, ``packed`` (the same plus ``segment_ids``, 4 equal
documents per row) and ``window`` (the same plus ``local_window_size=(512,
0)``), interleaved. Above ``--structure-reference-max`` the causal
reference is compiled (temp bytes) but not timed, and the ratios are "—".
Given alone (without ``--lengths`` or ``--causal-lengths``) it runs only
this measurement.

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
STRUCTURE_DOCS = 4  # packed documents per row, of equal length
STRUCTURE_WINDOW = (512, 0)  # causal sliding window: keys q - 512 .. q
STRUCTURE_REFERENCE_MAX = 16384  # longer: the causal reference is not timed
PACKED_TARGET = 0.5  # packed / causal at PACKED_TARGET_LENGTH
PACKED_TARGET_LENGTH = 16384
WINDOW_GROWTH_TARGET = 4.5  # window time at 32768 over 8192 (linear: 4)
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

STRUCTURE_METHOD = (
  f"Three candidates on the inputs above, timed interleaved in the same "
  f"repeats: *causal* is `blockwise_attention(q, k, v, alpha=α, "
  f"is_causal=True)`, the reference: the same attention with the full "
  f"causal mask; *packed* adds `segment_ids` of shape `(1, L)` splitting "
  f"the row into {STRUCTURE_DOCS} documents of L/{STRUCTURE_DOCS} tokens "
  f"(ids 0, …, 0, 1, …, {STRUCTURE_DOCS - 1}), passed to the jitted "
  f"fwd+bwd as an argument (not differentiated), so that a query sees the "
  f"earlier keys of its own document only; *window* adds "
  f"`local_window_size={STRUCTURE_WINDOW}`, so that query q sees keys "
  f"q − {STRUCTURE_WINDOW[0]} … q. Both skip the block pairs they mask "
  f"whole: packed documents should cost about {STRUCTURE_DOCS} causal "
  f"attentions of length L/{STRUCTURE_DOCS} (1/{STRUCTURE_DOCS} of "
  f"causal), and the window a time linear in L. Ratios are medians over "
  f"repeats of the two times in the same repeat. Where the reference was "
  f"not timed (lengths above `--structure-reference-max`, "
  f"{STRUCTURE_REFERENCE_MAX} by default: full causal attention at "
  f"L = 32768 takes minutes per call on 2 cores), its time and the ratios "
  f'are "—" (its temp bytes are still measured). *Temps* are the '
  f"temp bytes of the three compiled fwd+bwd, causal / packed / window."
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
  """A compiled fwd+bwd, its temp bytes, and a thunk that runs it.

  ``data`` (e.g. segment ids) are further arguments of the jitted function,
  passed to ``f`` after ``args[1:]`` but not differentiated.
  """

  def __init__(
    self,
    f: Callable[..., Any],
    args: Sequence[jax.Array],
    data: Sequence[jax.Array] = (),
  ):
    if data:
      fwd_bwd = jax.jit(
        lambda g, d, *a: jax.vjp(lambda *x: f(*x, *d), *a)[1](g)
      )
      call_args = (args[0], tuple(data), *args[1:])
    else:
      fwd_bwd = jax.jit(lambda g, *a: jax.vjp(f, *a)[1](g))
      call_args = tuple(args)
    self.executable = fwd_bwd.lower(*call_args).compile()
    self.temp_bytes = int(self.executable.memory_analysis().temp_size_in_bytes)
    self.args = call_args

  def __call__(self) -> Any:
    return jax.block_until_ready(self.executable(*self.args))


def structure_fn(alpha: str, candidate: str) -> Callable[..., Any]:
  """Causal blockwise attention, plus the token structure of ``candidate``.

  ``"causal"``: none (the reference); ``"packed"``: ``segment_ids``, the
  last argument; ``"window"``: ``local_window_size=STRUCTURE_WINDOW``.
  """
  learned = alpha == "learned"
  window = STRUCTURE_WINDOW if candidate == "window" else None

  def f(q: jax.Array, k: jax.Array, v: jax.Array, *rest: jax.Array) -> Any:
    return attention.blockwise_attention(
      q,
      k,
      v,
      alpha=rest[0] if learned else float(alpha),
      is_causal=True,
      segment_ids=rest[-1] if candidate == "packed" else None,
      local_window_size=window,
    )

  return f


def document_ids(length: int) -> jax.Array:
  """``[1, length]`` int32: ``STRUCTURE_DOCS`` documents of equal length."""
  ids = np.arange(length) * STRUCTURE_DOCS // length
  return jnp.asarray(ids[None, :], jnp.int32)


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


def measure_structure(
  length: int,
  alpha: str,
  repeats: int | None,
  env: str,
  reference: bool = True,
  warm: bool = True,
) -> dict:
  """Causal, packed documents and a causal window at one length.

  ``reference=False`` compiles the causal reference (its temp bytes) but
  does not time it (no ratios).
  """
  args = inputs(length, alpha)
  compiled = {
    "causal": Compiled(structure_fn(alpha, "causal"), args),
    "packed": Compiled(
      structure_fn(alpha, "packed"), args, data=(document_ids(length),)
    ),
    "window": Compiled(structure_fn(alpha, "window"), args),
  }
  thunks = {
    name: c for name, c in compiled.items() if reference or name != "causal"
  }
  n = warm_and_count(thunks, repeats, warm)
  samples = timing.time_interleaved(thunks, n)
  med = timing.medians(samples)
  row: dict[str, Any] = dict(
    kind="structure",
    length=length,
    alpha=_alpha_key(alpha),
    env=env,
    n=n if warm else f"{n}, no warm-up",
    docs=STRUCTURE_DOCS,
    window=list(STRUCTURE_WINDOW),
  )
  for name in thunks:
    row[f"{name}_ms"] = med[name] * 1e3
  if reference:
    for name in ("packed", "window"):
      row[f"{name}_ratio"] = timing.paired_ratio(
        samples[name], samples["causal"]
      )
  for name, c in compiled.items():
    row[f"{name}_temp"] = c.temp_bytes
  return row


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
  structure = sorted(
    (r for r in rows if r["kind"] == "structure"), key=_sort_key
  )
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
  parts = []
  if pairs:
    parts += [
      "### Time and memory",
      "",
      timing.markdown_table(header, table),
      "",
    ]

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
  if growth:
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
  if structure:
    parts += render_structure(structure)
  runs = sorted({r["env"] for r in rows})
  parts += ["**Runs.**", ""] + [f"- {e}" for e in runs] + [""]
  return "\n".join(parts)


def _ms_cell(row: dict, name: str) -> str:
  ms = row.get(f"{name}_ms")
  return "—" if ms is None else timing.ms(ms / 1e3)


def _growth_cell(
  window_ms: dict[int, float], long: int, short: int, target: float | None
) -> str:
  if long not in window_ms or short not in window_ms:
    return "—"
  g = window_ms[long] / window_ms[short]
  e = math.log(g) / math.log(long / short)
  if target is None:
    return f"{g:.2f} (exponent {e:.2f})"
  return f"{g:.2f} (exponent {e:.2f}, ≤ {target:g}) {_verdict(g <= target)}"


def render_structure(structure: list[dict]) -> list[str]:
  """The section on packed documents and sliding windows (markdown lines)."""
  table = []
  for r in structure:
    ratios = []
    for name in ("packed", "window"):
      ratio = r.get(f"{name}_ratio")
      if ratio is None:
        ratios.append("—")
      elif name == "packed" and r["length"] == PACKED_TARGET_LENGTH:
        ratios.append(
          f"{ratio:.2f} (≤ {PACKED_TARGET:g}) "
          f"{_verdict(ratio <= PACKED_TARGET)}"
        )
      else:
        ratios.append(f"{ratio:.2f}")
    temps = " / ".join(
      _mib(r.get(f"{name}_temp")) for name in ("causal", "packed", "window")
    )
    table.append(
      [
        r["alpha"],
        str(r["length"]),
        _ms_cell(r, "causal"),
        _ms_cell(r, "packed"),
        ratios[0],
        _ms_cell(r, "window"),
        ratios[1],
        temps,
        str(r.get("n", "—")),
      ]
    )
  docs = structure[0].get("docs", STRUCTURE_DOCS)
  window = structure[0].get("window", STRUCTURE_WINDOW)[0]
  header = [
    "α",
    "L",
    "causal fwd+bwd (ms)",
    f"packed {docs} docs (ms)",
    f"packed / causal (≤ {PACKED_TARGET:g} at L = {PACKED_TARGET_LENGTH})",
    f"window {window} (ms)",
    "window / causal",
    "temps causal / packed / window (MiB)",
    "n",
  ]
  window_ms: dict[str, dict[int, float]] = {}
  for r in structure:
    if "window_ms" in r:
      window_ms.setdefault(r["alpha"], {})[r["length"]] = r["window_ms"]
  growth = [
    [
      alpha,
      _growth_cell(at, 32768, 8192, WINDOW_GROWTH_TARGET),
      _growth_cell(at, 16384, 4096, None),
    ]
    for alpha, at in window_ms.items()
  ]
  return [
    "### Packed sequences and sliding windows",
    "",
    f"**Method.** {STRUCTURE_METHOD}",
    "",
    timing.markdown_table(header, table),
    "",
    "**Window time growth.** Window fwd+bwd time at the longer length over "
    "the shorter (4× the length: linear growth is 4.0, exponent 1; each "
    "time from the latest run that measured it).",
    "",
    timing.markdown_table(
      [
        "α",
        f"window 32768 / 8192 (≤ {WINDOW_GROWTH_TARGET:g}; linear 4.0)",
        "window 16384 / 4096 (linear 4.0)",
      ],
      growth,
    ),
    "",
  ]


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
  p.add_argument(
    "--structure-lengths",
    type=int,
    nargs="*",
    default=None,
    help="lengths of the causal / packed documents / sliding window rows "
    "(default: none; given alone, --lengths and --causal-lengths default "
    "to none)",
  )
  p.add_argument(
    "--structure-reference-max",
    type=int,
    default=STRUCTURE_REFERENCE_MAX,
    help="time the causal reference of the structure rows only up to this "
    "length (longer: packed and window only, ratios '—')",
  )
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
  structure_lengths = args.structure_lengths or []
  lengths = args.lengths
  if lengths is None:
    lengths = [] if structure_lengths else [1024] if args.quick else LENGTHS
  causal_lengths = args.causal_lengths
  if causal_lengths is None:
    causal_lengths = [] if args.quick or structure_lengths else CAUSAL_LENGTHS
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
    for length in structure_lengths:
      new.append(
        measure_structure(
          length,
          alpha,
          repeats,
          env,
          reference=length <= args.structure_reference_max,
          warm=not args.no_warmup,
        )
      )
      print(
        f"  structure α={alpha} L={length} done", file=sys.stderr, flush=True
      )

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
