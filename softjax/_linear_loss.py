r"""Losses fused with the output layer: the ``[tokens, V]`` logits never exist.

For a language model head the logits ``z = h W + b`` (``h``: ``[T, d]``,
``W``: ``[d, V]``) are the largest activation by far. Every function here
walks the vocabulary in blocks of ``chunk`` classes, computing one block of
logits at a time, so that temporary memory is O(T × chunk + d × V).

Softmax (one pass each way, as in online softmax):

* forward, :func:`softmax_fwd_pass`: a running maximum and sum per token
  (:func:`lse_start`, :func:`lse_add`) give ``lse = log Σ_j exp z_j``; the
  label's logit comes from its column of ``W`` (:func:`label_logits`), and
  the loss is ``lse - z_y``. Saved for the backward pass: the inputs and the
  per-token ``lse``, nothing of size ``T × V``;
* backward, :func:`softmax_bwd_pass`: each block's logits are recomputed to
  form ``c = g (p - y)`` with ``p = exp(z - lse)``, and ``dh += c Wᵀ``,
  ``dW = hᵀ c`` and ``db = Σ c`` are accumulated block by block.

The vocabulary loop (:func:`scan_vocab`) carries a per-token *statistic*
updated block by block; softmax carries ``(max, sum)``. The sparse losses
(phase 2, see the TODOs) carry each token's ``k`` largest logits and their
class ids instead, solve the threshold on those candidates and need only
their columns of ``W`` in the backward pass.

With ``axis_name`` (inside ``shard_map``, each device holding ``W[:, shard]``
and ``b[shard]``, class ids global) each device runs the loop over its own
classes and the per-token statistics are combined with one ``pmax`` and one
``psum``; no logits cross devices.

References:
  M. Milakov, N. Gimelshein. "Online normalizer calculation for softmax".
  arXiv:1805.02867, 2018.
  E. Wijmans, B. Huval, A. Hertzberg, V. Koltun, P. Krähenbühl. "Cut Your
  Losses in Large-Vocabulary Language Models". ICLR 2025.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Hashable
import functools
import math
import numbers
from typing import Any
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from softjax import _checks
from softjax import _core

# Classes per block when the caller passes chunk_size=None: see
# docs/benchmarks/linear_loss.md (at 4096 tokens, d = 512 on XLA:CPU).
DEFAULT_CHUNK = 2048

_F32 = jnp.float32


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

  @property
  def n_full(self) -> int:
    return self.size // self.chunk

  @property
  def rest(self) -> int:
    return self.size % self.chunk


class Chunk(NamedTuple):
  """One block of classes, as the loop body hands it to a statistic."""

  z: jax.Array  # [T, size] float32 logits of the block
  w: jax.Array  # [d, size] float32 columns of W
  start: jax.Array  # index of the block's first class on this device


# --------------------------------------------------------------------------
# The loop over the vocabulary.
# --------------------------------------------------------------------------


def zeros(shape: tuple[int, ...], *like: Any, dtype: Any = _F32) -> jax.Array:
  """Zeros that vary over the mesh axes that ``like`` vary over.

  Inside ``shard_map`` a loop carry must keep its type, and the blocks'
  results vary over the axes of ``h`` and ``W``; outside it this is
  ``jnp.zeros``. ``zeros_like(shape=())`` carries the type without reading
  any value, and XLA folds the additions away.
  """
  out = jnp.zeros(shape, dtype)
  for a in like:
    if a is not None:
      out = out + jnp.zeros_like(a, dtype, shape=())
  return out


def chunk(
  h: jax.Array, w: jax.Array, b: jax.Array | None, start: Any, size: int
) -> Chunk:
  """The logits of classes ``[start, start + size)`` in float32.

  ``h`` is float32 already; the block of ``W`` is cast here (``d × size``)
  so that a half-precision ``W`` is never copied whole. An untied ``[d, V]``
  ``W`` is sliced in place. A transposed one (``embedding.T``) is copied
  once (d × V) by XLA:CPU, which gives a while loop's operands the default
  layout: reading ``W`` as ``[V, d]`` rows would move that copy to the
  untied case instead.
  """
  w_c = lax.dynamic_slice_in_dim(w, start, size, axis=1).astype(_F32)
  z = jnp.dot(h, w_c)
  if b is not None:
    z = z + lax.dynamic_slice_in_dim(b, start, size).astype(_F32)
  return Chunk(z, w_c, start)


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
    return add(carry, chunk(h, w, b, i * vocab.chunk, vocab.chunk)), None

  if vocab.n_full:
    carry, _ = lax.scan(body, carry, jnp.arange(vocab.n_full))
  if vocab.rest:
    start = vocab.n_full * vocab.chunk
    carry = add(carry, chunk(h, w, b, start, vocab.rest))
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
# Statistics carried over the blocks.
# --------------------------------------------------------------------------


class LSE(NamedTuple):
  """Online log-sum-exp: ``Σ exp z = s exp(m)`` over the blocks seen."""

  m: jax.Array  # [T] running maximum, floored at -finfo.max
  s: jax.Array  # [T] running Σ exp(z - m)


def lse_start(tokens: int, *like: Any) -> LSE:
  # The floor keeps m finite when a whole block is -inf (a bias of -inf
  # masks classes): m - m_new is then never -inf - -inf.
  big = float(jnp.finfo(_F32).max)
  return LSE(zeros((tokens,), *like) - big, zeros((tokens,), *like))


def lse_add(stat: LSE, c: Chunk) -> LSE:
  m = jnp.maximum(stat.m, jnp.max(c.z, axis=-1))
  s = stat.s * jnp.exp(stat.m - m) + jnp.sum(jnp.exp(c.z - m[:, None]), axis=-1)
  return LSE(m, s)


def lse_finish(stat: LSE, axis_name: Hashable | None) -> jax.Array:
  """``lse`` per token, combined over the devices holding the vocabulary."""
  m, s = stat
  if axis_name is not None:
    m_all = lax.pmax(m, axis_name)
    s = lax.psum(s * jnp.exp(m - m_all), axis_name)
    m = m_all
  return m + jnp.log(s)


# TODO(phase 2): the sparse losses carry, instead of LSE, each token's k
# largest logits and their global class ids, ``TopK(values [T, k], ids [T,
# k])``, through the same ``scan_vocab``:
#   * ``topk_start(tokens, k, *like)``: values -inf (via ``zeros``), ids 0;
#   * ``topk_add(stat, chunk)``: ``lax.top_k(concat([values, chunk.z]), k)``
#     with ids ``chunk.start + iota`` gathered alongside, or the block's own
#     top-k first (within noise of each other in the phase 1 measurements,
#     benchmarks/bench_linear_pieces.py; either adds 0.3-1x the block's
#     matmul time at d = 512 on XLA:CPU);
#   * ``topk_finish(stat, vocab)``: add ``class_offset(vocab)`` to the ids;
#     with ``axis_name``, ``all_gather`` every device's [T, k] candidates
#     and ``top_k`` again (O(T × k × devices) values cross devices, never
#     logits).
# Then ``sparse_fwd_pass``: shift the candidates by their maximum, solve
# ``_threshold.threshold(zc, family, rows, n_iter)`` on the [T, k] rows
# (``family = Family.of_alpha(alpha, jnp.float32)``), ``p = family.map(zc,
# t) / total``; a token is exact when its smallest candidate has
# ``p == 0`` (else a fallback pass for those tokens, or a larger k); loss
# ``Σ_C p z - z_y + Σ family.entropy_terms(p)`` (Ω(one-hot) = 0), with
# ``z_y`` from ``label_logits``. Save ``ids`` and ``p`` (O(T × k)), not
# ``lse``. ``sparse_bwd_pass``: coefficients ``g p`` on ``ids`` and ``-g``
# at the label; gather rows of ``w.T`` ([V, d]: a free transpose for tied
# embeddings) for ``dh`` and scatter-add ``h ⊗ c`` into ``dW.T`` rows and
# ``c`` into ``db``, in token blocks (columns of [d, V] measured 5-10x
# slower than rows). ``run`` dispatches on ``alpha``.


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
  """``z_y = h · W[:, y] + b[y]`` per token, from the label's column only.

  Global ids; with ``axis_name`` the device holding the label contributes it
  and a ``psum`` shares it. Ids outside the vocabulary give 0 (the caller
  makes their loss NaN).
  """
  local = labels - class_offset(vocab)
  mine = (local >= 0) & (local < vocab.size)
  ids = jnp.where(mine, local, 0)
  cols = jnp.take(w, ids, axis=1).astype(_F32)  # [d, T]
  z_y = jnp.einsum("td,dt->t", h, cols)
  if b is not None:
    z_y = z_y + jnp.take(b, ids).astype(_F32)
  z_y = jnp.where(mine, z_y, 0.0)
  if vocab.axis_name is not None:
    z_y = lax.psum(z_y, vocab.axis_name)
  return z_y


def valid_labels(labels: jax.Array, vocab: Vocab) -> jax.Array:
  return (labels >= 0) & (labels < n_classes(vocab))


# --------------------------------------------------------------------------
# Softmax: the two passes and their custom VJP.
# --------------------------------------------------------------------------


def softmax_fwd_pass(h, w, b, labels, vocab):
  """Returns ``(loss, lse)`` per token; ``h`` is float32."""
  stat = scan_vocab(h, w, b, vocab, lse_add, lse_start(h.shape[0], h, w, b))
  lse = lse_finish(stat, vocab.axis_name)
  z_y = label_logits(h, w, b, labels, vocab)
  loss = jnp.maximum(lse - z_y, 0.0)
  return jnp.where(valid_labels(labels, vocab), loss, jnp.nan), lse


def softmax_bwd_pass(h, w, b, labels, lse, g, vocab):
  """Cotangents ``(dh, dW, db)`` (``db`` None without a bias).

  Per block, ``c = g (exp(z - lse) - onehot(y))``; ``W`` and ``b`` get their
  block of ``hᵀ c`` and ``Σ c`` written in place, in their own dtype (each
  entry is written once), while ``h`` accumulates ``c Wᵀ`` in float32.
  Tokens whose label is out of range get no gradient.
  """
  g = jnp.where(valid_labels(labels, vocab), g.astype(_F32), 0.0)
  local = (labels - class_offset(vocab))[:, None]

  def add(carry, c):
    dh, dw, db = carry
    ids = c.start + lax.broadcasted_iota(jnp.int32, c.z.shape, 1)
    p = jnp.exp(c.z - lse[:, None])
    dz = g[:, None] * jnp.where(ids == local, p - 1.0, p)
    dh = dh + jnp.dot(dz, c.w.T)
    dw = lax.dynamic_update_slice_in_dim(
      dw, jnp.dot(h.T, dz).astype(dw.dtype), c.start, axis=1
    )
    if db is not None:
      db = lax.dynamic_update_slice_in_dim(
        db, jnp.sum(dz, axis=0).astype(db.dtype), c.start, axis=0
      )
    return dh, dw, db

  like = (h, w, b, g)
  carry = (
    zeros(h.shape, *like),
    zeros(w.shape, *like, dtype=w.dtype),
    None if b is None else zeros(b.shape, *like, dtype=b.dtype),
  )
  return scan_vocab(h, w, b, vocab, add, carry)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _softmax_loss(h, w, b, labels, vocab):
  return _softmax_loss_fwd(h, w, b, labels, vocab)[0]


def _softmax_loss_fwd(h, w, b, labels, vocab):
  loss, lse = softmax_fwd_pass(h.astype(_F32), w, b, labels, vocab)
  return loss, (h, w, b, labels, lse)


def _softmax_loss_bwd(vocab, res, g):
  h, w, b, labels, lse = res
  dh, dw, db = softmax_bwd_pass(h.astype(_F32), w, b, labels, lse, g, vocab)
  # Inside shard_map: h (and b, W) may be replicated over axes their
  # cotangents vary over (the vocabulary axis for h); their true cotangent is
  # the sum over those devices.
  dh = _core.match_vma(dh.astype(h.dtype), h)
  dw = _core.match_vma(dw, w)
  if b is not None:
    db = _core.match_vma(db, b)
  return dh, dw, db, None


_softmax_loss.defvjp(_softmax_loss_fwd, _softmax_loss_bwd)


# --------------------------------------------------------------------------
# Argument checking and the entry point of the public functions.
# --------------------------------------------------------------------------


def _check_chunk_size(chunk_size: Any, n: int) -> int:
  if chunk_size is None:
    return max(1, min(DEFAULT_CHUNK, n))
  if isinstance(chunk_size, bool) or not isinstance(
    chunk_size, numbers.Integral
  ):
    raise TypeError(
      f"`chunk_size` must be a positive int (classes per block) or None, "
      f"got {chunk_size!r}."
    )
  if chunk_size < 1:
    raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}.")
  return max(1, min(int(chunk_size), n))


def _check_labels(labels: Any, batch: tuple[int, ...]) -> Any:
  if isinstance(labels, (list, tuple)) or np.isscalar(labels):
    labels = np.asarray(labels)
  dtype = getattr(labels, "dtype", None)
  if dtype is None:
    raise TypeError(
      f"`labels` must be an array of class ids, got {type(labels).__name__}."
    )
  if jnp.issubdtype(dtype, jnp.bool_) or not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(
      f"`labels` has dtype {dtype}; the fused losses take integer class "
      "ids only (soft targets would need the [tokens, V] matrix this "
      "function avoids). For soft targets compute the logits and use "
      "softjax.losses.softmax_loss and friends."
    )
  if tuple(np.shape(labels)) != batch:
    raise ValueError(
      f"`labels` has shape {tuple(np.shape(labels))}; it needs one class "
      f"id per token, the shape of `hidden` without its last axis, "
      f"{batch}."
    )
  return labels


class Prepared(NamedTuple):
  h: jax.Array  # [T, d], the caller's dtype
  w: jax.Array  # [d, V_local]
  b: jax.Array | None  # [V_local] or None
  labels: jax.Array  # [T] integer class ids (global)
  vocab: Vocab
  batch: tuple[int, ...]  # the shape of the loss
  out_dtype: Any


def prepare(
  hidden: Any,
  weight: Any,
  labels: Any,
  bias: Any,
  chunk_size: Any,
  axis_name: Any,
) -> Prepared:
  """Validates the arguments of a fused loss; flattens the tokens."""
  hidden = _checks.as_float_array(hidden, "hidden")
  weight = _checks.as_float_array(weight, "weight")
  if weight.ndim != 2:
    raise ValueError(
      f"`weight` must be a matrix [d, V] (a Dense kernel; for tied "
      f"embeddings [V, d] pass `embedding.T`), got shape {weight.shape}."
    )
  if hidden.ndim < 1 or hidden.shape[-1] != weight.shape[0]:
    raise ValueError(
      f"`hidden` has shape {hidden.shape} and `weight` {weight.shape}: "
      f"the last axis of `hidden` (d) must match the first of `weight` "
      f"(weight is [d, V]; for tied embeddings [V, d] pass "
      f"`embedding.T`)."
    )
  if weight.shape[1] == 0:
    raise ValueError(
      f"`weight` has no classes (shape {weight.shape}); V must be at least 1."
    )
  if bias is not None:
    bias = _checks.as_float_array(bias, "bias")
    if bias.shape != (weight.shape[1],):
      raise ValueError(
        f"`bias` has shape {bias.shape}; it needs one entry per class of "
        f"`weight` {weight.shape}, shape ({weight.shape[1]},)."
      )
  batch = hidden.shape[:-1]
  labels = _check_labels(labels, batch)
  axis_name = _checks.check_axis_name(axis_name)
  vocab = Vocab(
    weight.shape[1], _check_chunk_size(chunk_size, weight.shape[1]), axis_name
  )
  _checks.check_label_values(labels, True, n_classes(vocab), None, (0,))
  dtypes = [hidden.dtype, weight.dtype] + ([] if bias is None else [bias.dtype])
  out_dtype = jnp.result_type(*dtypes)
  tokens = math.prod(batch)
  return Prepared(
    hidden.reshape(tokens, hidden.shape[-1]),
    weight,
    bias,
    jnp.asarray(labels).astype(jnp.int32).reshape(tokens),
    vocab,
    batch,
    out_dtype,
  )


def run(
  hidden: Any,
  weight: Any,
  labels: Any,
  alpha: Any,
  bias: Any,
  chunk_size: Any,
  axis_name: Any,
) -> jax.Array:
  """The loss per token for α-entmax (α = 1: softmax), shaped like labels."""
  prep = prepare(hidden, weight, labels, bias, chunk_size, axis_name)
  alpha = _checks.check_alpha_per_example(alpha, prep.batch)
  if isinstance(alpha, float) and alpha == 1.0:
    loss = _softmax_loss(prep.h, prep.w, prep.b, prep.labels, prep.vocab)
  else:
    # TODO(phase 2): the sparse losses: a forward pass carrying TopK (see
    # above) instead of LSE, the threshold from the core solver on the
    # candidates, a fallback pass for tokens whose smallest candidate has
    # mass, L = <p - y, z> - Ω(p) + Ω(y) from the candidates and the label
    # logit; a backward pass over the support and label columns of W only
    # (gather/scatter in token blocks).
    raise NotImplementedError(
      "The fused sparse losses (alpha > 1) are not implemented yet; "
      "compute the logits and use softjax.losses.entmax_loss meanwhile."
    )
  return loss.reshape(prep.batch).astype(prep.out_dtype)
