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

The options stream with it: label smoothing needs each token's sum of
logits (one more per-token sum in the same pass), the z-loss and the
returned ``lse`` only the saved ``lse``, the soft cap one ``tanh`` per
logit (its slope multiplies the backward's ``c``), ignored tokens a mask.

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
from softjax._losses.vocab import n_classes
from softjax._losses.vocab import scan_vocab
from softjax._losses.vocab import target_entropy
from softjax._losses.vocab import target_fit
from softjax._losses.vocab import valid_labels

# --------------------------------------------------------------------------
# Softmax: the two passes and their custom VJP.
# --------------------------------------------------------------------------

# The Shannon entropy's terms (α = 1) for the smoothed target's entropy.
_SHANNON = _core.Family(0.0)


def softmax_fwd_pass(h, w, b, labels, keep, vocab, target):
  """Returns ``(loss, lse)`` per token; ``h`` is float32.

  The Fenchel-Young loss ``lse - <q, z> - H(q)`` against the target ``q``
  (``onehot(y)``, or smoothed: ``vocab.target_fit``), plus ``λ lse²``.
  Tokens not kept give 0, kept ones with a label out of range NaN.
  """
  smoothing = bool(target.smoothing)

  def add(carry, c):
    stat, total = carry
    stat = _core.lse_add(stat, c.z)[0]
    return stat, (total + jnp.sum(c.z, axis=1)) if smoothing else None

  like = (h, w, b)
  start = (
    _core.lse_start((h.shape[0],), F32, *like),
    _core.filled((h.shape[0],), 0.0, F32, *like) if smoothing else None,
  )
  stat, total = scan_vocab(h, w, b, vocab, add, start)
  lse = _core.lse_finish(stat, vocab.axis_name)
  if smoothing and vocab.axis_name is not None:
    total = lax.psum(total, vocab.axis_name)
  n = n_classes(vocab)
  z_y = label_logits(h, w, b, labels, vocab)
  fit = target_fit(z_y, total, target, n)
  loss = jnp.maximum(lse - fit - target_entropy(_SHANNON, target, n)[0], 0.0)
  if target.z_loss:
    loss = loss + target.z_loss * jnp.square(lse)
  valid = valid_labels(labels, vocab) & keep
  return jnp.where(valid, loss, jnp.where(keep, jnp.nan, 0.0)), lse


def softmax_bwd_pass(h, w, b, labels, keep, lse, g, g_lse, vocab, target):
  """Cotangents ``(dh, dW, db)`` (``db`` None without a bias).

  Per block, ``c = g ((1 + 2 λ lse) p - q) + g_lse p`` with
  ``p = exp(z - lse)`` (times the soft cap's slope); ``W`` and ``b`` get
  their block of ``hᵀ c`` and ``Σ c`` written in place, in their own dtype
  (each entry is written once), while ``h`` accumulates ``c Wᵀ`` in
  float32. Tokens not kept, or whose label is out of range, get no
  gradient from the loss (the returned ``lse`` is every token's and passes
  its cotangent on).
  """
  valid = valid_labels(labels, vocab) & keep
  g = jnp.where(valid, g.astype(F32), 0.0)
  eps = target.smoothing
  scale = g * (1.0 + 2.0 * target.z_loss * lse)
  if g_lse is not None:  # lse is every token's, ignored or not
    scale = scale + g_lse.astype(F32)
  uniform = (g * eps / n_classes(vocab))[:, None]
  local = (labels - class_offset(vocab))[:, None]

  def add(carry, c):
    dh, dw, db = carry
    ids = c.start + lax.broadcasted_iota(jnp.int32, c.z.shape, 1)
    p = jnp.exp(c.z - lse[:, None])
    dz = scale[:, None] * p - uniform
    dz = jnp.where(ids == local, dz - (g * (1.0 - eps))[:, None], dz)
    dz = dz * _core.soft_cap_slope(c.z, vocab.cap)
    dh = dh + jnp.dot(dz, c.wt)
    if vocab.transposed:
      block = jnp.dot(dz.T, h).astype(dw.dtype)
      dw = lax.dynamic_update_slice_in_dim(dw, block, c.start, axis=0)
    else:
      block = jnp.dot(h.T, dz).astype(dw.dtype)
      dw = lax.dynamic_update_slice_in_dim(dw, block, c.start, axis=1)
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


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def loss(h, w, b, labels, keep, vocab, target):
  """``(loss, lse)`` per token of ``[T, d]`` hidden states (both
  differentiable); ``keep`` ``[T]`` marks the tokens not ignored."""
  return _loss_fwd(h, w, b, labels, keep, vocab, target)[0]


def _loss_fwd(h, w, b, labels, keep, vocab, target):
  loss, lse = softmax_fwd_pass(h.astype(F32), w, b, labels, keep, vocab, target)
  return (loss, lse), (h, w, b, labels, keep, lse)


def _loss_bwd(vocab, target, res, cotangents):
  h, w, b, labels, keep, lse = res
  g, g_lse = cotangents
  dh, dw, db = softmax_bwd_pass(
    h.astype(F32), w, b, labels, keep, lse, g, g_lse, vocab, target
  )
  # Inside shard_map: h (and b, W) may be replicated over axes their
  # cotangents vary over (the vocabulary axis for h); their true cotangent is
  # the sum over those devices.
  dh = _core.match_vma(dh.astype(h.dtype), h)
  dw = _core.match_vma(dw, w)
  if b is not None:
    db = _core.match_vma(db, b)
  dh, dw, db = _core.first_order_only((dh, dw, db), "linear_softmax_loss")
  return dh, dw, db, None, None


loss.defvjp(_loss_fwd, _loss_bwd)
