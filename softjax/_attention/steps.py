"""The steps of dot-product attention, shared by every attention function.

Each step is one function: promote the inputs to one dtype, check their
shapes, score queries against keys (grouped-query attention included),
combine ``mask`` and ``is_causal`` into a ``where`` mask, normalise, sow the
weights into a Flax module, apply dropout, and weight the values. The public
functions in :mod:`softjax.attention` are compositions of these, so Flax's
conventions (scaling, promotion, masks, dropout) are written down once.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from softjax import _core
from softjax._attention import tokens
from softjax._maps import entmax
from softjax._maps import softmax

Einsum = Callable[..., jax.Array]

_QK = "...qhd,...khd->...hqk"
_QK_GROUPED = "...qhgd,...kh1d->...hgqk"
_WV = "...hqk,...khd->...qhd"
_WV_GROUPED = "...hgqk,...kh1d->...qhgd"


def promote(
  arrays: tuple[Any, ...],
  dtype: Any,
  promote_dtype: Callable[..., Any] | None = None,
) -> tuple[Any, ...]:
  """One common inexact dtype for ``arrays`` (None entries pass through).

  ``promote_dtype`` is ``flax.nnx``'s hook, called as
  ``promote_dtype(arrays, dtype=dtype)``; without it, Flax's default: the
  inputs' common dtype promoted to inexact, or ``dtype`` when given.
  """
  if promote_dtype is not None:
    return tuple(promote_dtype(arrays, dtype=dtype))
  if dtype is None:
    dtype = jnp.result_type(*(jnp.asarray(a) for a in arrays if a is not None))
    if not jnp.issubdtype(dtype, jnp.inexact):
      dtype = jnp.promote_types(jnp.float32, dtype)
  if not jnp.issubdtype(dtype, jnp.inexact):
    raise ValueError(f"`dtype` must be a floating dtype, got {dtype}.")
  return tuple(None if a is None else jnp.asarray(a, dtype) for a in arrays)


def check_shapes(
  query: jax.Array, key: jax.Array, value: jax.Array | None = None
) -> None:
  """``[batch..., length, heads, depth]`` inputs that fit together."""
  arrays = (query, key) if value is None else (query, key, value)
  names = "query, key" if value is None else "query, key, value"
  shapes = ", ".join(str(a.shape) for a in arrays)
  if any(a.ndim < 3 for a in arrays):
    raise ValueError(
      f"{names} must have shape [batch..., length, heads, depth] (at least "
      f"3 dimensions), got shapes {shapes}."
    )
  if any(a.ndim != query.ndim for a in arrays):
    raise ValueError(f"{names} must have the same rank, got shapes {shapes}.")
  if any(a.shape[:-3] != query.shape[:-3] for a in arrays):
    raise ValueError(
      f"{names} must have the same batch dimensions, got shapes {shapes}."
    )
  if query.shape[-1] != key.shape[-1]:
    raise ValueError(
      f"query and key depths must match, got {query.shape[-1]} and "
      f"{key.shape[-1]}."
    )
  if query.shape[-2] % key.shape[-2]:
    raise ValueError(
      f"query heads ({query.shape[-2]}) must be a multiple of key heads "
      f"({key.shape[-2]}) (grouped-query attention)."
    )
  if value is not None:
    if key.shape[-3] != value.shape[-3]:
      raise ValueError(
        f"key and value lengths must match, got {key.shape[-3]} and "
        f"{value.shape[-3]}."
      )
    if key.shape[-2] != value.shape[-2]:
      raise ValueError(
        f"key and value heads must match, got {key.shape[-2]} and "
        f"{value.shape[-2]}."
      )


def einsum_for(
  einsum: Einsum | None,
  precision: Any,
  dot_general: Callable[..., Any] | None,
  *names: str,
) -> Einsum:
  """``einsum``, or ``jnp.einsum`` at ``precision`` with ``dot_general``.

  A replacement einsum is exclusive with the other two (as in
  ``flax.linen``); ``names`` are the keywords the caller took it from.
  """
  if einsum is not None:
    if precision is not None or dot_general is not None:
      raise ValueError(
        f"`{'`/`'.join(names)}` {'are' if len(names) > 1 else 'is'} "
        "exclusive with `precision` and `einsum_dot_general`; pass only "
        "one of them."
      )
    return einsum
  if dot_general is None:
    return functools.partial(jnp.einsum, precision=precision)
  return functools.partial(
    jnp.einsum, precision=precision, _dot_general=dot_general
  )


def _group(x: jax.Array, kv_heads: int, axis: int) -> jax.Array:
  """Splits the heads ``axis`` into ``(kv_heads, group)`` (flax.nnx order)."""
  axis %= x.ndim
  heads = x.shape[axis]
  return x.reshape(
    x.shape[:axis] + (kv_heads, heads // kv_heads) + x.shape[axis + 1 :]
  )


def _ungroup(x: jax.Array, axis: int) -> jax.Array:
  """Merges the ``(kv_heads, group)`` axes at ``axis`` back into heads."""
  axis %= x.ndim
  return x.reshape(
    x.shape[:axis] + (x.shape[axis] * x.shape[axis + 1],) + x.shape[axis + 2 :]
  )


def scores(
  query: jax.Array,
  key: jax.Array,
  bias: jax.Array | None,
  einsum: Einsum,
  scale: Any = None,
) -> jax.Array:
  """``scale · q·k + bias``: ``[batch..., heads, q_length, kv_length]``.

  As in Flax, the query is scaled before the product (by
  ``1 / sqrt(depth)`` unless ``scale`` is given); with fewer key heads
  than query heads each key head serves a group of query heads.
  """
  if scale is None:
    query = query / jnp.sqrt(query.shape[-1]).astype(query.dtype)
  else:
    query = query * jnp.asarray(scale, query.dtype)
  kv_heads = key.shape[-2]
  if query.shape[-2] == kv_heads:
    out = einsum(_QK, query, key)
  else:
    out = einsum(
      _QK_GROUPED, _group(query, kv_heads, -2), jnp.expand_dims(key, -2)
    )
    out = _ungroup(out, -4)
  return out if bias is None else out + bias


def weighted_values(
  weights: jax.Array, value: jax.Array, einsum: Einsum
) -> jax.Array:
  """``weights · value``: ``[batch..., q_length, heads, v_depth]``."""
  kv_heads = value.shape[-2]
  if weights.shape[-3] == kv_heads:
    return einsum(_WV, weights, value)
  out = einsum(
    _WV_GROUPED, _group(weights, kv_heads, -3), jnp.expand_dims(value, -2)
  )
  return _ungroup(out, -3)


def _boolean_mask(mask: Any) -> jax.Array:
  """``mask`` as booleans: True attends.

  Boolean masks are taken as they are. Flax builds its masks as float 0/1
  arrays (``make_attention_mask``, ``make_causal_mask``, the decode cache's
  ``combine_masks``), so a numeric mask is read as a 0/1 mask and attends
  where it is positive. An additive mask (0 to attend, ``-inf`` or a large
  negative number to block) is a different thing: read as 0/1 it would be
  inverted. A concrete one is refused here with advice; a traced one
  attends nowhere (its entries are never positive), so its rows give zeros,
  never the inverted attention.
  """
  mask = jnp.asarray(mask)
  if mask.dtype == jnp.bool_:
    return mask
  if not jnp.issubdtype(mask.dtype, jnp.number):
    raise TypeError(
      f"`mask` must be boolean (True = attend), got {mask.dtype}."
    )
  if _core.is_concrete(mask):
    values = np.asarray(mask)
    if not np.isin(values, (0, 1)).all():
      odd = values[~np.isin(values, (0, 1))].ravel()[:3].tolist()
      raise TypeError(
        f"`mask` must be boolean (True = attend) or a 0/1 mask as Flax "
        f"builds them; got a {mask.dtype} mask holding {odd}. An additive "
        "mask (0 to attend, -inf to block) goes in `bias`; a boolean one "
        "in `mask`, e.g. `mask=additive == 0`."
      )
  return mask > 0


def where_mask(
  mask: Any,
  is_causal: bool,
  scores_shape: tuple[int, ...],
  window: tuple[int, int] | None = None,
  token_arrays: tokens.Tokens | None = None,
) -> jax.Array | None:
  """The boolean ``where`` mask: ``mask`` (True = attend) and the structure.

  The structure (causality, the window, segments and lengths) is
  :func:`tokens.allowed` on the whole grid of positions.
  """
  masks = []
  if mask is not None:
    masks.append(_boolean_mask(mask))
  q_len, k_len = scores_shape[-2:]
  structure = tokens.allowed(
    jnp.arange(q_len), jnp.arange(k_len), is_causal, window, token_arrays
  )
  if structure is not None:
    if structure.ndim > 2:  # [batch..., q, k]: one mask for every head
      structure = jnp.expand_dims(structure, -3)
    masks.append(structure)
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


def per_head_normalizer(normalizer: Any, alpha: Any, query: Any) -> Any:
  """The checked normaliser, or that of ``alpha`` (one α per head ``(H,)``).

  The convention of ``blockwise_attention``'s ``alpha``: an array α of
  shape ``(num_heads,)`` (or broadcastable to it) is laid out against the
  scores ``[batch..., heads, q, kv]`` here, so callers never reshape it to
  ``(H, 1, 1)``. ``alpha`` None keeps ``normalizer``. ``query`` is
  ``[..., length, heads, depth]``.
  """
  check_normalizer(normalizer)
  if alpha is None:
    return normalizer
  heads = query.shape[-2]
  if normalizer is not softmax:
    raise ValueError(
      "Give `alpha` (the α-entmax map, one α per head allowed) or "
      "`normalizer`, not both."
    )
  value = _core.alpha_as_number_or_array(alpha)
  if isinstance(value, float):
    return lambda s, **kw: entmax(s, value, **kw)
  try:
    ok = jnp.broadcast_shapes(value.shape, (heads,)) == (heads,)
  except ValueError:
    ok = False
  if not ok:
    raise ValueError(
      f"`alpha` of shape {value.shape} must be a number or an array "
      f"broadcastable to (num_heads,) = ({heads},): one α per head."
    )
  per_head = jnp.broadcast_to(value, (heads,))[:, None, None]
  return lambda s, **kw: entmax(s, per_head, **kw)


def check_normalizer(normalizer: Any) -> None:
  if not callable(normalizer):
    raise TypeError(
      "`normalizer` must be a callable `normalizer(scores, *, where)` such "
      f"as `softjax.softmax` or `softjax.entmax15`, got "
      f"{type(normalizer).__name__}."
    )


def normalise(
  normalizer: Callable[..., jax.Array],
  scores: jax.Array,
  where: jax.Array | None,
  dtype: Any,
  force_fp32: bool,
) -> jax.Array:
  """``normalizer(scores, where=where)``, in ``dtype``.

  ``force_fp32`` normalises in float32 and keeps the weights in float32
  when ``dtype`` is not, as ``flax.linen`` does.
  """
  if where is not None:
    shape = jnp.broadcast_shapes(scores.shape, where.shape)
    scores = jnp.broadcast_to(scores, shape)
    where = jnp.broadcast_to(where, shape)
  if force_fp32 and dtype != jnp.float32:
    weights = normalizer(scores.astype(jnp.float32), where=where)
  else:
    weights = jnp.asarray(normalizer(scores, where=where)).astype(dtype)
  if weights.shape != scores.shape:
    raise ValueError(
      f"`normalizer` must return an array of the shape of its input "
      f"{scores.shape}, got {weights.shape}."
    )
  return weights


def sow(module: Any, weights: jax.Array) -> None:
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
      f"weights into, or None; got {type(module).__name__}."
    )


def dropout(
  weights: jax.Array,
  rng: jax.Array | None,
  rate: float,
  broadcast: bool,
  deterministic: bool,
) -> jax.Array:
  """Flax's dropout of the attention weights (scaled by ``1 / keep``).

  ``broadcast`` shares one mask across the batch and head dimensions.
  """
  if deterministic or rate <= 0.0:
    return weights
  if rng is None:
    raise ValueError(
      "`dropout_rng` is required when `dropout_rate` > 0 and "
      "`deterministic` is False."
    )
  keep_prob = 1.0 - rate
  if broadcast:
    shape = (1,) * (weights.ndim - 2) + weights.shape[-2:]
  else:
    shape = weights.shape
  keep = jax.random.bernoulli(rng, keep_prob, shape)
  dtype = weights.dtype
  return weights * (keep.astype(dtype) / jnp.asarray(keep_prob, dtype=dtype))
