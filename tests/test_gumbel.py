"""gumbel_softmax against the Gumbel-max trick, jax.nn and jax.random.

References are independent of softjax: ``jax.random.gumbel`` with
``jax.nn.softmax`` for the relaxed sample, a chi-square goodness-of-fit test
of the hard samples against ``softmax(logits)``, and closed-form gradients.
All randomness comes from fixed keys, so every test is deterministic.
"""

from __future__ import annotations

import _inputs
from _tiers import slow_except
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softjax

# Chi-square critical value at p = 0.001 for 4 degrees of freedom (5 classes).
CHI2_CRIT_DF4 = 18.467
N_SAMPLES = 20_000
LOGITS5 = np.log(np.array([0.4, 0.25, 0.2, 0.1, 0.05], np.float32))


def _chi_square(counts, probs):
  expected = counts.sum() * np.asarray(probs, np.float64)
  return float(((counts - expected) ** 2 / expected).sum())


def _hard_counts(keys, logits, **kwargs):
  sample = jax.jit(
    jax.vmap(lambda k: softjax.gumbel_softmax(k, logits, hard=True, **kwargs))
  )
  hard = np.asarray(sample(keys))
  # Every sample is one-hot, so the column sums are the class counts.
  assert (hard.sum(-1) == 1).all()
  return hard.sum(0)


def _ref_soft(key, logits, temperature=1.0):
  g = jax.random.gumbel(key, np.shape(logits), jnp.float32)
  return jax.nn.softmax((jnp.asarray(logits, jnp.float32) + g) / temperature)


@pytest.mark.parametrize(
  "kwargs",
  slow_except(
    [
      {},
      dict(temperature=0.3),
      dict(normalizer=softjax.sparsemax),
      dict(normalizer=softjax.entmax15, temperature=2.0),
    ],
    {},
    dict(normalizer=softjax.sparsemax),
  ),
  ids=["softmax", "t0.3", "sparsemax", "entmax15_t2"],
)
def test_hard_frequencies_match_softmax(kwargs):
  keys = jax.random.split(jax.random.key(1234), N_SAMPLES)
  counts = _hard_counts(keys, LOGITS5, **kwargs)
  probs = np.exp(LOGITS5) / np.exp(LOGITS5).sum()
  assert _chi_square(counts, probs) < CHI2_CRIT_DF4
  # The test has power: a slightly wrong distribution is rejected.
  wrong = np.array([0.37, 0.27, 0.2, 0.11, 0.05])
  assert _chi_square(counts, wrong) > CHI2_CRIT_DF4


def test_masked_classes_never_sampled_and_frequencies_renormalise():
  mask = np.array([True, False, True, True, False])
  keys = jax.random.split(jax.random.key(7), N_SAMPLES)
  counts = _hard_counts(keys, LOGITS5, where=mask)
  assert (counts[~mask] == 0).all()
  live = np.exp(LOGITS5[mask])
  # 3 live classes: df = 2, critical value 13.816 at p = 0.001.
  assert _chi_square(counts[mask], live / live.sum()) < 13.816


def test_legacy_key_matches_typed_key():
  x = _inputs.scores((3, 6), seed=0)
  typed = softjax.gumbel_softmax(jax.random.key(5), x, 0.7)
  legacy = softjax.gumbel_softmax(jax.random.PRNGKey(5), x, 0.7)
  np.testing.assert_array_equal(np.asarray(typed), np.asarray(legacy))


@pytest.mark.parametrize("temperature", slow_except([1.0, 0.5, "row"], "row"))
def test_soft_sample_matches_jax_random_and_jax_nn(temperature):
  x = _inputs.scores((4, 7), 2.0, seed=1)
  if temperature == "row":
    temperature = np.array([[0.5], [1.0], [2.0], [0.25]], np.float32)
  key = jax.random.key(3)
  y = softjax.gumbel_softmax(key, x, temperature)
  chex.assert_shape(y, x.shape)
  chex.assert_type(y, jnp.float32)
  np.testing.assert_allclose(
    np.asarray(y), _ref_soft(key, x, temperature), rtol=1e-5, atol=1e-6
  )


def test_soft_sample_on_simplex_strictly_positive_and_masked_zero():
  x = _inputs.scores((8, 6), seed=2)
  mask = _inputs.random_mask((8, 6), 3, 0.7)
  mask[:, 0] = True
  y = np.asarray(softjax.gumbel_softmax(jax.random.key(11), x, where=mask))
  np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-6)
  assert (y[mask] > 0).all()
  assert (y[~mask] == 0).all()


@pytest.mark.parametrize(
  "dtype,axis",
  [
    pytest.param(jnp.float32, -1, marks=pytest.mark.slow),
    (jnp.bfloat16, 0),
    pytest.param(jnp.float16, -1, marks=pytest.mark.slow),
    (jnp.float32, (0, 1)),
    pytest.param(jnp.bfloat16, None, marks=pytest.mark.slow),
  ],
)
def test_hard_forward_is_exactly_one_hot(dtype, axis):
  x = jnp.asarray(np.random.default_rng(4).normal(size=(3, 5))).astype(dtype)
  key = jax.random.key(9)
  hard = softjax.gumbel_softmax(key, x, 0.5, axis, hard=True)
  soft = softjax.gumbel_softmax(key, x, 0.5, axis)
  chex.assert_type(hard, dtype)
  h = np.asarray(hard, np.float64)
  assert set(np.unique(h)) <= {0.0, 1.0}
  axes = tuple(range(2)) if axis is None else axis
  np.testing.assert_array_equal(h.sum(axis=axes), 1.0)
  # The one is at the arg-max of the relaxed sample (same key), which is
  # the arg-max of logits + G (independent reference, float32 noise).
  g = np.asarray(jax.random.gumbel(key, x.shape, jnp.float32))
  scores = np.asarray(x, np.float32) + g
  if axis in (-1, 0):
    ref = np.argmax(scores, axis=axis)
    np.testing.assert_array_equal(np.argmax(h, axis=axis), ref)
    np.testing.assert_array_equal(
      np.argmax(h, axis=axis),
      np.argmax(np.asarray(soft, np.float32), axis=axis),
    )
  else:
    assert np.argmax(h) == np.argmax(scores)


@pytest.mark.parametrize(
  "normalizer",
  slow_except([softjax.softmax, softjax.sparsemax], softjax.sparsemax),
)
def test_straight_through_gradient_equals_soft_gradient(normalizer):
  rng = np.random.default_rng(5)
  x = rng.normal(size=(4, 6)).astype(np.float32)
  w = rng.normal(size=(4, 6)).astype(np.float32)
  t = np.float32(0.7)
  key = jax.random.key(21)

  def obj(hard):
    return lambda x: (
      w * softjax.gumbel_softmax(key, x, t, hard=hard, normalizer=normalizer)
    ).sum()

  g_soft = np.asarray(jax.grad(obj(False))(x))
  g_hard = np.asarray(jax.grad(obj(True))(x))
  np.testing.assert_array_equal(g_hard, g_soft)
  if normalizer is softjax.softmax:
    # Closed form: d/dx <w, softmax((x + G) / T)> = p (w - <w, p>) / T.
    p = np.asarray(_ref_soft(key, x, t))
    expected = p * (w - (w * p).sum(-1, keepdims=True)) / t
    np.testing.assert_allclose(g_soft, expected, rtol=1e-5, atol=1e-6)
  assert np.abs(g_soft).max() > 0


def test_temperature_gradient_through_straight_through():
  x = _inputs.scores((2, 5), seed=6)
  w = _inputs.scores((2, 5), seed=7)
  key = jax.random.key(2)
  f = lambda t, hard: (w * softjax.gumbel_softmax(key, x, t, hard=hard)).sum()
  ref = lambda t: (w * _ref_soft(key, x, t)).sum()
  t = jnp.array([[0.5], [2.0]])
  g_ref = jax.grad(ref)(t)
  np.testing.assert_allclose(jax.grad(f)(t, False), g_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jax.grad(f)(t, True), g_ref, rtol=1e-5, atol=1e-6)


def test_small_temperature_is_nearly_one_hot():
  x = _inputs.scores((64, 5), seed=8)
  key = jax.random.key(13)
  soft = np.asarray(softjax.gumbel_softmax(key, x, 1e-3))
  hard = np.asarray(softjax.gumbel_softmax(key, x, 1e-3, hard=True))
  np.testing.assert_allclose(soft, hard, atol=1e-2)
  warm = np.asarray(softjax.gumbel_softmax(key, x, 1.0))
  assert np.abs(warm - hard).max() > 0.1  # not one-hot at T = 1


def test_mask_zero_gradient_and_all_masked_rows():
  rng = np.random.default_rng(9)
  x = rng.normal(size=(3, 5)).astype(np.float32)
  w = rng.normal(size=(3, 5)).astype(np.float32)
  mask = np.array([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
  key = jax.random.key(4)
  for hard in (False, True):
    y = np.asarray(softjax.gumbel_softmax(key, x, where=mask, hard=hard))
    assert (y[~mask] == 0).all()
    np.testing.assert_allclose(y.sum(-1), [1.0, 0.0, 1.0], rtol=1e-6)
    g = np.asarray(
      jax.grad(
        lambda x: (
          w * softjax.gumbel_softmax(key, x, where=mask, hard=hard)
        ).sum()
      )(x)
    )
    assert np.isfinite(g).all()
    assert (g[~mask] == 0).all()
    assert np.abs(g[mask]).max() > 0


def test_masked_entries_never_win_even_with_huge_logits():
  # Masked entries carry the largest scores; they must still never be picked.
  x = np.array([100.0, 0.0, 100.0, 1.0, -1.0], np.float32)
  mask = np.array([False, True, False, True, True])
  keys = jax.random.split(jax.random.key(0), 500)
  hard = np.asarray(
    jax.jit(
      jax.vmap(
        lambda k: softjax.gumbel_softmax(k, x, 0.01, where=mask, hard=True)
      )
    )(keys)
  )
  assert (hard[:, ~mask] == 0).all()
  np.testing.assert_array_equal(hard.sum(-1), 1.0)


def test_jit_vmap_pmap_agree(devices, n_devices):
  x = _inputs.scores((3, 6), seed=10)
  keys = jax.random.split(jax.random.key(17), n_devices)
  f = lambda k: softjax.gumbel_softmax(k, x, 0.5, hard=True)
  g = lambda k: softjax.gumbel_softmax(k, x, 0.5)
  # Reference: one jitted call per key.
  for fn, batched in (
    (f, (jax.jit(jax.vmap(f)), jax.pmap(f, devices=devices))),
    (g, (jax.pmap(g, devices=devices),)),
  ):
    jitted = jax.jit(fn)
    loop = np.stack([np.asarray(jitted(k)) for k in keys])
    for b in batched:
      np.testing.assert_allclose(
        np.asarray(b(keys)), loop, rtol=1e-6, atol=1e-7
      )
  # Eager (loop holds the soft samples of g now).
  np.testing.assert_allclose(np.asarray(g(keys[0])), loop[0], rtol=1e-6)


def test_half_precision_sampled_in_float32():
  x = jnp.asarray(np.random.default_rng(11).normal(size=(3, 6)))
  key = jax.random.key(8)
  y = softjax.gumbel_softmax(key, x.astype(jnp.bfloat16))
  chex.assert_type(y, jnp.bfloat16)
  ref = _ref_soft(key, x.astype(jnp.bfloat16).astype(jnp.float32))
  np.testing.assert_allclose(np.asarray(y, np.float32), ref, atol=1e-2)


@pytest.mark.parametrize(
  "key,exc",
  [
    (0, TypeError),
    (np.zeros(2, np.float32), TypeError),
    (np.zeros(3, np.uint32), TypeError),
    ("key", TypeError),
    ("batch_typed", ValueError),
    ("batch_raw", ValueError),
  ],
)
def test_bad_key_raises(key, exc):
  if isinstance(key, str) and key == "batch_typed":
    key = jax.random.split(jax.random.key(0), 3)
  elif isinstance(key, str) and key == "batch_raw":
    key = jax.random.split(jax.random.PRNGKey(0), 3)
  with pytest.raises(exc, match="`key`"):
    softjax.gumbel_softmax(key, np.zeros(4, np.float32))


def test_logits_first_is_caught():
  # A common slip: logits passed where the key goes.
  with pytest.raises(TypeError, match="`key`"):
    softjax.gumbel_softmax(np.zeros(4, np.float32), jax.random.key(0))


@pytest.mark.parametrize(
  "kwargs,exc,name",
  [
    (dict(hard=1), TypeError, "hard"),
    (dict(hard=jnp.array(True)), TypeError, "hard"),
    (dict(normalizer="softmax"), TypeError, "normalizer"),
    (dict(temperature=0.0), ValueError, "temperature"),
    (dict(axis=3), ValueError, "axis"),
    (dict(where=np.ones(3, bool)), ValueError, "where"),
  ],
)
def test_bad_arguments_raise(kwargs, exc, name):
  with pytest.raises(exc, match=f"`{name}`"):
    softjax.gumbel_softmax(
      jax.random.key(0), np.zeros((2, 4), np.float32), **kwargs
    )


def test_bool_logits_raise():
  with pytest.raises(TypeError, match="`logits`"):
    softjax.gumbel_softmax(jax.random.key(0), np.ones(4, bool))
