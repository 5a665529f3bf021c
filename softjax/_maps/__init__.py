"""The row-wise maps: scores to distributions along an axis.

* :mod:`~softjax._maps.dense`: softmax and log-softmax.
* :mod:`~softjax._maps.entmax`: sparsemax, entmax15 and α-entmax.
* :mod:`~softjax._maps.normmax`: α-normmax.
* :mod:`~softjax._maps.budget`: budget sparsemax (the capped simplex).
* :mod:`~softjax._maps.gumbel`: Gumbel-Softmax over any of them.

Each public function is ``prepare → member → normalise → finish`` over the
core (:mod:`softjax._core`). This ``__init__`` is the package's interface:
the other products import these names from ``softjax._maps`` only.
"""

from softjax._maps.budget import budget_sparsemax
from softjax._maps.dense import log_softmax
from softjax._maps.dense import softmax
from softjax._maps.entmax import entmax
from softjax._maps.entmax import entmax15
from softjax._maps.entmax import sparsemax
from softjax._maps.gumbel import gumbel_softmax
from softjax._maps.normmax import normmax
