r"""The threshold root-finder shared by every member of the entmax family.

For a :class:`~softjax._core.entmax.Family` member and scores ``z`` shifted so
that the row maximum is 0, the threshold ``t`` is the root of ``f(t) = sum_i
p_i(t) - 1``, which is strictly decreasing with ``f'(t) = -sum s`` (``s =
p^{1-ε} = ∂p/∂z``); :meth:`Family.bracket` gives a closed-form bracket.

Two layers:

* :func:`find_threshold` is the iteration itself: a safeguarded secant
  method with its stopping rules. It never sees the scores; the caller
  supplies ``row_sum(t)``, the sum of ``p(t)`` over each whole row, however
  the row is held: in memory (possibly in chunks or split across devices,
  see :func:`threshold`), over the key blocks of an attention row, or over
  the vocabulary chunks of a loss.
* :func:`threshold` drives it over a row held in memory, with a warm start
  for long rows, and carries the one ``custom_jvp`` of the threshold (the
  implicit function theorem), so that the normalisers' forward passes stay
  differentiable for second derivatives.

For α ≤ 2 the iteration takes secant steps on a convex function, so from a
start left of the root it rises monotonically to the root and never
overshoots; for sparsemax it stops at the exact root once it has found the
support (as Michelot's algorithm does). For α > 2 we bisect. Every step keeps
a bracket and falls back to bisection when a secant step would leave it.
Members whose row sum is piecewise linear but neither convex nor concave
(``bracketed``: budget sparsemax, whose entries are capped at 1) update the
bracket from the first point on, take a secant step only strictly inside it
(exact on the root's linear piece) and otherwise the member's midpoint.
Each step is one evaluation of ``row_sum``: for a row in memory one fused
pass with one reduction along the normalised axes, nothing else.

References:
  B. Peters, V. Niculae, A. F. T. Martins. "Sparse Sequence-to-Sequence
  Models". ACL 2019.
  C. Michelot. "A finite algorithm for finding the projection of a point onto
  the canonical simplex of R^n". JOTA, 1986.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import TYPE_CHECKING
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp

from softjax._core.rows import Rows
from softjax._core.rows import safe_total

if TYPE_CHECKING:  # the members import the solver
  from softjax._core.entmax import Family

RowSum = Callable[[jax.Array], jax.Array]


def default_n_iter(dtype) -> int:
  # Enough bisection steps to shrink a bracket of width <= log(n) to the
  # dtype's resolution; secant rows stop after a handful.
  return 30 if jnp.finfo(dtype).bits <= 32 else 60


class _State(NamedTuple):
  """The iteration's loop state; every field but ``step`` is per row."""

  step: jax.Array  # steps taken, counting the start
  t: jax.Array  # the next point to evaluate (the answer once done)
  t_prev: jax.Array  # the last point evaluated (secant)
  h_prev: jax.Array  # the linearised row sum there
  lo: jax.Array  # bracket of the root
  hi: jax.Array
  total: jax.Array  # the row sum at the answer, once done
  done: jax.Array


def _tolerances(dtype) -> tuple[jax.Array, jax.Array]:
  """Sum tolerance (4 eps) and the relative resolution of ``t`` (eps)."""
  eps = jnp.finfo(dtype).eps
  return jnp.asarray(4 * eps, dtype), jnp.asarray(eps, dtype)


def _secant_step(state: _State, total: jax.Array, family: Family):
  """One step from the row sum at ``state.t``: ``(t_next, h, lo, hi, conv)``.

  Secant on the nearly linear ``h`` of :meth:`Family.linearized`; a step
  that would leave the bracket, or any step for α > 2, bisects instead.
  """
  tol, resolution = _tolerances(total.dtype)
  t = state.t
  h = family.linearized(total)
  lo = jnp.where(total >= 1, t, state.lo)
  hi = jnp.where(total >= 1, state.hi, t)
  dh = state.h_prev - h
  delta = h * (t - state.t_prev) / jnp.where(dh != 0, dh, 1.0)
  delta = jnp.where(dh != 0, delta, 0.0)
  t_new = t + delta
  if family.bracketed:
    # Neither convex nor concave: a secant step only strictly inside the
    # bracket (a flat piece, dh = 0, leaves t on its end), else the
    # member's midpoint.
    fast = (t_new > lo) & (t_new < hi)
    t_next = jnp.where(fast, t_new, family.midpoint(lo, hi))
  else:
    fast = family.convex & (t_new >= lo) & (t_new <= hi)
    t_next = jnp.where(fast, t_new, 0.5 * (lo + hi))
  # Stop when the sum is 1 to working precision, or when no further step
  # can move t (the step or the bracket is below t's resolution; this
  # catches rows whose sum carries more rounding than `tol`).
  scale = resolution * jnp.maximum(1.0, jnp.abs(t))
  converged = (
    (jnp.abs(total - 1.0) <= tol)
    | (jnp.abs(t_next - t) <= scale)
    | (hi - lo <= scale)
    | jnp.isnan(total)
  )
  if not family.bracketed:
    converged = converged | (fast & (delta == 0))
  return t_next, h, lo, hi, converged


def _second_point(t0, total, lo, hi, family):
  """``(t1, lo, hi, closed)``: the second point, from the sum at the first.

  Entmax members start left of the root and step just above it (a
  finite-difference Newton step; α > 2: mid-bracket). A bracketed member
  may start on either side: the start closes one end of the bracket
  (``closed`` says it is then below resolution) and the second point is a
  small step towards the other.
  """
  _, resolution = _tolerances(total.dtype)
  if not family.bracketed:
    t1 = jnp.where(
      family.convex,
      jnp.minimum(t0 + (hi - lo) * (1.0 / 1024), hi),
      0.5 * (lo + hi),
    )
    return t1, lo, hi, False
  left = total >= 1
  lo, hi = jnp.where(left, t0, lo), jnp.where(left, hi, t0)
  step = (hi - lo) * (1.0 / 1024)
  t1 = jnp.where(left, jnp.minimum(t0 + step, hi), jnp.maximum(t0 - step, lo))
  closed = hi - lo <= resolution * jnp.maximum(1.0, jnp.abs(t0))
  return t1, lo, hi, closed


def _start(
  state: _State, total: jax.Array, family: Family, n_iter: int
) -> _State:
  """The first step: the row sum at the start picks the second point."""
  tol, resolution = _tolerances(total.dtype)
  t0, lo, hi = state.t, state.lo, state.hi
  # The largest entry has mass > 0 anywhere in the bracket, so a zero sum
  # means a row with no finite entry (all -inf or masked); NaN rows stay NaN.
  done = (total == 0) | jnp.isnan(total)
  conv = (jnp.abs(total - 1.0) <= tol) | (
    hi - lo <= resolution * jnp.maximum(1.0, lo)
  )
  h0 = family.linearized(jnp.where(done, 1.0, total))
  t1, lo, hi, closed = _second_point(t0, total, lo, hi, family)
  conv = conv | closed
  # With a single step allowed the only evaluated point is the start.
  stop = done | conv | (n_iter <= 1)
  return _State(
    state.step + 1, jnp.where(stop, t0, t1), t0, h0, lo, hi, total, stop
  )


def _step(
  state: _State, total: jax.Array, family: Family, n_iter: int
) -> _State:
  """A later step: secant (or bisection) from the row sum at ``state.t``."""
  t_next, h, lo, hi, conv = _secant_step(state, total, family)
  conv = conv | (state.step + 1 >= n_iter)
  return _State(
    step=state.step + 1,
    t=jnp.where(state.done | conv, state.t, t_next),
    t_prev=state.t,
    h_prev=h,
    lo=lo,
    hi=hi,
    # Keep the sum at the final iterate: dividing by it normalises exactly.
    total=jnp.where(conv & ~state.done, total, state.total),
    done=state.done | conv,
  )


def find_threshold(
  row_sum: RowSum,
  family: Family,
  lo: jax.Array,
  hi: jax.Array,
  n_iter: int,
  start: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Safeguarded secant iteration for the threshold of each row.

  Args:
    row_sum: ``row_sum(t)`` returns ``sum_i family.map(z_i, t)`` over each
      whole row, for a per-row ``t`` shaped like ``lo``, in the same shape.
      It is the only access to the scores, so the caller decides how a row
      is held and summed (one evaluation per step).
    family: the member, with an array ε already broadcast to ``lo``'s shape
      (:meth:`Family.rowwise`).
    lo, hi: a bracket of the root (e.g. :meth:`Family.bracket`).
    n_iter: the most evaluations of ``row_sum``, the first included.
    start: an optional first point, left of the root or within rounding of
      it (e.g. the threshold of a subset of the row's entries; either side
      for a ``bracketed`` member); else ``lo``.

  Returns:
    ``(t, total)``: the threshold and ``row_sum(t)`` there (1 up to
    rounding; dividing by it normalises exactly). Rows whose sum is 0 at the
    start (every entry ``-inf``) or NaN stop at once.

  The first two points are the start and a point just above it. For α <= 2
  the linearised sum ``h`` is convex, so the secant through two points left
  of the root lands between them and the root: the iterates rise
  monotonically and, for sparsemax, stop at the exact root once both lie on
  the final linear piece. For α > 2, or whenever a step would leave the
  bracket, we bisect.
  """
  t0 = lo if start is None else jnp.clip(start, lo, hi)
  # Every evaluation, the first included, happens inside the loop: XLA:CPU
  # materialises a full-size broadcast of a constant that a YNNPACK fusion
  # shares with another fusion, as a first evaluation outside the loop would
  # with the pass that writes the output.
  # Placeholders built from t0 so that, inside shard_map, they vary over the
  # same mesh axes as the iterates (a while_loop carry must keep its type).
  zeros, false = t0 * 0, t0 > jnp.inf
  state = _State(jnp.asarray(0), t0, t0, zeros, lo, hi, zeros, false)
  start_fn = functools.partial(_start, family=family, n_iter=n_iter)
  step_fn = functools.partial(_step, family=family, n_iter=n_iter)

  def cond(state: _State) -> jax.Array:
    return (state.step < n_iter) & ~jnp.all(state.done)

  def body(state: _State) -> _State:
    total = row_sum(state.t)
    return lax.cond(state.step == 0, start_fn, step_fn, state, total)

  state = lax.while_loop(cond, body, state)
  return state.t, state.total


# --------------------------------------------------------------------------
# Rows held in memory.

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


# Rows at least this long get a warm start from their block maxima.
_BLOCK = 16
_MIN_WARM = 256


def _warm_start(
  z: jax.Array, family: Family, rows: Rows, n_iter: int
) -> jax.Array | None:
  """A first iterate: the threshold of the row's block maxima (or None).

  Keeping only the largest entry of each block of ``_BLOCK`` can only lower
  every ``sum p(t)``, so the threshold of the block maxima lies at or below
  the root, and close to it: the few entries in a sparse support are rarely
  hidden behind a larger one in their block. Solving that 16 times smaller
  problem costs well under a pass and saves three or more passes here. The
  result only seeds the iteration (the bracket does not rely on it), so a
  start that rounding put a few ulps above the root costs a step at most.
  None where it does not pay: short rows, several normalised axes, a single
  step, or α > 2 (bisection has no use for a start).
  """
  if len(rows.axes) != 1 or n_iter <= 1 or family.bisects:
    return None
  (a,) = rows.axes
  n = z.shape[a]
  if n < _MIN_WARM or n % _BLOCK:
    return None
  blocks = z.reshape(z.shape[:a] + (n // _BLOCK, _BLOCK) + z.shape[a + 1 :])
  t_blocks, _ = _solve_rows(jnp.max(blocks, axis=a + 1), family, rows, n_iter)
  return t_blocks


def _solve_rows(
  z: jax.Array, family: Family, rows: Rows, n_iter: int
) -> tuple[jax.Array, jax.Array]:
  """:func:`find_threshold` over rows in memory, with a warm start."""
  shape = tuple(1 if i in rows.axes else n for i, n in enumerate(z.shape))
  family = family.rowwise(shape, z.dtype)
  k = _chunks(z, rows)
  start = _warm_start(z, family, rows, n_iter)
  statistic = _bracket_statistic(z, family, rows, k, start)
  lo, hi = family.bracket(rows.size(z), statistic)
  return find_threshold(
    lambda t: rows.sum(family.map(z, t), k), family, lo, hi, n_iter, start
  )


def _bracket_statistic(
  z: jax.Array, family: Family, rows: Rows, chunks: int, start
) -> jax.Array:
  """The row statistic that ``family.bracket`` takes besides the length.

  The entmax family takes the mean of the shifted scores; a bracketed
  member (budget sparsemax) the lowest live score, even with a warm start,
  which may then land on either side of its root.
  """
  if family.bracketed:
    # Masked (-inf) entries read as 0, the row maximum: they cannot lower
    # the minimum of a row with a live entry.
    return rows.min(jnp.where(z > -jnp.inf, z, jnp.zeros((), z.dtype)))
  if start is None:
    # A plain mean is -inf for rows with masked (-inf) entries, which turns
    # the mean bound off for them (the bound 0 remains); counting the live
    # entries instead would cost another reduction pass in every call.
    return rows.sum(z, chunks) / jnp.maximum(
      jnp.asarray(rows.size(z), z.dtype), 1
    )
  # A warm-started solve rarely needs the mean bound, so its pass is
  # skipped. The placeholder is built from `start` so that, inside
  # shard_map, it varies over the same mesh axes as the iterates (a
  # while_loop carry must keep its type).
  return start * 0 - jnp.inf


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _threshold(
  z: jax.Array, family: Family, rows: Rows, n_iter: int
) -> tuple[jax.Array, jax.Array]:
  return _solve_rows(z, family, rows, n_iter)


@_threshold.defjvp
def _threshold_jvp(rows, n_iter, primals, tangents):
  (z, family), (dz, d_family) = primals, tangents
  t, total = _threshold(z, family, rows, n_iter)
  p = family.map_differentiable(z, t)
  s = family.slopes(p)
  # Implicit function theorem on sum p(z, t, ε) = 1.
  numerator = rows.sum(s * dz)
  if family.learnable:
    numerator = (
      numerator + rows.sum(family.param_sensitivity(p)) * d_family.param
    )
  dt = numerator / safe_total(rows.sum(s))
  # `total` is the normaliser at the root, 1 up to rounding: constant.
  return (t, total), (dt, jnp.zeros_like(total))


def threshold(
  z: jax.Array, family: Family, rows: Rows, n_iter: int | None
) -> tuple[jax.Array, jax.Array]:
  """``(t, total)`` for rows ``z`` in memory whose maximum is 0 (or NaN).

  Differentiable (a ``custom_jvp``) in ``z`` and in an array ε.
  """
  if n_iter is None:
    n_iter = default_n_iter(z.dtype)
  return _threshold(z, family, rows, n_iter)
