"""normmax and normmax_loss against independent float64 references.

The reference (``tests/_references.py``) bisects the normmax threshold
directly, ``sum [z - tau]_+^(alpha / (alpha - 1)) = 1``, without the
reduction to entmax that softjax uses; the two are cross-checked here
(alpha = 2 against the sort-based entmax15) together with the limits
alpha -> 1 and alpha -> inf. Gradients: finite differences in float64
(``check_grads``), the closed-form VJP of MATH.md on the reference output,
and central differences of the bisection for d/dalpha. PyTorch's
``entmax.normmax_bisect`` is compared when installed.
"""

from __future__ import annotations

import functools

import _inputs
import _references as ref
from _tiers import slow_except
import chex
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

import softjax
from softjax import losses

INF, NAN = np.inf, np.nan
ALPHAS = (1.25, 1.5, 2.0, 3.0, 5.0)
# alpha <= 2 is 1-Lipschitz like entmax (rounding of z - tau only); above 2
# the derivative p^(2 - alpha) grows at the edge of the support.
TOL32 = 3e-6
TOL32_STEEP = 2e-5


def _tol(alpha):
  return TOL32 if np.max(alpha) <= 2 else TOL32_STEEP


def _assert_matches(p, x, alpha, axis=-1, tol=None):
  expected = ref.along(lambda z: ref.normmax_bisect(z, alpha), x, axis)
  p = np.asarray(p, np.float64)
  np.testing.assert_allclose(p, expected, rtol=0, atol=tol or _tol(alpha))
  assert (p >= 0).all()
  np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=0, atol=2e-6)
  # Exact zeros off the support, away from its edge.
  margin = ref.along(lambda z: ref.normmax_margin(z, alpha), x, axis)
  far = np.abs(margin) > 1e-5
  np.testing.assert_array_equal((p == 0)[far], (expected == 0)[far])


# --------------------------------------------------------------------------
# The references, and the maths the implementation rests on.
# --------------------------------------------------------------------------


def test_reference_and_its_limits():
  z = _inputs.scores((6, 11), 2.0, seed=1).astype(np.float64)
  # alpha = 2: p is proportional to sqrt(entmax15(2 z)) (the reduction to
  # entmax that softjax uses), here with the sort-based entmax15.
  root = np.sqrt(ref.entmax15(2 * z))
  np.testing.assert_allclose(
    ref.normmax_bisect(z, 2.0),
    root / root.sum(-1, keepdims=True),
    rtol=0,
    atol=1e-12,
  )
  # Any alpha: the threshold of (2 - 1/alpha)-entmax at scores z / eps'.
  for a in (1.3, 3.0):
    e = (a - 1) / a
    q = ref.entmax_bisect(z / e, 1 + e) ** (1 / a)
    np.testing.assert_allclose(
      ref.normmax_bisect(z, a), q / q.sum(-1, keepdims=True), atol=1e-10
    )
  # Optimality: p maximises <p, z> - ||p||_alpha over the simplex.
  p = ref.normmax_bisect(z, 2.5)
  value = lambda q: (q * z).sum(-1) - ((q**2.5).sum(-1)) ** (1 / 2.5)
  for seed in range(5):
    other = _inputs.rng(seed).dirichlet(np.ones(11), size=6)
    mixed = 0.9 * p + 0.1 * other
    assert (value(mixed) <= value(p) + 1e-12).all()
  # Margins are positive exactly on the support.
  np.testing.assert_array_equal(ref.normmax_margin(z, 2.5) > 0, p > 0)


@pytest.mark.parametrize("alpha", slow_except(ALPHAS, 3.0))
def test_matches_reference(alpha):
  cases = [
    ((5, 9), -1),
    ((4, 1), -1),
    ((7, 3, 2), 0),
    ((3, 2, 4), (0, 2)),
    ((2, 3, 2), None),
  ]
  xs = [
    np.stack([_inputs.scores(shape, s, seed=i) for s in (0.01, 1.0, 10.0)])
    for i, (shape, _) in enumerate(cases)
  ]
  # The same axes of the stacked arrays (a new leading axis).
  axes = [
    tuple(range(1, x.ndim))
    if a is None
    else (tuple(b + 1 for b in a) if isinstance(a, tuple) else a + (a >= 0))
    for x, (_, a) in zip(xs, cases)
  ]
  outs = jax.jit(
    lambda xs: [softjax.normmax(x, alpha, axis=a) for x, a in zip(xs, axes)]
  )(xs)
  for x, a, p in zip(xs, axes, outs):
    chex.assert_shape(p, x.shape)
    chex.assert_type(p, jnp.float32)
    _assert_matches(p, x, alpha, a)


def test_array_alpha_matches_per_row_reference():
  x = _inputs.scores((6, 10), 2.0, seed=2)
  alpha = np.array([[1.1], [1.5], [2.0], [2.7], [4.0], [8.0]], np.float32)
  p = jax.jit(softjax.normmax)(x, alpha)
  _assert_matches(p, x, alpha.astype(np.float64))


@pytest.mark.parametrize("alpha", slow_except([1.5, 2.0, 4.0], 1.5))
def test_long_rows(alpha):
  # Rows long enough for the solver's warm start, one with a masked third.
  x = _inputs.scores((3, 4096), 3.0, seed=3)
  p = np.asarray(jax.jit(lambda x: softjax.normmax(x, alpha))(x))
  _assert_matches(p, x, alpha)
  assert (p == 0).any()


def test_float64():
  x = _inputs.scores((3, 4, 7), 2.0, seed=4, dtype=np.float64)
  with jax.enable_x64(True):
    for alpha in (2.0, 1.3, np.full((3, 4, 1), 3.5)):
      p = jax.jit(softjax.normmax)(x, alpha)
      assert p.dtype == jnp.float64
      _assert_matches(p, x, np.asarray(alpha, np.float64), tol=1e-11)


def test_alpha_limits():
  # Rows with gaps >= 0.2 between entries.
  x = np.stack(
    [_inputs.rng(r).permutation(0.23 * np.arange(6)) for r in range(4)]
  ).astype(np.float32)
  near_one, big, huge = jax.jit(
    lambda x: (
      softjax.normmax(x, 1.01),
      softjax.normmax(x, 1e3),
      softjax.normmax(x, jnp.full((4, 1), 1e6)),
    )
  )(x)
  # alpha -> 1: the arg-max.
  np.testing.assert_allclose(near_one, np.eye(6)[x.argmax(-1)], atol=1e-6)
  # alpha -> inf: uniform on the support of sparsemax (||p||_inf = max p).
  support = ref.sparsemax(x) > 0
  uniform = support / support.sum(-1, keepdims=True)
  np.testing.assert_allclose(big, uniform, atol=5e-3)
  np.testing.assert_allclose(huge, uniform, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(huge) > 0, support)


def test_order_preserving_and_translation_invariant():
  x = np.round(_inputs.scores((8, 12), 2.0, seed=6) * 256) / 256
  c = np.array([[-37.0], [0.5], [1000.0], [3.0]] * 2, np.float32)
  for alpha in (2.0, 3.0):
    p, q = jax.jit(
      lambda x, c: (softjax.normmax(x, alpha), softjax.normmax(x + c, alpha))
    )(x, c)
    np.testing.assert_allclose(q, p, rtol=0, atol=_tol(alpha))
    order = np.argsort(-x, axis=-1, kind="stable")
    ranked = np.take_along_axis(np.asarray(p), order, -1)
    assert (np.diff(ranked, axis=-1) <= 0).all()


def test_matches_pytorch_entmax():
  torch = pytest.importorskip("torch")
  entmax = pytest.importorskip("entmax")
  if not hasattr(entmax, "normmax_bisect"):
    pytest.skip("this entmax has no normmax_bisect")
  x = _inputs.scores((6, 9), 2.0, seed=7).astype(np.float64)
  for alpha in (1.5, 2.0, 3.0):
    theirs = entmax.normmax_bisect(torch.tensor(x), alpha=alpha, n_iter=100)
    np.testing.assert_allclose(
      softjax.normmax(x.astype(np.float32), alpha),
      theirs.numpy(),
      rtol=0,
      atol=1e-5,
    )


# --------------------------------------------------------------------------
# Gradients, in float64.
# --------------------------------------------------------------------------


# Permutations of a spaced grid, >= 0.04 from the support edge for the
# alphas used (asserted), far beyond check_grads' step.
_grid = functools.partial(_inputs.grid, d=6, spacing=0.55)


_ARRAY_ALPHA = np.array([[1.3], [2.0], [3.5]])


@pytest.mark.parametrize("alpha", slow_except([2.0, 3.0, "array"], "array"))
def test_grads_x(alpha):
  a = _ARRAY_ALPHA if alpha == "array" else alpha
  x = _grid(3)
  assert np.abs(ref.normmax_margin(x, a)).min() > 0.04
  with jax.enable_x64(True):
    f = jax.jit(lambda x: softjax.normmax(x, jnp.asarray(a)))
    check_grads(f, (jnp.asarray(x),), order=2, modes=["rev"])


def test_grad_closed_form():
  # MATH.md, with the reference p: s = p^(2 - alpha), a = p,
  # dz = [g s - <g, s> a - <g, a> (s - sum(s) a)] ||p||^(alpha-1) / (alpha-1).
  x = _grid(3, seed=3)
  g = _inputs.rng(4).normal(size=x.shape)
  with jax.enable_x64(True):
    grads = jax.jit(
      lambda x: [
        jax.grad(lambda x: (softjax.normmax(x, a) * g).sum())(x)
        for a in (2.0, 1.5, jnp.asarray(_ARRAY_ALPHA))
      ]
    )(jnp.asarray(x))
  for a, grad in zip((2.0, 1.5, _ARRAY_ALPHA), grads):
    p = ref.normmax_bisect(x, a)
    s = np.where(p > 0, np.where(p > 0, p, 1.0) ** (2.0 - np.asarray(a)), 0.0)
    gs = (g * s).sum(-1, keepdims=True)
    gp = (g * p).sum(-1, keepdims=True)
    scale = ((p ** np.asarray(a)).sum(-1, keepdims=True)) ** (
      (np.asarray(a) - 1) / np.asarray(a)
    ) / (np.asarray(a) - 1)
    expected = scale * (
      g * s - gs * p - gp * (s - s.sum(-1, keepdims=True) * p)
    )
    np.testing.assert_allclose(grad, expected, rtol=1e-9, atol=1e-10)


def test_grad_alpha():
  x = _grid(4, seed=5)
  alpha = np.array([[1.2], [1.7], [2.0], [3.3]])
  assert np.abs(ref.normmax_margin(x, alpha)).min() > 0.04
  g = _inputs.rng(6).normal(size=x.shape)
  with jax.enable_x64(True):
    f = jax.jit(lambda a: softjax.normmax(jnp.asarray(x), a))
    check_grads(f, (jnp.asarray(alpha),), order=2, modes=["rev"])
    grad_of = jax.grad(lambda a: (softjax.normmax(x, a) * g).sum())
    # One alpha shared by every row: the row terms add up.
    grad, shared = jax.jit(lambda a, b: (grad_of(a), grad_of(b)))(
      alpha, jnp.array([2.5])
    )
  np.testing.assert_allclose(
    grad, ref.normmax_alpha_vjp_fd(x, alpha, g), rtol=1e-6, atol=1e-9
  )
  np.testing.assert_allclose(
    shared, ref.normmax_alpha_vjp_fd(x, 2.5, g).sum(0), rtol=1e-6
  )


@pytest.mark.parametrize("kind", slow_except(["row", "full"], "full"))
def test_temperature_grads(kind):
  x = _grid(3, seed=7)
  t = _inputs.temperature(x.shape, kind, seed=8, low=0.95, high=1.05)
  assert np.abs(ref.normmax_margin(x / t, _ARRAY_ALPHA)).min() > 0.01
  with jax.enable_x64(True):
    f = lambda x, t: softjax.normmax(
      x, jnp.asarray(_ARRAY_ALPHA), temperature=t
    )
    # Second order for the per-entry temperature, the hardest residual.
    order = 2 if kind == "full" else 1
    check_grads(
      jax.jit(f), (jnp.asarray(x), jnp.asarray(t)), order=order, modes=["rev"]
    )


# --------------------------------------------------------------------------
# Masks, non-finite scores, dtypes, transformations.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [2.0, 3.0, "array"])
def test_mask_exact_zeros_gradient_and_empty_rows(alpha):
  x = _inputs.scores((3, 6), 2.0, seed=9)
  m = np.array(
    [[1, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], bool
  )
  a = np.array([[1.5], [2.0], [2.5]], np.float32) if alpha == "array" else alpha
  g = _inputs.scores((3, 6), 1.0, seed=10)
  f = lambda x, a: softjax.normmax(x, a, where=m)
  p, grad, ga = jax.jit(
    lambda x, a: (
      f(x, a),
      *jax.grad(lambda x, a: (f(x, a) * g).sum(), argnums=(0, 1))(x, a),
    )
  )(x, jnp.asarray(a))
  p, grad = np.asarray(p), np.asarray(grad)
  assert (p[~m] == 0).all() and (p[1] == 0).all()
  assert np.isfinite(grad).all() and (grad[~m] == 0).all()
  assert np.isfinite(np.asarray(ga)).all()
  a_rows = np.broadcast_to(np.asarray(a, np.float64), (3, 1))
  for r in (0, 2):
    live = m[r]
    np.testing.assert_allclose(
      p[r, live], ref.normmax_bisect(x[r, live], a_rows[r]), atol=_tol(a)
    )


def test_nonfinite_scores():
  x = np.array(
    [
      [1.0, INF, INF, 0.0, -INF],
      [0.3, -INF, 0.2, 0.0, -1.0],
      [0.4, 1.2, NAN, -0.3, 0.9],
      [3e38, -3e38, 0.0, 1.0, 2.0],
    ],
    np.float32,
  )
  w = _inputs.scores(x.shape, 1.0, seed=11)
  for alpha in (2.0, 3.0):
    f = lambda x: softjax.normmax(x, alpha)
    p, grad = jax.jit(
      lambda x: (f(x), jax.grad(lambda x: (f(x) * w).sum())(x))
    )(x)
    p, grad = np.asarray(p), np.asarray(grad)
    np.testing.assert_allclose(p[0], [0, 0.5, 0.5, 0, 0], atol=1e-6)
    np.testing.assert_allclose(
      p[1, [0, 2, 3, 4]],
      ref.normmax_bisect(x[1, [0, 2, 3, 4]], alpha),
      atol=3e-6,
    )
    assert p[1, 1] == 0 and np.isnan(p[2]).all()
    np.testing.assert_array_equal(p[3], [1, 0, 0, 0, 0])
    assert np.isfinite(np.delete(grad, 2, 0)).all()


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision(dtype):
  x = jnp.asarray(_inputs.scores((4, 8), 2.0, seed=12)).astype(dtype)
  p = jax.jit(lambda x: softjax.normmax(x, 2.0))(x)
  chex.assert_type(p, dtype)
  expected = ref.normmax_bisect(np.asarray(x.astype(jnp.float32)), 2.0)
  p64 = np.asarray(p.astype(jnp.float32), np.float64)
  np.testing.assert_allclose(
    p64, expected, atol=2 * float(jnp.finfo(dtype).eps)
  )
  assert (p64[expected == 0] == 0).all()


class VariantsTest(chex.TestCase):
  @chex.variants(
    with_jit=True, without_jit=True, with_device=True, with_pmap=True
  )
  def test_array_alpha_mask_temperature(self):
    x = _inputs.scores((4, 7), 2.0, seed=13)
    alpha = np.array([[1.2], [2.0], [3.0], [6.0]], np.float32)
    where = _inputs.random_mask((4, 7), 14, 0.7)
    where[:, 0] = True
    t = _inputs.temperature((4, 7), "row", seed=15, dtype=np.float32)
    p = self.variant(
      lambda x, a, m, t: softjax.normmax(x, a, where=m, temperature=t)
    )(x, alpha, where, t)
    p = np.asarray(p)
    assert (p[~where] == 0).all()
    for r in range(4):
      live = where[r]
      np.testing.assert_allclose(
        p[r, live],
        ref.normmax_bisect(x[r, live] / t[r], alpha[r]),
        atol=_tol(alpha[r]),
      )


def test_vmap_matches_batched_call():
  x = _inputs.scores((4, 3, 7), 2.0, seed=16)
  a = np.linspace(1.2, 4.0, 4, dtype=np.float32).reshape(4, 1, 1)
  f = lambda x, a: softjax.normmax(x, a)
  batched, mapped = jax.jit(lambda x, a: (f(x, a), jax.vmap(f)(x, a)))(x, a)
  np.testing.assert_allclose(mapped, batched, rtol=0, atol=1e-7)
  _assert_matches(batched, x, a.astype(np.float64))


# --------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------

_X = np.zeros((2, 3), np.float32)


@pytest.mark.parametrize(
  "alpha,exc",
  [
    (1.0, ValueError),
    (0.5, ValueError),
    (NAN, ValueError),
    (INF, ValueError),
    (True, TypeError),
    (np.array([[1.5], [1.0]]), ValueError),
    (np.full((2, 3), 1.5), ValueError),
  ],
)
def test_bad_alpha_raises_at_trace_time(alpha, exc):
  with pytest.raises(exc, match="`alpha`"):
    jax.jit(lambda x: softjax.normmax(x, alpha))(_X)
  # The same values for the loss, one alpha per example.
  loss_alpha = alpha[:, 0] if np.shape(alpha) == (2, 1) else alpha
  if np.ndim(loss_alpha) < 2 and np.size(loss_alpha) in (1, 2):
    with pytest.raises(exc, match="`alpha`"):
      jax.jit(lambda x: losses.normmax_loss(x, np.array([0, 1]), loss_alpha))(
        _X
      )


def test_traced_bad_alpha_gives_the_documented_result():
  x = jnp.array([[0.5, 0.2, -0.1, -3.0]] * 4)
  alpha = jnp.array([[0.5], [1.0], [NAN], [INF]])
  f = jax.jit(softjax.normmax)
  p = np.asarray(f(x, alpha))
  # alpha <= 1: evaluated at 1 + 1e-6, the arg-max to float32 precision.
  np.testing.assert_allclose(p[:2], [[1, 0, 0, 0]] * 2, atol=1e-6)
  assert np.isnan(p[2:]).all()
  ga = jax.grad(lambda a: (f(x[:2], a) * x[:2]).sum())(alpha[:2])
  np.testing.assert_array_equal(ga, 0.0)


# --------------------------------------------------------------------------
# normmax_loss.
# --------------------------------------------------------------------------


def _np_loss(z, y, alpha):
  """<p - y, z> - ||p||_alpha + ||y||_alpha, p from the reference."""
  z = np.asarray(z, np.float64)
  y = np.asarray(y, np.float64)
  alpha = np.broadcast_to(np.asarray(alpha, np.float64), z.shape[:-1] + (1,))
  p = ref.normmax_bisect(z, alpha)
  norm = lambda q: ((q**alpha).sum(-1, keepdims=True)) ** (1 / alpha)
  return (((p - y) * z).sum(-1, keepdims=True) - norm(p) + norm(y))[..., 0]


def test_loss_matches_formula():
  x = _inputs.scores((6, 5), 2.0, seed=17)
  ids = _inputs.rng(18).integers(0, 5, 6)
  soft = _inputs.rng(19).dirichlet(np.ones(5), size=6).astype(np.float32)
  alpha = np.array([1.2, 1.5, 2.0, 2.5, 4.0, 2.0], np.float32)
  outs = jax.jit(
    lambda x, ids, soft, a: (
      [losses.normmax_loss(x, y, b) for y in (ids, soft) for b in (2.0, a)],
      losses.normmax_loss(x, softjax.normmax(x, a[:, None]), a),
    )
  )(x, ids, soft, alpha)
  targets = [np.eye(5)[ids]] * 2 + [soft] * 2
  for out, y, a in zip(outs[0], targets, (2.0, alpha) * 2):
    np.testing.assert_allclose(
      out,
      _np_loss(x, y, np.asarray(a, np.float64)[..., None]),
      rtol=2e-5,
      atol=2e-6,
    )
  # Non-negative, and zero where the target is the prediction.
  assert (np.asarray(outs[0]) >= 0).all() and (
    np.asarray(outs[0][3]) > 1e-4
  ).all()
  at_p = np.asarray(outs[1])
  assert (at_p >= 0).all() and at_p.max() < 1e-5


def test_loss_matches_pytorch_entmax():
  torch = pytest.importorskip("torch")
  entmax = pytest.importorskip("entmax")
  if not hasattr(entmax, "NormmaxBisectLoss"):
    pytest.skip("this entmax has no NormmaxBisectLoss")
  x = _inputs.scores((6, 5), 2.0, seed=20)
  ids = _inputs.rng(21).integers(0, 5, 6)
  for alpha in (1.5, 2.0, 3.0):
    theirs = entmax.NormmaxBisectLoss(alpha=alpha, n_iter=100, reduction="none")
    np.testing.assert_allclose(
      losses.normmax_loss(x, ids, alpha),
      theirs(torch.tensor(x.astype(np.float64)), torch.tensor(ids)).numpy(),
      rtol=1e-5,
      atol=1e-6,
    )


@pytest.mark.slow  # test_losses.py checks the loss gradients in the unit tier
def test_loss_gradients():
  with jax.enable_x64(True):
    x = jnp.asarray(_inputs.scores((4, 6), 2.0, dtype=np.float64, seed=22))
    ids = jnp.array([0, 2, 3, 1])
    alpha = jnp.array([1.3, 2.0, 2.6, 4.0])
    mask = np.ones((4, 6), bool)
    mask[1, [1, 4]] = False
    mask[3] = False
    w = jnp.asarray(_inputs.rng(23).normal(size=(4, 6)))
    f = jax.jit(
      lambda x, w, a: jnp.stack(
        [
          losses.normmax_loss(x, ids, a, where=mask),
          losses.normmax_loss(x, jax.nn.softmax(w, where=mask), a, where=mask),
        ]
      )
    )
    check_grads(f, (x, w, alpha), order=1, modes=["rev"], eps=1e-6)
    check_grads(lambda x: f(x, w, alpha), (x,), order=2, modes=["rev"])
    # The gradient in the logits is p - y.
    g = jax.grad(lambda x: losses.normmax_loss(x, ids, alpha).sum())(x)
    p = ref.normmax_bisect(np.asarray(x), np.asarray(alpha)[:, None])
    np.testing.assert_allclose(g, p - np.eye(6)[ids], atol=1e-12)
