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

Rows of at least 256 entries start from the threshold of their block
maxima (the largest entry of each block of 16), which lies at or just below
the root (see :func:`_warm_start`). Shorter rows start from the lower bound.
For α ≤ 2 the iteration (see :func:`_solve`) takes secant steps on a convex
function, so from a start left of the root it rises monotonically to the
root and never overshoots; for sparsemax it stops at the exact root once it
has found the support (as Michelot's algorithm does). For α > 2 we bisect.
Every step keeps a bracket and falls back to bisection when a secant step
would leave it. Each step is one fused pass over the row: one reduction along
the normalised axes and elementwise work, nothing else.

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

from softjax._core import Rows, safe_total

Eps = float | jax.Array

# An array α is evaluated at max(α - 1, EPS_MIN): the formulas stay free of
# selects (which make XLA's CPU backend several times slower) and the result
# differs from softmax at α = 1 by at most 0.54 * EPS_MIN in absolute terms.
EPS_MIN = 1e-7


def clamp_eps(eps: Eps) -> Eps:
  if isinstance(eps, float):
    return eps
  return jnp.maximum(eps, jnp.asarray(EPS_MIN, eps.dtype))


def family(z: jax.Array, t: jax.Array, eps: Eps) -> jax.Array:
  """The unnormalised map ``p(t) = [1 + ε (z - t)]_+^(1/ε)``.

  Exactly zero off the support and for ``-inf`` scores; NaN stays NaN. Only
  clamps, no selects: ``exp(log1p(-1) / ε) = exp(-inf) = 0`` does the work.
  Static ε = 1 (sparsemax) and ε = 1/2 (entmax15) avoid transcendentals.
  """
  if isinstance(eps, float) and eps == 1.0:
    return jnp.maximum(1.0 + (z - t), 0.0)
  if isinstance(eps, float) and eps == 0.5:
    root = jnp.maximum(1.0 + 0.5 * (z - t), 0.0)
    return root * root
  d = jnp.maximum(eps * (z - t), -1.0)
  return jnp.exp(jnp.log1p(d) * (1.0 / eps))


def family_differentiable(z: jax.Array, t: jax.Array, eps: Eps) -> jax.Array:
  """:func:`family` for places that are differentiated again (Hessians).

  The select-free form differentiates ``log1p`` at ``-1`` off the support
  (an infinite derivative times zero: NaN); this one guards it with selects.
  It costs more, so the solver's inner passes use :func:`family`.
  """
  if isinstance(eps, float) and eps in (1.0, 0.5):
    return family(z, t, eps)
  d = eps * (z - t)
  live = d > -1.0
  safe = jnp.where(live, d, jnp.zeros((), d.dtype))
  return jnp.where(live, jnp.exp(jnp.log1p(safe) * (1.0 / eps)),
                   jnp.zeros((), d.dtype))


def slopes(p: jax.Array, eps: Eps) -> jax.Array:
  """``s = ∂p/∂z = p^(1-ε)`` on the support and 0 elsewhere, from ``p`` alone.

  Written so that it can itself be differentiated (for second derivatives):
  no ``0 ** negative`` or ``log(0)`` even in branches a ``where`` discards.
  """
  if isinstance(eps, float) and eps == 1.0:
    return (p > 0).astype(p.dtype)
  zero = jnp.zeros((), p.dtype)
  live = p > 0
  safe = jnp.where(live, p, jnp.ones((), p.dtype))
  if isinstance(eps, float) and eps == 0.5:
    return jnp.where(live, jnp.sqrt(safe), zero)
  return jnp.where(live, jnp.exp((1.0 - eps) * jnp.log(safe)), zero)


def centred(p: jax.Array, eps: Eps) -> tuple[jax.Array, jax.Array]:
  """Scores minus threshold, ``v = z - t``, recovered from ``p`` alone.

  On the support ``1 + ε v = p^ε``; off it ``v`` is set to 0 (every use
  multiplies it by something that vanishes there). Returns ``(v, w = ε v)``.
  """
  zero = jnp.zeros((), p.dtype)
  live = p > 0
  if isinstance(eps, float) and eps == 1.0:
    w = jnp.where(live, p - 1.0, zero)
    return w, w
  log_p = jnp.log(jnp.where(live, p, jnp.ones((), p.dtype)))
  w = jnp.where(live, jnp.expm1(eps * log_p), zero)
  return w / eps, w


def psi(w: jax.Array) -> jax.Array:
  """``(w / (1 + w) - log1p(w)) / w**2``, accurate near ``w = 0``."""
  small = jnp.abs(w) < 1e-2
  ws = jnp.where(small, jnp.ones((), w.dtype), w)
  direct = (ws / (1.0 + ws) - jnp.log1p(ws)) / (ws * ws)
  series = -0.5 + w * (2.0 / 3.0 + w * (-0.75 + w * 0.8))
  return jnp.where(small, series, direct)


def alpha_sensitivity(p: jax.Array, eps: jax.Array) -> jax.Array:
  """``r = ∂p/∂ε`` at a fixed threshold: ``p v² ψ(ε v)`` with ``v = z - t``.

  With ``s`` from :func:`slopes`, the implicit function theorem on
  ``sum p = 1`` gives ``dp/dε = r - s Σr / Σs`` (Correia et al., 2019, in a
  form without the cancellation of their expression as α → 1).
  """
  v, w = centred(p, eps)
  return jnp.where(p > 0, p * v * v * psi(w), jnp.zeros((), p.dtype))


def default_n_iter(dtype) -> int:
  # Enough bisection steps to shrink a bracket of width <= log(n) to the
  # dtype's resolution; secant rows stop after a handful.
  return 30 if jnp.finfo(dtype).bits <= 32 else 60


def _bounds(z, eps, rows, chunks, start=None):
  """Closed-form bracket ``[lo, hi]`` of the root.

  Given a warm ``start`` (a per-row array), the pass over the row that the
  mean bound needs is skipped and ``lo = 0``: a warm-started solve rarely
  needs the floor.
  """
  dtype = z.dtype
  one = jnp.ones((), dtype)
  n = jnp.asarray(rows.size(z), dtype)
  n_safe = jnp.maximum(n, one)
  if start is None:
    # A plain mean is -inf for rows with masked (-inf) entries, which turns
    # the mean bound off for them (the bound 0 remains); counting the live
    # entries instead would cost another reduction pass in every call.
    mean = rows.sum(z, chunks) / n_safe
  else:
    # Built from `start` so that, inside shard_map, it varies over the same
    # mesh axes as the iterates (a while_loop carry must keep its type).
    mean = start * 0 - jnp.inf
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


# XLA's CPU reductions run about twice as fast per entry over 64 rows as over
# 8 rows of the same total size; a solver step on few long rows therefore
# sums row chunks first (measured at (8, 262144): 1.2 ms -> 0.55 ms a step).
_MIN_ROWS = 64
_MIN_CHUNK = 1024


def _chunks(z: jax.Array, rows: Rows) -> int:
  """How many chunks to split each row into for the solver's sums (or 1)."""
  if len(rows.axes) != 1:
    return 1
  n = z.shape[rows.axes[0]]
  count = z.size // max(n, 1)
  if count >= _MIN_ROWS or n < 2 * _MIN_CHUNK:
    return 1
  k = -(-_MIN_ROWS // max(count, 1))
  while k <= n // _MIN_CHUNK:
    if n % k == 0:
      return k
    k += 1
  return 1


def _linearized(total: jax.Array, eps: Eps) -> jax.Array:
  """``h = (sum p)^ε - 1``: the same root as ``f = sum p - 1``, nearly linear.

  ``(sum p)^ε`` is the ``1/ε``-norm of ``[1 + ε (z - t)]_+``, a vector that is
  affine in ``t``: so ``h`` is convex and decreasing for α <= 2, exactly
  linear while the support does not change and its entries are tied, and
  ``ε (logsumexp(z) - t)`` in the softmax limit. Secant steps on ``h`` need
  far fewer iterations than on ``f``.
  """
  if isinstance(eps, float) and eps == 1.0:
    return total - 1.0
  if isinstance(eps, float) and eps == 0.5:
    return jnp.sqrt(total) - 1.0
  return jnp.expm1(eps * jnp.log(total))


# Rows at least this long get a warm start from their block maxima.
_BLOCK = 16
_MIN_WARM = 256


def _warm_start(z, eps, rows, n_iter):
  """A first iterate: the threshold of the row's block maxima (or None).

  Keeping only the largest entry of each block of ``_BLOCK`` can only lower
  every ``sum p(t)``, so the threshold of the block maxima lies at or below
  the root, and close to it: the few entries in a sparse support are rarely
  hidden behind a larger one in their block. Solving that 16 times smaller
  problem costs well under a pass and saves three or more passes here. The
  result only seeds the iteration (the bracket ``[lo, hi]`` does not rely on
  it), so a start that rounding put a few ulps above the root costs a step at
  most. None where it does not pay: short rows, several normalised axes, a
  single step, or α > 2 (bisection has no use for a start).
  """
  if (len(rows.axes) != 1 or n_iter <= 1
      or (isinstance(eps, float) and eps > 1.0)):
    return None
  a, = rows.axes
  n = z.shape[a]
  if n < _MIN_WARM or n % _BLOCK:
    return None
  blocks = z.reshape(z.shape[:a] + (n // _BLOCK, _BLOCK) + z.shape[a + 1:])
  t_blocks, _ = _solve(jnp.max(blocks, axis=a + 1), eps, rows, n_iter)
  return t_blocks


def _solve(z, eps, rows, n_iter):
  """Safeguarded secant iteration, one fused reduction per step.

  On XLA's CPU backend a pass with a second reduction (for ``f'``) costs as
  much as two passes with one, and three times as much when the map needs
  transcendentals, so every step here evaluates ``sum p`` only and takes a
  secant step on the nearly linear ``h`` of :func:`_linearized`. The first two
  points are the start (:func:`_warm_start`, else the lower bound) and a point
  just above it (a finite-difference Newton step). For α <= 2, ``h`` is
  convex, so the secant through two points left of the root lands between
  them and the root: the iterates rise monotonically and, for sparsemax, stop
  at the exact root once both lie on the final linear piece (a start that
  rounding put just right of the root is followed by one step to its left).
  For α > 2, or whenever a step would leave the bracket, we bisect.
  """
  dtype = z.dtype
  if not isinstance(eps, float):
    eps = jnp.broadcast_to(eps, _keepdims_shape(z, rows.axes)).astype(dtype)
  k = _chunks(z, rows)
  start = _warm_start(z, eps, rows, n_iter)
  lo, hi = _bounds(z, eps, rows, k, start)
  tol = jnp.asarray(4 * jnp.finfo(dtype).eps, dtype)
  resolution = jnp.asarray(jnp.finfo(dtype).eps, dtype)
  convex = eps <= 1.0

  def step(t, t_prev, total, h_prev, lo, hi):
    h = _linearized(total, eps)
    lo = jnp.where(total >= 1, t, lo)
    hi = jnp.where(total >= 1, hi, t)
    dh = h_prev - h
    delta = h * (t - t_prev) / jnp.where(dh != 0, dh, 1.0)
    delta = jnp.where(dh != 0, delta, 0.0)
    t_new = t + delta
    fast = convex & (t_new >= lo) & (t_new <= hi)
    t_next = jnp.where(fast, t_new, 0.5 * (lo + hi))
    # Stop when the sum is 1 to working precision, or when no further step
    # can move t (the step or the bracket is below t's resolution; this
    # catches rows whose sum carries more rounding than `tol`).
    scale = resolution * jnp.maximum(1.0, jnp.abs(t))
    converged = ((jnp.abs(total - 1.0) <= tol)
                 | (jnp.abs(t_next - t) <= scale) | (hi - lo <= scale)
                 | jnp.isnan(total) | (fast & (delta == 0)))
    return t_next, h, lo, hi, converged

  t0 = lo if start is None else jnp.clip(start, lo, hi)
  total0 = rows.sum(family(z, t0, eps), k)
  # The largest entry has mass > 0 anywhere in the bracket, so a zero sum
  # means a row with no finite entry (all -inf or masked); NaN rows stay NaN.
  done = (total0 == 0) | jnp.isnan(total0)
  conv = ((jnp.abs(total0 - 1.0) <= tol)
          | (hi - lo <= resolution * jnp.maximum(1.0, lo)))
  h0 = _linearized(jnp.where(done, 1.0, total0), eps)
  # Second point: just above the first (α > 2: mid-bracket).
  t1 = jnp.where(convex, jnp.minimum(t0 + (hi - lo) * (1.0 / 1024), hi),
                 0.5 * (lo + hi))
  # With a single step allowed (no warm start then), the only evaluated point
  # is the lower bound.
  t = t0 if n_iter <= 1 else jnp.where(done | conv, t0, t1)
  done = done | conv

  def cond(state):
    i, *_, done = state
    return (i < n_iter) & ~jnp.all(done)

  def body(state):
    i, t, t_prev, h_prev, lo, hi, total, done = state
    total_t = rows.sum(family(z, t, eps), k)
    t_next, h, lo, hi, conv = step(t, t_prev, total_t, h_prev, lo, hi)
    conv = conv | (i + 1 >= n_iter)
    # Keep the sum at the final iterate: dividing by it normalises exactly.
    total = jnp.where(conv & ~done, total_t, total)
    t_out = jnp.where(done | conv, t, t_next)
    return i + 1, t_out, t, h, lo, hi, total, done | conv

  state = (jnp.asarray(1), t, t0, h0, lo, hi, total0, done)
  _, t, _, _, _, _, total, _ = lax.while_loop(cond, body, state)
  return t, total


def _keepdims_shape(z, axes):
  return tuple(1 if i in axes else n for i, n in enumerate(z.shape))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def threshold_static(z: jax.Array, eps: float, rows: Rows,
                     n_iter: int) -> tuple[jax.Array, jax.Array]:
  """Threshold ``t`` and ``sum p(t)`` for a Python-float ε."""
  return _solve(z, eps, rows, n_iter)


@threshold_static.defjvp
def _threshold_static_jvp(eps, rows, n_iter, primals, tangents):
  (z,), (dz,) = primals, tangents
  t, total = threshold_static(z, eps, rows, n_iter)
  s = slopes(family_differentiable(z, t, eps), eps)
  dt = rows.sum(s * dz) / safe_total(rows.sum(s))
  # `total` is the normaliser at the root, 1 up to rounding: constant.
  return (t, total), (dt, jnp.zeros_like(total))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def threshold_array(z: jax.Array, eps: jax.Array, rows: Rows,
                    n_iter: int) -> tuple[jax.Array, jax.Array]:
  """Threshold ``t`` and ``sum p(t)`` for an array ε (one per row)."""
  return _solve(z, eps, rows, n_iter)


@threshold_array.defjvp
def _threshold_array_jvp(rows, n_iter, primals, tangents):
  (z, eps), (dz, deps) = primals, tangents
  t, total = threshold_array(z, eps, rows, n_iter)
  p = family_differentiable(z, t, eps)
  s = slopes(p, eps)
  # Implicit function theorem on sum p(z, t, ε) = 1.
  r = alpha_sensitivity(p, eps)
  dt = (rows.sum(s * dz) + rows.sum(r) * deps) / safe_total(rows.sum(s))
  return (t, total), (dt, jnp.zeros_like(total))


def solve(z: jax.Array, eps: Eps, rows: Rows, n_iter: int | None
          ) -> tuple[jax.Array, jax.Array]:
  """Returns ``(t, total)`` for scores ``z`` whose row maximum is 0 (or NaN)."""
  if n_iter is None:
    n_iter = default_n_iter(z.dtype)
  if isinstance(eps, float):
    return threshold_static(z, eps, rows, n_iter)
  return threshold_array(z, clamp_eps(eps), rows, n_iter)
