"""softjax quickstart: normaliser tables, then sparse attention at work.

Run from the repository root after ``pip install ".[examples]"``::

  python examples/quickstart.py                # full demo (a minute on a CPU)
  python examples/quickstart.py --fast         # a few seconds (tests, CI)
  python examples/quickstart.py --out att.png  # where to write the figure

``SOFTJAX_FAST=1`` in the environment does the same as ``--fast``.

Part 1 prints softmax and log_softmax tables for a few logits at
temperatures 0.5, 1 and 2. The overflow example [1000, 999, 998] shows that
huge logits are safe: at temperature 1 it gives [0.665, 0.245, 0.090], exactly
as [2, 1, 0] would.

Part 2 trains a small Flax NNX transformer block on associative recall: the
model sees a set of (key, value) pairs, between 6 and 12 of them (padding
masked with ``where=``), and for each of several query keys it must output
the value stored under that key. Exactly one pair answers each query, so
attention that is sparse is natural. The same model is trained three times,
with the attention normaliser set to ``softjax.softmax``, to
``softjax.entmax15`` and to ``softjax.entmax`` with one learnable α per head.
It prints a table of test accuracy, loss and attention sparsity (the fraction
of attention weights that are exactly zero, padding excluded) and writes the
attention maps of one test example side by side to a PNG.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from collections.abc import Sequence
import dataclasses
import math
import os
import sys
import time

# Before JAX initialises: one CPU device is all this demo needs.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import softjax  # noqa: E402

TEMPERATURES = (0.5, 1.0, 2.0)

# (title, logits, where-mask or None)
EXAMPLES = (
  ("small logits", [1.0, 3.0, 2.0], None),
  (
    "overflow: logits near 1000 (naive exp overflows)",
    [1000.0, 999.0, 998.0],
    None,
  ),
  (
    "ties: equal logits give the uniform distribution",
    [0.0, 0.0, 0.0, 0.0],
    None,
  ),
  (
    "masked: where=[True, True, False, True]",
    [2.0, 1.0, 5.0, 0.0],
    [True, True, False, True],
  ),
)


# --------------------------------------------------------------------------
# Part 1: tables.
# --------------------------------------------------------------------------


def _fmt(value: float, width: int) -> str:
  if math.isinf(value):
    text = "-inf" if value < 0 else "inf"
  else:
    text = f"{value:.3f}"
  return text.rjust(width)


def format_table(
  title: str,
  logits: Sequence[float],
  where: Sequence[bool] | None = None,
  temperatures: Sequence[float] = TEMPERATURES,
) -> str:
  """Returns a plain-text table of softmax/log_softmax for ``logits``."""
  x = jnp.asarray(logits, dtype=jnp.float32)
  mask = None if where is None else jnp.asarray(where, dtype=bool)
  w = 7  # width of one number column
  n = x.shape[-1]

  def group(values):
    return " ".join(_fmt(float(v), w) for v in values)

  group_width = n * w + (n - 1)
  rows = [
    (
      "T".rjust(4),
      "softmax".center(group_width),
      "sum".rjust(w),
      "log_softmax".center(group_width),
    )
  ]
  for t in temperatures:
    p = softjax.softmax(x, where=mask, temperature=t)
    lp = softjax.log_softmax(x, where=mask, temperature=t)
    rows.append((f"{t:4.1f}", group(p), _fmt(float(jnp.sum(p)), w), group(lp)))
  lines = [" | ".join(row).rstrip() for row in rows]
  rule = "-" * max(len(line) for line in lines)
  logits_text = ", ".join(f"{float(v):g}" for v in logits)
  return "\n".join(
    [title, f"logits = [{logits_text}]", rule, lines[0], rule, *lines[1:], rule]
  )


# --------------------------------------------------------------------------
# Part 2: associative recall with a one-block transformer.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """Associative recall with two-part keys ``(a, b)``.

  A key is a pair of symbols from ``range(n_symbols)``, so many stored keys
  share one of their two halves with the query: those near-misses are what
  the attention has to ignore.
  """

  n_symbols: int = 8  # keys are (a, b): n_symbols ** 2 of them
  n_values: int = 32  # value vocabulary (the classes)
  min_pairs: int = 8  # stored pairs per example, padded to max_pairs
  max_pairs: int = 16
  n_queries: int = 8  # distinct stored keys asked about per example


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int = 500
  batch_size: int = 128
  learning_rate: float = 3e-3
  n_test: int = 2048
  seed: int = 0


FAST_TRAIN = TrainConfig(steps=60, n_test=256)


def make_batch(
  key: jax.Array, batch_size: int, task: TaskConfig
) -> dict[str, jax.Array]:
  """A batch of recall problems, generated on device from ``key``.

  Returns ``pair_keys``, ``pair_values``, ``pair_mask`` (``[batch, pairs]``;
  padding is ``False``), ``query_keys``, ``targets`` and ``answer_pos``
  (``[batch, queries]``: the value sought and the pair that holds it).
  """
  k_perm, k_val, k_len, k_pick = jax.random.split(key, 4)
  b, p, q = batch_size, task.max_pairs, task.n_queries
  # Distinct keys per example: the first `p` entries of a random permutation.
  n_keys = task.n_symbols**2
  order = jnp.argsort(jax.random.uniform(k_perm, (b, n_keys)), axis=-1)
  pair_keys = order[:, :p]
  pair_values = jax.random.randint(k_val, (b, p), 0, task.n_values)
  n_pairs = jax.random.randint(k_len, (b, 1), task.min_pairs, p + 1)
  pair_mask = jnp.arange(p)[None, :] < n_pairs
  # `q` distinct stored (non-padding) pairs to ask about.
  noise = jax.random.uniform(k_pick, (b, p))
  answer_pos = jnp.argsort(jnp.where(pair_mask, noise, 2.0), axis=-1)[:, :q]
  take = lambda a: jnp.take_along_axis(a, answer_pos, axis=-1)
  return dict(
    pair_keys=pair_keys,
    pair_values=pair_values,
    pair_mask=pair_mask,
    query_keys=take(pair_keys),
    targets=take(pair_values),
    answer_pos=answer_pos,
  )


def build_model(
  task: TaskConfig,
  normalizer: Callable[..., jax.Array] | None,
  learn_alpha: bool,
  seed: int,
):
  """The model: embeddings, one transformer block, a linear read-out."""
  from flax import nnx  # noqa: PLC0415  (imported late: part 1 needs no Flax)

  class Attention(nnx.Module):
    """Multi-head attention, queries over stored pairs, any normaliser.

    Tensors use the Flax layout ``[batch, length, heads, depth]``; the scores
    ``[batch, heads, queries, pairs]`` are normalised along the last axis
    with ``where=`` the padding mask.
    """

    def __init__(self, dim: int, heads: int, *, rngs: nnx.Rngs):
      self.heads, self.head_dim = heads, dim // heads
      dense = lambda: nnx.LinearGeneral(dim, (heads, self.head_dim), rngs=rngs)
      self.q, self.k, self.v = dense(), dense(), dense()
      self.out = nnx.LinearGeneral(
        (heads, self.head_dim), dim, axis=(-2, -1), rngs=rngs
      )
      if learn_alpha:
        # α = 1 + sigmoid(raw) in (1, 2): from softmax to sparsemax; 1.5 at 0.
        self.alpha_raw = nnx.Param(jnp.zeros((heads,)))

    def alpha(self) -> jax.Array:
      return 1.0 + jax.nn.sigmoid(self.alpha_raw[...])

    def __call__(self, queries, memory, mask):
      q, k, v = self.q(queries), self.k(memory), self.v(memory)
      scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.head_dim)
      where = mask[:, None, None, :]
      if learn_alpha:
        # One α per head: shape (heads, 1, 1), size 1 along the key axis.
        weights = softjax.entmax(
          scores, self.alpha()[:, None, None], where=where
        )
      else:
        weights = normalizer(scores, where=where)
      mixed = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
      return self.out(mixed), weights

  class Recall(nnx.Module):
    """Pair tokens embed key + value; query tokens attend to them."""

    def __init__(
      self, task: TaskConfig, dim: int = 64, heads: int = 2, *, rngs: nnx.Rngs
    ):
      self.n_symbols = task.n_symbols
      self.key_a = nnx.Embed(task.n_symbols, dim, rngs=rngs)
      self.key_b = nnx.Embed(task.n_symbols, dim, rngs=rngs)
      self.value_embed = nnx.Embed(task.n_values, dim, rngs=rngs)
      self.query_a = nnx.Embed(task.n_symbols, dim, rngs=rngs)
      self.query_b = nnx.Embed(task.n_symbols, dim, rngs=rngs)
      self.norm_q = nnx.LayerNorm(dim, rngs=rngs)
      self.norm_m = nnx.LayerNorm(dim, rngs=rngs)
      self.attention = Attention(dim, heads, rngs=rngs)
      self.norm_mlp = nnx.LayerNorm(dim, rngs=rngs)
      self.mlp_in = nnx.Linear(dim, 2 * dim, rngs=rngs)
      self.mlp_out = nnx.Linear(2 * dim, dim, rngs=rngs)
      self.norm_out = nnx.LayerNorm(dim, rngs=rngs)
      self.readout = nnx.Linear(dim, task.n_values, rngs=rngs)

    def __call__(self, batch):
      # A key (a, b) is stored as the integer a * n_symbols + b.
      pa, pb = jnp.divmod(batch["pair_keys"], self.n_symbols)
      qa, qb = jnp.divmod(batch["query_keys"], self.n_symbols)
      memory = (
        self.key_a(pa) + self.key_b(pb) + self.value_embed(batch["pair_values"])
      )
      h = self.query_a(qa) + self.query_b(qb)
      a, weights = self.attention(
        self.norm_q(h), self.norm_m(memory), batch["pair_mask"]
      )
      h = h + a
      h = h + self.mlp_out(jax.nn.gelu(self.mlp_in(self.norm_mlp(h))))
      return self.readout(self.norm_out(h)), weights

  return Recall(task, rngs=nnx.Rngs(seed))


@dataclasses.dataclass
class RunResult:
  name: str
  accuracy: float
  loss: float
  sparsity: float
  mean_support: float
  seconds: float
  weights: np.ndarray  # attention of test example 0: [heads, q, k]
  example: dict[str, np.ndarray]  # test example 0
  alpha: np.ndarray | None  # learned α per head, if any
  n_symbols: int = 8  # for the key labels of the plot


def train_and_evaluate(
  name: str,
  normalizer: Callable[..., jax.Array] | None,
  learn_alpha: bool,
  task: TaskConfig,
  train: TrainConfig,
  progress: bool = True,
) -> RunResult:
  """Trains one model with ``normalizer`` in its attention; tests it."""
  from flax import nnx  # noqa: PLC0415
  import optax  # noqa: PLC0415
  from tqdm.auto import tqdm  # noqa: PLC0415

  start = time.perf_counter()
  model = build_model(task, normalizer, learn_alpha, train.seed)
  graphdef, params = nnx.split(model)
  schedule = optax.warmup_cosine_decay_schedule(
    0.0,
    train.learning_rate,
    min(100, train.steps // 10),
    train.steps,
    train.learning_rate / 10,
  )
  tx = optax.adamw(schedule, weight_decay=1e-4)
  opt_state = tx.init(params)
  data_key, test_key = jax.random.split(jax.random.key(train.seed + 1))

  def loss_and_outputs(params, batch):
    logits, weights = nnx.merge(graphdef, params)(batch)
    loss = optax.softmax_cross_entropy_with_integer_labels(
      logits, batch["targets"]
    ).mean()
    return loss, (logits, weights)

  @jax.jit
  def train_step(params, opt_state, step):
    batch = make_batch(
      jax.random.fold_in(data_key, step), train.batch_size, task
    )
    (loss, _), grads = jax.value_and_grad(loss_and_outputs, has_aux=True)(
      params, batch
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def evaluate(params):
    batch = make_batch(test_key, train.n_test, task)
    loss, (logits, weights) = loss_and_outputs(params, batch)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["targets"])
    live = jnp.broadcast_to(batch["pair_mask"][:, None, None, :], weights.shape)
    zeros = jnp.sum((weights == 0) & live) / jnp.sum(live)
    support = jnp.sum(weights > 0) / math.prod(weights.shape[:-1])
    return loss, accuracy, zeros, support, weights[0], batch

  bar = tqdm(
    range(train.steps),
    desc=f"{name:>16}",
    disable=not progress,
    leave=True,
    mininterval=0.5,
    file=sys.stderr,
  )
  loss = None
  for step in bar:
    params, opt_state, loss = train_step(params, opt_state, step)
    if step % 50 == 0 or step == train.steps - 1:
      bar.set_postfix(loss=f"{float(loss):.3f}")
  bar.close()
  loss, accuracy, zeros, support, weights, batch = jax.device_get(
    evaluate(params)
  )
  alpha = None
  if learn_alpha:
    alpha = np.asarray(nnx.merge(graphdef, params).attention.alpha())
  return RunResult(
    name=name,
    accuracy=float(accuracy),
    loss=float(loss),
    sparsity=float(zeros),
    mean_support=float(support),
    seconds=time.perf_counter() - start,
    weights=np.asarray(weights),
    example={k: np.asarray(v[0]) for k, v in batch.items()},
    alpha=alpha,
    n_symbols=task.n_symbols,
  )


def format_results(results: Sequence[RunResult], task: TaskConfig) -> str:
  """The comparison table: one row per normaliser."""
  header = (
    f"{'normaliser':<18} {'accuracy':>8} {'loss':>7} "
    f"{'sparsity':>8} {'support':>7} {'time':>6}"
  )
  rule = "-" * len(header)
  lines = [rule, header, rule]
  for r in results:
    lines.append(
      f"{r.name:<18} {r.accuracy:8.3f} {r.loss:7.3f} "
      f"{r.sparsity:8.3f} {r.mean_support:7.2f} {r.seconds:5.1f}s"
    )
  lines.append(rule)
  lines.append(
    f"accuracy: test queries answered correctly (chance 1/{task.n_values}); "
    "sparsity: fraction of\nattention weights exactly 0 (padding excluded); "
    f"support: mean nonzero weights per\nattention row "
    f"({task.min_pairs} to {task.max_pairs} stored pairs, one correct)."
  )
  for r in results:
    if r.alpha is not None:
      alphas = ", ".join(f"{a:.2f}" for a in r.alpha)
      lines.append(f"learned α per head ({r.name}): {alphas}")
  return "\n".join(lines)


def plot_attention(results: Sequence[RunResult], path: str) -> None:
  """Writes the attention maps of test example 0, one column per normaliser."""
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  heads = results[0].weights.shape[0]
  fig, axes = plt.subplots(
    heads,
    len(results),
    squeeze=False,
    figsize=(3.6 * len(results), 2.6 * heads + 0.6),
    constrained_layout=True,
  )
  ex = results[0].example
  n = int(ex["pair_mask"].sum())
  sym = results[0].n_symbols
  key_name = lambda k: f"{k // sym}{k % sym}"  # key (a, b) shown as "ab"
  xlabels = [
    f"{key_name(k)}→{v}"
    for k, v in zip(ex["pair_keys"][:n], ex["pair_values"][:n])
  ]
  ylabels = [f"{key_name(k)}?" for k in ex["query_keys"]]
  image = None
  for col, r in enumerate(results):
    for head in range(heads):
      ax = axes[head, col]
      w = r.weights[head, :, :n]
      # Exact zeros are drawn white, so the support is what is coloured.
      image = ax.imshow(
        np.ma.masked_equal(w, 0.0),
        vmin=0.0,
        vmax=1.0,
        cmap="viridis",
        aspect="auto",
      )
      ax.set_facecolor("white")
      for qi, pos in enumerate(ex["answer_pos"]):
        ax.add_patch(
          plt.Rectangle(
            (pos - 0.5, qi - 0.5),
            1,
            1,
            fill=False,
            edgecolor="red",
            linewidth=1.2,
          )
        )
      ax.set_xticks(range(n), xlabels, rotation=90, fontsize=7)
      ax.set_yticks(range(len(ylabels)), ylabels, fontsize=7)
      title = (
        r.name if r.alpha is None else (f"{r.name} (α = {r.alpha[head]:.2f})")
      )
      zeros = float((w == 0).mean())
      ax.set_title(f"{title}\nhead {head}: {zeros:.0%} exact zeros", fontsize=8)
      if col == 0:
        ax.set_ylabel("query key")
  fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
  fig.suptitle(
    "Attention of each query over the stored key:value pairs "
    "(key ab→value; red: the pair holding the answer; white: exactly 0)",
    fontsize=9,
  )
  fig.savefig(path, dpi=120)
  plt.close(fig)


NORMALIZERS: tuple[tuple[str, Callable[..., jax.Array] | None, bool], ...] = (
  ("softmax", softjax.softmax, False),
  ("entmax15", softjax.entmax15, False),
  ("entmax (learned α)", None, True),
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--fast",
    action="store_true",
    default=os.environ.get("SOFTJAX_FAST", "") not in ("", "0"),
    help="a few seconds of training, for tests and CI (also SOFTJAX_FAST=1)",
  )
  parser.add_argument(
    "--out",
    default=None,
    help="path of the attention PNG (default: quickstart_attention.png in "
    "--out-dir)",
  )
  parser.add_argument(
    "--out-dir", default=".", help="folder for the PNG when --out is not given"
  )
  parser.add_argument(
    "--steps",
    type=int,
    default=None,
    help="training steps per model (default 500, 60 with --fast)",
  )
  parser.add_argument(
    "--no-progress", action="store_true", help="no progress bars"
  )
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  print(
    f"softjax {softjax.__version__}: softmax and log_softmax at "
    f"temperatures {', '.join(str(t) for t in TEMPERATURES)}\n"
  )
  for title, logits, where in EXAMPLES:
    print(format_table(title, logits, where))
    print()

  task = TaskConfig()
  train = FAST_TRAIN if args.fast else TrainConfig()
  if args.steps is not None:
    train = dataclasses.replace(train, steps=args.steps)
  print(
    f"Sparse attention: associative recall, {task.min_pairs}-"
    f"{task.max_pairs} key:value pairs, {task.n_queries} queries per "
    f"example, {train.steps} training steps per model"
    f"{' (--fast)' if args.fast else ''}.",
    flush=True,
  )
  results = []
  for name, normalizer, learn_alpha in NORMALIZERS:
    results.append(
      train_and_evaluate(
        name,
        normalizer,
        learn_alpha,
        task,
        train,
        progress=not args.no_progress,
      )
    )
  print()
  print(format_results(results, task))
  out = args.out or os.path.join(args.out_dir, "quickstart_attention.png")
  if os.path.dirname(out):
    os.makedirs(os.path.dirname(out), exist_ok=True)
  plot_attention(results, out)
  print(f"\nattention maps written to {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
