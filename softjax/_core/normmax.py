r"""α-normmax: the simplex point maximising ``<p, x> - ||p||_α``.

.. math::
  p = \arg\max_{p \in \Delta} \langle p, x\rangle - \|p\|_\alpha
    = \frac{u}{\sum_j u_j}, \qquad
  u_i = [x_i - \tau]_+^{1/(\alpha - 1)}, \quad \textstyle\sum_i u_i^\alpha = 1.

Its threshold is that of an entmax member: ``u_i^α = [x_i -
τ]_+^{α/(α-1)}`` is the α'-entmax map of the scores ``x / ε'`` with ``ε' =
(α - 1)/α`` and ``α' = 1 + ε' = 2 - 1/α``, so the shared solver finds ``τ``
with the :class:`~softjax._core.entmax.Family` of ``ε'`` (α' lies in (1, 2): the
convex case, secant steps from the left) and normmax is ``p ∝ p'^{1/α}``.
At α = 2 that is entmax15 of ``2 x`` (transcendental-free) and ``p ∝
sqrt(p')``. As α → 1 normmax tends to the arg-max (``||p||_1`` is constant
on the simplex); as α → ∞ to the uniform distribution on the support of
sparsemax (``||p||_∞ = max_i p_i``).

:class:`Normmax` holds α and everything that depends on it: the scores and
member handed to the solver, the weights ``u``, the derivatives from the
output alone and the regulariser terms of the Fenchel-Young loss.

References:
  S. Santos, V. Niculae, D. McNamee, A. F. T. Martins. "Sparse and
  Structured Hopfield Networks". ICML 2024.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from softjax._core.entmax import Family
from softjax._core.member import Member
from softjax._core.member import Residuals
from softjax._core.rows import Rows
from softjax._core.rows import finite_or_zero
from softjax._core.rows import param_cotangent
from softjax._core.rows import safe_log
from softjax._core.rows import safe_total
from softjax._core.rows import scale
from softjax._core.rows import shift_rows
from softjax._core.rows import temperature_cotangent
from softjax._core.rows import varies_along
from softjax._core.solver import threshold

# An array α is evaluated at max(α, 1 + ALPHA_GAP): α = 1 itself is the
# arg-max, with no threshold and unbounded derivatives.
ALPHA_GAP = 1e-6


@jax.tree_util.register_pytree_node_class
class Normmax(Member):
  """α-normmax with α > 1: a Python float or an array (a pytree leaf)."""

  __slots__ = ("alpha",)

  def __init__(self, alpha: float | jax.Array):
    self.alpha = alpha

  @property
  def param(self) -> float | jax.Array:
    return self.alpha

  @classmethod
  def of_alpha(cls, alpha: float | jax.Array, dtype: Any) -> Normmax:
    """The member for a checked α; an array is floored at ``1 + ALPHA_GAP``."""
    if isinstance(alpha, float):
      return cls(alpha)
    return cls(jnp.maximum(jnp.asarray(alpha, dtype), 1.0 + ALPHA_GAP))

  @property
  def _two(self) -> bool:
    """Static α = 2: entmax15's threshold, weights without powers."""
    return not self.learnable and self.alpha == 2.0

  @property
  def inner(self) -> Family:
    """The entmax member sharing the threshold: ε' = (α - 1)/α."""
    return Family((self.alpha - 1.0) / self.alpha)

  # -- the map ----------------------------------------------------------------

  def scores(self, z: jax.Array) -> jax.Array:
    """The scores ``z / ε'`` the inner member is solved on.

    An array ε' divides like a temperature: ``-inf`` (masked) scores stay
    ``-inf`` with a zero derivative in α (not NaN).
    """
    if not self.learnable:
      return z * (1.0 / self.inner.eps)
    return scale(z, self.inner.eps)

  def weights(self, zs: jax.Array, t: jax.Array) -> jax.Array:
    """``u = [1 + ε'(zs - t)]_+^{1/(α-1)}``, from the inner threshold ``t``.

    Differentiable to second order: off the support the base is guarded
    (as :meth:`Family.map_differentiable`), so no ``log1p(-1)`` is ever
    differentiated.
    """
    if self._two:
      return jnp.maximum(1.0 + 0.5 * (zs - t), 0.0)
    d = self.inner.eps * (zs - t)
    live = ~(d <= -1.0)  # NaN stays NaN
    safe = jnp.where(live, d, jnp.zeros((), d.dtype))
    u = jnp.exp(jnp.log1p(safe) * (1.0 / (self.alpha - 1.0)))
    return jnp.where(live, u, jnp.zeros((), d.dtype))

  # -- derivatives, from the output alone --------------------------------------

  def norm(self, p: jax.Array, rows: Rows) -> jax.Array:
    """``N = ||p||_α`` of each row (over all its shards); 1 for a row of
    zeros (all masked), whose root would have an infinite derivative."""
    if self._two:
      return jnp.sqrt(safe_total(rows.sum(p * p)))
    total = safe_total(rows.sum(_power(p, self.alpha)))
    return jnp.exp(jnp.log(total) / self.alpha)

  def slopes(self, p: jax.Array) -> jax.Array:
    """``s = p^(2-α)`` on the support, 0 elsewhere (as the entmax family)."""
    if self._two:
      return (p > 0).astype(p.dtype)
    return _power(p, 2.0 - self.alpha)

  def jacobian_scale(self, norm: jax.Array) -> jax.Array:
    """``N^(α-1) / (α - 1)``, the factor of the Jacobian of normmax."""
    if self._two:
      return norm
    return jnp.exp((self.alpha - 1.0) * jnp.log(norm)) / (self.alpha - 1.0)

  def centred(self, p: jax.Array, norm: jax.Array) -> jax.Array:
    """``x - τ = (p / N)^(α-1)`` on the support, 0 elsewhere."""
    if self._two:
      return p / norm
    return _power(p / norm, self.alpha - 1.0)

  def alpha_cotangent(
    self,
    p: jax.Array,
    g: jax.Array,
    s: jax.Array,
    norm: jax.Array,
    gp: jax.Array,
    rows: Rows,
  ) -> jax.Array:
    """This shard's part of ``<g, ∂p/∂α>`` per row (implicit function).

    With ``u = p/N`` (so ``Σ u^α = 1``), ``κ = 1/(α-1)`` and ``b = u^(2-α)``:
    ``∂u/∂α = -κ (u log u - b m)``, ``m = N Σ u^α log u / α`` (from
    differentiating ``Σ u^α = 1``), and ``∂p/∂α = N (∂u/∂α - p Σ ∂u/∂α)``.
    ``s = p^(2-α)`` and ``gp = <g, p>`` come from the caller; ``u^α = p²/s
    / N^α`` and ``b = s N^α / N²`` then cost no further powers per entry.
    """
    a = self.alpha
    live, log_p = safe_log(p)
    log_norm = jnp.log(norm)
    log_u = jnp.where(live, log_p - log_norm, jnp.zeros((), p.dtype))
    norm_a = jnp.exp(a * log_norm)
    safe_s = jnp.where(live, s, jnp.ones((), p.dtype))
    u_a = jnp.where(live, p * p / safe_s, jnp.zeros((), p.dtype)) / norm_a
    b = s * (norm_a / (norm * norm))
    m = norm * rows.sum(u_a * log_u) / a
    du = (p / norm * log_u - b * m) / (1.0 - a)
    return rows.local_sum((g - gp) * du) * norm

  # -- the normaliser of rows in memory --------------------------------------

  def forward(
    self,
    x: jax.Array,
    temperature: jax.Array | None,
    rows: Rows,
    n_iter: int | None,
  ) -> tuple[jax.Array, Residuals]:
    """α-normmax of prepared scores (masked with ``-inf``): ``(p, residuals)``.

    Plain JAX plus the threshold's ``custom_jvp``, so the loss can call it
    and stay differentiable to second order.
    """
    u = scale(x, temperature)
    z, m = shift_rows(u, rows)
    zs = self.scores(z)
    t, _ = threshold(zs, self.inner, rows, n_iter)
    w = self.weights(zs, t)
    p = w / safe_total(rows.sum(w))
    shift = None
    if varies_along(temperature, x.ndim, rows.axes):
      # x - τ = 1 + ε'(zs - t) on the support, in the unshifted scores.
      shift = finite_or_zero(m + self.inner.eps * t - 1.0)
    return p, Residuals(p, temperature, self, shift)

  def backward(
    self, rows: Rows, res: Residuals, g: jax.Array
  ) -> tuple[Any, ...]:
    """``(dx, dtemperature, dmember)`` from the output alone."""
    p, temperature, member, shift = res  # member: self, as a pytree
    norm = member.norm(p, rows)
    # J = κ N^(α-1) (diag(s) - s p' - p s' + Σs p p'), symmetric, κ =
    # 1/(α-1): J g = κ N^(α-1) (r - p Σr) with r = s (g - <g, p>). Two
    # sums, one after the other (XLA:CPU runs two sums in one pass slower
    # than two).
    gp = rows.sum(g * p)
    s = member.slopes(p)
    r = s * (g - gp)
    du = member.jacobian_scale(norm) * (r - p * rows.sum(r))
    d_member = None
    if member.learnable:
      per_row = member.alpha_cotangent(p, g, s, norm, gp, rows)
      d_member = Normmax(param_cotangent(per_row, member.alpha))
    if temperature is None:
      return du, None, d_member
    v = member.centred(p, norm)
    dt = temperature_cotangent(du, v, temperature, shift)
    return du / temperature, dt, d_member

  # -- the regulariser ||q||_α, for the Fenchel-Young loss -------------------

  def entropy_terms(self, q: jax.Array, rows: Rows) -> jax.Array:
    """``h(q) = q - q (q/N)^(α-1)``: ``Σ h = 1 - ||q||_α`` on the simplex."""
    return q - q * self.centred(q, self.norm(q, rows))

  def entropy_gradient(self, q: jax.Array, rows: Rows) -> jax.Array:
    """``∇||q||_α = (q / N)^(α-1)``."""
    return self.centred(q, self.norm(q, rows))

  def entropy_alpha_derivative(self, q: jax.Array, rows: Rows) -> jax.Array:
    """``∂h/∂α`` at fixed ``q``: ``-q (q/N)^(α-1) log(q/N) / α``.

    Its row sum is ``-∂||q||_α/∂α``.
    """
    norm = self.norm(q, rows)
    live, log_q = safe_log(q)
    log_r = jnp.where(live, log_q - jnp.log(norm), jnp.zeros((), q.dtype))
    return -q * self.centred(q, norm) * log_r / self.alpha


def _power(q: jax.Array, exponent: Any) -> jax.Array:
  """``q ** exponent`` for ``q > 0``, 0 elsewhere; differentiable at 0."""
  live, log_q = safe_log(q)
  return jnp.where(live, jnp.exp(exponent * log_q), jnp.zeros((), q.dtype))
