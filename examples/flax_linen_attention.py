"""Sparse attention in Flax Linen: softjax normalisers as the attention_fn.

Run from the repository root after ``pip install ".[examples]"``::

  python examples/flax_linen_attention.py           # about 500 steps
  python examples/flax_linen_attention.py --fast    # a few seconds (tests, CI)

``SOFTJAX_FAST=1`` in the environment does the same as ``--fast``.

``softjax.attention.dot_product_attention`` takes the same arguments as
``flax.linen.dot_product_attention`` plus ``normalizer``, so it plugs into
``nn.MultiHeadDotProductAttention`` as ``attention_fn``::

  attention_fn = functools.partial(softjax.attention.dot_product_attention,
                                   normalizer=softjax.entmax15)
  nn.MultiHeadDotProductAttention(num_heads=4, attention_fn=attention_fn)

(Use ``functools.partial``: Linen passes ``attention_fn`` only the keywords
named in its signature, so a ``lambda *a, **kw`` wrapper would silently lose
``dropout_rng``, ``deterministic`` and the rest.) A learnable α per head is a
parameter of an enclosing module, passed to ``softjax.entmax`` through the
normaliser; see :class:`LearnedAlphaAttention` below.

The task: each sequence holds 4 to 10 random tokens (the rest is padding,
masked with ``mask=`` and therefore given exactly zero weight), one of them
flagged; every position must output the content of the flagged token. One
token answers every query, so sparse attention is natural. Two models are
trained with optax: one with ``entmax15``, one with a learned α per head
(starting at 1.5). The script prints the loss, the attention sparsity (the
fraction of attention weights on real tokens that are exactly zero) and the
learned α's, then a final summary line per model. (A head whose attention
has become one-hot stops moving its α: one-hot weights do not change with α,
so its gradient is exactly zero.)

Haiku has no attention module with a pluggable ``attention_fn``; a Haiku
user writes their own module around the same function, e.g.::

  import haiku as hk

  class SparseAttention(hk.Module):
    def __init__(self, num_heads, key_size, name=None):
      super().__init__(name=name)
      self.num_heads, self.key_size = num_heads, key_size

    def __call__(self, x, mask=None):
      shape = x.shape[:-1] + (self.num_heads, self.key_size)
      q, k, v = (hk.Linear(self.num_heads * self.key_size, name=n)(x)
                 .reshape(shape) for n in ("query", "key", "value"))
      raw = hk.get_parameter("alpha_raw", (self.num_heads, 1, 1),
                             init=hk.initializers.Constant(-0.69))
      alpha = 1.0 + jax.nn.softplus(raw)          # α > 1, one per head
      out = softjax.attention.dot_product_attention(
          q, k, v, mask=mask,
          normalizer=lambda s, **kw: softjax.entmax(s, alpha, **kw))
      return hk.Linear(x.shape[-1])(out.reshape(x.shape[:-1] + (-1,)))

``examples/haiku_attention.py`` trains exactly that module on the same task.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import functools
import os
import sys
import time
from typing import Any

# Before JAX initialises: one CPU device is all this demo needs.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from flax import linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import softjax  # noqa: E402

SEQ_LEN = 10
CONTENT = 6  # features carried by each token
HEADS = 4
FEATURES = 32  # qkv features, 8 per head
BATCH = 64
INIT_ALPHA = 1.5


def make_batch(
  rng: np.random.Generator, batch: int = BATCH
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Tokens ``(batch, SEQ_LEN, CONTENT + 1)``, key-padding mask, targets.

  The last channel flags one real token per sequence; the target at every
  position is the content of that token. (NumPy: data needs no compiling.)
  """
  content = rng.standard_normal((batch, SEQ_LEN, CONTENT), np.float32)
  length = rng.integers(4, SEQ_LEN + 1, batch)
  flagged = rng.integers(0, length)
  valid = np.arange(SEQ_LEN)[None, :] < length[:, None]
  tokens = np.zeros((batch, SEQ_LEN, CONTENT + 1), np.float32)
  tokens[..., :CONTENT] = np.where(valid[..., None], content, 0.0)
  tokens[np.arange(batch), flagged, CONTENT] = 1.0
  target = np.broadcast_to(
    content[np.arange(batch), flagged][:, None], content.shape
  )
  return tokens, valid, np.ascontiguousarray(target)


def inverse_softplus(y: float) -> float:
  return float(np.log(np.expm1(y)))


class LearnedAlphaAttention(nn.Module):
  """``nn.MultiHeadDotProductAttention`` with α-entmax, one learned α a head.

  α is kept above 1 as ``1 + softplus(raw)``; ``softjax.entmax`` gives α its
  gradient (Correia et al., 2019).
  """

  num_heads: int
  qkv_features: int
  init_alpha: float = INIT_ALPHA

  @nn.compact
  def __call__(
    self, x: jax.Array, mask: jax.Array | None = None, sow_weights: bool = False
  ) -> jax.Array:
    raw = self.param(
      "alpha_raw",
      nn.initializers.constant(inverse_softplus(self.init_alpha - 1.0)),
      (self.num_heads, 1, 1),
    )
    alpha = 1.0 + jax.nn.softplus(raw)  # (heads, 1, 1): one α per head
    # Scores are (batch, heads, q, k), so alpha broadcasts per head.
    normalizer = functools.partial(softjax.entmax, alpha=alpha)
    attention_fn = functools.partial(
      softjax.attention.dot_product_attention, normalizer=normalizer
    )
    return nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads,
      qkv_features=self.qkv_features,
      attention_fn=attention_fn,
      name="attention",
    )(x, mask=mask, sow_weights=sow_weights)


class Model(nn.Module):
  """Embedding, one attention layer (entmax15 or learned α), read-out."""

  learned_alpha: bool

  @nn.compact
  def __call__(
    self, tokens: jax.Array, valid: jax.Array, sow_weights: bool = False
  ) -> jax.Array:
    h = nn.Dense(FEATURES, name="embed")(tokens)
    mask = nn.make_attention_mask(valid, valid)  # (batch, 1, q, k)
    if self.learned_alpha:
      h = h + LearnedAlphaAttention(HEADS, FEATURES, name="block")(
        h, mask=mask, sow_weights=sow_weights
      )
    else:
      attention_fn = functools.partial(
        softjax.attention.dot_product_attention, normalizer=softjax.entmax15
      )
      h = h + nn.MultiHeadDotProductAttention(
        num_heads=HEADS,
        qkv_features=FEATURES,
        attention_fn=attention_fn,
        name="block",
      )(h, mask=mask, sow_weights=sow_weights)
    return nn.Dense(CONTENT, name="readout")(
      nn.gelu(nn.Dense(2 * FEATURES, name="hidden")(h))
    )


def masked_mse(
  pred: jax.Array, target: jax.Array, valid: jax.Array
) -> jax.Array:
  per_token = ((pred - target) ** 2).mean(-1)
  return (per_token * valid).sum() / valid.sum()


def metrics(
  model: Model, params: Any, batch: tuple[jax.Array, ...]
) -> dict[str, jax.Array]:
  """Test loss, attention sparsity on real tokens, mean weight on the flag."""
  tokens, valid, target = batch
  pred, state = model.apply(
    params, tokens, valid, sow_weights=True, mutable=["intermediates"]
  )
  (weights,) = jax.tree.leaves(state["intermediates"])  # (batch, heads, q, k)
  live = valid[:, None, :, None] & valid[:, None, None, :]
  live = jnp.broadcast_to(live, weights.shape)
  on_flag = (weights * tokens[:, None, None, :, -1]).sum(-1)  # (b, h, q)
  return dict(
    loss=masked_mse(pred, target, valid),
    sparsity=((weights == 0) & live).sum() / live.sum(),
    on_flag=(on_flag * valid[:, None, :]).sum()
    / (valid.sum() * weights.shape[1]),
  )


def alphas(params: Any) -> np.ndarray | None:
  flat = {
    "/".join(str(getattr(k, "key", k)) for k in path): v
    for path, v in jax.tree_util.tree_leaves_with_path(params)
  }
  raw = [v for name, v in flat.items() if name.endswith("alpha_raw")]
  if not raw:
    return None
  return np.asarray(1.0 + jax.nn.softplus(raw[0])).ravel()


def train(
  name: str, model: Model, steps: int, seed: int = 0, report_every: int = 0
) -> dict[str, float]:
  rng = np.random.default_rng(seed)
  test_batch = make_batch(rng, 256)
  params = jax.jit(model.init)(jax.random.key(seed), *test_batch[:2])
  optimizer = optax.adam(1e-2)
  opt_state = optimizer.init(params)

  def loss_fn(params, batch):
    tokens, valid, target = batch
    return masked_mse(model.apply(params, tokens, valid), target, valid)

  @jax.jit
  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  evaluate = jax.jit(functools.partial(metrics, model))
  first = float(evaluate(params, test_batch)["loss"])
  report_every = report_every or max(1, steps // 5)
  print(f"[{name}]")
  for i in range(1, steps + 1):
    params, opt_state, _ = step(params, opt_state, make_batch(rng))
    if i % report_every == 0 or i == steps:
      m = {k: float(v) for k, v in evaluate(params, test_batch).items()}
      a = alphas(params)
      alpha_text = (
        "" if a is None else "  alpha " + " ".join(f"{x:.2f}" for x in a)
      )
      print(
        f"  step {i:4d}  test loss {m['loss']:.4f}  sparsity "
        f"{m['sparsity']:.3f}  weight on flagged {m['on_flag']:.3f}"
        f"{alpha_text}"
      )
  return dict(first=first, alphas=alphas(params), **m)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--fast",
    action="store_true",
    default=os.environ.get("SOFTJAX_FAST", "") not in ("", "0"),
    help="a few seconds of training, for tests and CI (also SOFTJAX_FAST=1)",
  )
  parser.add_argument(
    "--steps",
    type=int,
    default=None,
    help="training steps per model (default 500, 40 with --fast)",
  )
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  steps = args.steps or (40 if args.fast else 500)
  print(
    f"softjax {softjax.__version__}: sparse attention in "
    f"flax.linen.MultiHeadDotProductAttention, {steps} steps per model\n"
  )
  start = time.perf_counter()
  results = {}
  for name, learned in (("entmax15", False), ("learned alpha", True)):
    results[name] = train(name, Model(learned_alpha=learned), steps)
  print()
  for name, r in results.items():
    alpha_text = (
      ""
      if r["alphas"] is None
      else ", alphas " + " ".join(f"{x:.2f}" for x in r["alphas"])
    )
    print(
      f"final {name}: loss {r['first']:.4f} -> {r['loss']:.4f}, "
      f"sparsity {r['sparsity']:.3f}, weight on flagged "
      f"{r['on_flag']:.3f}{alpha_text}"
    )
  print(f"\ndone in {time.perf_counter() - start:.1f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
