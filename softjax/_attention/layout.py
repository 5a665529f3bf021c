"""The internal layout of block-wise attention, and the plan of its blocks.

Here live the static settings of one call (:class:`Config`), the operands
in the internal layout (:class:`Operands`, made by :func:`to_blocks`), the
helpers that slice them into blocks and rows, the block plan (:func:`plan`:
which block pairs the sweeps visit, and which of them need the positional
mask, from causality and the window) and the pairs the token arrays need
(:func:`pairs_seen`: segment ranges that meet, blocks within the lengths).

Internal layout. The wrapper (:func:`to_blocks`) brings every operand into
one layout and the loops see nothing else: queries
``[B, Hkv, G, Lq, D]`` (``B`` the flattened batch dimensions, ``Hkv`` the
key/value heads, ``G`` the query heads sharing one of them), keys and values
``[B, Hkv, Lk, D]``, bias and mask ``[B|1, Hkv|1, G|1, Lq|1, Lk|1]`` (each axis
either whole or broadcast), lengths padded to whole blocks. The query is
already multiplied by ``scale``; autodiff outside the ``custom_vjp`` maps the
gradients back through the scaling, padding and transposes. Within a block
pair the ``G`` heads of a group and the block's queries form one axis of
rows (``[B, Hkv, G * block_q, ...]``, :func:`rows`), so grouped heads share
each key block in one matmul and per-query statistics are ``[B, Hkv, rows]``.
"""

from __future__ import annotations

import functools
import math
from typing import Any
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from softjax._attention import tokens as tokens_lib

# Default block sizes, measured on XLA:CPU (2 shared cores, batch 1, 8 heads,
# depth 64, float32, CPU seconds of fwd+bwd, relative to 256 x 256): at
# L = 4096, 128 x 128 1.06, 512 x 256 1.09, 512 x 512 1.20, 1024 x 512 1.29;
# at L = 16384, 512 x 256 1.19, 512 x 512 1.16. A [8, 256, 256] float32
# block (2 MiB) stays in cache; smaller blocks also hold less memory.
BLOCK_Q = 256
BLOCK_K = 256

# The einsums of one block pair. A query block of every head in a group is
# handled as one set of rows, ``r = (g, q)``: grouped heads share the key
# block in one matmul. dK and dV are accumulated transposed (``bhdk``):
# XLA:CPU then transposes the small [rows, depth] operand instead of the
# [rows, block_k] weights.
QK = "bhrd,bhkd->bhrk"
PV = "bhrk,bhkd->bhrd"
TRANSPOSED = "bhrd,bhrk->bhdk"

Q_AXIS = 3  # the length axis of queries, outputs and per-query statistics
K_AXIS = 2  # the length axis of keys and values

# The sparse maps' statistics pass keeps, per query, the maximum of each
# group of this many keys: the threshold of those maxima starts the solver
# (as the solver's warm start does for rows in memory).
_GROUP = 16

# At most this many queries (one block) make a decoding call: the scores of
# their rows against every key are held (linear in the keys), so that the
# sparse maps solve their threshold in memory after one pass over the keys
# instead of one sweep per solver step.
DECODE_QUERIES = 16


class Config(NamedTuple):
  """Static description of one call (hashable: a ``custom_vjp`` argument)."""

  q_len: int
  kv_len: int
  block_q: int
  block_k: int
  causal: bool
  dropout_rate: float  # 0.0: no dropout
  broadcast_dropout: bool
  precision: Any
  n_iter: int | None = (
    None  # most row-sum sweeps of the solver (None: its default)
  )
  window: tuple[int, int] | None = None  # (left, right), tokens.band
  cap: float | None = None  # logits soft cap (None: none)

  @property
  def group(self) -> int:
    """Keys per group maximum in the statistics pass (divides block_k)."""
    return math.gcd(self.block_k, _GROUP)

  @property
  def n_q(self) -> int:
    return -(-self.q_len // self.block_q)

  @property
  def n_k(self) -> int:
    return -(-self.kv_len // self.block_k)

  @property
  def decoding(self) -> bool:
    """A few queries against many keys: their rows fit in memory whole."""
    return (
      self.n_q == 1 and self.q_len <= DECODE_QUERIES and (not self.dropout_rate)
    )


class Operands(NamedTuple):
  """The arrays of one call, in the internal layout (module docstring).

  ``tokens`` are the per-token arrays (:class:`tokens.Tokens`) with the
  batch flattened and the ids padded to whole blocks: ``[B, Lq]``,
  ``[B, Lk]``, ``[B]``, ``[B]``.
  """

  q: jax.Array
  k: jax.Array
  v: jax.Array
  bias: jax.Array | None
  mask: jax.Array | None
  rng: jax.Array | None
  tokens: tokens_lib.Tokens | None = None

  @property
  def refs(self) -> tuple[Any, ...]:
    """The operands that type a loop carry (``_core.filled``), but ``q``."""
    return (self.k, self.v, self.bias, self.mask) + tuple(self.tokens or ())


# ---------------------------------------------------------------------------
# Blocks and rows.


def block(
  x: jax.Array, index: jax.Array | int, size: int, axis: int
) -> jax.Array:
  return lax.dynamic_slice_in_dim(x, index * size, size, axis)


def put_block(
  x: jax.Array, update: jax.Array, index: jax.Array | int, size: int, axis: int
) -> jax.Array:
  return lax.dynamic_update_slice_in_dim(x, update, index * size, axis)


def rows(x: jax.Array, i: jax.Array | int, cfg: Config) -> jax.Array:
  """Query block i of ``[B, Hkv, G, Lq, ...]`` as ``[B, Hkv, G*bq, ...]``."""
  x = block(x, i, cfg.block_q, Q_AXIS)
  return x.reshape(x.shape[:2] + (-1,) + x.shape[4:])


def put_rows(
  x: jax.Array, rows: jax.Array, i: jax.Array | int, cfg: Config
) -> jax.Array:
  rows = rows.reshape(x.shape[:3] + (cfg.block_q,) + x.shape[4:])
  return put_block(x, rows, i, cfg.block_q, Q_AXIS)


def _pair_starts(
  x: jax.Array, i: jax.Array | int, j: jax.Array | int, cfg: Config
) -> tuple[Any, ...]:
  """Start indices of block pair (i, j) in a 5-d bias/mask (or its grad)."""
  q0 = i * cfg.block_q if x.shape[3] > 1 else 0
  k0 = j * cfg.block_k if x.shape[4] > 1 else 0
  # One index type (the loops' counters are int64 under jax_enable_x64).
  return tuple(jnp.asarray(n, jnp.int32) for n in (0, 0, 0, q0, k0))


def _pair_block(
  x: jax.Array, i: jax.Array | int, j: jax.Array | int, cfg: Config
) -> jax.Array:
  """Block pair (i, j) of a bias or mask; broadcast axes stay size 1."""
  sizes = x.shape[:3] + (
    cfg.block_q if x.shape[3] > 1 else 1,
    cfg.block_k if x.shape[4] > 1 else 1,
  )
  return lax.dynamic_slice(x, _pair_starts(x, i, j, cfg), sizes)


def pair_rows(
  x: jax.Array, i: jax.Array | int, j: jax.Array | int, cfg: Config, group: int
) -> jax.Array:
  """Block pair (i, j) of a bias or mask as ``[B|1, Hkv|1, rows|1, bk|1]``."""
  x = _pair_block(x, i, j, cfg)
  if x.shape[2] == x.shape[3] == 1:
    return x.reshape(x.shape[:2] + (1, x.shape[4]))
  x = jnp.broadcast_to(x, x.shape[:2] + (group, cfg.block_q, x.shape[4]))
  return x.reshape(x.shape[:2] + (-1, x.shape[4]))


def add_pair_block(
  acc: jax.Array,
  update: jax.Array,
  i: jax.Array | int,
  j: jax.Array | int,
  cfg: Config,
) -> jax.Array:
  """``acc[block (i, j)] += update`` summed over the axes ``acc`` broadcasts.

  ``update`` is in rows form, ``[B, Hkv, rows, bk]``.
  """
  update = update.reshape(
    update.shape[:2] + (-1, cfg.block_q, update.shape[-1])
  )
  axes = tuple(a for a in range(5) if acc.shape[a] == 1 < update.shape[a])
  update = jnp.sum(update, axis=axes, keepdims=True)
  starts = _pair_starts(acc, i, j, cfg)
  current = lax.dynamic_slice(acc, starts, update.shape)
  return lax.dynamic_update_slice(acc, current + update, starts)


# ---------------------------------------------------------------------------
# The block plan.


class Plan(NamedTuple):
  """Which block pairs are visited, and how; static, from the shapes alone.

  ``kind[i, j]`` is :data:`SKIP` for a pair no query of block ``i`` may see
  a key of (above the causal diagonal, outside the window), :data:`CLEAN`
  for a pair every query sees every key of (no positional mask needed), and
  :data:`PARTIAL` for the rest (the causal diagonal, the window's edges,
  padded keys), which take the positional mask. The sweeps read the pairs
  as lists: query block ``i`` visits the key blocks
  ``by_query[kind][i, :count]`` and key block ``j`` the query blocks
  ``by_key[kind][j, :count]``, in increasing order.
  """

  kind: np.ndarray  # [n_q, n_k]
  by_query: dict[int, tuple[np.ndarray, np.ndarray]]  # kind: (lists, counts)
  by_key: dict[int, tuple[np.ndarray, np.ndarray]]

  @property
  def width(self) -> int:
    """The most key blocks one query block visits (at least 1)."""
    return max(1, int(np.max(np.sum(self.kind != SKIP, axis=1))))


SKIP, PARTIAL, CLEAN = 0, 1, 2


def _lists(kind: np.ndarray, which: int) -> tuple[np.ndarray, np.ndarray]:
  """Per row of ``kind``, the columns equal to ``which``, padded with 0."""
  hit = kind == which
  counts = hit.sum(axis=1)
  lists = np.zeros((kind.shape[0], max(1, counts.max(initial=0))), np.int32)
  for r, row in enumerate(hit):
    cols = np.flatnonzero(row)
    lists[r, : len(cols)] = cols
  return lists, counts.astype(np.int32)


@functools.lru_cache(maxsize=64)
def plan(cfg: Config) -> Plan:
  """The kind of every block pair (:class:`Plan`), from the static band.

  Query ``q`` may see key ``k`` iff ``lo <= k - q <= hi``
  (:func:`tokens.band`: causality and the window). Over a block pair the
  offsets ``k - q`` of its real positions span an interval: the pair is
  skipped when it misses ``[lo, hi]`` and clean when it lies inside and the
  key block holds no padding.
  """
  bq, bk = cfg.block_q, cfg.block_k
  lo, hi = tokens_lib.band(cfg.causal, cfg.window)
  q_first = np.arange(cfg.n_q)[:, None] * bq
  q_last = np.minimum(q_first + bq, cfg.q_len) - 1
  k_first = np.arange(cfg.n_k)[None, :] * bk
  k_last = np.minimum(k_first + bk, cfg.kv_len) - 1
  least, most = k_first - q_last, k_last - q_first  # offsets in the pair
  seen = np.maximum(least, lo) <= np.minimum(most, hi)
  whole = (least >= lo) & (most <= hi) & (k_first + bk <= cfg.kv_len)
  kind = np.where(seen, np.where(whole, CLEAN, PARTIAL), SKIP)
  kind = kind.astype(np.int8)
  return Plan(
    kind,
    {w: _lists(kind, w) for w in (PARTIAL, CLEAN)},
    {w: _lists(kind.T, w) for w in (PARTIAL, CLEAN)},
  )


def pairs_seen(cfg: Config, toks: tokens_lib.Tokens | None) -> Any:
  """``[n_q, n_k]``: the pairs where some query may see some key, or None.

  From the per-token arrays: a pair is needed when its query block holds a
  valid query, its key block a valid key, and the ranges of their segment
  ids meet (ids that do not meet in range are never equal). The batch
  shares the block loops, so a pair is visited when any row needs it.
  """
  if toks is None:
    return None
  bq, bk = cfg.block_q, cfg.block_k
  need = jnp.ones((1, cfg.n_q, cfg.n_k), bool)
  if toks.q_ids is not None:
    q_ids = toks.q_ids.reshape(-1, cfg.n_q, bq)
    kv_ids = toks.kv_ids.reshape(-1, cfg.n_k, bk)
    q_min, q_max = q_ids.min(-1)[:, :, None], q_ids.max(-1)[:, :, None]
    k_min, k_max = kv_ids.min(-1)[:, None, :], kv_ids.max(-1)[:, None, :]
    need = need & (q_min <= k_max) & (k_min <= q_max)
  if toks.q_lengths is not None:
    first = jnp.arange(cfg.n_q) * bq
    need = need & (first < toks.q_lengths[:, None])[:, :, None]
  if toks.kv_lengths is not None:
    first = jnp.arange(cfg.n_k) * bk
    need = need & (first < toks.kv_lengths[:, None])[:, None, :]
  return jnp.any(need, axis=0)


def visited_pairs(cfg: Config, toks: tokens_lib.Tokens | None) -> jax.Array:
  """How many block pairs a sweep over every query block visits."""
  seen = jnp.asarray(plan(cfg).kind != SKIP)
  needed = pairs_seen(cfg, toks)
  return jnp.sum(seen if needed is None else seen & needed)


# ---------------------------------------------------------------------------
# The operands into the internal layout.


def _pairwise(
  x: jax.Array,
  name: str,
  batch: tuple[int, ...],
  heads: int,
  kv_heads: int,
  lengths: tuple[int, int],
  padded: tuple[int, int],
) -> jax.Array:
  """A bias or mask as ``[B|1, Hkv|1, G|1, Lq|1, Lk|1]``, padded to blocks.

  Batch axes that all broadcast stay size 1; otherwise they are broadcast
  and flattened (autodiff sums a bias gradient back to the given shape).
  """
  full = batch + (heads,) + lengths
  try:
    jnp.broadcast_shapes(x.shape, full)
  except ValueError:
    raise ValueError(
      f"`{name}` of shape {x.shape} is not broadcastable to the attention "
      f"scores [batch..., heads, q_length, kv_length] = {full}."
    ) from None
  if x.ndim > len(full):
    raise ValueError(
      f"`{name}` of shape {x.shape} has more dimensions than "
      f"the attention scores {full}."
    )
  x = x.reshape((1,) * (len(full) - x.ndim) + x.shape)
  nb = len(batch)
  if all(n == 1 for n in x.shape[:nb]):
    x = x.reshape((1,) + x.shape[nb:])
  else:
    x = jnp.broadcast_to(x, batch + x.shape[nb:])
    x = x.reshape((math.prod(batch),) + x.shape[nb:])
  split = (kv_heads, heads // kv_heads) if x.shape[1] > 1 else (1, 1)
  x = x.reshape(x.shape[:1] + split + x.shape[2:])
  pads = [(0, 0)] * 3 + [
    (0, p - n if m > 1 else 0) for p, n, m in zip(padded, lengths, x.shape[3:])
  ]
  return jnp.pad(x, pads)


def to_blocks(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  bias: Any,
  mask: jax.Array | None,
  scale: Any,
  cfg: Config,
  compute: Any,
  toks: tokens_lib.Tokens | None = None,
) -> tuple[Any, ...]:
  """The operands in the internal layout (module docstring), padded.

  ``(q, k, v, bias, mask, tokens)``; padded ids repeat the last id, so that
  a block's range of ids is that of its real tokens.
  """
  batch = query.shape[:-3]
  n = math.prod(batch)
  q_len, heads, depth = query.shape[-3:]
  kv_len, kv_heads = key.shape[-3:-1]
  q_pad, k_pad = cfg.n_q * cfg.block_q, cfg.n_k * cfg.block_k
  q = query.astype(compute).reshape(
    (n, q_len, kv_heads, heads // kv_heads, depth)
  )
  q = jnp.transpose(q, (0, 2, 3, 1, 4)) * jnp.asarray(scale, compute)
  q = jnp.pad(q, [(0, 0)] * 3 + [(0, q_pad - q_len), (0, 0)])
  kv = []
  for x in (key, value):
    x = x.astype(compute).reshape((n,) + x.shape[-3:])
    x = jnp.transpose(x, (0, 2, 1, 3))
    kv.append(jnp.pad(x, [(0, 0), (0, 0), (0, k_pad - kv_len), (0, 0)]))
  geometry = (batch, heads, kv_heads, (q_len, kv_len), (q_pad, k_pad))
  if bias is not None:
    bias = _pairwise(jnp.asarray(bias).astype(compute), "bias", *geometry)
  if mask is not None:
    mask = _pairwise(mask, "mask", *geometry)
  return q, kv[0], kv[1], bias, mask, _token_blocks(toks, n, (q_pad, k_pad))


def _token_blocks(
  toks: tokens_lib.Tokens | None, n: int, padded: tuple[int, int]
) -> tokens_lib.Tokens | None:
  """Per-token arrays with the batch flattened and the ids padded."""
  if toks is None:
    return None
  out = []
  for x, size in zip(toks, padded + (None, None)):
    if x is not None:
      x = x.reshape((n,) + x.shape[x.ndim - (size is not None) :])
      if size is not None and size > x.shape[1]:
        # The last id repeated (not jnp.pad's "edge", which also slices
        # the batch axis: explicit sharding refuses that on a split batch).
        last = jnp.repeat(x[:, -1:], size - x.shape[1], axis=1)
        x = jnp.concatenate([x, last], axis=1)
    out.append(x)
  return tokens_lib.Tokens(*out)
