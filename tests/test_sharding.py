"""A normalised axis split across devices: shard_map, pmap and sharded jit.

The reference is always the same function on the whole, unsharded array.
Runs on the 8 simulated CPU devices of conftest.py, or on 8 accelerators
when the machine has them (see tests/_devices.py). The unit tier
(``-m "not slow"``) runs each test for a few of the functions.
"""

from __future__ import annotations

import functools

import _devices
from _tiers import slow_except
import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

import softjax

DEVICES = _devices.several(8)
pytestmark = pytest.mark.skipif(
  len(DEVICES) < 8, reason="needs 8 devices (see tests/conftest.py)"
)

ROWS, D = 4, 48  # 2 x 4 mesh: 2 rows and 12 classes per device

# name -> f(x, alpha, temperature, **kw); alpha is used by the entmax rows only.
NORMALISERS = {
  "softmax": lambda x, a, t, **kw: softjax.softmax(x, temperature=t, **kw),
  "log_softmax": lambda x, a, t, **kw: softjax.log_softmax(
    x, temperature=t, **kw
  ),
  "sparsemax": lambda x, a, t, **kw: softjax.sparsemax(x, temperature=t, **kw),
  "entmax15": lambda x, a, t, **kw: softjax.entmax15(x, temperature=t, **kw),
  "entmax_per_row_alpha": lambda x, a, t, **kw: softjax.entmax(
    x, a, temperature=t, **kw
  ),
  "entmax_alpha_1.3": lambda x, a, t, **kw: softjax.entmax(
    x, 1.3, temperature=t, **kw
  ),
  "entmax_alpha_3": lambda x, a, t, **kw: softjax.entmax(
    x, 3.0, temperature=t, **kw
  ),
  "normmax": lambda x, a, t, **kw: softjax.normmax(x, temperature=t, **kw),
  "normmax_per_row_alpha": lambda x, a, t, **kw: softjax.normmax(
    x, a, temperature=t, **kw
  ),
  "budget_sparsemax_k8": lambda x, a, t, **kw: softjax.budget_sparsemax(
    x, 8.0, temperature=t, **kw
  ),
  # The α values (1.2 to 2.6) double as one budget k per row.
  "budget_sparsemax_per_row_k": lambda x, a, t, **kw: softjax.budget_sparsemax(
    x, a, temperature=t, **kw
  ),
}


def _inputs(dtype=jnp.float32):
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (ROWS, D), dtype) * 2
  w = jax.random.normal(kw, (ROWS, D), dtype)
  alpha = jnp.asarray([[1.2], [1.5], [2.0], [2.6]], dtype)
  temperature = jnp.asarray([[0.7], [1.0], [1.5], [2.0]], dtype)
  return x, w, alpha, temperature


def _mesh(axis_types=AxisType.Explicit):
  return jax.make_mesh(
    (2, 4), ("data", "model"), axis_types=(axis_types,) * 2, devices=DEVICES[:8]
  )


def _put(mesh, value, spec):
  return jax.device_put(value, NamedSharding(mesh, spec))


def _objective(f, x, a, t, w, **kw):
  out = f(x, a, t, **kw)
  return out * w


@pytest.mark.parametrize(
  "replicated_params",
  [False, True],
  ids=["per_row_params", "replicated_params"],
)
@pytest.mark.parametrize(
  "name",
  slow_except(NORMALISERS, "budget_sparsemax_per_row_k"),
)
def test_shard_map_class_axis_matches_unsharded(name, replicated_params):
  """Values and gradients (x, α, T) with the class axis on "model"."""
  f = NORMALISERS[name]
  x, w, alpha, temp = _inputs()
  if replicated_params:
    # One α and one T shared by every row: their cotangents must be summed
    # over both mesh axes (the classes on "model", the rows on "data").
    alpha, temp = alpha[2:3], temp[1:2]
    param_spec = P()
  else:
    param_spec = P("data", None)
  mesh = _mesh()
  specs = (P("data", "model"), param_spec, param_spec, P("data", "model"))
  local = jax.shard_map(
    functools.partial(_objective, f, axis_name="model"),
    mesh=mesh,
    in_specs=specs,
    out_specs=P("data", "model"),
  )
  args = [_put(mesh, v, s) for v, s in zip((x, alpha, temp, w), specs)]

  def sharded(x, a, t):
    return local(x, a, t, args[3]).sum()

  def reference(x, a, t):
    return _objective(f, x, a, t, w).sum()

  want = reference(x, alpha, temp)
  got = jax.jit(sharded)(*args[:3])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  out = jax.jit(
    jax.shard_map(
      lambda x, a, t: f(x, a, t, axis_name="model"),
      mesh=mesh,
      in_specs=specs[:3],
      out_specs=P("data", "model"),
    )
  )(*args[:3])
  np.testing.assert_allclose(out, f(x, alpha, temp), rtol=1e-5, atol=1e-6)
  want_g = jax.grad(reference, argnums=(0, 1, 2))(x, alpha, temp)
  got_g = jax.jit(jax.grad(sharded, argnums=(0, 1, 2)))(*args[:3])
  for which, g, r in zip(("x", "alpha", "temperature"), got_g, want_g):
    assert g.shape == r.shape, which
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5, err_msg=which)


@pytest.mark.parametrize(
  "split",
  slow_except([True, False], True),
  ids=["axis_name", "whole_rows_per_device"],
)
@pytest.mark.parametrize(
  "name",
  slow_except(
    [
      "sparsemax",
      "entmax15",
      "entmax_alpha_1.3",
      "normmax",
      "budget_sparsemax_k8",
    ],
    "normmax",
  ),
)
def test_shard_map_long_rows(name, split):
  """Rows long enough for the solver's warm start (>= 256 per shard).

  With ``split`` the class axis is on "model"; without, each device holds
  whole rows (the batch on "data"), so the solver's loop state varies over
  a mesh axis that the row reductions never touch.
  """
  f = NORMALISERS[name]
  x = jax.random.normal(jax.random.key(3), (ROWS, 4 * 512)) * 3
  w = jax.random.normal(jax.random.key(4), x.shape)
  mesh = _mesh()
  spec = P("data", "model") if split else P("data", None)
  kw = {"axis_name": "model"} if split else {}
  local = jax.shard_map(
    lambda x, w: _objective(f, x, None, 1.0, w, **kw),
    mesh=mesh,
    in_specs=(spec, spec),
    out_specs=spec,
  )
  xs, ws = _put(mesh, x, spec), _put(mesh, w, spec)
  got = jax.jit(local)(xs, ws)
  np.testing.assert_allclose(
    got, _objective(f, x, None, 1.0, w), rtol=1e-5, atol=1e-6
  )
  got_g = jax.jit(jax.grad(lambda x: local(x, ws).sum()))(xs)
  want_g = jax.grad(lambda x: _objective(f, x, None, 1.0, w).sum())(x)
  np.testing.assert_allclose(got_g, want_g, rtol=1e-4, atol=1e-5)


def test_shard_map_without_axis_name_is_local():
  """Control: without axis_name each shard is normalised on its own."""
  x, *_ = _inputs()
  mesh = _mesh()
  xs = _put(mesh, x, P("data", "model"))
  out = jax.jit(
    jax.shard_map(
      softjax.softmax,
      mesh=mesh,
      in_specs=P("data", "model"),
      out_specs=P("data", "model"),
    )
  )(xs)
  # Each of the 4 shards sums to 1, so a whole row sums to 4.
  np.testing.assert_allclose(np.asarray(out).sum(-1), 4.0, rtol=1e-5)


def test_shard_map_masks_and_empty_shards():
  """A shard whose entries are all masked still gets the global answer."""
  x, *_ = _inputs()
  where = np.ones((ROWS, D), bool)
  where[:, : D // 4] = False  # every entry of the first shard
  where[1] = False  # a row masked everywhere: zeros
  mesh = _mesh()
  spec = P("data", "model")
  for f in (
    softjax.softmax,
    softjax.sparsemax,
    softjax.entmax15,
    softjax.normmax,
    lambda x, **kw: softjax.budget_sparsemax(x, 2.5, **kw),
  ):
    got = jax.jit(
      jax.shard_map(
        lambda x, m, f=f: f(x, where=m, axis_name="model"),
        mesh=mesh,
        in_specs=(spec, spec),
        out_specs=spec,
      )
    )(_put(mesh, x, spec), _put(mesh, jnp.asarray(where), spec))
    want = f(x, where=where)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert (np.asarray(got)[1] == 0).all()


def test_pmap_class_axis_split_over_mapped_axis():
  """pmap over 4 devices, each holding a quarter of every row."""
  x, w, alpha, temp = _inputs()
  n_dev = 4

  def split(v):  # (rows, D) -> (devices, rows, D / devices)
    return jnp.moveaxis(v.reshape(ROWS, n_dev, D // n_dev), 1, 0)

  for name in ("softmax", "sparsemax", "entmax_per_row_alpha"):
    f = NORMALISERS[name]

    def sharded(x, a, t, f=f):
      per_device = jax.pmap(
        functools.partial(_objective, f, axis_name="i"),
        axis_name="i",
        in_axes=(0, None, None, 0),
        devices=DEVICES[:n_dev],
      )(split(x), a, t, split(w))
      return per_device.sum()

    def reference(x, a, t, f=f):
      return _objective(f, x, a, t, w).sum()

    np.testing.assert_allclose(
      sharded(x, alpha, temp), reference(x, alpha, temp), rtol=1e-5, atol=1e-5
    )
    got = jax.grad(sharded, argnums=(0, 1, 2))(x, alpha, temp)
    want = jax.grad(reference, argnums=(0, 1, 2))(x, alpha, temp)
    for g, r in zip(got, want):
      np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize(
  "axis_types", [AxisType.Explicit, AxisType.Auto], ids=["explicit", "auto"]
)
@pytest.mark.parametrize(
  "name",
  slow_except(
    [
      "softmax",
      "log_softmax",
      "sparsemax",
      "entmax15",
      "entmax_alpha_1.3",
      "normmax",
      "budget_sparsemax_k8",
    ],
    "entmax15",
  ),
)
def test_sharded_jit_keeps_sharding_and_never_gathers(name, axis_types):
  f = NORMALISERS[name]
  x, *_ = _inputs()
  mesh = _mesh(axis_types)
  sharding = NamedSharding(mesh, P("data", "model"))
  xs = jax.device_put(x, sharding)
  fwd = jax.jit(lambda x: f(x, None, 1.0), out_shardings=None)
  out = fwd(xs)
  assert out.sharding.is_equivalent_to(sharding, x.ndim), out.sharding
  np.testing.assert_allclose(out, f(x, None, 1.0), rtol=1e-5, atol=1e-6)
  grad = jax.jit(jax.grad(lambda x: (f(x, None, 1.0) * x).sum()))
  for text in (
    fwd.lower(xs).compile().as_text(),
    grad.lower(xs).compile().as_text(),
  ):
    assert "all-gather" not in text and "all-to-all" not in text
    assert "all-reduce" in text  # the row reductions are collectives
  assert grad(xs).sharding.is_equivalent_to(sharding, x.ndim)


def test_unbound_axis_name_is_a_clear_error():
  with pytest.raises(ValueError, match="axis_name"):
    softjax.softmax(jnp.ones(4), axis_name="model")
  with pytest.raises(ValueError, match="axis_name"):
    softjax.entmax(jnp.ones(4), 1.5, axis_name="model")


# --------------------------------------------------------------------------
# Losses and Gumbel-Softmax with the class axis split.
# --------------------------------------------------------------------------

LOSSES = {
  "softmax_loss": lambda x, y, a, **kw: softjax.losses.softmax_loss(x, y, **kw),
  "sparsemax_loss": lambda x, y, a, **kw: softjax.losses.sparsemax_loss(
    x, y, **kw
  ),
  "entmax15_loss": lambda x, y, a, **kw: softjax.losses.entmax15_loss(
    x, y, **kw
  ),
  "entmax_loss_per_example_alpha": lambda x, y, a, **kw: (
    softjax.losses.entmax_loss(x, y, a[:, 0], **kw)
  ),
  "normmax_loss_per_example_alpha": lambda x, y, a, **kw: (
    softjax.losses.normmax_loss(x, y, a[:, 0], **kw)
  ),
}


@pytest.mark.parametrize("labels", ["ids", "distributions"])
@pytest.mark.parametrize(
  "name",
  slow_except(LOSSES, "entmax_loss_per_example_alpha"),
)
def test_shard_map_losses_match_unsharded(name, labels):
  f = LOSSES[name]
  x, _, alpha, _ = _inputs()
  if labels == "ids":
    # Global class ids, landing on different shards.
    y = jnp.asarray([3, 17, 30, 47], jnp.int32)
    y_spec = P("data")
  else:
    y = jax.nn.softmax(jax.random.normal(jax.random.key(5), (ROWS, D)) * 3)
    y = jnp.where(y > 0.02, y, 0.0)
    y = y / y.sum(-1, keepdims=True)
    y_spec = P("data", "model")
  mesh = _mesh()
  specs = (P("data", "model"), y_spec, P("data", None))
  sharded = jax.shard_map(
    lambda x, y, a: f(x, y, a, axis_name="model"),
    mesh=mesh,
    in_specs=specs,
    out_specs=P("data"),
  )
  args = [_put(mesh, v, s) for v, s in zip((x, y, alpha), specs)]
  np.testing.assert_allclose(
    jax.jit(sharded)(*args), f(x, y, alpha), rtol=1e-5, atol=1e-6
  )
  weights = jnp.asarray([1.0, -0.5, 2.0, 0.3])
  argnums = (0, 2) if "alpha" in name else (0,)
  got = jax.jit(
    jax.grad(lambda *a: (sharded(*a) * weights).sum(), argnums=argnums)
  )(*args)
  want = jax.grad(lambda *a: (f(*a) * weights).sum(), argnums=argnums)(
    x, y, alpha
  )
  for g, r in zip(got, want):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("hard", [False, True])
def test_shard_map_gumbel_softmax_is_a_global_sample(hard):
  x, *_ = _inputs()
  mesh = _mesh()
  spec = P("data", "model")
  key = jax.random.key(3)
  sample = jax.jit(
    jax.shard_map(
      lambda x: softjax.gumbel_softmax(
        key, x, 0.5, hard=hard, axis_name="model"
      ),
      mesh=mesh,
      in_specs=spec,
      out_specs=spec,
    )
  )(_put(mesh, x, spec))
  s = np.asarray(sample)
  np.testing.assert_allclose(s.sum(-1), 1.0, rtol=1e-5)  # global rows
  assert (s >= 0).all()
  if hard:
    assert ((s == 0) | (s == 1)).all() and (s.sum(-1) == 1).all()
  # The shards drew different noise (the key is folded with the shard index).
  quarters = s.reshape(ROWS, 4, D // 4)
  assert not np.allclose(quarters[:, 0], quarters[:, 1])


def test_shard_map_gumbel_hard_sample_follows_the_logits():
  """Empirical frequencies of the sharded hard sample match softmax(logits)."""
  probs = np.asarray([0.05, 0.15, 0.3, 0.5])
  x = jnp.tile(jnp.log(jnp.asarray(probs, jnp.float32))[None], (ROWS, 1))
  mesh = _mesh()  # 4 classes: one per "model" shard
  keys = jax.random.split(jax.random.key(0), 2000)

  def draw_many(x):
    return jax.vmap(
      lambda k: softjax.gumbel_softmax(k, x, hard=True, axis_name="model")
    )(keys)

  samples = jax.jit(
    jax.shard_map(
      draw_many,
      mesh=mesh,
      in_specs=P("data", "model"),
      out_specs=P(None, "data", "model"),
    )
  )(_put(mesh, x, P("data", "model")))
  s = np.asarray(samples)
  assert (s.sum(-1) == 1).all()
  np.testing.assert_allclose(s.mean(axis=(0, 1)), probs, atol=0.03)
