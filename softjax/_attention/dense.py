"""Dense dot-product attention: the score matrix held, any normaliser.

:func:`dot_product_attention_weights` and :func:`dot_product_attention`
(re-exported by ``softjax.attention``, whose docstring describes them) are
compositions of the steps in :mod:`softjax._attention.steps`: promote,
check shapes, score, mask, normalise with ``normalizer``, sow, drop out,
weight the values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from softjax import _core
from softjax._attention import steps
from softjax._attention import tokens
from softjax._maps import softmax

Normalizer = Callable[..., jax.Array]


def _weights(
  query,
  key,
  bias,
  mask,
  *,
  normalizer,
  einsum,
  is_causal,
  force_fp32,
  module,
  dropout,
  structure=(tokens.NONE, None),
  scale=None,
):
  """Promoted, checked query and key to (dropped-out) attention weights.

  ``dropout`` is ``(dropout_rng, dropout_rate, broadcast_dropout,
  deterministic)``; ``structure`` is :func:`tokens.parse`'s ``(settings,
  token arrays)``.
  """
  structure, token_arrays = structure
  scores = steps.scores(query, key, bias, einsum, scale)
  scores = _core.soft_cap(scores, structure.cap)
  where = steps.where_mask(
    mask, is_causal, scores.shape, structure.window, token_arrays
  )
  weights = steps.normalise(normalizer, scores, where, query.dtype, force_fp32)
  if module is not None:
    steps.sow(module, weights)
  return steps.dropout(weights, *dropout)


@_core.shared_docs
def dot_product_attention_weights(
  query: jax.Array,
  key: jax.Array,
  bias: jax.Array | None = None,
  mask: jax.Array | None = None,
  *,
  normalizer: Normalizer = softmax,
  broadcast_dropout: bool = True,
  dropout_rng: jax.Array | None = None,
  dropout_rate: float = 0.0,
  deterministic: bool = False,
  dtype: Any = None,
  precision: Any = None,
  module: Any = None,
  force_fp32_for_softmax: bool = False,
  einsum_dot_general: Callable[..., jax.Array] | None = None,
  einsum: Callable[..., jax.Array] | None = None,
  promote_dtype: Callable[..., Any] | None = None,
  is_causal: bool = False,
  scale: float | jax.Array | None = None,
  alpha: float | jax.Array | None = None,
  segment_ids: jax.Array | None = None,
  q_segment_ids: jax.Array | None = None,
  kv_segment_ids: jax.Array | None = None,
  q_lengths: jax.Array | None = None,
  kv_lengths: jax.Array | None = None,
  local_window_size: int | tuple[int, int] | None = None,
  logits_soft_cap: float | None = None,
) -> jax.Array:
  r"""Attention weights ``normalizer(q·k / sqrt(depth) + bias, where=mask)``.

  The scores are computed exactly as in ``flax.linen`` and ``flax.nnx``'s
  ``dot_product_attention_weights`` (the query scaled by
  :math:`1/\sqrt{\text{depth}}`, then an einsum at ``precision``, then
  ``+ bias``); only the normalisation differs. With
  ``normalizer=softjax.softmax`` and no fully masked query the result equals
  Flax's. Grouped-query attention (fewer key heads than query heads, dividing
  them) works as in ``flax.nnx``.

  Args:
    query: {query}
    key: {key}
    bias: {bias}
    mask: {attention_mask_weights}
    normalizer: a callable ``normalizer(scores, where=mask_or_None)`` that
      normalises the last axis, e.g. ``softjax.softmax``, ``softjax.entmax15``
      (for α-entmax with one learnable α per head, pass ``alpha`` instead).
    broadcast_dropout: {broadcast_dropout}
    dropout_rng: {dropout_rng}
    dropout_rate: {dropout_rate}
    deterministic: {deterministic}
    dtype: the computation dtype (default: inferred from ``query``, ``key``).
    precision: ``jax.lax.Precision`` of the einsum.
    module: a Flax module (linen or nnx) into whose ``intermediates`` the
      weights are sown as ``attention_weights`` (before dropout), as Flax does.
    force_fp32_for_softmax: normalise in float32 and keep the weights in
      float32 (as ``flax.linen`` does) when ``dtype`` is not float32.
    einsum_dot_general: the ``dot_general`` used by ``jnp.einsum``.
    einsum: replaces ``jnp.einsum`` for the scores (exclusive with
      ``precision`` and ``einsum_dot_general``), as in ``flax.linen``.
    promote_dtype: ``flax.nnx``'s ``promote_dtype((query, key), dtype=dtype)``
      convention; default: Flax's promotion to one inexact dtype.
    is_causal: also mask keys after the query position (``tril`` aligned at
      the top-left, as in ``flax.nnx``), combined with ``mask``.
    scale: factor of the scores (default ``1 / sqrt(qk_depth)``, as Flax).
    alpha: the α-entmax map in place of ``normalizer``, with the convention
      of ``blockwise_attention``: a number >= 1, or an array of shape
      ``(num_heads,)`` (one α per head, which receives a gradient). None
      (default): ``normalizer`` decides.
    segment_ids: {segment_ids}
    q_segment_ids: {q_segment_ids}
    kv_segment_ids: {kv_segment_ids}
    q_lengths: {q_lengths}
    kv_lengths: {kv_lengths}
    local_window_size: {local_window_size}
    logits_soft_cap: {logits_soft_cap}

  Returns:
    Weights of shape ``[batch..., num_heads, q_length, kv_length]`` (dropout
    applied, if any), each row summing to 1 before dropout, or 0 when every
    key of the row is masked.

  Raises:
    TypeError: {attention_raises_type}
    ValueError: mismatched shapes, a ``mask`` not broadcastable to the scores,
      dropout without ``dropout_rng``, or a ``normalizer`` whose output has
      another shape than its input; {attention_raises_tokens}

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import softjax
    >>> q = jnp.array([[[2.0]], [[0.25]]])         # (q_length=2, heads=1, 1)
    >>> k = jnp.array([[[3.0]], [[1.0]], [[-2.0]]])  # (kv_length=3, heads=1, 1)
    >>> softjax.attention.dot_product_attention_weights(
    ...     q, k, normalizer=softjax.sparsemax)
    Array([[[1.  , 0.  , 0.  ],
            [0.75, 0.25, 0.  ]]], dtype=float32)
    >>> mask = jnp.array([[True, True, True], [False, False, False]])
    >>> softjax.attention.dot_product_attention_weights(
    ...     q, k, mask=mask, normalizer=softjax.entmax15)
    Array([[[1., 0., 0.],
            [0., 0., 0.]]], dtype=float32)

  References:
    {ref_vaswani2017}
    {ref_correia2019}
  """
  einsum = steps.einsum_for(einsum, precision, einsum_dot_general, "einsum")
  query, key = steps.promote((query, key), dtype, promote_dtype)
  steps.check_shapes(query, key)
  return _weights(
    query,
    key,
    bias,
    mask,
    normalizer=steps.per_head_normalizer(normalizer, alpha, query),
    scale=scale,
    einsum=einsum,
    is_causal=is_causal,
    force_fp32=force_fp32_for_softmax,
    module=module,
    dropout=(dropout_rng, dropout_rate, broadcast_dropout, deterministic),
    structure=tokens.parse(
      query,
      key,
      (segment_ids, q_segment_ids, kv_segment_ids),
      (q_lengths, kv_lengths),
      (local_window_size, logits_soft_cap),
    ),
  )


def _value_einsums(
  qk_einsum: Any, wv_einsum: Any, precision: Any, dot_general: Any
) -> tuple[steps.Einsum, steps.Einsum]:
  """The two einsums of attention with values, given together or not."""
  if (qk_einsum is None) != (wv_einsum is None):
    raise ValueError(
      "`qk_attn_weights_einsum` and `attn_weights_value_einsum` must be "
      "given together."
    )
  names = ("qk_attn_weights_einsum", "attn_weights_value_einsum")
  return (
    steps.einsum_for(qk_einsum, precision, dot_general, *names),
    steps.einsum_for(wv_einsum, precision, dot_general, *names),
  )


@_core.shared_docs
def dot_product_attention(
  query: jax.Array,
  key: jax.Array,
  value: jax.Array,
  bias: jax.Array | None = None,
  mask: jax.Array | None = None,
  *,
  normalizer: Normalizer = softmax,
  broadcast_dropout: bool = True,
  dropout_rng: jax.Array | None = None,
  dropout_rate: float = 0.0,
  deterministic: bool = False,
  dtype: Any = None,
  precision: Any = None,
  module: Any = None,
  force_fp32_for_softmax: bool = False,
  einsum_dot_general: Callable[..., jax.Array] | None = None,
  qk_attn_weights_einsum: Callable[..., jax.Array] | None = None,
  attn_weights_value_einsum: Callable[..., jax.Array] | None = None,
  promote_dtype: Callable[..., Any] | None = None,
  is_causal: bool = False,
  scale: float | jax.Array | None = None,
  alpha: float | jax.Array | None = None,
  segment_ids: jax.Array | None = None,
  q_segment_ids: jax.Array | None = None,
  kv_segment_ids: jax.Array | None = None,
  q_lengths: jax.Array | None = None,
  kv_lengths: jax.Array | None = None,
  local_window_size: int | tuple[int, int] | None = None,
  logits_soft_cap: float | None = None,
) -> jax.Array:
  r"""Dot-product attention with a chosen normaliser; a drop-in for Flax's.

  Computes ``normalizer(q·k / sqrt(depth) + bias, where=mask) · v`` with the
  layout, scores and keywords of ``flax.linen.dot_product_attention`` and
  ``flax.nnx.dot_product_attention``, so that it can be the ``attention_fn``
  of ``flax.linen.MultiHeadDotProductAttention`` or
  ``flax.nnx.MultiHeadAttention``::

    attention_fn = functools.partial(softjax.attention.dot_product_attention,
                                     normalizer=softjax.entmax15)

  With ``normalizer=softjax.softmax`` the output equals Flax's (up to float
  rounding), except for queries whose keys are all masked: their weights and
  output here are zero, where Flax averages the values uniformly.

  Args:
    query: {query}
    key: {key}
    value: values, ``[batch..., kv_length, num_kv_heads, v_depth]``.
    bias: {bias}
    mask: {attention_mask}
    normalizer: a callable ``normalizer(scores, where=mask_or_None)`` that
      normalises the last axis (see :func:`dot_product_attention_weights`).
    broadcast_dropout: {broadcast_dropout}
    dropout_rng: {dropout_rng}
    dropout_rate: {dropout_rate}
    deterministic: {deterministic}
    dtype: the computation dtype (default: inferred from the inputs).
    precision: ``jax.lax.Precision`` of both einsums.
    module: a Flax module (linen or nnx) that sows the weights into its
      ``intermediates`` as ``attention_weights``, as Flax does.
    force_fp32_for_softmax: normalise in float32 when ``dtype`` is not.
    einsum_dot_general: the ``dot_general`` used by both einsums.
    qk_attn_weights_einsum: replaces ``jnp.einsum`` for the scores; must come
      with ``attn_weights_value_einsum`` (as in ``flax.linen``).
    attn_weights_value_einsum: replaces ``jnp.einsum`` for weights · values.
    promote_dtype: ``flax.nnx``'s ``promote_dtype((query, key, value),
      dtype=dtype)`` convention; default: Flax's promotion.
    is_causal: also mask keys after the query position, combined with
      ``mask``.
    scale: factor of the scores (default ``1 / sqrt(qk_depth)``, as Flax).
    alpha: the α-entmax map in place of ``normalizer``, with the convention
      of ``blockwise_attention``: a number >= 1, or an array of shape
      ``(num_heads,)`` (one α per head, which receives a gradient). None
      (default): ``normalizer`` decides.
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
    TypeError: {attention_raises_type}
    ValueError: mismatched shapes or einsum arguments, a ``mask`` not
      broadcastable to the scores, dropout without ``dropout_rng``;
      {attention_raises_tokens}

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import softjax
    >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 5, 4, 8))
    >>> out = softjax.attention.dot_product_attention(
    ...     q, k, v, normalizer=softjax.entmax15)
    >>> out.shape                           # [batch, length, heads, depth]
    (2, 5, 4, 8)
    >>> padding = jnp.array([True, True, True, False, False])
    >>> out = softjax.attention.dot_product_attention(
    ...     q, k, v, mask=padding[None, None, :, None])  # 2 queries see none
    >>> bool(jnp.all(out[:, 3:] == 0)), bool(jnp.all(jnp.isfinite(out)))
    (True, True)

  References:
    {ref_vaswani2017}
    {ref_correia2019}
  """
  qk_einsum, wv_einsum = _value_einsums(
    qk_attn_weights_einsum,
    attn_weights_value_einsum,
    precision,
    einsum_dot_general,
  )
  query, key, value = steps.promote((query, key, value), dtype, promote_dtype)
  steps.check_shapes(query, key, value)
  weights = _weights(
    query,
    key,
    bias,
    mask,
    normalizer=steps.per_head_normalizer(normalizer, alpha, query),
    scale=scale,
    einsum=qk_einsum,
    is_causal=is_causal,
    force_fp32=force_fp32_for_softmax,
    module=module,
    dropout=(dropout_rng, dropout_rate, broadcast_dropout, deterministic),
    structure=tokens.parse(
      query,
      key,
      (segment_ids, q_segment_ids, kv_segment_ids),
      (q_lengths, kv_lengths),
      (local_window_size, logits_soft_cap),
    ),
  )
  return steps.weighted_values(weights, value, wv_einsum)
