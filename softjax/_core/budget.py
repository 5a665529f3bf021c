r"""Budget sparsemax: the Euclidean projection onto the capped simplex.

.. math::
  p = \arg\min_{0 \le p \le 1,\ \sum_i p_i = k} \|p - x\|^2
    = \mathrm{clip}(x - \tau, 0, 1).

:class:`Budget` is its member for the shared solver (``solver``), beside
the entmax :class:`~softjax._core.entmax.Family`, with the same method names.
With scores ``z`` shifted so that the row maximum is 0 the map is ``clip(1 +
z - t, 0, 1)`` (``τ = t - 1``), the sparsemax map capped at 1: at ``k = 1``
nothing reaches the cap and it is sparsemax. The solver wants a row sum
whose target is 1, so the member's ``map`` divides by ``k``.

The row sum is piecewise linear and decreasing, but neither convex nor
concave (an entry leaving the cap steepens it, one reaching 0 flattens it),
so the member is ``bracketed``: the solver keeps a bracket of the root from
the first point on, takes secant steps only strictly inside it (on the
root's linear piece a secant step is exact, as in Michelot's algorithm) and
otherwise the bracket's geometric midpoint, which crosses a bracket made
wide by a far outlier (``-1e9`` padding) in a few steps.

References:
  W. Wang, C. Lu. "Projection onto the Capped Simplex". arXiv:1503.01002,
  2015.
  A. F. T. Martins, R. F. Astudillo. "From Softmax to Sparsemax". ICML 2016.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from softjax._core.member import Member
from softjax._core.member import Residuals
from softjax._core.rows import Rows
from softjax._core.rows import finite_or_zero
from softjax._core.rows import param_cotangent
from softjax._core.rows import safe_total
from softjax._core.rows import scale
from softjax._core.rows import shift_rows
from softjax._core.rows import temperature_cotangent
from softjax._core.rows import varies_along
from softjax._core.solver import default_n_iter
from softjax._core.solver import threshold


@jax.tree_util.register_pytree_node_class
class Budget(Member):
  """The capped-simplex member, with budget ``k``: a float or an array.

  A pytree like :class:`~softjax._core.entmax.Family`: a float ``k`` is static,
  an array ``k`` (one per row) its one leaf, which receives gradients.
  """

  __slots__ = ("k",)

  # A bracket kept from the first point, secant steps only inside it (see
  # solver._secant_step); the warm start from block maxima applies.
  bracketed = True
  bisects = False

  def __init__(self, k: float | jax.Array):
    self.k = k

  @property
  def param(self) -> float | jax.Array:
    return self.k

  @classmethod
  def of_k(cls, k: float | jax.Array, dtype: Any) -> Budget:
    """The member for a checked ``k`` (a float, or an array)."""
    return cls(k if isinstance(k, float) else jnp.asarray(k, dtype))

  def rowwise(self, shape: tuple[int, ...], dtype: Any) -> Budget:
    """An array ``k`` broadcast to the per-row ``shape`` of the threshold."""
    if not self.learnable:
      return self
    return Budget(jnp.broadcast_to(self.k, shape).astype(dtype))

  def solvable(self) -> Budget:
    """The member the solver runs on: a traced ``k <= 0`` taken as 1.

    Those rows' output is set to zeros afterwards (:meth:`empty_rows`); the
    solver only needs a root to exist.
    """
    if not self.learnable:
      return self
    return Budget(jnp.where(self.k > 0, self.k, jnp.ones((), self.k.dtype)))

  def empty_rows(self, t: jax.Array) -> jax.Array:
    """The threshold; 1 (every entry 0) where an array ``k <= 0``, NaN
    where ``k`` is NaN."""
    if not self.learnable:
      return t
    other = jnp.where(self.k <= 0, 1.0, jnp.nan).astype(t.dtype)
    return jnp.where(self.k > 0, t, other)

  # -- the map ----------------------------------------------------------------

  def capped(self, z: jax.Array, t: jax.Array) -> jax.Array:
    """The output ``clip(1 + z - t, 0, 1)``: exactly 0 or 1 off the fraction."""
    return jnp.clip(1.0 + (z - t), 0.0, 1.0)

  def map(self, z: jax.Array, t: jax.Array) -> jax.Array:
    """``capped / k``, whose row sum is 1 at the root."""
    if not self.learnable and self.k == 1.0:
      return self.capped(z, t)
    return self.capped(z, t) * (1.0 / self.k)

  def map_differentiable(self, z: jax.Array, t: jax.Array) -> jax.Array:
    return self.map(z, t)

  def linearized(self, total: jax.Array) -> jax.Array:
    """The row sum itself: piecewise linear already."""
    return total - 1.0

  def bracket(
    self, n: jax.Array, lowest: jax.Array
  ) -> tuple[jax.Array, jax.Array]:
    """Closed-form bracket ``[lo, hi]`` of the threshold of a row.

    ``n`` is the row's length and ``lowest`` its lowest live shifted score.
    At ``t = lowest`` every live entry is capped at 1 (a sum of at least
    ``k``); at ``t = 1 - k/n`` no entry exceeds ``k/n`` (at most ``k``). For
    ``k <= 1`` the largest entry alone reaches 1 at ``t = 0``.
    """
    zero = jnp.zeros_like(lowest)
    lo = jnp.where(jnp.isnan(lowest), zero, lowest)
    if not self.learnable and self.k <= 1.0:
      lo = jnp.maximum(lo, zero)
    n_row = jnp.maximum(jnp.asarray(n, lowest.dtype), 1)
    return lo, jnp.maximum(1.0 - self.k / n_row, lo)

  def midpoint(self, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """The geometric midpoint of ``2 - lo`` and ``2 - hi`` (both >= 1).

    Close to the arithmetic one for a narrow bracket; a bracket stretched
    by a far outlier is crossed in a few steps rather than one per halving.
    """
    return 2.0 - jnp.sqrt(2.0 - lo) * jnp.sqrt(2.0 - hi)

  # -- derivatives ------------------------------------------------------------

  def slopes(self, q: jax.Array) -> jax.Array:
    """``∂q/∂z`` for ``q = map(z, t)``: ``1/k`` on the fraction, else 0."""
    inv_k = 1.0 / self.k
    fractional = (q > 0) & (q < inv_k)
    return jnp.where(fractional, inv_k, jnp.zeros((), q.dtype))

  def param_sensitivity(self, q: jax.Array) -> jax.Array:
    """``∂q/∂k`` at a fixed threshold: ``-q / k``."""
    return -q / self.k

  # -- the normaliser of rows in memory --------------------------------------

  def forward(
    self,
    x: jax.Array,
    temperature: jax.Array | None,
    rows: Rows,
    n_iter: int | None,
  ) -> tuple[jax.Array, Residuals]:
    """Budget sparsemax of prepared scores (masked with ``-inf``)."""
    u = scale(x, temperature)
    z, m = shift_rows(u, rows)
    if n_iter is None:
      # Rows with far outliers take more steps than the entmax family's
      # rows; the loop still stops once every row has converged.
      n_iter = 2 * default_n_iter(z.dtype)
    t, _ = threshold(z, self.solvable(), rows, n_iter)
    t = self.empty_rows(t)
    p = self.capped(z, t)
    shift = None
    if varies_along(temperature, x.ndim, rows.axes):
      shift = finite_or_zero(t + m)
    return p, Residuals(p, temperature, self, shift)

  def backward(
    self, rows: Rows, res: Residuals, g: jax.Array
  ) -> tuple[Any, ...]:
    """``(dx, dtemperature, dk)``: ``s (g - <s, g>/|F|)`` with ``s = 1_F``."""
    p, temperature, member, shift = res  # member: self, as a pytree
    s = fraction(p)
    count = safe_total(rows.sum(s))
    du = s * (g - rows.sum(s * g) / count)
    d_member = None
    if member.learnable:
      # dp/dk = s / |F|. This shard's part; param_cotangent adds the shards.
      per_row = rows.local_sum(s * g) / count
      d_member = Budget(param_cotangent(per_row, member.k))
    if temperature is None:
      return du, None, d_member
    # On the fraction 1 + z - t = p, so z - t = p - 1 there.
    dt = temperature_cotangent(du, s * (p - 1.0), temperature, shift)
    return du / temperature, dt, d_member


def fraction(p: jax.Array) -> jax.Array:
  """``1`` where ``0 < p < 1`` (the entries that move with the scores)."""
  return ((p > 0) & (p < 1)).astype(p.dtype)
