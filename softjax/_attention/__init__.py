"""Attention built on the maps: dense, and block-wise in linear memory.

This ``__init__`` is the package's interface (the public module
``softjax.attention`` re-exports it).
"""

from softjax._attention.blockwise import blockwise_attention
