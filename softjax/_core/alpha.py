"""The one place that turns an α into a member.

α arrives as a Python number (a static member) or an array (learnable),
laid out as its caller needs:

* :func:`for_rows`: a normaliser's α, broadcastable to the scores with size
  1 along the normalised axes (one per row or per head);
* :func:`for_examples`: a loss's α, broadcastable to the loss's shape;
* :func:`for_heads`: block-wise attention's α, one per query head, laid
  out ``[1, Hkv, G, 1]`` like the heads of its internal layout;
* :func:`for_tokens`: a fused loss's α, one per token.

Each checks α at trace time (``args``) and returns :class:`Softmax` for a
static α = 1, :class:`~softjax._core.normmax.Normmax` for normmax, else the
entmax :class:`~softjax._core.entmax.Family`.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from softjax._core import args
from softjax._core.entmax import Family
from softjax._core.member import Member
from softjax._core.normmax import Normmax
from softjax._core.softmax import Softmax


def member(alpha: float | Any, dtype: Any, normmax: bool = False) -> Member:
  """The member of a checked α (a float, or an array in its final layout)."""
  if normmax:
    return Normmax.of_alpha(alpha, dtype)
  if isinstance(alpha, float) and alpha == 1.0:
    return Softmax()
  return Family.of_alpha(alpha, dtype)


def for_rows(
  alpha: Any,
  shape: tuple[int, ...],
  axes: tuple[int, ...],
  dtype: Any,
  normmax: bool = False,
) -> Member:
  """A normaliser's member: α a float or one per row of scores ``shape``."""
  alpha = args.canonical_alpha(alpha, shape, axes, normmax)
  return member(alpha, dtype, normmax)


def for_examples(
  alpha: Any,
  loss_shape: tuple[int, ...],
  axes: tuple[int, ...],
  dtype: Any,
  normmax: bool = False,
) -> Member:
  """A loss's member: α a float or one per example, expanded at ``axes``."""
  alpha = args.check_alpha_per_example(alpha, loss_shape, normmax)
  if not isinstance(alpha, float):
    alpha = jnp.expand_dims(jnp.broadcast_to(alpha, loss_shape), axes)
  return member(alpha, dtype, normmax)


def for_tokens(alpha: Any, batch: tuple[int, ...], dtype: Any) -> Member:
  """A fused loss's member: α a float, or one per token of ``batch``.

  An array α is flattened to ``[tokens, 1]``, one per row of the fused
  losses' ``[tokens, k]`` candidates.
  """
  alpha = args.check_alpha_per_example(alpha, batch)
  if not isinstance(alpha, float):
    alpha = jnp.broadcast_to(alpha, batch).reshape(-1, 1)
  return member(alpha, dtype)


def for_heads(alpha: Any, heads: int, kv_heads: int, dtype: Any) -> Member:
  """Block-wise attention's member: static, or an array ε ``[1, Hkv, G, 1]``.

  An array α (one per head, broadcastable to ``(heads,)``) is taken through
  :meth:`Family.of_alpha` (ε floored at 0 with its gradient passed
  straight through) and then laid out like the heads of the internal
  layout; autodiff maps its cotangent back to α's shape.
  """
  array = args.alpha_as_number_or_array(alpha)
  if isinstance(array, float):
    args.check_alpha_values(array)
    return member(array, dtype)
  try:
    shape = jnp.broadcast_shapes(array.shape, (heads,))
  except ValueError:
    shape = None
  if shape != (heads,):
    raise ValueError(
      f"`alpha` of shape {array.shape} must be a number or an array "
      f"broadcastable to (num_heads,) = ({heads},): one α per head."
    )
  args.check_alpha_values(alpha)
  eps = Family.of_alpha(array, dtype).eps
  eps = jnp.broadcast_to(eps, (heads,))
  return Family(eps.reshape(1, kv_heads, heads // kv_heads, 1))
