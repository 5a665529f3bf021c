"""The forward passes of block-wise attention, one function each.

* :func:`_softmax_pass` (α = 1): for each query block, one sweep over its key
  blocks with a running maximum, sum and output (online softmax). Saves the
  per-query statistic ``lse`` (log-sum-exp of the row; ``+inf`` for a query
  whose keys are all masked, so that its recomputed weights are 0).
* :func:`entmax_pass`: the forward of the sparse members of the entmax
  family (α > 1, or an array α; the rule :class:`rules.Entmax`): per query
  block, a sweep keeping the maximum of each group of keys
  (:func:`_maxima_sweep`); the threshold of those maxima, solved in memory,
  starts ``softjax._core.find_threshold``, whose every ``row_sum(t)`` is a
  :func:`sweeps.for_key_blocks` sweep summing ``family.map(z - shift, t)``
  (:func:`_solve_block`); then an output sweep accumulating ``Σ p v``,
  ``Σ s v`` and ``Σ s`` (:func:`_output_sweep`). Key blocks in which no
  query of the block has a positive weight (known from the group maxima
  once a threshold is) are skipped by the solver's sweeps and the output
  sweep, and flagged for the backward pass.

:func:`forward` picks the pass of a rule.
"""

from __future__ import annotations

from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

from softjax import _core
from softjax._attention import layout
from softjax._attention import rules
from softjax._attention import sweeps
from softjax._core import Family


def _softmax_pass(
  cfg: layout.Config, ops: layout.Operands
) -> tuple[jax.Array, rules.SoftmaxRows]:
  """Forward for α = 1: the output and ``lse``, one key sweep per q block.

  Online softmax (the core's :class:`~softjax._core.softmax.LSE`): the
  running maximum, sum and output ``o`` of a query block are rescaled by
  ``exp(m_old - m_new)`` as each key block arrives. The maximum starts at
  ``-finfo.max``, so a query that has seen only masked keys gets weights
  ``exp(-inf) = 0``, not NaN, and a zero sum.
  """
  batch, kv_heads, group, q_pad, _ = ops.q.shape
  rows_shape = (batch, kv_heads, group * cfg.block_q)
  v_depth = ops.v.shape[-1]
  dtype, refs = ops.q.dtype, ops.refs
  filled = lambda shape, value: _core.filled(
    shape, value, dtype, *refs, like=ops.q
  )
  needed = layout.pairs_seen(cfg, ops.tokens)

  def query_block(
    i: jax.Array, bufs: tuple[jax.Array, jax.Array]
  ) -> tuple[jax.Array, jax.Array]:
    def body(j, z, carry):
      stat, o = carry
      stat, p, rescale = _core.lse_add(stat, z)
      if cfg.dropout_rate:
        p = p * sweeps.dropout_scale(cfg, ops.rng, i, j, p.shape, p.dtype)
      v_j = layout.block(ops.v, j, cfg.block_k, layout.K_AXIS)
      pv = jnp.einsum(layout.PV, p, v_j, precision=cfg.precision)
      return stat, o * rescale[..., None] + pv

    init = (
      _core.lse_start(rows_shape, dtype, *refs, like=ops.q),
      filled(rows_shape + (v_depth,), 0.0),
    )
    live = None if needed is None else needed[i]
    stat, o = sweeps.for_key_blocks(cfg, ops, i, body, init, live)
    empty = stat.s == 0  # every key of the query masked
    out_i = o / jnp.where(empty, 1.0, stat.s)[..., None]
    lse_i = jnp.where(empty, jnp.inf, _core.lse_finish(stat))
    out, lse = bufs
    return (
      layout.put_rows(out, out_i, i, cfg),
      layout.put_rows(lse, lse_i, i, cfg),
    )

  init = (
    filled((batch, kv_heads, group, q_pad, v_depth), 0.0),
    filled((batch, kv_heads, group, q_pad), 0.0),
  )
  out, lse = lax.fori_loop(0, cfg.n_q, query_block, init)
  return out, rules.SoftmaxRows(lse)


def _maxima_sweep(
  cfg: layout.Config,
  ops: layout.Operands,
  i: jax.Array,
  needed: jax.Array | None,
) -> tuple[jax.Array, jax.Array]:
  """Group maxima of query block i, and the key block of each slot.

  ``maxima`` (``[B, Hkv, rows, width * block_k / group]``) holds the
  largest score of each group of ``cfg.group`` keys of the visited key
  blocks, in visiting order (``-inf`` where the group is masked, or the
  slot unused); ``blocks`` (``[width]``) the key block of each slot
  (``n_k`` for an unused one). ``width`` is the most key blocks a query
  block visits (:attr:`layout.Plan.width`), so that with a sliding window
  this work stays linear in the length. The maximum of the maxima is the
  row's, and their threshold is a lower bound of the row's: dropping
  entries lowers the row sum at every ``t``.
  """
  per_block = cfg.block_k // cfg.group
  batch, kv_heads, group = ops.q.shape[:3]
  width = layout.plan(cfg).width
  shape = (batch, kv_heads, group * cfg.block_q, width * per_block)

  def body(j, z, carry):
    maxima, blocks, n = carry
    top = jnp.max(z.reshape(z.shape[:3] + (per_block, cfg.group)), axis=-1)
    maxima = lax.dynamic_update_slice_in_dim(maxima, top, n * per_block, 3)
    return maxima, blocks.at[n].set(j.astype(blocks.dtype)), n + 1

  typed = lambda shape, value, dtype: _core.filled(
    shape, value, dtype, *ops.refs, like=ops.q if len(shape) > 2 else None
  )
  init = (
    typed(shape, -jnp.inf, ops.q.dtype),
    typed((width,), cfg.n_k, jnp.int32),
    typed((), 0, jnp.int32),
  )
  live = None if needed is None else needed[i]
  maxima, blocks, _ = sweeps.for_key_blocks(cfg, ops, i, body, init, live)
  return maxima, blocks


def _live_blocks(
  cfg: layout.Config,
  family: Family,
  maxima: jax.Array,
  blocks: jax.Array,
  shift: jax.Array,
  t: jax.Array,
) -> jax.Array:
  """``[n_k]``: whether any row has a positive weight in each key block.

  The map increases with the score, so a key block holds a positive weight
  (at ``t`` or any larger threshold) iff its largest score has one. NaN
  rows keep every block. ``blocks`` maps the slots of ``maxima`` to key
  blocks (:func:`_maxima_sweep`).
  """
  per_block = cfg.block_k // cfg.group
  split = maxima.reshape(maxima.shape[:3] + (-1, per_block))
  p = family.map(jnp.max(split, axis=-1) - shift[..., None], t[..., None])
  by_slot = jnp.any((p > 0) | jnp.isnan(p), axis=(0, 1, 2))
  live = _core.filled((cfg.n_k,), False, bool, by_slot)
  return live.at[blocks].max(by_slot, mode="drop")


def _solve_block(
  cfg: layout.Config,
  rule: rules.Entmax,
  ops: layout.Operands,
  i: jax.Array,
  maxima: jax.Array,
  blocks: jax.Array,
) -> tuple[jax.Array, ...]:
  """``(shift, t, total, live)`` of query block i's rows (``[B, Hkv, rows]``).

  The threshold of the group maxima, solved in memory, starts
  ``find_threshold``, whose every row-sum evaluation is one sweep over the
  key blocks (one ``QKᵀ`` of the block's rows). The start is left of the
  root (to rounding) and the iterates do not go left of it: for α <= 2 the
  secant steps rise from it (a step from two points past the root lands
  within the step's own error of the root), for α > 2 the bisection
  bracket starts there. So key blocks without weight at the start, whose
  weights can only fall as ``t`` rises, are skipped by the row sums
  (``live``, ``[n_k]``); the flags at the root skip them in the output and
  backward passes.
  """
  family = rule.family
  n_iter = cfg.n_iter or _core.default_n_iter(maxima.dtype)
  top = jnp.max(maxima, axis=-1)
  # A query whose keys are all masked keeps its -inf scores (no mass).
  shift = jnp.where(top == -jnp.inf, 0.0, top)
  start, _ = _core.threshold(
    maxima - shift[..., None], family, _core.Rows((3,)), n_iter
  )
  start = start[..., 0]
  if family.learnable:
    row_family = Family(family.eps[..., 0]).rowwise(start.shape, start.dtype)
  else:
    row_family = family
  n = jnp.asarray(cfg.kv_len, start.dtype)
  lo, hi = row_family.bracket(n, start * 0 - jnp.inf)
  if family.bisects:  # α > 2: bisection uses the lower bound, not a start
    lo = jnp.maximum(lo, start)
    hi = jnp.maximum(hi, lo)

  live = _live_blocks(cfg, family, maxima, blocks, shift, start)

  def row_sum(t: jax.Array) -> jax.Array:
    def body(j, z, total):
      p = family.map(z - shift[..., None], t[..., None])
      return total + jnp.sum(p, axis=-1)

    return sweeps.for_key_blocks(cfg, ops, i, body, jnp.zeros_like(t), live)

  t, total = _core.find_threshold(row_sum, row_family, lo, hi, n_iter, start)
  return shift, t, total, _live_blocks(cfg, family, maxima, blocks, shift, t)


def _output_sweep(
  cfg: layout.Config,
  rule: rules.Entmax,
  ops: layout.Operands,
  i: jax.Array,
  rows: rules.EntmaxRows,
  live: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """``(Σ p v, Σ s v / Σ s)`` of query block i (dropout applied to both)."""

  def body(j, z, carry):
    out, sv, s_sum = carry
    p = rule.weights(z, rows)
    s = rule.slopes(p)
    s_sum = s_sum + jnp.sum(s, axis=-1)
    if cfg.dropout_rate:
      drop = sweeps.dropout_scale(cfg, ops.rng, i, j, p.shape, p.dtype)
      p, s = p * drop, s * drop
    v_j = layout.block(ops.v, j, cfg.block_k, layout.K_AXIS)
    out = out + jnp.einsum(layout.PV, p, v_j, precision=cfg.precision)
    sv = sv + jnp.einsum(layout.PV, s, v_j, precision=cfg.precision)
    return out, sv, s_sum

  shape = rows.t.shape + (ops.v.shape[-1],)
  zeros = lambda shape: _core.filled(
    shape, 0.0, ops.q.dtype, *ops.refs, like=ops.q
  )
  init = (zeros(shape), zeros(shape), zeros(rows.t.shape))
  out, sv, s_sum = sweeps.for_key_blocks(cfg, ops, i, body, init, live)
  return out, sv / _core.safe_total(s_sum)[..., None]


def entmax_pass(
  cfg: layout.Config, rule: rules.Entmax, ops: layout.Operands
) -> tuple[jax.Array, rules.EntmaxRows, jax.Array]:
  """Forward of a sparse member: output, per-query statistics, live blocks.

  Per query block: the group maxima (one sweep), the threshold (a few
  sweeps, :func:`_solve_block`), then the output (one sweep). ``live``
  (``[n_q, n_k]``) marks the block pairs holding a positive weight.
  """
  batch, kv_heads, group, q_pad, _ = ops.q.shape
  stats = (batch, kv_heads, group, q_pad)
  vectors = stats + (ops.v.shape[-1],)
  zeros = lambda shape: _core.filled(
    shape, 0.0, ops.q.dtype, *ops.refs, like=ops.q
  )

  needed = layout.pairs_seen(cfg, ops.tokens)

  def query_block(i, bufs):
    maxima, blocks = _maxima_sweep(cfg, ops, i, needed)
    shift, t, total, live_i = _solve_block(cfg, rule, ops, i, maxima, blocks)
    rows = rules.EntmaxRows(shift, t, total, None)
    out, sv = _output_sweep(cfg, rule, ops, i, rows, live_i)
    new = (out, rows._replace(sv=sv))
    put = lambda buf, x: layout.put_rows(buf, x, i, cfg)
    out_buf, rows_buf, live = bufs
    return jax.tree.map(put, (out_buf, rows_buf), new) + (
      live.at[i].set(live_i),
    )

  # Typed like the flags computed from the operands.
  live = _core.filled((cfg.n_q, cfg.n_k), False, bool, ops.q, *ops.refs)
  rows = rules.EntmaxRows(*(zeros(stats),) * 3, zeros(vectors))
  return lax.fori_loop(0, cfg.n_q, query_block, (zeros(vectors), rows, live))


def forward(
  cfg: layout.Config,
  rule: rules.Softmax | rules.Entmax,
  ops: layout.Operands,
) -> tuple[jax.Array, Any]:
  """``(out, rows, live)``: the output and what the backward pass needs.

  ``rows`` are the per-query statistics; ``live`` (``[n_q, n_k]``) marks
  the block pairs that hold a positive weight (for softmax: those the
  token structure needs; None when every pair the plan keeps is needed).
  """
  if rule is rules.SOFTMAX:
    return _softmax_pass(cfg, ops) + (layout.pairs_seen(cfg, ops.tokens),)
  if cfg.decoding:
    return decoding_pass(cfg, rule, ops)
  return entmax_pass(cfg, rule, ops)


def decoding_pass(
  cfg: layout.Config, rule: rules.Entmax, ops: layout.Operands
) -> tuple[jax.Array, rules.EntmaxRows, jax.Array]:
  """The sparse forward for a few queries (``cfg.decoding``): one pass.

  The scores of the one query block against every key block are kept
  (``[B, Hkv, rows, Lk]``, linear in the keys), so the threshold is solved
  in memory, as the dense map solves it, after one pass over the keys, and
  the output takes one pass over the values: no sweep per solver step.
  The statistics are those of :func:`entmax_pass`, so the backward pass is
  the same.
  """
  family = rule.family
  needed = layout.pairs_seen(cfg, ops.tokens)
  batch, kv_heads, group = ops.q.shape[:3]
  shape = (batch, kv_heads, group * cfg.block_q, cfg.n_k * cfg.block_k)

  def body(j, z, scores):
    return lax.dynamic_update_slice_in_dim(scores, z, j * cfg.block_k, 3)

  init = _core.filled(shape, -jnp.inf, ops.q.dtype, *ops.refs, like=ops.q)
  live = None if needed is None else needed[0]
  z = sweeps.for_key_blocks(cfg, ops, 0, body, init, live)
  top = jnp.max(z, axis=-1)
  shift = jnp.where(top == -jnp.inf, 0.0, top)  # all masked: no mass
  t, total = _core.threshold(
    z - shift[..., None], family, _core.Rows((3,)), cfg.n_iter
  )
  rows = rules.EntmaxRows(shift, t[..., 0], total[..., 0], None)
  p = rule.weights(z, rows)
  s = rule.slopes(p)
  mm = lambda w: jnp.einsum(layout.PV, w, ops.v, precision=cfg.precision)
  sv = mm(s) / _core.safe_total(jnp.sum(s, axis=-1))[..., None]
  split = p.reshape(shape[:3] + (cfg.n_k, cfg.block_k))
  live = jnp.any((split > 0) | jnp.isnan(split), axis=(0, 1, 2, 4))
  as_block = lambda x: x.reshape((batch, kv_heads, group, -1) + x.shape[3:])
  rows = jax.tree.map(as_block, rows._replace(sv=sv))
  return as_block(mm(p)), rows, live[None]
