"""Losses fused with the output layer against materialising the logits.

Usage::

  python benchmarks/bench_linear_loss.py [--vocab 32768,131072]
      [--losses softmax,sparsemax,entmax15,entmax] [--chunks 1024,2048,4096]
      [--repeats N] [--max-temp-gib G] [--quick] [--out docs/benchmarks]
  python benchmarks/bench_linear_loss.py --options [--vocab 32768]
      [--losses softmax,sparsemax,entmax15] [--repeats N] [--quick]
      [--out docs/benchmarks]

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

``--options`` (issue 24) runs only the options measurement, at the first
``--vocab`` (default 32768): the fused losses' forward and backward pass
(cotangents of ``hidden`` and ``weight`` of a scalar loss) with a quarter
of the tokens ignored (``ignore_index=-100``), ``label_smoothing=0.1``,
``z_loss=1e-4`` (softmax only) and ``reduction="mean"``, against the same
fused loss without options (``.mean()`` of the per-token loss); and
``transposed_weight=True`` on a ``[V, d]`` table against the ``[d, V]``
weight, with the temp memory of passing the table as ``E.T`` instead.
Target: each at most 1.1x the loss without options. Its section
(``### Options: ...``, under the heading of its size) carries its own date,
command and method, and is spliced into an existing ``linear_loss.md``
(replacing an earlier options section); a run without ``--options`` keeps
the options section of the file it rewrites.

Method as in ``benchmarks/bench.py`` (its helpers are reused): everything
jitted, two warm-up calls, candidates interleaved within each repeat, median
times and median per-repeat ratios to the materialised softmax loss.
Candidates whose XLA temp memory exceeds ``--max-temp-gib`` are not run
(their memory is still reported), so that a shared machine is not pushed
out of memory. Fused losses that do not exist yet (or raise) are skipped
with a note. Writes ``<out>/linear_loss.md`` (default
``docs/benchmarks``); ``--quick`` (a small size, 2 repeats, unless
``--vocab`` or ``--repeats`` say otherwise) writes nothing unless ``--out``
is given.
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
TITLE = "# softjax fused output-layer losses"

# The options measurement (--options, issue 24).
OPTION_LOSSES = ("softmax", "sparsemax", "entmax15")
OPTIONS_TARGET = 1.1  # time with the options over the time without
IGNORE_INDEX = -100
IGNORED_FRACTION = 0.25
LABEL_SMOOTHING = 0.1
Z_LOSS = 1e-4  # softmax only
Z_LOSS_TEXT = f"{Z_LOSS:.0e}".replace("e-0", "e-")  # "1e-4"
OPTIONS_HEADING = "### Options: padding, smoothing, z-loss, tied embeddings"

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

OPTIONS_METHOD = (
  "Each row compares two fused losses timed forward+backward as one "
  "jitted `jax.grad(lambda h, W: loss(h, W, y), argnums=(0, 1))` "
  "returning the cotangents of `hidden` and `weight` of a scalar loss. "
  "Inputs, with tokens, d and V of the heading: `h = normal(tokens, d)`, "
  "`W = normal(d, V) / sqrt(d)`, uniform random labels `y`, float32. "
  "*plain* is the loss "
  "without options, `linear_<name>_loss(h, W, y).mean()`. *options* is "
  f"`linear_<name>_loss(h, W, y_pad, ignore_index={IGNORE_INDEX}, "
  f"label_smoothing={LABEL_SMOOTHING:g}, z_loss={Z_LOSS_TEXT}, "
  'reduction="mean")` (no `z_loss` for the sparse losses), where `y_pad` '
  f"is `y` with {IGNORED_FRACTION:.0%} of the tokens (a random subset of "
  f"exactly tokens/{round(1 / IGNORED_FRACTION)}) set to {IGNORE_INDEX}: "
  "padding, as a language model's batches have. The *tied* rows pass the "
  "same weight as a `[V, d]` table `E` (an `nn.Embed` embedding, stored "
  "in that layout): `linear_<name>_loss(h, E, y, transposed_weight=True)"
  ".mean()`, against *plain* on `W = Eᵀ` stored as `[d, V]`. All "
  "candidates of the section are interleaved in the same repeats (each "
  "repeat times each once, the start rotating); times are medians over the "
  "repeats, and the *ratio* is the median over repeats of the row's two "
  "times in the same repeat; the target is at most "
  f"{OPTIONS_TARGET:g}. *temps* is XLA's temp memory (MiB) of the two "
  "compiled functions, options / plain; a tied row adds in parentheses "
  "that of the same loss given the table as `E.T` without "
  "`transposed_weight` (compiled, not run), which holds a d × V copy."
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


# --------------------------------------------------------------------------
# Options: padding, smoothing, z-loss, tied embeddings (--options).


def _grad_fn(loss: Callable[..., jax.Array]) -> Callable[..., Any]:
  return jax.jit(jax.grad(loss, argnums=(0, 1)))


def option_candidates(
  name: str,
) -> dict[str, Callable[..., jax.Array]]:
  """The scalar losses of one loss's rows: ``{kind: f(h, W or E, y)}``.

  Kinds: ``plain`` (no options), ``options`` (padding, smoothing, z-loss,
  mean), ``tied`` (``transposed_weight=True`` on a ``[V, d]`` table) and
  ``copy`` (the table as ``E.T``; compiled only, for its memory).
  """
  f = getattr(softjax.losses, f"linear_{name}_loss")
  extra = (ENTMAX_ALPHA,) if name == "entmax" else ()
  opts: dict[str, Any] = {
    "ignore_index": IGNORE_INDEX,
    "label_smoothing": LABEL_SMOOTHING,
    "reduction": "mean",
  }
  if name == "softmax":
    opts["z_loss"] = Z_LOSS
  return {
    "plain": lambda h, w, y: f(h, w, y, *extra).mean(),
    "options": lambda h, w, y: f(h, w, y, *extra, **opts),
    "tied": lambda h, e, y: f(h, e, y, *extra, transposed_weight=True).mean(),
    "copy": lambda h, e, y: f(h, e.T, y, *extra).mean(),
  }


def option_labels(name: str) -> dict[str, str]:
  """The table's first cell of each row of one loss."""
  smoothing = f"`label_smoothing={LABEL_SMOOTHING:g}`"
  z = f", `z_loss={Z_LOSS_TEXT}`" if name == "softmax" else ""
  return {
    "options": f"`linear_{name}_loss`: `ignore_index={IGNORE_INDEX}` "
    f"({IGNORED_FRACTION:.0%} of tokens), {smoothing}{z}, "
    '`reduction="mean"`',
    "tied": f"`linear_{name}_loss`: `transposed_weight=True` (`[V, d]` table)",
  }


def run_options(
  v: int,
  tokens: int,
  dim: int,
  names: Sequence[str],
  repeats: int,
  max_temp: float,
  notes: list[str],
) -> list[list[str]]:
  """Rows of the options table: two per loss (options, tied)."""
  kh, kw, ky, kp = jax.random.split(jax.random.key(0), 4)
  h = jax.random.normal(kh, (tokens, dim), jnp.float32)
  w = jax.random.normal(kw, (dim, v), jnp.float32) / np.sqrt(dim)
  table = jnp.asarray(np.ascontiguousarray(np.asarray(w).T))  # [V, d]
  y = jax.random.randint(ky, (tokens,), 0, v)
  ignored = jax.random.permutation(kp, tokens)[
    : round(tokens * IGNORED_FRACTION)
  ]
  y_pad = y.at[ignored].set(IGNORE_INDEX)
  inputs = {
    "plain": (h, w, y),
    "options": (h, w, y_pad),
    "tied": (h, table, y),
    "copy": (h, table, y),
  }
  cands, temps = [], {}
  for name in names:
    for kind, loss in option_candidates(name).items():
      key, args = f"{name} {kind}", inputs[kind]
      fn = _grad_fn(loss)
      temps[key] = temp = _temp_bytes(fn, args)
      if kind == "copy":
        continue  # memory only
      if temp is not None and temp > max_temp * 2**30:
        notes.append(
          f"`{key}` not run: it needs {temp / 2**30:.1f} GiB of temp "
          f"memory (--max-temp-gib {max_temp:g})."
        )
        continue
      cands.append(
        bench.Candidate(
          key,
          lambda: None,
          lambda fn=fn, a=args: jax.block_until_ready(fn(*a)),
        )
      )
  cands = bench.warm_up(cands, notes)
  timed = {c.name: c.fwd_bwd for c in cands}
  samples = timing.time_interleaved(timed, repeats) if timed else {}
  return option_rows(names, temps, samples)


def _mib(temp: int | None) -> str:
  return "—" if temp is None else f"{temp / 2**20:.1f}"


def option_rows(
  names: Sequence[str],
  temps: dict[str, int | None],
  samples: dict[str, list[float]],
) -> list[list[str]]:
  """``loss | options (ms) | plain (ms) | ratio | temps | n`` per row."""
  rows = []
  for name in names:
    base = f"{name} plain"
    labels = option_labels(name)
    for kind in ("options", "tied"):
      key = f"{name} {kind}"
      if key in samples and base in samples:
        a, b = samples[key], samples[base]
        ratio = timing.paired_ratio(a, b)
        verdict = "ok" if ratio <= OPTIONS_TARGET else "**over**"
        cells = [
          f"{statistics.median(a) * 1e3:.0f}",
          f"{statistics.median(b) * 1e3:.0f}",
          f"{ratio:.2f} {verdict}",
        ]
      else:
        cells = ["—", "—", "—"]
      temp = f"{_mib(temps.get(key))} / {_mib(temps.get(base))}"
      if kind == "tied":
        temp += f" (`E.T`: {_mib(temps.get(f'{name} copy'))})"
      rows.append([labels[kind], *cells, temp, str(len(samples.get(key, [])))])
  return rows


def size_heading(tokens: int, dim: int, v: int) -> str:
  return f"## tokens = {tokens}, d = {dim}, V = {v}"


def _is_boundary(line: str) -> bool:
  """Where an options section ends: a heading of level 1 to 3, or the
  main run's notes."""
  return line.startswith(("# ", "## ", "### ")) or line == "**Notes.**"


def options_section(text: str) -> tuple[str, str] | None:
  """``(size heading, section)`` of the options section in ``text``."""
  lines = text.split("\n")
  if OPTIONS_HEADING not in lines:
    return None
  start = lines.index(OPTIONS_HEADING)
  end = next(
    (i for i in range(start + 1, len(lines)) if _is_boundary(lines[i])),
    len(lines),
  )
  heading = next(
    (lines[i] for i in range(start - 1, -1, -1) if lines[i][:3] == "## "),
    "",
  )
  return heading, "\n".join(lines[start:end]).strip() + "\n"


def splice_options(text: str, heading: str, section: str) -> str:
  """``text`` with ``section`` as its options section: in place of an
  earlier one, else at the end of the section under ``heading`` (added
  at the end when missing)."""
  section = section.strip() + "\n"
  lines = text.rstrip("\n").split("\n") if text.strip() else [TITLE]
  if OPTIONS_HEADING in lines:
    start = lines.index(OPTIONS_HEADING)
    end = next(
      (i for i in range(start + 1, len(lines)) if _is_boundary(lines[i])),
      len(lines),
    )
  elif heading in lines:
    start = end = next(
      (
        i
        for i in range(lines.index(heading) + 1, len(lines))
        if lines[i].startswith(("# ", "## ")) or lines[i] == "**Notes.**"
      ),
      len(lines),
    )
  else:
    lines += ["", heading, ""]
    start = end = len(lines)
  new = section.split("\n")
  before = lines[:start]
  if before and before[-1] != "":
    new = ["", *new]
  if end >= len(lines):
    new = new[:-1]  # the text ends with the section's last line
  return "\n".join(before + new + lines[end:]).rstrip("\n") + "\n"


def render_options(
  rows: list[list[str]],
  env: str,
  command: str,
  notes: list[str],
) -> str:
  header = [
    "loss",
    "options (ms)",
    "plain (ms)",
    f"ratio (≤ {OPTIONS_TARGET:g})",
    "temps (MiB)",
    "n",
  ]
  parts = [
    OPTIONS_HEADING,
    "",
    env,
    "",
    f"Command: `{command}`",
    "",
    f"**Method.** {OPTIONS_METHOD}",
    "",
    timing.markdown_table(header, rows),
  ]
  if notes:
    parts += ["", "Notes on these rows:", ""] + [f"- {n}" for n in notes]
  return "\n".join(parts) + "\n"


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
    default=None,
    help="comma-separated vocabulary sizes (default "
    f"{','.join(map(str, VOCABS))}; --options: the first only)",
  )
  p.add_argument(
    "--losses",
    default=None,
    help=f"comma-separated subset of {','.join(LOSSES)} (default: all; "
    f"--options: {','.join(OPTION_LOSSES)})",
  )
  p.add_argument(
    "--chunks",
    default="",
    help="extra chunk sizes to time linear_*_loss at (at the "
    "first --vocab only)",
  )
  p.add_argument(
    "--options",
    action="store_true",
    help="only the options measurement (padding, label smoothing, z-loss, "
    "reduction, tied embeddings) at the first --vocab, spliced into "
    "<out>/linear_loss.md",
  )
  p.add_argument("--repeats", type=int, default=None, help="default 5")
  p.add_argument(
    "--max-temp-gib",
    type=float,
    default=6.0,
    help="skip timing candidates needing more temp memory",
  )
  p.add_argument(
    "--quick",
    action="store_true",
    help="smoke test: a small size, 2 repeats (unless --vocab or --repeats "
    "are given), no file unless --out is given",
  )
  p.add_argument("--out", type=Path, default=None)
  a = p.parse_args(argv)
  default_losses = OPTION_LOSSES if a.options else LOSSES
  names = [n for n in (a.losses or ",".join(default_losses)).split(",") if n]
  for n in names:
    if n not in LOSSES:
      p.error(f"unknown loss {n!r}; choose from {','.join(LOSSES)}")
  chunks: list[int | None] = [None] + [int(c) for c in a.chunks.split(",") if c]
  tokens, dim = TOKENS, DIM
  vocabs, repeats = list(VOCABS), 5
  out_dir = a.out
  if a.quick:
    tokens, dim = QUICK["tokens"], QUICK["dim"]
    vocabs, repeats = list(QUICK["vocabs"]), QUICK["repeats"]
  elif out_dir is None:
    out_dir = _ROOT / "docs" / "benchmarks"
  if a.vocab:
    vocabs = [int(v) for v in a.vocab.split(",") if v]
  if a.repeats is not None:
    repeats = a.repeats
  if repeats < 1:
    p.error("--repeats must be at least 1")
  command = " ".join(
    [
      "python benchmarks/bench_linear_loss.py",
      *(argv if argv is not None else sys.argv[1:]),
    ]
  )
  path = None if out_dir is None else out_dir / "linear_loss.md"
  old = path.read_text(encoding="utf-8") if path and path.is_file() else ""

  notes: list[str] = []
  if a.options:
    v = vocabs[0]
    rows = run_options(v, tokens, dim, names, repeats, a.max_temp_gib, notes)
    section = render_options(
      rows,
      bench.environment_line(repeats, a.quick),
      command,
      group_failures(notes),
    )
    heading = size_heading(tokens, dim, v)
    print(f"{heading}\n\n{section}", end="", flush=True)
    if path is not None:
      out_dir.mkdir(parents=True, exist_ok=True)
      path.write_text(splice_options(old, heading, section), encoding="utf-8")
      print(f"[written to {path}: its options section]", flush=True)
    return

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
      f"{size_heading(tokens, dim, v)}\n\n"
      + timing.markdown_table(header, rows)
    )
    print(f"  V = {v} done", file=sys.stderr, flush=True)
  notes = group_failures(notes)
  text = "\n".join(
    [
      TITLE,
      "",
      bench.environment_line(repeats, a.quick),
      "",
      f"Command: `{command}`",
      "",
      f"**Method.** {METHOD}",
      "",
      "\n\n".join(sections),
      "",
    ]
    + (["**Notes.**", ""] + [f"- {n}" for n in notes] + [""] if notes else [])
  )
  kept = options_section(old)
  if kept is not None:  # an earlier --options run's section stays
    text = splice_options(text, *kept)
  timing.print_and_write(text, out_dir, "linear_loss.md")


if __name__ == "__main__":
  main()
