"""Sparse attention in Haiku: a hand-written module around softjax.attention.

Run from the repository root after ``pip install ".[examples]"``::

  python examples/haiku_attention.py           # about 500 steps
  python examples/haiku_attention.py --fast    # a few seconds (tests, CI)

``SOFTJAX_FAST=1`` in the environment does the same as ``--fast``.

Haiku's ``MultiHeadAttention`` has no pluggable attention function, so a
Haiku user writes a small module of their own (:class:`SparseAttention`):
query/key/value projections to ``[batch, length, heads, depth]``, then
``softjax.attention.dot_product_attention`` (the same function that plugs
into Flax, see ``examples/flax_linen_attention.py``) with
``softjax.entmax`` as the normaliser and one learnable α per head, created
with ``hk.get_parameter`` and kept above 1 as ``1 + softplus(raw)``.

The task is the one of the Flax example: each sequence holds 4 to 10 random
tokens (the rest is padding, masked with ``mask=`` and given exactly zero
weight), one of them flagged, and every position must output the content of
the flagged token. It prints the loss, the attention sparsity (the fraction
of attention weights on real tokens that are exactly zero) and the learned
α's, then a final summary line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import os
import sys
import time

# Before JAX initialises: one CPU device is all this demo needs.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import haiku as hk  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import softjax  # noqa: E402

SEQ_LEN = 10
CONTENT = 6  # features carried by each token
HEADS = 4
KEY_SIZE = 8
MODEL_SIZE = 32
BATCH = 64
INIT_ALPHA = 1.5


def make_batch(
  rng: np.random.Generator, batch: int = BATCH
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Tokens ``(batch, SEQ_LEN, CONTENT + 1)``, key-padding mask, targets."""
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


class SparseAttention(hk.Module):
  """Multi-head attention with α-entmax and one learnable α per head."""

  def __init__(
    self,
    num_heads: int,
    key_size: int,
    init_alpha: float = INIT_ALPHA,
    name: str | None = None,
  ):
    super().__init__(name=name)
    self.num_heads = num_heads
    self.key_size = key_size
    self.init_raw = float(np.log(np.expm1(init_alpha - 1.0)))

  def __call__(
    self,
    x: jax.Array,
    mask: jax.Array | None = None,
    return_weights: bool = False,
  ):
    heads = x.shape[:-1] + (self.num_heads, self.key_size)
    query, key, value = (
      hk.Linear(self.num_heads * self.key_size, name=n)(x).reshape(heads)
      for n in ("query", "key", "value")
    )
    raw = hk.get_parameter(
      "alpha_raw",
      (self.num_heads, 1, 1),
      init=hk.initializers.Constant(self.init_raw),
    )
    alpha = 1.0 + jax.nn.softplus(raw)  # scores are (batch, heads, q, k)

    def normalizer(scores, **kwargs):
      return softjax.entmax(scores, alpha, **kwargs)

    out = softjax.attention.dot_product_attention(
      query, key, value, mask=mask, normalizer=normalizer
    )
    out = hk.Linear(x.shape[-1], name="out")(out.reshape(x.shape[:-1] + (-1,)))
    if not return_weights:
      return out
    # For inspection: the same weights, from the public helper.
    return out, softjax.attention.dot_product_attention_weights(
      query, key, mask=mask, normalizer=normalizer
    )


def forward(tokens: jax.Array, valid: jax.Array, return_weights: bool = False):
  h = hk.Linear(MODEL_SIZE, name="embed")(tokens)
  mask = valid[:, None, None, :] & valid[:, None, :, None]  # (b, 1, q, k)
  attention = SparseAttention(HEADS, KEY_SIZE, name="attention")
  out = attention(h, mask=mask, return_weights=return_weights)
  out, weights = out if return_weights else (out, None)
  h = jax.nn.gelu(hk.Linear(2 * MODEL_SIZE, name="hidden")(h + out))
  pred = hk.Linear(CONTENT, name="readout")(h)
  return (pred, weights) if return_weights else pred


model = hk.transform(forward)


def masked_mse(
  pred: jax.Array, target: jax.Array, valid: jax.Array
) -> jax.Array:
  per_token = ((pred - target) ** 2).mean(-1)
  return (per_token * valid).sum() / valid.sum()


def alphas(params: hk.Params) -> np.ndarray:
  return np.asarray(
    1.0 + jax.nn.softplus(params["attention"]["alpha_raw"])
  ).ravel()


def metrics(
  params: hk.Params, batch: tuple[jax.Array, ...]
) -> dict[str, jax.Array]:
  """Test loss, attention sparsity on real tokens, weight on the flag."""
  tokens, valid, target = batch
  pred, weights = model.apply(params, None, tokens, valid, True)
  live = valid[:, None, :, None] & valid[:, None, None, :]
  live = jnp.broadcast_to(live, weights.shape)  # (batch, heads, q, k)
  on_flag = (weights * tokens[:, None, None, :, -1]).sum(-1)
  return dict(
    loss=masked_mse(pred, target, valid),
    sparsity=((weights == 0) & live).sum() / live.sum(),
    on_flag=(on_flag * valid[:, None, :]).sum()
    / (valid.sum() * weights.shape[1]),
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
    "--steps",
    type=int,
    default=None,
    help="training steps (default 500, 40 with --fast)",
  )
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  steps = args.steps or (40 if args.fast else 500)
  print(
    f"softjax {softjax.__version__}: a Haiku attention module around "
    f"softjax.attention.dot_product_attention, {steps} steps\n"
  )
  start = time.perf_counter()
  rng = np.random.default_rng(0)
  test_batch = make_batch(rng, 256)
  params = jax.jit(model.init)(jax.random.key(0), *test_batch[:2])
  optimizer = optax.adam(1e-2)
  opt_state = optimizer.init(params)

  def loss_fn(params, batch):
    tokens, valid, target = batch
    return masked_mse(model.apply(params, None, tokens, valid), target, valid)

  @jax.jit
  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  evaluate = jax.jit(metrics)
  first = float(evaluate(params, test_batch)["loss"])
  for i in range(1, steps + 1):
    params, opt_state, _ = step(params, opt_state, make_batch(rng))
    if i % max(1, steps // 5) == 0 or i == steps:
      m = {k: float(v) for k, v in evaluate(params, test_batch).items()}
      alpha_text = " ".join(f"{a:.2f}" for a in alphas(params))
      print(
        f"  step {i:4d}  test loss {m['loss']:.4f}  sparsity "
        f"{m['sparsity']:.3f}  weight on flagged {m['on_flag']:.3f}  "
        f"alpha {alpha_text}"
      )
  print(
    f"\nfinal haiku learned alpha: loss {first:.4f} -> {m['loss']:.4f}, "
    f"sparsity {m['sparsity']:.3f}, weight on flagged "
    f"{m['on_flag']:.3f}, alphas {alpha_text}"
  )
  print(f"\ndone in {time.perf_counter() - start:.1f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
