"""Fenchel-Young losses against optax, closed forms and finite differences.

References are independent of softjax: ``optax`` (cross-entropy, sparsemax
loss), numpy sort / bisection implementations of the normalisers with the
Fenchel-Young formula, ``jax.grad`` through a naive differentiable entmax15,
``jax.test_util.check_grads`` in float64, and (if installed) PyTorch's
``entmax`` package.
"""

from __future__ import annotations

import functools

import _inputs
from _tiers import slow_except
import chex
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import optax
import pytest

import softjax
from softjax import losses

LOSSES = {
  "softmax": (losses.softmax_loss, 1.0),
  "sparsemax": (losses.sparsemax_loss, 2.0),
  "entmax15": (losses.entmax15_loss, 1.5),
}
LOSS_NAMES = tuple(LOSSES)
ALPHAS = (1.0, 1.25, 1.5, 2.0, 2.5)


def _soft_labels(shape, seed=1, dtype=np.float32):
  e = np.exp(_inputs.rng(seed).normal(size=shape))
  return (e / e.sum(-1, keepdims=True)).astype(dtype)


@functools.cache
def _jitted(name, alpha, axis):
  """A jitted loss: compiled once per shape (eager entmax is slow to run).

  Under jit the labels are traced, so the concrete-label checks are skipped;
  the error tests below call the functions eagerly.
  """
  if name == "entmax":
    if alpha == "array":
      return jax.jit(
        lambda x, y, a, where=None: losses.entmax_loss(
          x, y, a, axis, where=where
        )
      )
    return jax.jit(
      lambda x, y, where=None: losses.entmax_loss(
        x, y, alpha, axis, where=where
      )
    )
  fn = LOSSES[name][0]
  return jax.jit(lambda x, y, where=None: fn(x, y, axis, where=where))


def _loss(name, logits, labels, alpha=None, axis=-1, where=None):
  """``name`` in LOSSES, or "entmax" with a float or array ``alpha``."""
  if name != "entmax":
    return _jitted(name, None, axis)(logits, labels, where)
  if isinstance(alpha, float):
    return _jitted(name, alpha, axis)(logits, labels, where)
  return _jitted(name, "array", axis)(logits, labels, alpha, where)


# --------------------------------------------------------------------------
# numpy references (float64, one row at a time).
# --------------------------------------------------------------------------


def np_softmax(z):
  e = np.exp(z - z.max())
  return e / e.sum()


def np_sparsemax(z):
  u = np.sort(z)[::-1]
  k = np.arange(1, len(z) + 1)
  cs = np.cumsum(u)
  support = k[1 + k * u > cs].max()
  tau = (cs[support - 1] - 1) / support
  return np.maximum(z - tau, 0.0)


def np_entmax15(z):
  u = np.sort(z / 2)[::-1]
  best = None
  for k in range(1, len(z) + 1):
    mean = u[:k].mean()
    ss = ((u[:k] - mean) ** 2).sum()
    tau = mean - np.sqrt(max(0.0, (1 - ss) / k))
    if tau <= u[k - 1]:
      best = tau
  return np.maximum(z / 2 - best, 0.0) ** 2


def np_entmax_bisect(z, alpha):
  if alpha == 1.0:
    return np_softmax(z)
  y = (alpha - 1) * z
  lo, hi = y.max() - 1, y.max() - len(z) ** (1 - alpha)
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if (np.maximum(y - mid, 0) ** (1 / (alpha - 1))).sum() >= 1:
      lo = mid
    else:
      hi = mid
  p = np.maximum(y - 0.5 * (lo + hi), 0) ** (1 / (alpha - 1))
  return p / p.sum()


def np_tsallis(p, alpha):
  if alpha == 1.0:
    q = p[p > 0]
    return -(q * np.log(q)).sum()
  return (1 - (p**alpha).sum()) / (alpha * (alpha - 1))


def np_normaliser(z, alpha):
  if alpha == 2.0:
    return np_sparsemax(z)
  if alpha == 1.5:
    return np_entmax15(z)
  return np_entmax_bisect(z, alpha)


def np_fy_loss(z, y, alpha):
  """Fenchel-Young loss of one row, with ``p`` from a numpy normaliser."""
  z, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
  p = np_normaliser(z, alpha)
  return (p - y) @ z + np_tsallis(p, alpha) - np_tsallis(y, alpha)


def np_rows(fn, z, *rest):
  """Applies a row function over the last axis."""
  z2 = np.asarray(z, np.float64).reshape(-1, np.shape(z)[-1])
  rest2 = [
    np.broadcast_to(np.asarray(r, np.float64), np.shape(z)).reshape(z2.shape)
    for r in rest
  ]
  out = [fn(z2[i], *(r[i] for r in rest2)) for i in range(len(z2))]
  return np.asarray(out).reshape(np.shape(z)[:-1] + np.shape(out[0]))


def _one_hot(labels, n):
  return np.eye(n)[labels]


def _close(actual, expected, rtol=1e-5, atol=1e-5):
  np.testing.assert_allclose(
    np.asarray(actual, np.float64),
    np.asarray(expected, np.float64),
    rtol=rtol,
    atol=atol,
  )


# --------------------------------------------------------------------------
# Values against optax, closed forms and PyTorch entmax.
# --------------------------------------------------------------------------

SHAPE = (12, 7)  # most value tests share it, so their compilations are shared
# One alpha per example for the array-alpha path, 1 and above 2 included.
ROW_ALPHAS = np.array(
  [1.0, 1.05, 1.1, 1.25, 1.5, 1.5, 1.75, 2.0, 2.0, 2.5, 3.0, 4.0], np.float32
)


def test_softmax_loss_matches_optax():
  x, ids = _inputs.scores(SHAPE, 2.0), _inputs.rng(1).integers(0, 7, 12)
  _close(
    _loss("softmax", x, ids),
    optax.losses.softmax_cross_entropy_with_integer_labels(x, ids),
  )
  # Soft targets: cross-entropy minus the entropy of the target.
  y = _soft_labels(SHAPE)
  entropy = -(y.astype(np.float64) * np.log(y)).sum(-1)
  _close(
    _loss("softmax", x, y), optax.losses.softmax_cross_entropy(x, y) - entropy
  )
  # Masks, as optax's `where`.
  mask = _inputs.random_mask(SHAPE, 2, 0.6)
  mask[np.arange(12), ids] = True
  _close(
    _loss("softmax", x, ids, where=mask),
    optax.losses.softmax_cross_entropy_with_integer_labels(x, ids, where=mask),
  )


def test_softmax_loss_huge_logits_match_optax():
  x = np.array([[1e4, 0.0, -1e4], [0.0, 50.0, 100.0]], np.float32)
  y = np.array([1, 0])
  out = _loss("softmax", x, y)
  assert np.isfinite(np.asarray(out)).all()
  _close(
    out, optax.losses.softmax_cross_entropy_with_integer_labels(x, y), rtol=1e-6
  )


def test_sparsemax_loss_matches_optax():
  x, ids = _inputs.scores(SHAPE, 2.0), _inputs.rng(1).integers(0, 7, 12)
  _close(
    _loss("sparsemax", x, ids), optax.losses.multiclass_sparsemax_loss(x, ids)
  )


@pytest.mark.parametrize(
  "alpha", slow_except([1.0, 1.25, 1.5, 2.0, 3.0], 1.25, 2.0)
)
def test_static_alpha_matches_numpy_fenchel_young(alpha):
  x, y = _inputs.scores(SHAPE, 2.0), _soft_labels(SHAPE)
  expected = np_rows(lambda z, t: np_fy_loss(z, t, alpha), x, y)
  _close(_loss("entmax", x, y, alpha), expected, rtol=2e-5)
  if alpha in (1.0, 1.5, 2.0):  # the named losses
    name = {1.0: "softmax", 1.5: "entmax15", 2.0: "sparsemax"}[alpha]
    ids = _inputs.rng(3).integers(0, 7, 12)
    expected = np_rows(
      lambda z, t: np_fy_loss(z, t, alpha), x, _one_hot(ids, 7)
    )
    _close(_loss(name, x, ids), expected, rtol=2e-5)
    _close(
      _loss(name, x, y), _loss("entmax", x, y, alpha), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("kind", ["index", "soft"])
def test_array_alpha_matches_numpy_fenchel_young(kind):
  x = _inputs.scores(SHAPE, 2.0)
  ids = _inputs.rng(3).integers(0, 7, 12)
  labels, y = (
    (ids, _one_hot(ids, 7)) if kind == "index" else (_soft_labels(SHAPE),) * 2
  )
  expected = np_rows(
    lambda z, t, a: np_fy_loss(z, t, a[0]),
    x,
    y,
    np.broadcast_to(ROW_ALPHAS[:, None], SHAPE),
  )
  _close(_loss("entmax", x, labels, ROW_ALPHAS), expected, rtol=2e-5)


def test_array_alpha_broadcasts_to_the_examples():
  x, y = _inputs.scores(SHAPE, 2.0), _soft_labels(SHAPE)
  ref = _loss("entmax15", x, y)
  _close(_loss("entmax", x, y, np.array([1.5], np.float32)), ref, rtol=1e-5)
  _close(_loss("entmax", x, y, np.array(1.5, np.float32)), ref, rtol=1e-5)


def test_sparsemax_loss_closed_form():
  # 1/2 ||y - z||^2 - 1/2 ||p - z||^2, the form of Martins & Astudillo.
  x, y = _inputs.scores(SHAPE, 2.0), _soft_labels(SHAPE)
  z = x.astype(np.float64)
  p = np_rows(np_sparsemax, z)
  expected = 0.5 * ((y - z) ** 2).sum(-1) - 0.5 * ((p - z) ** 2).sum(-1)
  _close(_loss("sparsemax", x, y), expected, rtol=2e-5)


def test_worked_examples():
  # Sparsemax: a margin of at least 1 gives exactly zero loss. And for
  # z = (0.75, 0.5, -1), label 1: p = (0.625, 0.375, 0), so
  # L = 1/2 ||y - z||^2 - 1/2 ||p - z||^2 = 0.390625.
  out = _loss(
    "sparsemax",
    np.array([[3.0, 2.0, 0.0], [0.75, 0.5, -1.0]]),
    np.array([0, 1]),
  )
  assert float(out[0]) == 0.0
  _close(out[1], 0.390625)
  # Two classes, softmax: log(1 + e^{-1}).
  _close(_loss("softmax", np.array([1.0, 0.0]), 0), np.log1p(np.exp(-1)))


def test_matches_pytorch_entmax():
  torch = pytest.importorskip("torch")
  entmax = pytest.importorskip("entmax")
  x = _inputs.scores(SHAPE, 2.0)
  ids = _inputs.rng(5).integers(0, 7, 12)
  xt, yt = torch.tensor(x.astype(np.float64)), torch.tensor(ids)
  cases = [
    (_loss("entmax15", x, ids), entmax.Entmax15Loss(reduction="none")),
    (_loss("sparsemax", x, ids), entmax.SparsemaxLoss(reduction="none")),
    (
      _loss("entmax", x, _one_hot(ids, 7).astype(np.float32), 1.25),
      entmax.EntmaxBisectLoss(alpha=1.25, n_iter=100, reduction="none"),
    ),
    (
      _loss("entmax", x, _one_hot(ids, 7).astype(np.float32), 3.0),
      entmax.EntmaxBisectLoss(alpha=3.0, n_iter=100, reduction="none"),
    ),
  ]
  for ours, ref in cases:
    _close(ours, ref(xt, yt).numpy(), rtol=1e-5)


# --------------------------------------------------------------------------
# Properties: non-negative, zero iff the target is the prediction.
# --------------------------------------------------------------------------


def test_nonnegative_and_zero_iff_target_is_prediction():
  x = _inputs.scores(SHAPE, 2.0, seed=20)
  alpha = ROW_ALPHAS
  # Targets that are exactly the prediction, up to rounding: loss ~ 0.
  p = np.asarray(jax.jit(softjax.entmax)(x, alpha[:, None]))
  at_p = np.asarray(_loss("entmax", x, p, alpha))
  assert (at_p >= 0).all()
  assert at_p.max() < 1e-5
  for name in LOSS_NAMES:
    p = np.asarray(
      jax.jit(softjax.entmax, static_argnums=1)(x, LOSSES[name][1])
    )
    assert np.asarray(_loss(name, x, p)).max() < 1e-5
  # Any other target: strictly positive.
  other = np.asarray(_loss("entmax", x, _soft_labels(SHAPE, seed=7), alpha))
  assert (other > 1e-4).all()
  ids = np.asarray(_loss("entmax", x, _inputs.rng(8).integers(0, 7, 12), alpha))
  assert (ids >= 0).all()


def test_tiny_negative_rounding_is_clipped_to_zero():
  # Huge, nearly equal scores: the float32 sum can round below 0.
  x = (1e4 + _inputs.rng(9).normal(size=SHAPE) * 1e-2).astype(np.float32)
  p = np.asarray(jax.jit(softjax.entmax)(x, ROW_ALPHAS[:, None]))
  out = np.asarray(_loss("entmax", x, p, ROW_ALPHAS))
  assert (out >= 0).all() and out.max() < 1e-2


# --------------------------------------------------------------------------
# Gradients.
# --------------------------------------------------------------------------


def _safe_sqrt(v):
  pos = v > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, v, 1.0)), 0.0)


def _naive_entmax15(z):
  """Sort-based entmax15 in jnp, differentiable by plain autodiff."""
  u = jnp.sort(z / 2, axis=-1)[..., ::-1]
  k = jnp.arange(1, z.shape[-1] + 1, dtype=z.dtype)
  mean = jnp.cumsum(u, -1) / k
  ss = jnp.cumsum(u * u, -1) - k * mean * mean
  tau = mean - _safe_sqrt((1 - ss) / k)
  support = jnp.sum(tau <= u, -1, keepdims=True)
  tau_star = jnp.take_along_axis(tau, support - 1, -1)
  return jnp.maximum(z / 2 - tau_star, 0.0) ** 2


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_gradient_is_prediction_minus_target(name):
  x = _inputs.scores(SHAPE, 2.0)
  ids = _inputs.rng(10).integers(0, 7, 12)
  g = np.asarray(jax.random.normal(jax.random.key(0), (12,)))
  alpha = LOSSES[name][1]
  grad = jax.jit(jax.grad(lambda x: (g * LOSSES[name][0](x, ids)).sum()))(x)
  p = np_rows(lambda z: np_normaliser(z, alpha), x)
  _close(grad, g[:, None] * (p - _one_hot(ids, 7)), atol=2e-6)


def test_gradient_matches_autodiff_of_independent_formulas():
  x = jnp.asarray(_inputs.scores(SHAPE, 2.0))
  y = jnp.asarray(_soft_labels(SHAPE))

  def softmax_ref(x):
    # logsumexp(z) - <z, y> + sum y log y, differentiated by jax itself.
    return (
      jax.nn.logsumexp(x, -1) - (x * y).sum(-1) + (y * jnp.log(y)).sum(-1)
    ).sum()

  def entmax15_ref(x):
    # Omega*(z) + Omega(y) - <z, y>, differentiated through the solution.
    p = _naive_entmax15(x)
    tsallis = lambda q: (1 - (q**1.5).sum(-1)) / 0.75
    return ((p * x).sum(-1) + tsallis(p) - tsallis(y) - (x * y).sum(-1)).sum()

  grad = lambda name: jax.jit(jax.grad(lambda x: LOSSES[name][0](x, y).sum()))(
    x
  )
  _close(grad("softmax"), jax.jit(jax.grad(softmax_ref))(x), atol=1e-6)
  _close(grad("entmax15"), jax.jit(jax.grad(entmax15_ref))(x), atol=1e-5)
  _close(_loss("entmax15", x, y).sum(), jax.jit(entmax15_ref)(x), rtol=1e-5)


def _grad_mask():
  mask = np.ones((4, 6), bool)
  mask[1, [1, 4]] = False
  mask[2, [0, 2, 5]] = False
  mask[3] = False  # an all-masked row is left out
  return mask


# Static alphas with their own code paths, and one array alpha per example.
GRAD_ALPHAS = [1.0, 1.5, 2.0, "array"]


@pytest.mark.parametrize("alpha", slow_except(GRAD_ALPHAS, 1.5))
def test_check_grads_float64(alpha):
  with jax.enable_x64(True):
    x = jnp.asarray(_inputs.scores((4, 6), 2.0, dtype=np.float64))
    mask = _grad_mask()
    ids = jnp.array([0, 2, 3, 1])
    a = jnp.array([1.0, 1.5, 2.0, 2.5]) if alpha == "array" else alpha
    w = jnp.asarray(_inputs.rng(13).normal(size=(4, 6)))
    # Class ids, and soft labels through a softmax (so that they stay on
    # the simplex), in one function to check both at once.
    f = jax.jit(
      lambda x, w: jnp.stack(
        [
          losses.entmax_loss(x, ids, a, where=mask),
          losses.entmax_loss(x, jax.nn.softmax(w, where=mask), a, where=mask),
        ]
      )
    )
    # Second order for the paths with their own forward code.
    check_grads(f, (x, w), order=1 if alpha == 2.0 else 2, modes=["rev"])


@pytest.mark.parametrize("alpha", slow_except(GRAD_ALPHAS, 2.0, "array"))
def test_soft_label_gradient_in_every_direction(alpha):
  # Off the simplex the loss is the formula as evaluated; its gradient in y
  # is exact in every direction (under jit: concrete labels would be checked).
  with jax.enable_x64(True):
    x = jnp.asarray(_inputs.scores((3, 5), 2.0, dtype=np.float64))
    y = jnp.asarray(_soft_labels((3, 5), dtype=np.float64))
    a = jnp.array([1.0, 1.3, 2.5]) if alpha == "array" else alpha
    f = jax.jit(lambda y: losses.entmax_loss(x, y, a))
    check_grads(f, (y,), order=1, modes=["rev"])
    # And it is grad Omega(y) - z up to a per-row constant.
    g = np.asarray(jax.jit(jax.grad(lambda y: f(y).sum()))(y))
    yy = np.asarray(y)
    a = np.broadcast_to(np.asarray(a, np.float64).reshape(-1, 1), yy.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
      omega = np.where(
        a == 1.0, np.log(yy) + 1, (a * yy ** (a - 1) - 1) / (a * (a - 1))
      )
    diff = g - (omega - np.asarray(x))
    _close(diff - diff.mean(-1, keepdims=True), 0.0, atol=1e-10)


def test_soft_label_gradient_at_zero_targets_is_finite():
  x = _inputs.scores((4, 4), 2.0)
  y = np.array([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]] * 2, np.float32)
  alpha = np.array([1.0, 1.0, 1.5, 2.5], np.float32)
  f = lambda x, y, a: losses.entmax_loss(x, y, a).sum()
  for a in (alpha, 1.0, 2.0):
    gx, gy = jax.jit(jax.grad(f, argnums=(0, 1)))(x, y, a)
    assert np.isfinite(np.asarray(gy)).all()
    a_rows = np.broadcast_to(np.asarray(a, np.float64), (4,))
    p = np.stack(
      [
        np_normaliser(z.astype(np.float64), float(ai))
        for z, ai in zip(x, a_rows)
      ]
    )
    _close(gx, p - y, atol=1e-5)


def test_integer_labels_get_float0_cotangent():
  x, y = _inputs.scores((3, 4), 2.0), np.array([0, 3, 1])
  _, gy = jax.jit(
    jax.grad(
      lambda x, y: losses.softmax_loss(x, y).sum(),
      argnums=(0, 1),
      allow_int=True,
    )
  )(x, y)
  assert gy.dtype == jax.dtypes.float0


def test_hessian_is_jacobian_of_the_normaliser():
  x = jnp.asarray(_inputs.scores((6,), 2.0))
  hess = jax.jit(jax.jacrev(jax.grad(lambda x: losses.softmax_loss(x, 2))))(x)
  p = jax.nn.softmax(x)
  _close(hess, jnp.diag(p) - jnp.outer(p, p), atol=1e-6)


# --------------------------------------------------------------------------
# Array alpha gradients.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("labels", ["index", "soft"])
def test_array_alpha_gradient_vs_finite_differences(labels):
  with jax.enable_x64(True):
    x = jnp.asarray(_inputs.scores((5, 6), 2.0, dtype=np.float64))
    y = (
      jnp.array([0, 3, 5, 1, 2])
      if labels == "index"
      else jnp.asarray(_soft_labels((5, 6), dtype=np.float64))
    )
    alpha = jnp.array([1.05, 1.3, 1.5, 2.0, 2.7])
    mask = np.ones((5, 6), bool)
    if labels == "index":
      mask[0, 1:3] = False  # masked classes
    f = jax.jit(lambda x, a: losses.entmax_loss(x, y, a, where=mask))
    check_grads(f, (x, alpha), order=1, modes=["rev"], eps=1e-5)


def test_array_alpha_gradient_at_one():
  with jax.enable_x64(True):
    x = jnp.asarray(_inputs.scores((4, 5), 2.0, dtype=np.float64))
    y = jnp.asarray(_soft_labels((4, 5), dtype=np.float64))
    ids = jnp.array([0, 2, 4, 1])
    f = jax.jit(lambda a, y: losses.entmax_loss(x, y, a))
    a1 = jnp.ones(4)
    # alpha = 1 is an indeterminate form; compare with the one-sided
    # difference quotient (alpha < 1 is not allowed).
    grad = np.asarray(jax.jit(jax.grad(lambda a: f(a, y).sum()))(a1))
    h = 1e-6
    fd = (np.asarray(f(a1 + h, y)) - np.asarray(f(a1, y))) / h
    _close(grad, fd, rtol=1e-4, atol=1e-6)
    # Closed form for one-hot targets: d H_alpha / d alpha at alpha = 1 is
    # sum p log p - 1/2 sum p log^2 p (and H_alpha(one-hot) = 0).
    grad = np.asarray(jax.jit(jax.grad(lambda a: f(a, ids).sum()))(a1))
    p = np.asarray(jax.nn.softmax(x))
    expected = (p * np.log(p)).sum(-1) - 0.5 * (p * np.log(p) ** 2).sum(-1)
    _close(grad, expected, rtol=1e-8)


# --------------------------------------------------------------------------
# Masks.
# --------------------------------------------------------------------------


def test_mask_equals_dropping_the_classes():
  x = _inputs.scores(SHAPE, 2.0)
  mask = np.array([1, 0, 1, 1, 0, 1, 1], bool)
  ids = _inputs.rng(18).choice(np.flatnonzero(mask), 12)
  ids_small = np.searchsorted(np.flatnonzero(mask), ids)
  f = lambda x, y, where: losses.entmax_loss(x, y, ROW_ALPHAS, where=where)
  _close(
    jax.jit(f)(x, ids, mask), jax.jit(f)(x[:, mask], ids_small, None), rtol=1e-5
  )
  grad = jax.jit(jax.grad(lambda x, y, w: f(x, y, w).sum()))
  g = np.asarray(grad(x, ids, mask))
  assert (g[:, ~mask] == 0).all()
  _close(g[:, mask], grad(x[:, mask], ids_small, None), atol=1e-6)


def test_all_masked_rows_are_left_out():
  x = _inputs.scores((3, 4), 2.0)
  mask = np.array([[1, 1, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1]], bool)
  ids = np.array([0, 2, 3])  # the label of the empty row is ignored
  for name in LOSS_NAMES:
    f = lambda x: LOSSES[name][0](x, ids, where=mask)
    out = np.asarray(_loss(name, x, ids, where=mask))
    assert out[1] == 0 and np.isfinite(out).all()
    g = np.asarray(jax.jit(jax.grad(lambda x: f(x).sum()))(x))
    assert (g[1] == 0).all() and (g[~mask] == 0).all()


def test_label_on_masked_class():
  x = _inputs.scores((2, 4), 2.0)
  mask = np.array([True, True, False, True])
  with pytest.raises(ValueError, match="`labels`"):
    losses.softmax_loss(x, np.array([0, 2]), where=mask)
  soft = np.full((2, 4), 0.25, np.float32)
  with pytest.raises(ValueError, match="`labels`"):
    losses.sparsemax_loss(x, soft, where=mask)
  # Traced labels cannot be checked: the loss is +inf.
  for name in LOSS_NAMES:
    out = np.asarray(_loss(name, x, np.array([0, 2]), where=mask))
    assert np.isfinite(out[0]) and out[1] == np.inf


# --------------------------------------------------------------------------
# Shapes, axes, dtypes, transformations.
# --------------------------------------------------------------------------


def test_axis_and_tuple_axis():
  x = _inputs.scores((7, 3, 4), 2.0)
  ids = _inputs.rng(16).integers(0, 7, (3, 4))
  out = _loss("entmax15", x, ids, axis=0)
  chex.assert_shape(out, (3, 4))
  _close(
    out,
    _loss(
      "entmax15", np.moveaxis(x, 0, -1).reshape(SHAPE), ids.reshape(12)
    ).reshape(3, 4),
    rtol=1e-6,
  )
  # Soft labels over two axes = one flattened class axis.
  t = _soft_labels((3, 12)).reshape(3, 3, 4)
  xs = _inputs.scores((3, 3, 4), 2.0)
  for name in ("softmax", "entmax15"):
    _close(
      _loss(name, xs, t, axis=(1, 2)),
      _loss(name, xs.reshape(3, 12), t.reshape(3, 12)),
      rtol=1e-5,
    )


@pytest.mark.parametrize(
  "name,dtype",
  [
    ("softmax", jnp.float16),
    ("sparsemax", jnp.bfloat16),
    ("entmax15", jnp.bfloat16),
  ],
)
def test_half_precision(name, dtype):
  x = jnp.asarray(_inputs.scores(SHAPE, 2.0)).astype(dtype)
  ids = _inputs.rng(1).integers(0, 7, 12)
  out = _loss(name, x, ids)
  chex.assert_type(out, dtype)
  _close(
    out.astype(np.float32),
    _loss(name, x.astype(jnp.float32), ids),
    rtol=1e-2,
    atol=1e-2,
  )
  g = jax.jit(
    jax.grad(lambda x: LOSSES[name][0](x, ids).sum().astype(jnp.float32))
  )(x)
  chex.assert_type(g, dtype)


def test_jit_vmap_pmap_agree(devices, n_devices):
  x = _inputs.scores((n_devices, 5), 2.0)
  ids = _inputs.rng(17).integers(0, 5, n_devices).astype(np.int32)
  soft = _soft_labels((n_devices, 5))
  alpha = np.linspace(1.0, 2.5, n_devices).astype(np.float32)
  f = lambda x, y, a: losses.entmax_loss(x, y, a)
  for y in (ids, soft):
    expected = np_rows(
      lambda z, t, a: np_fy_loss(z, t, a[0]),
      x,
      _one_hot(y, 5) if y is ids else y,
      np.broadcast_to(alpha[:, None], x.shape),
    )
    _close(jax.jit(f)(x, y, alpha), expected, rtol=2e-5)
    _close(jax.jit(jax.vmap(f))(x, y, alpha), expected, rtol=2e-5)
    if y is ids:
      _close(jax.pmap(f, devices=devices)(x, y, alpha), expected, rtol=2e-5)
  grad = jax.pmap(
    jax.grad(lambda x, y: losses.sparsemax_loss(x, y)), devices=devices
  )(x, ids)
  _close(grad, np_rows(np_sparsemax, x) - _one_hot(ids, 5), atol=1e-6)


def test_traced_out_of_range_ids_give_nan():
  x = _inputs.scores((3, 4), 2.0)
  out = np.asarray(_loss("softmax", x, np.array([0, 4, -1])))
  assert np.isfinite(out[0]) and np.isnan(out[1:]).all()


# --------------------------------------------------------------------------
# Argument errors (eager: concrete labels are checked).
# --------------------------------------------------------------------------

_X = np.zeros((2, 3), np.float32)
_ERRORS = [
  ("ids_too_big", _X, np.array([0, 3]), {}, ValueError, "labels"),
  ("ids_negative", _X, np.array([-1, 0]), {}, ValueError, "labels"),
  ("ids_shape", _X, np.array([0, 1, 2]), {}, ValueError, "labels"),
  ("ids_keep_axis", _X, np.array([[0], [1]]), {}, ValueError, "labels"),
  ("soft_shape", _X, np.full((2, 4), 0.25), {}, ValueError, "labels"),
  ("soft_sum", _X, np.full((2, 3), 0.5), {}, ValueError, "labels"),
  (
    "soft_negative",
    _X,
    np.array([[1.5, -0.5, 0.0]] * 2),
    {},
    ValueError,
    "labels",
  ),
  (
    "soft_nan",
    _X,
    np.array([[np.nan, 0.5, 0.5]] * 2),
    {},
    ValueError,
    "labels",
  ),
  ("bool_labels", _X, np.eye(2, 3, dtype=bool), {}, TypeError, "labels"),
  ("ids_tuple_axis", _X, np.array([0, 1]), dict(axis=(1,)), ValueError, "axis"),
  ("axis_range", _X, np.array([0, 1]), dict(axis=2), ValueError, "axis"),
  (
    "bool_logits",
    np.ones((2, 3), bool),
    np.array([0, 1]),
    {},
    TypeError,
    "logits",
  ),
  (
    "where_shape",
    _X,
    np.array([0, 1]),
    dict(where=np.ones(2, bool)),
    ValueError,
    "where",
  ),
]


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize(
  "x,labels,kwargs,exc,arg", [pytest.param(*c[1:], id=c[0]) for c in _ERRORS]
)
def test_bad_arguments_raise(name, x, labels, kwargs, exc, arg):
  with pytest.raises(exc, match=f"`{arg}`"):
    LOSSES[name][0](x, labels, **kwargs)


@pytest.mark.parametrize(
  "alpha,exc",
  [
    (0.5, ValueError),
    (np.array([1.5, 0.9]), ValueError),
    (np.array([[1.5], [1.5]]), ValueError),  # class axis kept: wrong rule
    (np.array([1.5, 1.5, 1.5]), ValueError),
    (True, TypeError),
    (float("nan"), ValueError),
    (float("inf"), ValueError),
  ],
)
def test_bad_alpha_raises(alpha, exc):
  with pytest.raises(exc, match="`alpha`"):
    losses.entmax_loss(_X, np.array([0, 1]), alpha)


@pytest.mark.parametrize(
  "loss", [softjax.losses.softmax_loss, softjax.losses.sparsemax_loss]
)
def test_out_of_range_ids_in_left_out_rows_never_poison_a_sum(loss):
  """Issue 25: the labels error's advice is true. A row masked whole with
  ``where`` (or a token given ``ignore_index``) may hold any id: its loss is
  exactly 0, eager or traced, so a masked sum stays finite; an id out of
  range in a live row is still an error (concrete) or NaN (traced)."""
  z = jnp.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
  ids = jnp.array([0, -100])
  rows = jnp.array([[True] * 3, [False] * 3])
  for jit in (lambda f: f, jax.jit):
    out = jit(lambda z, y: loss(z, y, where=rows))(z, ids)
    np.testing.assert_array_equal(out[1], 0.0)
    assert np.isfinite(float(jnp.sum(out)))
    out = jit(lambda z, y: loss(z, y, ignore_index=-100))(z, ids)
    np.testing.assert_array_equal(out[1], 0.0)
  with pytest.raises(ValueError, match="ignore_index"):
    loss(z, ids)
  assert np.isnan(jax.jit(loss)(z, ids)[1])
