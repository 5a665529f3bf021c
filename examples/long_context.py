"""Long-context training on packed documents, with block-wise attention.

Run from the repository root after ``pip install ".[examples]"``::

  python examples/long_context.py                  # L = 32768, 10 steps
  python examples/long_context.py --length 16384 --steps 0   # memory only
  python examples/long_context.py --fast           # seconds (tests, CI)
  python examples/long_context.py --length 256 --batch 16 --steps 1500
  python examples/long_context.py --length 256 --batch 16 --steps 1500 \\
      --alpha learned --alpha-init 1.01 --attention dense

``SOFTJAX_FAST=1`` in the environment does the same as ``--fast``.

The model is a two-layer, attention-only causal transformer (pre-norm,
learned positions). Its attention is
``softjax.attention.blockwise_attention``, which never forms the
``[heads, L, L]`` score matrix; before training, the script compiles one
training step both ways and prints the memory each would need, from XLA's
own accounting (``memory_analysis().temp_size_in_bytes``). At the default
L = 32768 the dense step would need about 64 GiB of temporaries, more than
this 24 GiB machine has; the block-wise step needs about 190 MiB. (At
16384: 16 GiB against 95 MiB.) Ten steps only take the loss down to the
unigram level, log(vocab); learning the induction task takes a few hundred
steps (try ``--length 256 --batch 16 --steps 1500``).

The rows are packed, as in real pretraining: each row of length L holds
``--docs`` N independent documents (default 4) of L/N tokens each, one
after the other. A document is an induction ("repeat the sequence") task:
L/(2N) uniform random tokens followed by the same tokens again. Tokens of
the first half cannot be predicted; each one of the second half can, as
the repeat of the token half a document back, which a two-layer model
learns to copy with a previous-token head and an induction head (Olsson
et al., 2022). Loss and accuracy are measured on the second half of every
document; chance accuracy is still ``1/vocab``: packing changes nothing
for a token that cannot look outside its document.

The attention is told where the documents are with ``segment_ids`` (the
document index of every token, ``[batch, L]``): a query sees only the
earlier keys of its own document, so no document attends into the one
before it, as if each had a row of its own. The positions restart at 0 in
every document (the learned position table has L/N rows), so a document is
the same task wherever it sits in the row. The block-wise path also skips
the block pairs whose documents do not meet, so a row of N documents costs
about 1/N of the attention work of one causal row of length L (the memory
report prints the fraction of the block pairs visited: 0.26 at the default
L = 32768 with 4 documents, more for short documents, where the diagonal
blocks weigh more). The dense path still forms the whole ``[heads, L, L]``
scores and masks them.

``--alpha`` picks the attention map: ``1`` (softmax), ``1.5`` (entmax15),
``2`` (sparsemax), or ``learned`` (one α per head and layer, starting at
``--alpha-init``, learned with the model as in Correia et al., 2019), on
both paths; ``--attention dense`` runs the same model with
``softjax.attention.dot_product_attention`` at lengths where the dense
scores fit.

References:
  C. Olsson et al. "In-context Learning and Induction Heads".
  Transformer Circuits Thread, 2022.
  G. M. Correia, V. Niculae, A. F. T. Martins. "Adaptively Sparse
  Transformers". EMNLP 2019.
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import softjax

LAYERS, HEADS, HEAD_DIM, WIDTH = 2, 4, 16, 64


def parse_alpha(text: str) -> float | str:
  return "learned" if text == "learned" else float(text)


def init_params(
  key: jax.Array, vocab: int, doc_length: int, alpha: Any, alpha_init: float
) -> dict:
  """The weights; the position table has one row per position in a document."""
  keys = iter(jax.random.split(key, 4 + 4 * LAYERS))
  dense = lambda k, n, m: jax.random.normal(k, (n, m)) / np.sqrt(n)
  params = {
    "embed": jax.random.normal(next(keys), (vocab, WIDTH)) * 0.5,
    "pos": jax.random.normal(next(keys), (doc_length, WIDTH)) * 0.5,
    "unembed": dense(next(keys), WIDTH, vocab),
    "layers": [],
  }
  for _ in range(LAYERS):
    layer = {
      name: dense(next(keys), WIDTH, HEADS * HEAD_DIM)
      for name in ("wq", "wk", "wv")
    }
    layer["wo"] = dense(next(keys), HEADS * HEAD_DIM, WIDTH)
    if alpha == "learned":
      # α = 1 + softplus(raw) > 1: start at alpha_init.
      raw = np.log(np.expm1(alpha_init - 1.0))
      layer["alpha_raw"] = jnp.full((HEADS,), raw, jnp.float32)
    params["layers"].append(layer)
  return params


def _normalizer(alpha: Any):
  """The dense path's normaliser for a static or per-head α."""
  if isinstance(alpha, jax.Array):
    return lambda s, **kw: softjax.entmax(s, alpha[:, None, None], **kw)
  if alpha == 1.0:
    return softjax.softmax
  return lambda s, **kw: softjax.entmax(s, alpha, **kw)


def attend(q, k, v, ids, alpha, kind: str, block: int | None):
  """Causal attention within the documents that ``ids`` marks."""
  if kind == "blockwise":
    return softjax.attention.blockwise_attention(
      q,
      k,
      v,
      alpha=alpha,
      is_causal=True,
      segment_ids=ids,
      block_q=block,
      block_k=block,
    )
  return softjax.attention.dot_product_attention(
    q, k, v, is_causal=True, segment_ids=ids, normalizer=_normalizer(alpha)
  )


def _norm(x: jax.Array) -> jax.Array:
  x = x - x.mean(-1, keepdims=True)
  return x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + 1e-5)


def alphas(params: dict, alpha: Any) -> list[Any]:
  if alpha != "learned":
    return [alpha] * LAYERS
  return [
    1.0 + jax.nn.softplus(layer["alpha_raw"]) for layer in params["layers"]
  ]


def packing(length: int, docs: int) -> tuple[np.ndarray, np.ndarray]:
  """``[length]`` document ids and positions within the document."""
  index = np.arange(length)
  doc_length = length // docs
  return index // doc_length, index % doc_length


def logits_fn(
  params: dict,
  tokens: jax.Array,
  docs: int,
  alpha: Any,
  kind: str,
  block: int | None,
) -> jax.Array:
  batch, length = tokens.shape
  ids, positions = packing(length, docs)
  ids = jnp.broadcast_to(jnp.asarray(ids, jnp.int32), (batch, length))
  x = params["embed"][tokens] + params["pos"][positions]
  for layer, a in zip(params["layers"], alphas(params, alpha)):
    h = _norm(x)
    q, k, v = (
      (h @ layer[w]).reshape(batch, length, HEADS, HEAD_DIM)
      for w in ("wq", "wk", "wv")
    )
    out = attend(q, k, v, ids, a, kind, block)
    x = x + out.reshape(batch, length, HEADS * HEAD_DIM) @ layer["wo"]
  return _norm(x) @ params["unembed"]


def loss_and_accuracy(params, tokens, docs, alpha, kind, block):
  """Cross-entropy and accuracy on the second half of every document.

  Each position predicts the next token of its own document: the targets
  are the second-half tokens, the logits those of the positions before.
  """
  batch, length = tokens.shape
  logits = logits_fn(params, tokens, docs, alpha, kind, block)
  doc_length = length // docs
  half = doc_length // 2
  logits = logits.reshape(batch, docs, doc_length, -1)[:, :, half - 1 : -1]
  targets = tokens.reshape(batch, docs, doc_length)[:, :, half:]
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  accuracy = (logits.argmax(-1) == targets).mean()
  return loss.mean(), accuracy


def sample(
  key: jax.Array, batch: int, length: int, docs: int, vocab: int
) -> jax.Array:
  """``[batch, length]``: rows of ``docs`` packed documents, each random
  tokens then the same tokens again."""
  half = jax.random.randint(key, (batch, docs, length // (2 * docs)), 0, vocab)
  return jnp.concatenate([half, half], axis=2).reshape(batch, length)


def make_step(optimizer, docs, alpha, kind, block):
  def step(params, state, tokens):
    (loss, acc), grads = jax.value_and_grad(loss_and_accuracy, has_aux=True)(
      params, tokens, docs, alpha, kind, block
    )
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss, acc

  return jax.jit(step)


def report_memory(args, compiled, optimizer, params, state, tokens) -> None:
  """The temp memory of one training step, block-wise and dense."""
  other = "dense" if args.attention == "blockwise" else "blockwise"
  sizes = {args.attention: compiled.memory_analysis().temp_size_in_bytes}
  sizes[other] = (
    make_step(optimizer, args.docs, args.alpha, other, args.block)
    .lower(params, state, tokens)
    .compile()
    .memory_analysis()
    .temp_size_in_bytes
  )
  total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  print(
    f"memory of one training step at L = {args.length} (batch "
    f"{args.batch}, {LAYERS} layers x {HEADS} heads), XLA temp bytes:"
  )
  for kind in ("blockwise", "dense"):
    size = sizes[kind]
    fits = (
      "  (fits)"
      if size < total
      else f"  (does NOT fit in this machine's {total / 2**30:.0f} GiB)"
    )
    print(f"  {kind:9s} attention: {size / 2**20:10,.1f} MiB{fits}")
  # blockwise_attention's default: 256, or the whole length if shorter.
  block = args.block or min(256, args.length)
  packed, causal = block_pairs(args.length, args.docs, block)
  print(
    f"block pairs the block-wise attention visits ({block} x {block} "
    f"blocks): {packed:,} for {documents(args.docs)} packed against "
    f"{causal:,} for one causal row, {packed / causal:.2f} of the work"
  )


def documents(n: int) -> str:
  return f"{n} document" + ("s" if n != 1 else "")


def block_pairs(length: int, docs: int, block: int) -> tuple[int, int]:
  """Block pairs on or below the causal diagonal whose document ranges
  meet, and all of those on or below it (one unpacked causal row)."""
  ids, _ = packing(length, docs)
  n = -(-length // block)
  first = ids[np.minimum(np.arange(n) * block, length - 1)]
  last = ids[np.minimum(np.arange(1, n + 1) * block, length) - 1]
  causal = np.tril(np.ones((n, n), bool))
  meet = (first[:, None] <= last[None, :]) & (first[None, :] <= last[:, None])
  return int(np.sum(causal & meet)), int(np.sum(causal))


def train(args) -> None:
  key = jax.random.key(args.seed)
  params = init_params(
    key, args.vocab, args.length // args.docs, args.alpha, args.alpha_init
  )
  optimizer = optax.adam(args.lr)
  state = optimizer.init(params)
  tokens = jax.ShapeDtypeStruct((args.batch, args.length), jnp.int32)
  # Compiled once: its memory is reported, then it trains.
  step = (
    make_step(optimizer, args.docs, args.alpha, args.attention, args.block)
    .lower(params, state, tokens)
    .compile()
  )
  if not args.no_memory:
    report_memory(args, step, optimizer, params, state, tokens)
  if args.steps == 0:
    return
  evaluate = jax.jit(
    functools.partial(
      loss_and_accuracy,
      docs=args.docs,
      alpha=args.alpha,
      kind=args.attention,
      block=args.block,
    )
  )
  test = sample(
    jax.random.key(args.seed + 1000),
    args.batch,
    args.length,
    args.docs,
    args.vocab,
  )
  print(
    f"training: {args.attention} attention, alpha {args.alpha}, "
    f"L = {args.length} ({documents(args.docs)} of "
    f"{args.length // args.docs}), batch {args.batch}, {args.steps} steps; "
    f"chance accuracy {1 / args.vocab:.3f}, chance loss "
    f"{np.log(args.vocab):.2f}"
  )
  start, first = time.perf_counter(), None
  every = max(1, args.steps // 10)
  for i in range(args.steps):
    tokens = sample(
      jax.random.fold_in(key, i), args.batch, args.length, args.docs, args.vocab
    )
    params, state, loss, acc = step(params, state, tokens)
    if first is None:
      first = float(loss)
    if (i + 1) % every == 0 or i + 1 == args.steps:
      extra = ""
      if args.alpha == "learned":
        extra = "  alpha " + " | ".join(
          " ".join(f"{a:.2f}" for a in np.asarray(layer))
          for layer in alphas(params, args.alpha)
        )
      print(
        f"  step {i + 1:5d}  loss {float(loss):.3f}  accuracy "
        f"{float(acc):.3f}  ({time.perf_counter() - start:.0f} s){extra}",
        flush=True,
      )
  test_loss, test_acc = evaluate(params, test)
  print(
    f"final: train loss {first:.3f} -> {float(loss):.3f}, test loss "
    f"{float(test_loss):.3f}, test accuracy {float(test_acc):.3f}"
  )


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument(
    "--fast",
    action="store_true",
    help="a small run for the test suite (also SOFTJAX_FAST=1)",
  )
  p.add_argument(
    "--length",
    type=int,
    default=None,
    help="sequence length (default 32768; 512 with --fast)",
  )
  p.add_argument(
    "--docs",
    type=int,
    default=4,
    help="documents packed into each row (default 4); 2 x docs divides L",
  )
  p.add_argument("--batch", type=int, default=1)
  p.add_argument(
    "--steps",
    type=int,
    default=None,
    help="training steps (default 10; 6 with --fast; 0: only print the memory)",
  )
  p.add_argument("--vocab", type=int, default=32)
  p.add_argument("--lr", type=float, default=3e-3)
  p.add_argument(
    "--alpha",
    type=parse_alpha,
    default=1.0,
    help="1 (softmax), 1.5, 2, any value >= 1, or 'learned'",
  )
  p.add_argument(
    "--alpha-init",
    type=float,
    default=1.01,
    help="starting α of --alpha learned",
  )
  p.add_argument(
    "--attention", choices=["blockwise", "dense"], default="blockwise"
  )
  p.add_argument(
    "--block",
    type=int,
    default=None,
    help="block size (default: blockwise_attention's)",
  )
  p.add_argument(
    "--no-memory", action="store_true", help="skip the memory comparison"
  )
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  args.fast = args.fast or os.environ.get("SOFTJAX_FAST") == "1"
  args.length = args.length or (512 if args.fast else 32768)
  if args.docs < 1 or args.length % (2 * args.docs):
    p.error(
      f"--docs {args.docs}: each row holds documents of equal, even "
      f"length, so 2 x docs must divide the length {args.length}"
    )
  if args.steps is None:
    args.steps = 6 if args.fast else 10
  if args.fast:
    args.block = args.block or 128
  train(args)


if __name__ == "__main__":
  main()
