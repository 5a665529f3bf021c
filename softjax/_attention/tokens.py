"""Which keys a query may see, from a few small arrays: the token structure.

Real training and serving describe their masks by token, not by pair:
packed documents by their segment ids, padding by the valid lengths, local
attention by a window, and the scores' range by a soft cap. Both attention
functions take the same keywords; here they are checked once
(:func:`structure`) and turned into the one rule of who sees whom
(:func:`allowed`), which the dense path evaluates on the whole
``[q_length, kv_length]`` grid and the block-wise path on each block pair
only (never as an ``[q, kv]`` array). The soft cap itself is the core's
(``_core.soft_cap``, shared with the losses).

The conventions are those of ``jax.nn.dot_product_attention``
(``query_seq_lengths``, ``key_value_seq_lengths``, ``local_window_size``),
of Splash attention (``q_segment_ids``, ``kv_segment_ids``) and of Gemma 2
(``cap * tanh(scores / cap)``).
"""

from __future__ import annotations

import numbers
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Tokens(NamedTuple):
  """Checked per-token arrays, every one ``int32`` (None: not given).

  Ids are ``[batch..., length]`` and lengths ``[batch...]``, broadcast to
  the batch dimensions of the query.
  """

  q_ids: jax.Array | None
  kv_ids: jax.Array | None
  q_lengths: jax.Array | None
  kv_lengths: jax.Array | None


class Static(NamedTuple):
  """The hashable token settings: window ``(left, right)`` and soft cap."""

  window: tuple[int, int] | None = None
  cap: float | None = None


NONE = Static()  # no window, no cap


def _integer_array(x: Any, name: str, shape: tuple[int, ...]) -> jax.Array:
  """``x`` as int32 broadcast to ``shape``, or an error naming ``name``."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise TypeError(
      f"`{name}` must be an integer array, got dtype {x.dtype}; segment ids "
      "and lengths are token counts and labels, cast them with "
      "`.astype(jnp.int32)`."
    )
  try:
    ok = jnp.broadcast_shapes(x.shape, shape) == shape and x.ndim <= len(shape)
  except ValueError:
    ok = False
  if not ok:
    raise ValueError(
      f"`{name}` of shape {x.shape} does not broadcast to {shape} "
      "([batch...] for lengths, [batch..., length] for segment ids)."
    )
  return jnp.broadcast_to(x.astype(jnp.int32), shape)


def _check_lengths(x: jax.Array, name: str, limit: int) -> None:
  """Concrete lengths must lie in ``[0, limit]``; traced ones are clipped."""
  try:
    values = np.asarray(x)
  except (jax.errors.TracerArrayConversionError, TypeError):
    return  # traced: clipped to [0, limit] where they are used
  if values.size and (values.min() < 0 or values.max() > limit):
    raise ValueError(
      f"`{name}` must lie in [0, {limit}] (the sequence length), got values "
      f"from {values.min()} to {values.max()}."
    )


def _segments(
  segment_ids: Any, q_segment_ids: Any, kv_segment_ids: Any, lengths: Any
) -> tuple[Any, Any]:
  """``(q_ids, kv_ids)`` from the one or the two segment arguments."""
  if segment_ids is None:
    if (q_segment_ids is None) != (kv_segment_ids is None):
      raise ValueError(
        "Give both `q_segment_ids` and `kv_segment_ids` (or one "
        "`segment_ids` for both when the lengths match), not one of them."
      )
    return q_segment_ids, kv_segment_ids
  if q_segment_ids is not None or kv_segment_ids is not None:
    raise ValueError(
      "Give either `segment_ids` or `q_segment_ids` and `kv_segment_ids`, "
      "not both."
    )
  if lengths[0] != lengths[1]:
    raise ValueError(
      f"`segment_ids` serves queries and keys alike, so it needs q_length == "
      f"kv_length, got {lengths[0]} and {lengths[1]}; pass `q_segment_ids` "
      "and `kv_segment_ids`."
    )
  return segment_ids, segment_ids


def tokens(
  batch: tuple[int, ...],
  lengths: tuple[int, int],
  segment_ids: Any = None,
  q_segment_ids: Any = None,
  kv_segment_ids: Any = None,
  q_lengths: Any = None,
  kv_lengths: Any = None,
) -> Tokens | None:
  """The checked per-token arrays of a call (None when none is given)."""
  q_ids, kv_ids = _segments(segment_ids, q_segment_ids, kv_segment_ids, lengths)
  if q_ids is None and q_lengths is None and kv_lengths is None:
    return None
  out = []
  for name, x, shape in (
    ("q_segment_ids", q_ids, batch + lengths[:1]),
    ("kv_segment_ids", kv_ids, batch + lengths[1:]),
    ("q_lengths", q_lengths, batch),
    ("kv_lengths", kv_lengths, batch),
  ):
    if segment_ids is not None and name.endswith("segment_ids"):
      name = "segment_ids"
    out.append(None if x is None else _integer_array(x, name, shape))
  for name, x, limit in zip(("q_lengths", "kv_lengths"), out[2:], lengths):
    if x is not None:
      _check_lengths(x, name, limit)
  return Tokens(*out)


def _window(local_window_size: Any) -> tuple[int, int] | None:
  if local_window_size is None:
    return None
  pair = local_window_size
  if isinstance(pair, numbers.Integral):
    pair = (pair, pair)
  if (
    not isinstance(pair, (tuple, list))
    or len(pair) != 2
    or not all(
      isinstance(w, numbers.Integral) and not isinstance(w, bool) for w in pair
    )
  ):
    raise TypeError(
      "`local_window_size` must be a Python int or a (left, right) pair of "
      f"ints (it decides which blocks are visited), got {local_window_size!r}."
    )
  if min(pair) < 0:
    raise ValueError(
      f"`local_window_size` must be non-negative, got {local_window_size!r}."
    )
  return int(pair[0]), int(pair[1])


def _cap(logits_soft_cap: Any) -> float | None:
  if logits_soft_cap is None:
    return None
  if isinstance(logits_soft_cap, bool) or not isinstance(
    logits_soft_cap, numbers.Real
  ):
    raise TypeError(
      "`logits_soft_cap` must be a Python float (it is part of the compiled "
      f"computation), got {type(logits_soft_cap).__name__}."
    )
  if not logits_soft_cap > 0 or not np.isfinite(logits_soft_cap):
    raise ValueError(
      f"`logits_soft_cap` must be positive and finite, got {logits_soft_cap}."
    )
  return float(logits_soft_cap)


def static(local_window_size: Any, logits_soft_cap: Any) -> Static:
  """The checked window and cap (both Python numbers: they are static)."""
  return Static(_window(local_window_size), _cap(logits_soft_cap))


def parse(
  query: jax.Array,
  key: jax.Array,
  segments: tuple[Any, Any, Any],
  lengths: tuple[Any, Any],
  settings: tuple[Any, Any],
) -> tuple[Static, Tokens | None]:
  """The checked structure of a call: ``(static settings, token arrays)``.

  ``segments`` is ``(segment_ids, q_segment_ids, kv_segment_ids)``,
  ``lengths`` ``(q_lengths, kv_lengths)`` and ``settings``
  ``(local_window_size, logits_soft_cap)``; ``query`` and ``key`` are in
  the layout ``[batch..., length, heads, depth]``.
  """
  shape = (query.shape[-3], key.shape[-3])
  toks = tokens(query.shape[:-3], shape, *segments, *lengths)
  return static(*settings), toks


def band(causal: bool, window: tuple[int, int] | None) -> tuple[float, float]:
  """``(lo, hi)``: query q sees key k only if ``lo <= k - q <= hi``.

  ``is_causal`` caps ``hi`` at 0 (top-left aligned, as ``jnp.tril``); a
  window ``(left, right)`` gives ``[-left, right]``.
  """
  lo, hi = -np.inf, np.inf
  if window is not None:
    lo, hi = -window[0], window[1]
  if causal:
    hi = min(hi, 0)
  return lo, hi


def allowed(
  q_pos: jax.Array,
  k_pos: jax.Array,
  causal: bool,
  window: tuple[int, int] | None,
  tokens: Tokens | None = None,
) -> jax.Array | None:
  """Whether query ``q_pos`` may see key ``k_pos``: ``[batch..., q, k]``.

  ``q_pos`` (``[q]``) and ``k_pos`` (``[k]``) are positions in the
  sequences; ``tokens`` holds the ids of those positions (``[batch...,
  q]``, ``[batch..., k]``) and the lengths. A query sees a key when the key
  is in the query's band (:func:`band`), both lie within their valid
  lengths, and they share a segment. None when nothing is masked.
  """
  keep = []
  lo, hi = band(causal, window)
  offset = k_pos[None, :] - q_pos[:, None]
  if lo > -np.inf:
    keep.append(offset >= lo)
  if hi < np.inf:
    keep.append(offset <= hi)
  if tokens is not None:
    if tokens.q_ids is not None:
      keep.append(tokens.q_ids[..., :, None] == tokens.kv_ids[..., None, :])
    if tokens.q_lengths is not None:
      keep.append((q_pos < tokens.q_lengths[..., None])[..., :, None])
    if tokens.kv_lengths is not None:
      keep.append((k_pos < tokens.kv_lengths[..., None])[..., None, :])
  if not keep:
    return None
  out = keep[0]
  for k in keep[1:]:
    out = out & k
  return out
