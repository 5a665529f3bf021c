"""Op histograms of the compiled fwd+bwd of every public function.

A refactoring that moves code but must not change what XLA runs is checked
by comparing these histograms before and after (CPU, float32, small shapes):

  python benchmarks/op_histograms.py --out before.json   # on the old tree
  python benchmarks/op_histograms.py --compare before.json

Each case compiles ``jax.grad`` of a weighted sum of the function's output
(the loss itself for the losses) with respect to every float argument, and
counts the instructions of the optimised HLO by opcode, fusion bodies
included. ``--compare`` prints the cases whose histograms differ and exits 1
if any does.
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import softjax  # noqa: E402
from softjax import attention  # noqa: E402
from softjax import losses  # noqa: E402

_OPCODE = re.compile(r"=\s.*?\b([a-z][a-z0-9\-]*)\(")


def histogram(fn, *args) -> dict[str, int]:
  """Opcode counts of the optimised HLO of ``jax.grad(fn)`` over ``args``."""
  argnums = tuple(
    i
    for i, a in enumerate(args)
    if hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating)
  )
  grad = jax.jit(jax.grad(fn, argnums=argnums))
  text = grad.lower(*args).compile().as_text()
  counts = collections.Counter()
  for line in text.splitlines():
    if " = " not in line or line.lstrip().startswith(("HloModule", "//")):
      continue
    m = _OPCODE.search(line)
    if m:
      counts[m.group(1)] += 1
  return dict(sorted(counts.items()))


def _cases():
  key = jax.random.key(0)
  ks = jax.random.split(key, 8)
  x = jax.random.normal(ks[0], (16, 300))
  wts = jax.random.normal(ks[1], (16, 300))
  t_arr = 0.5 + jax.random.uniform(ks[2], (16, 1))
  where = jax.random.uniform(ks[3], (16, 300)) > 0.2
  a_row = 1.0 + jax.random.uniform(ks[4], (16, 1))
  k_row = 1.0 + 3.0 * jax.random.uniform(ks[5], (16, 1))
  labels = jax.random.randint(ks[6], (16,), 0, 300)
  dense = lambda f: lambda x, w: jnp.sum(f(x) * w)

  def mapped(f):
    return lambda x, w, *a: jnp.sum(f(x, *a) * w)

  maps = {
    "softmax": softjax.softmax,
    "log_softmax": lambda x: jnp.maximum(softjax.log_softmax(x), -30.0),
    "sparsemax": softjax.sparsemax,
    "entmax15": softjax.entmax15,
    "entmax_1.3": lambda x: softjax.entmax(x, 1.3),
    "entmax_3": lambda x: softjax.entmax(x, 3.0),
    "normmax_2": softjax.normmax,
    "normmax_3": lambda x: softjax.normmax(x, 3.0),
    "budget_2": lambda x: softjax.budget_sparsemax(x, 2.0),
  }
  for name, f in maps.items():
    yield name, dense(f), (x, wts)
  yield (
    "softmax_where_T",
    mapped(lambda x, t: softjax.softmax(x, where=where, temperature=t)),
    (x, wts, t_arr),
  )
  yield (
    "entmax15_where_T",
    mapped(lambda x, t: softjax.entmax15(x, where=where, temperature=t)),
    (x, wts, t_arr),
  )
  yield (
    "entmax_array",
    mapped(lambda x, a: softjax.entmax(x, a)),
    (
      x,
      wts,
      a_row,
    ),
  )
  yield (
    "normmax_array",
    mapped(lambda x, a: softjax.normmax(x, 1.0 + a)),
    (
      x,
      wts,
      a_row,
    ),
  )
  yield (
    "budget_array",
    mapped(lambda x, k: softjax.budget_sparsemax(x, k)),
    (
      x,
      wts,
      k_row,
    ),
  )
  yield (
    "gumbel_hard",
    mapped(lambda x: softjax.gumbel_softmax(ks[7], x, hard=True)),
    (x, wts),
  )
  yield (
    "gumbel_entmax15",
    mapped(
      lambda x: softjax.gumbel_softmax(ks[7], x, normalizer=softjax.entmax15)
    ),
    (x, wts),
  )
  loss_fns = {
    "softmax_loss": losses.softmax_loss,
    "sparsemax_loss": losses.sparsemax_loss,
    "entmax15_loss": losses.entmax15_loss,
    "entmax_loss_1.3": lambda z, y: losses.entmax_loss(z, y, 1.3),
    "normmax_loss": losses.normmax_loss,
  }
  soft = jax.nn.softmax(jax.random.normal(ks[6], (16, 300)))
  for name, f in loss_fns.items():
    yield name, (lambda z, f=f: jnp.sum(f(z, labels))), (x,)
    yield name + "_soft", (lambda z, y, f=f: jnp.sum(f(z, y))), (x, soft)
  yield (
    "entmax_loss_array",
    (lambda z, a: jnp.sum(losses.entmax_loss(z, labels, a))),
    (x, a_row[:, 0]),
  )
  yield (
    "normmax_loss_array",
    (lambda z, a: jnp.sum(losses.normmax_loss(z, labels, 1.0 + a))),
    (x, a_row[:, 0]),
  )
  # Fused losses: 64 tokens, d 32, V 1000 (a remainder block).
  h = jax.random.normal(ks[0], (64, 32))
  w = jax.random.normal(ks[1], (32, 1000)) * 0.3
  b = jax.random.normal(ks[2], (1000,)) * 0.1
  y = jax.random.randint(ks[3], (64,), 0, 1000)
  fused = {
    "linear_softmax": losses.linear_softmax_loss,
    "linear_sparsemax": losses.linear_sparsemax_loss,
    "linear_entmax15": losses.linear_entmax15_loss,
    "linear_entmax_1.3": lambda *a, **k: losses.linear_entmax_loss(
      *a, alpha=1.3, **k
    ),
  }
  for name, f in fused.items():
    yield (
      name,
      (lambda h, w, b, f=f: jnp.sum(f(h, w, y, bias=b, chunk_size=256))),
      (h, w, b),
    )
  yield (
    "linear_entmax_array",
    (
      lambda h, w, a: jnp.sum(
        losses.linear_entmax_loss(h, w, y, alpha=a, chunk_size=256)
      )
    ),
    (h, w, 1.0 + a_row[:1, 0].repeat(64)),
  )
  # Attention: batch 2, length 96, 4 heads (2 kv heads), depth 8.
  q = jax.random.normal(ks[0], (2, 96, 4, 8))
  k = jax.random.normal(ks[1], (2, 96, 2, 8))
  v = jax.random.normal(ks[2], (2, 96, 2, 8))
  bias = jax.random.normal(ks[3], (2, 4, 96, 96)) * 0.1
  head_alpha = jnp.array([1.1, 1.3, 1.5, 2.0])
  blk = dict(block_q=32, block_k=32)
  att = {
    "dpa_softmax": lambda q, k, v: attention.dot_product_attention(
      q, k, v, is_causal=True
    ),
    "dpa_entmax15": lambda q, k, v: attention.dot_product_attention(
      q, k, v, normalizer=softjax.entmax15
    ),
    "blockwise_softmax": lambda q, k, v: attention.blockwise_attention(
      q, k, v, **blk
    ),
    "blockwise_softmax_causal": lambda q, k, v: attention.blockwise_attention(
      q, k, v, is_causal=True, **blk
    ),
    "blockwise_entmax15": lambda q, k, v: attention.blockwise_attention(
      q, k, v, alpha=1.5, **blk
    ),
    "blockwise_sparsemax_causal": lambda q, k, v: attention.blockwise_attention(
      q, k, v, alpha=2.0, is_causal=True, **blk
    ),
    "blockwise_entmax_1.3": lambda q, k, v: attention.blockwise_attention(
      q, k, v, alpha=1.3, **blk
    ),
    "blockwise_dropout": lambda q, k, v: attention.blockwise_attention(
      q, k, v, alpha=1.5, dropout_rng=ks[4], dropout_rate=0.1, **blk
    ),
  }
  for name, f in att.items():
    yield name, (lambda q, k, v, f=f: jnp.sum(f(q, k, v) ** 2)), (q, k, v)
  yield (
    "blockwise_alpha_bias",
    (
      lambda q, k, v, bias, a: jnp.sum(
        attention.blockwise_attention(q, k, v, bias, alpha=a, **blk) ** 2
      )
    ),
    (q, k, v, bias, head_alpha),
  )


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=pathlib.Path)
  parser.add_argument("--compare", type=pathlib.Path)
  parser.add_argument("--only", default="", help="comma-separated case names")
  args = parser.parse_args()
  only = set(filter(None, args.only.split(",")))
  result = {}
  for name, fn, fn_args in _cases():
    if fn_args is None or (only and name not in only):
      continue
    result[name] = histogram(fn, *fn_args)
    print(f"{name}: {sum(result[name].values())} ops", flush=True)
  if args.out:
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True))
  if args.compare:
    before = json.loads(args.compare.read_text())
    differ = []
    for name, counts in result.items():
      old = before.get(name)
      if old != counts:
        diff = {
          op: (old.get(op, 0) if old else None, counts.get(op, 0))
          for op in sorted(set(counts) | set(old or {}))
          if (old or {}).get(op, 0) != counts.get(op, 0)
        }
        differ.append(name)
        print(f"DIFFERS {name}: {diff}")
    print(f"{len(result) - len(differ)} same, {len(differ)} differ")
    return 1 if differ else 0
  return 0


if __name__ == "__main__":
  sys.exit(main())
