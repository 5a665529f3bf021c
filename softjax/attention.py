"""Dot-product attention with any softjax normaliser, a drop-in for Flax.

:func:`dot_product_attention` has the layout, semantics and keywords of
``flax.linen.dot_product_attention`` and ``flax.nnx.dot_product_attention``
(``[batch..., length, heads, depth]``), so it can be passed as
``attention_fn`` to ``flax.linen.MultiHeadDotProductAttention`` and
``flax.nnx.MultiHeadAttention``; one keyword, ``normalizer``, picks the map
from scores to weights (``softjax.softmax`` by default, ``softjax.entmax15``
for sparse attention, or a learnable α per head through ``softjax.entmax``).

Two differences from Flax, both deliberate:

* Masks are passed to the normaliser as ``where=`` instead of being turned
  into a large negative score. Masked keys get exactly zero weight and zero
  gradient, and a query whose keys are all masked gets zero weights and a
  zero output (Flax gives it the uniform average of the values).
* Every keyword is explicit: an unknown one raises ``TypeError`` naming it,
  instead of being ignored. Arguments after ``mask`` are keyword-only (Flax's
  modules pass them by keyword). (``flax.linen.MultiHeadDotProductAttention``
  passes only the keywords named in ``attention_fn``'s signature, so wrap this
  function with ``functools.partial``, not with a ``**kwargs`` lambda.)

For long sequences, :func:`blockwise_attention` computes the same attention
block by block, never holding the ``[heads, q_length, kv_length]`` scores
(softmax so far; the sparse maps are planned).

Flax is not needed to use this module; it is imported only to sow the
attention weights into a Flax module given as ``module=``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from softjax._blockwise import blockwise_attention
from softjax._dense import softmax

__all__ = [
    "blockwise_attention",
    "dot_product_attention",
    "dot_product_attention_weights",
]

Normalizer = Callable[..., jax.Array]

_QK = "...qhd,...khd->...hqk"
_QK_GROUPED = "...qhgd,...kh1d->...hgqk"
_WV = "...hqk,...khd->...qhd"
_WV_GROUPED = "...hgqk,...kh1d->...qhgd"


def _promote(arrays: tuple[Any, ...], dtype: Any) -> tuple[Any, ...]:
  """Flax's ``promote_dtype``: one common inexact dtype, or ``dtype``."""
  if dtype is None:
    dtype = jnp.result_type(*(jnp.asarray(a) for a in arrays if a is not None))
    if not jnp.issubdtype(dtype, jnp.inexact):
      dtype = jnp.promote_types(jnp.float32, dtype)
  if not jnp.issubdtype(dtype, jnp.inexact):
    raise ValueError(f"`dtype` must be a floating dtype, got {dtype}.")
  return tuple(None if a is None else jnp.asarray(a, dtype) for a in arrays)


def _check_shapes(query: jax.Array, key: jax.Array,
                  value: jax.Array | None = None) -> None:
  arrays = (query, key) if value is None else (query, key, value)
  names = "query, key" if value is None else "query, key, value"
  shapes = ", ".join(str(a.shape) for a in arrays)
  if any(a.ndim < 3 for a in arrays):
    raise ValueError(
        f"{names} must have shape [batch..., length, heads, depth] (at least "
        f"3 dimensions), got shapes {shapes}.")
  if any(a.ndim != query.ndim for a in arrays):
    raise ValueError(f"{names} must have the same rank, got shapes {shapes}.")
  if any(a.shape[:-3] != query.shape[:-3] for a in arrays):
    raise ValueError(
        f"{names} must have the same batch dimensions, got shapes {shapes}.")
  if query.shape[-1] != key.shape[-1]:
    raise ValueError(
        f"query and key depths must match, got {query.shape[-1]} and "
        f"{key.shape[-1]}.")
  if query.shape[-2] % key.shape[-2]:
    raise ValueError(
        f"query heads ({query.shape[-2]}) must be a multiple of key heads "
        f"({key.shape[-2]}) (grouped-query attention).")
  if value is not None:
    if key.shape[-3] != value.shape[-3]:
      raise ValueError(
          f"key and value lengths must match, got {key.shape[-3]} and "
          f"{value.shape[-3]}.")
    if key.shape[-2] != value.shape[-2]:
      raise ValueError(
          f"key and value heads must match, got {key.shape[-2]} and "
          f"{value.shape[-2]}.")


def _einsum(precision: Any, dot_general: Callable[..., Any] | None
            ) -> Callable[..., jax.Array]:
  if dot_general is None:
    return functools.partial(jnp.einsum, precision=precision)
  return functools.partial(jnp.einsum, precision=precision,
                           _dot_general=dot_general)


def _combined_mask(mask: Any, is_causal: bool,
                   scores_shape: tuple[int, ...]) -> jax.Array | None:
  """The boolean ``where`` mask: ``mask`` (True = attend) and causality."""
  masks = []
  if mask is not None:
    mask = jnp.asarray(mask)
    # Flax tests the mask with jnp.where, so nonzero float masks attend.
    masks.append(mask if mask.dtype == jnp.bool_ else mask != 0)
  if is_causal:
    q_len, k_len = scores_shape[-2:]
    masks.append(jnp.tril(jnp.ones((q_len, k_len), jnp.bool_)))
  if not masks:
    return None
  where = functools.reduce(jnp.logical_and, masks)
  try:
    jnp.broadcast_shapes(where.shape, scores_shape)
  except ValueError:
    raise ValueError(
        f"`mask` of shape {where.shape} is not broadcastable to the attention "
        f"scores [batch..., heads, q_length, kv_length] = {scores_shape}."
    ) from None
  return where


def _sow(module: Any, weights: jax.Array) -> None:
  """Sows ``weights`` like Flax's attention: into 'intermediates'."""
  try:
    from flax import nnx  # pylint: disable=g-import-not-at-top
  except ImportError:  # pragma: no cover - a Flax module implies Flax.
    nnx = None
  if nnx is not None and isinstance(module, nnx.Module):
    module.sow(nnx.Intermediate, "attention_weights", weights)
  elif callable(getattr(module, "sow", None)):
    module.sow("intermediates", "attention_weights", weights)
  else:
    raise TypeError(
        "`module` must be a Flax module (linen or nnx) to sow the attention "
        f"weights into, or None; got {type(module).__name__}.")


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
    query: queries, ``[batch..., q_length, num_heads, qk_depth]``.
    key: keys, ``[batch..., kv_length, num_kv_heads, qk_depth]``.
    bias: optional scores added before normalising, broadcastable to
      ``[batch..., num_heads, q_length, kv_length]``.
    mask: optional mask broadcastable to the same shape; ``True`` (nonzero)
      means attend. Passed to ``normalizer`` as ``where=``: masked keys get
      exactly 0, and queries with every key masked get all-zero weights.
    normalizer: a callable ``normalizer(scores, where=mask_or_None)`` that
      normalises the last axis, e.g. ``softjax.softmax``, ``softjax.entmax15``
      or ``lambda s, **kw: softjax.entmax(s, alpha, **kw)`` with a learnable
      ``alpha`` of shape ``(num_heads, 1, 1)``.
    broadcast_dropout: share the dropout mask across batch and head dimensions.
    dropout_rng: PRNG key for dropout; needed when dropout is applied.
    dropout_rate: probability of dropping an attention weight.
    deterministic: if True, no dropout.
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

  Returns:
    Weights of shape ``[batch..., num_heads, q_length, kv_length]`` (dropout
    applied, if any), each row summing to 1 before dropout, or 0 when every
    key of the row is masked.

  Raises:
    TypeError: an unknown keyword, a ``normalizer`` that is not callable.
    ValueError: mismatched shapes, a ``mask`` not broadcastable to the scores,
      dropout without ``dropout_rng``, or a ``normalizer`` whose output has
      another shape than its input.

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
    A. Vaswani et al. "Attention Is All You Need". NeurIPS 2017.
    G. M. Correia, V. Niculae, A. F. T. Martins. "Adaptively Sparse
    Transformers". EMNLP 2019.
  """
  if not callable(normalizer):
    raise TypeError(
        "`normalizer` must be a callable `normalizer(scores, *, where)` such "
        f"as `softjax.softmax` or `softjax.entmax15`, got "
        f"{type(normalizer).__name__}.")
  if (precision is not None or einsum_dot_general is not None) and (
      einsum is not None):
    raise ValueError(
        "`einsum` is exclusive with `precision` and `einsum_dot_general`; "
        "pass only one of them.")
  if promote_dtype is None:
    query, key = _promote((query, key), dtype)
  else:
    query, key = promote_dtype((query, key), dtype=dtype)
  dtype = query.dtype
  _check_shapes(query, key)
  if einsum is None:
    einsum = _einsum(precision, einsum_dot_general)

  q_heads, kv_heads = query.shape[-2], key.shape[-2]
  depth = query.shape[-1]
  query = query / jnp.sqrt(depth).astype(dtype)
  if q_heads == kv_heads:
    scores = einsum(_QK, query, key)
  else:  # Grouped-query attention, as in flax.nnx.
    group = q_heads // kv_heads
    query = query.reshape(query.shape[:-2] + (kv_heads, group, depth))
    scores = einsum(_QK_GROUPED, query, jnp.expand_dims(key, -2))
    scores = scores.reshape(scores.shape[:-4] + (q_heads,) + scores.shape[-2:])
  if bias is not None:
    scores = scores + bias

  where = _combined_mask(mask, is_causal, scores.shape)
  if where is not None:
    shape = jnp.broadcast_shapes(scores.shape, where.shape)
    scores = jnp.broadcast_to(scores, shape)
    where = jnp.broadcast_to(where, shape)

  if force_fp32_for_softmax and dtype != jnp.float32:
    weights = normalizer(scores.astype(jnp.float32), where=where)
  else:
    weights = jnp.asarray(normalizer(scores, where=where)).astype(dtype)
  if weights.shape != scores.shape:
    raise ValueError(
        f"`normalizer` must return an array of the shape of its input "
        f"{scores.shape}, got {weights.shape}.")

  if module is not None:
    _sow(module, weights)

  if not deterministic and dropout_rate > 0.0:
    if dropout_rng is None:
      raise ValueError(
          "`dropout_rng` is required when `dropout_rate` > 0 and "
          "`deterministic` is False.")
    keep_prob = 1.0 - dropout_rate
    if broadcast_dropout:
      # One dropout mask shared by the batch and head dimensions.
      shape = (1,) * (key.ndim - 2) + weights.shape[-2:]
    else:
      shape = weights.shape
    keep = jax.random.bernoulli(dropout_rng, keep_prob, shape)
    multiplier = keep.astype(dtype) / jnp.asarray(keep_prob, dtype=dtype)
    weights = weights * multiplier
  return weights


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
    query: queries, ``[batch..., q_length, num_heads, qk_depth]``.
    key: keys, ``[batch..., kv_length, num_kv_heads, qk_depth]``.
    value: values, ``[batch..., kv_length, num_kv_heads, v_depth]``.
    bias: optional scores added before normalising, broadcastable to
      ``[batch..., num_heads, q_length, kv_length]``.
    mask: optional mask broadcastable to the same shape, ``True`` (nonzero)
      meaning attend; passed to ``normalizer`` as ``where=``.
    normalizer: a callable ``normalizer(scores, where=mask_or_None)`` that
      normalises the last axis (see :func:`dot_product_attention_weights`).
    broadcast_dropout: share the dropout mask across batch and head dimensions.
    dropout_rng: PRNG key for dropout; needed when dropout is applied.
    dropout_rate: probability of dropping an attention weight.
    deterministic: if True, no dropout.
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

  Returns:
    The attended values, ``[batch..., q_length, num_heads, v_depth]``.

  Raises:
    TypeError: an unknown keyword, a ``normalizer`` that is not callable.
    ValueError: mismatched shapes or einsum arguments, a ``mask`` not
      broadcastable to the scores, dropout without ``dropout_rng``.

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
    A. Vaswani et al. "Attention Is All You Need". NeurIPS 2017.
    G. M. Correia, V. Niculae, A. F. T. Martins. "Adaptively Sparse
    Transformers". EMNLP 2019.
  """
  if (qk_attn_weights_einsum is None) != (attn_weights_value_einsum is None):
    raise ValueError(
        "`qk_attn_weights_einsum` and `attn_weights_value_einsum` must be "
        "given together.")
  if (precision is not None or einsum_dot_general is not None) and (
      qk_attn_weights_einsum is not None):
    raise ValueError(
        "`qk_attn_weights_einsum`/`attn_weights_value_einsum` are exclusive "
        "with `precision` and `einsum_dot_general`; pass only one of them.")
  if promote_dtype is None:
    query, key, value = _promote((query, key, value), dtype)
  else:
    query, key, value = promote_dtype((query, key, value), dtype=dtype)
  _check_shapes(query, key, value)

  weights = dot_product_attention_weights(
      query, key, bias, mask,
      normalizer=normalizer,
      broadcast_dropout=broadcast_dropout,
      dropout_rng=dropout_rng,
      dropout_rate=dropout_rate,
      deterministic=deterministic,
      dtype=query.dtype,
      precision=precision,
      module=module,
      force_fp32_for_softmax=force_fp32_for_softmax,
      einsum_dot_general=einsum_dot_general,
      einsum=qk_attn_weights_einsum,
      is_causal=is_causal,
  )
  einsum = attn_weights_value_einsum
  if einsum is None:
    einsum = _einsum(precision, einsum_dot_general)
  q_heads, kv_heads = weights.shape[-3], value.shape[-2]
  if q_heads == kv_heads:
    return einsum(_WV, weights, value)
  # Grouped-query attention, as in flax.nnx.
  weights = weights.reshape(weights.shape[:-3] + (kv_heads, q_heads // kv_heads)
                            + weights.shape[-2:])
  out = einsum(_WV_GROUPED, weights, jnp.expand_dims(value, -2))
  return out.reshape(out.shape[:-3] + (q_heads, out.shape[-1]))
