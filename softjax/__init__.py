"""softjax: the functions that turn scores into distributions, for JAX.

Dense (:func:`softmax`, :func:`log_softmax`) and sparse normalisers, with
hand-written gradients, masks, temperatures and the conventions of ``jax.nn``.
"""

# Redundant aliases mark the public submodules as re-exported.
from softjax import attention as attention
from softjax import checks as checks
from softjax import losses as losses
from softjax._maps import budget_sparsemax
from softjax._maps import entmax
from softjax._maps import entmax15
from softjax._maps import gumbel_softmax
from softjax._maps import log_softmax
from softjax._maps import normmax
from softjax._maps import softmax
from softjax._maps import sparsemax

__version__ = "0.1.0.dev0"

__all__ = [
  "budget_sparsemax",
  "entmax",
  "entmax15",
  "gumbel_softmax",
  "log_softmax",
  "normmax",
  "softmax",
  "sparsemax",
]
