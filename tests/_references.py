"""Float64 NumPy references for softjax's normalisers, independent of it.

Every function normalises along the last axis of a float64 array of finite
scores (callers move the normalised axes there with :func:`along`). The
algorithms deliberately differ from softjax's solver: sorting for sparsemax
and entmax15 (closed forms), long plain bisection on the classic
``[(alpha - 1) z - tau]_+ ^ (1 / (alpha - 1))`` form for any alpha and on
normmax's own threshold equation, a search over the kinks of the row sum
for budget sparsemax, and the Correia et al. (2019) formula or central
differences for d/dalpha. The maths is collected in ``shared/MATH.md``.
"""

from __future__ import annotations

import numpy as np

# Enough halvings to take a bracket of width <= 1 far below float64's
# resolution (2**-100 < 1e-30), so the reference is converged to rounding.
BISECTION_STEPS = 200


def along(fn, x, axis=-1):
  """Applies a last-axis ``fn`` along ``axis`` (an int, tuple or None).

  The normalised axes are moved to the end and flattened into one, so a tuple
  axis is treated as a single row, as the library does.
  """
  x = np.asarray(x, np.float64)
  if axis is None:
    axis = tuple(range(x.ndim))
  axes = tuple(sorted(a % x.ndim for a in np.atleast_1d(axis)))
  rest = tuple(a for a in range(x.ndim) if a not in axes)
  moved = np.transpose(x, rest + axes)
  rows = moved.reshape(moved.shape[: len(rest)] + (-1,))
  out = np.asarray(fn(rows)).reshape(moved.shape)
  return np.transpose(out, np.argsort(rest + axes))


def softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def sparsemax(z):
  """Sort-based sparsemax (Martins & Astudillo, 2016)."""
  z = np.asarray(z, np.float64)
  zs = -np.sort(-z, axis=-1)
  k = np.arange(1, z.shape[-1] + 1, dtype=np.float64)
  cums = np.cumsum(zs, axis=-1)
  # The condition holds exactly for k = 1..K, so K is the count of Trues.
  support = 1.0 + k * zs > cums
  size = support.sum(-1, keepdims=True)
  tau = (np.take_along_axis(cums, size - 1, -1) - 1.0) / size
  return np.maximum(z - tau, 0.0)


def entmax15(z):
  """Sort-based 1.5-entmax (Peters, Niculae & Martins, 2019)."""
  u = np.asarray(z, np.float64) / 2.0
  us = -np.sort(-u, axis=-1)
  k = np.arange(1, u.shape[-1] + 1, dtype=np.float64)
  mean = np.cumsum(us, -1) / k
  mean_sq = np.cumsum(us * us, -1) / k
  # ss_k = sum_{j<=k} (u_(j) - mean_k)^2 = k (mean_sq_k - mean_k^2). Prefixes
  # that reach -inf (masked) entries give NaN here; they never pass the
  # support test below (NaN <= x is False).
  with np.errstate(invalid="ignore"):
    ss = k * (mean_sq - mean * mean)
  tau = mean - np.sqrt(np.maximum(0.0, (1.0 - ss) / k))
  size = (tau <= us).sum(-1, keepdims=True)
  tau_star = np.take_along_axis(tau, size - 1, -1)
  return np.maximum(u - tau_star, 0.0) ** 2


def _bisect_threshold(z, alpha, steps=BISECTION_STEPS):
  """Returns ``(y, tau)``: ``y = (alpha - 1) z`` and the root, per row.

  ``alpha`` (> 1) broadcasts against ``z[..., :1]``; all rows are bisected at
  once, each on its own bracket ``[max y - 1, max y - d^(1 - alpha)]``.
  """
  d = z.shape[-1]
  alpha = np.broadcast_to(np.asarray(alpha, np.float64), z.shape[:-1] + (1,))
  y = (alpha - 1.0) * z
  top = y.max(-1, keepdims=True)
  lo, hi = top - 1.0, top - float(d) ** (1.0 - alpha)
  power = 1.0 / (alpha - 1.0)
  for _ in range(steps):
    mid = 0.5 * (lo + hi)
    enough = (np.maximum(y - mid, 0.0) ** power).sum(-1, keepdims=True) >= 1.0
    lo = np.where(enough, mid, lo)
    hi = np.where(enough, hi, mid)
  return y, lo


def entmax_bisect(z, alpha, steps=BISECTION_STEPS):
  """alpha-entmax by plain bisection on the classic threshold ``tau``.

  ``alpha`` is a float or an array broadcastable to ``z`` with size 1 along
  the last axis. Rows with alpha == 1 get softmax (the limit).
  """
  z = np.asarray(z, np.float64)
  alpha = np.broadcast_to(np.asarray(alpha, np.float64), z.shape[:-1] + (1,))
  one = alpha == 1.0
  # Rows at alpha == 1 are bisected at a harmless alpha and then replaced.
  a = np.where(one, 2.0, alpha)
  y, tau = _bisect_threshold(z, a, steps)
  p = np.maximum(y - tau, 0.0) ** (1.0 / (a - 1.0))
  p = p / p.sum(-1, keepdims=True)
  return np.where(one, softmax(z), p)


def entmax_margin(z, alpha):
  """Signed distance ``(alpha - 1) z - tau`` of each entry to the support edge.

  Positive on the support, negative off it. Finite differences (and float
  rounding) may flip entries whose margin is tiny, so tests skip or avoid them.
  """
  y, tau = _bisect_threshold(np.asarray(z, np.float64), alpha)
  return y - tau


def entmax_alpha_vjp(p, alpha, g):
  """Correia et al. (2019): ``<g, dp/dalpha>`` per row, keepdims.

  ``p`` must be the (float64) entmax output at ``alpha > 1``. The formula
  cancels catastrophically as alpha -> 1; in float64 it is still accurate to
  ~1e-8 relative at alpha - 1 = 1e-4.
  """
  p = np.asarray(p, np.float64)
  g = np.asarray(g, np.float64)
  alpha = np.asarray(alpha, np.float64)
  live = p > 0
  safe = np.where(live, p, 1.0)
  s = np.where(live, safe ** (2.0 - alpha), 0.0)
  q = s / s.sum(-1, keepdims=True)
  ent = np.where(live, p * np.log(safe), 0.0)
  h = ent.sum(-1, keepdims=True)
  dp = (p - q) / (alpha - 1.0) ** 2 - (ent - q * h) / (alpha - 1.0)
  return (g * dp).sum(-1, keepdims=True)


def entmax_alpha_vjp_at_one(z, g):
  """``<g, dp/dalpha>`` at alpha = 1, the limit of the Correia formula.

  Expanding ``log p_i = log1p(e v_i) / e = v_i - e v_i^2 / 2 + O(e^2)`` with
  ``e = alpha - 1``, ``v = z - t`` (``v = log p`` at e = 0), and keeping the
  sum equal to 1, gives ``dp/dalpha = -p/2 (v^2 - <p, v^2>)``.
  """
  p = softmax(z)
  v2 = np.log(p) ** 2
  dp = -0.5 * p * (v2 - (p * v2).sum(-1, keepdims=True))
  return (np.asarray(g, np.float64) * dp).sum(-1, keepdims=True)


def entmax_alpha_vjp_fd(z, alpha, g, h=1e-5):
  """``<g, dp/dalpha>`` per row by central differences of the bisection."""
  z = np.asarray(z, np.float64)
  alpha = np.asarray(alpha, np.float64)
  up = entmax_bisect(z, alpha + h)
  down = entmax_bisect(z, alpha - h)
  return (np.asarray(g, np.float64) * (up - down) / (2 * h)).sum(
    -1, keepdims=True
  )


def normmax_bisect(z, alpha, steps=BISECTION_STEPS):
  """alpha-normmax by plain bisection (Santos et al., 2024), alpha > 1.

  ``p = u / sum(u)`` with ``u = [z - tau]_+ ^ (1 / (alpha - 1))`` and
  ``tau`` the root of ``sum(u ** alpha) = 1``, bisected on the bracket
  ``[max z - 1, max z - d^(-(alpha - 1) / alpha)]``. ``alpha`` broadcasts
  against ``z[..., :1]``. Shares nothing with entmax (no reduction to it).
  """
  z = np.asarray(z, np.float64)
  d = z.shape[-1]
  alpha = np.broadcast_to(np.asarray(alpha, np.float64), z.shape[:-1] + (1,))
  power = alpha / (alpha - 1.0)
  top = z.max(-1, keepdims=True)
  lo, hi = top - 1.0, top - float(d) ** (-1.0 / power)
  for _ in range(steps):
    mid = 0.5 * (lo + hi)
    enough = (np.maximum(z - mid, 0.0) ** power).sum(-1, keepdims=True) >= 1
    lo = np.where(enough, mid, lo)
    hi = np.where(enough, hi, mid)
  u = np.maximum(z - lo, 0.0) ** (1.0 / (alpha - 1.0))
  return u / u.sum(-1, keepdims=True)


def normmax_margin(z, alpha):
  """``z - tau`` of alpha-normmax: positive exactly on the support."""
  z = np.asarray(z, np.float64)
  p = normmax_bisect(z, alpha)
  alpha = np.broadcast_to(np.asarray(alpha, np.float64), z.shape[:-1] + (1,))
  # On the support z - tau = (p / ||p||_alpha) ** (alpha - 1); elsewhere the
  # margin is z - tau with tau recovered from any support entry.
  norm = ((p**alpha).sum(-1, keepdims=True)) ** (1.0 / alpha)
  top = z.argmax(-1)[..., None]
  tau = np.take_along_axis(z, top, -1) - (
    np.take_along_axis(p, top, -1) / norm
  ) ** (alpha - 1.0)
  return z - tau


def normmax_alpha_vjp_fd(z, alpha, g, h=1e-5):
  """``<g, dp/dalpha>`` per row by central differences of the bisection."""
  alpha = np.asarray(alpha, np.float64)
  up = normmax_bisect(z, alpha + h)
  down = normmax_bisect(z, alpha - h)
  return (np.asarray(g, np.float64) * (up - down) / (2 * h)).sum(
    -1, keepdims=True
  )


def _budget_row(z, k):
  """One row: the capped-simplex projection by a search over breakpoints.

  ``f(tau) = sum clip(z - tau, 0, 1)`` is piecewise linear with kinks at
  ``z_i`` and ``z_i - 1``: evaluate it at every kink, find the two
  consecutive kinks whose values straddle ``k`` and interpolate linearly.
  """
  live = z[np.isfinite(z)]
  if k >= live.size:
    return np.where(np.isfinite(z), 1.0, 0.0)
  kinks = np.unique(np.concatenate([live, live - 1.0]))[::-1]
  f = np.clip(live[None, :] - kinks[:, None], 0.0, 1.0).sum(-1)
  # f rises as the kinks fall; the first kink where f reaches k.
  j = int(np.argmax(f >= k))
  if f[j] == k or j == 0:
    tau = kinks[j]
  else:
    tau = kinks[j] + (f[j] - k) * (kinks[j - 1] - kinks[j]) / (f[j] - f[j - 1])
  return np.clip(z - tau, 0.0, 1.0)


def budget(z, k):
  """Budget sparsemax (projection onto ``{0 <= p <= 1, sum p = k}``).

  Sort-free and solver-free: a search over the kinks of the row sum (see
  :func:`_budget_row`); ``k`` is a float or one per row (broadcasting
  against ``z[..., :1]``). ``-inf`` entries get 0; ``k`` at or above the
  number of finite entries gives them all 1.
  """
  z = np.asarray(z, np.float64)
  k = np.broadcast_to(np.asarray(k, np.float64), z.shape[:-1] + (1,))
  rows = z.reshape(-1, z.shape[-1])
  ks = k.reshape(-1)
  out = np.stack([_budget_row(r, kk) for r, kk in zip(rows, ks)])
  return out.reshape(z.shape)


def budget_threshold(z, k, steps=BISECTION_STEPS):
  """``tau`` of budget sparsemax by plain bisection (rows of finite z)."""
  z = np.asarray(z, np.float64)
  k = np.broadcast_to(np.asarray(k, np.float64), z.shape[:-1] + (1,))
  lo = z.min(-1, keepdims=True) - 1.0
  hi = z.max(-1, keepdims=True)
  for _ in range(steps):
    mid = 0.5 * (lo + hi)
    enough = np.clip(z - mid, 0.0, 1.0).sum(-1, keepdims=True) >= k
    lo = np.where(enough, mid, lo)
    hi = np.where(enough, hi, mid)
  return lo


def budget_bisect(z, k):
  """Budget sparsemax from :func:`budget_threshold`, for rows too long for
  :func:`budget`'s quadratic search."""
  z = np.asarray(z, np.float64)
  return np.clip(z - budget_threshold(z, k), 0.0, 1.0)
