r"""The entmax family: everything that depends on ε = α − 1.

One :class:`Family` is built per call from α (by :mod:`softjax._core.alpha`;
a static α = 1 gets its subclass :class:`~softjax._core.softmax.Softmax`)
and handed to the solver, the normalisers' forward and backward passes and
the losses. It is the only place
that asks whether ε is a Python float (a static member, where ε = 1 is
sparsemax and ε = 1/2 is entmax15, each with transcendental-free formulas) or
an array (one learnable α per row, a leaf that receives gradients).

With scores ``z`` shifted so that the row maximum is 0, the members are

.. math::
  p_i(t) = [1 + \varepsilon (z_i - t)]_+^{1/\varepsilon},
  \qquad \text{with } t \text{ such that } \textstyle\sum_i p_i(t) = 1,

the usual ``[(α-1) z - τ]_+^{1/(α-1)}`` with ``τ = ε t - 1``. This form stays
finite as α → 1, where ``p_i(t)`` tends to ``exp(z_i - t)`` (softmax, ``t =
logsumexp(z)``), and keeps ``t`` of order one, so float32 rounding of ``z_i -
t`` stays at the level of ``eps``. Everything a caller needs is computed from
``p`` alone (the normalisers keep only their output for the backward pass).

References:
  B. Peters, V. Niculae, A. F. T. Martins. "Sparse Sequence-to-Sequence
  Models". ACL 2019.
  G. M. Correia, V. Niculae, A. F. T. Martins. "Adaptively Sparse
  Transformers". EMNLP 2019.
  M. Blondel, A. F. T. Martins, V. Niculae. "Learning with Fenchel-Young
  Losses". JMLR 21(35), 2020.
"""

from __future__ import annotations

from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

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

# An array α is evaluated at max(α - 1, EPS_MIN): the formulas stay free of
# selects (which make XLA's CPU backend several times slower) and the result
# differs from softmax at α = 1 by at most 0.54 * EPS_MIN in absolute terms.
EPS_MIN = 1e-7


@jax.tree_util.register_pytree_node_class
class Family(Member):
  """α-entmax with ``eps = α - 1``: a Python float or an array (a leaf)."""

  __slots__ = ("eps",)

  def __init__(self, eps: float | jax.Array):
    self.eps = eps

  @property
  def param(self) -> float | jax.Array:
    """The member's parameter, ε (what an array ε's cotangent is for)."""
    return self.eps

  @classmethod
  def of_alpha(cls, alpha: float | jax.Array, dtype: Any) -> Family:
    """The member for a checked α (a float, or an array with α's shape).

    An array α below 1 (only a traced α can be) is taken as 1, with its
    gradient passed straight through, so that α = 1 is learnable from
    either side.
    """
    if isinstance(alpha, float):
      return cls(alpha - 1.0)
    eps = jnp.asarray(alpha, dtype) - 1.0
    # eps - (eps - max(eps, 0)) is exactly max(eps, 0), with eps's gradient.
    below = jnp.minimum(eps, jnp.zeros((), dtype))
    return cls(eps - lax.stop_gradient(below))

  # -- what kind of member --------------------------------------------------

  @property
  def _e(self) -> float | jax.Array:
    """ε for the map and its derivatives: an array is floored at EPS_MIN.

    The map divides by ε; the entropy terms, which are continuous at ε = 0
    in the form used here, take the exact ε.
    """
    if not self.learnable:
      return self.eps
    return jnp.maximum(self.eps, jnp.asarray(EPS_MIN, self.eps.dtype))

  @property
  def convex(self) -> bool | jax.Array:
    """Whether the linearised row sum is convex in ``t`` (α <= 2)."""
    return self._e <= 1.0

  # Secant steps from the left on the convex (or bisection on the concave)
  # linearised sum; members with caps set it (see solver._secant_step).
  bracketed = False

  @property
  def bisects(self) -> bool:
    """Static α > 2: the solver bisects, and has no use for a start."""
    return not self.learnable and self.eps > 1.0

  def rowwise(self, shape: tuple[int, ...], dtype: Any) -> Family:
    """An array ε broadcast to the per-row ``shape`` of the threshold."""
    if not self.learnable:
      return self
    return Family(jnp.broadcast_to(self.eps, shape).astype(dtype))

  # -- the map ----------------------------------------------------------------

  def map(self, z: jax.Array, t: jax.Array) -> jax.Array:
    """The unnormalised map ``p(t) = [1 + ε (z - t)]_+^(1/ε)``.

    Exactly zero off the support and for ``-inf`` scores; NaN stays NaN. Only
    clamps, no selects: ``exp(log1p(-1) / ε) = exp(-inf) = 0`` does the
    work. Static ε = 1 (sparsemax) and ε = 1/2 (entmax15) avoid
    transcendentals and take two and four ops per entry.
    """
    # [1 + ε (z - t)]_+ = ε (max(z, t') - t') with t' = t - 1/ε: the
    # constant moves into the per-row t', and max(z, t') - t' needs no
    # constant 0 (XLA:CPU materialises constants that fusions share, and
    # each per-entry op costs about as much as a pass on its fast path).
    if self.static == 1.0:
      shifted = t - 1.0
      return jnp.maximum(z, shifted) - shifted
    if self.static == 0.5:
      shifted = t - 2.0
      root = 0.5 * (jnp.maximum(z, shifted) - shifted)
      return root * root
    e = self._e
    d = jnp.maximum(e * (z - t), -1.0)
    return jnp.exp(jnp.log1p(d) * (1.0 / e))

  def map_differentiable(self, z: jax.Array, t: jax.Array) -> jax.Array:
    """:meth:`map` for places that are differentiated again (Hessians).

    The select-free form differentiates ``log1p`` at ``-1`` off the support
    (an infinite derivative times zero: NaN); this one guards it with
    selects. It costs more, so the solver's inner passes use :meth:`map`.
    """
    if self.static in (1.0, 0.5):
      return self.map(z, t)
    e = self._e
    d = e * (z - t)
    live = d > -1.0
    safe = jnp.where(live, d, jnp.zeros((), d.dtype))
    return jnp.where(
      live, jnp.exp(jnp.log1p(safe) * (1.0 / e)), jnp.zeros((), d.dtype)
    )

  def linearized(self, total: jax.Array) -> jax.Array:
    """``h = (sum p)^ε - 1``: the same root as ``sum p - 1``, nearly linear.

    ``(sum p)^ε`` is the ``1/ε``-norm of ``[1 + ε (z - t)]_+``, a vector that
    is affine in ``t``: so ``h`` is convex and decreasing for α <= 2, exactly
    linear while the support does not change and its entries are tied, and
    ``ε (logsumexp(z) - t)`` in the softmax limit. Secant steps on ``h`` need
    far fewer iterations than on ``sum p - 1``.
    """
    if self.static == 1.0:
      return total - 1.0
    if self.static == 0.5:
      return jnp.sqrt(total) - 1.0
    return jnp.expm1(self._e * jnp.log(total))

  def bracket(
    self, n: jax.Array, mean: jax.Array
  ) -> tuple[jax.Array, jax.Array]:
    """Closed-form bracket ``[lo, hi]`` of the threshold of a row.

    ``n`` is the row's length and ``mean`` the mean of its shifted scores
    (``-inf`` turns the mean bound off). With ``L = (1 - n^-ε) / ε`` (``log
    n`` at ε = 0) the root lies in ``t >= 0`` (the largest entry alone has
    mass 1), ``t >= mean + L`` (Jensen: ``sum p >= 1`` there) and ``t <= L``
    (if all ``n`` entries tied, each would get ``1/n``).
    """
    e = self._e
    one = jnp.ones((), mean.dtype)
    n_safe = jnp.maximum(jnp.asarray(n, mean.dtype), one)
    log_n = jnp.log(n_safe)
    positive = e > 0
    eps_safe = jnp.where(positive, e, one)
    width = jnp.where(positive, -jnp.expm1(-eps_safe * log_n) / eps_safe, log_n)
    # Jensen needs the power 1/ε >= 1; below that, subadditivity of the
    # concave power gives the weaker bound (1 - 1/n) / ε.
    above_mean = jnp.where(e <= 1.0, width, (1.0 - 1.0 / n_safe) / eps_safe)
    lo = jnp.maximum(jnp.zeros_like(mean), mean + above_mean)
    lo = jnp.where(jnp.isnan(lo), jnp.zeros_like(lo), lo)
    return lo, jnp.maximum(width, lo)

  # -- derivatives, from the output alone --------------------------------------

  def slopes(self, p: jax.Array) -> jax.Array:
    """``s = ∂p/∂z = p^(1-ε)`` on the support and 0 elsewhere, from ``p``.

    Written so that it can itself be differentiated (for second
    derivatives): no ``0 ** negative`` or ``log(0)`` even in branches a
    ``where`` discards.
    """
    if self.static == 1.0:
      return (p > 0).astype(p.dtype)
    zero = jnp.zeros((), p.dtype)
    live = p > 0
    safe = jnp.where(live, p, jnp.ones((), p.dtype))
    if self.static == 0.5:
      return jnp.where(live, jnp.sqrt(safe), zero)
    return jnp.where(live, jnp.exp((1.0 - self._e) * jnp.log(safe)), zero)

  def centred(self, p: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Scores minus threshold, ``v = z - t``, recovered from ``p`` alone.

    On the support ``1 + ε v = p^ε``; off it ``v`` is set to 0 (every use
    multiplies it by something that vanishes there). Returns ``(v, ε v)``.
    """
    zero = jnp.zeros((), p.dtype)
    if self.static == 1.0:
      w = jnp.where(p > 0, p - 1.0, zero)
      return w, w
    e = self._e
    live, log_p = safe_log(p)
    w = jnp.where(live, jnp.expm1(e * log_p), zero)
    return w / e, w

  def param_sensitivity(self, p: jax.Array) -> jax.Array:
    """``r = ∂p/∂ε`` at a fixed threshold: ``p v² ψ(ε v)`` with ``v = z - t``.

    With ``s`` from :meth:`slopes`, the implicit function theorem on ``sum p
    = 1`` gives ``dp/dε = r - s Σr / Σs`` (Correia et al., 2019, in a form
    without the cancellation of their expression as α → 1).
    """
    v, w = self.centred(p)
    return jnp.where(p > 0, p * v * v * _psi(w), jnp.zeros((), p.dtype))

  # -- the normaliser of rows in memory --------------------------------------

  def forward(
    self,
    x: jax.Array,
    temperature: jax.Array | None,
    rows: Rows,
    n_iter: int | None,
  ) -> tuple[jax.Array, Residuals]:
    """α-entmax of prepared scores (masked with ``-inf``): ``(p, residuals)``.

    Plain JAX plus the threshold's ``custom_jvp``, so callers that need the
    output differentiable to second order (the losses) call this directly.
    """
    u = scale(x, temperature)
    z, m = shift_rows(u, rows)
    t, total = threshold(z, self, rows, n_iter)
    # Dividing by the sum at the final iterate puts the output on the
    # simplex to rounding at no extra pass.
    p = self.map_differentiable(z, t) / safe_total(total)
    shift = None
    if varies_along(temperature, x.ndim, rows.axes):
      shift = finite_or_zero(t + m)
    return p, Residuals(p, temperature, self, shift)

  def backward(
    self, rows: Rows, res: Residuals, g: jax.Array
  ) -> tuple[Any, ...]:
    """``(dx, dtemperature, dfamily)`` from the output alone.

    ``dx = s g - s <s, g> / Σ s`` with ``s`` the :meth:`slopes`; for an
    array ε, ``dp/dε = r - s Σr / Σs`` (:meth:`param_sensitivity`).
    """
    p, temperature, family, shift = res  # family: self, as a pytree
    s = family.slopes(p)
    slope = safe_total(rows.sum(s))
    sg = rows.sum(s * g)
    du = s * (g - sg / slope)
    d_family = None
    if family.learnable:
      # The sums over r are this shard's part only: param_cotangent adds up
      # the shards.
      r = family.param_sensitivity(p)
      per_row = rows.local_sum(r * (g - sg / slope))
      d_family = Family(param_cotangent(per_row, family.eps))
    if temperature is None:
      return du, None, d_family
    v, _ = family.centred(p)
    dt = temperature_cotangent(du, v, temperature, shift)
    return du / temperature, dt, d_family

  # -- the Tsallis entropy, for the Fenchel-Young losses ---------------------
  # ``rows`` is unused here: the Tsallis entropy is a sum over the entries
  # (the regulariser of normmax, a norm, needs the row; see losses.py).

  def entropy_terms(self, q: jax.Array, rows: Any = None) -> jax.Array:
    """``h(q)`` with ``H_α(q) = Σ h(q_i)``: ``(q - q^α) / (α (α - 1))``.

    Written as ``-q log(q) E(ε log q) / α`` with ``E(w) = expm1(w) / w``,
    which is continuous in α and is ``-q log q`` at α = 1. Static α = 2 and
    1.5 use polynomial forms.
    """
    zero = jnp.zeros((), q.dtype)
    if self.static == 1.0:
      return 0.5 * q * (1.0 - q)
    if self.static == 0.5:
      # The safe argument keeps d sqrt(q) / dq finite at q = 0, which second
      # derivatives (through the forward pass) would otherwise turn into NaN.
      live = q > 0
      root = jnp.where(live, jnp.sqrt(jnp.where(live, q, 1.0)), zero)
      return q * (1.0 - root) / 0.75
    live, u = safe_log(q)
    ratio = _expm1_ratio(self.eps * u)
    return jnp.where(live, -q * u * ratio / (1.0 + self.eps), zero)

  def entropy_gradient(self, q: jax.Array, rows: Any = None) -> jax.Array:
    """``∇Ω(q) = -∂H/∂q = (α q^ε - 1) / (α ε)``, or ``1 + log q`` at α = 1.

    Where ``q = 0`` and α = 1 (slope ``-inf``) the value is 0.
    """
    if self.static == 1.0:
      return q - 0.5
    live, u = safe_log(q)
    alpha = 1.0 + self.eps
    at_live = u * _expm1_ratio(self.eps * u) + 1.0 / alpha
    positive = self.eps > 0
    eps_safe = jnp.where(positive, self.eps, jnp.ones((), q.dtype))
    at_zero = jnp.where(positive, -1.0 / (alpha * eps_safe), 0.0)
    return jnp.where(live, at_live, at_zero.astype(q.dtype))

  def entropy_alpha_derivative(
    self, q: jax.Array, rows: Any = None
  ) -> jax.Array:
    """``∂h(q)/∂α`` at fixed ``q``: ``-q (u² φ(w) + u χ(w)) / α²``.

    Here ``u = log q``, ``w = ε u``, ``φ(w) = (w e^w - expm1 w) / w²`` and
    ``χ(w) = e^w - 2 expm1(w) / w``; a series keeps ``φ`` accurate near 0.
    At α = 1 this is ``q log q - q log² q / 2``.
    """
    zero = jnp.zeros((), q.dtype)
    live, u = safe_log(q)
    w = self.eps * u
    small = jnp.abs(w) < 0.1
    ws = jnp.where(small, jnp.ones((), q.dtype), w)
    direct = (ws * jnp.exp(ws) - jnp.expm1(ws)) / (ws * ws)
    series = 0.5 + w * (
      1.0 / 3.0 + w * (1.0 / 8.0 + w * (1.0 / 30.0 + w / 144.0))
    )
    phi = jnp.where(small, series, direct)
    chi = jnp.exp(w) - 2.0 * _expm1_ratio(w)
    alpha = 1.0 + self.eps
    return jnp.where(live, -q * (u * u * phi + u * chi) / (alpha * alpha), zero)


def _expm1_ratio(w: jax.Array) -> jax.Array:
  """``expm1(w) / w``, 1 at ``w = 0``."""
  nonzero = w != 0
  ws = jnp.where(nonzero, w, jnp.ones((), w.dtype))
  return jnp.where(nonzero, jnp.expm1(ws) / ws, jnp.ones((), w.dtype))


def _psi(w: jax.Array) -> jax.Array:
  """``(w / (1 + w) - log1p(w)) / w**2``, accurate near ``w = 0``."""
  small = jnp.abs(w) < 1e-2
  ws = jnp.where(small, jnp.ones((), w.dtype), w)
  direct = (ws / (1.0 + ws) - jnp.log1p(ws)) / (ws * ws)
  series = -0.5 + w * (2.0 / 3.0 + w * (-0.75 + w * 0.8))
  return jnp.where(small, series, direct)
