r"""Block-wise attention: the score matrix is never held, forward or backward.

:func:`blockwise_attention` (re-exported as
``softjax.attention.blockwise_attention``) computes what
``softjax.attention.dot_product_attention`` computes, one block of
``block_q`` queries by ``block_k`` keys at a time, so that its memory grows
linearly in the sequence length.

Internal layout. The wrapper (:func:`_to_blocks`) brings every operand into
one layout and the loops below see nothing else: queries
``[B, Hkv, G, Lq, D]`` (``B`` the flattened batch dimensions, ``Hkv`` the
key/value heads, ``G`` the query heads sharing one of them), keys and values
``[B, Hkv, Lk, D]``, bias and mask ``[B|1, Hkv|1, G|1, Lq|1, Lk|1]`` (each axis
either whole or broadcast), lengths padded to whole blocks. The query is
already multiplied by ``scale``; autodiff outside the ``custom_vjp`` maps the
gradients back through the scaling, padding and transposes. Within a block
pair the ``G`` heads of a group and the block's queries form one axis of
rows (``[B, Hkv, G * block_q, ...]``, :func:`_rows`), so grouped heads share
each key block in one matmul and per-query statistics are ``[B, Hkv, rows]``.

The passes, one function each:

* :func:`_softmax_pass` (α = 1): for each query block, one sweep over its key
  blocks with a running maximum, sum and output (online softmax). Saves the
  per-query statistic ``lse`` (log-sum-exp of the row; ``+inf`` for a query
  whose keys are all masked, so that its recomputed weights are 0).
* :func:`_backward_pass`: for each key block, one sweep over the query
  blocks that see it; recomputes the scores once per block pair and gives
  dQ, dK, dV and the bias cotangent in that one sweep. It needs the weights
  ``p`` and the slopes ``s`` of a block and the per-query ``delta``, all from
  the normaliser's rule (:class:`_Softmax`), never from ``p`` hard-coded.

Both sweeps go through :func:`_for_key_blocks` / :func:`_for_query_blocks`,
which visit only the block pairs :func:`_plan` keeps (causal blocks above
the diagonal are skipped) and apply the positional mask (causal diagonal,
padded keys) only on the blocks that need it.

The sparse members of the entmax family (α > 1, or an array α) are a
second rule, :class:`_Entmax`, next to :class:`_Softmax`, and their forward
is :func:`_entmax_pass`: per query block, a sweep keeping the maximum of
each group of keys (:func:`_maxima_sweep`); the threshold of those maxima,
solved in memory, starts ``softjax._core.find_threshold``, whose every
``row_sum(t)`` is a :func:`_for_key_blocks` sweep summing
``family.map(z - shift, t)`` (:func:`_solve_block`); then an output sweep
accumulating ``Σ p v``, ``Σ s v`` and ``Σ s`` (:func:`_output_sweep`). The
backward pass is the same as softmax's: ``s = p^(2-α)`` and
``delta = dO · (Σ s v) / Σ s`` come from the rule (Gonçalves et al. 2025;
for softmax ``s = p``, ``Σ s = 1`` and ``Σ s v / Σ s`` is the output
itself). Key blocks in which no query of the block has a positive weight
(known from the group maxima once a threshold is) are skipped by the
solver's sweeps, the output sweep and the backward pass (:func:`_loop`).

References:
  T. Dao, D. Y. Fu, S. Ermon, A. Rudra, C. Ré. "FlashAttention: Fast and
  Memory-Efficient Exact Attention with IO-Awareness". NeurIPS 2022.
  M. N. Rabe, C. Staats. "Self-attention Does Not Need O(n²) Memory".
  arXiv:2112.05682, 2021.
  N. Gonçalves, M. Treviso, A. F. T. Martins. "AdaSplash: Adaptive Sparse
  Flash Attention". ICML 2025.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
import math
import numbers
from typing import Any
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from softjax import _core
from softjax._attention import steps
from softjax._core import Family

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
_QK = "bhrd,bhkd->bhrk"
_PV = "bhrk,bhkd->bhrd"
_TRANSPOSED = "bhrd,bhrk->bhdk"

_Q_AXIS = 3  # the length axis of queries, outputs and per-query statistics
_K_AXIS = 2  # the length axis of keys and values

# The sparse maps' statistics pass keeps, per query, the maximum of each
# group of this many keys: the threshold of those maxima starts the solver
# (as _threshold's warm start does for rows in memory).
_GROUP = 16


class _Config(NamedTuple):
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


class _Operands(NamedTuple):
  """The arrays of one call, in the internal layout (module docstring)."""

  q: jax.Array
  k: jax.Array
  v: jax.Array
  bias: jax.Array | None
  mask: jax.Array | None
  rng: jax.Array | None


class _SoftmaxRows(NamedTuple):
  """Per-query statistics the softmax forward saves: ``[B, Hkv, G, Lq]``."""

  lse: jax.Array


class _Softmax:
  """The α = 1 member: ``p = exp(z - lse)``, slopes ``s = p``, ``Σ s = 1``.

  The backward pass asks a rule for its weights, slopes and ``delta`` only,
  so that every member uses the same pass.
  """

  learnable = False

  @staticmethod
  def weights(z: jax.Array, rows: _SoftmaxRows) -> jax.Array:
    """Normalised weights of a block from its scores and the row statistics.

    ``lse = +inf`` (every key masked) gives 0 for every score, ``-inf``
    (masked) scores give 0: no NaN either way.
    """
    return jnp.exp(z - rows.lse[..., None])

  @staticmethod
  def slopes(p: jax.Array) -> jax.Array:
    """``s = ∂p/∂z`` up to the row coupling: ``p^(2-α)``, here ``p``."""
    return p

  @staticmethod
  def delta(dout: jax.Array, out: jax.Array, rows: _SoftmaxRows) -> jax.Array:
    """``<s, dP> / Σ s = dO · (Σ s v) / Σ s``; for softmax ``dO · out``."""
    del rows  # Σ s v / Σ s is the output itself.
    return jnp.sum(dout * out, axis=-1)


_SOFTMAX = _Softmax()


class _EntmaxRows(NamedTuple):
  """Per-query statistics of the sparse forward: ``[B, Hkv, G, Lq]``.

  With them a block's weights are recomputed exactly, and ``delta`` needs no
  second pass over the keys.
  """

  shift: jax.Array  # the row maximum of the scores (0 if every key masked)
  t: jax.Array  # the threshold of the shifted row (Family.map's t)
  total: jax.Array  # Σ_k map(z_k - shift, t): 1 to rounding, divides p
  sv: jax.Array | None  # Σ s v / Σ s, [..., v_depth] (with dropout's mask)


class _Entmax:
  """A sparse member: ``p = family.map(z - shift, t) / total``.

  ``family`` has a static ε, or an array ε of shape
  ``[1, Hkv, G * block_q, 1]``, one per row of a query block (the rows of
  one head share it).
  """

  def __init__(self, family: Family):
    self.family = family

  @property
  def learnable(self) -> bool:
    return self.family.learnable

  def weights(self, z: jax.Array, rows: _EntmaxRows) -> jax.Array:
    """Normalised weights; 0 for masked scores and all-masked rows."""
    p = self.family.map(z - rows.shift[..., None], rows.t[..., None])
    return p * (1.0 / _core.safe_total(rows.total))[..., None]

  def slopes(self, p: jax.Array) -> jax.Array:
    """``s = p^(2-α)`` on the support, 0 off it."""
    return self.family.slopes(p)

  def param_sensitivity(self, p: jax.Array) -> jax.Array:
    """``r = ∂p/∂ε`` at fixed ``t`` (:meth:`Family.param_sensitivity`)."""
    return self.family.param_sensitivity(p)

  @staticmethod
  def delta(dout: jax.Array, out: jax.Array, rows: _EntmaxRows) -> jax.Array:
    """``<s, dP> / Σ s = dO · (Σ s v / Σ s)`` from the saved ``sv``."""
    del out
    return jnp.sum(dout * rows.sv, axis=-1)


def _rule(family: Family, cfg: _Config) -> _Softmax | _Entmax:
  """The rule of a member; an array ε ``[1, Hkv, G, 1]`` spread over rows."""
  if family.is_softmax:
    return _SOFTMAX
  if not family.learnable:
    return _Entmax(family)
  eps = jnp.broadcast_to(family.eps, family.eps.shape[:3] + (cfg.block_q,))
  return _Entmax(Family(eps.reshape(eps.shape[:2] + (-1, 1))))


# ---------------------------------------------------------------------------
# Blocks and the block plan.


def _block(
  x: jax.Array, index: jax.Array | int, size: int, axis: int
) -> jax.Array:
  return lax.dynamic_slice_in_dim(x, index * size, size, axis)


def _put_block(
  x: jax.Array, update: jax.Array, index: jax.Array | int, size: int, axis: int
) -> jax.Array:
  return lax.dynamic_update_slice_in_dim(x, update, index * size, axis)


def _rows(x: jax.Array, i: jax.Array | int, cfg: _Config) -> jax.Array:
  """Query block i of ``[B, Hkv, G, Lq, ...]`` as ``[B, Hkv, G*bq, ...]``."""
  x = _block(x, i, cfg.block_q, _Q_AXIS)
  return x.reshape(x.shape[:2] + (-1,) + x.shape[4:])


def _put_rows(
  x: jax.Array, rows: jax.Array, i: jax.Array | int, cfg: _Config
) -> jax.Array:
  rows = rows.reshape(x.shape[:3] + (cfg.block_q,) + x.shape[4:])
  return _put_block(x, rows, i, cfg.block_q, _Q_AXIS)


def _pair_starts(
  x: jax.Array, i: jax.Array | int, j: jax.Array | int, cfg: _Config
) -> tuple[Any, ...]:
  """Start indices of block pair (i, j) in a 5-d bias/mask (or its grad)."""
  q0 = i * cfg.block_q if x.shape[3] > 1 else 0
  k0 = j * cfg.block_k if x.shape[4] > 1 else 0
  # One index type (the loops' counters are int64 under jax_enable_x64).
  return tuple(jnp.asarray(n, jnp.int32) for n in (0, 0, 0, q0, k0))


def _pair_block(
  x: jax.Array, i: jax.Array | int, j: jax.Array | int, cfg: _Config
) -> jax.Array:
  """Block pair (i, j) of a bias or mask; broadcast axes stay size 1."""
  sizes = x.shape[:3] + (
    cfg.block_q if x.shape[3] > 1 else 1,
    cfg.block_k if x.shape[4] > 1 else 1,
  )
  return lax.dynamic_slice(x, _pair_starts(x, i, j, cfg), sizes)


def _pair_rows(
  x: jax.Array, i: jax.Array | int, j: jax.Array | int, cfg: _Config, group: int
) -> jax.Array:
  """Block pair (i, j) of a bias or mask as ``[B|1, Hkv|1, rows|1, bk|1]``."""
  x = _pair_block(x, i, j, cfg)
  if x.shape[2] == x.shape[3] == 1:
    return x.reshape(x.shape[:2] + (1, x.shape[4]))
  x = jnp.broadcast_to(x, x.shape[:2] + (group, cfg.block_q, x.shape[4]))
  return x.reshape(x.shape[:2] + (-1, x.shape[4]))


def _add_pair_block(
  acc: jax.Array,
  update: jax.Array,
  i: jax.Array | int,
  j: jax.Array | int,
  cfg: _Config,
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


class _Plan(NamedTuple):
  """Which block pairs are visited; static, from the shapes alone.

  Query block ``i`` visits key blocks ``[0, clean_end[i])`` without a
  positional mask and ``[clean_end[i], end[i])`` with it (the causal
  diagonal, padded keys). Key block ``j`` is visited by query blocks
  ``[start[j], clean_start[j])`` with the positional mask and
  ``[clean_start[j], n_q)`` without. Blocks above the causal diagonal are in
  neither range.
  """

  clean_end: np.ndarray
  end: np.ndarray
  start: np.ndarray
  clean_start: np.ndarray


def _plan(cfg: _Config) -> _Plan:
  bq, bk = cfg.block_q, cfg.block_k
  whole_k = cfg.kv_len // bk  # key blocks without padding
  i = np.arange(cfg.n_q)
  if cfg.causal:
    # Query a sees key b iff b <= a (top-left aligned, as flax.nnx).
    last_q = np.minimum((i + 1) * bq, cfg.q_len) - 1
    end = np.minimum(cfg.n_k, last_q // bk + 1)
    clean_end = np.minimum(np.minimum((i * bq + 1) // bk, whole_k), end)
  else:
    end = np.full(cfg.n_q, cfg.n_k)
    clean_end = np.full(cfg.n_q, whole_k)
  # Both are nondecreasing in i, so the query blocks that see key block j
  # (or see it whole) form a suffix; its start is a count.
  j = np.arange(cfg.n_k)[:, None]
  start = np.sum(end[None, :] <= j, axis=1)
  clean_start = np.maximum(np.sum(clean_end[None, :] <= j, axis=1), start)
  as_int = lambda a: np.asarray(a, np.int32)
  return _Plan(
    as_int(clean_end), as_int(end), as_int(start), as_int(clean_start)
  )


def _scores(
  cfg: _Config,
  ops: _Operands,
  q_i: jax.Array,
  k_j: jax.Array,
  i: jax.Array | int,
  j: jax.Array | int,
  positional: bool,
) -> jax.Array:
  """Scores of block pair (i, j), ``-inf`` where masked: ``[B,Hkv,rows,bk]``.

  ``q_i`` is in rows form (:func:`_rows`). ``positional`` adds the causal
  and padded-key mask; the plan asks for it only on the blocks that
  straddle the diagonal or hold padding, so the others pay no per-entry
  select.
  """
  group = ops.q.shape[2]
  z = jnp.einsum(_QK, q_i, k_j, precision=cfg.precision)
  if ops.bias is not None:
    z = z + _pair_rows(ops.bias, i, j, cfg, group)
  # +inf scores become the largest float: a row holding them shares its
  # mass among them and gives every finite score exp(finite - max) = 0, the
  # limit the dense normalisers give, instead of inf - inf = NaN. One
  # vectorised `min` per entry (no select); NaN stays NaN.
  z = jnp.minimum(z, jnp.finfo(z.dtype).max)
  keep = None if ops.mask is None else _pair_rows(ops.mask, i, j, cfg, group)
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


def _dropout_scale(
  cfg: _Config,
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


def _filled(
  shape: tuple[int, ...], value: float, like: jax.Array, refs: tuple[Any, ...]
) -> jax.Array:
  """An accumulator of ``shape`` filled with ``value``, typed for sharding.

  ``like`` is an operand whose leading axes (batch, kv heads) ``shape``
  shares: the result keeps its sharding along them (explicit sharding needs the
  initial value of a loop carry sharded like its updates). Inside
  ``shard_map`` it also varies over every mesh axis one of ``refs`` varies
  over, as the accumulated updates do: a scalar zero taken from each adds
  that type. Elsewhere this is ``jnp.full``.
  """
  dtype = like.dtype
  if shape == like.shape:
    x = jnp.zeros_like(like) + jnp.asarray(value, dtype)
  else:  # shares the batch and kv-head axes
    base = like[:, :, *(slice(0, 1),) * (like.ndim - 2)]
    base = base.reshape(base.shape[:2] + (1,) * (len(shape) - 2))
    x = jnp.zeros_like(base) + jnp.asarray(value, dtype)
  for ref in refs:
    if ref is not None:
      x = x + jnp.zeros_like(ref, dtype=dtype, shape=())
  return jnp.broadcast_to(x, shape)


# ---------------------------------------------------------------------------
# The two sweeps every pass is made of.


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


def _for_key_blocks(
  cfg: _Config,
  ops: _Operands,
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
  plan = _plan(cfg)
  q_i = _rows(ops.q, i, cfg)

  def visit(positional: bool) -> Callable[[jax.Array, Any], Any]:
    def step(j: jax.Array, c: Any) -> Any:
      k_j = _block(ops.k, j, cfg.block_k, _K_AXIS)
      return body(j, _scores(cfg, ops, q_i, k_j, i, j, positional), c)

    return step

  clean_end = jnp.asarray(plan.clean_end)[i]
  carry = _loop(0, clean_end, live, visit(False), carry)
  return _loop(clean_end, jnp.asarray(plan.end)[i], live, visit(True), carry)


def _for_query_blocks(
  cfg: _Config,
  ops: _Operands,
  j: jax.Array,
  body: Callable[[jax.Array, jax.Array, Any], Any],
  carry: Any,
  live: jax.Array | None = None,
) -> Any:
  """``carry = body(i, z, carry)`` over the query blocks that see key block j.

  The same block pairs, with the same scores and masks, as
  :func:`_for_key_blocks` visits, so the backward recomputes exactly the
  forward's weights; ``live`` (``[n_q]``) skips query blocks likewise.
  """
  plan = _plan(cfg)
  k_j = _block(ops.k, j, cfg.block_k, _K_AXIS)

  def visit(positional: bool) -> Callable[[jax.Array, Any], Any]:
    def step(i: jax.Array, c: Any) -> Any:
      q_i = _rows(ops.q, i, cfg)
      return body(i, _scores(cfg, ops, q_i, k_j, i, j, positional), c)

    return step

  clean_start = jnp.asarray(plan.clean_start)[j]
  start = jnp.asarray(plan.start)[j]
  carry = _loop(start, clean_start, live, visit(True), carry)
  return _loop(clean_start, cfg.n_q, live, visit(False), carry)


# ---------------------------------------------------------------------------
# The passes.


def _softmax_pass(
  cfg: _Config, ops: _Operands
) -> tuple[jax.Array, _SoftmaxRows]:
  """Forward for α = 1: the output and ``lse``, one key sweep per q block.

  Online softmax: the running maximum ``m``, sum ``total`` and output ``o`` of
  a query block are rescaled by ``exp(m_old - m_new)`` as each key block
  arrives. A query that has seen only masked keys keeps ``m = -inf`` and is
  shifted by 0 instead, so its weights stay 0, not NaN.
  """
  batch, kv_heads, group, q_pad, _ = ops.q.shape
  rows_shape = (batch, kv_heads, group * cfg.block_q)
  v_depth = ops.v.shape[-1]
  filled = lambda shape, value: _filled(shape, value, ops.q, ops[1:-1])

  def query_block(
    i: jax.Array, bufs: tuple[jax.Array, jax.Array]
  ) -> tuple[jax.Array, jax.Array]:
    def body(j, z, carry):
      m, total, o = carry
      m_new = jnp.maximum(m, jnp.max(z, axis=-1))
      shift = jnp.where(m_new == -jnp.inf, 0.0, m_new)
      p = jnp.exp(z - shift[..., None])
      rescale = jnp.exp(m - shift)
      total = total * rescale + jnp.sum(p, axis=-1)
      if cfg.dropout_rate:
        p = p * _dropout_scale(cfg, ops.rng, i, j, p.shape, p.dtype)
      v_j = _block(ops.v, j, cfg.block_k, _K_AXIS)
      pv = jnp.einsum(_PV, p, v_j, precision=cfg.precision)
      return m_new, total, o * rescale[..., None] + pv

    init = (
      filled(rows_shape, -jnp.inf),
      filled(rows_shape, 0.0),
      filled(rows_shape + (v_depth,), 0.0),
    )
    m, total, o = _for_key_blocks(cfg, ops, i, body, init)
    empty = total == 0  # every key of the query masked
    out_i = o / jnp.where(empty, 1.0, total)[..., None]
    lse_i = jnp.where(empty, jnp.inf, m + jnp.log(total))
    out, lse = bufs
    return _put_rows(out, out_i, i, cfg), _put_rows(lse, lse_i, i, cfg)

  init = (
    filled((batch, kv_heads, group, q_pad, v_depth), 0.0),
    filled((batch, kv_heads, group, q_pad), 0.0),
  )
  out, lse = lax.fori_loop(0, cfg.n_q, query_block, init)
  return out, _SoftmaxRows(lse)


def _maxima_sweep(cfg: _Config, ops: _Operands, i: jax.Array) -> jax.Array:
  """Group maxima of query block i: ``[B, Hkv, rows, n_k * block_k / group]``.

  The largest score of each group of ``cfg.group`` keys (``-inf`` where the
  group is masked or never visited). Their maximum is the row's, and their
  threshold is a lower bound of the row's: dropping entries lowers the row
  sum at every ``t``.
  """
  per_block = cfg.block_k // cfg.group
  batch, kv_heads, group = ops.q.shape[:3]
  shape = (batch, kv_heads, group * cfg.block_q, cfg.n_k * per_block)

  def body(j, z, maxima):
    top = jnp.max(z.reshape(z.shape[:3] + (per_block, cfg.group)), axis=-1)
    return lax.dynamic_update_slice_in_dim(maxima, top, j * per_block, 3)

  init = _filled(shape, -jnp.inf, ops.q, ops[1:-1])
  return _for_key_blocks(cfg, ops, i, body, init)


def _live_blocks(
  cfg: _Config,
  family: Family,
  maxima: jax.Array,
  shift: jax.Array,
  t: jax.Array,
) -> jax.Array:
  """``[n_k]``: whether any row has a positive weight in each key block.

  The map increases with the score, so a key block holds a positive weight
  (at ``t`` or any larger threshold) iff its largest score has one. NaN
  rows keep every block.
  """
  per_block = cfg.block_k // cfg.group
  split = maxima.reshape(maxima.shape[:3] + (cfg.n_k, per_block))
  p = family.map(jnp.max(split, axis=-1) - shift[..., None], t[..., None])
  return jnp.any((p > 0) | jnp.isnan(p), axis=(0, 1, 2))


def _solve_block(
  cfg: _Config, rule: _Entmax, ops: _Operands, i: jax.Array, maxima: jax.Array
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

  live = _live_blocks(cfg, family, maxima, shift, start)

  def row_sum(t: jax.Array) -> jax.Array:
    def body(j, z, total):
      p = family.map(z - shift[..., None], t[..., None])
      return total + jnp.sum(p, axis=-1)

    return _for_key_blocks(cfg, ops, i, body, jnp.zeros_like(t), live)

  t, total = _core.find_threshold(row_sum, row_family, lo, hi, n_iter, start)
  return shift, t, total, _live_blocks(cfg, family, maxima, shift, t)


def _output_sweep(
  cfg: _Config,
  rule: _Entmax,
  ops: _Operands,
  i: jax.Array,
  rows: _EntmaxRows,
  live: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """``(Σ p v, Σ s v / Σ s)`` of query block i (dropout applied to both)."""

  def body(j, z, carry):
    out, sv, s_sum = carry
    p = rule.weights(z, rows)
    s = rule.slopes(p)
    s_sum = s_sum + jnp.sum(s, axis=-1)
    if cfg.dropout_rate:
      drop = _dropout_scale(cfg, ops.rng, i, j, p.shape, p.dtype)
      p, s = p * drop, s * drop
    v_j = _block(ops.v, j, cfg.block_k, _K_AXIS)
    out = out + jnp.einsum(_PV, p, v_j, precision=cfg.precision)
    sv = sv + jnp.einsum(_PV, s, v_j, precision=cfg.precision)
    return out, sv, s_sum

  shape = rows.t.shape + (ops.v.shape[-1],)
  zeros = lambda shape: _filled(shape, 0.0, ops.q, ops[1:-1])
  init = (zeros(shape), zeros(shape), zeros(rows.t.shape))
  out, sv, s_sum = _for_key_blocks(cfg, ops, i, body, init, live)
  return out, sv / _core.safe_total(s_sum)[..., None]


def _entmax_pass(
  cfg: _Config, rule: _Entmax, ops: _Operands
) -> tuple[jax.Array, _EntmaxRows, jax.Array]:
  """Forward of a sparse member: output, per-query statistics, live blocks.

  Per query block: the group maxima (one sweep), the threshold (a few
  sweeps, :func:`_solve_block`), then the output (one sweep). ``live``
  (``[n_q, n_k]``) marks the block pairs holding a positive weight.
  """
  batch, kv_heads, group, q_pad, _ = ops.q.shape
  stats = (batch, kv_heads, group, q_pad)
  vectors = stats + (ops.v.shape[-1],)
  zeros = lambda shape: _filled(shape, 0.0, ops.q, ops[1:-1])

  def query_block(i, bufs):
    maxima = _maxima_sweep(cfg, ops, i)
    shift, t, total, live_i = _solve_block(cfg, rule, ops, i, maxima)
    rows = _EntmaxRows(shift, t, total, None)
    out, sv = _output_sweep(cfg, rule, ops, i, rows, live_i)
    new = (out, rows._replace(sv=sv))
    put = lambda buf, x: _put_rows(buf, x, i, cfg)
    out_buf, rows_buf, live = bufs
    return jax.tree.map(put, (out_buf, rows_buf), new) + (
      live.at[i].set(live_i),
    )

  # Typed like the flags computed from the operands (see _filled).
  live = jnp.zeros((cfg.n_q, cfg.n_k), bool)
  for ref in ops[:-1]:
    if ref is not None:
      live = live | jnp.zeros_like(ref, dtype=bool, shape=())
  rows = _EntmaxRows(*(zeros(stats),) * 3, zeros(vectors))
  return lax.fori_loop(0, cfg.n_q, query_block, (zeros(vectors), rows, live))


def _pair_grads(
  cfg: _Config,
  rule: _Softmax | _Entmax,
  ops: _Operands,
  at: tuple[jax.Array, jax.Array],
  z: jax.Array,
  rows_i: Any,
  do_i: jax.Array,
  delta_i: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """Block pair ``at = (i, j)``: ``(p, ds, dε)`` from its scores ``z``.

  ``p`` are the weights (dropout applied) for dV, ``ds = s (dP - delta)``
  the cotangent of the scores, and ``dε`` the rows' part of an array ε's
  cotangent (None unless learnable): ``dp/dε = r - s Σr / Σs`` at the root
  (``r`` = :meth:`Family.param_sensitivity`), so it is
  ``Σ_k r_k (dP_k - delta)``.
  """
  i, j = at
  p = rule.weights(z, rows_i)
  s = rule.slopes(p)
  v_j = _block(ops.v, j, cfg.block_k, _K_AXIS)
  dp = jnp.einsum(_QK, do_i, v_j, precision=cfg.precision)
  if cfg.dropout_rate:
    drop = _dropout_scale(cfg, ops.rng, i, j, p.shape, p.dtype)
    dp = dp * drop
  g = dp - delta_i[..., None]
  d_eps = None
  if rule.learnable:
    d_eps = jnp.sum(rule.param_sensitivity(p) * g, axis=-1)
  if cfg.dropout_rate:
    p = p * drop
  return p, s * g, d_eps


def _backward_pass(
  cfg: _Config,
  rule: _Softmax | _Entmax,
  ops: _Operands,
  residuals: tuple[jax.Array | None, Any, jax.Array | None],
  dout: jax.Array,
) -> tuple[jax.Array | None, ...]:
  """dQ, dK, dV, dbias and dε by recomputation, one sweep over block pairs.

  Outer loop over key blocks, inner over the query blocks that see them:
  dK and dV of a key block are accumulated locally (transposed, see
  ``_TRANSPOSED``), dQ, dbias and dε (per head, ``[B, Hkv, G]``) in the
  carry. Per block pair (:func:`_pair_grads`): ``dV += p^T dO``,
  ``dP = dO V^T``, ``dS = s (dP - delta)``, ``dQ += dS K``,
  ``dK += dS^T Q`` (the scale is applied outside). ``residuals`` are the
  forward's ``(out, rows, live)``; block pairs ``live`` marks False are
  skipped.
  """
  out, rows, live = residuals
  delta = rule.delta(dout, out, rows)
  bk = cfg.block_k
  zeros = lambda x: _filled(x.shape, 0.0, x, ops[:-1] + (dout,))
  mm = functools.partial(jnp.einsum, precision=cfg.precision)

  def key_block(j: jax.Array, grads: tuple[Any, ...]) -> tuple[Any, ...]:
    k_j = _block(ops.k, j, bk, _K_AXIS)

    def body(i, z, carry):
      dq, dk_j, dv_j, dbias, d_eps = carry
      rows_i = jax.tree.map(lambda r: _rows(r, i, cfg), rows)
      q_i, do_i = _rows(ops.q, i, cfg), _rows(dout, i, cfg)
      p, ds, d_eps_i = _pair_grads(
        cfg, rule, ops, (i, j), z, rows_i, do_i, _rows(delta, i, cfg)
      )
      dv_j = dv_j + mm(_TRANSPOSED, do_i, p)
      dk_j = dk_j + mm(_TRANSPOSED, q_i, ds)
      dq = _put_rows(dq, _rows(dq, i, cfg) + mm(_PV, ds, k_j), i, cfg)
      if dbias is not None:
        dbias = _add_pair_block(dbias, ds, i, j, cfg)
      if d_eps is not None:
        per_head = d_eps_i.reshape(d_eps.shape + (cfg.block_q,))
        d_eps = d_eps + jnp.sum(per_head, axis=-1)
      return dq, dk_j, dv_j, dbias, d_eps

    dq, dk, dv, dbias, d_eps = grads
    v_t = jnp.swapaxes(_block(ops.v, j, bk, _K_AXIS), -1, -2)
    init = (dq, zeros(jnp.swapaxes(k_j, -1, -2)), zeros(v_t), dbias, d_eps)
    live_j = None if live is None else live[:, j]
    dq, dk_j, dv_j, dbias, d_eps = _for_query_blocks(
      cfg, ops, j, body, init, live_j
    )
    dk = _put_block(dk, jnp.swapaxes(dk_j, -1, -2), j, bk, _K_AXIS)
    dv = _put_block(dv, jnp.swapaxes(dv_j, -1, -2), j, bk, _K_AXIS)
    return dq, dk, dv, dbias, d_eps

  d_eps = zeros(ops.q[..., 0, 0]) if rule.learnable else None
  bias = None if ops.bias is None else zeros(ops.bias)
  init = (zeros(ops.q), zeros(ops.k), zeros(ops.v), bias, d_eps)
  return lax.fori_loop(0, cfg.n_k, key_block, init)


def _forward(
  cfg: _Config, rule: _Softmax | _Entmax, ops: _Operands
) -> tuple[jax.Array, Any]:
  """``(out, rows, live)``: the output and what the backward pass needs.

  ``rows`` are the per-query statistics; ``live`` (``[n_q, n_k]``, None for
  softmax) marks the block pairs that hold a positive weight.
  """
  if rule is _SOFTMAX:
    return _softmax_pass(cfg, ops) + (None,)
  return _entmax_pass(cfg, rule, ops)


def _attention(
  cfg: _Config,
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  bias: jax.Array | None,
  mask: jax.Array | None,
  rng: jax.Array | None,
  family: Family,
) -> jax.Array:
  ops = _Operands(q, k, v, bias, mask, rng)
  return _forward(cfg, _rule(family, cfg), ops)[0]


def _attention_fwd(cfg, q, k, v, bias, mask, rng, family):
  ops = _Operands(q, k, v, bias, mask, rng)
  rule = _rule(family, cfg)
  out, rows, live = _forward(cfg, rule, ops)
  # Softmax's delta is dO · out; the sparse members' comes from `rows`.
  kept = (out if rule is _SOFTMAX else None, rows, live)
  return out, (ops, kept, family)


def _attention_bwd(cfg, residuals, dout):
  ops, kept, family = residuals
  rule = _rule(family, cfg)
  *grads, d_eps = _backward_pass(cfg, rule, ops, kept, dout)
  # Inside shard_map an operand replicated over a mesh axis (a bias shared
  # by the head shards, an α) gets the sum of the shards' cotangents.
  grads = tuple(
    None if g is None else _core.match_vma(g, x) for g, x in zip(grads, ops)
  )
  d_family = None
  if d_eps is not None:
    d_family = Family(_core.param_cotangent(d_eps[..., None], family.eps))
  return grads + (None, None, d_family)


_attention = jax.custom_vjp(_attention, nondiff_argnums=(0,))
_attention.defvjp(_attention_fwd, _attention_bwd)


# ---------------------------------------------------------------------------
# The public function and its argument handling.


def _block_size(length: int, requested: int | None, default: int) -> int:
  """``requested`` (at most the length), or a default that pads little.

  The default splits the length into as few blocks of at most ``default``
  as possible, of equal size rounded up to a multiple of 8.
  """
  if requested is not None:
    return min(requested, length)
  if length <= default:
    return length
  n = -(-length // default)
  return -(-length // (8 * n)) * 8


def _check_options(
  block_q: Any,
  block_k: Any,
  n_iter: Any,
  dropout_rate: Any,
  module: Any,
  einsums: tuple[Any, ...],
) -> None:
  """Errors for the arguments that need no shapes (trace time)."""
  for name, value in (
    ("block_q", block_q),
    ("block_k", block_k),
    ("n_iter", n_iter),
  ):
    if value is not None and (
      isinstance(value, bool)
      or not isinstance(value, numbers.Integral)
      or value < 1
    ):
      raise ValueError(
        f"`{name}` must be a positive integer or None, got {value!r}."
      )
  try:
    rate = float(dropout_rate)
  except (TypeError, jax.errors.ConcretizationTypeError):
    raise TypeError(
      "`dropout_rate` must be a Python float (it decides the "
      "shape of the computation), got a traced value."
    ) from None
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"`dropout_rate` must be in [0, 1), got {dropout_rate}.")
  if module is not None:
    raise ValueError(
      "blockwise_attention never forms the attention weights, so it "
      "cannot sow them into `module` (Flax passes `module` when called "
      "with sow_weights=True). Call the module with sow_weights=False, or "
      "use softjax.attention.dot_product_attention to inspect weights."
    )
  if any(e is not None for e in einsums):
    raise ValueError(
      "`qk_attn_weights_einsum`/`attn_weights_value_einsum` (e.g. AQT "
      "quantisation) are not supported by blockwise_attention; use "
      "softjax.attention.dot_product_attention with them."
    )


def _family(alpha: Any, heads: int, kv_heads: int, dtype: Any) -> Family:
  """α as a :class:`Family`: a static ε, or an array ε ``[1, Hkv, G, 1]``.

  An array α (one per head, broadcastable to ``(heads,)``) is taken through
  :meth:`Family.of_alpha` (ε floored at 0 with its gradient passed
  straight through) and then laid out like the heads of the internal
  layout; autodiff maps its cotangent back to α's shape.
  """
  if isinstance(alpha, (bool, np.bool_)):
    raise TypeError("`alpha` must be a number or an array, not a bool.")
  if isinstance(alpha, numbers.Real):
    _core.check_alpha_values(float(alpha))
    return Family.of_alpha(float(alpha), dtype)
  array = _core.as_float_array(alpha, "alpha")
  try:
    shape = jnp.broadcast_shapes(array.shape, (heads,))
  except ValueError:
    shape = None
  if shape != (heads,):
    raise ValueError(
      f"`alpha` of shape {array.shape} must be a number or an array "
      f"broadcastable to (num_heads,) = ({heads},): one α per head."
    )
  _core.check_alpha_values(alpha)
  eps = Family.of_alpha(array, dtype).eps
  eps = jnp.broadcast_to(eps, (heads,))
  return Family(eps.reshape(1, kv_heads, heads // kv_heads, 1))


def _checked_inputs(
  query: Any, key: Any, value: Any, mask: Any, dtype: Any
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array | None]:
  """Promotion, shape checks and the boolean mask, as the dense path does."""
  query, key, value = steps.promote((query, key, value), dtype)
  steps.check_shapes(query, key, value)
  scores_shape = query.shape[:-3] + (
    query.shape[-2],
    query.shape[-3],
    key.shape[-3],
  )
  mask = steps.where_mask(mask, False, scores_shape)
  return query, key, value, mask


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


def _to_blocks(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  bias: Any,
  mask: jax.Array | None,
  scale: Any,
  cfg: _Config,
  compute: Any,
) -> tuple[jax.Array, ...]:
  """The operands in the internal layout (module docstring), padded."""
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
  return q, kv[0], kv[1], bias, mask


def _config(
  lengths: tuple[int, int],
  blocks: tuple[int | None, int | None, int | None],
  is_causal: bool,
  dropout_rng: Any,
  dropout_rate: float,
  broadcast_dropout: bool,
  deterministic: bool,
  precision: Any,
) -> _Config:
  """The static settings of one call (dropout off when not applied)."""
  dropping = not deterministic and float(dropout_rate) > 0.0
  if dropping and dropout_rng is None:
    raise ValueError(
      "`dropout_rng` is required when `dropout_rate` > 0 and "
      "`deterministic` is False."
    )
  if isinstance(precision, list):
    precision = tuple(precision)  # hashable: part of the static config
  return _Config(
    q_len=lengths[0],
    kv_len=lengths[1],
    block_q=_block_size(lengths[0], blocks[0], BLOCK_Q),
    block_k=_block_size(lengths[1], blocks[1], BLOCK_K),
    causal=bool(is_causal),
    dropout_rate=float(dropout_rate) if dropping else 0.0,
    broadcast_dropout=bool(broadcast_dropout),
    precision=precision,
    n_iter=blocks[2],
  )


def _run(
  cfg: _Config,
  family: Family,
  arrays: tuple[Any, ...],
  scale: Any,
  rng: jax.Array | None,
) -> jax.Array:
  """The checked ``(query, key, value, bias, mask)`` through the passes."""
  query, value = arrays[0], arrays[2]
  out_dtype = query.dtype
  compute = jnp.promote_types(out_dtype, jnp.float32)
  if scale is None:
    scale = 1.0 / math.sqrt(query.shape[-1])
  ops = _to_blocks(*arrays, scale, cfg, compute)
  out = _attention(cfg, *ops, rng, family)
  out = jnp.transpose(out[:, :, :, : cfg.q_len], (0, 3, 1, 2, 4))
  out_shape = query.shape[:-1] + value.shape[-1:]
  return out.reshape(out_shape).astype(out_dtype)


def blockwise_attention(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  bias: jax.Array | None = None,
  mask: jax.Array | None = None,
  *,
  alpha: float | jax.Array = 1.0,
  is_causal: bool = False,
  scale: float | jax.Array | None = None,
  block_q: int | None = None,
  block_k: int | None = None,
  n_iter: int | None = None,
  broadcast_dropout: bool = True,
  dropout_rng: jax.Array | None = None,
  dropout_rate: float = 0.0,
  deterministic: bool = False,
  dtype: Any = None,
  precision: Any = None,
  module: Any = None,
  force_fp32_for_softmax: bool = False,
  qk_attn_weights_einsum: Callable[..., jax.Array] | None = None,
  attn_weights_value_einsum: Callable[..., jax.Array] | None = None,
) -> jax.Array:
  r"""Dot-product attention computed block by block, in linear memory.

  The same result as :func:`softjax.attention.dot_product_attention` with
  ``normalizer`` the α-entmax map of ``alpha`` (softmax for α = 1; to
  float32 rounding, values and gradients), without ever holding the
  ``[heads, q_length, kv_length]`` scores, weights or their gradients: the
  keys are visited ``block_k`` at a time for each block of ``block_q``
  queries. With :math:`Z = c\, Q K^\top + \text{bias}` (:math:`c` the
  ``scale``) the weights of a query row :math:`z` are

  .. math::
    p_k = \big[(\alpha - 1)(z_k - \tau)\big]_+^{1/(\alpha - 1)}
    \quad (\alpha > 1),\qquad p_k = e^{z_k - \mathrm{lse}}
    \quad (\alpha = 1),

  with :math:`\tau` such that :math:`\sum_k p_k = 1`. Softmax takes one
  sweep over the keys with a running maximum and sum (online softmax) and
  saves the log-sum-exp. The sparse maps (α > 1) first find :math:`\tau`
  of each query: one sweep keeps the largest score of every group of 16
  keys, whose threshold (solved in memory) is a lower bound of
  :math:`\tau`, and starts the threshold solver, each of whose steps is one
  more sweep (usually a few); a last sweep accumulates the output and
  :math:`\sum_k s_k v_k / \sum_k s_k` with :math:`s = p^{2-\alpha}` on the
  support. The backward pass recomputes each block's weights from the saved
  per-query statistics (one sweep, no second pass for :math:`\delta`):

  .. math::
    dV = P^\top dO,\quad dZ = S \odot (dO\, V^\top - \delta),\quad
    \delta = dO \cdot \frac{\sum_k s_k v_k}{\sum_k s_k},\quad
    dQ = c\, dZ\, K,\quad dK = c\, dZ^\top Q,

  and for an array α the cotangent of each head's α from the same sweep.
  Key blocks where no query of a block has a positive weight are skipped
  once :math:`\tau` is known. Memory is linear in the sequence length: per
  call a few ``[batch, heads, block_q, block_k]`` blocks and per-query
  vectors.

  Layout and masks are those of ``dot_product_attention``
  (``[batch..., length, heads, depth]``, grouped-query attention with fewer
  key/value heads dividing the query heads, nonzero ``mask`` entries
  attend); masked keys get exactly zero weight and zero gradient, and a
  query whose keys are all masked gets a zero output and zero gradients.
  ``is_causal`` needs no mask array and skips the key blocks above the
  diagonal in both passes (about half the work). With
  ``functools.partial`` it is a drop-in ``attention_fn`` for
  ``flax.linen.MultiHeadDotProductAttention`` and
  ``flax.nnx.MultiHeadAttention``.

  Dropout works block-wise: the mask of each block pair comes from
  ``dropout_rng`` folded with the block indices and is regenerated in the
  backward pass, never stored. It has the distribution of Flax's dropout
  (each weight kept with probability ``1 - dropout_rate`` and scaled by its
  inverse; shared by batch and heads with ``broadcast_dropout``), not its
  bits. The attention weights are never formed, so they cannot be sown into
  a Flax module: ``module`` must be None. Only first-order reverse-mode
  derivatives exist (``jax.grad``, ``jax.vjp``), as for flash attention.

  Args:
    query: queries, ``[batch..., q_length, num_heads, qk_depth]``.
    key: keys, ``[batch..., kv_length, num_kv_heads, qk_depth]``;
      ``num_kv_heads`` divides ``num_heads``.
    value: values, ``[batch..., kv_length, num_kv_heads, v_depth]``.
    bias: optional scores added before normalising, broadcastable to
      ``[batch..., num_heads, q_length, kv_length]``; its gradient is
      returned in its own shape. A bias with a ``q_length`` or
      ``kv_length`` axis costs memory of that size.
    mask: optional mask broadcastable to the same shape, ``True``
      (nonzero) meaning attend. A key-padding mask ``[batch, 1, 1, kv]``
      costs ``O(kv)``.
    alpha: the map from scores to weights, as in ``softjax.entmax``: a
      number >= 1 (1: softmax, 1.5: entmax15, 2: sparsemax), or an array
      broadcastable to ``(num_heads,)``, one α per head, which receives a
      gradient (learned per head as in Correia et al. 2019; start it near 1,
      see the long-context guide).
    is_causal: mask the keys after each query position (``tril`` aligned
      at the top-left, as in ``flax.nnx``), without a mask array.
    scale: factor of the scores (default ``1 / sqrt(qk_depth)``).
    block_q: queries per block (default 256, or the whole length if
      shorter); lengths that are not a multiple are padded and masked.
    block_k: keys per block (default 256, likewise).
    n_iter: the most threshold-solver steps (each one sweep over the keys)
      of the sparse maps (default: the solver's for the dtype; unused for
      softmax).
    broadcast_dropout: share the dropout mask across batch and heads.
    dropout_rng: PRNG key for dropout; needed when dropout is applied.
    dropout_rate: probability of dropping an attention weight (a Python
      float in [0, 1)).
    deterministic: if True, no dropout.
    dtype: the dtype of the result and of the inputs' promotion (default:
      inferred from ``query``, ``key``, ``value``). Half-precision inputs are
      computed in float32 blocks and the result returned in ``dtype``.
    precision: ``jax.lax.Precision`` of every block matmul.
    module: must be None (the weights are never formed, so they cannot be
      sown; Flax passes a module only with ``sow_weights=True``).
    force_fp32_for_softmax: accepted for Flax; the statistics are always
      computed in float32 or wider.
    qk_attn_weights_einsum: must be None (custom einsums are not
      supported); accepted so that Flax does not drop it silently.
    attn_weights_value_einsum: must be None, likewise.

  Returns:
    The attended values, ``[batch..., q_length, num_heads, v_depth]``.

  Raises:
    TypeError: an unknown keyword, a traced ``dropout_rate``.
    ValueError: mismatched shapes, a ``bias`` or ``mask`` not broadcastable
      to the scores, ``alpha < 1``, a bad block size, dropout without
      ``dropout_rng``, a ``module`` to sow into, custom einsums.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import softjax
    >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 300, 4, 8))
    >>> out = softjax.attention.blockwise_attention(
    ...     q, k, v, is_causal=True, block_q=128, block_k=128)
    >>> dense = softjax.attention.dot_product_attention(q, k, v,
    ...                                                 is_causal=True)
    >>> out.shape, bool(jnp.allclose(out, dense, atol=1e-5))
    ((2, 300, 4, 8), True)
    >>> alpha = jnp.array([1.1, 1.3, 1.5, 2.0])  # one learnable α per head
    >>> sparse = softjax.attention.blockwise_attention(
    ...     q, k, v, alpha=alpha, block_q=128, block_k=128)
    >>> want = softjax.attention.dot_product_attention(
    ...     q, k, v,
    ...     normalizer=lambda s, **kw: softjax.entmax(s, alpha[:, None, None],
    ...                                               **kw))
    >>> bool(jnp.allclose(sparse, want, atol=1e-5))
    True

  References:
    T. Dao, D. Y. Fu, S. Ermon, A. Rudra, C. Ré. "FlashAttention: Fast and
    Memory-Efficient Exact Attention with IO-Awareness". NeurIPS 2022.
    M. N. Rabe, C. Staats. "Self-attention Does Not Need O(n²) Memory".
    arXiv:2112.05682, 2021.
    B. Peters, V. Niculae, A. F. T. Martins. "Sparse Sequence-to-Sequence
    Models". ACL 2019.
    G. M. Correia, V. Niculae, A. F. T. Martins. "Adaptively Sparse
    Transformers". EMNLP 2019.
    N. Gonçalves, M. Treviso, A. F. T. Martins. "AdaSplash: Adaptive Sparse
    Flash Attention". ICML 2025.
  """
  del force_fp32_for_softmax  # always: see the docstring
  _check_options(
    block_q,
    block_k,
    n_iter,
    dropout_rate,
    module,
    (qk_attn_weights_einsum, attn_weights_value_einsum),
  )
  query, key, value, mask = _checked_inputs(query, key, value, mask, dtype)
  compute = jnp.promote_types(query.dtype, jnp.float32)
  family = _family(alpha, query.shape[-2], key.shape[-2], compute)
  if query.shape[-3] == 0 or key.shape[-3] == 0:
    return jnp.zeros(query.shape[:-1] + value.shape[-1:], query.dtype)
  cfg = _config(
    (query.shape[-3], key.shape[-3]),
    (block_q, block_k, n_iter),
    is_causal,
    dropout_rng,
    dropout_rate,
    broadcast_dropout,
    deterministic,
    precision,
  )
  rng = dropout_rng if cfg.dropout_rate else None
  return _run(cfg, family, (query, key, value, bias, mask), scale, rng)
