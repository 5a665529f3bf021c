"""The keyword options of the in-memory losses, against independent references.

``ignore_index``, ``reduction``, ``label_smoothing``, ``z_loss`` and
``logit_soft_cap`` of ``softjax.losses.{softmax,sparsemax,entmax15,entmax,
normmax}_loss``. References: optax's cross-entropies (with the smoothed
target built here, minus its entropy), the same softjax loss called without
the option on inputs built by hand in NumPy (the smoothed soft target, the
capped logits), and masking and reductions written out in NumPy; values and
gradients (logits, soft labels, an array α).
"""

from __future__ import annotations

import _devices
from _tiers import slow_except
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import pytest

from softjax import losses

ALPHA = np.array([1.2, 1.5, 2.0, 1.0, 2.6, 1.7], np.float32)  # entmax_loss
LOSSES = {
  "softmax": losses.softmax_loss,
  "sparsemax": losses.sparsemax_loss,
  "entmax15": losses.entmax15_loss,
  "entmax": lambda x, y, **kw: losses.entmax_loss(x, y, ALPHA[: len(x)], **kw),
  "normmax": losses.normmax_loss,
}
IGNORE = -100
N, C = 6, 5


def _logits(seed=0, shape=(N, C)):
  return (2.0 * np.random.default_rng(seed).normal(size=shape)).astype(
    np.float32
  )


def _ids():
  return np.array([1, IGNORE, 3, 0, IGNORE, 4])


def _mask():
  """Class mask: row 2 loses classes 0 and 1, row 5 every class."""
  mask = np.ones((N, C), bool)
  mask[2, :2] = False
  mask[5] = False
  return mask


def _smoothed(y, mask, eps):
  """``(1 - ε) y + ε / V`` on the ``V`` unmasked classes of each row."""
  n_live = np.maximum(mask.sum(-1, keepdims=True), 1)
  return ((1 - eps) * y + np.where(mask, eps / n_live, 0.0)).astype(np.float32)


def _one_hot(ids, keep):
  return np.eye(C, dtype=np.float32)[np.where(keep, ids, 0)]


def _close(got, want, rtol=1e-5, atol=1e-6):
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol, atol)


def test_softmax_options_match_optax():
  """ignore_index + label_smoothing + z_loss + class mask, every reduction."""
  x, ids, mask = _logits(), _ids(), _mask()
  mask[5] = True  # every row live: optax gives NaN for an all-masked row
  keep = ids != IGNORE
  eps, lam = 0.2, 0.05
  q = _smoothed(_one_hot(ids, keep), mask, eps)
  entropy = -np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0), -1)

  def reference(x, reduction):
    ce = optax.softmax_cross_entropy(x, q, where=mask) - entropy
    lse = jax.nn.logsumexp(x, axis=-1, where=mask)
    per = jnp.where(keep, ce + lam * lse**2, 0.0)
    if reduction == "none":
      return per
    return per.sum() / (keep.sum() if reduction == "mean" else 1)

  for reduction in ("none", "sum", "mean"):

    def f(x, reduction=reduction):
      return losses.softmax_loss(
        x,
        ids,
        where=mask,
        ignore_index=IGNORE,
        reduction=reduction,
        label_smoothing=eps,
        z_loss=lam,
      )

    _close(f(x), reference(x, reduction), rtol=2e-5)
    w = np.linspace(-1, 2, N) if reduction == "none" else 1.0
    grad = jax.grad(lambda x, f=f: jnp.sum(f(x) * w))(x)
    want = jax.grad(lambda x, r=reduction: jnp.sum(reference(x, r) * w))(x)
    _close(grad, want, atol=2e-6)
    assert not np.asarray(grad)[~keep].any()  # ignored: zero gradient


def test_integer_labels_match_optax_integer_cross_entropy():
  x, ids = _logits(1), _ids()
  keep = ids != IGNORE
  per = optax.softmax_cross_entropy_with_integer_labels(
    x, np.where(keep, ids, 0)
  )
  per = np.where(keep, np.asarray(per), 0.0)
  f = losses.softmax_loss
  _close(f(x, ids, ignore_index=IGNORE), per)
  _close(f(x, ids, ignore_index=IGNORE, reduction="sum"), per.sum())
  _close(
    f(x, ids, ignore_index=IGNORE, reduction="mean"), per.sum() / keep.sum()
  )
  # ignore_index may be a class id: those examples are left out.
  ids = np.where(keep, ids, 2)
  per = optax.softmax_cross_entropy_with_integer_labels(x, ids)
  _close(f(x, ids, ignore_index=0), np.where(ids != 0, np.asarray(per), 0.0))


@pytest.mark.parametrize("name", slow_except(LOSSES, "softmax"))
def test_smoothing_equals_the_hand_built_soft_target(name):
  """Integer ids + ε (+ class mask, ignore_index) is the loss against the
  smoothed one-hot: values and logit gradients, every reduction."""
  f = LOSSES[name]
  x, ids, mask = _logits(2), _ids(), _mask()
  keep = ids != IGNORE
  live = mask.any(-1)
  eps = 0.3
  q = _smoothed(_one_hot(ids, keep), mask, eps)
  plain = jax.jit(lambda x: f(x, q, where=mask))
  opts = dict(where=mask, ignore_index=IGNORE, label_smoothing=eps)
  per = np.where(keep, np.asarray(plain(x)), 0.0)
  weights = {
    "none": np.linspace(-1, 2, N),
    "sum": np.ones(N),
    "mean": np.ones(N) / (keep & live).sum(),
  }
  for reduction, w in weights.items():
    got = jax.jit(lambda x, r=reduction: f(x, ids, reduction=r, **opts))
    want = per if reduction == "none" else (per * w).sum()
    _close(got(x), want, rtol=2e-5)
    if reduction == "none":
      grad = jax.grad(lambda x: jnp.sum(got(x) * w))(x)
    else:
      grad = jax.grad(got)(x)
    ref = jax.grad(lambda x: jnp.sum(plain(x) * np.where(keep, w, 0)))(x)
    _close(grad, ref, atol=2e-6)


@pytest.mark.parametrize("name", slow_except(LOSSES, "entmax15"))
def test_all_ignored_mean_is_zero_with_zero_gradient(name):
  f = LOSSES[name]
  x = _logits(3)
  ids = np.full(N, IGNORE)
  kw = dict(ignore_index=IGNORE, reduction="mean", label_smoothing=0.1)
  if name == "softmax":
    kw["z_loss"] = 0.1
  loss = f(x, ids, **kw)
  assert loss.shape == () and float(loss) == 0.0
  grad = jax.grad(lambda x: f(x, ids, **kw))(x)
  assert np.all(np.asarray(grad) == 0.0)
  # Rows whose classes are all masked are left out of the mean as well.
  mask = np.zeros((N, C), bool)
  assert float(f(x, _ids(), where=mask, **kw)) == 0.0


BAD = [
  ("reduction", dict(reduction="avg"), ValueError),
  ("reduction", dict(reduction=None), ValueError),
  ("ignore_index", dict(ignore_index=1.0), TypeError),
  ("ignore_index", dict(ignore_index=True), TypeError),
  ("ignore_index", dict(ignore_index=jnp.asarray(-100)), TypeError),
  ("label_smoothing", dict(label_smoothing=1.0), ValueError),
  ("label_smoothing", dict(label_smoothing=-0.1), ValueError),
  ("label_smoothing", dict(label_smoothing=float("nan")), ValueError),
  ("label_smoothing", dict(label_smoothing="0.1"), TypeError),
  ("label_smoothing", dict(label_smoothing=jnp.asarray(0.1)), TypeError),
  ("z_loss", dict(z_loss=-1e-4), ValueError),
  ("z_loss", dict(z_loss=True), TypeError),
  ("logit_soft_cap", dict(logit_soft_cap=0.0), ValueError),
  ("logit_soft_cap", dict(logit_soft_cap=-3.0), ValueError),
  ("logit_soft_cap", dict(logit_soft_cap=float("inf")), ValueError),
  ("logit_soft_cap", dict(logit_soft_cap="30"), TypeError),
]


@pytest.mark.parametrize(
  "case",
  slow_except(range(len(BAD)), 0, 2, 5),
)
def test_bad_options_raise(case):
  arg, kw, exc = BAD[case]
  x, ids = _logits(), _ids() % C
  with pytest.raises(exc, match=f"`{arg}`"):
    losses.softmax_loss(x, ids, **kw)
  if arg != "z_loss":  # z_loss is softmax_loss's only
    with pytest.raises(exc, match=f"`{arg}`"):
      losses.entmax_loss(x, ids, 1.5, **kw)


def test_options_errors_on_labels():
  x = _logits()
  soft = np.full((N, C), 1.0 / C, np.float32)
  for f in (losses.softmax_loss, losses.sparsemax_loss):
    with pytest.raises(ValueError, match="`ignore_index`"):
      f(x, soft, ignore_index=IGNORE)
  # Ids that are neither class ids nor ignore_index are still errors.
  with pytest.raises(ValueError, match=r"\[0, 5\)"):
    losses.softmax_loss(x, np.array([0, 1, 2, 3, 4, -1]), ignore_index=IGNORE)
  # An ignored example whose row masks class 0 is not checked against it.
  mask = np.ones((N, C), bool)
  mask[1, :3] = False
  out = losses.sparsemax_loss(x, _ids(), where=mask, ignore_index=IGNORE)
  assert float(out[1]) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("name", LOSSES)
def test_smoothing_of_soft_targets(name):
  """ε applies to a soft target too, and its gradient is (1 - ε) times
  that of the plain loss at the smoothed target."""
  f = LOSSES[name]
  x, mask = _logits(4), _mask()
  e = np.exp(np.random.default_rng(5).normal(size=(N, C))) * mask
  y = (e / np.maximum(e.sum(-1, keepdims=True), 1e-30)).astype(np.float32)
  eps = 0.15
  q = _smoothed(y, mask, eps)
  w = np.linspace(-1, 2, N)
  got = jax.jit(lambda x, y: f(x, y, where=mask, label_smoothing=eps))
  plain = jax.jit(lambda x, y: f(x, y, where=mask))
  _close(got(x, y), plain(x, q), rtol=2e-5)
  gx, gy = jax.grad(lambda x, y: jnp.sum(got(x, y) * w), (0, 1))(x, y)
  rx, ry = jax.grad(lambda x, y: jnp.sum(plain(x, y) * w), (0, 1))(x, q)
  _close(gx, rx, atol=2e-6)
  _close(gy, (1 - eps) * np.asarray(ry), atol=2e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", LOSSES)
def test_soft_cap_is_capping_the_logits_first(name):
  f = LOSSES[name]
  c = 1.5
  x, ids, mask = _logits(6), _ids() % C, _mask()
  x[3, 2] = -np.inf  # a -inf logit stays masked (its row's label is 0)
  mask[5] = True
  capped = np.where(np.isinf(x), x, c * np.tanh(x / c)).astype(np.float32)
  w = np.linspace(-1, 2, N)
  got = jax.jit(lambda x: f(x, ids, where=mask, logit_soft_cap=c))
  plain = jax.jit(lambda x: f(x, ids, where=mask))
  _close(got(x), plain(capped), rtol=2e-5)
  assert np.isfinite(np.asarray(got(x))).all()
  grad = jax.grad(lambda x: jnp.sum(got(x) * w))(x)
  ref = jax.grad(lambda x: jnp.sum(plain(x) * w))(capped)
  slope = np.where(np.isinf(x), 0.0, 1 - np.tanh(x / c) ** 2)
  _close(grad, np.asarray(ref) * slope, atol=2e-6)


@pytest.mark.slow
def test_entmax_array_alpha_gradient_with_options():
  """Logit and α gradients of ``entmax_loss`` with every option (but
  z_loss) against the plain loss on the hand-built target, cap and mean."""
  x, ids, mask = _logits(7), _ids(), _mask()
  keep = ids != IGNORE
  eps, c = 0.1, 2.5
  alpha = jnp.asarray(ALPHA)
  q = _smoothed(_one_hot(ids, keep), mask, eps)
  capped = c * np.tanh(x / c)
  count = (keep & mask.any(-1)).sum()

  def got(x, a):
    return losses.entmax_loss(
      x,
      ids,
      a,
      where=mask,
      ignore_index=IGNORE,
      reduction="mean",
      label_smoothing=eps,
      logit_soft_cap=c,
    )

  def reference(z, a):
    per = losses.entmax_loss(z, q, a, where=mask)
    return jnp.sum(jnp.where(keep, per, 0.0)) / count

  _close(jax.jit(got)(x, alpha), reference(capped, alpha), rtol=2e-5)
  gx, ga = jax.jit(jax.grad(got, (0, 1)))(x, alpha)
  rx, ra = jax.grad(reference, (0, 1))(capped, alpha)
  _close(gx, np.asarray(rx) * (1 - np.tanh(x / c) ** 2), atol=2e-6)
  _close(ga, ra, atol=2e-6)
  assert not np.asarray(ga)[~keep].any()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["softmax", "entmax15"])
def test_traced_labels_under_jit(name):
  f = LOSSES[name]
  x = _logits(8)
  g = jax.jit(
    lambda x, y: f(
      x, y, ignore_index=IGNORE, label_smoothing=0.1, reduction="none"
    )
  )
  out = np.asarray(g(x, _ids()))
  assert np.isfinite(out).all() and (out[_ids() == IGNORE] == 0).all()
  # A traced id out of range that is not ignored gives NaN for its example.
  bad = np.array([1, IGNORE, 7, 0, IGNORE, -1])
  out = np.asarray(g(x, bad))
  assert np.isnan(out[[2, 5]]).all() and np.isfinite(out[[0, 1, 3, 4]]).all()
  mean = jax.jit(lambda x, y: f(x, y, ignore_index=IGNORE, reduction="mean"))
  assert float(mean(x, np.full(N, IGNORE))) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["softmax", "sparsemax"])
def test_half_precision(name):
  f = LOSSES[name]
  x, ids = _logits(9), _ids()
  kw = dict(ignore_index=IGNORE, reduction="mean", label_smoothing=0.1)
  out = f(x.astype(jnp.bfloat16), ids, **kw)
  assert out.dtype == jnp.bfloat16 and out.shape == ()
  want = f(x.astype(jnp.bfloat16).astype(np.float32), ids, **kw)
  _close(out.astype(np.float32), want, rtol=1e-2)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["softmax", "entmax15"])
def test_shard_map_options_match_unsharded(name):
  """Smoothing over the whole row and the z-loss's lse with the class axis
  split across devices."""
  devices = _devices.several()
  if len(devices) < 8:
    pytest.skip("needs 8 devices")
  mesh = jax.make_mesh((2, 4), ("data", "model"), devices=devices[:8])
  rows, d = 4, 16
  x = _logits(10, (rows, d))
  ids = np.array([3, IGNORE, 9, 15], np.int32)
  mask = np.ones((rows, d), bool)
  mask[0, 10:] = False  # V differs per row
  kw = dict(ignore_index=IGNORE, label_smoothing=0.2, reduction="none")
  if name == "softmax":
    kw["z_loss"] = 0.05
  f = LOSSES[name]
  specs = (P("data", "model"), P("data"), P("data", "model"))
  sharded = jax.jit(
    jax.shard_map(
      lambda x, y, m: f(x, y, where=m, axis_name="model", **kw),
      mesh=mesh,
      in_specs=specs,
      out_specs=P("data"),
    )
  )
  args = [
    jax.device_put(v, NamedSharding(mesh, s))
    for v, s in zip((x, ids, mask), specs)
  ]
  _close(sharded(*args), f(x, ids, where=mask, **kw), rtol=2e-5)
  w = jnp.asarray([1.0, -0.5, 2.0, 0.3])
  got = jax.jit(jax.grad(lambda *a: jnp.sum(sharded(*a) * w)))(*args)
  want = jax.grad(lambda x: jnp.sum(f(x, ids, where=mask, **kw) * w))(x)
  _close(got, want, atol=2e-6)
