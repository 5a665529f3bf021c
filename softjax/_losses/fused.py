r"""Losses fused with the output layer: the ``[tokens, V]`` logits never exist.

The vocabulary loop is :mod:`softjax._vocab`; this module holds the softmax
loss (one pass each way, as in online softmax), the argument checks and the
entry point :func:`run`, which hands α > 1 to :mod:`softjax._linear_sparse`.

* forward, :func:`softmax_fwd_pass`: a running maximum and sum per token
  (:func:`lse_start`, :func:`lse_add`) give ``lse = log Σ_j exp z_j``; the
  label's logit comes from its column of ``W`` (``label_logits``), and the
  loss is ``lse - z_y``. Saved for the backward pass: the inputs and the
  per-token ``lse``, nothing of size ``T × V``;
* backward, :func:`softmax_bwd_pass`: each block's logits are recomputed to
  form ``c = g (p - y)`` with ``p = exp(z - lse)``, and ``dh += c Wᵀ``,
  ``dW = hᵀ c`` and ``db = Σ c`` are accumulated block by block.

With ``axis_name`` the per-token statistics of the devices holding the
vocabulary are combined with one ``pmax`` and one ``psum``; no logits cross
devices.

References:
  M. Milakov, N. Gimelshein. "Online normalizer calculation for softmax".
  arXiv:1805.02867, 2018.
  E. Wijmans, B. Huval, A. Hertzberg, V. Koltun, P. Krähenbühl. "Cut Your
  Losses in Large-Vocabulary Language Models". ICLR 2025.
"""

from __future__ import annotations

from collections.abc import Hashable
import functools
import math
import numbers
from typing import Any
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp

from softjax import _core
from softjax._losses import fused_sparse
from softjax._losses.vocab import F32
from softjax._losses.vocab import Chunk
from softjax._losses.vocab import Vocab
from softjax._losses.vocab import class_offset
from softjax._losses.vocab import label_logits
from softjax._losses.vocab import n_classes
from softjax._losses.vocab import scan_vocab
from softjax._losses.vocab import valid_labels
from softjax._losses.vocab import zeros

# Classes per block when the caller passes chunk_size=None: see
# docs/benchmarks/linear_loss.md (at 4096 tokens, d = 512 on XLA:CPU).
# Softmax's time hardly depends on it (1024 to 4096 within noise), so the
# smaller memory wins; the sparse losses are faster with fewer, larger
# blocks (fewer top-k merges), see fused_sparse.DEFAULT_CHUNK.
DEFAULT_CHUNK = 2048


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
  big = float(jnp.finfo(F32).max)
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
  g = jnp.where(valid_labels(labels, vocab), g.astype(F32), 0.0)
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
  loss, lse = softmax_fwd_pass(h.astype(F32), w, b, labels, vocab)
  return loss, (h, w, b, labels, lse)


def _softmax_loss_bwd(vocab, res, g):
  h, w, b, labels, lse = res
  dh, dw, db = softmax_bwd_pass(h.astype(F32), w, b, labels, lse, g, vocab)
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
  hidden = _core.as_float_array(hidden, "hidden")
  weight = _core.as_float_array(weight, "weight")
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
    bias = _core.as_float_array(bias, "bias")
    if bias.shape != (weight.shape[1],):
      raise ValueError(
        f"`bias` has shape {bias.shape}; it needs one entry per class of "
        f"`weight` {weight.shape}, shape ({weight.shape[1]},)."
      )
  batch = hidden.shape[:-1]
  labels = _core.check_token_labels(labels, batch)
  axis_name = _core.check_axis_name(axis_name)
  vocab = Vocab(
    weight.shape[1], _check_chunk_size(chunk_size, weight.shape[1]), axis_name
  )
  _core.check_label_values(labels, True, n_classes(vocab), None, (0,))
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


def _check_candidates(candidates: Any, alpha: Any) -> int:
  if candidates is None:
    return fused_sparse.default_candidates(alpha)
  if isinstance(candidates, bool) or not isinstance(
    candidates, numbers.Integral
  ):
    raise TypeError(
      "`candidates` must be a positive int (logits kept per token) or None, "
      f"got {candidates!r}."
    )
  if candidates < 1:
    raise ValueError(f"`candidates` must be >= 1, got {candidates}.")
  return int(candidates)


def run(
  hidden: Any,
  weight: Any,
  labels: Any,
  alpha: Any,
  bias: Any,
  chunk_size: Any,
  axis_name: Any,
  candidates: Any = None,
) -> jax.Array:
  """The loss per token for α-entmax (α = 1: softmax), shaped like labels."""
  prep = prepare(hidden, weight, labels, bias, chunk_size, axis_name)
  alpha = _core.check_alpha_per_example(alpha, prep.batch)
  k = _check_candidates(candidates, alpha)
  if isinstance(alpha, float) and alpha == 1.0:
    loss = _softmax_loss(prep.h, prep.w, prep.b, prep.labels, prep.vocab)
  else:
    if not isinstance(alpha, float):
      alpha = jnp.broadcast_to(alpha, prep.batch)
    vocab = prep.vocab
    if chunk_size is None:
      chunk = min(fused_sparse.DEFAULT_CHUNK, vocab.size)
      vocab = vocab._replace(chunk=chunk)
    loss = fused_sparse.loss(
      prep.h, prep.w, prep.b, prep.labels, alpha, vocab, k
    )
  return loss.reshape(prep.batch).astype(prep.out_dtype)
