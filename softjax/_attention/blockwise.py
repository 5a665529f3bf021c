r"""Block-wise attention: the score matrix is never held, forward or backward.

:func:`blockwise_attention` (re-exported as
``softjax.attention.blockwise_attention``) computes what
``softjax.attention.dot_product_attention`` computes, one block of
``block_q`` queries by ``block_k`` keys at a time, so that its memory grows
linearly in the sequence length.

Here live the public function, its argument checks and the ``custom_vjp``
that joins the passes; the rest is in the modules beside it:

* :mod:`layout`: the internal layout every operand is brought into
  (:func:`layout.to_blocks`), the static settings of one call
  (:class:`layout.Config`) and the plan of the block pairs visited.
* :mod:`sweeps`: the two sweeps every pass is made of, over the key blocks
  of a query block and over the query blocks of a key block.
* :mod:`rules`: a block's weights, slopes and ``delta`` from the saved
  per-query statistics, one rule for softmax (α = 1) and one for the
  sparse members (α > 1, or an array α).
* :mod:`forward`: the forward passes (online softmax; group maxima,
  threshold and output sweeps for the sparse members).
* :mod:`backward`: the backward pass, the same for every member.

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
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp

from softjax import _core
from softjax._attention import backward
from softjax._attention import forward
from softjax._attention import layout
from softjax._attention import rules
from softjax._attention import steps
from softjax._attention import tokens
from softjax._core import Family


def _attention(
  cfg: layout.Config,
  q: jax.Array,
  k: jax.Array,
  v: jax.Array,
  bias: jax.Array | None,
  mask: jax.Array | None,
  rng: jax.Array | None,
  toks: tokens.Tokens | None,
  family: Family,
) -> jax.Array:
  ops = layout.Operands(q, k, v, bias, mask, rng, toks)
  return forward.forward(cfg, rules.rule(family, cfg), ops)[0]


def _attention_fwd(cfg, q, k, v, bias, mask, rng, toks, family):
  # Forward mode over this pass (Hessians) is exact only for some members.
  q, k, bias, family = _core.forward_mode_exact(
    (q, k, bias, family), family, "blockwise_attention"
  )
  ops = layout.Operands(q, k, v, bias, mask, rng, toks)
  rule = rules.rule(family, cfg)
  out, rows, live = forward.forward(cfg, rule, ops)
  # Softmax's delta is dO · out; the sparse members' comes from `rows`.
  kept = (out if rule is rules.SOFTMAX else None, rows, live)
  return out, (ops, kept, family)


def _attention_bwd(cfg, residuals, dout):
  ops, kept, family = residuals
  rule = rules.rule(family, cfg)
  *grads, d_eps = backward.backward_pass(cfg, rule, ops, kept, dout)
  # Inside shard_map an operand replicated over a mesh axis (a bias shared
  # by the head shards, an α) gets the sum of the shards' cotangents.
  grads = tuple(
    None if g is None else _core.match_vma(g, x) for g, x in zip(grads, ops)
  )
  d_family = None
  if d_eps is not None:
    d_family = Family(_core.param_cotangent(d_eps[..., None], family.eps))
  grads, d_family = _core.first_order_only(
    (grads, d_family), "blockwise_attention"
  )
  return grads + (None, None, None, d_family)


_attention = jax.custom_vjp(_attention, nondiff_argnums=(0,))
_attention.defvjp(_attention_fwd, _attention_bwd)
# Eager calls reuse the compiled passes (``_core.eager_cached``).
_cached_attention = _core.eager_cached(_attention)


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
  blocks: tuple[Any, Any, Any],
  dropout_rate: Any,
  module: Any,
  einsums: tuple[Any, ...],
) -> None:
  """Errors for the arguments that need no shapes (trace time)."""
  for name, value in zip(("block_q", "block_k", "n_iter"), blocks):
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


def _checked_inputs(
  query: Any, key: Any, value: Any, mask: Any, dtype: Any, alpha: Any
) -> tuple[Any, ...]:
  """``(query, key, value, mask, member)``: promoted, checked, boolean mask
  (as the dense path does), and the member of ``alpha`` for the heads."""
  query, key, value = steps.promote((query, key, value), dtype)
  steps.check_shapes(query, key, value)
  scores_shape = query.shape[:-3] + (
    query.shape[-2],
    query.shape[-3],
    key.shape[-3],
  )
  mask = steps.where_mask(mask, False, scores_shape)
  compute = jnp.promote_types(query.dtype, jnp.float32)
  heads = (query.shape[-2], key.shape[-2])
  family = _core.member_for_heads(alpha, *heads, compute)
  return query, key, value, mask, family


def config(
  lengths: tuple[int, int],
  blocks: tuple[int | None, int | None, int | None],
  is_causal: bool,
  dropout: tuple[Any, float, bool, bool],
  precision: Any,
  structure: tokens.Static = tokens.NONE,
) -> layout.Config:
  """The static settings of one call (dropout off when not applied).

  ``dropout`` is ``(dropout_rng, dropout_rate, broadcast_dropout,
  deterministic)``.
  """
  dropout_rng, dropout_rate, broadcast_dropout, deterministic = dropout
  dropping = not deterministic and float(dropout_rate) > 0.0
  if dropping and dropout_rng is None:
    raise ValueError(
      "`dropout_rng` is required when `dropout_rate` > 0 and "
      "`deterministic` is False."
    )
  if isinstance(precision, list):
    precision = tuple(precision)  # hashable: part of the static config
  return layout.Config(
    q_len=lengths[0],
    kv_len=lengths[1],
    block_q=_block_size(lengths[0], blocks[0], layout.BLOCK_Q),
    block_k=_block_size(lengths[1], blocks[1], layout.BLOCK_K),
    causal=bool(is_causal),
    dropout_rate=float(dropout_rate) if dropping else 0.0,
    broadcast_dropout=bool(broadcast_dropout),
    precision=precision,
    n_iter=blocks[2],
    window=structure.window,
    cap=structure.cap,
  )


def _run(
  cfg: layout.Config,
  family: Family,
  arrays: tuple[Any, ...],
  scale: Any,
  dropout_rng: jax.Array | None,
  toks: tokens.Tokens | None = None,
) -> jax.Array:
  """The checked ``(query, key, value, bias, mask)`` through the passes."""
  rng = dropout_rng if cfg.dropout_rate else None
  query, value = arrays[0], arrays[2]
  out_dtype = query.dtype
  compute = jnp.promote_types(out_dtype, jnp.float32)
  if scale is None:
    scale = 1.0 / math.sqrt(query.shape[-1])
  *ops, toks = layout.to_blocks(*arrays, scale, cfg, compute, toks)
  out = _cached_attention(cfg, *ops, rng, toks, family)
  out = jnp.transpose(out[:, :, :, : cfg.q_len], (0, 3, 1, 2, 4))
  out_shape = query.shape[:-1] + value.shape[-1:]
  return out.reshape(out_shape).astype(out_dtype)


@_core.shared_docs
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
  segment_ids: jax.Array | None = None,
  q_segment_ids: jax.Array | None = None,
  kv_segment_ids: jax.Array | None = None,
  q_lengths: jax.Array | None = None,
  kv_lengths: jax.Array | None = None,
  local_window_size: int | tuple[int, int] | None = None,
  logits_soft_cap: float | None = None,
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
  key/value heads dividing the query heads, ``True`` ``mask`` entries
  attend); masked keys get exactly zero weight and zero gradient, and a
  query whose keys are all masked gets a zero output and zero gradients.
  ``is_causal`` needs no mask array and skips the key blocks above the
  diagonal in both passes (about half the work). With
  ``functools.partial`` it is a drop-in ``attention_fn`` for
  ``flax.linen.MultiHeadDotProductAttention`` and
  ``flax.nnx.MultiHeadAttention``.

  Real training and serving describe their masks by token, and so can
  this function, in memory linear in the length: ``segment_ids`` (packed
  documents), ``q_lengths``/``kv_lengths`` (padding at the end),
  ``local_window_size`` (sliding windows, with or without ``is_causal``)
  and ``logits_soft_cap`` (:math:`z \mapsto c \tanh(z / c)` before the
  normaliser, its derivative :math:`1 - \tanh^2` in the backward pass).
  They are evaluated block by block from the small arrays, never as a
  ``[q_length, kv_length]`` mask, and the block pairs they mask whole are
  skipped in every pass: those outside the causal band or the window from
  the static plan, those whose segment-id ranges do not meet or that lie
  past the lengths from the arrays (a pair is visited when any row of the
  batch needs it). So at a fixed window time and memory grow linearly in
  the length, and packed documents cost about what they would apart.

  Decoding (at most 16 queries, e.g. one new token against a key/value
  cache whose filled length is ``kv_lengths``) takes one pass over the
  cache for every α: the scores of those few rows are held (linear in the
  cache), so the sparse maps solve their threshold in memory instead of
  sweeping the keys once per solver step.

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
    mask: {attention_mask_blockwise}
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
    segment_ids: {segment_ids}
    q_segment_ids: {q_segment_ids}
    kv_segment_ids: {kv_segment_ids}
    q_lengths: {q_lengths}
    kv_lengths: {kv_lengths}
    local_window_size: {local_window_size}
    logits_soft_cap: {logits_soft_cap}

  Returns:
    The attended values, ``[batch..., q_length, num_heads, v_depth]``.

  Raises:
    TypeError: an unknown keyword, a traced ``dropout_rate``, segment ids
      or lengths that are not integers, a ``local_window_size`` or
      ``logits_soft_cap`` that is not a Python number.
    ValueError: mismatched shapes, a ``bias`` or ``mask`` not broadcastable
      to the scores, ``alpha < 1``, a bad block size, dropout without
      ``dropout_rng``, a ``module`` to sow into, custom einsums;
      {attention_raises_tokens}

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

    Two packed documents per row, a causal window of 64 keys, soft-capped
    scores; the dense path given the same keywords agrees:

    >>> ids = jnp.repeat(jnp.array([[0, 1], [0, 1]]), 150, axis=1)
    >>> kw = dict(is_causal=True, segment_ids=ids, local_window_size=(64, 0),
    ...           logits_soft_cap=30.0)
    >>> out = softjax.attention.blockwise_attention(
    ...     q, k, v, alpha=1.5, block_q=64, block_k=64, **kw)
    >>> dense = softjax.attention.dot_product_attention(
    ...     q, k, v, normalizer=softjax.entmax15, **kw)
    >>> bool(jnp.allclose(out, dense, atol=1e-5))
    True

  References:
    T. Dao, D. Y. Fu, S. Ermon, A. Rudra, C. Ré. "FlashAttention: Fast and
    Memory-Efficient Exact Attention with IO-Awareness". NeurIPS 2022.
    M. N. Rabe, C. Staats. "Self-attention Does Not Need O(n²) Memory".
    arXiv:2112.05682, 2021.
    B. Peters, V. Niculae, A. F. T. Martins. "Sparse Sequence-to-Sequence
    Models". ACL 2019.
    Gemma Team. "Gemma 2: Improving Open Language Models at a Practical
    Size". arXiv:2408.00118, 2024 (logit soft-capping).
    I. Beltagy, M. E. Peters, A. Cohan. "Longformer: The Long-Document
    Transformer". arXiv:2004.05150, 2020 (sliding windows).
    G. M. Correia, V. Niculae, A. F. T. Martins. "Adaptively Sparse
    Transformers". EMNLP 2019.
    N. Gonçalves, M. Treviso, A. F. T. Martins. "AdaSplash: Adaptive Sparse
    Flash Attention". ICML 2025.
  """
  del force_fp32_for_softmax  # always: see the docstring
  _check_options(
    (block_q, block_k, n_iter),
    dropout_rate,
    module,
    (qk_attn_weights_einsum, attn_weights_value_einsum),
  )
  query, key, value, mask, family = _checked_inputs(
    query, key, value, mask, dtype, alpha
  )
  structure, toks = tokens.parse(
    query,
    key,
    (segment_ids, q_segment_ids, kv_segment_ids),
    (q_lengths, kv_lengths),
    (local_window_size, logits_soft_cap),
  )
  if query.shape[-3] == 0 or key.shape[-3] == 0:
    return jnp.zeros(query.shape[:-1] + value.shape[-1:], query.dtype)
  cfg = config(
    (query.shape[-3], key.shape[-3]),
    (block_q, block_k, n_iter),
    is_causal,
    (dropout_rng, dropout_rate, broadcast_dropout, deterministic),
    precision,
    structure,
  )
  arrays = (query, key, value, bias, mask)
  return _run(cfg, family, arrays, scale, dropout_rng, toks)
