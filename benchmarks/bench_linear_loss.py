"""Losses fused with the output layer against materialising the logits.

Usage::

  python benchmarks/bench_linear_loss.py [--vocab 32768,131072]
      [--losses softmax,sparsemax,entmax15,entmax] [--chunks 1024,2048,4096]
      [--repeats N] [--max-temp-gib G] [--quick] [--out docs/benchmarks]

For tokens = 4096, d = 512, float32 and each vocabulary size V, times the
forward and backward pass (``jax.vjp`` of the loss per token, cotangents of
``hidden`` and ``weight``) and reads XLA's temp memory for:

* ``softjax.losses.linear_<name>_loss(h, W, y)`` at the default chunk size
  (and at every ``--chunks`` size, for choosing the default);
* the materialised ``softjax.losses.<name>_loss(h @ W, y)``;
* ``optax.softmax_cross_entropy_with_integer_labels(h @ W, y)``.

Targets (issue 17): temp memory of each fused loss at most 1/16 of its
materialised version at V = 32768; ``linear_softmax_loss`` time at most 1.5×
the materialised softmax loss; ``linear_sparsemax_loss`` and
``linear_entmax15_loss`` at most 1× the materialised *softmax* loss.

Method as in ``benchmarks/bench.py`` (its helpers are reused): everything
jitted, two warm-up calls, candidates interleaved within each repeat, median
times and median per-repeat ratios to the materialised softmax loss.
Candidates whose XLA temp memory exceeds ``--max-temp-gib`` are not run
(their memory is still reported), so that a shared machine is not pushed
out of memory. Fused losses that do not exist yet (or raise) are skipped
with a note. Writes ``<out>/linear_loss.md`` (default
``docs/benchmarks``); ``--quick`` (a small size, 2 repeats) writes nothing
unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
import statistics
import sys
from typing import Any

import bench  # benchmarks/bench.py; puts this checkout on sys.path
import jax
import jax.numpy as jnp
import numpy as np
import timing  # benchmarks/timing.py

import softjax  # the checkout's, via bench

_ROOT = Path(__file__).resolve().parent.parent

TOKENS, DIM = 4096, 512
VOCABS = (32768, 131072)
QUICK = {"tokens": 512, "dim": 128, "vocabs": (8192,), "repeats": 2}
LOSSES = ("softmax", "sparsemax", "entmax15", "entmax")
ENTMAX_ALPHA = 1.5
MEMORY_TARGET = 1 / 16
TIME_TARGETS = {"softmax": 1.5, "sparsemax": 1.0, "entmax15": 1.0}
BASE = "softjax.losses.softmax_loss(h @ W, y)"

METHOD = (
  "Every function is wrapped in `jax.jit` and timed forward+backward: "
  "`jax.vjp(lambda h, W: loss(h, W, y), h, W)[1](g)` returns the "
  "cotangents of `hidden` and `weight` for a fixed random cotangent `g` "
  "of the per-token loss. Inputs: `h = normal(tokens, d)`, `W = normal(d, "
  "V) / sqrt(d)`, uniform random labels, float32. Each candidate is "
  "compiled and run twice before timing; the candidates of one V are "
  "interleaved (every repeat times each once, the starting candidate "
  "rotating), the time is the median over repeats, and the *time ratio* "
  "is the median over repeats of the candidate's time over the "
  "materialised softmax loss's time in the same repeat. *temp* is XLA's "
  "temporary memory (`compile().memory_analysis().temp_size_in_bytes`), "
  "exact and deterministic, excluding the arguments and the outputs "
  "(`dW` alone is d × V × 4 bytes); *mem ratio* divides it by the temp "
  "memory of the materialised loss of the same name."
)


def _fwd_bwd(loss: Callable[..., jax.Array]) -> Callable[..., Any]:
  return jax.jit(
    lambda h, w, y, g: jax.vjp(lambda h, w: loss(h, w, y), h, w)[1](g)
  )


def candidates(
  names: Sequence[str], chunks: Sequence[int | None]
) -> list[tuple[str, str, Callable[..., jax.Array]]]:
  """``(label, loss name, f(h, W, y))`` in table order."""
  import optax  # pylint: disable=import-outside-toplevel

  L = softjax.losses
  full = {
    "softmax": L.softmax_loss,
    "sparsemax": L.sparsemax_loss,
    "entmax15": L.entmax15_loss,
    "entmax": lambda z, y: L.entmax_loss(z, y, ENTMAX_ALPHA),
  }
  fused = {
    "softmax": getattr(L, "linear_softmax_loss", None),
    "sparsemax": getattr(L, "linear_sparsemax_loss", None),
    "entmax15": getattr(L, "linear_entmax15_loss", None),
    "entmax": getattr(L, "linear_entmax_loss", None),
  }
  out = [
    (BASE, "softmax", lambda h, w, y: L.softmax_loss(h @ w, y)),
    (
      "optax.softmax_cross_entropy_with_integer_labels(h @ W, y)",
      "softmax",
      lambda h, w, y: optax.softmax_cross_entropy_with_integer_labels(h @ w, y),
    ),
  ]
  for name in names:
    if name != "softmax":
      arg = f", {ENTMAX_ALPHA}" if name == "entmax" else ""
      out.append(
        (
          f"softjax.losses.{name}_loss(h @ W, y{arg})",
          name,
          lambda h, w, y, f=full[name]: f(h @ w, y),
        )
      )
    f = fused[name]
    if f is None:
      continue
    for c in chunks:
      extra = (ENTMAX_ALPHA,) if name == "entmax" else ()
      label = (
        f"softjax.losses.linear_{name}_loss(h, W, y"
        + (f", {ENTMAX_ALPHA}" if extra else "")
        + ("" if c is None else f", chunk_size={c}")
        + ")"
      )
      out.append(
        (
          label,
          name,
          lambda h, w, y, f=f, c=c, e=extra: f(h, w, y, *e, chunk_size=c),
        )
      )
  return out


def _temp_bytes(fn, args) -> int | None:
  try:
    return fn.lower(*args).compile().memory_analysis().temp_size_in_bytes
  except Exception:  # pylint: disable=broad-except
    return None


def run_vocab(
  v: int,
  tokens: int,
  dim: int,
  names: Sequence[str],
  chunks: Sequence[int | None],
  repeats: int,
  max_temp: float,
  notes: list[str],
) -> list[list[str]]:
  kh, kw, ky, kg = jax.random.split(jax.random.key(0), 4)
  h = jax.random.normal(kh, (tokens, dim), jnp.float32)
  w = jax.random.normal(kw, (dim, v), jnp.float32) / np.sqrt(dim)
  y = jax.random.randint(ky, (tokens,), 0, v)
  g = jax.random.normal(kg, (tokens,), jnp.float32)
  args = (h, w, y, g)
  cands, temps, names_of = [], {}, {}
  for label, name, loss in candidates(names, chunks):
    fn = _fwd_bwd(loss)
    temp = _temp_bytes(fn, args)
    temps[label], names_of[label] = temp, name
    if temp is None:  # does not compile: warm_up records why
      cands.append(
        bench.Candidate(label, lambda: None, lambda fn=fn: fn(*args))
      )
      continue
    if temp > max_temp * 2**30:
      notes.append(
        f"V = {v}: `{label}` not run: it needs "
        f"{temp / 2**30:.1f} GiB of temp memory "
        f"(--max-temp-gib {max_temp:g})."
      )
      continue
    cands.append(
      bench.Candidate(
        label, lambda: None, lambda fn=fn: jax.block_until_ready(fn(*args))
      )
    )
  cands = bench.warm_up(cands, notes)
  timed = {c.name: c.fwd_bwd for c in cands}
  samples = timing.time_interleaved(timed, repeats) if timed else {}
  return table_rows(v, temps, names_of, samples, notes)


def table_rows(
  v: int,
  temps: dict[str, int | None],
  names_of: dict[str, str],
  samples: dict[str, list[float]],
  notes: list[str],
) -> list[list[str]]:
  """One row per candidate: time, time ratio, temp memory, memory ratio."""
  full_temp = {
    names_of[name]: t
    for name, t in temps.items()
    if "(h @ W" in name and name.startswith("softjax")
  }
  base = BASE
  if base not in samples:
    # The materialised softmax loss did not fit under --max-temp-gib:
    # ratios to optax's (which holds one [tokens, V] array less) instead.
    base = next((n for n in samples if n.startswith("optax")), None)
    if base is not None:
      notes.append(
        f"V = {v}: time ratios are to `{base}`, as the "
        "materialised softmax loss was not run; no targets apply."
      )
  rows = []
  for label, temp in temps.items():
    if temp is None and label not in samples:
      continue  # failed to compile: bench.warm_up's note says why
    name = names_of[label]
    fused = "linear_" in label
    if label in samples and base in samples:
      t = statistics.median(samples[label])
      ratio = timing.paired_ratio(samples[label], samples[base])
      time_cell, ratio_cell = f"{t * 1e3:.0f}", f"{ratio:.2f}"
      target = TIME_TARGETS.get(name) if fused and base == BASE else None
      if target is not None:
        verdict = "ok" if ratio <= target else "**over**"
        ratio_cell += f" (≤ {target:g} {verdict})"
    else:
      time_cell, ratio_cell = "—", "—"
    if temp is None:
      temp_cell = mem_cell = "—"
    else:
      temp_cell = f"{temp / 2**20:.1f}"
      ref = full_temp.get(name)
      mem_cell = "—" if not ref else f"{temp / ref:.4f}"
      if fused and ref and v == 32768:
        verdict = "ok" if temp <= MEMORY_TARGET * ref else "**over**"
        mem_cell += f" (≤ 1/16 {verdict})"
    rows.append(
      [
        f"`{label}`",
        time_cell,
        ratio_cell,
        temp_cell,
        mem_cell,
        str(len(samples.get(label, []))),
      ]
    )
  return rows


def group_failures(notes: list[str]) -> list[str]:
  """One note per error message instead of one per failed candidate."""
  marker = " failed and was skipped: "
  grouped: dict[str, list[str]] = {}
  out = []
  for note in notes:
    if marker in note:
      label, error = note.split(marker, 1)
      if error not in grouped:
        grouped[error] = []
        out.append(error)
      grouped[error].append(label)
    else:
      out.append(note)
  return [
    f"{', '.join(grouped[n])} failed and "
    f"{'was' if len(grouped[n]) == 1 else 'were'} skipped: {n}"
    if n in grouped
    else n
    for n in out
  ]


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument(
    "--vocab",
    default=",".join(map(str, VOCABS)),
    help="comma-separated vocabulary sizes",
  )
  p.add_argument(
    "--losses",
    default=",".join(LOSSES),
    help=f"comma-separated subset of {','.join(LOSSES)}",
  )
  p.add_argument(
    "--chunks",
    default="",
    help="extra chunk sizes to time linear_*_loss at (at the "
    "first --vocab only)",
  )
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument(
    "--max-temp-gib",
    type=float,
    default=6.0,
    help="skip timing candidates needing more temp memory",
  )
  p.add_argument(
    "--quick",
    action="store_true",
    help="smoke test: a small size, 2 repeats, no file unless --out is given",
  )
  p.add_argument("--out", type=Path, default=None)
  a = p.parse_args(argv)
  names = [n for n in a.losses.split(",") if n]
  for n in names:
    if n not in LOSSES:
      p.error(f"unknown loss {n!r}; choose from {','.join(LOSSES)}")
  chunks: list[int | None] = [None] + [int(c) for c in a.chunks.split(",") if c]
  tokens, dim, repeats = TOKENS, DIM, a.repeats
  vocabs = [int(v) for v in a.vocab.split(",") if v]
  out_dir = a.out
  if a.quick:
    tokens, dim = QUICK["tokens"], QUICK["dim"]
    vocabs, repeats = list(QUICK["vocabs"]), QUICK["repeats"]
  elif out_dir is None:
    out_dir = _ROOT / "docs" / "benchmarks"
  if repeats < 1:
    p.error("--repeats must be at least 1")

  notes: list[str] = []
  sections = []
  header = [
    "candidate",
    "fwd+bwd (ms)",
    "time ratio",
    "temp (MiB)",
    "mem ratio",
    "n",
  ]
  for i, v in enumerate(vocabs):
    rows = run_vocab(
      v,
      tokens,
      dim,
      names,
      chunks if i == 0 else [None],
      repeats,
      a.max_temp_gib,
      notes,
    )
    sections.append(
      f"## tokens = {tokens}, d = {dim}, V = {v}\n\n"
      + timing.markdown_table(header, rows)
    )
    print(f"  V = {v} done", file=sys.stderr, flush=True)
  notes = group_failures(notes)
  text = "\n".join(
    [
      "# softjax fused output-layer losses",
      "",
      bench.environment_line(repeats, a.quick),
      "",
      "Command: `"
      + " ".join(
        [
          "python benchmarks/bench_linear_loss.py",
          *(argv if argv is not None else sys.argv[1:]),
        ]
      )
      + "`",
      "",
      f"**Method.** {METHOD}",
      "",
      "\n\n".join(sections),
      "",
    ]
    + (["**Notes.**", ""] + [f"- {n}" for n in notes] + [""] if notes else [])
  )
  timing.print_and_write(text, out_dir, "linear_loss.md")


if __name__ == "__main__":
  main()
