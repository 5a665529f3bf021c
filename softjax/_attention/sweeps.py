"""The two sweeps every pass of block-wise attention is made of.

:func:`for_key_blocks` (a query block against the key blocks it sees) and
:func:`for_query_blocks` (a key block against the query blocks that see
it) visit only the block pairs :func:`layout.plan` keeps (causal blocks
above the diagonal are skipped) and apply the positional mask (causal
diagonal, padded keys) only on the blocks that need it. With the flags of
the blocks holding a positive weight, they skip the others too
(:func:`_loop`). Here also live what the passes need around them: the
masked scores of a block pair, its dropout scale, and the accumulators
that start a loop (:func:`filled`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

from softjax._attention import layout


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
  causal and padded-key mask; the plan asks for it only on the blocks that
  straddle the diagonal or hold padding, so the others pay no per-entry
  select.
  """
  group = ops.q.shape[2]
  z = jnp.einsum(layout.QK, q_i, k_j, precision=cfg.precision)
  if ops.bias is not None:
    z = z + layout.pair_rows(ops.bias, i, j, cfg, group)
  # +inf scores become the largest float: a row holding them shares its
  # mass among them and gives every finite score exp(finite - max) = 0, the
  # limit the dense normalisers give, instead of inf - inf = NaN. One
  # vectorised `min` per entry (no select); NaN stays NaN.
  z = jnp.minimum(z, jnp.finfo(z.dtype).max)
  keep = None
  if ops.mask is not None:
    keep = layout.pair_rows(ops.mask, i, j, cfg, group)
  if positional:
    k_pos = j * cfg.block_k + jnp.arange(cfg.block_k)
    ok = k_pos < cfg.kv_len
    if cfg.causal:
      q_pos = i * cfg.block_q + jnp.arange(cfg.block_q)
      ok = jnp.tile(ok & (k_pos <= q_pos[:, None]), (group, 1))
    keep = ok if keep is None else keep & ok
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
  lo: jax.Array,
  hi: jax.Array,
  live: jax.Array | None,
  step: Callable[[jax.Array, Any], Any],
  carry: Any,
) -> Any:
  """``carry = step(b, carry)`` for the blocks ``b`` in ``[lo, hi)``.

  With ``live`` (booleans, one per block) only the blocks it marks are
  visited, in increasing order: the loop runs over the positions of those
  blocks (a stable argsort of a few flags), so a skipped block costs
  nothing, not even a branch.
  """
  if live is None:
    return lax.fori_loop(lo, hi, step, carry)
  index = jnp.arange(live.shape[0])
  keep = (index >= lo) & (index < hi) & live
  order = jnp.argsort(~keep, stable=True)
  count = jnp.sum(keep.astype(jnp.int32))
  return lax.fori_loop(0, count, lambda n, c: step(order[n], c), carry)


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

  clean_end = jnp.asarray(plan.clean_end)[i]
  carry = _loop(0, clean_end, live, visit(False), carry)
  return _loop(clean_end, jnp.asarray(plan.end)[i], live, visit(True), carry)


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

  clean_start = jnp.asarray(plan.clean_start)[j]
  start = jnp.asarray(plan.start)[j]
  carry = _loop(start, clean_start, live, visit(True), carry)
  return _loop(clean_start, cfg.n_q, live, visit(False), carry)
