"""A word-level language model head trained without the [tokens, V] logits.

Run from the repository root after ``pip install ".[examples]"``::

  python examples/vocab_lm.py                    # about 1500 steps
  python examples/vocab_lm.py --fast             # a few seconds (tests, CI)
  python examples/vocab_lm.py --loss softmax     # the loss to train with

``SOFTJAX_FAST=1`` in the environment does the same as ``--fast``.

A small Flax Linen model reads the previous ``CONTEXT`` words and produces
a hidden vector per position; its output layer is a ``[d, V]`` kernel that
is never multiplied out. ``softjax.losses.linear_entmax15_loss(hidden,
kernel, labels, bias=bias)`` computes the 1.5-entmax loss over the
vocabulary block by block (its value and gradients equal those of
``entmax15_loss(hidden @ kernel + bias, labels)``): the predicted
distributions put exactly zero mass on most words, and the backward pass
touches only the output-layer rows of each position's support. ``--loss
softmax`` (cross-entropy) or ``--loss sparsemax`` trains with the other
fused losses.

The corpus is made up here (no download): sentences drawn from a small
grammar over a vocabulary of a few hundred words, so there is structure to
learn. The script prints the training loss, the held-out perplexity, a few
greedy continuations, and the memory that the fused loss saves: XLA's
temporary memory for the forward and backward pass of the materialised and
of the fused loss, at this model's size and at a typical language-model
size (4096 tokens, d = 512, V = 32768).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from flax import linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import softjax  # noqa: E402

CONTEXT = 4
FUSED = {
  "softmax": softjax.losses.linear_softmax_loss,
  "sparsemax": softjax.losses.linear_sparsemax_loss,
  "entmax15": softjax.losses.linear_entmax15_loss,
}
MATERIALISED = {
  "softmax": softjax.losses.softmax_loss,
  "sparsemax": softjax.losses.sparsemax_loss,
  "entmax15": softjax.losses.entmax15_loss,
}

# The grammar: "the <adj> <noun> <verb> the <adj> <noun> <adverb> ." with
# numbered variants of each noun, so the vocabulary is a few hundred words
# while the sentence structure stays learnable.
ADJECTIVES = [
  "red",
  "small",
  "quiet",
  "old",
  "bright",
  "heavy",
  "round",
  "cold",
]
NOUNS = [
  "cat",
  "river",
  "engine",
  "garden",
  "letter",
  "window",
  "stone",
  "bird",
  "lamp",
  "ship",
]
# (singular, plural): the verb agrees with its subject.
VERBS = [
  ("sees", "see"),
  ("follows", "follow"),
  ("carries", "carry"),
  ("paints", "paint"),
  ("finds", "find"),
  ("hears", "hear"),
]
VARIANTS = 40
ADVERBS = ["slowly", "today", "again", "quietly", "at-night"]


def make_corpus(rng: np.random.Generator, n_sentences: int) -> list[str]:
  words = []
  for _ in range(n_sentences):

    def noun_phrase():
      adjective = rng.choice(ADJECTIVES)
      noun = f"{rng.choice(NOUNS)}-{rng.integers(VARIANTS)}"
      return ["the", adjective, noun]

    subject, obj = noun_phrase(), noun_phrase()
    # Even-numbered nouns are singular, odd ones plural.
    plural = int(subject[2].rsplit("-", 1)[1]) % 2
    verb = VERBS[rng.integers(len(VERBS))][plural]
    words += subject + [verb] + obj + [rng.choice(ADVERBS), "."]
  return words


class Body(nn.Module):
  """Context words -> hidden vector, plus the output layer's parameters."""

  vocab: int
  dim: int = 64

  @nn.compact
  def __call__(self, context: jax.Array):
    emb = nn.Embed(self.vocab, 32)(context)  # [B, CONTEXT, 32]
    x = emb.reshape(emb.shape[:-2] + (-1,))
    x = nn.gelu(nn.Dense(128)(x))
    hidden = nn.Dense(self.dim)(x)  # [B, d]
    # The output layer's kernel and bias, used by the fused loss directly.
    kernel = self.param(
      "head_kernel", nn.initializers.lecun_normal(), (self.dim, self.vocab)
    )
    bias = self.param("head_bias", nn.initializers.zeros, (self.vocab,))
    return hidden, kernel, bias


def windows(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """All (previous CONTEXT words, next word) pairs."""
  n = ids.size - CONTEXT
  idx = np.arange(n)[:, None] + np.arange(CONTEXT)[None, :]
  return ids[idx], ids[CONTEXT:]


def temp_mib(loss, tokens: int, dim: int, vocab: int) -> float:
  """XLA's temp memory of jit(fwd+bwd of loss(h, W, y)), compiled only."""

  def fwd_bwd(h, w, y, g):
    return jax.vjp(lambda h, w: loss(h, w, y), h, w)[1](g)

  args = (
    jax.ShapeDtypeStruct((tokens, dim), jnp.float32),
    jax.ShapeDtypeStruct((dim, vocab), jnp.float32),
    jax.ShapeDtypeStruct((tokens,), jnp.int32),
    jax.ShapeDtypeStruct((tokens,), jnp.float32),
  )
  compiled = jax.jit(fwd_bwd).lower(*args).compile()
  return compiled.memory_analysis().temp_size_in_bytes / 2**20


def report_memory(name: str, tokens: int, dim: int, vocab: int) -> None:
  full = temp_mib(
    lambda h, w, y: MATERIALISED[name](h @ w, y), tokens, dim, vocab
  )
  fused = temp_mib(FUSED[name], tokens, dim, vocab)
  print(
    f"memory at {tokens} tokens, d = {dim}, V = {vocab} (XLA temp, "
    f"fwd+bwd): materialised {full:.1f} MiB, fused {fused:.1f} MiB "
    f"({full / max(fused, 1e-9):.0f}x less)"
  )


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--fast",
    action="store_true",
    default=os.environ.get("SOFTJAX_FAST", "") not in ("", "0"),
    help="fewer steps, for tests and CI (also SOFTJAX_FAST=1)",
  )
  parser.add_argument(
    "--loss",
    choices=sorted(FUSED),
    default="entmax15",
    help="the fused loss to train with",
  )
  args = parser.parse_args(argv)
  steps, batch = (150, 256) if args.fast else (1500, 512)

  rng = np.random.default_rng(0)
  words = make_corpus(rng, 3000 if args.fast else 20000)
  vocab = sorted(set(words))
  index = {w: i for i, w in enumerate(vocab)}
  ids = np.array([index[w] for w in words], np.int32)
  split = int(0.9 * ids.size)
  x_train, y_train = windows(ids[:split])
  x_test, y_test = windows(ids[split:])
  print(
    f"corpus: {ids.size} words, vocabulary V = {len(vocab)}, "
    f"{x_train.shape[0]} training windows of {CONTEXT} words"
  )

  model = Body(len(vocab))
  params = model.init(jax.random.key(0), x_train[:1])
  fused = FUSED[args.loss]

  def loss_fn(params, x, y):
    hidden, kernel, bias = model.apply(params, x)
    return jnp.mean(fused(hidden, kernel, y, bias=bias, chunk_size=128))

  tx = optax.adam(optax.cosine_decay_schedule(3e-3, steps, 0.1))
  opt_state = tx.init(params)
  x_train, y_train = jnp.asarray(x_train), jnp.asarray(y_train)

  @jax.jit
  def train_step(params, opt_state, step):
    idx = jax.random.randint(
      jax.random.fold_in(jax.random.key(1), step), (batch,), 0, x_train.shape[0]
    )
    loss, grads = jax.value_and_grad(loss_fn)(
      params, x_train[idx], y_train[idx]
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  evaluate = jax.jit(loss_fn)
  first = float(evaluate(params, x_test, y_test))
  print(
    f"loss {args.loss}, {steps} steps of {batch} windows"
    f"{' (--fast)' if args.fast else ''}"
  )
  print(f"step {0:5d}: held-out loss {first:.4f}")
  for step in range(steps):
    params, opt_state, loss = train_step(params, opt_state, step)
    if (step + 1) % (steps // 3) == 0:
      print(f"step {step + 1:5d}: train loss {float(loss):.4f}", flush=True)
  last = float(evaluate(params, x_test, y_test))
  print(f"final: held-out loss {first:.4f} -> {last:.4f}")
  if args.loss == "softmax":
    print(f"held-out perplexity {np.exp(last):.1f} (uniform: {len(vocab)})")
  else:
    hidden, kernel, bias = model.apply(params, jnp.asarray(x_test[:512]))
    p = softjax.entmax(
      hidden @ kernel + bias, 2.0 if args.loss == "sparsemax" else 1.5
    )
    print(
      f"held-out support: {float(jnp.mean(jnp.sum(p > 0, -1))):.1f} of "
      f"{len(vocab)} words on average"
    )

  print("\ngreedy continuations (the output layer applied to 1 token):")
  for start in (
    ["the", "red", "cat-4", "sees"],
    ["the", "cold", "ship-7", "find"],
  ):
    context = [index[w] for w in start]
    out = list(start)
    for _ in range(6):
      hidden, kernel, bias = model.apply(
        params, jnp.asarray([context[-CONTEXT:]])
      )
      nxt = int(jnp.argmax(hidden @ kernel + bias, -1)[0])
      out.append(vocab[nxt])
      context.append(nxt)
    print("  " + " ".join(out))

  print()
  report_memory(args.loss, batch, 64, len(vocab))
  report_memory(args.loss, 4096, 512, 32768)
  return 0


if __name__ == "__main__":
  sys.exit(main())
