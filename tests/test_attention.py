"""softjax.attention against Flax's own attention, and inside Flax's modules.

Flax is the independent reference: with ``normalizer=softjax.softmax`` every
output (values, weights, gradients, dropout) must match
``flax.linen``/``flax.nnx``'s ``dot_product_attention``; the sparse
normalisers are then checked for their own properties (exact zeros, rows
summing to 1, masked rows at zero, gradients for a learnable α).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softjax
from softjax import attention

flax = pytest.importorskip("flax")
from flax import linen as nn  # noqa: E402
from flax import nnx  # noqa: E402
from flax.nnx.nn import attention as nnx_attention  # noqa: E402

B, Q, K, H, D = 2, 5, 7, 3, 8
TOL = dict(rtol=2e-5, atol=2e-6)


def _key(seed: int) -> jax.Array:
  # rbg compiles much faster than threefry on CPU; Flax gets the same key.
  return jax.random.key(seed, impl="rbg")


def _normal(seed: int, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  # NumPy draws: jax.random would compile a sampler for every shape.
  x = np.random.default_rng(seed).standard_normal(shape, np.float32)
  return jnp.asarray(x, dtype)


def _qkv(
  seed: int = 0,
  q_len: int = Q,
  k_len: int = K,
  heads: int = H,
  kv_heads: int | None = None,
  depth: int = D,
  dtype: jnp.dtype = jnp.float32,
):
  kv_heads = heads if kv_heads is None else kv_heads
  q = _normal(seed, (B, q_len, heads, depth), dtype)
  k = _normal(seed + 100, (B, k_len, kv_heads, depth), dtype)
  v = _normal(seed + 200, (B, k_len, kv_heads, depth), dtype)
  return q, k, v


def _bias(seed: int = 1) -> jax.Array:
  return _normal(seed, (1, H, Q, K))


def _padding_mask(valid=(K, 4)) -> jax.Array:
  """(B, 1, 1, K) key-padding mask; every query keeps at least one key."""
  return (jnp.arange(K)[None, :] < jnp.asarray(valid)[:, None])[:, None, None]


def _causal_mask() -> jax.Array:
  return nn.make_causal_mask(jnp.ones((B, Q)))[..., :K]  # (B, 1, Q, Q)


def _random_mask(seed: int = 2) -> jax.Array:
  mask = np.random.default_rng(seed).random((B, H, Q, K)) < 0.6
  mask[..., 0] = True  # no fully masked row: Flax differs there
  return jnp.asarray(mask)


FLAX_ATTENTION = {
  "linen": (nn.dot_product_attention, nn.dot_product_attention_weights),
  "nnx": (
    nnx.dot_product_attention,
    nnx_attention.dot_product_attention_weights,
  ),
}

# Built lazily, so that collecting the tests touches no device.
CASES = {
  "plain": lambda: dict(),
  "bias": lambda: dict(bias=_bias()),
  "padding_mask": lambda: dict(mask=_padding_mask()),
  "random_mask_and_bias": lambda: dict(mask=_random_mask(), bias=_bias()),
  "float_mask": lambda: dict(mask=_random_mask().astype(jnp.float32)),
}


@pytest.mark.parametrize("flavour", sorted(FLAX_ATTENTION))
@pytest.mark.parametrize("case", sorted(CASES))
def test_softmax_matches_flax(flavour, case):
  flax_attention, flax_weights = FLAX_ATTENTION[flavour]
  q, k, v = _qkv()
  kwargs = CASES[case]()
  np.testing.assert_allclose(
    attention.dot_product_attention(q, k, v, **kwargs),
    flax_attention(q, k, v, **kwargs),
    **TOL,
  )
  np.testing.assert_allclose(
    attention.dot_product_attention_weights(q, k, **kwargs),
    flax_weights(q, k, **kwargs),
    **TOL,
  )


def test_causal_matches_flax():
  q, k, v = _qkv(k_len=Q)
  mask = _padding_mask(valid=(Q, 3))[..., :Q]
  ours = attention.dot_product_attention(q, k, v, is_causal=True)
  np.testing.assert_allclose(
    ours, nnx.dot_product_attention(q, k, v, is_causal=True), **TOL
  )
  np.testing.assert_allclose(
    ours, nn.dot_product_attention(q, k, v, mask=_causal_mask()), **TOL
  )
  # is_causal combines with a mask: the same as one combined Flax mask.
  np.testing.assert_allclose(
    attention.dot_product_attention(q, k, v, mask=mask, is_causal=True),
    nn.dot_product_attention(
      q, k, v, mask=nn.combine_masks(mask, _causal_mask())
    ),
    **TOL,
  )
  weights = attention.dot_product_attention_weights(q, k, is_causal=True)
  assert np.all(
    np.asarray(weights)[..., np.triu_indices(Q, 1)[0], np.triu_indices(Q, 1)[1]]
    == 0
  )


def test_grouped_query_attention_matches_nnx():
  q, k, v = _qkv(heads=6, kv_heads=2)
  mask = _padding_mask()
  np.testing.assert_allclose(
    attention.dot_product_attention(q, k, v, mask=mask),
    nnx.dot_product_attention(q, k, v, mask=mask),
    **TOL,
  )


@pytest.mark.parametrize("broadcast_dropout", [True, False])
@pytest.mark.parametrize("flavour", sorted(FLAX_ATTENTION))
def test_dropout_matches_flax_with_same_rng(flavour, broadcast_dropout):
  flax_attention, flax_weights = FLAX_ATTENTION[flavour]
  q, k, v = _qkv()
  kwargs = dict(
    mask=_random_mask(),
    bias=_bias(),
    dropout_rate=0.4,
    dropout_rng=_key(7),
    deterministic=False,
    broadcast_dropout=broadcast_dropout,
  )
  ours = attention.dot_product_attention_weights(q, k, **kwargs)
  np.testing.assert_allclose(ours, flax_weights(q, k, **kwargs), **TOL)
  np.testing.assert_allclose(
    attention.dot_product_attention(q, k, v, **kwargs),
    flax_attention(q, k, v, **kwargs),
    **TOL,
  )
  # Dropout did happen: on unmasked softmax weights (all positive), each
  # weight is either zeroed or scaled by 1 / 0.6.
  kwargs.pop("mask")
  plain = np.asarray(
    attention.dot_product_attention_weights(q, k, bias=_bias())
  )
  dropped = np.asarray(attention.dot_product_attention_weights(q, k, **kwargs))
  assert np.all(plain > 0)
  kept = dropped != 0
  assert kept.any() and not kept.all()
  np.testing.assert_allclose(dropped[kept], plain[kept] / 0.6, rtol=1e-5)
  shared = (kept == kept[:1, :1]).all()
  assert shared == broadcast_dropout  # one mask for all batches and heads


def test_deterministic_disables_dropout():
  q, k, v = _qkv()
  kwargs = dict(dropout_rate=0.5, dropout_rng=_key(3))
  np.testing.assert_array_equal(
    attention.dot_product_attention(q, k, v, deterministic=True, **kwargs),
    attention.dot_product_attention(q, k, v),
  )
  assert not np.array_equal(
    attention.dot_product_attention(q, k, v, deterministic=False, **kwargs),
    attention.dot_product_attention(q, k, v),
  )
  with pytest.raises(ValueError, match="dropout_rng"):
    attention.dot_product_attention(q, k, v, dropout_rate=0.5)


def test_dtype_and_force_fp32_match_linen():
  q, k, v = _qkv(dtype=jnp.bfloat16)
  for force in (False, True):
    ours = attention.dot_product_attention(
      q, k, v, force_fp32_for_softmax=force
    )
    ref = nn.dot_product_attention(q, k, v, force_fp32_for_softmax=force)
    assert ours.dtype == ref.dtype
    np.testing.assert_allclose(
      np.asarray(ours, np.float32),
      np.asarray(ref, np.float32),
      rtol=2e-2,
      atol=2e-2,
    )
  q, k, v = _qkv()
  ours = attention.dot_product_attention(q, k, v, dtype=jnp.bfloat16)
  ref = nn.dot_product_attention(q, k, v, dtype=jnp.bfloat16)
  assert ours.dtype == ref.dtype == jnp.bfloat16
  np.testing.assert_allclose(
    np.asarray(ours, np.float32),
    np.asarray(ref, np.float32),
    rtol=2e-2,
    atol=2e-2,
  )


def test_precision_and_einsum_keywords_match_linen():
  q, k, v = _qkv()
  calls = []

  def einsum(*args, **kwargs):
    calls.append(args[0])
    return jnp.einsum(*args, **kwargs)

  kwargs = dict(qk_attn_weights_einsum=einsum, attn_weights_value_einsum=einsum)
  np.testing.assert_allclose(
    attention.dot_product_attention(q, k, v, **kwargs),
    nn.dot_product_attention(q, k, v),
    **TOL,
  )
  assert len(calls) == 2
  np.testing.assert_allclose(
    attention.dot_product_attention(
      q,
      k,
      v,
      precision=jax.lax.Precision.HIGHEST,
      einsum_dot_general=jax.lax.dot_general,
    ),
    nn.dot_product_attention(q, k, v, precision=jax.lax.Precision.HIGHEST),
    **TOL,
  )
  with pytest.raises(ValueError, match="together"):
    attention.dot_product_attention(q, k, v, qk_attn_weights_einsum=einsum)
  with pytest.raises(ValueError, match="exclusive"):
    attention.dot_product_attention(
      q, k, v, precision=jax.lax.Precision.HIGHEST, **kwargs
    )


def test_softmax_gradients_match_flax():
  q, k, v = _qkv()
  mask, bias = _random_mask(), _bias()
  w = _normal(9, (B, Q, H, D))

  def loss(fn):
    return lambda q, k, v: (fn(q, k, v, bias=bias, mask=mask) * w).sum()

  ours = jax.grad(loss(attention.dot_product_attention), (0, 1, 2))(q, k, v)
  ref = jax.grad(loss(nn.dot_product_attention), (0, 1, 2))(q, k, v)
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_entmax15_weights_sparse_and_normalised():
  q, k, v = _qkv()
  q = 3.0 * q  # sharper scores: a visibly sparse support
  weights = attention.dot_product_attention_weights(
    q, k, normalizer=softjax.entmax15
  )
  weights = np.asarray(weights)
  assert weights.shape == (B, H, Q, K)
  assert (weights == 0).mean() > 0.2
  assert (weights > 0).sum(-1).min() >= 1
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  # The output is those weights applied to the values.
  np.testing.assert_allclose(
    attention.dot_product_attention(q, k, v, normalizer=softjax.entmax15),
    np.einsum("bhqk,bkhd->bqhd", weights, np.asarray(v)),
    rtol=1e-5,
    atol=1e-6,
  )


@pytest.mark.parametrize(
  "normalizer",
  [softjax.softmax, softjax.entmax15, softjax.sparsemax],
  ids=["softmax", "entmax15", "sparsemax"],
)
def test_fully_masked_rows_are_zero_not_nan(normalizer):
  q, k, v = _qkv()
  # Batch 1 has no valid key at all; batch 0 only keys 0..2, and a -inf bias
  # on a masked key must not leak NaN either.
  mask = _padding_mask(valid=(3, 0))
  bias = jnp.zeros((1, 1, 1, K)).at[..., K - 1].set(-jnp.inf)

  def f(q, k, v):
    return attention.dot_product_attention(
      q, k, v, bias=bias, mask=mask, normalizer=normalizer
    )

  out = f(q, k, v)
  assert np.all(np.isfinite(out))
  np.testing.assert_array_equal(out[1], 0.0)
  assert np.abs(np.asarray(out[0])).max() > 0
  weights = attention.dot_product_attention_weights(
    q, k, bias=bias, mask=mask, normalizer=normalizer
  )
  np.testing.assert_array_equal(weights[1], 0.0)
  np.testing.assert_array_equal(weights[0, ..., 3:], 0.0)
  np.testing.assert_allclose(weights[0].sum(-1), 1.0, rtol=1e-5)
  grads = jax.grad(lambda *a: (f(*a) ** 2).sum(), (0, 1, 2))(q, k, v)
  for g in grads:
    assert np.all(np.isfinite(g))
  dq, dk, dv = (np.asarray(g) for g in grads)
  # Masked keys and values get a zero gradient; live ones do not.
  assert np.all(dk[1] == 0) and np.all(dv[1] == 0) and np.all(dq[1] == 0)
  assert np.all(dk[0, 3:] == 0) and np.all(dv[0, 3:] == 0)
  assert np.abs(dv[0, :3]).max() > 0


def test_per_head_alpha_gets_finite_nonzero_gradient():
  q, k, v = _qkv()
  q = 2.0 * q
  mask = _padding_mask()
  target = _normal(5, (B, Q, H, D))

  def loss(alpha):
    normalizer = lambda s, **kw: softjax.entmax(s, alpha, **kw)
    out = attention.dot_product_attention(
      q, k, v, mask=mask, normalizer=normalizer
    )
    return ((out - target) ** 2).sum()

  alpha = jnp.array([1.2, 1.5, 2.0]).reshape(H, 1, 1)
  loss = jax.jit(loss)
  grad = np.asarray(jax.jit(jax.grad(loss))(alpha))
  assert grad.shape == (H, 1, 1)
  assert np.all(np.isfinite(grad)) and np.all(grad != 0)
  # Against central differences, one head at a time.
  eps = 1e-3
  for h in range(H):
    step = jnp.zeros((H, 1, 1)).at[h].set(eps)
    fd = (loss(alpha + step) - loss(alpha - step)) / (2 * eps)
    np.testing.assert_allclose(grad[h, 0, 0], fd, rtol=5e-2, atol=1e-3)
  # Different alphas per head: head 2 (sparsemax) is sparser than head 0.
  weights = np.asarray(
    attention.dot_product_attention_weights(
      q, k, mask=mask, normalizer=lambda s, **kw: softjax.entmax(s, alpha, **kw)
    )
  )
  assert (weights[:, 2] == 0).mean() > (weights[:, 0] == 0).mean()


def test_unknown_keyword_and_bad_normalizer_raise():
  q, k, v = _qkv()
  with pytest.raises(TypeError, match="dropout_prob"):
    attention.dot_product_attention(q, k, v, dropout_prob=0.1)
  with pytest.raises(TypeError, match="temperature"):
    attention.dot_product_attention_weights(q, k, temperature=2.0)
  with pytest.raises(TypeError, match="normalizer"):
    attention.dot_product_attention(q, k, v, normalizer="entmax15")
  with pytest.raises(ValueError, match="mask"):
    attention.dot_product_attention(
      q, k, v, mask=jnp.ones((B, H, Q, K + 1), bool)
    )
  with pytest.raises(ValueError, match="shape"):
    attention.dot_product_attention(
      q, k, v, normalizer=lambda s, where: s[..., :1]
    )
  with pytest.raises(ValueError, match="lengths"):
    attention.dot_product_attention(q, k, v[:, :-1])


# --- Flax modules: softjax attention as a drop-in `attention_fn`. -----------

IN = 12


def _inputs(seed: int = 11) -> jax.Array:
  return _normal(seed, (B, Q, IN))


def test_linen_module_drop_in_matches_flax_and_sows():
  x = _inputs()
  # Key padding: batch 1 has 3 valid tokens (no query sees no key at all,
  # where Flax's uniform average and our zeros would differ).
  mask = nn.make_attention_mask(
    jnp.ones((B, Q), bool), jnp.arange(Q)[None] < jnp.array([[Q], [3]])
  )
  common = dict(num_heads=H, qkv_features=H * 4, dropout_rate=0.3)
  ref = nn.MultiHeadDotProductAttention(**common)
  softmax_fn = functools.partial(
    attention.dot_product_attention, normalizer=softjax.softmax
  )
  ours = nn.MultiHeadDotProductAttention(**common, attention_fn=softmax_fn)
  params = ref.init(jax.random.key(0), x, mask=mask, deterministic=True)
  rngs = {"dropout": jax.random.key(4)}
  for deterministic in (True, False):
    # Same rng: Flax's filtering passes dropout_rng etc. through to us.
    np.testing.assert_allclose(
      ours.apply(params, x, mask=mask, deterministic=deterministic, rngs=rngs),
      ref.apply(params, x, mask=mask, deterministic=deterministic, rngs=rngs),
      **TOL,
    )

  entmax_fn = functools.partial(
    attention.dot_product_attention, normalizer=softjax.entmax15
  )
  sparse = nn.MultiHeadDotProductAttention(**common, attention_fn=entmax_fn)
  out, state = sparse.apply(
    params,
    x,
    mask=mask,
    deterministic=True,
    sow_weights=True,
    mutable=["intermediates"],
  )
  (weights,) = state["intermediates"]["attention_weights"]
  weights = np.asarray(weights)
  assert weights.shape == (B, H, Q, Q)
  assert (weights == 0).any()
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(weights[1, ..., 3:], 0.0)  # padding mask
  assert np.all(np.isfinite(out))
  assert not np.allclose(
    out, ref.apply(params, x, mask=mask, deterministic=True), atol=1e-3
  )


def test_nnx_module_drop_in_matches_flax_and_sows():
  x = _inputs()
  common = dict(
    num_heads=H,
    in_features=IN,
    qkv_features=H * 4,
    dropout_rate=0.3,
    decode=False,
  )
  softmax_fn = functools.partial(
    attention.dot_product_attention, normalizer=softjax.softmax
  )
  ref = nnx.MultiHeadAttention(**common, rngs=nnx.Rngs(0, dropout=4))
  ours = nnx.MultiHeadAttention(
    **common, attention_fn=softmax_fn, rngs=nnx.Rngs(0, dropout=4)
  )
  for deterministic in (True, False):
    for is_causal in (False, True):
      np.testing.assert_allclose(
        ours(x, deterministic=deterministic, is_causal=is_causal),
        ref(x, deterministic=deterministic, is_causal=is_causal),
        **TOL,
      )

  entmax_fn = functools.partial(
    attention.dot_product_attention, normalizer=softjax.entmax15
  )
  sparse = nnx.MultiHeadAttention(
    **common, attention_fn=entmax_fn, rngs=nnx.Rngs(0, dropout=4)
  )

  @nnx.capture(nnx.Intermediate)
  def forward(model, x):
    return model(x, deterministic=True, sow_weights=True, is_causal=True)

  out, intermediates = forward(sparse, x)
  (weights,) = intermediates["attention_weights"]
  weights = np.asarray(weights)
  assert weights.shape == (B, H, Q, Q)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(weights[..., 0, 1:], 0.0)  # causal
  assert (weights[..., -1, :] == 0).any()  # sparse
  assert np.all(np.isfinite(out))


def test_scale_matches_a_prescaled_query():
  """``scale`` replaces ``1 / sqrt(depth)``: the same as scaling the query
  by ``scale · sqrt(depth)`` under the default, in both dense functions."""
  q, k, v = (
    jnp.asarray(np.random.default_rng(i).standard_normal((2, 5, 3, 8)))
    for i in range(3)
  )
  scale = 0.37
  pre = q * scale * np.sqrt(8)
  np.testing.assert_allclose(
    attention.dot_product_attention(q, k, v, scale=scale),
    attention.dot_product_attention(pre, k, v),
    rtol=1e-6,
    atol=1e-6,
  )
  np.testing.assert_allclose(
    attention.dot_product_attention_weights(q, k, scale=scale),
    attention.dot_product_attention_weights(pre, k),
    rtol=1e-6,
    atol=1e-6,
  )


def test_per_head_alpha_is_one_convention():
  """``alpha`` of shape ``(num_heads,)`` means the same in the dense and the
  block-wise function (values and α's gradient); the dense path's own
  reference is the normaliser written with ``alpha[:, None, None]``."""
  q, k, v = (
    jnp.asarray(np.random.default_rng(i).standard_normal((2, 6, 4, 8)))
    for i in range(3)
  )
  alpha = jnp.array([1.0, 1.3, 1.6, 2.0])

  def by_normalizer(a):
    return attention.dot_product_attention(
      q,
      k,
      v,
      normalizer=lambda s, **kw: softjax.entmax(s, a[:, None, None], **kw),
    )

  for f in (
    lambda a: attention.dot_product_attention(q, k, v, alpha=a),
    lambda a: attention.blockwise_attention(q, k, v, alpha=a),
  ):
    np.testing.assert_allclose(f(alpha), by_normalizer(alpha), atol=2e-6)
    np.testing.assert_allclose(
      jax.grad(lambda a: jnp.sum(jnp.sin(f(a))))(alpha),
      jax.grad(lambda a: jnp.sum(jnp.sin(by_normalizer(a))))(alpha),
      rtol=1e-4,
      atol=1e-5,
    )
  for f in (attention.dot_product_attention, attention.blockwise_attention):
    with pytest.raises(ValueError, match=r"`alpha` of shape \(4, 1, 1\)"):
      f(q, k, v, alpha=alpha[:, None, None])
  with pytest.raises(ValueError, match="`alpha`.*`normalizer`"):
    attention.dot_product_attention(
      q, k, v, alpha=alpha, normalizer=softjax.entmax15
    )


@pytest.mark.parametrize("name", ["dense", "blockwise"])
def test_additive_float_mask_is_refused_never_inverted(name):
  """A 0/-inf additive mask passed as ``mask``: concrete, a TypeError that
  names ``mask`` and points to ``bias``; traced, zeros (it attends nowhere),
  never the inverted attention. Flax's 0/1 float masks equal boolean ones."""
  f = {
    "dense": attention.dot_product_attention,
    "blockwise": attention.blockwise_attention,
  }[name]
  q, k, v = (
    jnp.asarray(np.random.default_rng(i).standard_normal((1, 4, 2, 8)))
    for i in range(3)
  )
  causal = jnp.tril(jnp.ones((4, 4), bool))
  additive = jnp.where(causal, 0.0, -jnp.inf)
  with pytest.raises(TypeError, match="`mask`.*`bias`"):
    f(q, k, v, mask=additive)
  traced = jax.jit(lambda m: f(q, k, v, mask=m))(additive)
  np.testing.assert_array_equal(traced, 0.0)
  np.testing.assert_allclose(
    f(q, k, v, mask=causal.astype(jnp.float32)),
    f(q, k, v, mask=causal),
    rtol=1e-6,
  )
  np.testing.assert_allclose(
    f(q, k, v, bias=additive), f(q, k, v, mask=causal), rtol=1e-5, atol=1e-6
  )
