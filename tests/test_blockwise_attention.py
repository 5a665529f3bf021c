"""softjax.attention.blockwise_attention against the dense path.

The reference is ``softjax.attention.dot_product_attention`` with the
normaliser of the same α (independent code: it forms the whole score
matrix and differentiates through the normaliser's own VJP). Values and
gradients for query, key, value and bias must agree to float32 rounding
over masks, causal attention, grouped heads, queries with every key masked,
lengths that are not a multiple of the blocks, batch dimensions and
broadcast biases. The memory claim is checked with XLA's own accounting.

Every comparison is parameterised over α: softmax over every case, and
entmax15, the per-head array α (one head at exactly α = 1), α = 1.3 and
sparsemax over the cases listed in ``SPARSE_CASES`` (the static sparse maps
share every line of code but the family's formulas).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

import softjax
from softjax import _core
from softjax import attention
from softjax._attention import blockwise
from softjax._attention import forward
from softjax._attention import layout
from softjax._attention import rules

PER_HEAD = "per_head"
ALPHA_IDS = {
  1.0: "softmax",
  1.3: "entmax1.3",
  1.5: "entmax15",
  2.0: "sparsemax",
  PER_HEAD: "per_head_alpha",
}
VALUE_TOL = dict(rtol=2e-5, atol=2e-6)
GRAD_TOL = dict(rtol=1e-4, atol=1e-5)


def _normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
  # NumPy draws: jax.random would compile a sampler for every shape.
  return jnp.asarray(
    np.random.default_rng(seed).standard_normal(shape, np.float32)
  )


def _alpha(alpha, heads: int):
  """The ``alpha`` argument and ``normalizer(alpha_value)`` for the dense
  path. A per-head α is an array (differentiated in :func:`_compare`)."""
  if alpha == PER_HEAD:  # from exactly 1 (softmax) to 2 (sparsemax)
    return jnp.linspace(
      1.0, 2.0, heads
    ), lambda a: lambda s, **kw: softjax.entmax(s, a[:, None, None], **kw)
  if alpha == 1.0:
    return 1.0, lambda a: softjax.softmax
  return alpha, lambda a: lambda s, **kw: softjax.entmax(s, a, **kw)


def _qkv(batch, q_len, kv_len, heads, kv_heads, depth=8, seed=0):
  return (
    _normal(seed, batch + (q_len, heads, depth)),
    _normal(seed + 1, batch + (kv_len, kv_heads, depth)),
    _normal(seed + 2, batch + (kv_len, kv_heads, depth)),
  )


def _compare(alpha, q, k, v, bias=None, mask=None, exact_grads=True, **kw):
  """Values and gradients (q, k, v, bias, an array α): blockwise == dense.

  Returns the block-wise output and its gradients. ``exact_grads=False``
  compares the values only (gradients at ``+inf`` scores are a convention:
  each path gives finite ones, not the same).
  """
  alpha_arg, normalizer = _alpha(alpha, q.shape[-2])
  is_causal = kw.pop("is_causal", False)
  # The dense path has the 1/sqrt(depth) scale built in.
  factor = kw["scale"] * np.sqrt(q.shape[-1]) if "scale" in kw else 1.0
  cotangent = _normal(99, q.shape[:-1] + v.shape[-1:])
  learned = not isinstance(alpha_arg, float)
  args = {"q": q, "k": k, "v": v}
  if bias is not None:
    args["bias"] = bias
  if learned:
    args["alpha"] = alpha_arg

  def ours(a):
    return attention.blockwise_attention(
      a["q"],
      a["k"],
      a["v"],
      a.get("bias"),
      mask,
      alpha=a.get("alpha", alpha_arg),
      is_causal=is_causal,
      **kw,
    )

  def dense(a):
    return attention.dot_product_attention(
      a["q"] * factor,
      a["k"],
      a["v"],
      a.get("bias"),
      mask,
      normalizer=normalizer(a.get("alpha", alpha_arg)),
      is_causal=is_causal,
    )

  def value_and_grads(f):
    def run(a):
      out, vjp = jax.vjp(f, a)
      return out, vjp(cotangent)[0]

    return jax.jit(run)(args)

  (out, grads), (want, want_grads) = map(value_and_grads, (ours, dense))
  np.testing.assert_allclose(out, want, **VALUE_TOL)
  for name in args:
    assert grads[name].shape == args[name].shape, name
    if exact_grads:
      np.testing.assert_allclose(
        grads[name], want_grads[name], err_msg=name, **GRAD_TOL
      )
  return out, grads


def _padding(batch: int, kv_len: int, valid: tuple[int, ...]) -> jax.Array:
  return (jnp.arange(kv_len) < jnp.asarray(valid)[:, None])[:, None, None]


def _random_mask(seed, shape, p=0.6):
  return jnp.asarray(np.random.default_rng(seed).random(shape) < p)


def _band(length: int, slope: float = 2.0) -> jax.Array:
  """A bias falling off with the distance to the diagonal: the sparse maps
  give the keys far from a query exactly zero weight, so whole block pairs
  hold none (and are skipped by the sparse passes)."""
  n = np.arange(length)
  return jnp.asarray(-slope * np.abs(n[:, None] - n[None, :]), jnp.float32)


# name -> (qkv arguments, extra arguments); built lazily (no device work at
# collection). Lengths are not multiples of the blocks unless said.
CASES = {
  # Key padding [B, 1, 1, kv]; batch 1 has no valid key at all.
  "padding_all_masked": lambda: (
    ((2,), 19, 37, 4, 4),
    dict(mask=_padding(2, 37, (30, 0)), block_q=8, block_k=16),
  ),
  # General mask with fully masked rows, full bias, grouped heads.
  "mask_bias_grouped": lambda: (
    ((2,), 19, 37, 4, 2),
    dict(
      mask=_random_mask(3, (2, 4, 19, 37)).at[:, :, 5].set(False),
      bias=_normal(4, (1, 4, 19, 37)),
      block_q=8,
      block_k=16,
    ),
  ),
  # Causal, one kv head for four query heads, a per-key bias (H, 1, kv).
  "causal_grouped_key_bias": lambda: (
    ((2,), 37, 37, 4, 1),
    dict(is_causal=True, bias=_normal(5, (4, 1, 37)), block_q=8, block_k=16),
  ),
  # Causal with fewer queries than keys and a 2-d mask.
  "causal_wide_mask": lambda: (
    ((1,), 23, 40, 2, 2),
    dict(
      is_causal=True, mask=_random_mask(6, (23, 40), 0.8), block_q=16, block_k=8
    ),
  ),
  # Causal with more queries than keys (the last ones see every key).
  "causal_tall": lambda: (
    ((1,), 40, 23, 2, 2),
    dict(is_causal=True, block_q=16, block_k=8),
  ),
  # Two batch axes, a bias broadcast over one of them, a float mask.
  "batch_dims_partial_bias": lambda: (
    ((2, 3), 9, 12, 2, 2),
    dict(
      bias=_normal(7, (3, 1, 1, 12)),
      mask=_random_mask(8, (2, 1, 1, 9, 12), 0.7).astype(jnp.float32),
      block_q=4,
      block_k=5,
    ),
  ),
  # +inf scores (two in one row: they share its mass, as in the dense
  # normalisers), in the second of two key blocks.
  "inf_bias": lambda: (
    ((1,), 6, 10, 2, 2),
    dict(
      bias=jnp.zeros((2, 6, 10)).at[0, 2, [6, 8]].set(jnp.inf),
      block_q=4,
      block_k=5,
      exact_grads=False,
    ),
  ),
  # Sparse maps: most block pairs hold no weight (skipped), grouped heads.
  "band_dead_blocks": lambda: (
    ((2,), 48, 48, 4, 2),
    dict(bias=_band(48), block_q=8, block_k=8),
  ),
  # Default blocks (one block: shorter than 256), a custom scale and
  # precision (a static argument: must be hashable).
  "default_blocks_scale": lambda: (
    ((2,), 10, 14, 2, 2),
    dict(scale=0.3, precision=jax.lax.Precision.HIGHEST),
  ),
}


# (α, case) pairs compared; see the module docstring. Softmax over every
# case; the sparse maps (whose compilation dominates the file's time) over
# the cases that exercise what differs for them: all-masked queries, masks,
# causal blocks, grouped heads, +inf scores, block pairs without weight.
SPARSE_CASES = {
  1.5: (
    "padding_all_masked",
    "mask_bias_grouped",
    "causal_grouped_key_bias",
    "causal_wide_mask",
    "default_blocks_scale",
  ),
  PER_HEAD: ("mask_bias_grouped", "causal_grouped_key_bias"),
  1.3: ("causal_tall", "band_dead_blocks"),
  2.0: ("padding_all_masked", "inf_bias", "band_dead_blocks"),
}
PAIRS = [(1.0, case) for case in sorted(CASES)] + [
  (alpha, case) for alpha, cases in SPARSE_CASES.items() for case in cases
]


@pytest.mark.parametrize(
  "alpha, case",
  [pytest.param(a, c, id=f"{ALPHA_IDS[a]}-{c}") for a, c in PAIRS],
)
def test_matches_dense(alpha, case):
  shapes, kw = CASES[case]()
  q, k, v = _qkv(*shapes)
  out, grads = _compare(alpha, q, k, v, **kw)
  assert np.all(np.isfinite(out))
  for g in grads.values():
    assert np.all(np.isfinite(g))
  if case == "padding_all_masked":
    # No key: zero output and zero gradients, exactly, never NaN.
    np.testing.assert_array_equal(out[1], 0.0)
    for name in "qkv":
      np.testing.assert_array_equal(grads[name][1], 0.0)
    # Masked keys get no gradient.
    np.testing.assert_array_equal(grads["k"][0, 30:], 0.0)
    np.testing.assert_array_equal(grads["v"][0, 30:], 0.0)
  if case == "inf_bias":  # the mean of the two +inf keys' values
    v_mean = (v[0, 6, 0] + v[0, 8, 0]) / 2
    np.testing.assert_allclose(out[0, 2, 0], v_mean, rtol=1e-6)
  if case == "mask_bias_grouped":
    np.testing.assert_array_equal(out[:, 5], 0.0)  # the masked row
    np.testing.assert_array_equal(grads["q"][:, 5], 0.0)
    np.testing.assert_array_equal(grads["bias"][:, :, 5], 0.0)


@pytest.mark.parametrize("window", [None, (5, 9), (0, 0), (17, 3)])
def test_plan_visits_exactly_the_unmasked_blocks(window):
  """Skipped pairs are fully masked; pairs without the mask need none; the
  lists each sweep reads hold exactly the pairs of their kind, in order.
  (Brute force over the positions; the band written out, not taken from
  softjax.)"""
  for q_len, kv_len, bq, bk in [
    (37, 37, 8, 16),
    (23, 40, 16, 8),
    (40, 23, 16, 8),
    (64, 64, 16, 16),
    (5, 70, 4, 32),
  ]:
    for causal in (False, True):
      cfg = layout.Config(
        q_len, kv_len, bq, bk, causal, 0.0, True, None, window=window
      )
      plan = layout.plan(cfg)
      qi = np.arange(cfg.n_q * bq)[:, None]
      kj = np.arange(cfg.n_k * bk)[None, :]
      visible = (qi < q_len) & (kj < kv_len)
      if causal:
        visible &= kj <= qi
      if window is not None:
        visible &= (kj >= qi - window[0]) & (kj <= qi + window[1])
      for i in range(cfg.n_q):
        for j in range(cfg.n_k):
          block = visible[i * bq : (i + 1) * bq, j * bk : (j + 1) * bk]
          real_q = block[: max(0, min(bq, q_len - i * bq))]
          kind = plan.kind[i, j]
          if kind == layout.SKIP:
            assert not block.any(), (cfg, i, j)
          elif kind == layout.CLEAN:
            assert real_q.all(), (cfg, i, j)
          else:
            assert block.any() and not real_q.all(), (cfg, i, j)
      for kind in (layout.PARTIAL, layout.CLEAN):
        for lists, kinds in (
          (plan.by_query[kind], plan.kind),
          (plan.by_key[kind], plan.kind.T),
        ):
          blocks, counts = lists
          for r in range(kinds.shape[0]):
            want = np.flatnonzero(kinds[r] == kind)
            np.testing.assert_array_equal(blocks[r, : counts[r]], want)


def test_sparse_passes_visit_exactly_the_blocks_with_weight():
  """The block pairs the sparse forward marks live (and the output and
  backward passes visit) are those where the dense weights have a positive
  entry; with a band bias most pairs hold none. (Values and gradients
  there: the band case of test_matches_dense.)"""
  alpha, length, block, heads = 1.5, 48, 8, 2
  q, k, v = _qkv((2,), length, length, heads, heads)
  bias = _band(length)
  weights = jax.jit(
    lambda q, k: attention.dot_product_attention_weights(
      q,
      k,
      bias,
      normalizer=lambda s, **kw: softjax.entmax(s, alpha, **kw),
    )
  )(q, k)
  n = length // block
  split = np.asarray(weights).reshape(2, heads, n, block, n, block)
  want = np.any(split > 0, axis=(0, 1, 3, 5))
  assert want.any() and not want.all()
  cfg = blockwise.config(
    (length, length), (block, block, None), False, (None, 0.0, True, True), None
  )
  scale = 1 / np.sqrt(q.shape[-1])
  arrays = layout.to_blocks(q, k, v, bias, None, scale, cfg, jnp.float32)
  rule = rules.rule(
    _core.member_for_heads(alpha, heads, heads, jnp.float32), cfg
  )
  ops = layout.Operands(*arrays[:5], None, arrays[5])
  live = jax.jit(lambda ops: forward.entmax_pass(cfg, rule, ops)[2])(ops)
  np.testing.assert_array_equal(live, want)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_computes_in_float32(dtype):
  q, k, v = _qkv((2,), 20, 33, 2, 2)
  q, k, v = (x.astype(dtype) for x in (q, k, v))
  mask = _padding(2, 33, (33, 7))
  f = lambda q, k, v: attention.blockwise_attention(
    q, k, v, mask=mask, block_q=8, block_k=8
  )
  out = jax.jit(f)(q, k, v)
  assert out.dtype == dtype
  # The float32 computation on the same (rounded) inputs, rounded once.
  want = jax.jit(attention.dot_product_attention)(
    *(x.astype(jnp.float32) for x in (q, k, v)), mask=mask
  )
  np.testing.assert_allclose(
    out.astype(jnp.float32),
    want.astype(dtype).astype(jnp.float32),
    rtol=1e-2,
    atol=1e-2,
  )
  grads = jax.jit(
    jax.grad(lambda *a: f(*a).astype(jnp.float32).sum(), argnums=(0, 1, 2))
  )(q, k, v)
  for g in grads:
    assert g.dtype == dtype and np.all(np.isfinite(g.astype(jnp.float32)))
  # `dtype` promotes float32 inputs down, as Flax's promote_dtype does.
  q32 = q.astype(jnp.float32)
  assert (
    jax.eval_shape(
      functools.partial(attention.blockwise_attention, dtype=dtype, block_q=8),
      q32,
      q32,
      q32,
    ).dtype
    == dtype
  )


def test_vmap_and_grad_of_vmap_match_the_batched_call():
  q, k, v = _qkv((3,), 12, 20, 2, 1)
  f = functools.partial(
    attention.blockwise_attention, is_causal=True, block_q=8, block_k=8
  )
  # vmap over a leading axis: the layout has no batch axis inside.
  np.testing.assert_allclose(
    jax.jit(jax.vmap(f))(q, k, v), jax.jit(f)(q, k, v), **VALUE_TOL
  )
  loss = lambda f: lambda q, k, v: jnp.sum(f(q, k, v) ** 2)
  got = jax.jit(jax.grad(loss(jax.vmap(f)), argnums=(0, 1, 2)))(q, k, v)
  want = jax.jit(jax.grad(loss(f), argnums=(0, 1, 2)))(q, k, v)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, **GRAD_TOL)


def _block_dropout_keep(rng, rate, shape, bq, bk, broadcast):
  """The documented block-wise dropout mask, rebuilt whole: ``[B|1, H|1,
  q, kv]`` (block (i, j) from ``fold_in(fold_in(rng, i), j)``)."""
  b, heads, q_len, kv_len = shape
  lead = (1, 1, 1) if broadcast else (b, heads, 1)
  rows = []
  for i in range(-(-q_len // bq)):
    row = [
      jax.random.bernoulli(
        jax.random.fold_in(jax.random.fold_in(rng, i), j),
        1 - rate,
        lead + (bq, bk),
      )
      for j in range(-(-kv_len // bk))
    ]
    rows.append(jnp.concatenate(row, axis=-1))
  return jnp.concatenate(rows, axis=-2)[:, :, 0, :q_len, :kv_len]


@pytest.mark.parametrize(
  "broadcast, alpha",
  [(True, 1.0), (False, PER_HEAD)],
  ids=["softmax-broadcast", "per_head_alpha"],
)
def test_dropout_is_block_wise_and_regenerated_in_backward(broadcast, alpha):
  """Values and gradients (α's too) of the documented block-wise mask
  applied to the dense weights."""
  q, k, v = _qkv((2,), 12, 20, 2, 2)
  alpha_arg, normalizer = _alpha(alpha, 2)
  rng = jax.random.key(3, impl="rbg")  # compiles faster than threefry
  rate, bq, bk = 0.3, 8, 8
  keep = jax.jit(_block_dropout_keep, static_argnums=range(1, 6))(
    rng, rate, (2, 2, 12, 20), bq, bk, broadcast
  )
  assert 0.5 < float(keep.mean()) < 0.9  # about 1 - rate kept

  def f(q, k, v, a):
    return attention.blockwise_attention(
      q,
      k,
      v,
      alpha=a,
      dropout_rng=rng,
      dropout_rate=rate,
      block_q=bq,
      block_k=bk,
      broadcast_dropout=broadcast,
    )

  def ref(q, k, v, a):
    weights = attention.dot_product_attention_weights(
      q, k, normalizer=normalizer(a)
    )
    return jnp.einsum("bhqk,bkhd->bqhd", weights * keep / (1 - rate), v)

  cot = _normal(5, q.shape)
  learned = not isinstance(alpha_arg, float)
  argnums = (0, 1, 2, 3) if learned else (0, 1, 2)
  both = lambda f: jax.jit(
    lambda *a: (
      f(*a),
      jax.grad(lambda *a: jnp.sum(f(*a) * cot), argnums=argnums)(*a),
    ),
    static_argnums=() if learned else (3,),
  )
  args = (q, k, v, alpha_arg)
  (out, got), (want, want_grads) = both(f)(*args), both(ref)(*args)
  np.testing.assert_allclose(out, want, **VALUE_TOL)
  for g, w in zip(got, want_grads):
    np.testing.assert_allclose(g, w, **GRAD_TOL)
  if alpha != 1.0:
    return
  # deterministic=True (or rate 0) is the plain attention.
  plain = jax.jit(attention.dot_product_attention)(q, k, v)
  for kw in (
    dict(deterministic=True, dropout_rng=rng, dropout_rate=rate),
    dict(dropout_rate=0.0),
  ):
    np.testing.assert_allclose(
      jax.jit(functools.partial(attention.blockwise_attention, **kw))(q, k, v),
      plain,
      **VALUE_TOL,
    )


def test_errors_name_the_argument():
  q, k, v = _qkv((1,), 4, 6, 2, 2)
  with pytest.raises(ValueError, match="alpha"):
    attention.blockwise_attention(q, k, v, alpha=0.5)
  with pytest.raises(ValueError, match="alpha"):
    attention.blockwise_attention(q, k, v, alpha=jnp.array([1.5, 0.5]))
  with pytest.raises(ValueError, match="num_heads"):  # one α per head
    attention.blockwise_attention(q, k, v, alpha=jnp.ones((3,)))
  with pytest.raises(TypeError, match="alpha"):
    attention.blockwise_attention(q, k, v, alpha=True)
  for name in ("block_q", "block_k", "n_iter"):
    with pytest.raises(ValueError, match=name):
      attention.blockwise_attention(q, k, v, **{name: 0})
  with pytest.raises(ValueError, match="dropout_rng"):
    attention.blockwise_attention(q, k, v, dropout_rate=0.1)
  with pytest.raises(ValueError, match="dropout_rate"):
    attention.blockwise_attention(
      q, k, v, dropout_rate=1.0, dropout_rng=jax.random.key(0)
    )
  with pytest.raises(ValueError, match="sow_weights"):
    attention.blockwise_attention(q, k, v, module=object())
  with pytest.raises(ValueError, match="einsum"):
    attention.blockwise_attention(
      q,
      k,
      v,
      qk_attn_weights_einsum=jnp.einsum,
      attn_weights_value_einsum=jnp.einsum,
    )
  with pytest.raises(ValueError, match="`bias`"):
    attention.blockwise_attention(q, k, v, bias=jnp.zeros((2, 4, 5)))
  with pytest.raises(ValueError, match="mask"):
    attention.blockwise_attention(q, k, v, mask=jnp.ones((4, 7), bool))
  with pytest.raises(ValueError, match="multiple"):
    attention.blockwise_attention(q, k[..., :1, :][:, :, [0, 0, 0]], v)
  with pytest.raises(TypeError, match="dropout_prob"):
    attention.blockwise_attention(q, k, v, dropout_prob=0.1)


def test_empty_lengths_give_empty_or_zero_output():
  q, k, v = _qkv((1,), 3, 0, 2, 2)
  out = attention.blockwise_attention(q, k, v)
  assert out.shape == (1, 3, 2, 8)
  np.testing.assert_array_equal(out, 0.0)


def test_static_alpha_one_keeps_online_softmax():
  """α = 1.0 (a float) takes the one-sweep online softmax; an array α the
  family's passes, even where it equals 1 (and gives the same values)."""
  cfg = layout.Config(8, 8, 8, 8, False, 0.0, True, None)
  rule = lambda a: rules.rule(_core.member_for_heads(a, 2, 2, jnp.float32), cfg)
  assert rule(1.0) is rules.SOFTMAX and rule(1) is rules.SOFTMAX
  assert isinstance(rule(jnp.ones(2)), rules.Entmax)
  assert isinstance(rule(1.5), rules.Entmax)


def test_alpha_above_two_bisects():
  """α > 2 (bisection from the group maxima's threshold): values of dense
  float32 to its accuracy (both within ~1e-4 of float64 here)."""
  q, k, v = _qkv((1,), 12, 21, 2, 2)
  mask = _padding(1, 21, (15,))
  ours = jax.jit(
    lambda q, k, v: attention.blockwise_attention(
      q, k, v, mask=mask, alpha=3.0, block_q=8, block_k=8
    )
  )(q, k, v)
  dense = jax.jit(
    lambda q, k, v: attention.dot_product_attention(
      q,
      k,
      v,
      mask=mask,
      normalizer=lambda s, **kw: softjax.entmax(s, 3.0, **kw),
    )
  )(q, k, v)
  np.testing.assert_allclose(ours, dense, rtol=1e-3, atol=3e-4)


# --- Memory: XLA's own accounting of the compiled fwd+bwd. ----------------


def _fwd_bwd_temp_bytes(
  f, length: int, heads: int = 4, depth: int = 32, **kw
) -> int:
  x = jax.ShapeDtypeStruct((1, length, heads, depth), jnp.float32)
  grad = jax.jit(
    jax.grad(lambda q, k, v: jnp.sum(f(q, k, v, **kw)), argnums=(0, 1, 2))
  )
  return grad.lower(x, x, x).compile().memory_analysis().temp_size_in_bytes


def test_memory_is_linear_and_far_below_the_scores():
  heads, length = 4, 2048
  block = functools.partial(
    attention.blockwise_attention, block_q=128, block_k=128
  )
  scores = heads * length * length * 4  # one float32 score matrix
  small = _fwd_bwd_temp_bytes(block, length)
  large = _fwd_bwd_temp_bytes(block, 2 * length)
  causal = _fwd_bwd_temp_bytes(block, 2 * length, is_causal=True)
  dense = _fwd_bwd_temp_bytes(attention.dot_product_attention, length)
  assert dense >= scores  # the dense path holds the scores
  assert small < scores / 8, (small, scores)
  assert large < 2.2 * small, (small, large)  # linear in the length
  assert causal <= 1.1 * large, (causal, large)  # no mask array


def test_sparse_memory_is_linear_with_a_learned_alpha():
  """entmax with one learnable α per head: fwd+bwd (α's gradient included)
  in memory linear in the length, far below one score matrix."""
  heads, length = 4, 2048

  def temp(n: int) -> int:
    x = jax.ShapeDtypeStruct((1, n, heads, 32), jnp.float32)
    a = jax.ShapeDtypeStruct((heads,), jnp.float32)
    f = lambda q, k, v, a: jnp.sum(
      attention.blockwise_attention(q, k, v, alpha=a, block_q=128, block_k=128)
    )
    grad = jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))
    return grad.lower(x, x, x, a).compile().memory_analysis().temp_size_in_bytes

  small, large = temp(length), temp(2 * length)
  assert small < heads * length * length * 4 / 8, small
  assert large < 2.2 * small, (small, large)


def test_key_padding_mask_costs_linear_memory():
  length = 2048
  mask = jnp.arange(length) < length - 100
  f = lambda q, k, v: attention.blockwise_attention(
    q, k, v, mask=mask[None, None, None], block_q=128, block_k=128
  )
  g = lambda q, k, v: attention.blockwise_attention(
    q, k, v, block_q=128, block_k=128
  )
  assert _fwd_bwd_temp_bytes(f, length) < 1.2 * _fwd_bwd_temp_bytes(g, length)


# --- Flax: a drop-in attention_fn. -------------------------------------------

flax = pytest.importorskip("flax")
from flax import linen as nn  # noqa: E402
from flax import nnx  # noqa: E402

B, L, IN, HEADS = 2, 13, 12, 3


# The Flax drop-ins: Linen with softmax, NNX with a per-head array α (the α
# is passed through unchanged; test_matches_dense covers the maps).
def test_linen_module_drop_in():
  alpha = 1.0
  x = _normal(11, (B, L, IN))
  mask = nn.make_attention_mask(
    jnp.ones((B, L), bool), jnp.arange(L)[None] < jnp.array([[L], [4]])
  )
  alpha_arg, normalizer = _alpha(alpha, HEADS)
  common = dict(num_heads=HEADS, qkv_features=HEADS * 4, dropout_rate=0.2)
  ours = nn.MultiHeadDotProductAttention(
    **common,
    attention_fn=(
      functools.partial(
        attention.blockwise_attention, alpha=alpha_arg, block_q=8, block_k=8
      )
    ),
  )
  ref = nn.MultiHeadDotProductAttention(
    **common,
    attention_fn=(
      functools.partial(
        attention.dot_product_attention, normalizer=normalizer(alpha_arg)
      )
    ),
  )
  params = ref.init(jax.random.key(0), x, mask=mask, deterministic=True)
  apply = lambda m: jax.jit(m.apply, static_argnames="deterministic")
  evaluated = apply(ours)(params, x, mask=mask, deterministic=True)
  np.testing.assert_allclose(
    evaluated, apply(ref)(params, x, mask=mask, deterministic=True), **VALUE_TOL
  )
  # With dropout, Flax hands us its rng and rate: finite, not the eval output.
  train = apply(ours)(
    params,
    x,
    mask=mask,
    deterministic=False,
    rngs={"dropout": jax.random.key(1, impl="rbg")},
  )
  assert np.all(np.isfinite(train))
  assert not np.allclose(train, evaluated, atol=1e-3)
  with pytest.raises(ValueError, match="sow_weights"):
    ours.apply(
      params,
      x,
      mask=mask,
      deterministic=True,
      sow_weights=True,
      mutable=["intermediates"],
    )


def test_nnx_module_drop_in():
  alpha = PER_HEAD
  x = _normal(12, (B, L, IN))
  alpha_arg, normalizer = _alpha(alpha, HEADS)
  common = dict(
    num_heads=HEADS,
    in_features=IN,
    qkv_features=HEADS * 4,
    dropout_rate=0.2,
    decode=False,
  )
  layers = [
    nnx.MultiHeadAttention(
      **common, rngs=nnx.Rngs(0, dropout=1), attention_fn=fn
    )
    for fn in (
      functools.partial(
        attention.blockwise_attention, alpha=alpha_arg, block_q=8, block_k=8
      ),
      functools.partial(
        attention.dot_product_attention, normalizer=normalizer(alpha_arg)
      ),
    )
  ]

  @nnx.jit
  def evaluate(layer, x):
    return (
      layer(x, deterministic=True, is_causal=False),
      layer(x, deterministic=True, is_causal=True),
    )

  for got, want in zip(evaluate(layers[0], x), evaluate(layers[1], x)):
    np.testing.assert_allclose(got, want, **VALUE_TOL)
  train = nnx.jit(lambda layer, x: layer(x, deterministic=False))(layers[0], x)
  assert np.all(np.isfinite(train))
  with pytest.raises(ValueError, match="sow_weights"):
    layers[0](x, deterministic=True, sow_weights=True)


# --- Sharding: batch and heads split over the 8 simulated devices. -----------


def _out_and_grads(f, argnums):
  """One jitted function (one compilation) giving ``f``'s output and the
  gradients of ``sum(f**2)``."""

  def loss(*a):
    out = f(*a)
    return jnp.sum(out**2), out

  def run(*a):
    grads, out = jax.grad(loss, argnums=argnums, has_aux=True)(*a)
    return out, grads

  return jax.jit(run)


def _sharded_inputs():
  q, k, v = _qkv((2,), 24, 24, 4, 4)
  return q, k, v, _padding(2, 24, (24, 17))


@pytest.mark.parametrize("learned", [False, True], ids=["softmax", "per_head"])
def test_shard_map_batch_and_heads(learned):
  """Batch on "data", heads on "model"; a per-key bias split by batch only
  (its gradient sums over the head shards); a per-head α split by heads
  (its gradient sums over the batch shards)."""
  q, k, v, mask = _sharded_inputs()
  bias = _normal(9, (2, 1, 1, 24))
  alpha = jnp.linspace(1.0, 2.0, 4)
  mesh = jax.make_mesh((2, 4), ("data", "model"))

  def f(q, k, v, b, m, a):
    return attention.blockwise_attention(
      q,
      k,
      v,
      b,
      mask=m,
      alpha=a if learned else 1.0,
      is_causal=True,
      block_q=8,
      block_k=8,
    )

  spec = P("data", None, "model", None)
  specs = (spec,) * 3 + (P("data"), P("data"), P("model"))
  sharded = jax.jit(jax.shard_map(f, mesh=mesh, in_specs=specs, out_specs=spec))
  args = (q, k, v, bias, mask, alpha)
  placed = [
    jax.device_put(x, NamedSharding(mesh, s)) for x, s in zip(args, specs)
  ]
  argnums = (0, 1, 2, 3, 5) if learned else (0, 1, 2, 3)
  out, got = _out_and_grads(sharded, argnums)(*placed)
  want_out, want = _out_and_grads(f, argnums)(*args)
  np.testing.assert_allclose(out, want_out, **VALUE_TOL)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, **GRAD_TOL)


@pytest.mark.parametrize(
  "axis_types, alpha",
  [(AxisType.Explicit, 1.0), (AxisType.Auto, 1.0), (AxisType.Explicit, 1.5)],
  ids=["explicit", "auto", "explicit_entmax15"],
)
def test_sharded_jit_keeps_sharding_and_never_gathers(axis_types, alpha):
  q, k, v, mask = _sharded_inputs()
  mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(axis_types,) * 2)
  sharding = NamedSharding(mesh, P("data", None, "model", None))
  qs, ks, vs = (jax.device_put(x, sharding) for x in (q, k, v))
  f = lambda q, k, v: attention.blockwise_attention(
    q, k, v, mask=mask, alpha=alpha, is_causal=True, block_q=8, block_k=8
  )
  run = _out_and_grads(f, (0, 1, 2))
  out, grads = run(qs, ks, vs)
  want_out, want = run(q, k, v)
  np.testing.assert_allclose(out, want_out, **VALUE_TOL)
  assert out.sharding.is_equivalent_to(sharding, 4), out.sharding
  for g, w in zip(grads, want):
    np.testing.assert_allclose(g, w, **GRAD_TOL)
  text = run.lower(qs, ks, vs).compile().as_text()
  assert "all-gather" not in text and "all-to-all" not in text


def _packed_ids(batch: int, length: int) -> jax.Array:
  """Sorted segment ids, three documents per row at different offsets."""
  cuts = np.array([[5, 13], [9, 18]])[:batch]
  pos = np.arange(length)
  return jnp.asarray(np.sum(pos[None, :, None] >= cuts[:, None, :], -1))


@pytest.mark.parametrize("learned", [False, True], ids=["softmax", "per_head"])
def test_shard_map_with_segments_lengths_and_window(learned):
  """The token structure under shard_map: ids and lengths split by batch
  with the queries; the same values and gradients as the unsharded call."""
  q, k, v, _ = _sharded_inputs()
  ids, lengths = _packed_ids(2, 24), jnp.array([20, 24])
  alpha = jnp.linspace(1.0, 2.0, 4)
  mesh = jax.make_mesh((2, 4), ("data", "model"))

  def f(q, k, v, ids, lengths, a):
    return attention.blockwise_attention(
      q,
      k,
      v,
      alpha=a if learned else 1.0,
      segment_ids=ids,
      kv_lengths=lengths,
      local_window_size=(6, 2),
      logits_soft_cap=3.0,
      block_q=8,
      block_k=8,
    )

  spec = P("data", None, "model", None)
  specs = (spec,) * 3 + (P("data", None), P("data"), P("model"))
  sharded = jax.jit(jax.shard_map(f, mesh=mesh, in_specs=specs, out_specs=spec))
  args = (q, k, v, ids, lengths, alpha)
  placed = [
    jax.device_put(x, NamedSharding(mesh, s)) for x, s in zip(args, specs)
  ]
  argnums = (0, 1, 2, 5) if learned else (0, 1, 2)
  out, got = _out_and_grads(sharded, argnums)(*placed)
  want_out, want = _out_and_grads(f, argnums)(*args)
  np.testing.assert_allclose(out, want_out, **VALUE_TOL)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, **GRAD_TOL)


@pytest.mark.parametrize("alpha", [1.0, 1.5], ids=["softmax", "entmax15"])
def test_sharded_jit_with_segments_keeps_sharding(alpha):
  """Segment ids and lengths sharded by batch under explicit sharding: the
  output keeps the queries' sharding and nothing is gathered."""
  q, k, v, _ = _sharded_inputs()
  ids, lengths = _packed_ids(2, 24), jnp.array([17, 24])
  mesh = jax.make_mesh(
    (2, 4), ("data", "model"), axis_types=(AxisType.Explicit,) * 2
  )
  sharding = NamedSharding(mesh, P("data", None, "model", None))
  placed = [jax.device_put(x, sharding) for x in (q, k, v)]
  placed.append(jax.device_put(ids, NamedSharding(mesh, P("data", None))))
  placed.append(jax.device_put(lengths, NamedSharding(mesh, P("data"))))
  f = lambda q, k, v, ids, n: attention.blockwise_attention(
    q,
    k,
    v,
    alpha=alpha,
    is_causal=True,
    segment_ids=ids,
    q_lengths=n,
    block_q=16,  # padded to 32: the ids are padded too
    block_k=16,
  )
  run = _out_and_grads(f, (0, 1, 2))
  out, grads = run(*placed)
  want_out, want = run(q, k, v, ids, lengths)
  np.testing.assert_allclose(out, want_out, **VALUE_TOL)
  assert out.sharding.is_equivalent_to(sharding, 4), out.sharding
  for g, w in zip(grads, want):
    np.testing.assert_allclose(g, w, **GRAD_TOL)
  text = run.lower(*placed).compile().as_text()
  assert "all-gather" not in text and "all-to-all" not in text


@pytest.mark.parametrize("alpha", [1.0, 1.5], ids=["softmax", "entmax15"])
def test_dropout_with_segments_lengths_and_window(alpha):
  """Dropout's block-wise mask over the token structure: the dense weights
  under the equivalent explicit mask (written out here), times the mask."""
  q, k, v = _qkv((2,), 12, 20, 2, 2)
  rng = jax.random.key(3, impl="rbg")
  rate, bq, bk = 0.3, 8, 8
  keep = jax.jit(_block_dropout_keep, static_argnums=range(1, 6))(
    rng, rate, (2, 2, 12, 20), bq, bk, True
  )
  q_ids = np.array([[0] * 5 + [1] * 7, [0] * 9 + [1] * 3])
  kv_ids = np.array([[0] * 8 + [1] * 12, [0] * 15 + [1] * 5])
  kv_lengths = np.array([18, 20])
  qi, kj = np.arange(12)[:, None], np.arange(20)[None, :]
  allowed = (q_ids[:, :, None] == kv_ids[:, None, :]) & (
    kj < kv_lengths[:, None, None]
  )
  allowed &= (kj >= qi - 4) & (kj <= qi + 6)
  structure = dict(
    q_segment_ids=jnp.asarray(q_ids),
    kv_segment_ids=jnp.asarray(kv_ids),
    kv_lengths=jnp.asarray(kv_lengths),
    local_window_size=(4, 6),
  )

  def f(q, k, v):
    return attention.blockwise_attention(
      q,
      k,
      v,
      alpha=alpha,
      dropout_rng=rng,
      dropout_rate=rate,
      block_q=bq,
      block_k=bk,
      **structure,
    )

  def ref(q, k, v):
    weights = attention.dot_product_attention_weights(
      q,
      k,
      mask=jnp.asarray(allowed)[:, None],
      normalizer=lambda s, **kw: softjax.entmax(s, alpha, **kw),
    )
    return jnp.einsum("bhqk,bkhd->bqhd", weights * keep / (1 - rate), v)

  cot = _normal(5, q.shape)
  both = lambda f: jax.jit(
    lambda *a: (
      f(*a),
      jax.grad(lambda *a: jnp.sum(f(*a) * cot), argnums=(0, 1, 2))(*a),
    )
  )
  (out, got), (want, want_grads) = both(f)(q, k, v), both(ref)(q, k, v)
  np.testing.assert_allclose(out, want, **VALUE_TOL)
  for g, w in zip(got, want_grads):
    np.testing.assert_allclose(g, w, **GRAD_TOL)
