"""Attention built on the maps: dense, and block-wise in linear memory.

* :mod:`~softjax._attention.steps`: the steps of dense dot-product
  attention, shared by every attention function.
* :mod:`~softjax._attention.tokens`: the token structure both attention
  functions take (segment ids, lengths, sliding window, soft cap) and the
  one rule of which keys a query sees.
* :mod:`~softjax._attention.dense`: ``dot_product_attention`` and
  ``dot_product_attention_weights``, compositions of those steps.
* :mod:`~softjax._attention.blockwise`: ``blockwise_attention``, its
  argument checks and its ``custom_vjp``, over
  :mod:`~softjax._attention.layout` (the internal layout and the block
  plan), :mod:`~softjax._attention.sweeps` (the two sweeps every pass is
  made of), :mod:`~softjax._attention.rules` (a block's weights from the
  saved statistics), :mod:`~softjax._attention.forward` and
  :mod:`~softjax._attention.backward` (the passes).

This ``__init__`` is the package's interface (the public module
``softjax.attention`` re-exports it).
"""

from softjax._attention.blockwise import blockwise_attention
from softjax._attention.dense import Normalizer
from softjax._attention.dense import dot_product_attention
from softjax._attention.dense import dot_product_attention_weights
