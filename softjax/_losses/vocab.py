r"""The loop over the vocabulary that the fused output-layer losses share.

For a language model head the logits ``z = h W + b`` (``h``: ``[T, d]``,
``W``: ``[d, V]``) are the largest activation by far. The fused losses
(``fused_softmax`` for softmax, ``fused_sparse`` for the entmax family)
walk the vocabulary in blocks of ``chunk`` classes, computing one block of
logits at a time (:func:`chunk`) and folding it into a per-token statistic
(:func:`scan_vocab`), so that temporary memory is O(T × chunk + d × V).

``W`` may be given as ``[d, V]`` or, ``transposed``, as a ``[V, d]``
table (tied embeddings); each block is read in place either way, as rows
of ``Wᵀ`` (:class:`Chunk`). A logit soft cap is applied to every block
here (``_core.soft_cap``), so every statistic sees the capped logits. The
target options (:class:`Target`: label smoothing, z-loss) and their
closed forms live here too, shared by both losses.

With ``axis_name`` (inside ``shard_map``, each device holding ``W[:, shard]``
and ``b[shard]``, class ids global) each device runs the loop over its own
classes (:func:`class_offset` gives its first global id) and the callers
combine their per-token statistics with collectives; no logits cross
devices.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Hashable
from typing import Any
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp

from softjax import _core

F32 = jnp.float32


class Vocab(NamedTuple):
  """The static plan of the loop over (this device's) vocabulary.

  ``n_full`` blocks of ``chunk`` classes, then one block of the remaining
  ``rest`` classes (0: none). The remainder block is one more traced copy
  of the loop body, with no masked or padded classes and no copy of ``W``
  (padding ``W`` to a multiple of ``chunk`` would copy it). Measured against
  a last block shifted back to ``V - chunk`` with its overlap masked: 1%
  faster to run, 3x slower to compile (forward, V = 32000, chunk 2048).
  Hashable: a static argument of the custom VJPs.
  """

  size: int  # classes on this device
  chunk: int  # classes per block
  axis_name: Hashable | None = None  # mesh axis the vocabulary is split over
  transposed: bool = False  # W given as [V, d] (an embedding table)
  cap: float | None = None  # logits soft cap c: z -> c tanh(z / c)

  @property
  def n_full(self) -> int:
    return self.size // self.chunk

  @property
  def rest(self) -> int:
    return self.size % self.chunk


class Target(NamedTuple):
  """The static options of the loss's target (hashable).

  ``smoothing`` ε: the target is ``(1 - ε) onehot(y) + ε / V``;
  ``z_loss`` λ: softmax only, ``λ lse²`` is added (PaLM).
  """

  smoothing: float = 0.0
  z_loss: float = 0.0


def target_entropy(
  family: Any, target: Target, n: Any
) -> tuple[jax.Array, jax.Array | None]:
  """``H_α(q)`` of the smoothed target, and ``∂H_α(q)/∂α`` (learnable α).

  ``q`` has ``1 - ε + ε / V`` at the label and ``ε / V`` at the other
  ``V - 1`` classes; ``H_α(onehot) = 0``. ``n`` is V.
  """
  eps = target.smoothing
  if not eps:
    return jnp.zeros((), F32), None
  q = jnp.stack([1.0 - eps + eps / n, eps / n + jnp.zeros((), F32)])
  weights = jnp.stack([jnp.ones((), F32), n - 1.0 + jnp.zeros((), F32)])
  entropy = jnp.sum(weights * family.entropy_terms(q), axis=-1)
  d_alpha = None
  if family.learnable:
    d_alpha = jnp.sum(weights * family.entropy_alpha_derivative(q), axis=-1)
  return entropy, d_alpha


def target_fit(
  z_y: jax.Array, total: jax.Array | None, target: Target, n: Any
) -> jax.Array:
  """``<q, z> = (1 - ε) z_y + ε Σ_j z_j / V``; ``total`` is ``Σ_j z_j``."""
  if not target.smoothing:
    return z_y
  eps = target.smoothing
  return (1.0 - eps) * z_y + eps * total / n


class Chunk(NamedTuple):
  """One block of classes, as the loop body hands it to a statistic."""

  z: jax.Array  # [T, size] float32 logits of the block (soft-capped)
  wt: jax.Array  # [size, d] float32 rows of Wᵀ (the block's classes)
  start: jax.Array  # index of the block's first class on this device


# --------------------------------------------------------------------------
# The loop over the vocabulary.
# --------------------------------------------------------------------------


def weight_rows(w: jax.Array, vocab: Vocab) -> jax.Array:
  """``Wᵀ`` (``[V, d]``): the table itself when given transposed."""
  return w if vocab.transposed else w.T


def from_rows(dwt: jax.Array, vocab: Vocab) -> jax.Array:
  """A ``[V, d]`` cotangent in the layout ``W`` was given in."""
  return dwt if vocab.transposed else dwt.T


def d_model(w: jax.Array, vocab: Vocab) -> int:
  return w.shape[1] if vocab.transposed else w.shape[0]


def chunk(
  h: jax.Array,
  w: jax.Array,
  b: jax.Array | None,
  start: Any,
  vocab: Vocab,
  size: int,
) -> Chunk:
  """The logits of classes ``[start, start + size)`` in float32.

  ``h`` is float32 already; the block of ``W`` is cast here (``d × size``)
  so that a half-precision ``W`` is never copied whole, and the logits are
  accumulated in float32. An untied ``[d, V]`` ``W`` is sliced in place, a
  ``[V, d]`` table (``transposed``) by rows, also in place. (Passing
  ``embedding.T`` as an untied ``W`` instead makes XLA:CPU copy it once,
  d × V: a while loop's operands get the default layout.)
  """
  if vocab.transposed:
    wt = lax.dynamic_slice_in_dim(w, start, size, axis=0).astype(F32)
  else:
    wt = lax.dynamic_slice_in_dim(w, start, size, axis=1).astype(F32).T
  z = jnp.dot(h, wt.T)
  if b is not None:
    z = z + lax.dynamic_slice_in_dim(b, start, size).astype(F32)
  return Chunk(_core.soft_cap(z, vocab.cap), wt, start)


def scan_vocab(
  h: jax.Array,
  w: jax.Array,
  b: jax.Array | None,
  vocab: Vocab,
  add: Callable[[Any, Chunk], Any],
  carry: Any,
) -> Any:
  """``carry = add(carry, chunk)`` for each block of classes, in order."""

  def body(carry, i):
    return add(carry, chunk(h, w, b, i * vocab.chunk, vocab, vocab.chunk)), None

  if vocab.n_full:
    carry, _ = lax.scan(body, carry, jnp.arange(vocab.n_full))
  if vocab.rest:
    start = vocab.n_full * vocab.chunk
    carry = add(carry, chunk(h, w, b, start, vocab, vocab.rest))
  return carry


def class_offset(vocab: Vocab) -> Any:
  """Global id of this device's first class (0 unless split)."""
  if vocab.axis_name is None:
    return 0
  return lax.axis_index(vocab.axis_name) * vocab.size


def n_classes(vocab: Vocab) -> int:
  """Classes in the whole vocabulary (all devices)."""
  if vocab.axis_name is None:
    return vocab.size
  return vocab.size * lax.psum(1, vocab.axis_name)


# --------------------------------------------------------------------------
# The label's logit.
# --------------------------------------------------------------------------


def label_logits(
  h: jax.Array,
  w: jax.Array,
  b: jax.Array | None,
  labels: jax.Array,
  vocab: Vocab,
) -> jax.Array:
  """``z_y = h · W[:, y] + b[y]`` per token (soft-capped), from the label's
  column only.

  Global ids; with ``axis_name`` the device holding the label contributes it
  and a ``psum`` shares it. Ids outside the vocabulary give 0 (the caller
  makes their loss NaN).
  """
  local = labels - class_offset(vocab)
  mine = (local >= 0) & (local < vocab.size)
  ids = jnp.where(mine, local, 0)
  if vocab.transposed:
    rows = jnp.take(w, ids, axis=0).astype(F32)  # [T, d]
    z_y = jnp.einsum("td,td->t", h, rows)
  else:
    cols = jnp.take(w, ids, axis=1).astype(F32)  # [d, T]
    z_y = jnp.einsum("td,dt->t", h, cols)
  if b is not None:
    z_y = z_y + jnp.take(b, ids).astype(F32)
  z_y = jnp.where(mine, _core.soft_cap(z_y, vocab.cap), 0.0)
  if vocab.axis_name is not None:
    z_y = lax.psum(z_y, vocab.axis_name)
  return z_y


def valid_labels(labels: jax.Array, vocab: Vocab) -> jax.Array:
  return (labels >= 0) & (labels < n_classes(vocab))
