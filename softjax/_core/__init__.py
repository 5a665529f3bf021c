"""The core every product of softjax is built on.

* :mod:`~softjax._core.args`: argument checks and canonicalisation at trace
  time (errors name the argument and say what to pass instead).
* :mod:`~softjax._core.rows`: what every normaliser shares: ``prepare`` and
  ``finish``, :class:`Rows` (reductions along a possibly sharded row), the
  select-free row shifts, safe totals and the cotangents of array
  parameters.
* :mod:`~softjax._core.member`: the member protocol. A member owns a map
  and everything that depends on its parameter (α, ``k``): the map, its
  forward and backward passes, what the solver and the losses ask of it.
  The members: :mod:`~softjax._core.softmax` (α = 1, with the online
  log-sum-exp of rows held in blocks), :mod:`~softjax._core.entmax` (the
  entmax family, ``Family``), :mod:`~softjax._core.normmax`,
  :mod:`~softjax._core.budget`; :mod:`~softjax._core.alpha` turns an α into
  one.
* :mod:`~softjax._core.sharding`: arrays typed for ``shard_map`` and sharded
  ``jit`` (``filled``), cotangents summed over replicated mesh axes.
* :mod:`~softjax._core.solver`: the threshold root-finder, driven by a
  caller-supplied row sum.
* :mod:`~softjax._core.order`: cotangents of the block-wise passes, which
  forward mode may differentiate again but reverse mode may not.
* :mod:`~softjax._core.docs`: docstring text that several public functions
  share.

This ``__init__`` is the core's interface: the products (``_maps``,
``_attention``, ``_losses``) import the names below from ``softjax._core``
and nothing from its modules.
"""

from softjax._core.alpha import for_examples as member_for_examples
from softjax._core.alpha import for_heads as member_for_heads
from softjax._core.alpha import for_rows as member_for_rows
from softjax._core.alpha import for_tokens as member_for_tokens
from softjax._core.args import Axis
from softjax._core.args import alpha_as_number_or_array
from softjax._core.args import array_and_dtype
from softjax._core.args import as_float_array
from softjax._core.args import canonical_alpha
from softjax._core.args import canonical_labels
from softjax._core.args import canonical_temperature
from softjax._core.args import canonicalize_axis
from softjax._core.args import check_alpha_per_example
from softjax._core.args import check_alpha_values
from softjax._core.args import check_axis_name
from softjax._core.args import check_broadcastable
from softjax._core.args import check_callable
from softjax._core.args import check_k
from softjax._core.args import check_key
from softjax._core.args import check_label_values
from softjax._core.args import check_loss_options
from softjax._core.args import check_n_iter
from softjax._core.args import check_per_row
from softjax._core.args import check_static_bool
from softjax._core.args import check_token_labels
from softjax._core.args import check_where
from softjax._core.args import compute_dtype
from softjax._core.args import is_concrete
from softjax._core.budget import Budget
from softjax._core.cap import soft_cap
from softjax._core.cap import soft_cap_slope
from softjax._core.docs import shared as shared_docs
from softjax._core.eager import cached as eager_cached
from softjax._core.entmax import EPS_MIN
from softjax._core.entmax import Family
from softjax._core.member import Member
from softjax._core.member import Residuals
from softjax._core.normmax import ALPHA_GAP
from softjax._core.normmax import Normmax
from softjax._core.order import first_order_only
from softjax._core.order import forward_mode_exact
from softjax._core.rows import Prepared
from softjax._core.rows import Rows
from softjax._core.rows import exp_total
from softjax._core.rows import finish
from softjax._core.rows import finite_or_zero
from softjax._core.rows import param_cotangent
from softjax._core.rows import prepare
from softjax._core.rows import reduce_to_shape
from softjax._core.rows import safe_log
from softjax._core.rows import safe_total
from softjax._core.rows import scale
from softjax._core.rows import shift_rows
from softjax._core.rows import shift_rows_for_exp
from softjax._core.rows import temperature_cotangent
from softjax._core.rows import varies_along
from softjax._core.sharding import filled
from softjax._core.sharding import match_vma
from softjax._core.softmax import LSE
from softjax._core.softmax import Softmax
from softjax._core.softmax import lse_add
from softjax._core.softmax import lse_finish
from softjax._core.softmax import lse_start
from softjax._core.solver import RowSum
from softjax._core.solver import default_n_iter
from softjax._core.solver import find_threshold
from softjax._core.solver import threshold
