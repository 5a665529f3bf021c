"""budget_sparsemax against independent float64 references.

The references (``tests/_references.py``) share no code with softjax: a
search over the kinks of the piecewise-linear row sum (exact, quadratic in
the row length), plain bisection for long rows, and the sort-based
sparsemax for ``k = 1``; PyTorch's ``entmax.budget_bisect`` when installed.
Gradients are checked by finite differences in float64
(``jax.test_util.check_grads``) and against the closed form
``1_F (g - mean_F g)``.
"""

from __future__ import annotations

import functools

import _inputs
import _references as ref
from _tiers import slow_except
import chex
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

import softjax

INF, NAN = np.inf, np.nan
KS = (1.0, 2.5, 4.0)
# Per entry: the row sum is k to a few ulps of k, an error the fractional
# entries share, and z - tau is rounded once.
TOL32 = 4e-6


def _budget(x, k, axis=-1):
  return ref.along(lambda z: ref.budget(z, k), x, axis)


def _margins(x, k):
  """Distance of each entry (last axis) to the nearest kink, z - tau or
  z - tau - 1: tiny margins may round to either side in float32."""
  tau = ref.budget_threshold(x, k)
  v = np.asarray(x, np.float64) - tau
  return np.minimum(np.abs(v), np.abs(v - 1.0))


def _assert_budget(p, expected, k, axis=-1, tol=TOL32, margin=None):
  """Values, the capped simplex, and exact 0 / 1 where the reference has
  them (away from the kinks)."""
  p = np.asarray(p, np.float64)
  np.testing.assert_allclose(p, expected, rtol=0, atol=tol)
  assert ((p >= 0) & (p <= 1)).all()
  # The threshold is exact to its float32 resolution (eps |t|, t the
  # threshold below the row maximum), which every fractional entry shares:
  # the sum is k to about |F| such ulps.
  fraction = ((expected > 0) & (expected < 1)).sum(axis=axis).max()
  np.testing.assert_allclose(
    p.sum(axis=axis),
    np.sum(expected, axis=axis),
    rtol=0,
    atol=tol + tol * fraction,
  )
  far = np.ones(p.shape, bool) if margin is None else margin > 1e-5
  for value in (0.0, 1.0):
    np.testing.assert_array_equal(
      (p == value)[far], (expected == value)[far], err_msg=f"exact {value}"
    )


# --------------------------------------------------------------------------
# The references.
# --------------------------------------------------------------------------


def test_references_agree():
  z = _inputs.scores((6, 11), 2.0, seed=1).astype(np.float64)
  for k in (1.0, 2.5, 7.0, 11.0):
    np.testing.assert_allclose(
      ref.budget(z, k), ref.budget_bisect(z, k), rtol=0, atol=1e-13
    )
    # The capped simplex, and p = clip(z - tau, 0, 1) (the KKT conditions).
    p = ref.budget(z, k)
    np.testing.assert_allclose(p.sum(-1), k, atol=1e-12)
    tau = ref.budget_threshold(z, k)
    np.testing.assert_allclose(p, np.clip(z - tau, 0, 1), atol=1e-12)
  np.testing.assert_allclose(
    ref.budget(z, 1.0), ref.sparsemax(z), rtol=0, atol=1e-13
  )
  # Ties at the kinks and flat pieces of the row sum (integer k, gaps > 1).
  tied = np.array([[3.0, 3.0, 1.0, 1.0, -2.0], [5.0, 2.0, 0.5, 0.5, 0.5]])
  np.testing.assert_allclose(
    ref.budget(tied, 2.0), [[1, 1, 0, 0, 0]] * 1 + [[1, 1, 0, 0, 0]], atol=1e-13
  )
  np.testing.assert_allclose(
    ref.budget(tied, 3.0), ref.budget_bisect(tied, 3.0), atol=1e-12
  )


# --------------------------------------------------------------------------
# Values.
# --------------------------------------------------------------------------

SHAPE_CASES = (
  ("d1", (4, 1), -1, (1.0,)),
  ("d5", (6, 5), -1, KS),
  ("2d", (5, 9), -1, KS),
  ("3d_axis0", (7, 3, 2), 0, KS),
  ("3d_tuple", (3, 2, 4), (0, 2), KS),
  ("3d_none", (2, 3, 2), None, KS),
)


@pytest.mark.parametrize("scale", slow_except([0.01, 1.0, 30.0], 1.0))
def test_matches_reference(scale):
  cases = [
    (name, _inputs.scores(shape, scale, seed=i), axis, k)
    for i, (name, shape, axis, ks) in enumerate(SHAPE_CASES)
    for k in ks
  ]
  outs = jax.jit(
    lambda xs: [
      softjax.budget_sparsemax(x, k, axis=axis)
      for x, (_, _, axis, k) in zip(xs, cases)
    ]
  )([c[1] for c in cases])
  for (_name, x, axis, k), p in zip(cases, outs):
    chex.assert_shape(p, x.shape)
    chex.assert_type(p, jnp.float32)
    expected = _budget(x, k, axis)
    # Scores of magnitude 30 round z - tau to ~2e-6.
    _assert_budget(p, expected, k, axis, tol=TOL32 * max(1.0, scale / 10))


@pytest.mark.parametrize("k", slow_except([1.0, 8.0, 100.0], 8.0))
def test_long_rows_warm_start(k):
  # Rows long enough for the warm start from block maxima (>= 256): normal
  # rows, a cluster inside one block, ties, masked entries, near-uniform
  # rows, -1e9 padding (a far outlier stretching the bracket), a k larger
  # than the live block maxima.
  n = 1024
  rows = [
    _inputs.scores((n,), s, seed=i) for i, s in enumerate((0.01, 1.0, 30.0))
  ]
  clustered = _inputs.scores((n,), 1.0, seed=5)
  clustered[16:48] = 6.0 + np.linspace(0.0, 0.1, 32)
  tied = np.zeros(n, np.float32)
  tied[::16] = 1.0
  padded = _inputs.scores((n,), 1.0, seed=6)
  padded[700:] = -1e9
  few_blocks = np.full(n, -50.0, np.float32)
  few_blocks[:5] = _inputs.scores((5,), 2.0, seed=7)
  few_blocks[5::300] = 3.0
  x = np.stack(rows + [clustered, tied, padded, few_blocks])
  masked = _inputs.scores((1, n), 3.0, seed=8)
  masked[:, ::3] = -INF
  p, pm = jax.jit(
    lambda x, m: (
      softjax.budget_sparsemax(x, k),
      softjax.budget_sparsemax(m, k),
    )
  )(x, masked)
  expected = ref.budget_bisect(x, k)
  _assert_budget(p, expected, k, margin=_margins(x, k), tol=TOL32 * 4)
  live = masked[0] > -INF
  expected_m = ref.budget_bisect(masked[:, live], k)
  _assert_budget(np.asarray(pm)[:, live], expected_m, k, tol=TOL32 * 4)
  assert (np.asarray(pm)[:, ~live] == 0).all()


def test_long_row_against_bisection():
  x = _inputs.scores((2, 100_000), 1.0, seed=9)
  p = np.asarray(jax.jit(lambda x: softjax.budget_sparsemax(x, 50.0))(x))
  expected = ref.budget_bisect(x, 50.0)
  _assert_budget(p, expected, 50.0, margin=_margins(x, 50.0), tol=2e-5)
  assert ((expected > 0) & (expected < 1)).any()


def test_float64():
  x = _inputs.scores((4, 3, 9), 3.0, seed=10, dtype=np.float64)
  k = np.array([[[1.0]], [[2.5]], [[4.0]], [[8.5]]])
  with jax.enable_x64(True):
    p = jax.jit(softjax.budget_sparsemax)(x, k)
    assert p.dtype == jnp.float64
    _assert_budget(p, ref.budget(x, k), k, tol=1e-12)


def test_k_one_is_sparsemax_and_k_n_is_all_ones():
  x = _inputs.scores((6, 7), 2.0, seed=11)
  one, sp, full, near = jax.jit(
    lambda x: (
      softjax.budget_sparsemax(x, 1.0),
      softjax.sparsemax(x),
      softjax.budget_sparsemax(x, 7.0),
      softjax.budget_sparsemax(x, 6.999),
    )
  )(x)
  np.testing.assert_allclose(one, sp, rtol=0, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(one) == 0, np.asarray(sp) == 0)
  np.testing.assert_array_equal(full, np.ones((6, 7)))
  np.testing.assert_allclose(near, ref.budget(x, 6.999), atol=TOL32)


def test_order_preserving_and_translation_invariant():
  x = np.round(_inputs.scores((8, 12), 2.0, seed=12) * 256) / 256
  c = np.array([[-37.0], [0.5], [1000.0], [3.0]] * 2, np.float32)
  p, q = jax.jit(
    lambda x, c: (
      softjax.budget_sparsemax(x, 3.5),
      softjax.budget_sparsemax(x + c, 3.5),
    )
  )(x, c)
  p = np.asarray(p)
  np.testing.assert_allclose(q, p, rtol=0, atol=2e-5)
  order = np.argsort(-x, axis=-1, kind="stable")
  assert (np.diff(np.take_along_axis(p, order, -1), axis=-1) <= 0).all()


def test_matches_pytorch_entmax():
  torch = pytest.importorskip("torch")
  entmax = pytest.importorskip("entmax")
  if not hasattr(entmax, "budget_bisect"):
    pytest.skip("this entmax has no budget_bisect")
  x = _inputs.scores((6, 9), 2.0, seed=13).astype(np.float64)
  for k in (2, 3):
    theirs = entmax.budget_bisect(torch.tensor(x), budget=k, n_iter=100)
    np.testing.assert_allclose(
      softjax.budget_sparsemax(x.astype(np.float32), float(k)),
      theirs.numpy(),
      rtol=0,
      atol=1e-5,
    )


# --------------------------------------------------------------------------
# Gradients, in float64.
# --------------------------------------------------------------------------


# Rows on a spaced grid: every entry is >= 0.05 from the kinks for the k
# used below (asserted), far beyond check_grads' step.
_grid_rows = functools.partial(_inputs.grid, d=7, spacing=0.53, shift=1.5)


_K_ROWS = np.array([[1.25], [2.15], [3.35]])


@pytest.mark.parametrize("k", slow_except([2.2, "array"], "array"))
def test_grads_x(k):
  x = _grid_rows(3)
  kk = _K_ROWS if k == "array" else k
  assert _margins(x, kk).min() > 0.05
  with jax.enable_x64(True):
    f = jax.jit(lambda x: softjax.budget_sparsemax(x, jnp.asarray(kk)))
    check_grads(f, (jnp.asarray(x),), order=2, modes=["rev"])


def test_grads_k_and_temperature():
  x = _grid_rows(3, seed=3)
  t = np.array([[0.97], [1.0], [1.03]])
  t_full = _inputs.rng(4).uniform(0.99, 1.01, x.shape)
  assert _margins(x / t, _K_ROWS).min() > 0.02
  assert _margins(x / t_full, _K_ROWS).min() > 0.02
  with jax.enable_x64(True):
    f = lambda x, k, t: softjax.budget_sparsemax(x, k, temperature=t)
    args = (jnp.asarray(x), jnp.asarray(_K_ROWS))
    check_grads(jax.jit(f), args + (jnp.asarray(t),), order=2, modes=["rev"])
    check_grads(
      jax.jit(f), args + (jnp.asarray(t_full),), order=1, modes=["rev"]
    )


def test_grad_closed_form():
  # dx = 1_F (g - mean_F g) and dk = mean_F g, F the fractional entries of
  # the reference.
  x = _grid_rows(3, seed=5)
  g = _inputs.rng(6).normal(size=x.shape)
  with jax.enable_x64(True):
    gx, gk = jax.jit(
      jax.grad(
        lambda x, k: (softjax.budget_sparsemax(x, k) * g).sum(), argnums=(0, 1)
      )
    )(jnp.asarray(x), jnp.asarray(_K_ROWS))
  p = ref.budget(x, _K_ROWS)
  f = ((p > 0) & (p < 1)).astype(float)
  mean = (f * g).sum(-1, keepdims=True) / f.sum(-1, keepdims=True)
  np.testing.assert_allclose(gx, f * (g - mean), rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(gk, mean, rtol=1e-10)


def test_grad_k_is_zero_without_a_fraction():
  # Integer k and gaps > 1: every entry is 0 or 1, locally constant in x;
  # the output jumps as k crosses the integer: its k-gradient is taken as 0.
  x = jnp.array([[5.0, 3.0, 1.0, -1.0]])
  gx, gk = jax.grad(
    lambda x, k: softjax.budget_sparsemax(x, k).sum(), argnums=(0, 1)
  )(x, jnp.array([[2.0]]))
  np.testing.assert_array_equal(
    softjax.budget_sparsemax(x, 2.0), [[1, 1, 0, 0]]
  )
  assert (np.asarray(gx) == 0).all() and np.asarray(gk)[0, 0] == 0


# --------------------------------------------------------------------------
# Masks, temperature, non-finite scores.
# --------------------------------------------------------------------------


def test_mask_exact_zeros_gradient_and_empty_rows():
  x = _inputs.scores((3, 6), 2.0, seed=14)
  m = np.array(
    [[1, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], bool
  )
  g = _inputs.scores((3, 6), 1.0, seed=15)
  k = np.array([[2.5], [1.5], [3.0]], np.float32)
  f = lambda x: softjax.budget_sparsemax(x, k, where=m)
  p, grad = jax.jit(lambda x: (f(x), jax.grad(lambda x: (f(x) * g).sum())(x)))(
    x
  )
  p, grad = np.asarray(p), np.asarray(grad)
  assert (p[~m] == 0).all() and (p[1] == 0).all()
  assert np.isfinite(grad).all() and (grad[~m] == 0).all()
  for r in (0, 2):
    live = m[r]
    np.testing.assert_allclose(
      p[r, live], ref.budget(x[r, live], k[r, 0]), atol=TOL32
    )


def test_temperature_is_division():
  x = _inputs.scores((4, 7), 2.0, seed=16)
  t_row = _inputs.temperature(x.shape, "row", seed=17, dtype=np.float32)
  outs = jax.jit(
    lambda x, t: (
      softjax.budget_sparsemax(x, 2.5, temperature=0.7),
      softjax.budget_sparsemax(x, 2.5, temperature=t),
    )
  )(x, t_row)
  for p, t in zip(outs, (0.7, t_row)):
    np.testing.assert_allclose(
      p, ref.budget(x / np.asarray(t, np.float64), 2.5), atol=TOL32
    )


def test_nonfinite_and_extreme_scores():
  big = float(np.finfo(np.float32).max)
  x = np.array(
    [
      [1.0, INF, INF, 0.0, -INF],  # 2 +inf entries, k = 1.5: 0.75 each
      [INF, 2.0, 3.0, INF, INF],  # 3 +inf entries, k = 1.5: 0.5 each
      [0.3, -INF, 0.2, 0.0, -1.0],
      [0.4, 1.2, NAN, -0.3, 0.9],  # NaN stays in its row
      [big, -big, 0.0, 1.0, 2.0],
      [-1e9, 0.5, -1e9, 0.1, 0.0],
      [1e-45, 0.0, -1e-45, 0.0, 1e-40],
    ],
    np.float32,
  )
  w = _inputs.scores(x.shape, 1.0, seed=18)
  f = lambda x, k: softjax.budget_sparsemax(x, k)
  for k in (1.5, 3.0):
    p, grad = jax.jit(
      lambda x: (f(x, k), jax.grad(lambda x: (f(x, k) * w).sum())(x))
    )(x)
    p, grad = np.asarray(p), np.asarray(grad)
    half = min(1, k / 2)
    np.testing.assert_allclose(p[0], [0, half, half, 0, 0], atol=1e-6)
    np.testing.assert_allclose(
      p[1], [min(1, k / 3), 0, 0, min(1, k / 3), min(1, k / 3)], atol=1e-6
    )
    assert np.isnan(p[3]).all()
    # x - max(x) rounds 0, 1 and 2 to the same -big: the fraction cannot be
    # resolved (documented); the result is still a point of [0, 1].
    assert p[4, 0] == 1 and ((p[4] >= 0) & (p[4] <= 1)).all()
    for r in (2, 5, 6):
      finite = np.isfinite(x[r])
      np.testing.assert_allclose(
        p[r, finite], ref.budget(x[r, finite], k), atol=TOL32, err_msg=str(r)
      )
    assert (p[2, 1] == 0) and np.isfinite(np.delete(grad, 3, 0)).all()


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision(dtype):
  x = jnp.asarray(_inputs.scores((4, 8), 2.0, seed=19)).astype(dtype)
  p = jax.jit(lambda x: softjax.budget_sparsemax(x, 2.5))(x)
  chex.assert_type(p, dtype)
  expected = ref.budget(np.asarray(x.astype(jnp.float32)), 2.5)
  p64 = np.asarray(p.astype(jnp.float32), np.float64)
  eps = float(jnp.finfo(dtype).eps)
  np.testing.assert_allclose(p64, expected, atol=2 * eps)
  assert (p64[expected == 0] == 0).all() and (p64[expected == 1] == 1).all()


# --------------------------------------------------------------------------
# Transformations.
# --------------------------------------------------------------------------


class VariantsTest(chex.TestCase):
  @chex.variants(
    with_jit=True, without_jit=True, with_device=True, with_pmap=True
  )
  def test_array_k_mask_temperature(self):
    x = _inputs.scores((4, 7), 2.0, seed=20)
    k = np.array([[1.0], [2.5], [0.5], [4.0]], np.float32)
    where = _inputs.random_mask((4, 7), 21, 0.8)
    where[:, :5] = True
    t = _inputs.temperature((4, 7), "row", seed=22, dtype=np.float32)
    p = self.variant(
      lambda x, k, m, t: softjax.budget_sparsemax(x, k, where=m, temperature=t)
    )(x, k, where, t)
    p = np.asarray(p)
    assert (p[~where] == 0).all()
    for r in range(4):
      live = where[r]
      np.testing.assert_allclose(
        p[r, live], ref.budget(x[r, live] / t[r], k[r, 0]), atol=TOL32
      )


def test_vmap_matches_batched_call():
  x = _inputs.scores((4, 3, 7), 2.0, seed=23)
  k = np.linspace(1.0, 4.0, 4, dtype=np.float32).reshape(4, 1, 1)
  f = lambda x, k: softjax.budget_sparsemax(x, k)
  batched, mapped = jax.jit(lambda x, k: (f(x, k), jax.vmap(f)(x, k)))(x, k)
  np.testing.assert_allclose(mapped, batched, rtol=0, atol=1e-7)
  np.testing.assert_allclose(batched, ref.budget(x, k), atol=TOL32)


# --------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------

_X = np.zeros((2, 3), np.float32)


@pytest.mark.parametrize(
  "k,kwargs,exc",
  [
    (0.0, {}, ValueError),
    (-1.0, {}, ValueError),
    (NAN, {}, ValueError),
    (INF, {}, ValueError),
    (3.5, {}, ValueError),  # more than the row
    (True, {}, TypeError),
    (np.array([[1.0], [0.0]]), {}, ValueError),
    (np.full((2, 3), 1.0), {}, ValueError),  # not one per row
    (np.full((5, 1), 1.0), {}, ValueError),  # not broadcastable
    (2.5, dict(where=np.array([True, True, False])), ValueError),
    (
      np.array([[1.0], [2.5]]),
      dict(where=np.array([[1, 1, 1], [1, 0, 1]], bool)),
      ValueError,
    ),
  ],
)
def test_bad_k_raises_at_trace_time(k, kwargs, exc):
  with pytest.raises(exc, match="`k`"):
    jax.jit(lambda x: softjax.budget_sparsemax(x, k, **kwargs))(_X)


def test_masked_rows_do_not_limit_k():
  # A row with every entry masked gives zeros whatever k.
  where = np.array([[True] * 3, [False] * 3])
  p = softjax.budget_sparsemax(_X, 2.0, where=where)
  np.testing.assert_allclose(p, [[2 / 3] * 3, [0.0] * 3], atol=1e-6)


def test_traced_bad_k_gives_the_documented_result():
  x = jnp.array([[0.5, 0.2, -0.1, -3.0]] * 5)
  k = jnp.array([[0.0], [-1.0], [5.0], [NAN], [INF]])
  p = np.asarray(jax.jit(softjax.budget_sparsemax)(x, k))
  np.testing.assert_array_equal(p[:2], 0.0)  # k <= 0: zeros
  np.testing.assert_array_equal(p[2], 1.0)  # more than the row: ones
  assert np.isnan(p[3]).all()
  np.testing.assert_array_equal(p[4], 1.0)
  # Traced where: k above a row's unmasked entries gives 1 on each of them.
  m = jnp.array([[True, True, False, False]])
  q = jax.jit(lambda x, m: softjax.budget_sparsemax(x, 3.0, where=m))(x[:1], m)
  np.testing.assert_array_equal(q, [[1, 1, 0, 0]])


# --------------------------------------------------------------------------
# Properties on random rows (hypothesis; the profile is set in conftest.py).
# --------------------------------------------------------------------------


@functools.cache
def _property_runner():
  def objective(x, k, w):
    return jnp.sum(softjax.budget_sparsemax(x, k) * w)

  def run(x, k, w, v):
    p = softjax.budget_sparsemax(x, k)
    g, gk = jax.grad(objective, argnums=(0, 1))(x, k, w)
    hv = jax.grad(lambda y: jnp.vdot(jax.grad(objective)(y, k, w), v))(x)
    return p, softjax.budget_sparsemax(x + 64.0, k), g, gk, hv

  return jax.jit(run)


@settings(max_examples=30, deadline=None)
@given(
  base=st.lists(st.integers(-512, 512), min_size=24, max_size=24),
  scale=st.sampled_from([1 / 64, 1 / 8, 1.0, 16.0]),
  ks=st.lists(st.floats(0.25, 6.0, width=32), min_size=4, max_size=4),
)
def test_random_rows(base, scale, ks):
  # Dyadic scores (x + 64 is exact), ties included; one k per row.
  x = (np.asarray(base, np.float32) / 64 * np.float32(scale)).reshape(4, 6)
  k = np.asarray(ks, np.float32).reshape(4, 1)
  w, v = _inputs.rng(30).normal(size=(2, 4, 6)).astype(np.float32)
  p, shifted, g, gk, hv = map(np.asarray, _property_runner()(x, k, w, v))
  assert ((p >= 0) & (p <= 1)).all()
  # Scores are shifted by the row maximum: each entry carries the float32
  # rounding of x - max(x) (documented), the sum 6 of them.
  tol = 8 * np.finfo(np.float32).eps * max(1.0, np.abs(x).max())
  np.testing.assert_allclose(p.sum(-1), k[:, 0], atol=6 * tol)
  np.testing.assert_allclose(p, ref.budget(x, k), atol=tol)
  np.testing.assert_allclose(shifted, p, atol=tol)
  order = np.argsort(-x, axis=-1, kind="stable")
  assert (np.diff(np.take_along_axis(p, order, -1), axis=-1) <= 1e-6).all()
  for d in (g, gk, hv):
    assert np.isfinite(d).all()


def test_equal_scores_and_an_axis_of_size_one():
  x = jnp.array([[0.3] * 5, [-2.0] * 5])
  np.testing.assert_allclose(
    softjax.budget_sparsemax(x, 2.0), np.full((2, 5), 0.4), atol=1e-6
  )
  np.testing.assert_allclose(
    softjax.budget_sparsemax(jnp.array([[4.0], [-1.0]]), 0.5),
    [[0.5], [0.5]],
    atol=1e-6,
  )
  with pytest.raises(ValueError, match="`k`"):
    softjax.budget_sparsemax(jnp.array([[4.0], [-1.0]]), 1.5)
  empty = softjax.budget_sparsemax(jnp.zeros((3, 0)), 2.0)
  assert empty.shape == (3, 0)
