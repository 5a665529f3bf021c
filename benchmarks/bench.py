"""Speed of softjax's normalisers against jax.nn, optax and PyTorch entmax.

Usage::

  python benchmarks/bench.py [--suite dense|sparse|sharded|all] [--repeats N]
                             [--quick] [--out docs/benchmarks]
                             [--shapes 64x128,...] [--extra-shapes 32768x512]

Targets (median time as a multiple of ``jax.nn.softmax``, or of
``jax.nn.log_softmax`` for the log_softmax rows, measured in the same run on
the same input; fwd+bwd, and fwd alone where given):

  dense   softjax.softmax, softjax.log_softmax      fwd+bwd <= 1.10x
  sparse  softjax.sparsemax, softjax.entmax15       fwd+bwd <= 3x, fwd <= 3x
          softjax.entmax(x, alpha=1.3)              fwd+bwd <= 6x
          softjax.entmax with an array alpha        fwd+bwd <= 8x

Suites:

  dense   float32 (16384, 64), (4096, 128), (512, 4096), (64, 32768),
          (8, 262144); softjax.softmax vs jax.nn.softmax and
          softjax.log_softmax vs jax.nn.log_softmax.
  sparse  float32 (16384, 64), (4096, 128), (2048, 1024) (attention-sized
          rows), (512, 4096), (64, 32768), (8, 262144); jax.nn.softmax
          (baseline), softjax.sparsemax / entmax15 / entmax(alpha=1.3) /
          entmax with a per-row array alpha (learnable alpha), normmax
          (alpha=2, and a per-row array alpha), budget_sparsemax(k=8),
          optax's projection_simplex vmapped over rows, and PyTorch entmax's
          sparsemax / entmax15 / entmax_bisect(alpha=1.3) /
          normmax_bisect(alpha=2) / budget_bisect(budget=8) when ``torch``
          and ``entmax`` are importable. softjax functions that do not exist yet
          are skipped with a note, so the suite runs on a dense-only checkout.
          It also draws each map's ratio to jax.nn.softmax by shape
          (``--figure``, default ``docs/img/benchmarks.png`` with the tables).

  sharded a float32 (64, 262144) matrix with its class axis split over 4
          devices (8 simulated CPU devices when no accelerator: the suite
          re-runs itself with XLA_FLAGS set); softjax with ``axis_name``
          inside shard_map against all-gathering the axis and normalising it
          whole on every device.

Results are printed as markdown and written to ``<out>/<suite>.md``.
``--quick`` (smoke test: 3 repeats, first shape only) prints but writes no
file unless ``--out`` is given, so a smoke run never overwrites real numbers.
``--shapes`` replaces the dense and sparse suites' shapes; ``--extra-shapes``
adds to them (``benchmarks/device_check.sh`` adds an attention-sized one).

On a GPU, JAX runs on it and the PyTorch rows run on it too (when PyTorch
sees a GPU), each timed call ending with ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from collections.abc import Sequence
import dataclasses
import datetime
import functools
import hashlib
import os
from pathlib import Path
import platform
import statistics
import subprocess
import sys
import textwrap
from typing import Any

# PyTorch's OpenMP threads spin-wait after each call by default, stealing the
# cores from whatever runs next; measured here, that made jax.nn.softmax ~3x
# slower when timed right after a torch call. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax
import jax.numpy as jnp
import numpy as np
import timing  # benchmarks/timing.py, beside this file

# Benchmark the checkout this file lives in, not whatever softjax happens to be
# installed: `python benchmarks/bench.py` only puts benchmarks/ on the path.
_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))

import softjax  # noqa: E402  (needs the path above)

DENSE_SHAPES = [
  (16384, 64),
  (4096, 128),
  (512, 4096),
  (64, 32768),
  (8, 262144),
]
# Attention-sized rows (as long as the key sequence, many of them) first.
SPARSE_SHAPES = [
  (16384, 64),
  (4096, 128),
  (2048, 1024),
  (512, 4096),
  (64, 32768),
  (8, 262144),
]

DENSE_TARGET = 1.10
ARRAY_ALPHA = "softjax.entmax(alpha=1.5 array (rows, 1))"
# name -> (fwd target or None, fwd+bwd target), as multiples of jax.nn.softmax.
SPARSE_TARGETS = {
  "softjax.sparsemax": (3.0, 3.0),
  "softjax.entmax15": (3.0, 3.0),
  "softjax.entmax(alpha=1.3)": (None, 6.0),
  ARRAY_ALPHA: (None, 8.0),
}

# Each candidate's measurement should take ~BUDGET_S on average: long enough
# that the median is stable, short enough that the full run stays ~1 minute.
BUDGET_S = 0.4
MIN_REPEATS = 7
# Caps the count for very fast calls, where more samples stop helping.
MAX_REPEATS = 1000
QUICK_REPEATS = 3

TORCH_CPU = "(eager, CPU, `OMP_WAIT_POLICY=PASSIVE`)"
METHOD = (
  "Every JAX function is wrapped in `jax.jit`. *fwd* times `f(x)`; "
  "*fwd+bwd* times one jitted function `lambda x, g: jax.vjp(f, x)[1](g)` "
  "that runs the forward pass, the VJP and returns the input cotangent for "
  "a fixed random cotangent `g` (for the array-alpha row the cotangents of "
  "both `x` and `alpha`). Each function is compiled and run twice before "
  "timing; each sample is one call followed by `.block_until_ready()`, timed "
  "with `time.perf_counter` while Python's garbage collector is off. The "
  "candidates compared on one input are **interleaved**: each repeat times "
  "every candidate once (the starting candidate rotates between repeats), "
  "so machine noise falls on all of them alike, and the reported time is "
  "the median over the repeats. A ratio is the median over the repeats of "
  "the two candidates' times in the same repeat (calls that ran back to "
  "back), so a slow spell of the machine cancels instead of landing on "
  "one side. Unless `--repeats` is given, the number of "
  "repeats is chosen per group so that each candidate is timed for about "
  f"{BUDGET_S} s on average (at least {MIN_REPEATS}). Ratios are to the "
  "baseline (`jax.nn.softmax`, or `jax.nn.log_softmax` for log_softmax "
  "rows) timed in the same group, on the same input, in the same mode. "
  "Inputs are float32 `jax.random.normal(key, shape) * 3`, normalised over "
  "the last axis. In the sparse suite each candidate is timed in a pair "
  "with the baseline (interleaved), and its ratio is taken within that "
  "pair; the baseline row shows the median of its pair medians. PyTorch "
  "rows "
  f"{TORCH_CPU} time the call under "
  "`torch.no_grad()` for fwd and `out = f(x); out.backward(g)` on a "
  "`requires_grad` input for fwd+bwd."
)

# Where the PyTorch rows ran, as METHOD says it (see torch_device).
TORCH_CUDA = (
  "(eager, on the same GPU as JAX; each timed call ends with "
  "`torch.cuda.synchronize()`)"
)

Thunk = timing.Thunk


# --------------------------------------------------------------------------
# Timing (the helpers are in timing.py, shared with the other scripts).


def choose_repeats(
  thunks: Sequence[Thunk],
  budget_s: float = BUDGET_S,
  min_repeats: int = MIN_REPEATS,
) -> int:
  """Repeats so that each thunk is timed for ~budget_s on average."""
  return timing.choose_repeats(thunks, budget_s, min_repeats, MAX_REPEATS)


# --------------------------------------------------------------------------
# Candidates.


@dataclasses.dataclass
class Candidate:
  name: str
  fwd: Thunk
  fwd_bwd: Thunk


def jax_candidate(
  name: str, f: Callable[..., jax.Array], *args: jax.Array, g: jax.Array
) -> Candidate:
  """Jitted forward and forward+backward of ``f(*args)``.

  fwd+bwd differentiates with respect to every argument, so a learnable
  alpha passed as an argument is charged for its cotangent too.
  """
  fwd = jax.jit(f)
  fwd_bwd = jax.jit(lambda g, *a: jax.vjp(f, *a)[1](g))
  return Candidate(
    name,
    lambda: jax.block_until_ready(fwd(*args)),
    lambda: jax.block_until_ready(fwd_bwd(g, *args)),
  )


def torch_device(torch: Any) -> str:
  """ "cuda" when JAX runs on a GPU that PyTorch also sees, else "cpu"."""
  if jax.default_backend() == "gpu" and torch.cuda.is_available():
    return "cuda"
  return "cpu"


def torch_candidate(
  name: str,
  f: Callable[[Any], Any],
  x: np.ndarray,
  g: np.ndarray,
  device: str = "cpu",
) -> Candidate:
  import torch  # pylint: disable=import-outside-toplevel

  xt = torch.from_numpy(np.array(x)).to(device)
  gt = torch.from_numpy(np.array(g)).to(device)
  xr = xt.clone().requires_grad_(True)

  def fwd():
    with torch.no_grad():
      return f(xt)

  def fwd_bwd():
    # backward accumulates into .grad; clearing it keeps every call alike.
    xr.grad = None
    f(xr).backward(gt)
    return xr.grad

  if device == "cpu":
    # Eager CPU torch is synchronous: the call has finished when it returns.
    return Candidate(name, fwd, fwd_bwd)
  # On a GPU the call only queues kernels: wait for them, as JAX's thunks
  # wait with block_until_ready.
  return Candidate(
    name,
    lambda: (fwd(), torch.cuda.synchronize()),
    lambda: (fwd_bwd(), torch.cuda.synchronize()),
  )


def warm_up(
  candidates: Sequence[Candidate], notes: list[str]
) -> list[Candidate]:
  """Compiles every candidate; one that fails is dropped with a note.

  A failing function still under development should cost its own row, not
  the whole run.
  """
  ok = []
  for c in candidates:
    try:
      for _ in range(2):
        c.fwd()
        c.fwd_bwd()
    except Exception as e:  # pylint: disable=broad-except
      first_line = (str(e).strip().splitlines() or [""])[0][:200]
      notes.append(
        f"`{c.name}` failed and was skipped: {type(e).__name__}: {first_line}"
      )
      continue
    ok.append(c)
  return ok


@dataclasses.dataclass
class Result:
  fwd_samples: dict[str, list[float]]
  fwd_bwd_samples: dict[str, list[float]]

  @property
  def fwd_s(self) -> dict[str, float]:
    """Median seconds per call, forward."""
    return timing.medians(self.fwd_samples)

  @property
  def fwd_bwd_s(self) -> dict[str, float]:
    """Median seconds per call, forward+backward."""
    return timing.medians(self.fwd_bwd_samples)

  @property
  def repeats(self) -> tuple[int, int]:
    """Number of repeats (fwd, fwd+bwd)."""
    return (
      len(next(iter(self.fwd_samples.values()))),
      len(next(iter(self.fwd_bwd_samples.values()))),
    )

  def ratio(self, mode: str, name: str, base: str) -> float:
    """Median over repeats of ``name``'s time over ``base``'s in that repeat
    (see ``timing.paired_ratio``)."""
    samples = self.fwd_samples if mode == "fwd" else self.fwd_bwd_samples
    return timing.paired_ratio(samples[name], samples[base])


def measure(candidates: Sequence[Candidate], repeats: int | None) -> Result:
  """Times every candidate in both modes, each mode as one interleaved group."""

  def group(mode: str) -> dict[str, list[float]]:
    thunks = {c.name: getattr(c, mode) for c in candidates}
    n = repeats or choose_repeats(list(thunks.values()))
    return timing.time_interleaved(thunks, n)

  return Result(group("fwd"), group("fwd_bwd"))


def make_inputs(
  shape: tuple[int, ...], seed: int = 0
) -> tuple[jax.Array, jax.Array]:
  kx, kg = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, shape, jnp.float32) * 3
  g = jax.random.normal(kg, shape, jnp.float32)
  return x, g


# --------------------------------------------------------------------------
# Markdown.


# bench_linear_pieces.py calls these as bench.*; they live in timing.py.
time_interleaved = timing.time_interleaved
markdown_table = timing.markdown_table


def source_version() -> str:
  """The commit benchmarked, and a fingerprint of uncommitted softjax edits.

  Numbers from a dirty tree are only reproducible if one can tell which
  edits they measured.
  """

  def git(*args: str) -> str:
    return subprocess.run(
      ["git", "-C", str(_ROOT), *args],
      check=True,
      capture_output=True,
      text=True,
    ).stdout

  try:
    commit = git("rev-parse", "--short", "HEAD").strip()
    diff = git("diff", "HEAD", "--", "softjax")
    untracked = git(
      "ls-files", "--others", "--exclude-standard", "--", "softjax"
    ).split()
  except (OSError, subprocess.CalledProcessError):
    return "softjax (no git)"
  if not diff and not untracked:
    return f"softjax @ {commit}"
  h = hashlib.sha1(diff.encode())
  for name in sorted(untracked):
    h.update((_ROOT / name).read_bytes())
  return f"softjax @ {commit} + uncommitted edits (sha1 {h.hexdigest()[:10]})"


def environment_line(
  repeats: int | None, quick: bool, extra: Sequence[str] = ()
) -> str:
  dev = jax.devices()[0]
  cpu_model = platform.processor() or "unknown CPU"
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          cpu_model = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  if repeats:
    rep = f"repeats {repeats}"
  else:
    rep = (
      f"repeats auto (≥{MIN_REPEATS}, ~{BUDGET_S} s per candidate; column n)"
    )
  parts = [
    datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    source_version(),
    f"jax {jax.__version__}",
    f"device {dev.device_kind} ({dev.platform})",
    f"{os.cpu_count()} CPUs ({cpu_model})",
    f"Python {platform.python_version()}",
    *extra,
    rep,
  ]
  if quick:
    parts.append("QUICK smoke run (not representative)")
  return " · ".join(parts)


def emit_report(
  suite: str,
  title: str,
  body: str,
  out_dir: Path | None,
  *,
  repeats: int | None,
  quick: bool,
  notes: Sequence[str] = (),
  extra_env: Sequence[str] = (),
  method: str = METHOD,
) -> str:
  """Prints a suite's report and writes it to ``out_dir/<suite>.md``.

  ``body`` is the suite's own markdown (its tables); the header line, the
  method paragraph and the notes are the same for every suite.
  """
  parts = [
    f"# {title}",
    "",
    environment_line(repeats, quick, extra_env),
    "",
    "Command: `"
    + " ".join(["python benchmarks/bench.py", *sys.argv[1:]])
    + "`",
    "",
    f"**Method.** {method}",
    "",
    body.rstrip(),
    "",
  ]
  if notes:
    parts += ["**Notes.**", ""] + [f"- {n}" for n in notes] + [""]
  text = "\n".join(parts)
  timing.print_and_write(text, out_dir, f"{suite}.md", end="\n\n")
  return text


# --------------------------------------------------------------------------
# Suites.


def run_dense(
  shapes: Sequence[tuple[int, ...]], repeats: int | None
) -> tuple[str, list[str]]:
  pairs = [
    ("softmax", softjax.softmax, jax.nn.softmax),
    ("log_softmax", softjax.log_softmax, jax.nn.log_softmax),
  ]
  header = [
    "function",
    "shape",
    "fwd softjax (ms)",
    "fwd jax.nn (ms)",
    "fwd ratio",
    "fwd+bwd softjax (ms)",
    "fwd+bwd jax.nn (ms)",
    f"fwd+bwd ratio (target ≤ {DENSE_TARGET:.2f})",
    "n (fwd/fwd+bwd)",
  ]
  rows, notes = [], []
  for name, ours, theirs in pairs:
    for shape in shapes:
      x, g = make_inputs(shape)
      a, b = f"softjax.{name}", f"jax.nn.{name}"
      cands = warm_up(
        [jax_candidate(a, ours, x, g=g), jax_candidate(b, theirs, x, g=g)],
        notes,
      )
      if len(cands) < 2:
        continue
      r = measure(cands, repeats)
      fb_ratio = r.ratio("fwd_bwd", a, b)
      verdict = "ok" if fb_ratio <= DENSE_TARGET else "**over**"
      rows.append(
        [
          f"`{name}`",
          timing.shape_text(shape),
          timing.ms(r.fwd_s[a]),
          timing.ms(r.fwd_s[b]),
          f"{r.ratio('fwd', a, b):.2f}",
          timing.ms(r.fwd_bwd_s[a]),
          timing.ms(r.fwd_bwd_s[b]),
          f"{fb_ratio:.2f} {verdict}",
          f"{r.repeats[0]}/{r.repeats[1]}",
        ]
      )
      print(
        f"  dense {name} {timing.shape_text(shape)} done",
        file=sys.stderr,
        flush=True,
      )
  return timing.markdown_table(header, rows), notes


def _torch_entmax() -> tuple[Any, Any, str | None]:
  """(torch, entmax) modules, or a note saying why they are missing."""
  try:
    import entmax  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    return (
      None,
      None,
      (
        f"PyTorch entmax rows skipped: {e} "
        "(`pip install torch entmax` to include them)."
      ),
    )
  return torch, entmax, None


def run_sparse(
  shapes: Sequence[tuple[int, ...]], repeats: int | None
) -> tuple[str, list[str], list[str]]:
  import optax  # pylint: disable=import-outside-toplevel

  notes: list[str] = []
  for fn in ("sparsemax", "entmax15", "entmax"):
    if not hasattr(softjax, fn):
      notes.append(f"`softjax.{fn}` does not exist yet: its rows are skipped.")
  torch, entmax, torch_note = _torch_entmax()
  if torch_note:
    notes.append(torch_note)
  extra_env = [f"optax {optax.__version__}"]
  device = "cpu" if torch is None else torch_device(torch)
  if device == "cuda":
    extra_env.append(
      f"torch {torch.__version__} on {torch.cuda.get_device_name()}"
    )
  elif torch is not None:
    extra_env.append(
      f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )

  base = "jax.nn.softmax"
  header = [
    "function",
    "fwd (ms)",
    "fwd ratio",
    "fwd+bwd (ms)",
    "fwd+bwd ratio",
    "target (fwd / fwd+bwd)",
    "n (fwd/fwd+bwd)",
  ]
  sections = []
  ratios: dict[str, dict[tuple[int, ...], tuple[float, float]]] = {}
  project = jax.vmap(optax.projections.projection_simplex)
  for shape in shapes:
    x, g = make_inputs(shape)
    cands = [jax_candidate(base, jax.nn.softmax, x, g=g)]
    if hasattr(softjax, "sparsemax"):
      cands.append(
        jax_candidate("softjax.sparsemax", softjax.sparsemax, x, g=g)
      )
    if hasattr(softjax, "entmax15"):
      cands.append(jax_candidate("softjax.entmax15", softjax.entmax15, x, g=g))
    if hasattr(softjax, "entmax"):
      cands.append(
        jax_candidate(
          "softjax.entmax(alpha=1.3)",
          functools.partial(softjax.entmax, alpha=1.3),
          x,
          g=g,
        )
      )
      # An argument, not a closed-over constant: jit must not fold it, and
      # fwd+bwd then pays for the alpha cotangent as training would.
      alpha = jnp.full((shape[0], 1), 1.5, jnp.float32)
      cands.append(
        jax_candidate(
          "softjax.entmax(alpha=1.5 array (rows, 1))",
          lambda x, a: softjax.entmax(x, alpha=a),
          x,
          alpha,
          g=g,
        )
      )
    if hasattr(softjax, "normmax"):
      cands.append(
        jax_candidate("softjax.normmax(alpha=2)", softjax.normmax, x, g=g)
      )
      alpha2 = jnp.full((shape[0], 1), 2.0, jnp.float32)
      cands.append(
        jax_candidate(
          "softjax.normmax(alpha=2 array (rows, 1))",
          lambda x, a: softjax.normmax(x, alpha=a),
          x,
          alpha2,
          g=g,
        )
      )
    if hasattr(softjax, "budget_sparsemax"):
      cands.append(
        jax_candidate(
          "softjax.budget_sparsemax(k=8)",
          functools.partial(softjax.budget_sparsemax, k=8.0),
          x,
          g=g,
        )
      )
    cands.append(
      jax_candidate("optax projection_simplex (vmap)", project, x, g=g)
    )
    if torch is not None:
      xn, gn = np.asarray(x), np.asarray(g)
      cands += [
        torch_candidate(
          "torch entmax.sparsemax", entmax.sparsemax, xn, gn, device
        ),
        torch_candidate(
          "torch entmax.entmax15", entmax.entmax15, xn, gn, device
        ),
        torch_candidate(
          "torch entmax.entmax_bisect(alpha=1.3)",
          functools.partial(entmax.entmax_bisect, alpha=1.3),
          xn,
          gn,
          device,
        ),
      ]
      for name, fn in (
        ("normmax_bisect(alpha=2)", "normmax_bisect"),
        ("budget_bisect(budget=8)", "budget_bisect"),
      ):
        if hasattr(entmax, fn):
          kw = {"alpha": 2.0} if fn == "normmax_bisect" else {"budget": 8}
          cands.append(
            torch_candidate(
              f"torch entmax.{name}",
              functools.partial(getattr(entmax, fn), **kw),
              xn,
              gn,
            )
          )
    # Each candidate is timed in a pair with the baseline, interleaved, and
    # its ratio taken within the pair. In one group with everything, the
    # baseline ran after calls that freed and re-faulted large buffers (and
    # after PyTorch's thread pool) and was measured up to 2x slower than
    # alone, which flattered every ratio.
    cands = warm_up(cands, notes)
    if not cands or cands[0].name != base:
      notes.append(f"{timing.shape_text(shape)}: baseline failed; no table.")
      continue
    rows, base_fwd, base_fb, counts = [], [], [], []
    for c in cands[1:]:
      res = measure([cands[0], c], repeats)
      base_fwd.append(res.fwd_s[base])
      base_fb.append(res.fwd_bwd_s[base])
      counts.append(res.repeats)
      fwd_ratio = res.ratio("fwd", c.name, base)
      fb_ratio = res.ratio("fwd_bwd", c.name, base)
      ratios.setdefault(c.name, {})[shape] = (fwd_ratio, fb_ratio)
      rows.append(
        [
          f"`{c.name}`",
          timing.ms(res.fwd_s[c.name]),
          f"{fwd_ratio:.2f}",
          timing.ms(res.fwd_bwd_s[c.name]),
          f"{fb_ratio:.2f}",
          _verdict(SPARSE_TARGETS.get(c.name), fwd_ratio, fb_ratio),
          f"{res.repeats[0]}/{res.repeats[1]}",
        ]
      )
    rows.insert(
      0,
      [
        f"`{base}` (median over its pairs)",
        timing.ms(statistics.median(base_fwd)),
        "1.00",
        timing.ms(statistics.median(base_fb)),
        "1.00",
        "—",
        "—",
      ],
    )
    sections.append(
      f"## {timing.shape_text(shape)}\n\n" + timing.markdown_table(header, rows)
    )
    print(
      f"  sparse {timing.shape_text(shape)} done", file=sys.stderr, flush=True
    )
  return "\n\n".join(sections), notes, extra_env, device, ratios


def _verdict(
  target: tuple[float | None, float] | None, fwd: float, fwd_bwd: float
) -> str:
  """The target cell: each target met ("ok") or not ("**over**")."""
  if target is None:
    return "—"
  parts = []
  for limit, value, mode in zip(target, (fwd, fwd_bwd), ("fwd", "fwd+bwd")):
    if limit is not None:
      ok = "ok" if value <= limit else "**over**"
      parts.append(f"{mode} ≤ {limit:g}× {ok}")
  return ", ".join(parts)


def draw_figure(
  ratios: dict[str, dict[tuple[int, ...], tuple[float, float]]],
  shapes: Sequence[tuple[int, ...]],
  path: Path,
  title: str,
) -> str | None:
  """Each candidate's ratio to jax.nn.softmax by shape, fwd and fwd+bwd.

  Returns a note when the figure could not be drawn (no matplotlib).
  """
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    return "matplotlib is not installed: no figure was drawn."
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
  ticks = range(len(shapes))
  # tab10 repeats its colours after ten lines; the sparse suite draws more.
  colours = plt.get_cmap("tab20").colors
  for ax, mode, label in zip(axes, (0, 1), ("fwd", "fwd+bwd")):
    for k, (name, by_shape) in enumerate(ratios.items()):
      xs = [i for i, s in enumerate(shapes) if s in by_shape]
      ys = [by_shape[shapes[i]][mode] for i in xs]
      style = "--" if name.startswith(("torch", "optax")) else "-"
      ax.plot(
        xs,
        ys,
        style,
        marker="o",
        color=colours[k % len(colours)],
        label=name.replace("softjax.", ""),
      )
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(
      list(ticks), [timing.shape_text(s) for s in shapes], rotation=30
    )
    ax.set_title(f"{label}: time / jax.nn.softmax {label}")
    ax.grid(True, which="both", axis="y", alpha=0.3)
  axes[0].set_ylabel("ratio (log scale)")
  axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  fig.suptitle(textwrap.fill(title, 140), fontsize=8)
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  print(f"[figure written to {path}]", flush=True)
  return None


SHARDED_SHAPE = (64, 262144)
SHARDED_DEVICES = 4
_FORCE_HOST = "--xla_force_host_platform_device_count=8"


def _gather_then_normalise(f, x_local, axis_name):
  """The baseline: all-gather the class axis, normalise it whole, keep ours."""
  full = jax.lax.all_gather(x_local, axis_name, axis=1, tiled=True)
  out = f(full)
  index = jax.lax.axis_index(axis_name)
  width = x_local.shape[1]
  return jax.lax.dynamic_slice_in_dim(out, index * width, width, axis=1)


def run_sharded(
  shape: tuple[int, ...], repeats: int | None
) -> tuple[str, list[str]]:
  """softjax with axis_name against gathering the class axis, on 4 devices."""
  from jax.sharding import NamedSharding  # pylint: disable=import-outside-toplevel
  from jax.sharding import PartitionSpec as P  # pylint: disable=import-outside-toplevel

  notes = [
    f"{SHARDED_DEVICES} of {jax.device_count()} devices "
    f"({jax.devices()[0].platform}); the class axis of a "
    f"{timing.shape_text(shape)} float32 matrix is split over them."
  ]
  if jax.devices()[0].platform == "cpu":
    notes.append(
      "Simulated CPU devices share the machine's cores, so this "
      "measures the work and memory traffic of each approach, not "
      "interconnect bandwidth."
    )
  mesh = jax.make_mesh(
    (SHARDED_DEVICES,), ("model",), devices=jax.devices()[:SHARDED_DEVICES]
  )
  spec = P(None, "model")
  x, g = make_inputs(shape)
  x = jax.device_put(x, NamedSharding(mesh, spec))
  g = jax.device_put(g, NamedSharding(mesh, spec))
  fns = [
    ("softmax", softjax.softmax),
    ("sparsemax", softjax.sparsemax),
    ("entmax15", softjax.entmax15),
    ("entmax(alpha=1.3)", functools.partial(softjax.entmax, alpha=1.3)),
  ]
  header = [
    "function",
    "fwd axis_name (ms)",
    "fwd gather (ms)",
    "fwd ratio",
    "fwd+bwd axis_name (ms)",
    "fwd+bwd gather (ms)",
    "fwd+bwd ratio",
  ]
  rows = []
  for name, f in fns:
    ours = jax.shard_map(
      functools.partial(f, axis_name="model"),
      mesh=mesh,
      in_specs=spec,
      out_specs=spec,
    )
    gather = jax.shard_map(
      functools.partial(_gather_then_normalise, f, axis_name="model"),
      mesh=mesh,
      in_specs=spec,
      out_specs=spec,
    )
    a, b = f"softjax.{name} axis_name", f"gather + softjax.{name}"
    cands = warm_up(
      [jax_candidate(a, ours, x, g=g), jax_candidate(b, gather, x, g=g)], notes
    )
    if len(cands) < 2:
      continue
    r = measure(cands, repeats)
    rows.append(
      [
        f"`{name}`",
        timing.ms(r.fwd_s[a]),
        timing.ms(r.fwd_s[b]),
        f"{r.ratio('fwd', a, b):.2f}",
        timing.ms(r.fwd_bwd_s[a]),
        timing.ms(r.fwd_bwd_s[b]),
        f"{r.ratio('fwd_bwd', a, b):.2f}",
      ]
    )
    print(f"  sharded {name} done", file=sys.stderr, flush=True)
  return timing.markdown_table(header, rows), notes


def parse_shapes(text: str) -> list[tuple[int, ...]]:
  """``"64x128,8x1024"`` -> ``[(64, 128), (8, 1024)]``."""
  try:
    shapes = [
      tuple(int(n) for n in item.split("x"))
      for item in text.split(",")
      if item.strip()
    ]
  except ValueError:
    shapes = []
  if not shapes or any(n < 1 for s in shapes for n in s):
    raise argparse.ArgumentTypeError(
      f"expected shapes like 64x128,8x1024; got {text!r}"
    )
  return shapes


def _rerun_with_devices(argv: Sequence[str]) -> None:
  """Runs this script again with 8 simulated host devices (sharded suite)."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + _FORCE_HOST).strip()
  subprocess.run([sys.executable, __file__, *argv], env=env, check=True)


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument(
    "--suite", choices=["dense", "sparse", "sharded", "all"], default="all"
  )
  p.add_argument(
    "--repeats",
    type=int,
    default=None,
    help=f"repeats per group (default: chosen per group, ≥ {MIN_REPEATS})",
  )
  p.add_argument(
    "--quick",
    action="store_true",
    help=f"smoke test: {QUICK_REPEATS} repeats, first shape only, "
    "no file written unless --out is given",
  )
  p.add_argument(
    "--out",
    type=Path,
    default=None,
    help="folder for <suite>.md (default docs/benchmarks)",
  )
  p.add_argument(
    "--figure",
    type=Path,
    default=None,
    help="where the sparse suite draws its ratios (default "
    "docs/img/benchmarks.png when the tables go to docs/benchmarks)",
  )
  p.add_argument(
    "--shapes",
    type=parse_shapes,
    default=None,
    help="dense and sparse shapes instead of the suites' own, "
    "e.g. 64x128,8x1024",
  )
  p.add_argument(
    "--extra-shapes",
    type=parse_shapes,
    default=[],
    help="shapes added to the dense and sparse suites, e.g. 32768x512",
  )
  args = p.parse_args(argv)

  repeats = args.repeats
  out_dir = args.out
  figure = args.figure
  dense_shapes, sparse_shapes = DENSE_SHAPES, SPARSE_SHAPES
  if args.shapes:
    dense_shapes = sparse_shapes = args.shapes
  if args.quick:
    repeats = repeats or QUICK_REPEATS
    dense_shapes, sparse_shapes = dense_shapes[:1], sparse_shapes[:1]
  elif out_dir is None:
    out_dir = _ROOT / "docs" / "benchmarks"
    figure = figure or _ROOT / "docs" / "img" / "benchmarks.png"
  if repeats is not None and repeats < 1:
    p.error("--repeats must be at least 1")
  dense_shapes = dense_shapes + args.extra_shapes
  sparse_shapes = sparse_shapes + args.extra_shapes

  if args.suite in ("dense", "all"):
    body, notes = run_dense(dense_shapes, repeats)
    emit_report(
      "dense",
      "softjax dense benchmarks",
      body,
      out_dir,
      repeats=repeats,
      quick=args.quick,
      notes=notes,
    )
  if args.suite in ("sparse", "all"):
    body, notes, extra_env, device, ratios = run_sparse(sparse_shapes, repeats)
    if figure is not None:
      note = draw_figure(
        ratios,
        sparse_shapes,
        figure,
        environment_line(repeats, args.quick, extra_env),
      )
      if note:
        notes.append(note)
    emit_report(
      "sparse",
      "softjax sparse benchmarks",
      body,
      out_dir,
      repeats=repeats,
      quick=args.quick,
      notes=notes,
      extra_env=extra_env,
      method=METHOD.replace(TORCH_CPU, TORCH_CUDA)
      if device == "cuda"
      else METHOD,
    )
  if args.suite in ("sharded", "all"):
    if jax.device_count() < SHARDED_DEVICES and _FORCE_HOST in os.environ.get(
      "XLA_FLAGS", ""
    ):
      # Simulated host devices do not help when the default backend is an
      # accelerator (one GPU): the child would find one device again.
      print(
        f"sharded suite skipped: it needs {SHARDED_DEVICES} devices of "
        f"the default backend, and this machine has "
        f"{jax.device_count()} ({jax.default_backend()})",
        file=sys.stderr,
        flush=True,
      )
    elif jax.device_count() < SHARDED_DEVICES:
      # Device count is fixed when JAX starts: run the suite in a child.
      rest = [a for a in (argv if argv is not None else sys.argv[1:])]
      if "--suite" in rest:
        i = rest.index("--suite")
        del rest[i : i + 2]
      rest = [a for a in rest if not a.startswith("--suite=")]
      _rerun_with_devices(["--suite", "sharded", *rest])
    else:
      shape = SHARDED_SHAPE if not args.quick else (8, 65536)
      body, notes = run_sharded(shape, repeats)
      emit_report(
        "sharded",
        "softjax sharded benchmarks",
        body,
        out_dir,
        repeats=repeats,
        quick=args.quick,
        notes=notes,
      )


if __name__ == "__main__":
  main()
