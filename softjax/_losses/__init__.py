"""The losses: Fenchel-Young losses in memory and fused with the output layer.

* :mod:`~softjax._losses.fenchel_young`: the machinery of the in-memory
  losses (their terms, custom VJP and argument handling);
  :mod:`~softjax._losses.in_memory` their public functions.
* :mod:`~softjax._losses.fused`: the entry point of the losses fused with
  the output layer (checks and defaults), over
  :mod:`~softjax._losses.fused_softmax` (α = 1),
  :mod:`~softjax._losses.fused_sparse` (α > 1) and their loop over the
  vocabulary, :mod:`~softjax._losses.vocab`;
  :mod:`~softjax._losses.linear` their public functions.

This ``__init__`` is the package's interface (the public module
``softjax.losses`` re-exports it).
"""

from softjax._losses.in_memory import entmax15_loss
from softjax._losses.in_memory import entmax_loss
from softjax._losses.in_memory import normmax_loss
from softjax._losses.in_memory import softmax_loss
from softjax._losses.in_memory import sparsemax_loss
from softjax._losses.linear import linear_entmax15_loss
from softjax._losses.linear import linear_entmax_loss
from softjax._losses.linear import linear_softmax_loss
from softjax._losses.linear import linear_sparsemax_loss
