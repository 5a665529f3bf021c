"""A word-level language model trained without the [tokens, V] logits.

Run from the repository root after ``pip install ".[examples]"``::

  python examples/vocab_lm.py                    # about 1500 steps
  python examples/vocab_lm.py --fast             # a few seconds (tests, CI)
  python examples/vocab_lm.py --loss softmax     # the loss to train with
  python examples/vocab_lm.py --label-smoothing 0.05

``SOFTJAX_FAST=1`` in the environment does the same as ``--fast``.

A small Flax Linen model reads, at every position of a sequence, the
previous ``CONTEXT`` words and produces a hidden vector; its output layer is
tied to its input embedding, the ``[V, d]`` table of its ``nn.Embed``, and is
never multiplied out. The training step is that of a language model:

* batches of documents of 1 to 3 sentences, padded to one length; the
  labels of the padding (and of each document's last word, which has no
  next word) are ``-100`` and ``ignore_index=-100`` leaves them out of the
  loss, its gradients and its mean (``reduction="mean"``);
* for the softmax loss, label smoothing 0.1 and a z-loss of 1e-4. The
  sparse losses train without smoothing by default (``--label-smoothing``
  sets it for any loss): their smoothed target ``(1 - ε) onehot + ε / V``
  has every word in its support, and so do the distributions that fit it
  (in ``--fast``, ε = 0.1 widens the entmax15 support from about 100 to
  about 300 of the 428 words);
* the tied table passed as it is stored, ``transposed_weight=True`` (no
  transpose, no d × V copy).

``softjax.losses.linear_entmax15_loss(hidden, table, labels, bias=bias,
transposed_weight=True, ...)`` computes the 1.5-entmax loss over the
vocabulary block by block (its value and gradients equal those of the same
loss on the materialised logits): the predicted distributions put exactly
zero mass on most words, and the backward pass touches only the table rows
of each position's support. ``--loss softmax`` (cross-entropy) or ``--loss
sparsemax`` trains with the other fused losses.

The corpus is made up here (no download): sentences drawn from a small
grammar over a vocabulary of a few hundred words, so there is structure to
learn. The script prints the training objective, the held-out loss (without
smoothing or z-loss; for softmax its perplexity, for the sparse losses the
support size that ``return_support=True`` gives), a few greedy
continuations, and the memory that the fused loss saves: XLA's temporary
memory for the forward and backward pass of the same objective on
materialised logits and of the fused loss, at this model's size and at a
typical language-model size (4096 tokens, d = 512, V = 32768).
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
PAD = "<pad>"  # token id 0: the padding, and the context before a document
IGNORE = -100  # the label of a position left out of the loss
MAX_SENTENCES = 3  # per document
LABEL_SMOOTHING = {"softmax": 0.1, "sparsemax": 0.0, "entmax15": 0.0}
Z_LOSS = 1e-4  # softmax only
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


def make_sentence(rng: np.random.Generator) -> list[str]:
  def noun_phrase():
    adjective = rng.choice(ADJECTIVES)
    noun = f"{rng.choice(NOUNS)}-{rng.integers(VARIANTS)}"
    return ["the", adjective, noun]

  subject, obj = noun_phrase(), noun_phrase()
  # Even-numbered nouns are singular, odd ones plural.
  plural = int(subject[2].rsplit("-", 1)[1]) % 2
  verb = VERBS[rng.integers(len(VERBS))][plural]
  return subject + [verb] + obj + [rng.choice(ADVERBS), "."]


def make_documents(
  rng: np.random.Generator, n_sentences: int
) -> list[list[str]]:
  """Documents of 1 to MAX_SENTENCES sentences: sequences of varying
  length."""
  docs = []
  while n_sentences > 0:
    n = min(n_sentences, int(rng.integers(1, MAX_SENTENCES + 1)))
    docs.append([w for _ in range(n) for w in make_sentence(rng)])
    n_sentences -= n
  return docs


def pad_batch(docs: list[np.ndarray], length: int) -> tuple[np.ndarray, ...]:
  """Token ids padded to ``length`` with 0 (PAD), and the next-word labels:
  ``(inputs, labels)``, both ``[len(docs), length]``; the label after a
  document's last word and those of the padding are IGNORE."""
  inputs = np.zeros((len(docs), length), np.int32)
  labels = np.full((len(docs), length), IGNORE, np.int32)
  for i, doc in enumerate(docs):
    inputs[i, : doc.size] = doc
    labels[i, : doc.size - 1] = doc[1:]
  return inputs, labels


class Body(nn.Module):
  """Token ids -> a hidden vector per position (from the previous CONTEXT
  words), plus the output layer: the tied embedding table and a bias."""

  vocab: int
  dim: int = 64

  @nn.compact
  def __call__(self, tokens: jax.Array):
    embed = nn.Embed(self.vocab, self.dim)
    # Position t sees tokens t - CONTEXT + 1 .. t; before a document's first
    # word, the PAD id (0).
    padded = jnp.pad(tokens, [(0, 0)] * (tokens.ndim - 1) + [(CONTEXT - 1, 0)])
    length = tokens.shape[-1]
    context = jnp.stack(
      [padded[..., k : k + length] for k in range(CONTEXT)], axis=-1
    )  # [B, L, CONTEXT]
    emb = embed(context)  # [B, L, CONTEXT, d]
    x = emb.reshape(emb.shape[:-2] + (-1,))
    x = nn.gelu(nn.Dense(128)(x))
    hidden = nn.Dense(self.dim)(x)  # [B, L, d]
    bias = self.param("head_bias", nn.initializers.zeros, (self.vocab,))
    # The output layer is the input embedding: the [V, d] table, used by
    # the fused loss as it is stored (transposed_weight=True).
    return hidden, embed.embedding, bias


def logits_of(hidden: jax.Array, table: jax.Array, bias: jax.Array):
  """The logits ``hidden · tableᵀ + bias``, materialised: for decoding a
  few positions, and for the reference of the memory report."""
  return jnp.einsum("...d,vd->...v", hidden, table) + bias


def options(name: str, smoothing: float | None) -> dict:
  """The fused loss's keywords: padding and mean always; label smoothing
  and (softmax) z-loss in the training objective only (``smoothing`` not
  None)."""
  out = {"ignore_index": IGNORE, "reduction": "mean"}
  if smoothing is not None:
    out["label_smoothing"] = smoothing
    if name == "softmax":
      out["z_loss"] = Z_LOSS
  return out


def materialised_objective(name: str, smoothing: float, h, table, y):
  """The training objective on the [tokens, V] logits: the loss against
  the smoothed targets, plus the z-loss, mean over the tokens kept."""
  z = logits_of(h, table, 0.0)
  keep = y != IGNORE
  onehot = jax.nn.one_hot(jnp.where(keep, y, 0), z.shape[-1])
  target = (1 - smoothing) * onehot + smoothing / z.shape[-1]
  per_token = MATERIALISED[name](z, target)
  if name == "softmax":
    per_token += Z_LOSS * jax.nn.logsumexp(z, axis=-1) ** 2
  return jnp.sum(jnp.where(keep, per_token, 0)) / jnp.maximum(keep.sum(), 1)


def temp_mib(loss, tokens: int, dim: int, vocab: int) -> float:
  """XLA's temp memory of jit(grad of loss(h, E, y)), compiled only."""
  args = (
    jax.ShapeDtypeStruct((tokens, dim), jnp.float32),
    jax.ShapeDtypeStruct((vocab, dim), jnp.float32),  # the tied table
    jax.ShapeDtypeStruct((tokens,), jnp.int32),
  )
  fwd_bwd = jax.jit(jax.grad(loss, argnums=(0, 1)))
  compiled = fwd_bwd.lower(*args).compile()
  return compiled.memory_analysis().temp_size_in_bytes / 2**20


def report_memory(
  name: str, smoothing: float, tokens: int, dim: int, vocab: int
) -> None:
  full = temp_mib(
    lambda h, e, y: materialised_objective(name, smoothing, h, e, y),
    tokens,
    dim,
    vocab,
  )
  fused = temp_mib(
    lambda h, e, y: FUSED[name](
      h, e, y, transposed_weight=True, **options(name, smoothing)
    ),
    tokens,
    dim,
    vocab,
  )
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
  parser.add_argument(
    "--label-smoothing",
    type=float,
    default=None,
    help="ε of the label smoothing (default: 0.1 for softmax, 0 for the "
    "sparse losses, whose supports it widens)",
  )
  args = parser.parse_args(argv)
  smoothing = args.label_smoothing
  if smoothing is None:
    smoothing = LABEL_SMOOTHING[args.loss]
  steps, batch = (150, 16) if args.fast else (1500, 32)

  rng = np.random.default_rng(0)
  docs = make_documents(rng, 3000 if args.fast else 20000)
  vocab = [PAD] + sorted({w for doc in docs for w in doc})
  index = {w: i for i, w in enumerate(vocab)}
  docs = [np.array([index[w] for w in doc], np.int32) for doc in docs]
  length = max(doc.size for doc in docs)
  split = int(0.9 * len(docs))
  train_docs = docs[:split]
  x_train, y_train = pad_batch(train_docs, length)
  x_test, y_test = pad_batch(docs[split:], length)
  kept = np.mean(y_train != IGNORE)
  print(
    f"corpus: {sum(d.size for d in docs)} words in {len(docs)} documents of "
    f"1 to {MAX_SENTENCES} sentences, vocabulary V = {len(vocab)}; rows "
    f"padded to {length} tokens, {kept:.0%} of the labels kept "
    f"(ignore_index={IGNORE} on the rest)"
  )

  model = Body(len(vocab))
  params = model.init(jax.random.key(0), x_train[:1])
  fused = FUSED[args.loss]

  def objective(params, x, y, smoothing=smoothing):
    hidden, table, bias = model.apply(params, x)
    return fused(
      hidden,
      table,  # [V, d]: the tied embedding, read in place
      y,
      bias=bias,
      chunk_size=128,
      transposed_weight=True,
      **options(args.loss, smoothing),
    )

  tx = optax.adam(optax.cosine_decay_schedule(3e-3, steps, 0.1))
  opt_state = tx.init(params)
  x_train, y_train = jnp.asarray(x_train), jnp.asarray(y_train)

  @jax.jit
  def train_step(params, opt_state, step):
    idx = jax.random.randint(
      jax.random.fold_in(jax.random.key(1), step), (batch,), 0, x_train.shape[0]
    )
    loss, grads = jax.value_and_grad(objective)(
      params, x_train[idx], y_train[idx]
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  # The held-out loss: no smoothing, no z-loss, mean over the kept tokens.
  evaluate = jax.jit(lambda params, x, y: objective(params, x, y, None))
  first = float(evaluate(params, x_test, y_test))
  settings = f"label smoothing {smoothing:g}" + (
    f", z-loss {Z_LOSS:g}" if args.loss == "softmax" else ""
  )
  print(
    f"loss {args.loss} ({settings}, tied embeddings), {steps} steps of "
    f"{batch} padded rows{' (--fast)' if args.fast else ''}"
  )
  print(f"step {0:5d}: held-out loss {first:.4f}")
  for step in range(steps):
    params, opt_state, loss = train_step(params, opt_state, step)
    if (step + 1) % (steps // 3) == 0:
      print(
        f"step {step + 1:5d}: train objective {float(loss):.4f}", flush=True
      )
  last = float(evaluate(params, x_test, y_test))
  print(f"final: held-out loss {first:.4f} -> {last:.4f}")
  if args.loss == "softmax":
    print(f"held-out perplexity {np.exp(last):.1f} (uniform: {len(vocab)})")
  else:
    hidden, table, bias = model.apply(params, jnp.asarray(x_test))
    _, support = fused(
      hidden,
      table,
      jnp.asarray(y_test),
      bias=bias,
      transposed_weight=True,
      return_support=True,
      **options(args.loss, None),
    )
    scored = y_test != IGNORE
    print(
      f"held-out support: {float(support[scored].mean()):.1f} of "
      f"{len(vocab)} words on average (return_support=True)"
    )

  print("\ngreedy continuations (the output layer applied to 1 token):")
  for start in (
    ["the", "red", "cat-4", "sees"],
    ["the", "cold", "ship-7", "find"],
  ):
    ids = [index[w] for w in start]
    for _ in range(6):
      hidden, table, bias = model.apply(params, jnp.asarray([ids]))
      ids.append(int(jnp.argmax(logits_of(hidden[0, -1], table, bias))))
    print("  " + " ".join(vocab[i] for i in ids))

  print()
  report_memory(args.loss, smoothing, batch * length, 64, len(vocab))
  report_memory(args.loss, smoothing, 4096, 512, 32768)
  return 0


if __name__ == "__main__":
  sys.exit(main())
