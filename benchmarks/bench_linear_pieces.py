"""Prototypes of the pieces the fused sparse losses need, timed on their own.

Usage::

  python benchmarks/bench_linear_pieces.py topk [--vocab V] [--ks 16,32]
      [--merge concat|block-first|both] [--repeats N]
  python benchmarks/bench_linear_pieces.py backward [--vocab V] [--ks 32]
      [--blocks 256] [--repeats N]

Phase 1 of issue 17 measured these to plan phase 2 (the results are in that
report, not in the docs). tokens = 4096, d = 512, float32, blocks of 2048
classes, all through ``softjax._losses.vocab.scan_vocab``:

* ``topk``: a forward pass over the vocabulary that keeps each token's k
  largest logits and their class ids, merged block by block either as
  ``top_k(concat(running, block))`` or as ``top_k(concat(running,
  top_k(block)))``, against the same pass keeping only the running maximum
  (the matmul and nothing else to speak of) and the softmax forward pass
  (running maximum and sum). Both merges are checked against ``lax.top_k`` of
  the whole logits.
* ``backward``: the gradient of the hidden states and the weight from
  per-token candidate ids ``[T, k]`` and coefficients ``c = g (p - y)`` on
  them: gather/scatter on the columns of ``W [d, V]`` or on the rows of
  ``W.T [V, d]`` (one transpose each way), in blocks of tokens, against the
  dense pass that rebuilds ``c`` as a ``[T, chunk]`` block and multiplies
  (two matmuls per block, no recomputed logits) and the softmax backward pass
  (three matmuls per block). All variants are checked against each other.

Method as in ``benchmarks/bench.py``: jit, two warm-up calls, interleaved
repeats, median times and median per-repeat ratios; printed as markdown.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from collections.abc import Sequence
import functools
import statistics

import bench  # benchmarks/bench.py; puts this checkout on sys.path
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from softjax import _core
from softjax._losses import fused_softmax
from softjax._losses import vocab as V

TOKENS, DIM, CHUNK = 4096, 512, 2048


def fwd_max(h, w):
  def add(m, c):
    return jnp.maximum(m, c.z.max(-1))

  return V.scan_vocab(
    h, w, None, V.Vocab(w.shape[1], CHUNK), add, jnp.full(h.shape[0], -jnp.inf)
  )


def fwd_lse(h, w):
  add = lambda stat, c: _core.lse_add(stat, c.z)[0]
  start = _core.lse_start((h.shape[0],), jnp.float32)
  stat = V.scan_vocab(h, w, None, V.Vocab(w.shape[1], CHUNK), add, start)
  return _core.lse_finish(stat, None)


def fwd_topk(h, w, k, chunk_first):
  def add(carry, c):
    values, ids = carry
    block_ids = c.start + lax.broadcasted_iota(jnp.int32, c.z.shape, 1)
    z = c.z
    if chunk_first:
      z, j = lax.top_k(z, min(k, z.shape[1]))
      block_ids = jnp.take_along_axis(block_ids, j, axis=1)
    v, j = lax.top_k(jnp.concatenate([values, z], axis=1), k)
    all_ids = jnp.concatenate([ids, block_ids], axis=1)
    return v, jnp.take_along_axis(all_ids, j, axis=1)

  init = (
    jnp.full((h.shape[0], k), -jnp.inf),
    jnp.zeros((h.shape[0], k), jnp.int32),
  )
  return V.scan_vocab(h, w, None, V.Vocab(w.shape[1], CHUNK), add, init)


def bwd_softmax(h, w, ids, c):
  del ids, c
  lse = jnp.full(h.shape[0], 10.0)
  labels = jnp.zeros(h.shape[0], jnp.int32)
  keep = jnp.ones(h.shape[0], bool)
  return fused_softmax.softmax_bwd_pass(
    h,
    w,
    None,
    labels,
    keep,
    lse,
    jnp.ones(h.shape[0]),
    None,
    V.Vocab(w.shape[1], CHUNK),
    V.Target(),
  )[:2]


def bwd_dense(h, w, ids, c):
  """Per block: c scattered into a dense [T, chunk] block, two matmuls."""
  t, d = h.shape
  v = w.shape[1]
  rows = jnp.arange(t)[:, None]

  def body(carry, i):
    dh, dw = carry
    start = i * CHUNK
    w_c = lax.dynamic_slice_in_dim(w, start, CHUNK, axis=1)
    local = ids - start
    inside = (local >= 0) & (local < CHUNK)
    dz = (
      jnp.zeros((t, CHUNK))
      .at[rows, jnp.where(inside, local, CHUNK)]
      .add(jnp.where(inside, c, 0.0), mode="drop")
    )
    dw = lax.dynamic_update_slice_in_dim(dw, h.T @ dz, start, axis=1)
    return (dh + dz @ w_c.T, dw), None

  init = (jnp.zeros((t, d)), jnp.zeros((d, v)))
  return lax.scan(body, init, jnp.arange(v // CHUNK))[0]


def _token_blocks(block, *arrays):
  return tuple(
    a.reshape((a.shape[0] // block, block) + a.shape[1:]) for a in arrays
  )


def bwd_columns(h, w, ids, c, block):
  """Gather/scatter on the columns of W [d, V]."""
  t, d = h.shape
  k = ids.shape[1]

  def body(dw, blk):
    hb, ib, cb = blk
    cols = jnp.take(w, ib.reshape(-1), axis=1).reshape(d, block, k)
    dh = jnp.einsum("dbk,bk->bd", cols, cb)
    upd = jnp.einsum("bd,bk->dbk", hb, cb).reshape(d, block * k)
    return dw.at[:, ib.reshape(-1)].add(upd), dh

  dw, dh = lax.scan(body, jnp.zeros_like(w), _token_blocks(block, h, ids, c))
  return dh.reshape(t, d), dw


def bwd_rows(h, w, ids, c, block):
  """Gather/scatter on the rows of W.T [V, d]; transposes each way."""
  t, d = h.shape
  k = ids.shape[1]
  wt = w.T

  def body(dwt, blk):
    hb, ib, cb = blk
    dh = jnp.einsum("bkd,bk->bd", jnp.take(wt, ib, axis=0), cb)
    upd = (cb[:, :, None] * hb[:, None, :]).reshape(block * k, d)
    return dwt.at[ib.reshape(-1)].add(upd), dh

  dwt, dh = lax.scan(body, jnp.zeros_like(wt), _token_blocks(block, h, ids, c))
  return dh.reshape(t, d), dwt.T


def _time(
  fns: dict[str, Callable], args, base: str, repeats: int, title: str
) -> str:
  thunks = {
    n: (lambda f=f: jax.block_until_ready(f(*args))) for n, f in fns.items()
  }
  for thunk in thunks.values():
    thunk()
    thunk()
  samples = bench.time_interleaved(thunks, repeats)
  rows = []
  for n, s in samples.items():
    r = [a / b for a, b in zip(s, samples[base])]
    rows.append(
      [
        n,
        f"{statistics.median(s) * 1e3:.0f}",
        f"{statistics.median(r):.2f}",
        f"{min(r):.2f}–{max(r):.2f}",
      ]
    )
  header = ["variant", "ms", f"ratio to {base}", "pair ratios"]
  return f"## {title}\n\n" + bench.markdown_table(header, rows)


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("part", choices=["topk", "backward"])
  p.add_argument("--vocab", type=int, default=32768)
  p.add_argument("--ks", default="16,32,64,128")
  p.add_argument("--blocks", default="256")
  p.add_argument(
    "--merge",
    choices=["concat", "block-first", "both"],
    default="both",
    help="topk: the merges to time",
  )
  p.add_argument("--repeats", type=int, default=5)
  a = p.parse_args(argv)
  kh, kw, ki, kc = jax.random.split(jax.random.key(0), 4)
  h = jax.random.normal(kh, (TOKENS, DIM))
  w = jax.random.normal(kw, (DIM, a.vocab)) / np.sqrt(DIM)
  ks = [int(k) for k in a.ks.split(",")]
  print(bench.environment_line(a.repeats, False), "\n")
  if a.part == "topk":
    fns = {
      "matmul + max": jax.jit(fwd_max),
      "matmul + lse (softmax forward)": jax.jit(fwd_lse),
    }
    merges = {
      "concat": (False,),
      "block-first": (True,),
      "both": (False, True),
    }[a.merge]
    for k in ks:
      for first in merges:
        name = f"top-{k} " + ("block's top-k first" if first else "concat")
        fns[name] = jax.jit(functools.partial(fwd_topk, k=k, chunk_first=first))
        want = lax.top_k(h[:64] @ w, k)[0]
        got = fns[name](h[:64], w)[0]
        assert np.array_equal(np.asarray(got), np.asarray(want)), name
    print(
      _time(
        fns,
        (h, w),
        "matmul + max",
        a.repeats,
        f"running top-k, tokens {TOKENS}, d {DIM}, V {a.vocab}",
      )
    )
    return
  for k in ks:
    ids = jax.random.randint(ki, (TOKENS, k), 0, a.vocab)
    c = jax.random.normal(kc, (TOKENS, k))
    fns = {
      "softmax backward (3 matmuls a block)": jax.jit(bwd_softmax),
      "dense from candidates (2 matmuls a block)": jax.jit(bwd_dense),
    }
    for b in (int(x) for x in a.blocks.split(",")):
      fns[f"columns of W [d, V], {b} tokens a block"] = jax.jit(
        functools.partial(bwd_columns, block=b)
      )
      fns[f"rows of W.T [V, d], {b} tokens a block"] = jax.jit(
        functools.partial(bwd_rows, block=b)
      )
    ref = fns["dense from candidates (2 matmuls a block)"](h, w, ids, c)
    for n, f in fns.items():
      if "tokens a block" in n:
        for got, want in zip(f(h, w, ids, c), ref):
          np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    print(
      _time(
        fns,
        (h, w, ids, c),
        "softmax backward (3 matmuls a block)",
        a.repeats,
        f"sparse backward, tokens {TOKENS}, d {DIM}, V {a.vocab}, k {k}",
      ),
      "\n",
    )


if __name__ == "__main__":
  main()
