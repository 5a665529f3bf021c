r"""The softmax loss fused with the output layer: one pass each way.

As in online softmax, over the vocabulary blocks of :mod:`vocab`:

* forward, :func:`softmax_fwd_pass`: a running maximum and sum per token
  (the core's online log-sum-exp, ``_core.lse_add``) give ``lse = log Σ_j
  exp z_j``; the
  label's logit comes from its column of ``W`` (``label_logits``), and the
  loss is ``lse - z_y``. Saved for the backward pass: the inputs and the
  per-token ``lse``, nothing of size ``T × V``;
* backward, :func:`softmax_bwd_pass`: each block's logits are recomputed to
  form ``c = g (p - y)`` with ``p = exp(z - lse)``, and ``dh += c Wᵀ``,
  ``dW = hᵀ c`` and ``db = Σ c`` are accumulated block by block.

With ``axis_name`` the per-token statistics of the devices holding the
vocabulary are combined with one ``pmax`` and one ``psum``; no logits cross
devices. The arguments are checked, and the defaults chosen, by
:mod:`fused`, which calls :func:`loss`.

References:
  M. Milakov, N. Gimelshein. "Online normalizer calculation for softmax".
  arXiv:1805.02867, 2018.
  E. Wijmans, B. Huval, A. Hertzberg, V. Koltun, P. Krähenbühl. "Cut Your
  Losses in Large-Vocabulary Language Models". ICLR 2025.
"""

from __future__ import annotations

import functools

import jax
from jax import lax
import jax.numpy as jnp

from softjax import _core
from softjax._losses.vocab import F32
from softjax._losses.vocab import class_offset
from softjax._losses.vocab import label_logits
from softjax._losses.vocab import scan_vocab
from softjax._losses.vocab import valid_labels

# --------------------------------------------------------------------------
# Softmax: the two passes and their custom VJP.
# --------------------------------------------------------------------------


def softmax_fwd_pass(h, w, b, labels, vocab):
  """Returns ``(loss, lse)`` per token; ``h`` is float32."""
  # The core's online log-sum-exp (the block-wise attention's too).
  add = lambda stat, c: _core.lse_add(stat, c.z)[0]
  start = _core.lse_start((h.shape[0],), F32, h, w, b)
  lse = _core.lse_finish(
    scan_vocab(h, w, b, vocab, add, start), vocab.axis_name
  )
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
    _core.filled(h.shape, 0.0, F32, *like),
    _core.filled(w.shape, 0.0, w.dtype, *like),
    None if b is None else _core.filled(b.shape, 0.0, b.dtype, *like),
  )
  return scan_vocab(h, w, b, vocab, add, carry)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def loss(h, w, b, labels, vocab):
  """The softmax loss per token of ``[T, d]`` hidden states."""
  return _loss_fwd(h, w, b, labels, vocab)[0]


def _loss_fwd(h, w, b, labels, vocab):
  loss, lse = softmax_fwd_pass(h.astype(F32), w, b, labels, vocab)
  return loss, (h, w, b, labels, lse)


def _loss_bwd(vocab, res, g):
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


loss.defvjp(_loss_fwd, _loss_bwd)
