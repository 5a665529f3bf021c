"""The figures of the documentation, computed with softjax itself.

The docs build calls :func:`render` from ``docs/_hooks.py`` and serves the
PNGs from memory (nothing is written into ``docs/``). To write them to a
folder, e.g. to refresh the README figure ``docs/img/normalisers.png``::

    python docs/figures.py docs/img            # every figure
    python docs/figures.py docs/img normalisers
"""

from __future__ import annotations

from collections.abc import Callable
import io
import json
from pathlib import Path
import sys

import matplotlib

matplotlib.use("Agg")

# Draw with the checkout this file lives in, not an installed softjax.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

import softjax  # noqa: E402

DPI = 110
COLORS = {"softmax": "#1f77b4", "entmax15": "#2ca02c", "sparsemax": "#d62728"}
# Byte-identical PNGs from one run to the next (no date, no version).
METADATA = {"Software": None}


def _png(fig: plt.Figure) -> bytes:
  buf = io.BytesIO()
  fig.savefig(
    buf, format="png", dpi=DPI, metadata=METADATA, bbox_inches="tight"
  )
  plt.close(fig)
  return buf.getvalue()


def normalisers() -> bytes:
  """Two classes: p_1 against the score difference t = x_1 - x_2."""
  t = np.linspace(-3.0, 3.0, 601, dtype=np.float32)
  x = jnp.stack([jnp.asarray(t), jnp.zeros_like(t)], axis=-1)
  fig, ax = plt.subplots(figsize=(6.0, 3.6))
  # Jitted (compiling is cheaper than running the solver op by op); the two
  # extra α share one call with an array α of shape (2, 1, 1).
  other = np.asarray(
    jax.jit(softjax.entmax)(
      jnp.broadcast_to(x, (2,) + x.shape), jnp.array([1.25, 4.0])[:, None, None]
    )
  )
  curves = [
    ("softmax", jax.jit(softjax.softmax)(x), "-", COLORS["softmax"]),
    ("entmax(α=1.25)", other[0], ":", "#17becf"),
    ("entmax15 (α=1.5)", jax.jit(softjax.entmax15)(x), "-", COLORS["entmax15"]),
    (
      "sparsemax (α=2)",
      jax.jit(softjax.sparsemax)(x),
      "-",
      COLORS["sparsemax"],
    ),
    ("entmax(α=4)", other[1], ":", "#9467bd"),
  ]
  for label, p, style, color in curves:
    ax.plot(t, np.asarray(p)[:, 0], style, color=color, label=label, lw=2)
  ax.set_xlabel(r"score difference $t = x_1 - x_2$")
  ax.set_ylabel(r"$p_1$")
  ax.set_title("Two classes: softmax never reaches 0 or 1, sparse maps do")
  ax.grid(alpha=0.3)
  ax.legend(loc="upper left", fontsize=8)
  return _png(fig)


def support() -> bytes:
  """Support size of α-entmax against α, for fixed random scores."""
  x = jax.random.normal(jax.random.key(0), (64,)) * 1.0
  alphas = np.linspace(1.0, 3.0, 81)
  temperatures = [0.5, 1.0, 2.0]
  # One jitted call: axis 0 the temperature, axis 1 α (array arguments with
  # size 1 along the normalised axis broadcast against the scores).
  p = jax.jit(softjax.entmax)(
    jnp.broadcast_to(x, (len(temperatures), alphas.size, x.size)),
    jnp.asarray(alphas, jnp.float32)[None, :, None],
    temperature=jnp.asarray(temperatures)[:, None, None],
  )
  all_sizes = np.asarray(jnp.sum(p > 0, axis=-1))
  fig, ax = plt.subplots(figsize=(6.0, 3.4))
  for temperature, sizes, color in zip(
    temperatures, all_sizes, ["#d62728", "#2ca02c", "#1f77b4"]
  ):
    ax.plot(
      alphas, sizes, color=color, lw=2, label=f"temperature {temperature}"
    )
  ax.set_xlabel("α")
  ax.set_ylabel("entries > 0 (of 64)")
  ax.set_title("Support of α-entmax on 64 standard-normal scores")
  ax.set_ylim(0, 66)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return _png(fig)


def temperature() -> bytes:
  """Each entry of softmax and sparsemax of [1, 3, 2] against temperature."""
  x = jnp.array([1.0, 3.0, 2.0])
  temps = np.geomspace(0.1, 10.0, 200)
  fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.2), sharey=True)
  for ax, (name, f) in zip(
    axes, [("softmax", softjax.softmax), ("sparsemax", softjax.sparsemax)]
  ):
    # One call: a row per temperature (an array temperature broadcasts).
    rows = jnp.broadcast_to(x, (temps.size, x.size))
    p = np.asarray(
      jax.jit(f)(rows, temperature=jnp.asarray(temps[:, None], jnp.float32))
    )
    for i, style in enumerate(["-", "--", ":"]):
      ax.plot(temps, p[:, i], style, lw=2, label=f"x = {float(x[i]):g}")
    ax.set_xscale("log")
    ax.set_xlabel("temperature T")
    ax.set_title(f"{name}([1, 3, 2] / T)")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("probability")
  axes[0].legend(fontsize=8)
  return _png(fig)


ATTENTION_JSON = (
  Path(__file__).resolve().parent / "benchmarks" / "attention.json"
)


def _alpha_label(alpha: str) -> str:
  return "learned α per head" if alpha == "learned" else f"α = {alpha}"


def attention_memory() -> bytes:
  """XLA temp bytes of attention fwd+bwd against L, blockwise and dense.

  Drawn from the measurements ``benchmarks/bench_attention.py`` stored in
  ``docs/benchmarks/attention.json`` (nothing is compiled here).
  """
  rows = [
    r
    for r in json.loads(ATTENTION_JSON.read_text(encoding="utf-8"))["rows"]
    if r["kind"] == "pair"
  ]
  rows.sort(key=lambda r: r["length"])
  alphas = sorted({r["alpha"] for r in rows}, key=lambda a: (a == "learned", a))
  fig, ax = plt.subplots(figsize=(6.0, 3.6))
  for alpha in alphas:
    at = [r for r in rows if r["alpha"] == alpha]
    ax.plot(
      [r["length"] for r in at],
      [r["block_temp"] / 2**20 for r in at],
      "o-",
      lw=2,
      label=f"blockwise, {_alpha_label(alpha)}",
    )
    dense = [r for r in at if "dense_temp" in r]
    ax.plot(
      [r["length"] for r in dense],
      [r["dense_temp"] / 2**20 for r in dense],
      "s--",
      lw=1.5,
      label=f"dense, {_alpha_label(alpha)}",
    )
  machine = max((r.get("machine_bytes", 0) for r in rows), default=0)
  if machine:
    ax.axhline(machine / 2**20, color="gray", lw=1, ls=":")
    ax.annotate(
      "memory of the benchmark machine",
      (rows[0]["length"], machine / 2**20),
      textcoords="offset points",
      xytext=(0, 4),
      fontsize=8,
      color="gray",
    )
  lengths = sorted({r["length"] for r in rows})
  ax.set_xscale("log", base=2)
  ax.set_xticks(lengths, [str(n) for n in lengths])
  ax.set_yscale("log")
  ax.minorticks_off()
  ax.set_xlabel("sequence length L (batch 1, 8 heads, depth 64, float32)")
  ax.set_ylabel("XLA temp memory of fwd+bwd (MiB)")
  ax.set_title("Attention memory: dense grows as L², blockwise as L")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="center right")
  return _png(fig)


def _temp_mib(f, *shapes) -> float:
  """XLA's temp memory of jit(f), from compiling it (nothing is run)."""
  args = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in shapes]
  compiled = jax.jit(f).lower(*args).compile()
  return compiled.memory_analysis().temp_size_in_bytes / 2**20


def linear_loss_memory() -> bytes:
  """fwd+bwd temp memory of the losses against the vocabulary size."""
  import optax  # pylint: disable=import-outside-toplevel

  tokens, d = 4096, 512
  vocabs = [8192, 32768, 131072]
  losses = softjax.losses

  def fwd_bwd(loss, tied=False):
    def f(h, w, y, g):
      def objective(h, w):
        return loss(h, w.T if tied else w, y)

      return jax.vjp(objective, h, w)[1](g)

    return f

  curves = [
    (
      "softmax_loss(h @ W, y)",
      COLORS["softmax"],
      "o-",
      lambda h, w, y: losses.softmax_loss(h @ w, y),
      False,
    ),
    (
      "entmax15_loss(h @ W, y)",
      COLORS["entmax15"],
      "o-",
      lambda h, w, y: losses.entmax15_loss(h @ w, y),
      False,
    ),
    (
      "optax softmax_cross_entropy_with_integer_labels",
      "#7f7f7f",
      "s--",
      lambda h, w, y: optax.softmax_cross_entropy_with_integer_labels(h @ w, y),
      False,
    ),
    (
      "linear_softmax_loss(h, W, y)",
      COLORS["softmax"],
      "D--",
      losses.linear_softmax_loss,
      False,
    ),
    (
      "linear_entmax15_loss(h, W, y)",
      COLORS["entmax15"],
      "D--",
      losses.linear_entmax15_loss,
      False,
    ),
    (
      "linear_sparsemax_loss(h, W, y)",
      COLORS["sparsemax"],
      "v--",
      losses.linear_sparsemax_loss,
      False,
    ),
    (
      "linear_softmax_loss(h, E.T, y), tied",
      COLORS["softmax"],
      "^:",
      losses.linear_softmax_loss,
      True,
    ),
  ]
  fig, ax = plt.subplots(figsize=(6.4, 3.8))
  for label, color, style, loss, tied in curves:
    mib = []
    for v in vocabs:
      w_shape = (v, d) if tied else (d, v)
      mib.append(
        _temp_mib(
          fwd_bwd(loss, tied),
          ((tokens, d), jnp.float32),
          (w_shape, jnp.float32),
          ((tokens,), jnp.int32),
          ((tokens,), jnp.float32),
        )
      )
    ax.plot(vocabs, mib, style, color=color, lw=2, label=label)
  v = np.asarray(vocabs, np.float64)
  ax.plot(
    v,
    tokens * v * 4 / 2**20,
    color="black",
    lw=1,
    alpha=0.5,
    label="one [tokens, V] float32 array",
  )
  ax.set_xscale("log", base=2)
  ax.set_yscale("log", base=2)
  ax.yaxis.set_major_formatter(
    matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}")
  )
  ax.set_xticks(vocabs, [f"{x // 1024}k" for x in vocabs])
  ax.set_xlabel("vocabulary size V")
  ax.set_ylabel("XLA temp memory, fwd+bwd (MiB)")
  ax.set_title(
    f"Losses of a linear layer: {tokens} tokens, d = {d}, float32",
    fontsize=10,
  )
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  return _png(fig)


FIGURES: dict[str, Callable[[], bytes]] = {
  "linear_loss_memory": linear_loss_memory,
  "normalisers": normalisers,
  "support": support,
  "temperature": temperature,
  "attention_memory": attention_memory,
}


def render(names: list[str] | None = None) -> dict[str, bytes]:
  """``{"img/<name>.png": png bytes}`` for the given figures (default all)."""
  return {
    f"img/{name}.png": FIGURES[name]() for name in (names or list(FIGURES))
  }


def main(argv: list[str]) -> None:
  out = Path(argv[0]) if argv else Path("docs/img")
  out.mkdir(parents=True, exist_ok=True)
  for path, data in render(argv[1:] or None).items():
    (out / Path(path).name).write_bytes(data)
    print(out / Path(path).name)


if __name__ == "__main__":
  main(sys.argv[1:])
