r"""The entmax losses (α > 1) fused with the output layer.

The threshold of α-entmax depends only on the logits above it, and the
gradient ``p - y`` of its Fenchel-Young loss is sparse. So:

* forward, :func:`sparse_fwd_pass`: one pass over the vocabulary blocks
  (``vocab.scan_vocab``) keeps each token's ``k`` largest logits and their
  class ids (:func:`topk_add`); the core's solver (``_core.threshold``)
  finds the threshold of those ``[T, k]`` candidates, shifted by their
  maximum (the row's). Every class outside the candidates is at most the
  smallest candidate, so when that one gets no mass the candidates'
  threshold is the row's, and the loss ``<p - y, z> + H_α(p) - H_α(y)``
  (``H_α(y) = 0`` for a one-hot ``y``) comes from the candidates and the
  label's logit alone. This is checked per token.
* tokens whose support is wider than ``k`` (the check fails) are solved
  exactly by :func:`wide_fwd`: the same solver iteration
  (``_core.find_threshold``) driven by a row sum that streams the
  vocabulary blocks, one matmul pass per step, started from the candidates'
  threshold (a lower bound of the root), then one more pass for the loss.
  The failing tokens are gathered into groups of ``group`` tokens so that a
  few of them cost a few rows of matmul, not ``T``.
* backward, :func:`sparse_bwd_pass`: ``c = g (p - y)`` is nonzero only on
  the support (a prefix of the sorted candidates) and at the label, so
  ``dh = Σ_j c_j W[:, j]``, ``dW[:, j] += c_j h`` and ``db[j] += c_j`` are
  gathers and scatter-adds of rows of ``Wᵀ``, one candidate slot at a time
  for as many slots as the widest support (:func:`support_grads`). Wide
  tokens get the dense recomputing pass of the softmax loss instead
  (:func:`wide_bwd`), in the same groups.

Label smoothing adds the target's uniform part ``-g ε / V`` to every
class: rank one in the backward pass (:func:`uniform_grads`; one dense pass
when the logits are soft-capped, each class then having its own slope).
Ignored tokens never reach the fallback.

With ``axis_name`` every device keeps the top ``k`` of its own classes; one
``psum`` of the ``[T, k]`` candidates (each device's in its own slot) and a
second top-``k`` give every device the same global candidates, solve and
loss: O(T × k × devices) numbers cross devices, never logits. The backward
pass scatters only into this device's columns.

The arguments are checked, and the defaults (``k``, the block size,
``group``) chosen, by :mod:`fused`, which calls :func:`loss`.

References:
  B. Peters, V. Niculae, A. F. T. Martins. "Sparse Sequence-to-Sequence
  Models". ACL 2019.
  M. Blondel, A. F. T. Martins, V. Niculae. "Learning with Fenchel-Young
  Losses". JMLR 21(35), 2020.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp

from softjax import _core
from softjax._losses.vocab import F32
from softjax._losses.vocab import Chunk
from softjax._losses.vocab import Target
from softjax._losses.vocab import Vocab
from softjax._losses.vocab import class_offset
from softjax._losses.vocab import d_model
from softjax._losses.vocab import from_rows
from softjax._losses.vocab import label_logits
from softjax._losses.vocab import n_classes
from softjax._losses.vocab import scan_vocab
from softjax._losses.vocab import target_entropy
from softjax._losses.vocab import target_fit
from softjax._losses.vocab import valid_labels
from softjax._losses.vocab import weight_rows

# The [T, k] candidates: one normalised axis, local to every device.
ROWS = _core.Rows((1,))


# --------------------------------------------------------------------------
# The candidates: a running top-k carried over the vocabulary blocks.
# --------------------------------------------------------------------------


class TopK(NamedTuple):
  """Each token's ``k`` largest logits seen so far, largest first."""

  values: jax.Array  # [T, k] float32
  ids: jax.Array  # [T, k] int32 class ids (this device's until topk_finish)
  total: jax.Array  # [T, 1] Σ z over the classes seen (for the mean bound)


def topk_start(tokens: int, k: int, *like: Any) -> TopK:
  return TopK(
    _core.filled((tokens, k), -jnp.inf, F32, *like),
    _core.filled((tokens, k), 0, jnp.int32, *like),
    _core.filled((tokens, 1), 0.0, F32, *like),
  )


def topk_add(stat: TopK, c: Chunk) -> TopK:
  """Merges a block: its own top-k first, then the top-k of the ``2k``.

  Against one top-k of the running ``k`` and the whole block the two orders
  measured within noise of each other (4096 tokens, d = 512, 2048 classes,
  k = 16 and 32, XLA:CPU; ``benchmarks/bench_linear_pieces.py``); this one
  keeps the merge at ``2k`` entries whatever the block size.
  """
  k = stat.values.shape[1]
  if c.z.shape[1] > k:
    z, j = lax.top_k(c.z, k)
  else:
    z, j = c.z, lax.broadcasted_iota(jnp.int32, c.z.shape, 1)
  values, pick = lax.top_k(jnp.concatenate([stat.values, z], axis=1), k)
  ids = jnp.concatenate([stat.ids, c.start + j], axis=1)
  total = stat.total + jnp.sum(c.z, axis=1, keepdims=True)
  return TopK(values, jnp.take_along_axis(ids, pick, axis=1), total)


def gather_tokens(x: jax.Array, axis_name: Any) -> jax.Array:
  """``[T, k]`` of every device along ``axis_name`` as ``[T, n * k]``.

  One ``psum`` of each device's block written into its own slot (zeros
  elsewhere): the result is the same on every device and, unlike
  ``all_gather``'s, typed so inside ``shard_map``, so that a loss computed
  from it may be returned replicated over the axis.
  """
  n = lax.psum(1, axis_name)
  slots = jnp.zeros((n,) + x.shape, x.dtype) + jnp.zeros_like(x, shape=())
  slots = lax.dynamic_update_index_in_dim(
    slots, x, lax.axis_index(axis_name), 0
  )
  out = lax.psum(slots, axis_name)
  return jnp.moveaxis(out, 0, 1).reshape(x.shape[0], n * x.shape[1])


def topk_finish(stat: TopK, vocab: Vocab) -> TopK:
  """Global class ids; with ``axis_name`` the top ``k`` over all devices."""
  values, ids = stat.values, stat.ids + class_offset(vocab)
  if vocab.axis_name is None:
    return TopK(values, ids, stat.total)
  k = values.shape[1]
  values = gather_tokens(values, vocab.axis_name)
  ids = gather_tokens(ids, vocab.axis_name)
  values, pick = lax.top_k(values, k)
  total = lax.psum(stat.total, vocab.axis_name)
  return TopK(values, jnp.take_along_axis(ids, pick, axis=1), total)


# --------------------------------------------------------------------------
# The loss's statistics from a token's probabilities.
# --------------------------------------------------------------------------


class Stats(NamedTuple):
  """Per-token sums over a token's classes (all of its support)."""

  linear: jax.Array  # [T] Σ p (z - m), m the token's largest logit
  entropy: jax.Array  # [T] H_α(p) = Σ h(p)
  support: jax.Array  # [T] the number of classes with p > 0 (float32)
  d_alpha: jax.Array | None  # [T] Σ ∂h(p)/∂α, for a learnable α


def stats_of(p: jax.Array, zc: jax.Array, family: _core.Family) -> Stats:
  """:class:`Stats` of ``p`` over the last axis; ``zc = z - m`` there."""
  zero = jnp.zeros((), p.dtype)
  # zc is -inf where a class is masked by a -inf bias; p is 0 there.
  linear = jnp.sum(jnp.where(p > 0, p * zc, zero), axis=-1)
  entropy = jnp.sum(family.entropy_terms(p), axis=-1)
  support = jnp.sum((p > 0).astype(F32), axis=-1)
  d_alpha = None
  if family.learnable:
    d_alpha = jnp.sum(family.entropy_alpha_derivative(p), axis=-1)
  return Stats(linear, entropy, support, d_alpha)


# --------------------------------------------------------------------------
# Wide supports: the tokens whose smallest candidate has mass.
# --------------------------------------------------------------------------


class Solution(NamedTuple):
  """A token's threshold, the row sum there and its loss statistics."""

  t: jax.Array  # [T, 1] threshold of the shifted logits
  total: jax.Array  # [T, 1] Σ p(t) over the row (1 up to rounding)
  stats: Stats


def take_family(family: _core.Family, idx: jax.Array) -> _core.Family:
  """The members of the tokens ``idx`` (a per-token ε is gathered)."""
  return _core.Family(family.eps[idx]) if family.learnable else family


def in_groups(
  need: jax.Array,
  group: int,
  body: Callable[[Any, jax.Array, jax.Array], Any],
  state: Any,
) -> Any:
  """``state = body(state, idx, live)`` for groups of the tokens in ``need``.

  ``idx`` holds ``group`` token indices, the first of those still needed;
  ``live`` says which of them are real (the last group is padded with token
  0). A ``while_loop`` runs no group at all when no token needs one: under
  ``vmap`` a ``lax.cond`` would become a select that always runs its
  branches, while a loop runs while any batch member still needs a group.
  """
  tokens = need.shape[0]

  def step(carry):
    need, state = carry
    (idx,) = jnp.nonzero(need, size=group, fill_value=0)
    live = jnp.arange(group) < jnp.sum(need)
    state = body(state, idx, live)
    done = jnp.where(live, idx, tokens)
    return need.at[done].set(False, mode="drop"), state

  return lax.while_loop(lambda c: jnp.any(c[0]), step, (need, state))[1]


def _psum(x: jax.Array, vocab: Vocab) -> jax.Array:
  return x if vocab.axis_name is None else lax.psum(x, vocab.axis_name)


def solve_streaming(
  h: jax.Array,
  w: jax.Array,
  b: jax.Array | None,
  m: jax.Array,
  mean: jax.Array,
  start: jax.Array,
  family: _core.Family,
  vocab: Vocab,
) -> Solution:
  """The exact threshold and statistics of the rows ``h`` (``[G, d]``).

  ``find_threshold`` with a row sum that recomputes every block of logits:
  each solver step is one matmul pass over the vocabulary. ``start`` (the
  candidates' threshold) and the bracket's lower end (from ``mean``, the
  row's mean shifted logit; nearly the root for near-uniform rows) lie at
  or left of the root, so the secant steps rise to it from the larger of
  the two. One more pass sums the loss's statistics.
  """
  rows = h.shape[0]

  def row_sum(t):
    def add(s, c):
      return s + jnp.sum(family.map(c.z - m, t), axis=1, keepdims=True)

    s = scan_vocab(
      h, w, b, vocab, add, _core.filled((rows, 1), 0.0, F32, h, w, b, t)
    )
    return _psum(s, vocab)

  lo, hi = family.bracket(n_classes(vocab), mean)
  n_iter = _core.default_n_iter(F32)
  t, total = _core.find_threshold(row_sum, family, lo, hi, n_iter, start)
  total = _core.safe_total(total)

  def add(acc, c):
    zc = c.z - m
    part = stats_of(family.map(zc, t) / total, zc, family)
    return jax.tree.map(jnp.add, acc, part)

  like = (h, w, b, t)
  zeros = lambda: _core.filled((rows,), 0.0, F32, *like)
  init = Stats(zeros(), zeros(), zeros(), zeros() if family.learnable else None)
  stats = jax.tree.map(
    functools.partial(_psum, vocab=vocab),
    scan_vocab(h, w, b, vocab, add, init),
  )
  return Solution(t, total, stats)


def wide_fwd(
  h, w, b, m, mean, wide, family, vocab, solution: Solution, group: int
) -> Solution:
  """``solution`` with the ``wide`` tokens' entries solved exactly."""

  def body(sol, idx, live):
    fam = take_family(family, idx)
    new = solve_streaming(
      h[idx], w, b, m[idx], mean[idx], sol.t[idx], fam, vocab
    )
    put = jnp.where(live, idx, h.shape[0])
    return jax.tree.map(
      lambda old, x: old.at[put].set(x, mode="drop"), sol, new
    )

  return in_groups(wide, min(group, h.shape[0]), body, solution)


# --------------------------------------------------------------------------
# The forward pass.
# --------------------------------------------------------------------------


class Residuals(NamedTuple):
  """What the backward pass needs besides the inputs: O(T × k)."""

  ids: jax.Array  # [T, k] the candidates' global class ids
  p: jax.Array  # [T, k] their probabilities (wide tokens: unused)
  m: jax.Array  # [T, 1] the largest logit
  t: jax.Array  # [T, 1] the threshold (read for wide tokens only)
  total: jax.Array  # [T, 1] the row sum at t (wide tokens only)
  wide: jax.Array  # [T] support wider than the candidates
  d_alpha: jax.Array | None  # [T] ∂(H_α(p) - H_α(q))/∂α, learnable α
  values: jax.Array | None  # [T, k] candidates' logits (soft cap only)
  z_y: jax.Array | None  # [T] the label's logit (soft cap only)


def sparse_fwd_pass(h, w, b, labels, keep, family, vocab, k, group, target):
  """Returns ``(loss, support, residuals)``; ``h`` is float32.

  The Fenchel-Young loss ``<p, z> + H(p) - <q, z> - H(q)`` against the
  target ``q`` (``onehot(y)``, or smoothed), shifted by the largest logit
  ``m``. Tokens not kept give 0 and never reach the wide-support fallback;
  kept ones with a label out of range give NaN.
  """
  tokens = h.shape[0]
  n = n_classes(vocab)
  k = min(k, n)
  stat = scan_vocab(h, w, b, vocab, topk_add, topk_start(tokens, k, h, w, b))
  cand = topk_finish(stat, vocab)
  zc, m = _core.shift_rows(cand.values, ROWS)
  t, total = _core.threshold(zc, family, ROWS, None)
  total = _core.safe_total(total)
  p = family.map(zc, t) / total
  valid = valid_labels(labels, vocab) & keep
  # NaN rows (p NaN) are not wide: their loss is NaN anyway.
  wide = valid & (p[:, -1] > 0)
  if k == n_classes(vocab):  # every class is a candidate
    wide = wide & False
  sol = Solution(t, total, stats_of(p, zc, family))
  mean = cand.total / n - m
  sol = wide_fwd(h, w, b, m, mean, wide, family, vocab, sol, group)
  z_y = label_logits(h, w, b, labels, vocab)
  # <q, z - m>: the label's shifted logit, and the mean's for smoothing.
  fit = target_fit(z_y - m[:, 0], mean[:, 0] * n, target, n)
  h_q, d_h_q = target_entropy(family, target, n)
  loss = sol.stats.linear + sol.stats.entropy - fit - h_q
  loss = jnp.where(valid, jnp.maximum(loss, 0.0), jnp.where(keep, jnp.nan, 0.0))
  d_alpha = sol.stats.d_alpha
  if d_h_q is not None:
    d_alpha = d_alpha - d_h_q
  capped = vocab.cap is not None
  res = Residuals(
    cand.ids,
    p,
    m,
    sol.t,
    sol.total,
    wide,
    d_alpha,
    cand.values if capped else None,
    z_y if capped else None,
  )
  support = jnp.where(keep, sol.stats.support, 0.0).astype(jnp.int32)
  return loss, support, res


# --------------------------------------------------------------------------
# The backward pass.
# --------------------------------------------------------------------------


class Grads(NamedTuple):
  """Cotangents accumulated in float32; ``W``'s as the rows of ``Wᵀ``."""

  dh: jax.Array  # [T, d]
  dwt: jax.Array  # [V_local, d]
  db: jax.Array | None  # [V_local]


def support_grads(
  h: jax.Array,
  wt: jax.Array,
  ids: jax.Array,
  c: jax.Array,
  n_slots: jax.Array,
  vocab: Vocab,
  grads: Grads,
) -> Grads:
  """Adds ``c_j`` times the rows ``ids_j`` of ``Wᵀ`` for the first slots.

  ``ids`` and ``c`` are ``[T, S]`` (global ids; slots past ``n_slots`` are
  zero). One slot at a time: a gather of ``T`` rows of ``Wᵀ`` for ``dh``
  and a scatter-add of ``T`` rows into ``dWᵀ``, so the work follows the
  widest support rather than ``k``. Rows of ``Wᵀ [V, d]`` are contiguous;
  gathering and scattering columns of ``W [d, V]`` instead measured 5-15x
  slower (4096 tokens, d = 512, V = 32768, XLA:CPU;
  ``benchmarks/bench_linear_pieces.py``). Only this device's classes are
  touched.
  """
  local = ids - class_offset(vocab)
  mine = (local >= 0) & (local < vocab.size)
  local = jnp.where(mine, local, 0)
  c = jnp.where(mine, c, 0.0)

  def slot(j):
    i = lax.dynamic_index_in_dim(local, j, 1, keepdims=False)
    return i, lax.dynamic_index_in_dim(c, j, 1, keepdims=True)

  def gather(j, dh):
    i, cj = slot(j)
    return dh + cj * wt[i].astype(F32)

  def scatter(j, carry):
    dwt, db = carry
    i, cj = slot(j)
    db = None if db is None else db.at[i].add(cj[:, 0])
    return dwt.at[i].add(cj * h), db

  # Two loops: Wᵀ (a copy of W) is dead before dWᵀ is written, so XLA can
  # give both the same buffer.
  dh = lax.fori_loop(0, n_slots, gather, grads.dh)
  # dWᵀ's zeros depend on the gather loop (an exact 0, NaN or not), or XLA
  # allocates them before the forward pass's blocks are freed (temp memory
  # 101 -> 68 MiB at 4096 tokens, d = 512, V = 32768, chunk 2048).
  after = jnp.isnan(jnp.sum(dh[:1, :1])).astype(F32) * 0.0
  dwt, db = lax.fori_loop(0, n_slots, scatter, (grads.dwt + after, grads.db))
  return Grads(dh, dwt, db)


def wide_bwd(h, w, b, labels, g, family, res, vocab, group, grads, target):
  """Adds the wide tokens' cotangents: dense recomputing passes, in groups.

  Per block ``c = g (p - (1 - ε) y)`` with ``p`` from the saved threshold
  (the smoothed target's uniform part is added for every token by
  :func:`uniform_grads`); as in the softmax loss's backward pass, three
  matmuls per block, but of ``group`` rows.
  """
  offset = class_offset(vocab)
  on_label = 1.0 - target.smoothing

  def body(grads, idx, live):
    hg, m, t, total = h[idx], res.m[idx], res.t[idx], res.total[idx]
    gg = jnp.where(live, g[idx], 0.0)[:, None]
    label = (labels[idx] - offset)[:, None]
    fam = take_family(family, idx)

    def add(carry, c):
      dhg, dwt, db = carry
      p = fam.map(c.z - m, t) / total
      ids = c.start + lax.broadcasted_iota(jnp.int32, c.z.shape, 1)
      dz = gg * jnp.where(ids == label, p - on_label, p)
      dz = dz * _core.soft_cap_slope(c.z, vocab.cap)
      dhg = dhg + jnp.dot(dz, c.wt)
      size = c.z.shape[1]
      rows = lax.dynamic_slice_in_dim(dwt, c.start, size) + jnp.dot(dz.T, hg)
      dwt = lax.dynamic_update_slice_in_dim(dwt, rows, c.start, 0)
      if db is not None:
        part = lax.dynamic_slice_in_dim(db, c.start, size) + dz.sum(0)
        db = lax.dynamic_update_slice_in_dim(db, part, c.start, 0)
      return dhg, dwt, db

    init = (_core.filled(hg.shape, 0.0, F32, hg, w, gg), grads.dwt, grads.db)
    dhg, dwt, db = scan_vocab(hg, w, b, vocab, add, init)
    put = jnp.where(live, idx, h.shape[0])
    return Grads(grads.dh.at[put].add(dhg, mode="drop"), dwt, db)

  return in_groups(res.wide, min(group, h.shape[0]), body, grads)


def uniform_grads(h, w, b, g, vocab, target, grads):
  """Adds the smoothed target's uniform part, ``c_j = -g ε / V`` for all j.

  Without a soft cap it is rank one: ``dh -= (g ε / V) Σ_j W[:, j]``,
  ``dW[:, j] -= (ε / V) Σ_t g_t h_t``, ``db -= (ε / V) Σ_t g_t``. With one,
  each class has its own slope, and one dense pass over the vocabulary
  adds ``c_j (1 - (z_j / cap)²)``.
  """
  u = g * target.smoothing / n_classes(vocab)  # [T]
  if vocab.cap is None:
    wt = weight_rows(w, vocab).astype(F32)
    dh = grads.dh - u[:, None] * jnp.sum(wt, axis=0)[None, :]
    dwt = grads.dwt - jnp.dot(u, h)[None, :]
    db = None if grads.db is None else grads.db - jnp.sum(u)
    return Grads(dh, dwt, db)

  def add(carry, c):
    dh, dwt, db = carry
    dz = -u[:, None] * _core.soft_cap_slope(c.z, vocab.cap)
    size = c.z.shape[1]
    rows = lax.dynamic_slice_in_dim(dwt, c.start, size) + jnp.dot(dz.T, h)
    dwt = lax.dynamic_update_slice_in_dim(dwt, rows, c.start, 0)
    if db is not None:
      part = lax.dynamic_slice_in_dim(db, c.start, size) + dz.sum(0)
      db = lax.dynamic_update_slice_in_dim(db, part, c.start, 0)
    return dh + jnp.dot(dz, c.wt), dwt, db

  return Grads(*scan_vocab(h, w, b, vocab, add, tuple(grads)))


def sparse_bwd_pass(
  h, w, b, labels, keep, g, family, res, vocab, group, target
):
  """Cotangents ``(dh, dW, db)`` in float32 (``db`` None without a bias)."""
  g = jnp.where(valid_labels(labels, vocab) & keep, g.astype(F32), 0.0)
  g_exact = jnp.where(res.wide, 0.0, g)
  # The label in slot 0, then the candidates: the support is their prefix.
  ids = jnp.concatenate([labels[:, None], res.ids], axis=1)
  on_label = -(1.0 - target.smoothing) * g_exact[:, None]
  c = jnp.concatenate([on_label, g_exact[:, None] * res.p], axis=1)
  if vocab.cap is not None:
    values = jnp.concatenate([res.z_y[:, None], res.values], axis=1)
    c = c * _core.soft_cap_slope(values, vocab.cap)
  support = jnp.sum(res.p > 0, axis=1)
  n_slots = 1 + jnp.max(jnp.where(res.wide, 0, support), initial=0)
  like = (h, w, b, g)
  grads = Grads(
    _core.filled(h.shape, 0.0, F32, *like),
    _core.filled((vocab.size, d_model(w, vocab)), 0.0, F32, *like),
    None if b is None else _core.filled(b.shape, 0.0, F32, *like),
  )
  grads = support_grads(h, weight_rows(w, vocab), ids, c, n_slots, vocab, grads)
  grads = wide_bwd(h, w, b, labels, g, family, res, vocab, group, grads, target)
  if target.smoothing:
    grads = uniform_grads(h, w, b, g, vocab, target, grads)
  return grads.dh, from_rows(grads.dwt, vocab), grads.db


# --------------------------------------------------------------------------
# The custom VJP.
# --------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9))
def _loss(h, w, b, labels, keep, family, vocab, k, group, target):
  return _loss_fwd(h, w, b, labels, keep, family, vocab, k, group, target)[0]


def _loss_fwd(h, w, b, labels, keep, family, vocab, k, group, target):
  # Forward mode over this pass (Hessians) is exact only for some members.
  h, w, b, family = _core.forward_mode_exact(
    (h, w, b, family), family, "the linear sparse losses"
  )
  loss, support, res = sparse_fwd_pass(
    h.astype(F32), w, b, labels, keep, family, vocab, k, group, target
  )
  return (loss, support), (h, w, b, labels, keep, family, res)


def _loss_bwd(vocab, k, group, target, saved, cotangents):
  del k
  g, _ = cotangents  # the support size is an integer: no cotangent
  h, w, b, labels, keep, family, res = saved
  dh, dw, db = sparse_bwd_pass(
    h.astype(F32), w, b, labels, keep, g, family, res, vocab, group, target
  )
  # Inside shard_map: h (and b, W) may be replicated over axes their
  # cotangents vary over (the vocabulary axis for h); their true cotangent
  # is the sum over those devices.
  dh = _core.match_vma(dh.astype(h.dtype), h)
  dw = _core.match_vma(dw.astype(w.dtype), w)
  if b is not None:
    db = _core.match_vma(db.astype(b.dtype), b)
  d_family = None
  if family.learnable:
    # Envelope theorem, as in softjax.losses: only the explicit dependence
    # of H_α(p) - H_α(q) on α remains (∂H_α(y)/∂α = 0 for a one-hot y).
    # Tokens ignored or with a label out of range get no gradient.
    valid = valid_labels(labels, vocab) & keep
    d_eps = jnp.where(valid, g.astype(F32) * res.d_alpha, 0.0)[:, None]
    d_family = _core.Family(_core.param_cotangent(d_eps, family.eps))
  dh, dw, db, d_family = _core.first_order_only(
    (dh, dw, db, d_family), "the linear sparse losses"
  )
  return dh, dw, db, None, None, d_family


_loss.defvjp(_loss_fwd, _loss_bwd)


def loss(
  h: jax.Array,
  w: jax.Array,
  b: jax.Array | None,
  labels: jax.Array,
  keep: jax.Array,
  family: _core.Family,
  vocab: Vocab,
  k: int,
  group: int,
  target: Target,
) -> tuple[jax.Array, jax.Array]:
  """``(loss, support size)`` per token of ``[T, d]`` hidden states (α > 1).

  ``keep`` (``[T]``) marks the tokens not ignored; ``family``: a static
  member, or an array ε with one per token (``[T, 1]``,
  ``_core.member_for_tokens``); ``k`` candidates per token, wide supports
  solved in groups of ``group`` tokens; ``target`` the smoothing.
  """
  return _loss(h, w, b, labels, keep, family, vocab, k, group, target)
