"""sparsemax / entmax15 / entmax against independent float64 references.

The references live in ``tests/_references.py`` and share no code with
softjax: sorting for sparsemax and entmax15, long bisection on the classic
``[(alpha - 1) z - tau]_+`` form for any alpha, and the Correia et al. (2019)
formula or central differences for d/dalpha. Gradients w.r.t. the scores
and temperature are checked with ``jax.test_util.check_grads`` (finite
differences) in float64.
"""

from __future__ import annotations

import functools
import itertools

import _inputs
import _references as ref
from _tiers import slow_except
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

import softjax

# name -> (softjax function of (x, **kwargs), alpha it implements).
NAMED = {
  "sparsemax": (softjax.sparsemax, 2.0),
  "entmax15": (softjax.entmax15, 1.5),
}
ALPHAS = (1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
SCALES = (0.01, 1.0, 10.0, 100.0)

# (case id, shape, axis): d = 1 and 2, 2-D and 3-D, every axis, tuples, None.
SHAPE_CASES = (
  ("d1", (4, 1), -1),
  ("d2", (6, 2), -1),
  ("2d", (5, 9), -1),
  ("3d_axis0", (7, 3, 2), 0),
  ("3d_axis1", (2, 6, 3), 1),
  ("3d_last", (3, 2, 8), -1),
  ("3d_tuple", (3, 2, 4), (0, 2)),
  ("3d_none", (2, 3, 2), None),
)

# Per-entry accuracy in float32 for alpha <= 2: the map is 1-Lipschitz there
# (dp/dz = p^(2 - alpha) <= 1), so only rounding of z - threshold remains.
TOL32 = 2e-6
# For alpha > 2, dp/dz = p^(2 - alpha) is unbounded as p -> 0: an entry just
# inside the support amplifies the float32 rounding of z - threshold (~6e-8)
# by p^(2 - alpha). 1e-4 is the measured worst case for alpha in {2.5, 3} at
# scales 1 to 100 (3e-6 seen at scale 100, so TOL32 would not hold there
# either); smaller scales are tested separately.
TOL32_STEEP = 1e-4
# Entries this close to the support edge (in units of (alpha - 1) z) may
# legitimately land on either side in float32.
EDGE = 1e-6
TINY32 = float(np.finfo(np.float32).tiny)


# Rows that are permutations of an evenly spaced grid, in float64. Every
# entry is >= 0.04 (in units of (alpha - 1) x) away from the support edge for
# the alphas used below (asserted where it matters), far beyond check_grads'
# finite-difference step of 1e-4, so no difference straddles a kink of the
# piecewise-smooth map.
_grid = functools.partial(_inputs.grid, d=6, spacing=0.45)


def _alpha_of(fn):
  return NAMED[fn][1] if fn in NAMED else float(fn)


def _call(fn, x, **kwargs):
  """softjax map named ``fn``: a NAMED function or entmax at alpha=float(fn)."""
  if fn in NAMED:
    return NAMED[fn][0](x, **kwargs)
  return softjax.entmax(x, float(fn), **kwargs)


def _reference(x, alpha, axis=-1):
  """Float64 reference of alpha-entmax of ``x`` along ``axis``."""
  if alpha == 2.0:
    fn = ref.sparsemax
  elif alpha == 1.5:
    fn = ref.entmax15
  elif alpha == 1.0:
    fn = ref.softmax
  else:
    fn = lambda z: ref.entmax_bisect(z, alpha)
  return ref.along(fn, x, axis)


def _margin(x, alpha, axis=-1):
  return ref.along(lambda z: ref.entmax_margin(z, alpha), x, axis)


def _assert_on_simplex(p, axis=-1, atol=1e-6):
  p = np.asarray(p, np.float64)
  assert (p >= 0).all(), p.min()
  sums = p.sum(axis=axis)
  np.testing.assert_allclose(sums, 1.0, rtol=0, atol=atol)


def _assert_matches(p, expected, margin, tol, axis=-1, err_msg=""):
  """Values, simplex and the exact-zero pattern against a reference."""
  p = np.asarray(p, np.float64)
  np.testing.assert_allclose(p, expected, rtol=0, atol=tol, err_msg=err_msg)
  _assert_on_simplex(p, axis)
  # Exact zeros exactly where the reference has them, except next to the
  # support edge and where the reference underflows float32 (alpha = 1.1
  # gives p = margin^10: a margin of 1e-4 is already 1e-40).
  check = (np.abs(margin) > EDGE) & ((expected == 0) | (expected > TINY32))
  np.testing.assert_array_equal(
    (p == 0)[check], (expected == 0)[check], err_msg=err_msg
  )


def _shift_axis(axis):
  """``axis`` of a row-batched input after stacking a new leading axis."""
  if axis is None:
    return None
  if isinstance(axis, tuple):
    return tuple(a + 1 if a >= 0 else a for a in axis)
  return axis + 1 if axis >= 0 else axis


# --------------------------------------------------------------------------
# The references against each other (pure NumPy, no softjax).
# --------------------------------------------------------------------------


def test_references_agree():
  # Independent algorithms for the same maps must agree, so that a bug in one
  # reference cannot make a softjax bug pass.
  z = _inputs.scores((6, 11), 2.0, seed=30).astype(np.float64)
  g = _inputs.rng(31).normal(size=z.shape)
  np.testing.assert_allclose(
    ref.sparsemax(z), ref.entmax_bisect(z, 2.0), rtol=0, atol=1e-14
  )
  np.testing.assert_allclose(
    ref.entmax15(z), ref.entmax_bisect(z, 1.5), rtol=0, atol=1e-14
  )
  np.testing.assert_allclose(
    ref.entmax_bisect(z, 1 + 1e-7), ref.softmax(z), rtol=0, atol=1e-6
  )
  for alpha in (1.05, 1.3, 2.0, 2.5):
    p = ref.entmax_bisect(z, alpha)
    np.testing.assert_allclose(
      ref.entmax_alpha_vjp(p, alpha, g),
      ref.entmax_alpha_vjp_fd(z, alpha, g),
      rtol=1e-6,
      atol=1e-8,
    )
    # Margins: positive exactly on the support.
    np.testing.assert_array_equal(ref.entmax_margin(z, alpha) > 0, p > 0)
  p = ref.entmax_bisect(z, 1 + 1e-5)
  np.testing.assert_allclose(
    ref.entmax_alpha_vjp_at_one(z, g),
    ref.entmax_alpha_vjp(p, 1 + 1e-5, g),
    rtol=1e-3,
    atol=1e-4,
  )
  # along() moves tuple axes to the end and back.
  x = _inputs.scores((3, 4, 5), seed=32)
  moved = np.transpose(x, (1, 0, 2)).reshape(4, 15)
  np.testing.assert_allclose(
    np.transpose(ref.along(ref.sparsemax, x, (0, 2)), (1, 0, 2)).reshape(4, 15),
    ref.sparsemax(moved),
    rtol=0,
    atol=1e-15,
  )


# --------------------------------------------------------------------------
# Agreement with the references (with simplex and exact-zero checks).
# --------------------------------------------------------------------------


def _tol32(alpha):
  return TOL32_STEEP if alpha > 2 else TOL32


def _cases_for(fn):
  """Shape cases checked for ``fn``: all of them for the named maps; for each
  float alpha the 2-D case and two others, so that across the seven alphas
  every other case is covered twice (compiling dominates the runtime)."""
  if fn in NAMED:
    return SHAPE_CASES
  others = [c for c in SHAPE_CASES if c[0] != "2d"]
  i = ALPHAS.index(float(fn))
  return (SHAPE_CASES[2], others[2 * i % 7], others[(2 * i + 1) % 7])


def _check_cases(fn, scales):
  alpha = _alpha_of(fn)
  cases = []
  for case, shape, axis in _cases_for(fn):
    # All scales stacked along a new leading (batch) axis.
    x = np.stack(
      [_inputs.scores(shape, s, seed=i) for i, s in enumerate(scales)]
    )
    axis_b = tuple(range(1, x.ndim)) if axis is None else _shift_axis(axis)
    cases.append((case, x, axis, axis_b))
  axes = [b for *_, b in cases]
  # One compilation for every shape case.
  outs = jax.jit(lambda xs: [_call(fn, x, axis=b) for x, b in zip(xs, axes)])(
    [x for _, x, _, _ in cases]
  )
  for (case, x, axis, _), p in zip(cases, outs):
    chex.assert_shape(p, x.shape)
    chex.assert_type(p, jnp.float32)
    for i, scale in enumerate(scales):
      _assert_matches(
        p[i],
        _reference(x[i], alpha, axis),
        _margin(x[i], alpha, axis),
        _tol32(alpha),
        axis,
        err_msg=f"{fn} {case} scale={scale}",
      )


@pytest.mark.parametrize(
  "fn",
  slow_except(
    list(NAMED) + [str(a) for a in ALPHAS], "sparsemax", "1.25", "2.5"
  ),
)
def test_matches_reference(fn):
  scales = SCALES if _alpha_of(fn) <= 2 else SCALES[1:]
  _check_cases(fn, scales)


@pytest.mark.parametrize("alpha", [2.5, 3.0])
def test_steep_alpha_near_uniform_rows(alpha):
  # alpha > 2 on near-uniform rows (scales 0.01 and 0.1): many entries sit
  # just inside the support edge, where dp/dz = p^(2 - alpha) is unbounded:
  # the map is not Lipschitz there. An entry whose base 1 + eps (z - t) is
  # within a few float32 ulps of 0 can come out anywhere in
  # [0, (4 eps ulp(1))^(1/eps)], whatever the algorithm (the input itself
  # is only known to float32 rounding); that is the documented bound.
  eps = alpha - 1.0
  edge_error = (4 * eps * np.finfo(np.float32).eps) ** (1.0 / eps)
  xs = [
    np.stack(
      [
        _inputs.scores((20, d), s, seed=seed)
        for s in (0.01, 0.1)
        for seed in range(5)
      ]
    )
    for d in (5, 17, 50)
  ]
  outs = jax.jit(lambda xs: [softjax.entmax(x, alpha) for x in xs])(xs)
  for x, p in zip(xs, outs):
    _assert_matches(
      p,
      ref.entmax_bisect(x, alpha),
      ref.entmax_margin(x, alpha),
      TOL32_STEEP + edge_error,
      err_msg=f"d={x.shape[-1]}",
    )


@pytest.mark.parametrize(
  "fn",
  slow_except(
    ["sparsemax", "entmax15", "1.1", "1.75", "3.0"], "entmax15", "3.0"
  ),
)
def test_matches_reference_large_d(fn):
  alpha = _alpha_of(fn)
  x = _inputs.scores((1, 100_000), seed=7)
  p = np.asarray(jax.jit(lambda x: _call(fn, x))(x))
  expected = _reference(x, alpha)
  _assert_matches(p, expected, _margin(x, alpha), _tol32(alpha))
  # The large row must be genuinely sparse for alpha > 1, else the zero
  # pattern check above is vacuous.
  assert (expected == 0).any()


@pytest.mark.parametrize("fn", ["sparsemax", "entmax15", "1.3", "2.5"])
def test_warm_started_rows_match_reference(fn):
  # Rows of >= 256 entries (a multiple of 16) start the solver from the
  # threshold of their block maxima. Cases that make that start poor: the
  # whole support inside one block (only its maximum survives), ties, masked
  # entries, near-uniform rows, and a row that needs the sharded-sum path.
  alpha = _alpha_of(fn)
  n = 1024
  rows = [
    _inputs.scores((n,), s, seed=i) for i, s in enumerate((0.01, 1.0, 30.0))
  ]
  clustered = _inputs.scores((n,), 1.0, seed=5)
  clustered[16:32] = 6.0 + np.linspace(0.0, 0.1, 16)  # one block holds the top
  rows.append(clustered)
  tied = np.zeros(n, np.float32)
  tied[::16] = 1.0  # a tie in every block
  rows.append(tied)
  masked = _inputs.scores((n,), 3.0, seed=6)
  masked[::3] = -np.inf
  rows.append(masked)
  x = np.stack(rows).astype(np.float32)
  p = np.asarray(jax.jit(lambda x: _call(fn, x))(x))
  tol = _tol32(alpha) if alpha <= 2 else TOL32_STEEP
  _assert_matches(p, _reference(x, alpha), _margin(x, alpha), tol)
  _assert_on_simplex(p, atol=1e-6)


@pytest.mark.parametrize("alpha", [2.5, 3.0])
def test_steep_alpha_float64(alpha):
  # In float64 the same amplification leaves ~1e-16 * p^(2 - alpha).
  x = np.stack(
    [_inputs.scores((8, 9), s, seed=3, dtype=np.float64) for s in SCALES]
  )
  with jax.enable_x64(True):
    p = jax.jit(lambda x: softjax.entmax(x, alpha))(x)
    assert p.dtype == jnp.float64
    expected = ref.entmax_bisect(x, alpha)
    np.testing.assert_allclose(np.asarray(p), expected, rtol=0, atol=1e-9)
    _assert_on_simplex(p, atol=1e-12)


@pytest.mark.parametrize(
  "fn",
  slow_except(
    ["sparsemax", "entmax15", "1.1", "1.25", "1.75", "array_1.3"],
    "1.1",
    "array_1.3",
  ),
)
def test_float64_matches_reference(fn):
  x = _inputs.scores((3, 4, 7), 2.0, seed=4, dtype=np.float64)
  with jax.enable_x64(True):
    if fn == "array_1.3":
      alpha = 1.3
      p = jax.jit(lambda x: softjax.entmax(x, jnp.full((3, 4, 1), alpha)))(x)
    else:
      alpha = _alpha_of(fn)
      p = jax.jit(lambda x: _call(fn, x))(x)
    assert p.dtype == jnp.float64
    np.testing.assert_allclose(
      np.asarray(p), _reference(x, alpha), rtol=0, atol=1e-12
    )
    _assert_on_simplex(p, atol=1e-12)


# --------------------------------------------------------------------------
# Values under every chex variant (jit, device placement, pmap).
# --------------------------------------------------------------------------

_VARIANTS = dict(
  with_jit=True,
  without_jit=True,
  with_device=True,
  without_device=True,
  with_pmap=True,
)
# (function, shape case); test_array_alpha_mask_temperature adds alpha > 2.
_VARIANT_CASES = (("sparsemax", SHAPE_CASES[6]), ("1.3", SHAPE_CASES[3]))


class VariantsTest(chex.TestCase):
  @chex.variants(**_VARIANTS)
  @parameterized.named_parameters(
    (f"{case}_{fn}", shape, axis, fn)
    for fn, (case, shape, axis) in _VARIANT_CASES
  )
  def test_matches_reference(self, shape, axis, fn):
    alpha = _alpha_of(fn)
    x = _inputs.scores(shape, 2.0)
    # Only arrays go through the variant (pmap would broadcast an axis too).
    p = self.variant(lambda x: _call(fn, x, axis=axis))(x)
    chex.assert_shape(p, shape)
    chex.assert_type(p, jnp.float32)
    _assert_matches(
      p,
      _reference(x, alpha, axis),
      _margin(x, alpha, axis),
      _tol32(alpha),
      axis,
    )

  @chex.variants(**_VARIANTS)
  def test_array_alpha_mask_temperature(self):
    # Every optional argument as a traced array at once.
    x = _inputs.scores((4, 7), 2.0)
    alpha = np.array([[1.0], [1.3], [2.0], [2.8]], np.float32)
    where = _inputs.random_mask((4, 7), 1, 0.7)
    where[:, 0] = True
    t = _inputs.temperature((4, 7), "row", seed=2, dtype=np.float32)
    p = self.variant(
      lambda x, a, m, t: softjax.entmax(x, a, where=m, temperature=t)
    )(x, alpha, where, t)
    chex.assert_type(p, jnp.float32)
    p = np.asarray(p)
    assert (p[~where] == 0).all()
    for r in range(4):
      live = where[r]
      expected = ref.entmax_bisect(x[r, live] / t[r], alpha[r])
      np.testing.assert_allclose(
        p[r, live], expected, rtol=0, atol=_tol32(alpha[r, 0])
      )


# --------------------------------------------------------------------------
# Properties.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fn", ["sparsemax", "entmax15", "1.2", "3.0"])
def test_order_preserving_and_translation_invariant(fn):
  # Scores on a dyadic grid, so x + c is exact in float32 and any difference
  # comes from the map, not from rounding the input.
  x = np.round(_inputs.scores((8, 12), 2.0, seed=5) * 256) / 256
  c = np.array([[-37.0], [0.5], [1000.0], [3.0]] * 2, np.float32)
  p, p_shifted = jax.jit(lambda x, c: (_call(fn, x), _call(fn, x + c)))(x, c)
  p = np.asarray(p)
  np.testing.assert_allclose(np.asarray(p_shifted), p, rtol=0, atol=TOL32)
  np.testing.assert_allclose(
    p, _reference(x, _alpha_of(fn)), rtol=0, atol=_tol32(_alpha_of(fn))
  )
  order = np.argsort(-x, axis=-1, kind="stable")
  ranked = np.take_along_axis(p, order, -1)
  # Larger score -> weakly larger probability, in every row.
  assert (np.diff(ranked, axis=-1) <= 0).all()


def test_support_shrinks_as_alpha_grows():
  alphas = np.array([1.05, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0])
  x = _inputs.scores((16, 10), 1.0, seed=8)
  # All alphas in one call: one alpha per leading slice.
  p = np.asarray(
    jax.jit(softjax.entmax)(
      np.broadcast_to(x, (8, 16, 10)), alphas.reshape(8, 1, 1)
    )
  )
  supports = p > 0
  sizes = supports.sum(-1)
  for wide, narrow in zip(supports, supports[1:]):
    # Nested (order preserving makes supports top-k sets) and weakly smaller.
    assert not (narrow & ~wide).any()
  assert (np.diff(sizes, axis=0) <= 0).all()
  # The sizes are the reference's, and they do change along the way.
  for a, size in zip(alphas, sizes):
    np.testing.assert_array_equal(size, (ref.entmax_bisect(x, a) > 0).sum(-1))
  assert (sizes[0] > sizes[-1]).all()


def test_alpha_to_one_limit():
  x = _inputs.scores((4, 7), 2.0, seed=9)
  soft = ref.softmax(x)
  near, at_one, array_one = jax.jit(
    lambda x: (
      softjax.entmax(x, 1 + 1e-4),
      softjax.entmax(x, 1.0),
      softjax.entmax(x, jnp.ones((4, 1))),
    )
  )(x)
  # Continuous as alpha -> 1: the gap is first order in (alpha - 1).
  np.testing.assert_allclose(np.asarray(near), soft, rtol=0, atol=1e-3)
  assert np.abs(np.asarray(near) - soft).max() > 0
  nn = np.asarray(jax.nn.softmax(x))
  np.testing.assert_allclose(np.asarray(at_one), nn, rtol=0, atol=1e-6)
  # An array alpha of exactly 1 takes the general solver, not the dense path.
  np.testing.assert_allclose(np.asarray(array_one), nn, rtol=0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(array_one), soft, rtol=0, atol=1e-6)


def test_named_maps_are_entmax_members():
  x = _inputs.scores((5, 8), 1.5, seed=10)
  outs = jax.jit(
    lambda x: dict(
      e2=softjax.entmax(x, 2.0),
      sp=softjax.sparsemax(x),
      e15=softjax.entmax(x, 1.5),
      n15=softjax.entmax15(x),
      default=softjax.entmax(x),
      a2=softjax.entmax(x, jnp.full((5, 1), 2.0)),
      a15=softjax.entmax(x, jnp.full((5, 1), 1.5)),
    )
  )(x)
  outs = {k: np.asarray(v) for k, v in outs.items()}
  np.testing.assert_allclose(outs["e2"], outs["sp"], rtol=0, atol=TOL32)
  np.testing.assert_allclose(outs["e15"], outs["n15"], rtol=0, atol=TOL32)
  np.testing.assert_array_equal(outs["default"], outs["e15"])
  # Array alphas take the general solver; same values.
  np.testing.assert_allclose(outs["a2"], ref.sparsemax(x), rtol=0, atol=TOL32)
  np.testing.assert_allclose(outs["a15"], ref.entmax15(x), rtol=0, atol=TOL32)
  np.testing.assert_allclose(outs["sp"], ref.sparsemax(x), rtol=0, atol=TOL32)


def test_array_alpha_matches_scalar_alpha_per_head():
  # Scores (batch, heads, q, k) with one alpha per head, shape (heads, 1, 1).
  x = _inputs.scores((2, 3, 4, 6), 2.0, seed=11)
  alphas = (1.2, 1.5, 2.4)
  p, per_head = jax.jit(
    lambda x: (
      softjax.entmax(x, jnp.asarray(alphas).reshape(3, 1, 1)),
      [softjax.entmax(x[:, h], a) for h, a in enumerate(alphas)],
    )
  )(x)
  p = np.asarray(p)
  for h, a in enumerate(alphas):
    np.testing.assert_allclose(
      p[:, h], np.asarray(per_head[h]), rtol=0, atol=TOL32
    )
    np.testing.assert_allclose(
      p[:, h], ref.entmax_bisect(x[:, h], a), rtol=0, atol=_tol32(a)
    )


# --------------------------------------------------------------------------
# Gradients w.r.t. the scores, in float64.
# --------------------------------------------------------------------------
# Unlike the dense maps, every eager call of a sparse map traces and compiles
# the solver's while_loop afresh; under jit check_grads reuses one
# compilation for all its evaluations and runs ~3x faster (measured).

_GRAD_FNS = ("sparsemax", "entmax15", "1.3", "1.75", "2.5", "array")
_ARRAY_ALPHA = np.array([[1.2], [1.7], [2.6]])


def _alphas(fn):
  return _ARRAY_ALPHA if fn == "array" else _alpha_of(fn)


def _grad_fn(fn, **kwargs):
  if fn == "array":
    return lambda x: softjax.entmax(x, jnp.asarray(_ARRAY_ALPHA), **kwargs)
  return lambda x: _call(fn, x, **kwargs)


@pytest.mark.parametrize("fn", slow_except(_GRAD_FNS, "entmax15", "array"))
def test_grads_x(fn):
  x = _grid(3)
  assert np.abs(ref.entmax_margin(x, _alphas(fn))).min() > 0.04
  with jax.enable_x64(True):
    # order=2 checks the first-order VJP too, then the VJP of the VJP.
    check_grads(
      jax.jit(_grad_fn(fn)), (jnp.asarray(x),), order=2, modes=["rev"]
    )


def test_grad_x_closed_form():
  # MATH.md: with s = p^(2 - alpha) on the support (reference p),
  # dz = s g - s <s, g> / sum(s).
  x = _grid(3, seed=3)
  g = _inputs.rng(4).normal(size=x.shape)
  with jax.enable_x64(True):
    grads = jax.jit(
      lambda x: [
        jax.grad(lambda x: (_grad_fn(fn)(x) * g).sum())(x) for fn in _GRAD_FNS
      ]
    )(jnp.asarray(x))
  for fn, grad in zip(_GRAD_FNS, grads):
    alphas = _alphas(fn)
    p = ref.entmax_bisect(x, alphas)
    s = np.where(
      p > 0, np.where(p > 0, p, 1.0) ** (2.0 - np.asarray(alphas)), 0.0
    )
    sg = (s * g).sum(-1, keepdims=True)
    expected = s * g - s * sg / s.sum(-1, keepdims=True)
    np.testing.assert_allclose(
      np.asarray(grad), expected, rtol=1e-9, atol=1e-9, err_msg=fn
    )


# --------------------------------------------------------------------------
# Gradients w.r.t. alpha, in float64.
# --------------------------------------------------------------------------

# One alpha per row; includes alpha = 2 and the near-limit 1 + 1e-3.
_ALPHA_ROWS = np.array([[1.05], [1.3], [1.5], [2.0], [2.5], [1.001]])


def test_grad_alpha_check_grads():
  x = _grid(len(_ALPHA_ROWS), seed=5)
  assert np.abs(ref.entmax_margin(x, _ALPHA_ROWS)).min() > 0.04
  with jax.enable_x64(True):
    f = jax.jit(lambda a: softjax.entmax(jnp.asarray(x), a))
    check_grads(f, (jnp.asarray(_ALPHA_ROWS),), order=1, modes=["rev"])


def test_grad_alpha_matches_correia_formula():
  x = _grid(len(_ALPHA_ROWS), seed=6)
  g = _inputs.rng(7).normal(size=x.shape)
  with jax.enable_x64(True):
    grad = jax.jit(jax.grad(lambda a: (softjax.entmax(x, a) * g).sum()))(
      _ALPHA_ROWS
    )
  assert grad.shape == _ALPHA_ROWS.shape
  p = ref.entmax_bisect(x, _ALPHA_ROWS)
  correia = ref.entmax_alpha_vjp(p, _ALPHA_ROWS, g)
  fd = ref.entmax_alpha_vjp_fd(x, _ALPHA_ROWS, g)
  np.testing.assert_allclose(np.asarray(grad), correia, rtol=1e-8, atol=1e-9)
  np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-6, atol=1e-8)


def test_grad_alpha_shared_and_at_one():
  x = _grid(4, seed=8)
  g = _inputs.rng(9).normal(size=x.shape)
  with jax.enable_x64(True):
    loss = lambda a: (softjax.entmax(jnp.asarray(x), a) * g).sum()
    # One alpha of shape (1,) shared by all rows: the row terms add up.
    shared, at_one = jax.jit(
      lambda a, b: (jax.grad(loss)(a), jax.grad(loss)(b))
    )(jnp.array([1.4]), jnp.ones((4, 1)))
  assert shared.shape == (1,)
  p = ref.entmax_bisect(x, 1.4)
  np.testing.assert_allclose(
    np.asarray(shared), ref.entmax_alpha_vjp(p, 1.4, g).sum(0), rtol=1e-8
  )
  # At alpha = 1 exactly: the softmax limit of the formula.
  np.testing.assert_allclose(
    np.asarray(at_one), ref.entmax_alpha_vjp_at_one(x, g), rtol=1e-5, atol=1e-7
  )


def test_grad_alpha_float32_near_one():
  # Correia's expression divides by (alpha - 1)^2 = 1e-6 here: evaluated as
  # written in float32, the rounding of p alone (~6e-8) would cost ~0.1.
  x = _grid(3, seed=10).astype(np.float32)
  g = _inputs.rng(11).normal(size=x.shape).astype(np.float32)
  alpha = np.full((3, 1), 1.001, np.float32)
  grad = jax.jit(jax.grad(lambda a: (softjax.entmax(x, a) * g).sum()))(alpha)
  a64 = alpha.astype(np.float64)
  expected = ref.entmax_alpha_vjp(
    ref.entmax_bisect(x.astype(np.float64), a64), a64, g
  )
  np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-3, atol=1e-4)


# --------------------------------------------------------------------------
# Second derivatives: finite everywhere, correct where smooth.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fn", slow_except(_GRAD_FNS, "sparsemax", "1.75"))
def test_second_order_with_mask_and_off_support(fn):
  x = _grid(3, seed=12)
  # Entries far outside the support (p == 0 exactly), a masked entry and an
  # all-masked row: the branches where 0 ** negative or log(0) would lurk.
  x[0, :2] = -50.0
  where = np.ones(x.shape, bool)
  where[1, 3] = False
  where[2] = False
  g = _inputs.rng(13).normal(size=x.shape)
  v = _inputs.rng(14).normal(size=x.shape)
  h = 1e-5
  with jax.enable_x64(True):
    f = _grad_fn(fn, where=where)
    loss = lambda x: (jnp.where(where, f(x), 0.0) * g).sum()
    grad = jax.grad(loss)
    xj, vj = jnp.asarray(x), jnp.asarray(v)
    outs = jax.jit(
      lambda x: (
        jax.grad(lambda x: (grad(x) * vj).sum())(x),
        jax.hessian(loss)(x),
        grad(x + h * vj),
        grad(x - h * vj),
      )
    )(xj)
    rev_rev, hess, up, down = map(np.asarray, outs)
    fd = (up - down) / (2 * h)
  assert np.isfinite(rev_rev).all()
  assert np.isfinite(hess).all()
  assert (rev_rev[~where] == 0).all()
  np.testing.assert_allclose(
    rev_rev, np.einsum("ijkl,kl->ij", hess, v), rtol=1e-9, atol=1e-9
  )
  # Central differences of the (separately checked) gradient.
  np.testing.assert_allclose(rev_rev, fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
  "fn,x",
  [
    ("sparsemax", [1.0, 0.0, -5.0]),
    ("entmax15", [2.0, 0.0, -5.0]),
    ("1.25", [4.0, 0.0, -50.0]),
    ("3.0", [0.5, 0.0, -5.0]),
  ],
)
def test_second_order_finite_on_support_edge(fn, x):
  # The middle entry sits exactly on the support edge ((alpha - 1) x_1 - tau
  # = 0): no derivative exists there, but none may be NaN.
  x = np.asarray(x)
  assert abs(ref.entmax_margin(x, _alpha_of(fn))[1]) < 1e-12
  g = np.array([0.3, -1.0, 2.0])
  with jax.enable_x64(True):
    loss = lambda x: (_call(fn, x) * g).sum()
    grad = jax.grad(loss)
    outs = jax.jit(
      lambda x: (
        grad(x),
        jax.grad(lambda x: (grad(x) * g).sum())(x),
        jax.hessian(loss)(x),
      )
    )(jnp.asarray(x))
  for out in outs:
    assert np.isfinite(np.asarray(out)).all()


# --------------------------------------------------------------------------
# Temperature.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
  "fn", slow_except(["sparsemax", "entmax15", "1.3", "2.5"], "entmax15", "2.5")
)
def test_temperature_values(fn):
  x = _inputs.scores((4, 9), 2.0, seed=15)
  t_row = _inputs.temperature(x.shape, "row").astype(np.float32)
  t_full = _inputs.temperature(x.shape, "full").astype(np.float32)
  outs = jax.jit(
    lambda x, tr, tf: (
      _call(fn, x, temperature=0.7),
      _call(fn, x, temperature=tr),
      _call(fn, x, temperature=tf),
    )
  )(x, t_row, t_full)
  for p, t in zip(outs, (np.float32(0.7), t_row, t_full)):
    expected = _reference(x / t.astype(np.float64), _alpha_of(fn))
    np.testing.assert_allclose(
      np.asarray(p), expected, rtol=0, atol=_tol32(_alpha_of(fn))
    )


@pytest.mark.parametrize("kind", slow_except(["row", "full"], "full"))
@pytest.mark.parametrize("fn", slow_except(["sparsemax", "array"], "array"))
def test_temperature_grads(fn, kind):
  x = _grid(3, seed=16)
  # Temperatures near 1 keep x / T off the support edge (checked below).
  t = _inputs.temperature(x.shape, kind, low=0.9, high=1.1)
  assert np.abs(ref.entmax_margin(x / t, _alphas(fn))).min() > 0.01
  # Second order for the per-element temperature, the hardest residual.
  order = 2 if kind == "full" else 1
  with jax.enable_x64(True):
    if fn == "array":
      f = lambda x, t: softjax.entmax(
        x, jnp.asarray(_ARRAY_ALPHA), temperature=t
      )
    else:
      f = lambda x, t: _call(fn, x, temperature=t)
    check_grads(
      jax.jit(f), (jnp.asarray(x), jnp.asarray(t)), order=order, modes=["rev"]
    )


# --------------------------------------------------------------------------
# Masks and non-finite scores.
# --------------------------------------------------------------------------

_MASK_FNS = ("sparsemax", "entmax15", "1.3", "2.5", "array")


def _row_alphas(fn, rows):
  """One alpha per row: a spread for "array", else the map's own alpha."""
  if fn == "array":
    return np.linspace(1.2, 2.6, rows)[:, None]
  return np.full((rows, 1), _alpha_of(fn))


def _row_fn(fn, rows):
  if fn == "array":
    alphas = jnp.asarray(_row_alphas(fn, rows), jnp.float32)
    return lambda x, **kw: softjax.entmax(x, alphas, **kw)
  return lambda x, **kw: _call(fn, x, **kw)


@pytest.mark.parametrize("fn", slow_except(_MASK_FNS, "sparsemax", "array"))
def test_mask_exact_zeros_and_gradient(fn):
  x = _inputs.scores((3, 6), 2.0, seed=17)
  m = np.array(
    [
      [1, 0, 1, 1, 0, 1],
      [0, 0, 0, 0, 0, 0],  # all masked
      [1, 1, 1, 1, 1, 1],
    ],
    bool,
  )
  g = _inputs.scores((3, 6), seed=18)
  alphas = _row_alphas(fn, 3)
  call = _row_fn(fn, 3)
  p, grad = jax.jit(
    lambda x: (
      call(x, where=m),
      jax.grad(lambda x: (call(x, where=m) * g).sum())(x),
    )
  )(x)
  p, grad = np.asarray(p), np.asarray(grad)
  assert (p[~m] == 0).all()
  np.testing.assert_allclose(p.sum(-1), [1.0, 0.0, 1.0], rtol=0, atol=1e-6)
  assert np.isfinite(grad).all()
  assert (grad[~m] == 0).all()
  for r in (0, 2):
    live = m[r]
    p_ref = ref.entmax_bisect(x[r, live], alphas[r])
    np.testing.assert_allclose(
      p[r, live], p_ref, rtol=0, atol=_tol32(alphas[r, 0])
    )
    # MATH.md closed form on the live entries.
    s = np.where(
      p_ref > 0, np.where(p_ref > 0, p_ref, 1.0) ** (2.0 - alphas[r, 0]), 0.0
    )
    gl = g[r, live]
    expected = s * gl - s * (s * gl).sum() / s.sum()
    np.testing.assert_allclose(grad[r, live], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fn", slow_except(_MASK_FNS, "entmax15", "2.5"))
def test_broadcast_mask(fn):
  # A key-padding mask over the last axis only, broadcast over rows.
  x = _inputs.scores((4, 7), 2.0, seed=19)
  m = np.arange(7) < 5
  p = np.asarray(jax.jit(lambda x: _row_fn(fn, 4)(x, where=m))(x))
  assert (p[:, ~m] == 0).all()
  alphas = _row_alphas(fn, 4)
  np.testing.assert_allclose(
    p[:, m],
    ref.entmax_bisect(x[:, m], alphas),
    rtol=0,
    atol=_tol32(alphas.max()),
  )


def test_all_masked_row_finite_gradients_for_every_argument():
  x = _inputs.scores((3, 6), 2.0, seed=17)
  m = np.array([[1, 0, 1, 1, 0, 1], [0] * 6, [1] * 6], bool)
  g = _inputs.scores((3, 6), seed=18)
  t = _inputs.temperature(x.shape, "full").astype(np.float32)
  alpha = np.array([[1.4], [1.7], [2.5]], np.float32)
  live = jnp.asarray(m)

  def loss(x, t, a):
    p = softjax.entmax(x, a, where=m, temperature=t)
    return (jnp.where(live, p, 0.0) * g).sum()

  p, grads = jax.jit(
    lambda x, t, a: (
      softjax.entmax(x, a, where=m, temperature=t),
      jax.grad(loss, argnums=(0, 1, 2))(x, t, a),
    )
  )(x, t, alpha)
  assert (np.asarray(p)[1] == 0).all()
  gx, gt, ga = map(np.asarray, grads)
  assert np.isfinite(gx).all() and np.isfinite(gt).all()
  assert np.isfinite(ga).all()
  assert (gx[~m] == 0).all() and (gt[~m] == 0).all()
  assert ga[1, 0] == 0
  # The live rows' alpha gradients are the reference's (Correia formula).
  for r in (0, 2):
    keep = m[r]
    u = x[r, keep] / t[r, keep].astype(np.float64)
    a64 = np.float64(alpha[r, 0])
    expected = ref.entmax_alpha_vjp(ref.entmax_bisect(u, a64), a64, g[r, keep])
    np.testing.assert_allclose(ga[r], expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("fn", slow_except(_MASK_FNS, "1.3", "array"))
def test_nonfinite_scores(fn):
  inf, nan = np.inf, np.nan
  x = np.array(
    [
      [1.0, inf, inf, 0.0, -inf],  # +inf: equal shares
      [inf, 2.0, 3.0, inf, inf],
      [0.3, -inf, 0.2, 0.0, -1.0],  # -inf: just zero mass
      [0.4, 1.2, nan, -0.3, 0.9],  # NaN: stays in this row
      [0.4, 1.2, 0.6, -0.3, 0.9],
    ],
    np.float32,
  )
  alphas = _row_alphas(fn, 5)
  call = _row_fn(fn, 5)
  w = _inputs.scores((5, 5), seed=21)
  p, grad = jax.jit(
    lambda x: (call(x), jax.grad(lambda x: (call(x) * w).sum())(x))
  )(x)
  p, grad = np.asarray(p), np.asarray(grad)
  np.testing.assert_array_equal(p[0], [0, 0.5, 0.5, 0, 0])
  np.testing.assert_allclose(p[1], [1 / 3, 0, 0, 1 / 3, 1 / 3], rtol=1e-6)
  assert (p[1, 1:3] == 0).all()
  assert p[2, 1] == 0
  finite = np.isfinite(x[2])
  np.testing.assert_allclose(
    p[2, finite],
    ref.entmax_bisect(x[2, finite], alphas[2]),
    rtol=0,
    atol=_tol32(alphas[2, 0]),
  )
  assert np.isnan(p[3]).all()
  np.testing.assert_allclose(
    p[4], ref.entmax_bisect(x[4], alphas[4]), rtol=0, atol=_tol32(alphas[4, 0])
  )
  # Gradients stay finite except in the NaN row.
  assert np.isfinite(np.delete(grad, 3, axis=0)).all()


# --------------------------------------------------------------------------
# vmap and pmap.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fn", ["sparsemax", "1.3", "array"])
def test_vmap_matches_batched_call(fn):
  x = _inputs.scores((4, 3, 7), 2.0, seed=22)
  m = _inputs.random_mask((4, 3, 7), 23, 0.8)
  m[..., 0] = True
  t = _inputs.temperature((4, 3, 7), "row").astype(np.float32)
  # One alpha per batch element, shape (4, 1, 1); inside vmap (1, 1).
  a = np.linspace(1.1, 2.7, 4, dtype=np.float32).reshape(4, 1, 1)
  if fn == "array":
    f = lambda x, m, t, a: softjax.entmax(x, a, where=m, temperature=t)
  else:
    f = lambda x, m, t, a: _call(fn, x, where=m, temperature=t)
  batched, over_rows, over_middle = jax.jit(
    lambda x, m, t, a: (
      f(x, m, t, a),
      jax.vmap(f)(x, m, t, a),
      # Mapping over the middle axis: inside, axis=-1 is still the last.
      jax.vmap(f, in_axes=(1, 1, 1, None), out_axes=1)(x, m, t, a[..., 0]),
    )
  )(x, m, t, a)
  batched = np.asarray(batched)
  np.testing.assert_allclose(np.asarray(over_rows), batched, rtol=0, atol=1e-7)
  np.testing.assert_allclose(
    np.asarray(over_middle), batched, rtol=0, atol=1e-7
  )
  expected = np.zeros(x.shape)
  for idx in np.ndindex(4, 3):
    live = m[idx]
    alpha = a[idx[0], 0, 0] if fn == "array" else _alpha_of(fn)
    expected[idx + (live,)] = ref.entmax_bisect(x[idx][live] / t[idx], alpha)
  tol = _tol32(a.max() if fn == "array" else _alpha_of(fn))
  np.testing.assert_allclose(batched, expected, rtol=0, atol=tol)


def test_pmap_per_device_alpha(devices, n_devices):
  x = _inputs.scores((n_devices, 2, 7), 2.0, seed=24)
  # Device 0 sits at alpha = 1 exactly (the softmax limit).
  alpha = np.linspace(1.0, 2.6, n_devices, dtype=np.float32)[:, None]
  g = _inputs.scores((n_devices, 2, 7), seed=25)
  p, grad = jax.pmap(
    lambda x, a, g: (
      softjax.entmax(x, a),
      jax.grad(lambda a: (softjax.entmax(x, a) * g).sum())(a),
    ),
    devices=devices,
  )(x, alpha, g)
  chex.assert_shape(p, x.shape)
  chex.assert_shape(grad, alpha.shape)
  a64 = alpha.astype(np.float64)[:, None, :]
  expected = ref.entmax_bisect(x, a64)
  np.testing.assert_allclose(np.asarray(p), expected, rtol=0, atol=TOL32_STEEP)
  # Per-device alpha gradients: each device sums over its own two rows.
  correia = np.where(
    a64 == 1.0,
    ref.entmax_alpha_vjp_at_one(x, g),
    ref.entmax_alpha_vjp(expected, np.where(a64 == 1.0, 2.0, a64), g),
  )
  np.testing.assert_allclose(
    np.asarray(grad), correia.sum(1), rtol=1e-3, atol=1e-4
  )


# --------------------------------------------------------------------------
# Dtypes.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
  "fn", slow_except(["sparsemax", "entmax15", "1.3", "2.5"], "sparsemax", "1.3")
)
def test_half_precision(fn):
  alpha = _alpha_of(fn)
  x32 = _inputs.scores((4, 8), 2.0, seed=26)
  w = _inputs.scores((4, 8), seed=29)
  dtypes = (jnp.float16, jnp.bfloat16)
  xs = [jnp.asarray(x32).astype(d) for d in dtypes]
  outs = jax.jit(
    lambda xs: [
      (
        _call(fn, x),
        jax.grad(
          lambda x: (_call(fn, x) * w.astype(x.dtype)).sum().astype(jnp.float32)
        )(x),
      )
      for x in xs
    ]
  )(xs)
  for dtype, x, (p, g) in zip(dtypes, xs, outs):
    chex.assert_type(p, dtype)
    chex.assert_type(g, dtype)
    p64 = np.asarray(p.astype(jnp.float32), np.float64)
    # The reference sees the same rounded inputs.
    x64 = np.asarray(x.astype(jnp.float32), np.float64)
    expected = _reference(x64, alpha)
    eps = float(jnp.finfo(dtype).eps)
    np.testing.assert_allclose(p64, expected, rtol=0, atol=2 * eps)
    _assert_on_simplex(p64, atol=4 * eps)
    # Zeros survive the cast; nonzeros only vanish below the dtype's range.
    far = np.abs(_margin(x64, alpha)) > EDGE
    assert (p64[far & (expected == 0)] == 0).all()
    tiny = float(jnp.finfo(dtype).smallest_subnormal)
    assert (expected[p64 == 0] < tiny).all()
    s = np.where(
      expected > 0, np.where(expected > 0, expected, 1.0) ** (2.0 - alpha), 0.0
    )
    ws = w.astype(np.float64)
    g_ref = s * ws - s * (s * ws).sum(-1, keepdims=True) / s.sum(
      -1, keepdims=True
    )
    np.testing.assert_allclose(
      np.asarray(g.astype(jnp.float32)), g_ref, rtol=5e-2, atol=3e-2
    )


def test_int_input_promotes_to_float32():
  x = jnp.array([[1, 3, 2], [0, -4, 5]], jnp.int32)
  fns = ("sparsemax", "entmax15", "1.3")
  for fn, p in zip(fns, jax.jit(lambda x: [_call(f, x) for f in fns])(x)):
    chex.assert_type(p, jnp.float32)
    np.testing.assert_allclose(
      np.asarray(p),
      _reference(np.asarray(x), _alpha_of(fn)),
      rtol=0,
      atol=TOL32,
    )


# --------------------------------------------------------------------------
# Solver iterations.
# --------------------------------------------------------------------------


def _n_iter_inputs():
  x = np.stack([_inputs.scores((3, 9), s, seed=27) for s in (0.1, 1.0, 10.0)])
  edge = np.array([0.3, 0.2, 0.1, 0.0, -1, -2, -3, -4, -5], np.float32)
  return np.concatenate([x, np.broadcast_to(edge, (3, 1, 9))], axis=1)


def test_small_n_iter_stays_on_simplex():
  # Few iterations leave the threshold inexact, but the output is divided by
  # its own sum, so it must still be a distribution. n_iter=1 is a
  # regression test: it once divided by the sum at another point than the
  # returned threshold.
  x = _n_iter_inputs()
  alphas = (1.2, 1.5, 2.0, 3.0)
  per_row = np.array(alphas, np.float32).reshape(1, 4, 1)
  outs = jax.jit(
    lambda x: [
      [softjax.entmax(x, a, n_iter=n) for a in alphas]
      + [softjax.entmax(x, per_row, n_iter=n)]
      for n in (1, 2, 3)
    ]
  )(x)
  for p in itertools.chain(*outs):
    _assert_on_simplex(p, atol=1e-5)


def test_more_iterations_converge():
  x = _inputs.scores((5, 9), 1.0, seed=28)
  p12, p3 = jax.jit(
    lambda x: (
      softjax.entmax(x, 1.2, n_iter=200),
      softjax.entmax(x, 3.0, n_iter=200),
    )
  )(x)
  np.testing.assert_allclose(
    np.asarray(p12), ref.entmax_bisect(x, 1.2), rtol=0, atol=TOL32
  )
  np.testing.assert_allclose(
    np.asarray(p3), ref.entmax_bisect(x, 3.0), rtol=0, atol=TOL32_STEEP
  )


# --------------------------------------------------------------------------
# Argument errors: right type, the message names the argument.
# --------------------------------------------------------------------------

_X = np.zeros((2, 3), np.float32)
_ERROR_CASES = [
  ("alpha_below_one", dict(alpha=0.5), ValueError, "alpha"),
  ("alpha_zero", dict(alpha=0.0), ValueError, "alpha"),
  ("alpha_nan", dict(alpha=float("nan")), ValueError, "alpha"),
  ("alpha_inf", dict(alpha=float("inf")), ValueError, "alpha"),
  ("alpha_bool", dict(alpha=True), TypeError, "alpha"),
  (
    "alpha_array_below_one",
    dict(alpha=np.array([[1.5], [0.9]])),
    ValueError,
    "alpha",
  ),
  ("alpha_array_nan", dict(alpha=np.array([[np.nan]])), ValueError, "alpha"),
  (
    "alpha_size_along_axis",
    dict(alpha=np.full((2, 3), 1.5)),
    ValueError,
    "alpha",
  ),
  (
    "alpha_vector_along_axis",
    dict(alpha=np.full((3,), 1.5)),
    ValueError,
    "alpha",
  ),
  (
    "alpha_size_along_axis0",
    dict(alpha=np.full((2, 1), 1.5), axis=0),
    ValueError,
    "alpha",
  ),
  (
    "alpha_not_broadcastable",
    dict(alpha=np.full((5, 1), 1.5)),
    ValueError,
    "alpha",
  ),
  ("n_iter_zero", dict(n_iter=0), ValueError, "n_iter"),
  ("n_iter_negative", dict(n_iter=-3), ValueError, "n_iter"),
  ("n_iter_float", dict(n_iter=2.5), TypeError, "n_iter"),
  ("axis_too_big", dict(axis=2), ValueError, "axis"),
  ("axis_too_negative", dict(axis=-3), ValueError, "axis"),
  ("axis_repeated", dict(axis=(1, -1)), ValueError, "axis"),
  ("temperature_zero", dict(temperature=0.0), ValueError, "temperature"),
  ("where_not_bool", dict(where=np.ones((2, 3), np.int32)), TypeError, "where"),
]


@pytest.mark.parametrize(
  "kwargs,exc,name", [pytest.param(*c[1:], id=c[0]) for c in _ERROR_CASES]
)
def test_entmax_bad_arguments_raise(kwargs, exc, name):
  with pytest.raises(exc, match=rf"`{name}`"):
    softjax.entmax(_X, **kwargs)


@pytest.mark.parametrize("fn", ["sparsemax", "entmax15"])
@pytest.mark.parametrize(
  "kwargs,exc,name",
  [
    pytest.param(dict(axis=2), ValueError, "axis", id="axis_too_big"),
    pytest.param(dict(axis=(0, 0)), ValueError, "axis", id="axis_repeated"),
    pytest.param(
      dict(temperature=-1.0),
      ValueError,
      "temperature",
      id="temperature_negative",
    ),
  ],
)
def test_named_bad_arguments_raise(fn, kwargs, exc, name):
  with pytest.raises(exc, match=rf"`{name}`"):
    _call(fn, _X, **kwargs)
  with pytest.raises(TypeError, match="`x`"):
    _call(fn, np.ones((2, 3), bool))


def test_bad_arguments_raise_at_trace_time():
  # Static checks fire while tracing under jit, not only eagerly.
  with pytest.raises(ValueError, match="alpha"):
    jax.jit(lambda x: softjax.entmax(x, 0.5))(_X)
  with pytest.raises(ValueError, match="alpha"):
    jax.jit(lambda x, a: softjax.entmax(x, a))(_X, np.full((2, 3), 1.5))
  with pytest.raises(ValueError, match="n_iter"):
    jax.jit(lambda x: softjax.entmax(x, 1.3, n_iter=0))(_X)
