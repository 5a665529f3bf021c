"""A defined result, or a clear error, for every bad or extreme input.

One test per row of the table in ``docs/semantics.md``, for every public
function: the normalisers, ``gumbel_softmax`` and the losses. Then the
solver at its hardest (ties at the threshold, all-equal rows, one huge entry
among tiny ones, α near 1 and large, rows of 10^6 entries), traced bad values
and the opt-in ``softjax.checks``. Regression tests for failing examples
found by ``tests/test_properties.py`` are at the end.

Most rows run for every function only in the full suite: the unit tier
(``-m "not slow"``) runs each for a few of them (``_tiers.slow_except``),
chosen so that every function appears in some row.
"""

from __future__ import annotations

import _references as ref
from _tiers import slow_except
import jax
from jax.experimental import checkify
import jax.numpy as jnp
import numpy as np
import pytest

import softjax

INF = np.inf
NAN = np.nan


def _alpha_row(x):
  """An array α of size 1 along every axis (so any ``axis`` works)."""
  return jnp.full((1,) * np.ndim(x), 1.7, jnp.float32)


# name -> (f(x, **kwargs), is_log, is_sparse). Every map takes the keyword
# arguments of softjax.softmax.
NORMALISERS = {
  "softmax": (softjax.softmax, False, False),
  "log_softmax": (softjax.log_softmax, True, False),
  "sparsemax": (softjax.sparsemax, False, True),
  "entmax15": (softjax.entmax15, False, True),
  "entmax_1_3": (lambda x, **k: softjax.entmax(x, 1.3, **k), False, True),
  "entmax_3": (lambda x, **k: softjax.entmax(x, 3.0, **k), False, True),
  "entmax_array_alpha": (
    lambda x, **k: softjax.entmax(x, _alpha_row(x), **k),
    False,
    True,
  ),
  "normmax": (softjax.normmax, False, True),
  "normmax_array_alpha": (
    lambda x, **k: softjax.normmax(x, _alpha_row(x) + 1.0, **k),
    False,
    True,
  ),
  # At k = 1 budget sparsemax shares every row of the table (a budget of
  # more than 1 is not a distribution: see tests/test_budget.py).
  "budget_sparsemax_k1": (
    lambda x, **k: softjax.budget_sparsemax(x, 1.0, **k),
    False,
    True,
  ),
}
NAMES = list(NORMALISERS)
SPARSE = [n for n in NAMES if NORMALISERS[n][2]]

LOSSES = {
  "softmax_loss": softjax.losses.softmax_loss,
  "sparsemax_loss": softjax.losses.sparsemax_loss,
  "entmax15_loss": softjax.losses.entmax15_loss,
  "entmax_loss_1_3": lambda x, y, **k: softjax.losses.entmax_loss(
    x, y, 1.3, **k
  ),
  "entmax_loss_array": lambda x, y, **k: softjax.losses.entmax_loss(
    x, y, jnp.full(np.shape(x)[:-1], 1.7, jnp.float32), **k
  ),
  "normmax_loss": softjax.losses.normmax_loss,
  "normmax_loss_array": lambda x, y, **k: softjax.losses.normmax_loss(
    x, y, jnp.full(np.shape(x)[:-1], 3.0, jnp.float32), **k
  ),
}


def _tsallis(alpha):
  """The Tsallis entropy of the uniform distribution on 2 classes."""
  if alpha == 1.0:
    return np.log(2.0)
  return (1 - 2 * 0.5**alpha) / (alpha * (alpha - 1))


def _norm_entropy(alpha):
  """1 - ||(1/2, 1/2)||_alpha, normmax's entropy of the same."""
  return 1 - 2 ** (1 / alpha - 1)


# The entropy (minus the regulariser) of the uniform distribution on two
# classes, which a loss with its target among two tied +inf logits takes.
UNIFORM2_ENTROPY = {
  "softmax_loss": _tsallis(1.0),
  "sparsemax_loss": _tsallis(2.0),
  "entmax15_loss": _tsallis(1.5),
  "entmax_loss_1_3": _tsallis(1.3),
  "entmax_loss_array": _tsallis(1.7),
  "normmax_loss": _norm_entropy(2.0),
  "normmax_loss_array": _norm_entropy(3.0),
}

KEY = jax.random.key(0)
GUMBEL = {
  "gumbel": lambda x, **k: softjax.gumbel_softmax(KEY, x, **k),
  "gumbel_sparsemax": lambda x, **k: softjax.gumbel_softmax(
    KEY, x, normalizer=softjax.sparsemax, **k
  ),
  "gumbel_hard": lambda x, **k: softjax.gumbel_softmax(KEY, x, hard=True, **k),
}

# Every public function of one array argument, for the tests shared by all.
EVERYTHING = {n: NORMALISERS[n][0] for n in NAMES} | GUMBEL


def _probs(name, out):
  """The distribution a normaliser returns (``exp`` of log-softmax)."""
  out = np.asarray(out, np.float64)
  return np.exp(out) if NORMALISERS[name][1] else out


def _weighted(f, log, w):
  """A scalar function of ``x`` whose gradient exercises every output."""

  def loss(x, **kwargs):
    out = f(x, **kwargs)
    if log:  # -inf outputs are constants; keep them out of the sum.
      out = jnp.where(jnp.isfinite(out), out, 0.0)
    return jnp.sum(out.astype(jnp.float32) * w)

  return loss


def _w(shape):
  return jnp.asarray(
    np.linspace(-1.0, 2.0, int(np.prod(shape))).reshape(shape), jnp.float32
  )


def _finite(*arrays):
  return all(np.isfinite(np.asarray(a, np.float64)).all() for a in arrays)


def _tol(dtype):
  """Tolerance on a row sum in ``dtype``."""
  return {
    jnp.float16: 4e-3,
    jnp.bfloat16: 2e-2,
    jnp.float32: 2e-6,
    jnp.float64: 1e-13,
  }[jnp.dtype(dtype).type]


# --------------------------------------------------------------------------
# NaN stays in its row.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", slow_except(NAMES, "entmax_1_3", "normmax"))
def test_nan_stays_in_its_row(name):
  f, log, _ = NORMALISERS[name]
  x = jnp.array(
    [[1.0, NAN, 2.0, 0.5], [1.0, 2.0, 3.0, -1.0], [INF, NAN, 0.0, 0.0]]
  )
  out = _probs(name, f(x))
  assert np.isnan(out[0]).all() and np.isnan(out[2]).all()
  np.testing.assert_allclose(out[1], _probs(name, f(x[1:2]))[0], rtol=1e-6)
  g = jax.grad(_weighted(f, log, _w(x.shape)))(x)
  g1 = jax.grad(_weighted(f, log, _w(x.shape)[1:2]))(x[1:2])
  np.testing.assert_allclose(g[1], g1[0], rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------
# -inf: exactly 0 mass, zero gradient; rows with nothing left give zeros.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
  "name", slow_except(NAMES, "sparsemax", "budget_sparsemax_k1")
)
def test_neg_inf_entries_get_zero_mass_and_zero_gradient(name):
  f, log, _ = NORMALISERS[name]
  x = jnp.array([[0.3, -INF, 1.2, -INF, -0.4]])
  kept = x[:, jnp.array([0, 2, 4])]
  out = np.asarray(f(x), np.float64)
  dead = np.array([1, 3])
  if log:
    assert (out[0, dead] == -INF).all()
  else:
    assert (out[0, dead] == 0.0).all()
  np.testing.assert_allclose(
    np.delete(out, dead, axis=1), f(kept), rtol=1e-6, atol=1e-7
  )
  w = _w(x.shape)
  g = jax.grad(_weighted(f, log, w))(x)
  assert (np.asarray(g)[0, dead] == 0.0).all()
  np.testing.assert_allclose(
    np.delete(np.asarray(g), dead, axis=1),
    jax.grad(_weighted(f, log, w[:, jnp.array([0, 2, 4])]))(kept),
    rtol=1e-5,
    atol=1e-6,
  )
  # The Jacobian has no entry in or out of a -inf score.
  jac = np.asarray(
    jax.jacrev(lambda v: jnp.where(jnp.isfinite(f(v)), f(v), 0.0))(x)
  )[0, :, 0]
  assert (jac[dead, :] == 0).all() and (jac[:, dead] == 0).all()


@pytest.mark.parametrize("how", ["neg_inf", "where", "where_and_t"])
@pytest.mark.parametrize("name", slow_except(NAMES, "log_softmax"))
def test_rows_with_nothing_live_give_zeros_never_nan(name, how):
  f, log, _ = NORMALISERS[name]
  x = jnp.array([[-INF, -INF, -INF], [0.5, -1.0, 2.0]])
  kwargs = {}
  if how != "neg_inf":
    x = jnp.array([[0.1, 3.0, -2.0], [0.5, -1.0, 2.0]])
    kwargs["where"] = jnp.array([[False] * 3, [True] * 3])
  if how == "where_and_t":
    kwargs["temperature"] = jnp.array([[0.7], [1.3]])
  out = np.asarray(f(x, **kwargs))
  assert (out[0] == (-INF if log else 0.0)).all()
  assert np.isfinite(_probs(name, out[1])).all()
  loss = _weighted(f, log, _w(x.shape))
  g = jax.grad(loss)(x, **kwargs)
  assert (np.asarray(g)[0] == 0).all() and _finite(g)
  h = jax.jacrev(jax.grad(loss))(x, **kwargs)
  assert (np.asarray(h)[0] == 0).all() and _finite(h)
  if how == "where_and_t":
    gt = jax.grad(lambda t: loss(x, where=kwargs["where"], temperature=t))(
      kwargs["temperature"]
    )
    assert np.asarray(gt)[0, 0] == 0 and _finite(gt)


# --------------------------------------------------------------------------
# +inf: the mass is shared equally among the +inf entries.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", slow_except(NAMES, "entmax_3"))
def test_pos_inf_entries_share_the_mass(name):
  f, log, _ = NORMALISERS[name]
  x = jnp.array(
    [
      [INF, 1.0, INF, -INF, 3e38],
      [-5.0, INF, 0.0, 2.0, -3e38],
      [INF, INF, INF, INF, INF],
    ]
  )
  out = _probs(name, f(x))
  np.testing.assert_allclose(
    out, [[0.5, 0, 0.5, 0, 0], [0, 1, 0, 0, 0], [0.2] * 5], rtol=1e-6, atol=0
  )
  # Gradients stay finite (the map is locally constant in the limit).
  g = jax.grad(_weighted(f, log, _w(x.shape)))(x)
  assert _finite(g)


@pytest.mark.parametrize(
  "name", ["softmax", "log_softmax", "sparsemax", "entmax15"]
)
def test_pos_inf_beats_the_largest_finite_value(name):
  f = NORMALISERS[name][0]
  big = float(np.finfo(np.float32).max)
  out = np.asarray(f(jnp.array([big, 1.0, INF])))
  expected = [-INF, -INF, 0.0] if name == "log_softmax" else [0.0, 0.0, 1.0]
  np.testing.assert_array_equal(out, expected)


# --------------------------------------------------------------------------
# Huge finite magnitudes and subnormals.
# --------------------------------------------------------------------------


def _extreme_rows(dtype):
  fi = jnp.finfo(dtype)
  big, tiny = float(fi.max), float(fi.smallest_subnormal)
  rows = [
    [big, -big, 0.0, 1.0],
    [-big, -big, -big, -big],
    [big, big, big, -big],
    [tiny, 0.0, -tiny, 2 * tiny],
    [big, tiny, -tiny, -big],
  ]
  if big > 1e30:
    rows += [[1e30, -1e30, 1e30, 0.0], [-1e30, 1.0, -1e30, 1e30]]
  return np.array(rows, np.float64).astype(dtype)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("name", slow_except(NAMES, "log_softmax"))
def test_huge_and_subnormal_scores_give_finite_results(name, dtype):
  f, log, _ = NORMALISERS[name]
  x = jnp.asarray(_extreme_rows(dtype))
  out = f(x)
  assert out.dtype == x.dtype
  p = _probs(name, out)
  assert np.isfinite(p).all()
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=_tol(dtype))
  if dtype == jnp.float32:  # gradients, first and second order, finite
    loss = _weighted(f, log, _w(x.shape))
    assert _finite(jax.grad(loss)(x), jax.jacrev(jax.grad(loss))(x))


@pytest.mark.slow  # every map in float64; test_sparse.py etc. keep some
def test_float64_with_x64():
  with jax.enable_x64(True):
    extreme = jnp.asarray(_extreme_rows(np.float64))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(7, 4)) * 3)
    assert x.dtype == jnp.float64
    for name, f in EVERYTHING.items():
      for v in (x, extreme):
        out = f(v)
        assert out.dtype == jnp.float64, name
        p = np.exp(out) if name == "log_softmax" else np.asarray(out)
        assert np.isfinite(p).all(), name
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-13, err_msg=name)


# --------------------------------------------------------------------------
# Axis of size 1 and size 0.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
  "name",
  slow_except(
    list(EVERYTHING), "softmax", "normmax_array_alpha", "gumbel_hard"
  ),
)
def test_axis_of_size_one_gives_one(name):
  f = EVERYTHING[name]
  log = name == "log_softmax"
  x = jnp.array([[5.0], [-3e38], [0.0]])
  out = np.asarray(f(x))
  np.testing.assert_array_equal(
    out, np.zeros((3, 1)) if log else np.ones((3, 1))
  )
  masked = np.asarray(f(x, where=jnp.array([[True], [False], [True]])))
  assert masked[1, 0] == (-INF if log else 0.0)
  g = jax.grad(lambda v: jnp.sum(f(v)))(x)
  np.testing.assert_array_equal(g, np.zeros((3, 1)))


@pytest.mark.parametrize(
  "shape,axis", [((3, 0), -1), ((0, 4), -1), ((2, 0, 3), 1), ((0,), None)]
)
@pytest.mark.parametrize("name", slow_except(list(EVERYTHING), "gumbel"))
def test_axis_of_size_zero_gives_empty(name, shape, axis):
  f = EVERYTHING[name]
  x = jnp.zeros(shape, jnp.bfloat16)
  out = f(x, axis=axis)
  assert out.shape == shape and out.dtype == jnp.bfloat16
  g = jax.grad(lambda v: jnp.sum(f(v, axis=axis).astype(jnp.float32)))(
    x.astype(jnp.float32)
  )
  assert g.shape == shape


# --------------------------------------------------------------------------
# Dtypes.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize(
  "name",
  slow_except(list(EVERYTHING), "gumbel_sparsemax"),
)
def test_dtype_is_kept_and_rows_sum_to_one(name, dtype):
  f = EVERYTHING[name]
  x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 9)) * 3, dtype)
  out = f(x)
  assert out.dtype == dtype
  p = (
    np.exp(np.asarray(out, np.float64))
    if name == "log_softmax"
    else (np.asarray(out, np.float64))
  )
  assert (p >= 0).all()
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=_tol(dtype))


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("name", slow_except(SPARSE, "entmax15"))
def test_sparse_maps_stay_exactly_sparse_in_every_dtype(name, dtype):
  f = NORMALISERS[name][0]
  x = jnp.asarray([[3.0, 0.0, -3.0, -10.0], [0.25, 0.5, -4.0, 0.5]], dtype)
  expected = f(x.astype(jnp.float32))
  out = np.asarray(f(x), np.float64)
  zeros = np.asarray(expected) == 0
  assert zeros.any()
  np.testing.assert_array_equal(out[zeros], 0.0)
  assert (out[~zeros] > 0).all()


@pytest.mark.parametrize(
  "name",
  slow_except(list(EVERYTHING), "softmax", "entmax_array_alpha", "gumbel"),
)
def test_integers_are_promoted_and_lists_accepted(name):
  f = EVERYTHING[name]
  from_int = f(jnp.array([[1, 3, 2]], jnp.int32))
  from_list = f([[1.0, 3.0, 2.0]])
  expected = f(jnp.array([[1.0, 3.0, 2.0]]))
  assert from_int.dtype == from_list.dtype == jnp.float32
  np.testing.assert_array_equal(from_int, expected)
  np.testing.assert_array_equal(from_list, expected)


@pytest.mark.parametrize(
  "bad,exc",
  [
    (np.array([True, False]), TypeError),
    (np.array([1 + 1j, 2.0]), TypeError),
  ],
)
@pytest.mark.parametrize("name", list(EVERYTHING))
def test_boolean_and_complex_scores_raise(name, bad, exc):
  with pytest.raises(exc, match="dtype"):
    EVERYTHING[name](bad)


# --------------------------------------------------------------------------
# Concrete bad arguments raise at trace time, naming the argument.
# --------------------------------------------------------------------------

_BAD_ARGS = [
  ("axis_out_of_range", dict(axis=2), ValueError, "axis"),
  ("axis_float", dict(axis=1.0), TypeError, "axis"),
  ("axis_repeated", dict(axis=(0, -2)), ValueError, "axis"),
  ("temperature_zero", dict(temperature=0.0), ValueError, "temperature"),
  ("temperature_negative", dict(temperature=-1.0), ValueError, "temperature"),
  ("temperature_nan", dict(temperature=NAN), ValueError, "temperature"),
  ("temperature_inf", dict(temperature=INF), ValueError, "temperature"),
  (
    "temperature_array_zero",
    dict(temperature=np.array([[1.0], [0.0]])),
    ValueError,
    "temperature",
  ),
  (
    "where_not_broadcastable",
    dict(where=np.ones(2, bool)),
    ValueError,
    "where",
  ),
  ("where_not_bool", dict(where=np.ones(3)), TypeError, "where"),
]


@pytest.mark.parametrize(
  "kwargs,exc,arg", [pytest.param(*c[1:], id=c[0]) for c in _BAD_ARGS]
)
@pytest.mark.parametrize("name", list(EVERYTHING))
def test_bad_arguments_raise_at_trace_time(name, kwargs, exc, arg):
  f = EVERYTHING[name]
  traced = jax.jit(lambda x: f(x, **kwargs))
  with pytest.raises(exc, match=f"`{arg}`"):
    traced(jnp.ones((2, 3)))


@pytest.mark.parametrize(
  "alpha",
  [
    0.5,
    0.0,
    -1.0,
    NAN,
    INF,
    True,
    np.array([[1.5], [NAN]]),
    np.array([[0.99], [1.0]]),
  ],
)
def test_bad_alpha_raises_at_trace_time(alpha):
  exc = TypeError if alpha is True else ValueError
  with pytest.raises(exc, match="`alpha`"):
    jax.jit(lambda x: softjax.entmax(x, alpha))(jnp.ones((2, 3)))
  a = np.asarray(alpha)
  loss_alpha = a[:, 0] if a.ndim == 2 else alpha
  with pytest.raises(exc, match="`alpha`"):
    jax.jit(
      lambda x: softjax.losses.entmax_loss(x, jnp.array([0, 1]), loss_alpha)
    )(jnp.ones((2, 3)))


@pytest.mark.parametrize(
  "key,exc",
  [
    (np.ones(3, np.float32), TypeError),
    (0, TypeError),
    (np.zeros((4, 2), np.uint32), ValueError),
    ("key", TypeError),
  ],
)
def test_non_key_raises(key, exc):
  with pytest.raises(exc, match="`key`"):
    jax.jit(lambda x: softjax.gumbel_softmax(key, x))(jnp.ones(3))


@pytest.mark.parametrize(
  "labels,exc",
  [
    (np.array([0, 1, 2]), ValueError),  # wrong shape
    (np.array([[0], [1]]), ValueError),  # wrong shape
    (np.array([0, 3]), ValueError),  # out of range
    (np.array([-1, 0]), ValueError),  # out of range
    (np.ones((2, 4), np.float32), ValueError),  # soft labels, wrong shape
    (np.full((2, 3), 0.5, np.float32), ValueError),  # do not sum to 1
    (np.array([True, False]), TypeError),
  ],
)
@pytest.mark.parametrize("name", list(LOSSES))
def test_bad_labels_raise_at_trace_time(name, labels, exc):
  with pytest.raises(exc, match="`labels`"):
    jax.jit(lambda x: LOSSES[name](x, labels))(jnp.ones((2, 3)))


# --------------------------------------------------------------------------
# Gradients of finite inputs are finite, to second order.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", slow_except(NAMES, "softmax"))
def test_second_order_finite_on_awkward_finite_inputs(name):
  f, log, _ = NORMALISERS[name]
  # Extremes (3e38) are left out: d/dT of x / T overflows there, truly.
  x = jnp.array(
    [
      [0.0, 0.0, 0.0, 0.0],  # all equal
      [1.0, 0.0, 0.0, -1e-7],  # ties below the top
      [0.5, -0.5, 0.5, -0.5],  # ties at the top
      [1e4, 0.0, -1e4, 1.0],  # one-hot
      [1e-45, 0.0, -1e-45, 1e-40],
    ]
  )  # subnormals
  t = jnp.array([[0.5], [1.0], [2.0], [0.01], [1.0]])
  loss = _weighted(f, log, _w(x.shape))

  def both(v, s):
    return loss(v, temperature=s)

  g = jax.grad(both, argnums=(0, 1))(x, t)
  h = jax.jacrev(jax.grad(both, argnums=(0, 1)), argnums=(0, 1))(x, t)
  assert _finite(*jax.tree.leaves(g)), g
  assert _finite(*jax.tree.leaves(h))


# --------------------------------------------------------------------------
# The losses.
# --------------------------------------------------------------------------


def _loss_grad(name, x, y, **kwargs):
  return jax.grad(lambda v: jnp.sum(LOSSES[name](v, y, **kwargs)))(x)


@pytest.mark.parametrize("name", slow_except(list(LOSSES), "entmax_loss_1_3"))
def test_loss_nan_stays_in_its_row(name):
  x = jnp.array([[1.0, NAN, 2.0], [1.0, 2.0, 3.0]])
  y = jnp.array([0, 1])
  loss = np.asarray(LOSSES[name](x, y))
  assert np.isnan(loss[0])
  np.testing.assert_allclose(loss[1], LOSSES[name](x[1:], y[1:])[0], rtol=1e-6)
  g = np.asarray(_loss_grad(name, x, y))
  assert np.isfinite(g[1]).all()


@pytest.mark.parametrize("name", slow_except(list(LOSSES), "sparsemax_loss"))
def test_loss_neg_inf_logits_and_empty_rows(name):
  x = jnp.array([[0.3, -INF, 1.2], [-INF, -INF, -INF], [0.1, 0.2, 0.3]])
  y = jnp.array([2, 1, 0])
  where = jnp.array([[True] * 3, [True] * 3, [False] * 3])
  loss = np.asarray(LOSSES[name](x, y, where=where))
  assert np.isfinite(loss[0]) and loss[0] >= 0
  assert loss[1] == 0 and loss[2] == 0  # nothing live: left out
  g = np.asarray(_loss_grad(name, x, y, where=where))
  assert g[0, 1] == 0 and (g[1:] == 0).all() and np.isfinite(g).all()
  dropped = LOSSES[name](x[:1, jnp.array([0, 2])], jnp.array([1]))
  np.testing.assert_allclose(loss[0], dropped[0], rtol=1e-4, atol=1e-6)
  # A target on a -inf logit is infinitely wrong.
  assert LOSSES[name](x[:1], jnp.array([1]))[0] == INF


@pytest.mark.parametrize(
  "name", slow_except(list(LOSSES), "entmax15_loss", "normmax_loss_array")
)
def test_loss_pos_inf_logits_take_the_limit(name):
  x = jnp.array([[INF, 0.0, INF, -1.0], [INF, 0.0, INF, -1.0]])
  y = jnp.array([0, 1])
  loss = np.asarray(LOSSES[name](x, y))
  # Target among the +inf logits: the loss of the uniform prediction on
  # them, H(uniform on 2) - H(one-hot); the same with a large finite logit.
  np.testing.assert_allclose(loss[0], UNIFORM2_ENTROPY[name], rtol=1e-5)
  assert loss[1] == INF  # target off the +inf logits
  g = np.asarray(_loss_grad(name, x, y))
  np.testing.assert_allclose(
    g, [[-0.5, 0, 0.5, 0], [0.5, -1, 0.5, 0]], atol=1e-6
  )


@pytest.mark.parametrize(
  "name", slow_except(list(LOSSES), "softmax_loss", "entmax_loss_array")
)
def test_loss_huge_logits(name):
  big = float(np.finfo(np.float32).max)
  x = jnp.array([[big, -big, 0.0], [1e30, -1e30, 1e30], [big, 1.0, 2.0]])
  y = jnp.array([0, 0, 2])
  loss = np.asarray(LOSSES[name](x, y))
  # Targets at the maximum: 0, or H(uniform on 2) for the tie.
  assert loss[0] == 0 and np.isfinite(loss[1]) and loss[1] >= 0
  # The true loss (~3.4e38) rounds to +inf in float32, never to NaN.
  assert loss[2] > 1e38
  g = np.asarray(_loss_grad(name, x, y))
  assert np.isfinite(g).all()


@pytest.mark.parametrize("name", slow_except(list(LOSSES), "softmax_loss"))
def test_loss_size_one_size_zero_and_dtypes(name):
  f = LOSSES[name]
  np.testing.assert_array_equal(
    f(jnp.array([[4.0], [-1.0]]), jnp.array([0, 0])), [0.0, 0.0]
  )
  empty = f(jnp.zeros((2, 0)), jnp.zeros((2, 0)))
  assert empty.shape == (2,) and (np.asarray(empty) == 0).all()
  no_rows = f(jnp.zeros((0, 3)), jnp.zeros((0,), jnp.int32))
  assert no_rows.shape == (0,)
  for dtype in (jnp.float16, jnp.bfloat16, jnp.float32):
    out = f(jnp.array([[1.0, 2.0, -1.0]], dtype), jnp.array([0]))
    assert out.dtype == dtype and np.isfinite(np.asarray(out, float)).all()
  from_list = f([[1.0, 2.0, -1.0]], [0])
  np.testing.assert_allclose(
    from_list, f(jnp.array([[1.0, 2.0, -1.0]]), jnp.array([0]))
  )


@pytest.mark.parametrize("name", slow_except(list(LOSSES), "softmax_loss"))
def test_loss_second_order_finite(name):
  x = jnp.array(
    [[0.3, -INF, 1.2, 0.0], [1e4, 0.0, -1e4, 1.0], [0.0, 0.0, 0.0, 0.0]]
  )
  y = jnp.array([0, 2, 3])
  grad = jax.grad(lambda v: jnp.sum(LOSSES[name](v, y) * jnp.arange(1.0, 4.0)))
  h = jax.jacrev(grad)(x)
  assert _finite(h)


@pytest.mark.parametrize(
  "name", slow_except(list(LOSSES), "softmax_loss", "normmax_loss")
)
def test_traced_out_of_range_labels_give_nan(name):
  loss = jax.jit(LOSSES[name])(jnp.zeros((3, 4)), jnp.array([0, 4, -1]))
  assert np.isfinite(loss[0]) and np.isnan(loss[1:]).all()


# --------------------------------------------------------------------------
# gumbel_softmax.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", slow_except(GUMBEL, "gumbel_hard"))
def test_gumbel_nan_and_empty_rows(name):
  f = GUMBEL[name]
  x = jnp.array(
    [[NAN, 1.0, 2.0], [-INF, -INF, -INF], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3]]
  )
  where = jnp.array([[True] * 3] * 3 + [[False] * 3])
  out = np.asarray(f(x, where=where))
  assert np.isnan(out[0]).all()
  assert (out[1] == 0).all() and (out[3] == 0).all()
  np.testing.assert_allclose(out[2].sum(), 1.0, rtol=1e-6)
  g = np.asarray(
    jax.grad(lambda v: jnp.sum(f(v, where=where) * _w(x.shape)))(x)
  )
  assert (g[1] == 0).all() and (g[3] == 0).all() and np.isfinite(g[2]).all()


def test_gumbel_hard_with_pos_inf_is_uniform_over_them():
  x = jnp.array([INF, 0.0, INF, 5.0, INF])
  keys = jax.random.split(jax.random.key(1), 3000)
  hs = jax.jit(jax.vmap(lambda k: softjax.gumbel_softmax(k, x, hard=True)))(
    keys
  )
  hs = np.asarray(hs)
  assert (hs.sum(-1) == 1).all()
  freq = hs.mean(0)
  np.testing.assert_array_equal(freq[[1, 3]], 0.0)
  np.testing.assert_allclose(freq[[0, 2, 4]], 1 / 3, atol=0.04)


def test_gumbel_hard_huge_logits_match_gumbel_max():
  # Soft samples tie in float32 (1 and 0 after rounding); the hard sample
  # still follows the perturbed scores.
  x = jnp.array([3e38, 3e38, -3e38])
  keys = jax.random.split(jax.random.key(2), 400)
  hs = np.asarray(
    jax.vmap(lambda k: softjax.gumbel_softmax(k, x, hard=True))(keys)
  )
  assert (hs.sum(-1) == 1).all() and (hs[:, 2] == 0).all()
  assert 0.3 < hs[:, 0].mean() < 0.7


# --------------------------------------------------------------------------
# The solver at its hardest.
# --------------------------------------------------------------------------


def _reference(x, alpha):
  x = np.asarray(x, np.float64)
  if alpha == 1.0:
    return ref.softmax(x)
  if alpha == 2.0:
    return ref.sparsemax(x)
  if alpha == 1.5:
    return ref.entmax15(x)
  return ref.entmax_bisect(x, alpha)


@pytest.mark.parametrize(
  "alpha", slow_except([1.0 + 1e-6, 1.25, 1.5, 2.0, 3.0, 4.0], 2.0)
)
def test_fuzz_boundaries_against_reference(alpha):
  rng = np.random.default_rng(3)
  rows = [
    np.zeros(7),  # all equal
    np.full(7, -2.5),
    np.array([1.0, 0.0, 0.0, 0.0, -1.0, -1.0, -1.0]),  # ties at threshold
    np.array([1.0, 1.0, 0.0, 0.0, 0.0, -3.0, -3.0]),
    np.array([0.5, 0.5, 0.5, 0.5, -0.5, -0.5, -0.5]),
    np.r_[30.0, rng.uniform(-1e-6, 1e-6, 6)],  # one huge among tiny
    np.r_[1e-6, rng.uniform(-1e-9, 1e-9, 6)],
    rng.normal(size=7) * 1e-4,
    rng.normal(size=7) * 50,
  ]
  x = np.stack(rows).astype(np.float32)
  p = np.asarray(softjax.entmax(jnp.asarray(x), alpha), np.float64)
  expected = _reference(x.astype(np.float64), alpha)
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=4e-6)
  np.testing.assert_allclose(p, expected, atol=5e-5 if alpha > 2 else 3e-6)
  with jax.enable_x64(True):
    p64 = np.asarray(softjax.entmax(jnp.asarray(x, jnp.float64), alpha))
  np.testing.assert_allclose(p64, expected, atol=1e-9)


def test_alpha_close_to_one_is_softmax():
  x = jnp.asarray(
    np.random.default_rng(4).normal(size=(4, 50)) * 3, jnp.float32
  )
  for alpha in (1.0 + 1e-6, jnp.full((4, 1), 1.0 + 1e-6)):
    np.testing.assert_allclose(
      softjax.entmax(x, alpha), softjax.softmax(x), atol=2e-6
    )


@pytest.mark.parametrize("alpha", slow_except([1.0 + 1e-6, 1.5, 2.0, 4.0], 1.5))
def test_rows_of_a_million_entries(alpha):
  n = 1_000_000
  rng = np.random.default_rng(5)
  x = np.stack(
    [rng.normal(size=n), np.zeros(n), np.r_[1e3, np.full(n - 1, 1e-30)]]
  ).astype(np.float32)
  p = jax.jit(lambda v: softjax.entmax(v, alpha))(jnp.asarray(x))
  p = np.asarray(p, np.float64)
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(p[1], 1.0 / n, rtol=1e-5)
  assert p[2, 0] == 1.0 and (p[2, 1:] == 0).all()
  # Order preserved on the random row (ties in the output only where it is 0).
  order = np.argsort(x[0])
  assert (np.diff(p[0][order]) >= 0).all()
  expected = _reference(x[0].astype(np.float64), alpha)
  np.testing.assert_allclose(p[0], expected, atol=2e-6)


# --------------------------------------------------------------------------
# Traced bad values: defined results, and the opt-in checks.
# --------------------------------------------------------------------------


def test_traced_bad_alpha_gives_the_documented_result():
  x = jnp.array([[2.3, 1.1, -0.4]])
  entmax = jax.jit(lambda v, a: softjax.entmax(v, a))
  assert np.isnan(entmax(x, jnp.array([[NAN]]))).all()
  assert np.isnan(entmax(x, jnp.array([[INF]]))).all()
  np.testing.assert_allclose(
    entmax(x, jnp.array([[0.5]])), softjax.softmax(x), atol=1e-6
  )
  loss = jax.jit(lambda v, a: softjax.losses.entmax_loss(v, jnp.array([1]), a))
  np.testing.assert_allclose(
    loss(x, jnp.array([0.5])),
    softjax.losses.softmax_loss(x, jnp.array([1])),
    rtol=1e-6,
  )
  # Value and alpha-gradient of alpha = 1 below 1.
  ga = jax.grad(lambda a: loss(x, a).sum())
  np.testing.assert_allclose(
    ga(jnp.array([0.5])), ga(jnp.array([1.0])), rtol=1e-6
  )
  assert np.isnan(loss(x, jnp.array([NAN]))).all()


@pytest.mark.parametrize(
  "name", slow_except(NAMES, "softmax", "sparsemax", "normmax")
)
def test_traced_bad_temperature_gives_the_documented_result(name):
  f = NORMALISERS[name][0]
  x = jnp.array([[2.3, 1.1, -0.4]])
  run = jax.jit(lambda v, t: _probs_j(name, f(v, temperature=t)))
  assert np.isnan(run(x, jnp.array(NAN))).all()
  # T = +inf: x / T = 0, the uniform distribution.
  np.testing.assert_allclose(run(x, jnp.array(INF)), [[1 / 3] * 3], rtol=1e-6)
  # T = 0: x / 0 = +inf for positive scores: they share the mass.
  np.testing.assert_allclose(
    run(x, jnp.array(0.0)), [[0.5, 0.5, 0.0]], rtol=1e-6
  )
  # T < 0 reverses the order.
  np.testing.assert_allclose(
    run(x, jnp.array(-1.0)), run(-x, jnp.array(1.0)), rtol=1e-6
  )


def _probs_j(name, out):
  return jnp.exp(out) if NORMALISERS[name][1] else out


def test_checks_pass_good_values_and_return_them_unchanged():
  a = jnp.array([[1.0], [1.5], [7.0]])
  assert softjax.checks.check_alpha(a) is a
  assert softjax.checks.check_alpha(1.0) == 1.0
  assert softjax.checks.check_temperature(0.1) == 0.1
  x = jnp.array([0.0, -INF, INF])
  assert softjax.checks.check_scores(x) is x
  y = jnp.array([0, 2])
  assert softjax.checks.check_labels(y, 3) is y
  assert softjax.checks.check_alpha(jnp.zeros((0,))).shape == (0,)


@pytest.mark.parametrize(
  "check,bad,match",
  [
    (softjax.checks.check_alpha, 0.5, "`alpha`.*0.5"),
    (softjax.checks.check_alpha, jnp.array([1.0, NAN]), "`alpha`.*nan"),
    (softjax.checks.check_alpha, INF, "`alpha`.*inf"),
    (softjax.checks.check_temperature, 0.0, "`temperature`"),
    (
      softjax.checks.check_temperature,
      jnp.array([1.0, -2.0]),
      "`temperature`.*-2",
    ),
    (softjax.checks.check_temperature, NAN, "`temperature`"),
    (softjax.checks.check_scores, jnp.array([0.0, NAN]), "NaN"),
    (
      lambda y: softjax.checks.check_labels(y, 3),
      jnp.array([0, 3]),
      "`labels`.*3",
    ),
  ],
)
def test_checks_eager_jit_and_vmap(check, bad, match):
  with pytest.raises(checkify.JaxRuntimeError, match=match):
    check(bad)

  def f(v):
    return check(v)

  err, _ = jax.jit(checkify.checkify(f))(bad)
  assert err.get() is not None
  with pytest.raises(checkify.JaxRuntimeError, match=match):
    err.throw()
  batch = jnp.stack([jnp.asarray(bad)] * 2)
  err, _ = jax.jit(jax.vmap(checkify.checkify(f)))(batch)
  assert err.get() is not None


def test_checks_catch_values_computed_inside_jit_with_gradients():
  x = jnp.array([[2.3, 1.1, -0.4]])

  def loss(log_t, s):
    t = softjax.checks.check_temperature(jnp.exp(log_t) - 1.0)
    alpha = softjax.checks.check_alpha(1.0 + s)
    return jnp.sum(softjax.entmax(x, alpha, temperature=t) ** 2)

  checked = jax.jit(checkify.checkify(jax.grad(loss, argnums=(0, 1))))
  err, g = checked(1.0, jnp.array([[0.5]]))
  assert err.get() is None and _finite(*g)
  err, _ = checked(0.0, jnp.array([[0.5]]))
  assert "temperature" in err.get()
  err, _ = checked(1.0, jnp.array([[-0.5]]))
  assert "alpha" in err.get()


def test_checks_raise_type_error_on_non_numbers():
  with pytest.raises(TypeError, match="`alpha`"):
    softjax.checks.check_alpha(jnp.array([True]))
  with pytest.raises(TypeError, match="`labels`"):
    softjax.checks.check_labels(jnp.array([0.0]), 3)


def test_checkified_function_exports_for_all_platforms():
  def f(x, alpha):
    return softjax.entmax(x, softjax.checks.check_alpha(alpha))

  exported = jax.export.export(
    jax.jit(lambda x, a: checkify.checkify(f)(x, a)[1]),
    platforms=["cpu", "cuda", "tpu"],
  )(
    jax.ShapeDtypeStruct((4, 16), jnp.float32),
    jax.ShapeDtypeStruct((4, 1), jnp.float32),
  )
  assert exported.mlir_module().strip()


def test_semantics_page_example_runs(capsys):
  import pathlib
  import re

  page = pathlib.Path(__file__).parent.parent / "docs" / "semantics.md"
  if not page.exists():
    pytest.skip("docs/semantics.md not present")
  code = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
  assert code
  exec(compile(code[0], str(page), "exec"), {})
  assert "`alpha` must be finite and >= 1" in capsys.readouterr().out
