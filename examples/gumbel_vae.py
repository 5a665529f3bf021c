"""Discrete codes with straight-through Gumbel-Softmax (``hard=True``).

Run from the repository root after ``pip install ".[examples]"``::

  python examples/gumbel_vae.py          # full run (seconds on a CPU)
  python examples/gumbel_vae.py --fast   # quick run (tests, CI)

The data are noisy copies of 8 random binary prototypes (32 bits each, 10% of
the bits flipped). An autoencoder in plain JAX encodes each input into the
logits of one categorical code out of 16, draws a one-hot code with
``softjax.gumbel_softmax(key, logits, temperature, hard=True)`` (exactly
one-hot in the forward pass, the relaxed sample's gradient in the backward
pass) and decodes the code back to 32 bit probabilities; the loss is the
reconstruction cross-entropy plus a small KL term to the uniform prior. It
prints the reconstruction loss going down, how many codes are used, and how
well the codes identify the prototypes (purity: the fraction of inputs whose
code's most common prototype is their own).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import softjax  # noqa: E402

N_PROTOTYPES, N_BITS, N_CODES, HIDDEN = 8, 32, 16, 64
FLIP = 0.1


def make_data(
  key: jax.Array, prototypes: jax.Array, n: int
) -> tuple[jax.Array, jax.Array]:
  k_which, k_flip = jax.random.split(key)
  which = jax.random.randint(k_which, (n,), 0, N_PROTOTYPES)
  flips = jax.random.bernoulli(k_flip, FLIP, (n, N_BITS))
  return jnp.logical_xor(prototypes[which], flips).astype(jnp.float32), which


def init_params(key: jax.Array) -> dict[str, jax.Array]:
  ks = jax.random.split(key, 3)
  glorot = jax.nn.initializers.glorot_normal()
  return {
    "enc1": glorot(ks[0], (N_BITS, HIDDEN)),
    "enc1_b": jnp.zeros(HIDDEN),
    "enc2": glorot(ks[1], (HIDDEN, N_CODES)),
    "enc2_b": jnp.zeros(N_CODES),
    "dec": glorot(ks[2], (N_CODES, N_BITS)),
    "dec_b": jnp.zeros(N_BITS),
  }


def encode(params, x):
  h = jax.nn.gelu(x @ params["enc1"] + params["enc1_b"])
  return h @ params["enc2"] + params["enc2_b"]


def decode(params, code):
  return code @ params["dec"] + params["dec_b"]  # bit logits


def loss_fn(params, x, key, temperature):
  logits = encode(params, x)
  # Forward: an exact one-hot sample; backward: the relaxed sample's gradient.
  code = softjax.gumbel_softmax(key, logits, temperature, hard=True)
  recon = optax.sigmoid_binary_cross_entropy(decode(params, code), x)
  recon = jnp.mean(jnp.sum(recon, -1))
  # KL(q || uniform) keeps the codes from collapsing onto a few.
  log_q = softjax.log_softmax(logits)
  kl = jnp.mean(jnp.sum(jnp.exp(log_q) * (log_q + jnp.log(N_CODES)), -1))
  return recon + 0.1 * kl, recon


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--fast",
    action="store_true",
    default=os.environ.get("SOFTJAX_FAST", "") not in ("", "0"),
    help="fewer steps, for tests and CI (also SOFTJAX_FAST=1)",
  )
  args = parser.parse_args(argv)
  steps = 300 if args.fast else 3000

  k_proto, k_init, k_train, k_test, k_eval = jax.random.split(
    jax.random.key(0), 5
  )
  prototypes = jax.random.bernoulli(k_proto, 0.5, (N_PROTOTYPES, N_BITS))
  params = init_params(k_init)
  tx = optax.adam(3e-3)
  opt_state = tx.init(params)
  x_test, which_test = make_data(k_test, prototypes, 2048)

  @jax.jit
  def train_step(params, opt_state, step):
    k_data, k_noise = jax.random.split(jax.random.fold_in(k_train, step))
    x, _ = make_data(k_data, prototypes, 256)
    # Anneal the temperature from 1 to 0.5.
    temperature = jnp.maximum(0.5, jnp.exp(-3.0 * step / steps))
    (loss, recon), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      params, x, k_noise, temperature
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, recon

  @jax.jit
  def evaluate(params):
    logits = encode(params, x_test)
    code = softjax.gumbel_softmax(k_eval, logits, 0.5, hard=True)
    recon = optax.sigmoid_binary_cross_entropy(decode(params, code), x_test)
    return jnp.mean(jnp.sum(recon, -1)), jnp.argmax(logits, -1)

  print(
    f"Gumbel-Softmax autoencoder: {N_PROTOTYPES} prototypes of {N_BITS} "
    f"bits, {N_CODES} codes, {steps} steps"
    f"{' (--fast)' if args.fast else ''}"
  )
  recon0, _ = evaluate(params)
  print(f"reconstruction loss (test, bits): start {float(recon0):.3f}")
  for step in range(steps):
    params, opt_state, recon = train_step(params, opt_state, step)
    if (step + 1) % (steps // 5) == 0:
      print(
        f"step {step + 1:5d}: train reconstruction loss {float(recon):.3f}",
        flush=True,
      )
  recon1, codes = jax.device_get(evaluate(params))
  which = np.asarray(which_test)
  used = np.unique(codes)
  majority = {c: np.bincount(which[codes == c]).argmax() for c in used}
  purity = np.mean([majority[c] == w for c, w in zip(codes, which)])
  # The noise floor: a decoder that knew the prototype exactly still pays
  # the entropy of the 10% bit flips.
  floor = -N_BITS * (FLIP * np.log(FLIP) + (1 - FLIP) * np.log(1 - FLIP))
  print(
    f"reconstruction loss (test, bits): start {float(recon0):.3f}, end "
    f"{float(recon1):.3f} (noise floor {floor:.3f})"
  )
  print(
    f"codes used: {len(used)} of {N_CODES}; purity "
    f"{purity:.3f}; prototypes recovered: "
    f"{len(set(majority.values()))} of {N_PROTOTYPES}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
