"""The two sweeps every pass of block-wise attention is made of.

:func:`for_key_blocks` (a query block against the key blocks it sees) and
:func:`for_query_blocks` (a key block against the query blocks that see
it) visit only the block pairs :func:`layout.plan` keeps (blocks above
the causal diagonal or outside the window are skipped) and apply the
positional mask (the band's edges, padded keys) only on the blocks that
need it. With flags per block (the pairs the segment ids and lengths
need, the blocks holding a positive weight) they skip the others too
(:func:`_loop`). Here also live what the passes need around them: the
masked scores of a block pair (:func:`_scores`, with the soft cap and the
token structure) and its dropout scale.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

from softjax import _core
from softjax._attention import layout
from softjax._attention import tokens


def _block_tokens(
  toks: tokens.Tokens | None, cfg: layout.Config, i: Any, j: Any
) -> tokens.Tokens | None:
  """The per-token arrays of block pair (i, j): ids ``[B, bq]``, ``[B, bk]``."""
  if toks is None:
    return None
  ids = (None, None)
  if toks.q_ids is not None:
    ids = (
      layout.block(toks.q_ids, i, cfg.block_q, 1),
      layout.block(toks.kv_ids, j, cfg.block_k, 1),
    )
  return tokens.Tokens(*ids, toks.q_lengths, toks.kv_lengths)


def _keep(
  cfg: layout.Config,
  ops: layout.Operands,
  i: Any,
  j: Any,
  positional: bool,
) -> jax.Array | None:
  """Who sees whom in block pair (i, j), ``[B|1, 1|Hkv, rows, bk]``, or None.

  ``mask`` and the token structure (:func:`tokens.allowed`); the band
  (causality, window) and the padded keys only on ``positional`` pairs.
  """
  group = ops.q.shape[2]
  keep = None
  if ops.mask is not None:
    keep = layout.pair_rows(ops.mask, i, j, cfg, group)
  q_pos = i * cfg.block_q + jnp.arange(cfg.block_q)
  k_pos = j * cfg.block_k + jnp.arange(cfg.block_k)
  ok = tokens.allowed(
    q_pos,
    k_pos,
    cfg.causal and positional,
    cfg.window if positional else None,
    _block_tokens(ops.tokens, cfg, i, j),
  )
  if positional:
    padded = k_pos < cfg.kv_len
    ok = padded if ok is None else ok & padded
  if ok is None:
    return keep
  ok = jnp.broadcast_to(ok, ok.shape[:-2] + (cfg.block_q, cfg.block_k))
  if ok.ndim == 2:
    ok = jnp.tile(ok, (group, 1))
  else:  # [B, bq, bk]: every head of the group alike
    ok = jnp.broadcast_to(
      ok[:, None, None], (ok.shape[0], 1, group) + ok.shape[1:]
    )
    ok = ok.reshape(ok.shape[:2] + (-1, cfg.block_k))
  return ok if keep is None else keep & ok


def _scores(
  cfg: layout.Config,
  ops: layout.Operands,
  q_i: jax.Array,
  k_j: jax.Array,
  i: jax.Array | int,
  j: jax.Array | int,
  positional: bool,
) -> jax.Array:
  """Scores of block pair (i, j), ``-inf`` where masked: ``[B,Hkv,rows,bk]``.

  ``q_i`` is in rows form (:func:`layout.rows`). ``positional`` adds the
  band (causality, window) and padded-key mask; the plan asks for it only
  on the blocks that straddle the band's edges or hold padding, so the
  others pay no per-entry select for it.
  """
  group = ops.q.shape[2]
  z = jnp.einsum(layout.QK, q_i, k_j, precision=cfg.precision)
  if ops.bias is not None:
    z = z + layout.pair_rows(ops.bias, i, j, cfg, group)
  z = _core.soft_cap(z, cfg.cap)
  # +inf scores become the largest float: a row holding them shares its
  # mass among them and gives every finite score exp(finite - max) = 0, the
  # limit the dense normalisers give, instead of inf - inf = NaN. One
  # vectorised `min` per entry (no select); NaN stays NaN.
  z = jnp.minimum(z, jnp.finfo(z.dtype).max)
  keep = _keep(cfg, ops, i, j, positional)
  if keep is not None:
    z = jnp.where(keep, z, -jnp.inf)
  return z


def dropout_scale(
  cfg: layout.Config,
  rng: jax.Array,
  i: jax.Array | int,
  j: jax.Array | int,
  shape: tuple[int, ...],
  dtype: Any,
) -> jax.Array:
  """``keep / keep_prob`` for block pair (i, j).

  The key is the caller's key folded with the block indices, so the
  backward pass regenerates exactly the forward's mask without storing it.
  """
  key = jax.random.fold_in(jax.random.fold_in(rng, i), j)
  keep_prob = 1.0 - cfg.dropout_rate
  if cfg.broadcast_dropout:  # shared by the batch and the heads, as Flax
    keep = jax.random.bernoulli(key, keep_prob, (cfg.block_q, cfg.block_k))
    keep = jnp.tile(keep, (shape[2] // cfg.block_q, 1))
  else:
    keep = jax.random.bernoulli(key, keep_prob, shape)
  return keep.astype(dtype) * (1.0 / keep_prob)


# ---------------------------------------------------------------------------
# The two sweeps.


def _loop(
  blocks: jax.Array,
  count: jax.Array,
  live: jax.Array | None,
  step: Callable[[jax.Array, Any], Any],
  carry: Any,
) -> Any:
  """``carry = step(b, carry)`` for the blocks ``b`` in ``blocks[:count]``.

  With ``live`` (booleans, one per block of the sweep) only the blocks it
  marks are visited, in the same order: the loop runs over the positions of
  those blocks (a stable argsort of a few flags), so a skipped block costs
  nothing, not even a branch.
  """
  if live is None:
    return lax.fori_loop(0, count, lambda n, c: step(blocks[n], c), carry)
  keep = (jnp.arange(blocks.shape[0]) < count) & live[blocks]
  order = jnp.argsort(~keep, stable=True)
  total = jnp.sum(keep.astype(jnp.int32))
  return lax.fori_loop(0, total, lambda n, c: step(blocks[order[n]], c), carry)


def _planned(lists: dict[int, Any], index: jax.Array, kind: int) -> Any:
  """``(blocks, count)`` of one kind for block ``index`` of the sweep."""
  blocks, counts = lists[kind]
  return jnp.asarray(blocks)[index], jnp.asarray(counts)[index]


def for_key_blocks(
  cfg: layout.Config,
  ops: layout.Operands,
  i: jax.Array,
  body: Callable[[jax.Array, jax.Array, Any], Any],
  carry: Any,
  live: jax.Array | None = None,
) -> Any:
  """``carry = body(j, z, carry)`` over the key blocks query block i sees.

  ``z`` are the masked scores of block pair (i, j). Every forward pass is
  this sweep with its own ``body``. ``live`` (``[n_k]`` booleans) skips the
  key blocks where it is False: no scores are computed there.
  """
  plan = layout.plan(cfg)
  q_i = layout.rows(ops.q, i, cfg)

  def visit(positional: bool) -> Callable[[jax.Array, Any], Any]:
    def step(j: jax.Array, c: Any) -> Any:
      k_j = layout.block(ops.k, j, cfg.block_k, layout.K_AXIS)
      return body(j, _scores(cfg, ops, q_i, k_j, i, j, positional), c)

    return step

  for kind in (layout.CLEAN, layout.PARTIAL):
    blocks, count = _planned(plan.by_query, i, kind)
    carry = _loop(blocks, count, live, visit(kind == layout.PARTIAL), carry)
  return carry


def for_query_blocks(
  cfg: layout.Config,
  ops: layout.Operands,
  j: jax.Array,
  body: Callable[[jax.Array, jax.Array, Any], Any],
  carry: Any,
  live: jax.Array | None = None,
) -> Any:
  """``carry = body(i, z, carry)`` over the query blocks that see key block j.

  The same block pairs, with the same scores and masks, as
  :func:`for_key_blocks` visits, so the backward recomputes exactly the
  forward's weights; ``live`` (``[n_q]``) skips query blocks likewise.
  """
  plan = layout.plan(cfg)
  k_j = layout.block(ops.k, j, cfg.block_k, layout.K_AXIS)

  def visit(positional: bool) -> Callable[[jax.Array, Any], Any]:
    def step(i: jax.Array, c: Any) -> Any:
      q_i = layout.rows(ops.q, i, cfg)
      return body(i, _scores(cfg, ops, q_i, k_j, i, j, positional), c)

    return step

  for kind in (layout.PARTIAL, layout.CLEAN):
    blocks, count = _planned(plan.by_key, j, kind)
    carry = _loop(blocks, count, live, visit(kind == layout.PARTIAL), carry)
  return carry
