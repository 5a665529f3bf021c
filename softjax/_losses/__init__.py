"""The losses: Fenchel-Young losses in memory and fused with the output layer.

This ``__init__`` is the package's interface (the public module
``softjax.losses`` re-exports it).
"""
