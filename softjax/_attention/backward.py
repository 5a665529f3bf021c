"""The backward pass of block-wise attention, the same for every member.

:func:`backward_pass`: for each key block, one sweep over the query blocks
that see it (:func:`sweeps.for_query_blocks`); recomputes the scores once
per block pair and gives dQ, dK, dV and the bias cotangent in that one
sweep. It needs the weights ``p`` and the slopes ``s`` of a block and the
per-query ``delta``, all from the normaliser's rule (:mod:`rules`), never
from ``p`` hard-coded: ``s = p^(2-α)`` and ``delta = dO · (Σ s v) / Σ s``
(Gonçalves et al. 2025; for softmax ``s = p``, ``Σ s = 1`` and
``Σ s v / Σ s`` is the output itself). Block pairs in which no query has a
positive weight, as the sparse forward flagged them, are skipped.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

from softjax import _core
from softjax._attention import layout
from softjax._attention import rules
from softjax._attention import sweeps


def _pair_grads(
  cfg: layout.Config,
  rule: rules.Softmax | rules.Entmax,
  ops: layout.Operands,
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
  ``Σ_k r_k (dP_k - delta)``. With a soft cap, ``ds`` goes on through
  its slope to the scores before the cap.
  """
  i, j = at
  p = rule.weights(z, rows_i)
  s = rule.slopes(p)
  v_j = layout.block(ops.v, j, cfg.block_k, layout.K_AXIS)
  dp = jnp.einsum(layout.QK, do_i, v_j, precision=cfg.precision)
  if cfg.dropout_rate:
    drop = sweeps.dropout_scale(cfg, ops.rng, i, j, p.shape, p.dtype)
    dp = dp * drop
  g = dp - delta_i[..., None]
  d_eps = None
  if rule.learnable:
    d_eps = jnp.sum(rule.param_sensitivity(p) * g, axis=-1)
  if cfg.dropout_rate:
    p = p * drop
  ds = s * g
  if cfg.cap is not None:  # through cap * tanh(z / cap)
    ds = ds * _core.soft_cap_slope(z, cfg.cap)
  return p, ds, d_eps


def backward_pass(
  cfg: layout.Config,
  rule: rules.Softmax | rules.Entmax,
  ops: layout.Operands,
  residuals: tuple[jax.Array | None, Any, jax.Array | None],
  dout: jax.Array,
) -> tuple[jax.Array | None, ...]:
  """dQ, dK, dV, dbias and dε by recomputation, one sweep over block pairs.

  Outer loop over key blocks, inner over the query blocks that see them:
  dK and dV of a key block are accumulated locally (transposed, see
  ``layout.TRANSPOSED``), dQ, dbias and dε (per head, ``[B, Hkv, G]``) in
  the carry. Per block pair (:func:`_pair_grads`): ``dV += p^T dO``,
  ``dP = dO V^T``, ``dS = s (dP - delta)``, ``dQ += dS K``,
  ``dK += dS^T Q`` (the scale is applied outside). ``residuals`` are the
  forward's ``(out, rows, live)``; block pairs ``live`` marks False are
  skipped.
  """
  out, rows, live = residuals
  delta = rule.delta(dout, out, rows)
  bk = cfg.block_k
  zeros = lambda x: _core.filled(
    x.shape, 0.0, x.dtype, ops.q, *ops.refs, dout, like=x
  )
  mm = functools.partial(jnp.einsum, precision=cfg.precision)

  def key_block(j: jax.Array, grads: tuple[Any, ...]) -> tuple[Any, ...]:
    k_j = layout.block(ops.k, j, bk, layout.K_AXIS)

    def body(i, z, carry):
      dq, dk_j, dv_j, dbias, d_eps = carry
      rows_i = jax.tree.map(lambda r: layout.rows(r, i, cfg), rows)
      q_i, do_i = layout.rows(ops.q, i, cfg), layout.rows(dout, i, cfg)
      p, ds, d_eps_i = _pair_grads(
        cfg, rule, ops, (i, j), z, rows_i, do_i, layout.rows(delta, i, cfg)
      )
      dv_j = dv_j + mm(layout.TRANSPOSED, do_i, p)
      dk_j = dk_j + mm(layout.TRANSPOSED, q_i, ds)
      dq_i = layout.rows(dq, i, cfg) + mm(layout.PV, ds, k_j)
      dq = layout.put_rows(dq, dq_i, i, cfg)
      if dbias is not None:
        dbias = layout.add_pair_block(dbias, ds, i, j, cfg)
      if d_eps is not None:
        per_head = d_eps_i.reshape(d_eps.shape + (cfg.block_q,))
        d_eps = d_eps + jnp.sum(per_head, axis=-1)
      return dq, dk_j, dv_j, dbias, d_eps

    dq, dk, dv, dbias, d_eps = grads
    v_t = jnp.swapaxes(layout.block(ops.v, j, bk, layout.K_AXIS), -1, -2)
    init = (dq, zeros(jnp.swapaxes(k_j, -1, -2)), zeros(v_t), dbias, d_eps)
    live_j = None if live is None else live[:, j]
    dq, dk_j, dv_j, dbias, d_eps = sweeps.for_query_blocks(
      cfg, ops, j, body, init, live_j
    )
    dk = layout.put_block(dk, jnp.swapaxes(dk_j, -1, -2), j, bk, layout.K_AXIS)
    dv = layout.put_block(dv, jnp.swapaxes(dv_j, -1, -2), j, bk, layout.K_AXIS)
    return dq, dk, dv, dbias, d_eps

  d_eps = zeros(ops.q[..., 0, 0]) if rule.learnable else None
  bias = None if ops.bias is None else zeros(ops.bias)
  init = (zeros(ops.q), zeros(ops.k), zeros(ops.v), bias, d_eps)
  return lax.fori_loop(0, cfg.n_k, key_block, init)
