"""Property-based tests (hypothesis) of every normaliser and loss.

Random shapes, axes, dtypes, masks, magnitudes, temperatures and α, checking
simplex membership, order preservation, translation invariance, the
α-monotonicity of the support, agreement of jit / no-jit / vmap, finite
gradients (first and second order), non-negative losses and their ``p - y``
gradient.

Run time is bounded: shapes come from a small fixed set and every jitted
function is built once and reused, so examples never retrace; α and the
temperature are traced arrays, drawn freely without recompiling. The profile
(deterministic in CI, no deadline) is set in ``conftest.py``;
``SOFTJAX_HYPOTHESIS_SCALE=10`` runs ten times as many examples. Failing
examples found along the way are regression tests in
``tests/test_reliability.py``.
"""

from __future__ import annotations

import functools
import os

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softjax

SCALE = int(os.environ.get("SOFTJAX_HYPOTHESIS_SCALE", "1"))


def _settings(n: int):
  return settings(max_examples=n * SCALE, deadline=None)


# (shape, axis): a fixed set, so that nothing is retraced per example.
LAYOUTS = (((4, 6), -1), ((5, 3), 0), ((2, 3, 4), (0, 2)))
# Magnitudes of the scores, from subnormal-adjacent to near-overflow.
MAGNITUDES = (1e-30, 1e-5, 1.0, 30.0, 1e4, 1e30)


def _keepdims(shape, axis):
  axes = (axis,) if isinstance(axis, int) else axis
  axes = tuple(a % len(shape) for a in axes)
  return tuple(1 if i in axes else n for i, n in enumerate(shape)), axes


def _entmax(x, axis, where, t, alpha):
  return softjax.entmax(x, alpha, axis, where=where, temperature=t)


# name -> f(x, axis, where, t, alpha); alpha is used by "entmax" only.
MAPS = {
  "softmax": lambda x, a, w, t, _: softjax.softmax(
    x, a, where=w, temperature=t
  ),
  "log_softmax": lambda x, a, w, t, _: softjax.log_softmax(
    x, a, where=w, temperature=t
  ),
  "sparsemax": lambda x, a, w, t, _: softjax.sparsemax(
    x, a, where=w, temperature=t
  ),
  "entmax15": lambda x, a, w, t, _: softjax.entmax15(
    x, a, where=w, temperature=t
  ),
  "entmax": _entmax,
  # α in [1.1, 4.1]: normmax needs α > 1.
  "normmax": lambda x, a, w, t, alpha: softjax.normmax(
    x, alpha + 0.1, a, where=w, temperature=t
  ),
}


def _as_probs(name, out):
  return jnp.exp(out) if name == "log_softmax" else out


@functools.cache
def _runner(name: str, layout: int):
  """One jitted function per (map, layout): output and derivatives."""
  _, axis = LAYOUTS[layout]
  f = MAPS[name]

  def objective(x, where, t, alpha, w):
    out = f(x, axis, where, t, alpha)
    out = jnp.where(jnp.isfinite(out), out, 0.0)  # -inf of log_softmax
    return jnp.sum(out * w)

  def run(x, where, t, alpha, w, v):
    p = _as_probs(name, f(x, axis, where, t, alpha))
    g, gt, ga = jax.grad(objective, argnums=(0, 2, 3))(x, where, t, alpha, w)
    # Second order: a Hessian-vector product, reverse over reverse.
    hv = jax.grad(
      lambda y: jnp.vdot(jax.grad(objective)(y, where, t, alpha, w), v)
    )(x)
    return p, g, gt, ga, hv

  return jax.jit(run)


@st.composite
def problems(draw, finite_only=False, dyadic=False, layout=None):
  """A layout, scores, mask, temperature and α, as NumPy arrays."""
  if layout is None:
    layout = draw(st.integers(0, len(LAYOUTS) - 1))
  shape, axis = LAYOUTS[layout]
  kshape, axes = _keepdims(shape, axis)
  size = int(np.prod(shape))
  if dyadic:
    # Multiples of 1/64 times a power of 2: sums with integers are exact.
    ints = draw(st.lists(st.integers(-640, 640), min_size=size, max_size=size))
    x = np.asarray(ints, np.float32).reshape(shape) / 64
    x *= draw(st.sampled_from([0.125, 1.0, 8.0]))
    t = np.full(kshape, draw(st.sampled_from([0.5, 1.0, 2.0])), np.float32)
  else:
    base = draw(
      st.lists(st.floats(-1, 1, width=32), min_size=size, max_size=size)
    )
    x = np.asarray(base, np.float32).reshape(shape)
    x *= np.float32(draw(st.sampled_from(MAGNITUDES)))
    # Ties: copy some entries onto others.
    if draw(st.booleans()):
      flat = x.reshape(-1)
      for i, j in draw(
        st.lists(
          st.tuples(st.integers(0, size - 1), st.integers(0, size - 1)),
          max_size=6,
        )
      ):
        flat[i] = flat[j]
    t = np.asarray(
      draw(
        st.lists(
          st.floats(0.0625, 16.0, width=32),
          min_size=int(np.prod(kshape)),
          max_size=int(np.prod(kshape)),
        )
      ),
      np.float32,
    ).reshape(kshape)
  if finite_only or not draw(st.booleans()):
    where = np.ones(shape, bool)
  else:
    bits = draw(st.lists(st.booleans(), min_size=size, max_size=size))
    where = np.asarray(bits).reshape(shape) | (x > 0.5 * x.max())
    if draw(st.booleans()):  # a row with nothing left
      where = _clear_first_row(where, axes)
  alpha = np.full(
    (1,) * len(shape), draw(st.floats(1.0, 4.0, width=32)), np.float32
  )
  return layout, x, where, t, alpha


def _clear_first_row(where, axes):
  """``where`` with every entry of its first row (along ``axes``) False."""
  last = tuple(range(-len(axes), 0))
  moved = np.moveaxis(where, axes, last).copy()
  rows = moved.reshape(-1, int(np.prod([where.shape[a] for a in axes])))
  rows[0] = False
  return np.moveaxis(rows.reshape(moved.shape), last, axes)


def _weights(shape, seed=0):
  rng = np.random.default_rng(seed)
  return (
    rng.normal(size=shape).astype(np.float32),
    rng.normal(size=shape).astype(np.float32),
  )


def _row_sums(p, axes):
  return np.asarray(p, np.float64).sum(axis=axes)


NAMES = list(MAPS)


# The two costliest properties run in the full suite only; the unit tier
# checks the same on fixed inputs (test_sparse.py, test_losses.py, ...).
@pytest.mark.slow
@_settings(40)
@given(name=st.sampled_from(NAMES), problem=problems())
def test_simplex_order_and_finite_gradients(name, problem):
  layout, x, where, t, alpha = problem
  shape, axis = LAYOUTS[layout]
  _, axes = _keepdims(shape, axis)
  w, v = _weights(shape)
  p, g, gt, ga, hv = _runner(name, layout)(x, where, t, alpha, w, v)
  p = np.asarray(p, np.float64)
  # Simplex: non-negative, exact zeros where masked, rows sum to 1 (0 when
  # nothing is left).
  assert (p >= 0).all()
  assert (p[~where] == 0).all()
  live_rows = where.any(axis=axes)
  np.testing.assert_allclose(
    _row_sums(p, axes), live_rows.astype(float), atol=1e-5
  )
  # Finite gradients, first and second order, for every argument.
  for d in (g, gt, ga, hv):
    assert np.isfinite(np.asarray(d)).all()
  assert (np.asarray(g)[~where] == 0).all()
  # Order preservation among live entries of a row (T is per row).
  xm = np.moveaxis(np.where(where, x, -np.inf), axes, range(-len(axes), 0))
  pm = np.moveaxis(p, axes, range(-len(axes), 0))
  xm = xm.reshape(xm.shape[: xm.ndim - len(axes)] + (-1,))
  pm = pm.reshape(xm.shape)
  order = np.argsort(xm, axis=-1, kind="stable")
  xs = np.take_along_axis(xm, order, -1)
  ps = np.take_along_axis(pm, order, -1)
  with np.errstate(invalid="ignore"):  # -inf - -inf between masked entries
    rising = np.diff(xs, axis=-1) > 0
  assert (np.diff(ps, axis=-1)[rising] >= -1e-6).all()


@_settings(25)
@given(
  name=st.sampled_from(NAMES),
  problem=problems(dyadic=True),
  shift=st.integers(-1000, 1000),
)
def test_translation_invariance(name, problem, shift):
  layout, x, where, t, alpha = problem
  w, v = _weights(x.shape)
  run = _runner(name, layout)
  p = run(x, where, t, alpha, w, v)[0]
  q = run(x + np.float32(shift), where, t, alpha, w, v)[0]
  np.testing.assert_allclose(q, p, atol=1e-6, rtol=1e-6)


@_settings(30)
@given(
  problem=problems(dyadic=True),
  a1=st.floats(1.0, 4.0, width=32),
  a2=st.floats(1.0, 4.0, width=32),
)
def test_support_shrinks_as_alpha_grows(problem, a1, a2):
  layout, x, where, t, _ = problem
  lo, hi = min(a1, a2), max(a1, a2)
  w, v = _weights(x.shape)
  run = _runner("entmax", layout)
  ones = np.ones((1,) * x.ndim, np.float32)
  p_lo = np.asarray(run(x, where, t, lo * ones, w, v)[0])
  p_hi = np.asarray(run(x, where, t, hi * ones, w, v)[0])
  # Every entry in the support at the larger α is in it at the smaller α
  # (up to entries at the edge, where rounding decides).
  assert not ((p_hi > 1e-6) & (p_lo == 0)).any()


@functools.cache
def _plain(name: str):
  _, axis = LAYOUTS[0]
  return lambda x, where, t, alpha: _as_probs(
    name, MAPS[name](x, axis, where, t, alpha)
  )


@functools.cache
def _batched(name: str):
  return jax.jit(jax.vmap(_plain(name)))


# The chex variants of test_dense.py and test_sparse.py cover jit and vmap in
# the unit tier.
@pytest.mark.slow
@_settings(10)
@given(name=st.sampled_from(NAMES), problem=problems(layout=0))
def test_jit_no_jit_and_vmap_agree(name, problem):
  _, x, where, t, alpha = problem  # layout 0: (4, 6) along the last axis
  f = _plain(name)
  eager = np.asarray(f(x, where, t, alpha))
  jitted = np.asarray(_runner(name, 0)(x, where, t, alpha, x, x)[0])
  # vmap over the rows: each row on its own.
  mapped = np.asarray(
    _batched(name)(
      x[:, None], where[:, None], t[:, None], np.stack([alpha] * 4)
    )
  )
  np.testing.assert_allclose(jitted, eager, atol=1e-6)
  np.testing.assert_allclose(mapped[:, 0], eager, atol=1e-6)


@functools.cache
def _half_runner(name: str, dtype):
  _, axis = LAYOUTS[0]
  f = MAPS[name]
  return jax.jit(
    lambda x, a: (
      f(x, axis, None, 1.0, a),
      f(x.astype(jnp.float32), axis, None, 1.0, a),
    )
  )


@_settings(15)
@given(
  name=st.sampled_from(NAMES),
  dtype=st.sampled_from([jnp.float16, jnp.bfloat16]),
  base=st.lists(st.floats(-1, 1, width=16), min_size=24, max_size=24),
  magnitude=st.sampled_from([1e-3, 1.0, 60.0, 6e4]),
  alpha=st.floats(1.0, 4.0, width=32),
)
def test_half_precision_is_float32_rounded(name, dtype, base, magnitude, alpha):
  x = jnp.asarray((np.asarray(base) * magnitude).reshape(4, 6), dtype)
  out, reference = _half_runner(name, dtype)(x, jnp.full((1, 1), alpha))
  assert out.dtype == dtype
  # Computed in float32 and rounded once: zeros stay exactly zero.
  np.testing.assert_array_equal(out, reference.astype(dtype))
  p = np.asarray(_as_probs(name, out.astype(jnp.float32)))
  tol = 2e-2 if dtype == jnp.bfloat16 else 4e-3
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=tol)


# --------------------------------------------------------------------------
# Losses.
# --------------------------------------------------------------------------

LOSSES = {
  "softmax_loss": (
    lambda x, y, a, w: softjax.losses.softmax_loss(x, y, where=w),
    lambda x, a, w: softjax.softmax(x, where=w),
  ),
  "sparsemax_loss": (
    lambda x, y, a, w: softjax.losses.sparsemax_loss(x, y, where=w),
    lambda x, a, w: softjax.sparsemax(x, where=w),
  ),
  "entmax15_loss": (
    lambda x, y, a, w: softjax.losses.entmax15_loss(x, y, where=w),
    lambda x, a, w: softjax.entmax15(x, where=w),
  ),
  "entmax_loss": (
    lambda x, y, a, w: softjax.losses.entmax_loss(x, y, a, where=w),
    lambda x, a, w: softjax.entmax(x, a[:, None], where=w),
  ),
  "normmax_loss": (
    lambda x, y, a, w: softjax.losses.normmax_loss(x, y, a + 0.1, where=w),
    lambda x, a, w: softjax.normmax(x, a[:, None] + 0.1, where=w),
  ),
}


@functools.cache
def _loss_runner(name: str):
  loss, normaliser = LOSSES[name]

  def run(x, y, alpha, where, weights):
    value = loss(x, y, alpha, where)
    g = jax.grad(lambda z: jnp.vdot(loss(z, y, alpha, where), weights))(x)
    return value, g, normaliser(x, alpha, where)

  return jax.jit(run)


@pytest.mark.slow  # see test_simplex_order_and_finite_gradients
@_settings(30)
@given(
  name=st.sampled_from(list(LOSSES)),
  soft=st.booleans(),
  base=st.lists(st.floats(-1, 1, width=32), min_size=24, max_size=24),
  magnitude=st.sampled_from(MAGNITUDES),
  labels=st.lists(st.integers(0, 5), min_size=4, max_size=4),
  masked=st.lists(st.booleans(), min_size=24, max_size=24),
  alpha=st.floats(1.0, 4.0, width=32),
)
def test_losses_nonnegative_with_gradient_p_minus_y(
  name, soft, base, magnitude, labels, masked, alpha
):
  x = (np.asarray(base, np.float32) * np.float32(magnitude)).reshape(4, 6)
  ids = np.asarray(labels)
  where = np.asarray(masked).reshape(4, 6)
  where[np.arange(4), ids] = True  # the target class stays live
  where[3] = False if masked[0] else where[3]  # sometimes a row left out
  if soft:
    rng = np.random.default_rng(int(ids.sum()))
    y = rng.dirichlet(np.ones(6), size=4).astype(np.float32) * where
    y = (y / np.maximum(y.sum(-1, keepdims=True), 1e-30)).astype(np.float32)
    y[3] = y[3] if where[3].any() else 0.0
  else:
    y = ids.astype(np.int32)
  weights = np.asarray([1.0, -0.5, 2.0, 0.25], np.float32)
  value, g, p = _loss_runner(name)(
    x, y, np.full(4, alpha, np.float32), where, weights
  )
  value, g, p = (np.asarray(a, np.float64) for a in (value, g, p))
  target = y if soft else np.eye(6)[ids]
  target = np.where(where, target, 0.0)
  live = where.any(-1)
  assert (value >= 0).all()
  # Finite unless the true loss overflows float32 (magnitude 1e30).
  if magnitude < 1e30:
    assert np.isfinite(value).all()
  assert (value[~live] == 0).all()
  np.testing.assert_allclose(
    g, weights[:, None] * np.where(live[:, None], p - target, 0.0), atol=1e-6
  )


# --------------------------------------------------------------------------
# gumbel_softmax.
# --------------------------------------------------------------------------


@functools.cache
def _gumbel_runner(hard: bool, normaliser: str):
  nz = {"softmax": softjax.softmax, "sparsemax": softjax.sparsemax}[normaliser]

  def run(key, x, where, t, w):
    f = lambda z: softjax.gumbel_softmax(
      key, z, t, where=where, hard=hard, normalizer=nz
    )
    y = f(x)
    g = jax.grad(lambda z: jnp.vdot(f(z), w))(x)
    return y, g, softjax.gumbel_softmax(key, x, t, where=where, normalizer=nz)

  return jax.jit(run)


@_settings(20)
@given(
  hard=st.booleans(),
  normaliser=st.sampled_from(["softmax", "sparsemax"]),
  seed=st.integers(0, 2**31 - 1),
  problem=problems(layout=0),
)
def test_gumbel_samples(hard, normaliser, seed, problem):
  layout, x, where, t, _ = problem
  w, _ = _weights(x.shape)
  y, g, soft = _gumbel_runner(hard, normaliser)(
    jax.random.key(seed), x, where, t, w
  )
  y, g, soft = (np.asarray(a) for a in (y, g, soft))
  live = where.any(-1)
  assert (y >= 0).all() and (y[~where] == 0).all()
  np.testing.assert_allclose(y.sum(-1), live.astype(float), atol=1e-5)
  assert np.isfinite(g).all() and (g[~where] == 0).all()
  if hard:
    assert set(np.unique(y)) <= {0.0, 1.0}
    picked = y.argmax(-1)[live]
    # The hard sample is an arg-max of the soft one.
    np.testing.assert_array_equal(soft[live, picked], soft[live].max(-1))
