r"""The threshold root-finder shared by every member of the entmax family.

We write α-entmax of scores ``z`` (already shifted so that the row maximum is
0) with :math:`\varepsilon = \alpha - 1` and the threshold ``t`` as

.. math::
  p_i(t) = [1 + \varepsilon (z_i - t)]_+^{1/\varepsilon},
  \qquad \text{with } t \text{ such that } \textstyle\sum_i p_i(t) = 1.

This is the usual ``[(α-1) z - τ]_+^{1/(α-1)}`` with ``τ = ε t - 1``; the
reparametrisation keeps everything finite as α → 1, where ``p_i(t)`` tends
to ``exp(z_i - t)`` (softmax, ``t = logsumexp(z)``), and keeps ``t`` of order
one, so float32 rounding of ``z_i - t`` stays at the level of ``eps``.

``f(t) = sum p(t) - 1`` is strictly decreasing with ``f'(t) = -sum s`` where
``s = p^{1-ε} = ∂p/∂z``. With ``n`` live (finite) entries and
``L = (1 - n^{-ε}) / ε`` (``log n`` at ε = 0) the root lies in

* ``t >= 0``: the largest entry alone already has mass 1;
* ``t >= mean(z) + L``: by Jensen, ``sum p >= 1`` there;
* ``t <= L``: if all ``n`` entries tied with the maximum, each would get 1/n.

For α ≤ 2, ``f`` is convex, so Newton from the lower bound rises
monotonically to the root and never overshoots; for sparsemax ``f`` is
piecewise linear and Newton stops at the exact root once it has found the
support (Michelot's algorithm). For α > 2 ``f`` is concave and we bisect. Every
step keeps a bracket and falls back to bisection when a Newton step would
leave it. Each step is one fused pass over the row: two reductions along the
normalised axes and elementwise work, nothing else.

References:
  B. Peters, V. Niculae, A. F. T. Martins. "Sparse Sequence-to-Sequence
  Models". ACL 2019.
  C. Michelot. "A finite algorithm for finding the projection of a point onto
  the canonical simplex of R^n". JOTA, 1986.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

Eps = float | jax.Array


def _zeros_like_scalar(x: jax.Array) -> jax.Array:
  return jnp.zeros((), x.dtype)


def family(z: jax.Array, t: jax.Array, eps: Eps
           ) -> tuple[jax.Array, jax.Array]:
  """Returns ``(p, s)``: the unnormalised map at ``t`` and ``s = ∂p/∂z``.

  Both are exactly zero off the support and for ``-inf`` scores. Static
  ε = 1 (sparsemax) and ε = 1/2 (entmax15) avoid transcendental functions.
  """
  zero = _zeros_like_scalar(z)
  if isinstance(eps, float) and eps == 1.0:
    p = jnp.maximum(1.0 + (z - t), zero)
    return p, (p > 0).astype(z.dtype)
  if isinstance(eps, float) and eps == 0.5:
    root = jnp.maximum(1.0 + 0.5 * (z - t), zero)
    return root * root, root
  d = eps * (z - t)
  live = d > -1.0   # False off the support, for -inf scores and for NaN
  d = jnp.where(live, d, zero)
  if isinstance(eps, float):
    log_p = jnp.log1p(d) / eps
  else:
    # An array ε may hold exact zeros (α = 1): there p = exp(z - t).
    eps_safe = jnp.where(eps > 0, eps, jnp.ones((), z.dtype))
    log_p = jnp.where(eps > 0, jnp.log1p(d) / eps_safe, z - t)
  p = jnp.where(live, jnp.exp(jnp.where(live, log_p, zero)), zero)
  return p, p / (1.0 + d)


def psi(w: jax.Array) -> jax.Array:
  """``(w / (1 + w) - log1p(w)) / w**2``, accurate near ``w = 0``."""
  small = jnp.abs(w) < 1e-2
  ws = jnp.where(small, jnp.ones((), w.dtype), w)
  direct = (ws / (1.0 + ws) - jnp.log1p(ws)) / (ws * ws)
  series = -0.5 + w * (2.0 / 3.0 + w * (-0.75 + w * 0.8))
  return jnp.where(small, series, direct)


def alpha_sensitivity(z_minus_t: jax.Array, p: jax.Array, eps: jax.Array
                      ) -> jax.Array:
  """``r = ∂p/∂ε`` at fixed ``t``: ``p v² ψ(ε v)`` with ``v = z - t``."""
  zero = _zeros_like_scalar(p)
  live = p > 0
  v = jnp.where(live, z_minus_t, zero)
  return jnp.where(live, p * v * v * psi(eps * v), zero)


def default_n_iter(dtype) -> int:
  # Enough bisection steps to shrink a bracket of width <= log(n) to the
  # dtype's resolution; Newton rows stop after a handful.
  return 30 if jnp.finfo(dtype).bits <= 32 else 60


def _bounds(z, eps, axes):
  """Closed-form bracket ``[lo, hi]`` of the root."""
  dtype = z.dtype
  one = jnp.ones((), dtype)
  keep = dict(axis=axes, keepdims=True)
  n = jnp.asarray(z.size // max(1, _row_count(z, axes)), dtype)
  n_safe = jnp.maximum(n, one)
  # A plain mean is -inf for rows with masked (-inf) entries, which turns the
  # mean bound off for them (the bound 0 remains); counting the live entries
  # instead would cost another reduction pass in every call.
  mean = jnp.sum(z, **keep) / n_safe
  if isinstance(eps, float):
    width = (-jnp.expm1(-eps * jnp.log(n_safe)) / eps if eps > 0
             else jnp.log(n_safe))
    eps_safe = eps if eps > 0 else 1.0
  else:
    eps_safe = jnp.where(eps > 0, eps, one)
    width = jnp.where(eps > 0, -jnp.expm1(-eps * jnp.log(n_safe)) / eps_safe,
                      jnp.log(n_safe))
  # Jensen needs the power 1/ε >= 1; below that, subadditivity of the
  # concave power gives the weaker bound (1 - 1/n) / ε.
  above_mean = jnp.where(eps <= 1.0, width, (1.0 - 1.0 / n_safe) / eps_safe)
  lo = jnp.maximum(jnp.zeros_like(mean), mean + above_mean)
  lo = jnp.where(jnp.isnan(lo), jnp.zeros_like(lo), lo)
  hi = jnp.maximum(width, lo)
  return lo, hi


def _row_count(z, axes):
  count = 1
  for i, n in enumerate(z.shape):
    if i not in axes:
      count *= n
  return count


def _solve(z, eps, axes, n_iter):
  """Safeguarded Newton-then-secant iteration, one reduction per step.

  The first step is Newton from the lower bound (it needs ``f'``, a second
  reduction). Every later step is a secant step through the last two iterates,
  which needs only ``f``: on XLA's CPU backend a step with one reduction costs
  a third of a step with two. For convex ``f`` (α <= 2) the secant through two
  points left of the root lands between them and the root, so the iterates
  keep rising monotonically and, for sparsemax, stop at the exact root once
  both lie on the final linear piece. At α = 1 the exact step ``log(sum p)``
  is used, and for α > 2, or whenever a step would leave the bracket, we
  bisect.
  """
  dtype = z.dtype
  keep = dict(axis=axes, keepdims=True)
  if not isinstance(eps, float):
    eps = jnp.broadcast_to(eps, _keepdims_shape(z, axes)).astype(dtype)
  lo, hi = _bounds(z, eps, axes)
  tol = jnp.asarray(4 * jnp.finfo(dtype).eps, dtype)
  resolution = jnp.asarray(jnp.finfo(dtype).eps, dtype)
  convex = eps <= 1.0
  exact_log = None if isinstance(eps, float) and eps > 0 else eps == 0.0

  def step(t, t_prev, f, f_prev, lo, hi, slope):
    """Next iterate; ``slope`` (-f') is given for Newton, else None."""
    lo = jnp.where(f >= 0, t, lo)
    hi = jnp.where(f >= 0, hi, t)
    if slope is not None:
      delta = f / jnp.maximum(slope, jnp.finfo(dtype).tiny)
    else:
      df = f_prev - f
      delta = jnp.where(df != 0, f * (t - t_prev) / jnp.where(df != 0, df, 1.0),
                        0.0)
    if exact_log is not None:
      delta = jnp.where(exact_log, jnp.log(f + 1.0), delta)
    t_new = t + delta
    fast = convex & (t_new >= lo) & (t_new <= hi)
    t_next = jnp.where(fast, t_new, 0.5 * (lo + hi))
    # Stop when the sum is 1 to working precision, or when no further step
    # can move t (the step or the bracket is below t's resolution; this
    # catches rows whose sum carries more rounding than `tol`).
    scale = resolution * jnp.maximum(1.0, jnp.abs(t))
    converged = ((jnp.abs(f) <= tol) | (jnp.abs(t_next - t) <= scale)
                 | (hi - lo <= scale) | jnp.isnan(f) | (fast & (delta == 0)))
    return t_next, lo, hi, converged

  # Newton from the lower bound.
  t0 = lo
  p, s = family(z, t0, eps)
  f0 = jnp.sum(p, **keep) - 1.0
  # The largest entry has mass > 0 anywhere in the bracket, so a zero sum
  # means a row with no finite entry (all -inf or masked); NaN rows stay NaN.
  done = (f0 == -1.0) | jnp.isnan(f0)
  t1, lo, hi, conv = step(t0, None, f0, None, lo, hi, jnp.sum(s, **keep))
  total = f0 + 1.0
  t = jnp.where(done | conv, t0, t1)
  done = done | conv

  def cond(state):
    i, *_, done = state
    return (i < n_iter) & ~jnp.all(done)

  def body(state):
    i, t, t_prev, f_prev, lo, hi, total, done = state
    p, _ = family(z, t, eps)
    total_t = jnp.sum(p, **keep)
    f = total_t - 1.0
    t_next, lo, hi, conv = step(t, t_prev, f, f_prev, lo, hi, None)
    conv = conv | (i + 1 >= n_iter)
    # Keep the sum at the final iterate: dividing by it normalises exactly.
    total = jnp.where(conv & ~done, total_t, total)
    t_out = jnp.where(done | conv, t, t_next)
    return i + 1, t_out, t, f, lo, hi, total, done | conv

  state = (jnp.asarray(1), t, t0, f0, lo, hi, total, done)
  _, t, _, _, _, _, total, _ = lax.while_loop(cond, body, state)
  return t, total


def _keepdims_shape(z, axes):
  return tuple(1 if i in axes else n for i, n in enumerate(z.shape))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def threshold_static(z: jax.Array, eps: float, axes: tuple[int, ...],
                     n_iter: int) -> tuple[jax.Array, jax.Array]:
  """Threshold ``t`` and ``sum p(t)`` for a Python-float ε."""
  return _solve(z, eps, axes, n_iter)


@threshold_static.defjvp
def _threshold_static_jvp(eps, axes, n_iter, primals, tangents):
  (z,), (dz,) = primals, tangents
  t, total = threshold_static(z, eps, axes, n_iter)
  _, s = family(z, t, eps)
  keep = dict(axis=axes, keepdims=True)
  slope = _nonzero(jnp.sum(s, **keep))
  dt = jnp.sum(s * dz, **keep) / slope
  # `total` is the normaliser at the root, 1 up to rounding: constant.
  return (t, total), (dt, jnp.zeros_like(total))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def threshold_array(z: jax.Array, eps: jax.Array, axes: tuple[int, ...],
                    n_iter: int) -> tuple[jax.Array, jax.Array]:
  """Threshold ``t`` and ``sum p(t)`` for an array ε (one per row)."""
  return _solve(z, eps, axes, n_iter)


@threshold_array.defjvp
def _threshold_array_jvp(axes, n_iter, primals, tangents):
  (z, eps), (dz, deps) = primals, tangents
  t, total = threshold_array(z, eps, axes, n_iter)
  p, s = family(z, t, eps)
  keep = dict(axis=axes, keepdims=True)
  slope = _nonzero(jnp.sum(s, **keep))
  # Implicit function theorem on sum p(z, t, ε) = 1.
  r = alpha_sensitivity(z - t, p, eps)
  dt = (jnp.sum(s * dz, **keep) + jnp.sum(r, **keep) * deps) / slope
  return (t, total), (dt, jnp.zeros_like(total))


def _nonzero(x: jax.Array) -> jax.Array:
  return jnp.where(x == 0, jnp.ones((), x.dtype), x)


def solve(z: jax.Array, eps: Eps, axes: tuple[int, ...], n_iter: int | None
          ) -> tuple[jax.Array, jax.Array]:
  """Returns ``(t, total)`` for scores ``z`` whose row maximum is 0 (or NaN)."""
  if n_iter is None:
    n_iter = default_n_iter(z.dtype)
  if isinstance(eps, float):
    return threshold_static(z, eps, axes, n_iter)
  return threshold_array(z, eps, axes, n_iter)
