"""Eager calls and compile times of every public function (issue 25).

Run from the repository root::

  python benchmarks/bench_eager.py            # writes docs/benchmarks/eager.md
  python benchmarks/bench_eager.py --quick    # a smoke run, nothing written

**Eager calls.** Each public function is called outside ``jit`` at a small
shape: the first call (which compiles) once, then calls 2 to 10, timed
interleaved with the same computation in ``jax.nn`` or optax (the
reference) in the same repeats. The target: calls 2-10 cost at most 3x the
reference, or at most 5 ms.

**Compile times.** Each public function's ``jax.jit(f).lower(...)`` and
``.compile()`` at the same small shape, and a 12-layer attention model
(width 64, 4 heads, L = 256, batch 2, causal; fwd+bwd of a sum-of-squares
loss), written with the layers unrolled in Python and with ``lax.scan``
over stacked layer parameters, for dense softmax attention (the reference),
dense attention with one learned α per head, block-wise softmax and
block-wise attention with one learned α per head. The target: the
block-wise per-head-α model compiles in at most 3x the dense softmax
model's time. These compile times are single measurements (each compile is
done once; XLA caches nothing between them here, every function being
new). Then one layer of that model, forward and forward+backward (the least
of 3 compiles), with the while loops and fusions of the compiled module:
where the time goes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
import re
import sys
import time
from typing import Any

import bench  # benchmarks/bench.py; puts this checkout on sys.path
import jax
import jax.numpy as jnp
import numpy as np
import optax
import timing

import softjax
from softjax import attention
from softjax import losses

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
EAGER_RATIO, EAGER_FLOOR_MS = 3.0, 5.0
COMPILE_RATIO = 3.0


def _array(seed: int, shape: tuple[int, ...]) -> jax.Array:
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.standard_normal(shape), jnp.float32)


X = _array(0, (8, 32))
Y = jnp.asarray(np.arange(8) % 32, jnp.int32)
Q = _array(1, (1, 64, 2, 16))
W = _array(2, (32, 100))
T = jnp.asarray(np.arange(8) % 100, jnp.int32)

softmax_ref = lambda: jax.nn.softmax(X)
ce_ref = lambda: optax.softmax_cross_entropy_with_integer_labels(X, Y)
attn_ref = lambda: jax.nn.dot_product_attention(Q, Q, Q, is_causal=True)
linear_ref = lambda: optax.softmax_cross_entropy_with_integer_labels(X @ W, T)

# name: (softjax call, reference call, reference name)
CALLS: dict[str, tuple[Callable[[], Any], Callable[[], Any], str]] = {
  "softmax": (lambda: softjax.softmax(X), softmax_ref, "jax.nn.softmax"),
  "log_softmax": (
    lambda: softjax.log_softmax(X),
    lambda: jax.nn.log_softmax(X),
    "jax.nn.log_softmax",
  ),
  "sparsemax": (lambda: softjax.sparsemax(X), softmax_ref, "jax.nn.softmax"),
  "entmax15": (lambda: softjax.entmax15(X), softmax_ref, "jax.nn.softmax"),
  "entmax(1.3)": (
    lambda: softjax.entmax(X, 1.3),
    softmax_ref,
    "jax.nn.softmax",
  ),
  "normmax(2)": (
    lambda: softjax.normmax(X, 2.0),
    softmax_ref,
    "jax.nn.softmax",
  ),
  "budget_sparsemax(3)": (
    lambda: softjax.budget_sparsemax(X, 3.0),
    softmax_ref,
    "jax.nn.softmax",
  ),
  "softmax_loss": (
    lambda: losses.softmax_loss(X, Y),
    ce_ref,
    "optax CE",
  ),
  "sparsemax_loss": (lambda: losses.sparsemax_loss(X, Y), ce_ref, "optax CE"),
  "entmax15_loss": (lambda: losses.entmax15_loss(X, Y), ce_ref, "optax CE"),
  "linear_softmax_loss": (
    lambda: losses.linear_softmax_loss(X, W, T),
    linear_ref,
    "optax CE of X @ W",
  ),
  "linear_entmax15_loss": (
    lambda: losses.linear_entmax15_loss(X, W, T),
    linear_ref,
    "optax CE of X @ W",
  ),
  "dot_product_attention(1.5)": (
    lambda: attention.dot_product_attention(Q, Q, Q, alpha=1.5),
    attn_ref,
    "jax.nn attention",
  ),
  "blockwise softmax": (
    lambda: attention.blockwise_attention(
      Q, Q, Q, is_causal=True, block_q=32, block_k=32
    ),
    attn_ref,
    "jax.nn attention",
  ),
  "blockwise entmax15": (
    lambda: attention.blockwise_attention(
      Q, Q, Q, alpha=1.5, is_causal=True, block_q=32, block_k=32
    ),
    attn_ref,
    "jax.nn attention",
  ),
}


def eager_rows(repeats: int) -> list[list[str]]:
  rows = []
  for name, (call, ref, ref_name) in CALLS.items():
    first = timing.time_once(lambda c=call: jax.block_until_ready(c()))
    jax.block_until_ready(ref())
    thunks = {
      "softjax": lambda call=call: jax.block_until_ready(call()),
      "ref": lambda ref=ref: jax.block_until_ready(ref()),
    }
    samples = timing.time_interleaved(thunks, repeats)
    med = timing.medians(samples)
    ratio = timing.paired_ratio(samples["softjax"], samples["ref"])
    ok = ratio <= EAGER_RATIO or med["softjax"] * 1e3 <= EAGER_FLOOR_MS
    rows.append(
      [
        name,
        timing.ms(first),
        timing.ms(med["softjax"]),
        f"{ref_name}: {timing.ms(med['ref'])}",
        f"{ratio:.1f}",
        "ok" if ok else "**over**",
      ]
    )
    print(f"  eager {name} done", flush=True)
  return rows


def _compile_seconds(f: Callable[..., Any], *args: Any) -> tuple[float, float]:
  start = time.perf_counter()
  lowered = jax.jit(f).lower(*args)
  mid = time.perf_counter()
  lowered.compile()
  return mid - start, time.perf_counter() - mid


def function_compile_rows() -> list[list[str]]:
  rows = []
  for name, (call, _, _) in CALLS.items():
    # A fresh function each time: nothing is cached.
    trace, comp = _compile_seconds(lambda c=call: c())
    rows.append([name, f"{trace:.2f}", f"{comp:.2f}"])
  return rows


LAYERS, LENGTH, HEADS, DEPTH = 12, 256, 4, 16
REFERENCE = "dense softmax"
MODELS = (
  REFERENCE,
  "dense per-head α",
  "blockwise softmax",
  "blockwise per-head α",
)
LAYER_KINDS = (
  REFERENCE,
  "dense per-head α",
  "blockwise softmax",
  "blockwise α = 1.5",
  "blockwise per-head α",
)


def _attend(kind: str, q: jax.Array, alpha: jax.Array) -> jax.Array:
  if kind == REFERENCE:
    return attention.dot_product_attention(q, q, q, is_causal=True)
  if kind == "dense per-head α":
    return attention.dot_product_attention(q, q, q, alpha=alpha, is_causal=True)
  blocks = dict(block_q=64, block_k=64, is_causal=True)
  if kind == "blockwise softmax":
    return attention.blockwise_attention(q, q, q, **blocks)
  if kind == "blockwise α = 1.5":
    return attention.blockwise_attention(q, q, q, alpha=1.5, **blocks)
  return attention.blockwise_attention(q, q, q, alpha=alpha, **blocks)


def _layer(kind: str) -> Callable[..., jax.Array]:
  def layer(x, p):
    w, alpha = p
    q = (x @ w).reshape(x.shape[0], LENGTH, HEADS, DEPTH)
    return x + _attend(kind, q, alpha).reshape(x.shape)

  return layer


def _model_loss(kind: str, scan: bool) -> Callable[..., Any]:
  layer = _layer(kind)

  def loss(params, x):
    if scan:
      x, _ = jax.lax.scan(lambda x, p: (layer(x, p), None), x, params)
    else:
      for i in range(LAYERS):
        x = layer(x, jax.tree.map(lambda a, i=i: a[i], params))
    return jnp.sum(jnp.square(x))

  return jax.grad(loss)


def _model_inputs(layers: int | None) -> tuple[Any, jax.Array]:
  """The parameters (stacked over ``layers``, or one layer's) and ``x``."""
  width = HEADS * DEPTH
  w, alpha = jnp.eye(width) * 0.1, jnp.full((HEADS,), 1.3)
  if layers is not None:
    w, alpha = jnp.tile(w, (layers, 1, 1)), jnp.tile(alpha, (layers, 1))
  return (w, alpha), _array(3, (2, LENGTH, width))


def model_compile_rows() -> list[list[str]]:
  params, x = _model_inputs(LAYERS)
  results = {}
  for scan in (False, True):
    for kind in MODELS:
      trace, comp = _compile_seconds(_model_loss(kind, scan), params, x)
      results[(kind, scan)] = trace + comp
      print(f"  model {kind} scan={scan} done", flush=True)
  reference = results[(REFERENCE, False)]
  rows = []
  for (kind, scan), total in results.items():
    ratio = total / reference
    verdict = ""
    if kind == "blockwise per-head α":
      verdict = " ok" if ratio <= COMPILE_RATIO else " **over**"
    rows.append(
      [
        kind,
        "lax.scan" if scan else "unrolled",
        f"{total:.2f}",
        f"{ratio:.1f}{verdict}",
      ]
    )
  return rows


def _compiled(f: Callable[..., Any], *args: Any) -> tuple[float, str]:
  """The least of 3 trace+lower+compile times of ``f``, and its XLA text."""
  best = float("inf")
  for _ in range(3):
    fresh = lambda *a: f(*a)  # a new function: jit's caches miss
    start = time.perf_counter()
    compiled = jax.jit(fresh).lower(*args).compile()
    best = min(best, time.perf_counter() - start)
  return best, compiled.as_text()


def layer_compile_rows() -> list[list[str]]:
  """One layer of the model, forward and forward+backward: where it goes.

  XLA:CPU compiles every fusion (the unit of generated code) separately,
  and every while loop's body on its own; the counts come from the
  compiled module's text.
  """
  params, x = _model_inputs(None)
  rows = []
  for kind in LAYER_KINDS:
    layer = _layer(kind)
    forward = lambda p, x, layer=layer: layer(x, p)
    loss = lambda p, x, layer=layer: jnp.sum(jnp.square(layer(x, p)))
    for name, f in (("fwd", forward), ("fwd+bwd", jax.grad(loss, (0, 1)))):
      seconds, text = _compiled(f, params, x)
      fusions = len(re.findall(r"^%?fused_computation", text, re.M))
      rows.append(
        [kind, name, f"{seconds:.2f}", str(text.count(" while(")), str(fusions)]
      )
    print(f"  layer {kind} done", flush=True)
  return rows


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--repeats", type=int, default=9)  # calls 2..10
  p.add_argument("--quick", action="store_true")
  args = p.parse_args(argv)
  repeats = 2 if args.quick else args.repeats
  eager = eager_rows(repeats)
  functions = function_compile_rows()
  models = model_compile_rows()
  layers = layer_compile_rows()
  body = "\n\n".join(
    [
      "### Eager calls",
      f"Calls 2-{repeats + 1} outside `jit`, median (ms), interleaved with "
      f"the reference; target ≤ {EAGER_RATIO:g}x the reference or "
      f"≤ {EAGER_FLOOR_MS:g} ms. Inputs: `[8, 32]` scores, `[8]` labels, "
      "`[32, 100]` output layer, attention `(1, 64, 2, 16)`.",
      timing.markdown_table(
        [
          "function",
          "1st call (ms)",
          "calls 2+ (ms)",
          "reference (ms)",
          "ratio",
          "target",
        ],
        eager,
      ),
      "### Compile time per function",
      "`jax.jit(f).lower()` and `.compile()` of the calls above (s).",
      timing.markdown_table(
        ["function", "trace+lower (s)", "compile (s)"], functions
      ),
      "### Compile time of a 12-layer model",
      f"fwd+bwd of {LAYERS} attention layers (L = {LENGTH}, {HEADS} heads, "
      f"depth {DEPTH}, batch 2, causal; block-wise with 64 x 64 blocks), "
      "trace + lower + compile (s), against the unrolled dense softmax "
      f"model; target for the per-head α model ≤ {COMPILE_RATIO:g}x.",
      timing.markdown_table(
        ["attention", "layers", "compile (s)", "ratio to dense softmax"],
        models,
      ),
      "### Where a layer's compile time goes",
      "One layer of that model, trace + lower + compile (s, the least of "
      "3), with the while loops and fusions of the compiled module (XLA:CPU "
      "generates and compiles code per fusion).",
      timing.markdown_table(
        ["attention", "pass", "compile (s)", "while loops", "fusions"],
        layers,
      ),
    ]
  )
  out = None if args.quick else OUT
  method = "\n\n".join(
    " ".join(part.split())
    for part in __doc__.split("\n\n")
    if part.startswith(("**Eager", "**Compile"))
  )
  text = "\n\n".join(
    [
      "# softjax eager calls and compile times",
      bench.environment_line(repeats, args.quick),
      "Command: `"
      + " ".join(["python benchmarks/bench_eager.py", *(argv or sys.argv[1:])])
      + "`",
      method,
      body,
    ]
  )
  timing.print_and_write(text + "\n", out, "eager.md")


if __name__ == "__main__":
  sys.exit(main())
