"""Logit soft-capping, ``c · tanh(z / c)`` (Gemma 2), and its slope.

One definition for every place that caps scores: the attention functions
(``logits_soft_cap``), the fused losses' vocabulary blocks and the in-memory
losses (``logit_soft_cap``). A masked score (``-inf``) stays masked: capping
it to ``-c`` would give it weight again.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def soft_cap(z: jax.Array, cap: float | None) -> jax.Array:
  """``c · tanh(z / c)`` for ``cap = c``; ``z`` itself when ``cap`` is None.

  ``-inf`` (masked) scores stay ``-inf``.
  """
  if cap is None:
    return z
  c = jnp.asarray(cap, z.dtype)
  return jnp.where(z == -jnp.inf, z, c * jnp.tanh(z / c))


def soft_cap_slope(capped: jax.Array, cap: float | None) -> jax.Array | float:
  """``d soft_cap / dz`` from the capped scores: ``1 - (capped / c)²``.

  1 without a cap. Masked (``-inf``) scores give 0, not ``-inf``, so that
  their zero cotangent stays 0.
  """
  if cap is None:
    return 1.0
  return jnp.maximum(1.0 - jnp.square(capped / cap), 0.0)
