"""The rules of block-wise attention: a block's weights from its statistics.

A rule turns the scores of a block pair and the per-query statistics the
forward saved into the block's weights ``p``, their slopes ``s`` and the
per-query ``delta`` of the backward pass, so that every member of the
family uses the same backward pass, never ``p`` hard-coded.
:class:`Softmax` is the α = 1 member (statistics :class:`SoftmaxRows`);
:class:`Entmax` the sparse members, α > 1 or an array α (statistics
:class:`EntmaxRows`). :func:`rule` picks the rule of a :class:`Family`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from softjax import _core
from softjax._attention import layout
from softjax._core import Family


class SoftmaxRows(NamedTuple):
  """Per-query statistics the softmax forward saves: ``[B, Hkv, G, Lq]``."""

  lse: jax.Array


class Softmax:
  """The α = 1 member: ``p = exp(z - lse)``, slopes ``s = p``, ``Σ s = 1``.

  The backward pass asks a rule for its weights, slopes and ``delta`` only,
  so that every member uses the same pass.
  """

  learnable = False

  @staticmethod
  def weights(z: jax.Array, rows: SoftmaxRows) -> jax.Array:
    """Normalised weights of a block from its scores and the row statistics.

    ``lse = +inf`` (every key masked) gives 0 for every score, ``-inf``
    (masked) scores give 0: no NaN either way.
    """
    return jnp.exp(z - rows.lse[..., None])

  @staticmethod
  def slopes(p: jax.Array) -> jax.Array:
    """``s = ∂p/∂z`` up to the row coupling: ``p^(2-α)``, here ``p``."""
    return p

  @staticmethod
  def delta(dout: jax.Array, out: jax.Array, rows: SoftmaxRows) -> jax.Array:
    """``<s, dP> / Σ s = dO · (Σ s v) / Σ s``; for softmax ``dO · out``."""
    del rows  # Σ s v / Σ s is the output itself.
    return jnp.sum(dout * out, axis=-1)


SOFTMAX = Softmax()


class EntmaxRows(NamedTuple):
  """Per-query statistics of the sparse forward: ``[B, Hkv, G, Lq]``.

  With them a block's weights are recomputed exactly, and ``delta`` needs no
  second pass over the keys.
  """

  shift: jax.Array  # the row maximum of the scores (0 if every key masked)
  t: jax.Array  # the threshold of the shifted row (Family.map's t)
  total: jax.Array  # Σ_k map(z_k - shift, t): 1 to rounding, divides p
  sv: jax.Array | None  # Σ s v / Σ s, [..., v_depth] (with dropout's mask)


class Entmax:
  """A sparse member: ``p = family.map(z - shift, t) / total``.

  ``family`` has a static ε, or an array ε of shape
  ``[1, Hkv, G * block_q, 1]``, one per row of a query block (the rows of
  one head share it).
  """

  def __init__(self, family: Family):
    self.family = family

  @property
  def learnable(self) -> bool:
    return self.family.learnable

  def weights(self, z: jax.Array, rows: EntmaxRows) -> jax.Array:
    """Normalised weights; 0 for masked scores and all-masked rows."""
    p = self.family.map(z - rows.shift[..., None], rows.t[..., None])
    return p * (1.0 / _core.safe_total(rows.total))[..., None]

  def slopes(self, p: jax.Array) -> jax.Array:
    """``s = p^(2-α)`` on the support, 0 off it."""
    return self.family.slopes(p)

  def param_sensitivity(self, p: jax.Array) -> jax.Array:
    """``r = ∂p/∂ε`` at fixed ``t`` (:meth:`Family.param_sensitivity`)."""
    return self.family.param_sensitivity(p)

  @staticmethod
  def delta(dout: jax.Array, out: jax.Array, rows: EntmaxRows) -> jax.Array:
    """``<s, dP> / Σ s = dO · (Σ s v / Σ s)`` from the saved ``sv``."""
    del out
    return jnp.sum(dout * rows.sv, axis=-1)


def rule(family: Family, cfg: layout.Config) -> Softmax | Entmax:
  """The rule of a member; an array ε ``[1, Hkv, G, 1]`` spread over rows."""
  if family.is_softmax:
    return SOFTMAX
  if not family.learnable:
    return Entmax(family)
  eps = jnp.broadcast_to(family.eps, family.eps.shape[:3] + (cfg.block_q,))
  return Entmax(Family(eps.reshape(eps.shape[:2] + (-1, 1))))
