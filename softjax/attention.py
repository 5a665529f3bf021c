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
block by block, never holding the ``[heads, q_length, kv_length]`` scores,
for softmax and every sparse α-entmax map (α >= 1, or one learnable α per
head).

Flax is not needed to use this module; it is imported only to sow the
attention weights into a Flax module given as ``module=``.
"""

from __future__ import annotations

from softjax._attention import Normalizer as Normalizer
from softjax._attention import blockwise_attention
from softjax._attention import dot_product_attention
from softjax._attention import dot_product_attention_weights

__all__ = [
  "blockwise_attention",
  "dot_product_attention",
  "dot_product_attention_weights",
]
