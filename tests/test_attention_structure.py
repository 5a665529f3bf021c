"""Token structure of both attention functions, against explicit masks.

The keywords ``segment_ids`` (or ``q_segment_ids`` with ``kv_segment_ids``),
``q_lengths``, ``kv_lengths``, ``local_window_size`` (with and without
``is_causal``) and ``logits_soft_cap`` of
``softjax.attention.blockwise_attention`` and
``softjax.attention.dot_product_attention``.

The reference never uses those keywords: it is the dense path
(``dot_product_attention``) given the equivalent boolean ``mask``, written
out here in NumPy from the ids, lengths, window and causality
(:func:`_structure_mask`), and for the soft cap a normaliser that caps the
scores itself (``c * tanh(s / c)``, :func:`_dense_map`). Checked:

* values and gradients (query, key, value, bias, a per-head α) of the
  block-wise path to float32 rounding, for softmax and the sparse maps, over
  packed documents, separate query/key ids, lengths, windows, the cap, and
  all of them with a mask, a bias, grouped heads and two batch axes;
* the dense path's keywords against its own explicit-mask call;
* exact zeros (never NaN) past the lengths, in values and gradients;
* jit, vmap and grad against the plain call;
* that the sweeps visit exactly the block pairs holding an allowed
  (query, key) position (counted, against a brute-force count over the
  positions), and a number of pairs linear in the length for a window;
* memory far below the dense path's (XLA's own accounting, compile only);
* the one-pass decoding forward (a few queries against a padded cache);
* the argument errors, and half precision.
"""

from __future__ import annotations

import functools

from _tiers import slow_except
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

import softjax
from softjax import attention
from softjax._attention import blockwise
from softjax._attention import forward
from softjax._attention import layout
from softjax._attention import sweeps
from softjax._attention import tokens

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
FUNCTIONS = {
  "blockwise": attention.blockwise_attention,
  "dense": attention.dot_product_attention,
}


def _normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
  # NumPy draws: jax.random would compile a sampler for every shape.
  return jnp.asarray(
    np.random.default_rng(seed).standard_normal(shape, np.float32)
  )


def _qkv(batch, q_len, kv_len, heads, kv_heads, depth=8, seed=0):
  return (
    _normal(seed, batch + (q_len, heads, depth)),
    _normal(seed + 1, batch + (kv_len, kv_heads, depth)),
    _normal(seed + 2, batch + (kv_len, kv_heads, depth)),
  )


def _alpha_arg(alpha, heads: int):
  """The ``alpha`` of ``blockwise_attention``: a number or one per head
  (from exactly 1, softmax, to 2, sparsemax)."""
  return jnp.linspace(1.0, 2.0, heads) if alpha == PER_HEAD else alpha


def _dense_map(alpha, a, cap=None):
  """The dense path's ``normalizer`` for α (its value ``a``), capping the
  scores itself when ``cap`` is given."""
  if alpha == 1.0:
    norm = softjax.softmax
  elif alpha == PER_HEAD:
    norm = lambda s, **kw: softjax.entmax(s, a[:, None, None], **kw)
  else:
    norm = lambda s, **kw: softjax.entmax(s, a, **kw)
  if cap is None:
    return norm
  return lambda s, **kw: norm(cap * jnp.tanh(s / cap), **kw)


def _ids(seed, batch, length, docs) -> np.ndarray:
  """Sorted ids of ``docs`` packed documents per row (cut at random places,
  different in every row), ``[batch..., length]`` int32. The ids are spaced
  and offset per row (e.g. 5, 8, 11), not 0, 1, 2."""
  rng = np.random.default_rng(seed)
  out = np.empty(batch + (length,), np.int32)
  for index in np.ndindex(*batch):
    cuts = np.sort(rng.choice(np.arange(1, length), docs - 1, replace=False))
    doc = np.searchsorted(cuts, np.arange(length), side="right")
    out[index] = 3 * doc + 2
  return out


def _structure_mask(
  batch,
  q_len,
  kv_len,
  *,
  segment_ids=None,
  q_segment_ids=None,
  kv_segment_ids=None,
  q_lengths=None,
  kv_lengths=None,
  window=None,
  causal=False,
) -> np.ndarray:
  """Who sees whom, written out: ``[batch..., 1, q_len, kv_len]`` bool."""
  if segment_ids is not None:
    q_segment_ids = kv_segment_ids = segment_ids
  qp = np.arange(q_len)[:, None]
  kp = np.arange(kv_len)[None, :]
  keep = np.ones(tuple(batch) + (q_len, kv_len), bool)
  if causal:
    keep &= kp <= qp
  if window is not None:
    left, right = (window, window) if isinstance(window, int) else window
    keep &= (kp >= qp - left) & (kp <= qp + right)
  if q_segment_ids is not None:
    q_ids, kv_ids = np.asarray(q_segment_ids), np.asarray(kv_segment_ids)
    keep &= q_ids[..., :, None] == kv_ids[..., None, :]
  if q_lengths is not None:
    keep &= qp < np.asarray(q_lengths)[..., None, None]
  if kv_lengths is not None:
    keep &= kp < np.asarray(kv_lengths)[..., None, None]
  return keep[..., None, :, :]


def _random_mask(seed, shape, p):
  return np.random.default_rng(seed).random(shape) < p


# name -> a dict: shapes (batch, q_len, kv_len, heads, kv_heads), the token
# arrays (NumPy; the same for the keywords and the reference mask), the
# static keywords (window, causality, cap), and an optional bias and mask.
# Built lazily (no device work at collection). Lengths are not multiples of
# the blocks (8 x 8).
CASES = {
  # Packed documents, 3 to 5 per row, cut differently in each row.
  "packed": lambda: dict(
    shapes=((3,), 45, 45, 2, 2),
    toks=dict(
      segment_ids=np.concatenate(
        [_ids(s, (1,), 45, d) for s, d in ((1, 3), (2, 4), (3, 5))]
      )
    ),
  ),
  # Separate ids, more queries than keys; the queries of the fourth
  # document see no key at all.
  "q_kv_segments": lambda: dict(
    shapes=((2,), 45, 37, 2, 2),
    toks=dict(
      q_segment_ids=_ids(4, (2,), 45, 4),
      kv_segment_ids=_ids(5, (2,), 37, 3),
    ),
  ),
  # Valid lengths, one row without queries, one without keys.
  "lengths": lambda: dict(
    shapes=((4,), 37, 45, 2, 2),
    toks=dict(
      q_lengths=np.array([37, 20, 0, 29], np.int32),
      kv_lengths=np.array([10, 45, 31, 0], np.int32),
    ),
    bias=_normal(6, (4, 2, 37, 45)),
  ),
  "window_int": lambda: dict(
    shapes=((2,), 45, 45, 2, 2),
    static=dict(local_window_size=7),
  ),
  # Top-left aligned causality with a wider key sequence.
  "window_pair_causal": lambda: dict(
    shapes=((2,), 37, 45, 2, 2),
    static=dict(local_window_size=(10, 3), is_causal=True),
  ),
  # A full bias: the cap applies to the scores with the bias.
  "soft_cap_bias": lambda: dict(
    shapes=((2,), 37, 45, 2, 2),
    static=dict(logits_soft_cap=2.0),
    bias=3.0 * _normal(7, (2, 2, 37, 45)),
  ),
  # Everything at once, with a user mask, a per-key bias broadcast over one
  # batch axis, grouped heads (4 query heads, 2 key heads), two batch axes.
  "combined": lambda: dict(
    shapes=((2, 2), 37, 45, 4, 2),
    toks=dict(
      q_segment_ids=_ids(8, (2, 2), 37, 2),
      kv_segment_ids=_ids(9, (2, 2), 45, 2),
      q_lengths=np.array([[37, 30], [25, 0]], np.int32),
      kv_lengths=np.array([[45, 40], [19, 33]], np.int32),
    ),
    static=dict(local_window_size=(13, 4), logits_soft_cap=5.0),
    bias=_normal(10, (2, 1, 4, 1, 45)),
    mask=_random_mask(11, (2, 2, 4, 37, 45), 0.8),
  ),
  # Causal packed documents with lengths, a window and the cap; one key
  # head for four query heads.
  "combined_causal": lambda: dict(
    shapes=((2,), 45, 45, 4, 1),
    toks=dict(
      segment_ids=_ids(12, (2,), 45, 3),
      q_lengths=np.array([45, 38], np.int32),
      kv_lengths=np.array([41, 45], np.int32),
    ),
    static=dict(local_window_size=9, is_causal=True, logits_soft_cap=3.0),
    bias=_normal(13, (4, 45, 45)),
  ),
  # Ids in no order (a token's segment is not contiguous): the block flags
  # compare ranges of ids, which then overlap almost everywhere.
  "unsorted_ids": lambda: dict(
    shapes=((2,), 45, 45, 2, 2),
    toks=dict(
      segment_ids=np.random.default_rng(14)
      .integers(0, 3, (2, 45))
      .astype(np.int32)
    ),
  ),
}


def _case(name):
  case = CASES[name]()
  case.setdefault("toks", {})
  case.setdefault("static", {})
  return case


def _reference_mask(case) -> np.ndarray:
  """The explicit mask of a case: its structure and its user mask."""
  batch, q_len, kv_len = case["shapes"][:3]
  static = case["static"]
  keep = _structure_mask(
    batch,
    q_len,
    kv_len,
    window=static.get("local_window_size"),
    causal=static.get("is_causal", False),
    **case["toks"],
  )
  if case.get("mask") is not None:
    keep = keep & np.asarray(case["mask"])
  return keep


def _keywords(case):
  """The new keywords of a case (token arrays as JAX arrays)."""
  return {k: jnp.asarray(x) for k, x in case["toks"].items()} | dict(
    case["static"]
  )


def _value_and_grads(f, args, cotangent):
  def run(a):
    out, vjp = jax.vjp(f, a)
    return out, vjp(cotangent)[0]

  return jax.jit(run)(args)


def _both(alpha, case):
  """``(ours, reference)``: the block-wise call with the keywords and the
  dense call with the explicit mask, each as ``(out, grads)``; and the
  arguments differentiated."""
  q, k, v = _qkv(*case["shapes"])
  heads = q.shape[-2]
  alpha_arg = _alpha_arg(alpha, heads)
  args = {"q": q, "k": k, "v": v}
  if case.get("bias") is not None:
    args["bias"] = case["bias"]
  if alpha == PER_HEAD:
    args["alpha"] = alpha_arg
  kw = _keywords(case)
  mask = case.get("mask")
  ref_mask = jnp.asarray(_reference_mask(case))
  cap = case["static"].get("logits_soft_cap")

  def ours(a):
    return attention.blockwise_attention(
      a["q"],
      a["k"],
      a["v"],
      a.get("bias"),
      None if mask is None else jnp.asarray(mask),
      alpha=a.get("alpha", alpha_arg),
      block_q=8,
      block_k=8,
      **kw,
    )

  def dense(a):
    return attention.dot_product_attention(
      a["q"],
      a["k"],
      a["v"],
      a.get("bias"),
      ref_mask,
      normalizer=_dense_map(alpha, a.get("alpha", alpha_arg), cap),
    )

  cotangent = _normal(99, q.shape[:-1] + v.shape[-1:])
  got = _value_and_grads(ours, args, cotangent)
  want = _value_and_grads(dense, args, cotangent)
  return got, want, args


def _assert_match(got, want, args):
  (out, grads), (want_out, want_grads) = got, want
  np.testing.assert_allclose(out, want_out, **VALUE_TOL)
  assert np.all(np.isfinite(out))
  for name in args:
    assert grads[name].shape == args[name].shape, name
    assert np.all(np.isfinite(grads[name])), name
    np.testing.assert_allclose(
      grads[name], want_grads[name], err_msg=name, **GRAD_TOL
    )


# Softmax and entmax15 over every case; the other sparse maps (whose
# compilation dominates the file's time) over the cases that differ most.
MATCH_CASES = {
  1.0: tuple(CASES),
  1.5: tuple(CASES),
  PER_HEAD: ("packed", "lengths", "window_pair_causal", "combined"),
  1.3: ("q_kv_segments", "soft_cap_bias", "combined_causal"),
  2.0: ("packed", "lengths", "window_int", "combined"),
}
UNIT_MATCH = {(1.0, "combined"), (PER_HEAD, "combined")}


@pytest.mark.parametrize(
  "alpha, case",
  [
    pytest.param(
      a,
      c,
      id=f"{ALPHA_IDS[a]}-{c}",
      marks=() if (a, c) in UNIT_MATCH else pytest.mark.slow,
    )
    for a, cases in MATCH_CASES.items()
    for c in cases
  ],
)
def test_blockwise_matches_dense_with_explicit_mask(alpha, case):
  """Block-wise with the keywords == dense with the mask written out:
  values and gradients (q, k, v, bias, a per-head α)."""
  case = _case(case)
  ref_mask = _reference_mask(case)
  # Each case leaves some queries with keys to see.
  assert ref_mask.any(axis=-1).mean() > 0.3
  _assert_match(*_both(alpha, case))


# The dense path's keywords: every case for softmax (the masking is the
# same code for every normaliser), the combined cases for the others.
DENSE_PAIRS = [(1.0, c) for c in CASES] + [
  (a, c) for a in (1.5, PER_HEAD) for c in ("combined", "combined_causal")
]


@pytest.mark.parametrize(
  "alpha, case",
  [
    pytest.param(
      a,
      c,
      id=f"{ALPHA_IDS[a]}-{c}",
      marks=() if (a, c) == (1.0, "combined") else pytest.mark.slow,
    )
    for a, c in DENSE_PAIRS
  ],
)
def test_dense_keywords_match_explicit_mask(alpha, case):
  """``dot_product_attention`` with the keywords == the same call with the
  explicit mask (and the capping normaliser for the cap)."""
  case = _case(case)
  q, k, v = _qkv(*case["shapes"])
  alpha_arg = _alpha_arg(alpha, q.shape[-2])
  args = {"q": q, "k": k, "v": v}
  if case.get("bias") is not None:
    args["bias"] = case["bias"]
  if alpha == PER_HEAD:
    args["alpha"] = alpha_arg
  kw = _keywords(case)
  mask = case.get("mask")
  ref_mask = jnp.asarray(_reference_mask(case))
  cap = case["static"].get("logits_soft_cap")

  def ours(a):
    return attention.dot_product_attention(
      a["q"],
      a["k"],
      a["v"],
      a.get("bias"),
      None if mask is None else jnp.asarray(mask),
      normalizer=_dense_map(alpha, a.get("alpha", alpha_arg)),
      **kw,
    )

  def reference(a):
    return attention.dot_product_attention(
      a["q"],
      a["k"],
      a["v"],
      a.get("bias"),
      ref_mask,
      normalizer=_dense_map(alpha, a.get("alpha", alpha_arg), cap),
    )

  cotangent = _normal(98, q.shape[:-1] + v.shape[-1:])
  got = _value_and_grads(ours, args, cotangent)
  want = _value_and_grads(reference, args, cotangent)
  _assert_match(got, want, args)


@pytest.mark.parametrize(
  "alpha", slow_except([1.0, 1.5, PER_HEAD], 1.5), ids=ALPHA_IDS.get
)
def test_past_the_lengths_is_exactly_zero(alpha):
  """Queries at or past ``q_lengths`` give exactly zero output and zero
  gradients (of their query rows and bias rows), keys at or past
  ``kv_lengths`` zero key/value gradients; a row without queries or
  without keys is all zeros; nothing is NaN. For both functions."""
  case = _case("lengths")
  q_lengths = case["toks"]["q_lengths"]
  kv_lengths = case["toks"]["kv_lengths"]
  q, k, v = _qkv(*case["shapes"])
  alpha_arg = _alpha_arg(alpha, q.shape[-2])
  args = {"q": q, "k": k, "v": v, "bias": case["bias"]}
  if alpha == PER_HEAD:
    args["alpha"] = alpha_arg
  kw = _keywords(case)
  cotangent = _normal(97, q.shape[:-1] + v.shape[-1:])

  def ours(a):
    return attention.blockwise_attention(
      a["q"],
      a["k"],
      a["v"],
      a["bias"],
      alpha=a.get("alpha", alpha_arg),
      block_q=8,
      block_k=8,
      **kw,
    )

  def dense(a):
    return attention.dot_product_attention(
      a["q"],
      a["k"],
      a["v"],
      a["bias"],
      normalizer=_dense_map(alpha, a.get("alpha", alpha_arg)),
      **kw,
    )

  for f in (ours, dense):
    out, grads = _value_and_grads(f, args, cotangent)
    assert np.all(np.isfinite(out))
    for g in grads.values():
      assert np.all(np.isfinite(g))
    for b, (n_q, n_k) in enumerate(zip(q_lengths, kv_lengths)):
      np.testing.assert_array_equal(out[b, n_q:], 0.0)
      np.testing.assert_array_equal(grads["q"][b, n_q:], 0.0)
      np.testing.assert_array_equal(grads["bias"][b, :, n_q:], 0.0)
      np.testing.assert_array_equal(grads["bias"][b, :, :, n_k:], 0.0)
      np.testing.assert_array_equal(grads["k"][b, n_k:], 0.0)
      np.testing.assert_array_equal(grads["v"][b, n_k:], 0.0)
      if n_q and n_k:  # the valid queries see keys
        assert np.all(np.any(out[b, :n_q] != 0, axis=-1))
    # No query (row 2) or no key (row 3): nothing at all.
    for b in (2, 3):
      np.testing.assert_array_equal(out[b], 0.0)
      for name in "qkv":
        np.testing.assert_array_equal(grads[name][b], 0.0)


@pytest.mark.parametrize(
  "alpha", slow_except([1.0, 1.5], 1.0), ids=ALPHA_IDS.get
)
def test_jit_vmap_grad_match_the_plain_call(alpha):
  """vmap over a leading axis (ids and lengths mapped too, so the block
  flags differ between the mapped calls), under jit, with gradients ==
  the call with that axis as one more batch axis; its first slice == the
  call on that slice alone; and the whole == the explicit-mask reference."""
  q, k, v = _qkv((3, 2), 29, 29, 2, 1)
  ids = np.stack([_ids(20 + n, (2,), 29, 3) for n in range(3)])
  q_lengths = np.array([[29, 11], [0, 20], [17, 29]], np.int32)
  kv_lengths = np.array([[25, 29], [9, 3], [29, 0]], np.int32)

  def f(q, k, v, ids, q_lengths, kv_lengths):
    return attention.blockwise_attention(
      q,
      k,
      v,
      alpha=alpha,
      is_causal=True,
      local_window_size=(12, 0),
      segment_ids=ids,
      q_lengths=q_lengths,
      kv_lengths=kv_lengths,
      block_q=8,
      block_k=8,
    )

  cot = _normal(96, q.shape)

  def value_and_grads(g):
    def run(q, k, v, *toks):
      out, vjp = jax.vjp(lambda q, k, v: g(q, k, v, *toks), q, k, v)
      return out, vjp(cot)

    return jax.jit(run)

  args = (q, k, v) + tuple(map(jnp.asarray, (ids, q_lengths, kv_lengths)))
  mapped, mapped_grads = value_and_grads(jax.vmap(f))(*args)
  whole, whole_grads = value_and_grads(f)(*args)
  np.testing.assert_allclose(mapped, whole, **VALUE_TOL)
  for g, w in zip(mapped_grads, whole_grads):
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, w, **GRAD_TOL)
  first = jax.jit(f)(*(x[0] for x in args))
  np.testing.assert_allclose(mapped[0], first, **VALUE_TOL)
  mask = _structure_mask(
    (3, 2),
    29,
    29,
    segment_ids=ids,
    q_lengths=q_lengths,
    kv_lengths=kv_lengths,
    window=(12, 0),
    causal=True,
  )
  want = attention.dot_product_attention(
    q, k, v, mask=jnp.asarray(mask), normalizer=_dense_map(alpha, alpha)
  )
  np.testing.assert_allclose(whole, want, **VALUE_TOL)


@pytest.mark.slow
@pytest.mark.parametrize("function", ["blockwise", "dense"])
def test_traced_lengths_are_clipped_and_ids_broadcast(function):
  """Lengths traced under jit are not checked but clipped: -3 and 99 act
  as 0 and the length. Ids without batch axes, scalar lengths and other
  integer dtypes (uint8, int16) broadcast to the batch."""
  f = FUNCTIONS[function]
  if function == "blockwise":
    f = functools.partial(f, block_q=8, block_k=8)
  q, k, v = _qkv((2,), 37, 45, 2, 2)
  got = jax.jit(
    lambda q_lengths, kv_lengths: f(
      q, k, v, q_lengths=q_lengths, kv_lengths=kv_lengths
    )
  )(jnp.array([-3, 99]), jnp.array([99, -5]))
  mask = _structure_mask(
    (2,), 37, 45, q_lengths=np.array([0, 37]), kv_lengths=np.array([45, 0])
  )
  want = attention.dot_product_attention(q, k, v, mask=jnp.asarray(mask))
  np.testing.assert_allclose(got, want, **VALUE_TOL)
  np.testing.assert_array_equal(got, 0.0)  # no query, or no key, per row
  q, k, v = _qkv((2,), 45, 45, 2, 2)
  ids = _ids(60, (1,), 45, 3)[0].astype(np.uint8)
  got = f(q, k, v, segment_ids=ids, q_lengths=30, kv_lengths=np.int16(40))
  mask = _structure_mask(
    (2,),
    45,
    45,
    segment_ids=np.broadcast_to(ids, (2, 45)),
    q_lengths=np.array([30, 30]),
    kv_lengths=np.array([40, 40]),
  )
  want = attention.dot_product_attention(q, k, v, mask=jnp.asarray(mask))
  np.testing.assert_allclose(got, want, **VALUE_TOL)


@pytest.mark.slow
def test_alpha_above_two_with_structure():
  """α = 3 (the bisecting solver) with segments, a causal window and the
  cap: values and gradients of dense float32 to its accuracy."""
  case = _case("combined_causal")
  q, k, v = _qkv(*case["shapes"])
  kw = _keywords(case)
  mask = jnp.asarray(_reference_mask(case))
  cap = case["static"]["logits_soft_cap"]
  cot = _normal(94, q.shape)
  args = {"q": q, "k": k, "v": v, "bias": case["bias"]}
  ours = lambda a: attention.blockwise_attention(
    a["q"], a["k"], a["v"], a["bias"], alpha=3.0, block_q=8, block_k=8, **kw
  )
  dense = lambda a: attention.dot_product_attention(
    a["q"],
    a["k"],
    a["v"],
    a["bias"],
    mask,
    normalizer=_dense_map(3.0, 3.0, cap),
  )
  (out, grads), (want, want_grads) = (
    _value_and_grads(f, args, cot) for f in (ours, dense)
  )
  np.testing.assert_allclose(out, want, rtol=1e-3, atol=3e-4)
  for name in args:
    assert np.all(np.isfinite(grads[name]))
    np.testing.assert_allclose(
      grads[name], want_grads[name], rtol=1e-3, atol=1e-3, err_msg=name
    )


# --- The block pairs visited. ------------------------------------------------


def _block_pairs(allowed: np.ndarray, bq: int, bk: int) -> np.ndarray:
  """``[n_q, n_k]``: block pairs holding an allowed (query, key) position in
  some batch row, by brute force over ``allowed`` ``[B, q_len, kv_len]``."""
  b, q_len, kv_len = allowed.shape
  n_q, n_k = -(-q_len // bq), -(-kv_len // bk)
  padded = np.zeros((b, n_q * bq, n_k * bk), bool)
  padded[:, :q_len, :kv_len] = allowed
  return padded.reshape(b, n_q, bq, n_k, bk).any(axis=(0, 2, 4))


def _padded_tokens(cfg, q_ids, kv_ids, q_lengths, kv_lengths):
  """:class:`tokens.Tokens` in the internal layout: ``[B, L_pad]`` ids
  (padded with the last id), ``[B]`` lengths; int32."""

  def pad(x, size):
    if x is None:
      return None
    x = np.asarray(x, np.int32)
    return jnp.asarray(np.pad(x, [(0, 0), (0, size - x.shape[1])], "edge"))

  as_int = lambda x: None if x is None else jnp.asarray(x, jnp.int32)
  return tokens.Tokens(
    pad(q_ids, cfg.n_q * cfg.block_q),
    pad(kv_ids, cfg.n_k * cfg.block_k),
    as_int(q_lengths),
    as_int(kv_lengths),
  )


def _sweep_counts(cfg, toks, batch):
  """Pairs visited by :func:`sweeps.for_key_blocks` for each query block
  and by :func:`sweeps.for_query_blocks` for each key block, each with the
  ``live`` flags of :func:`layout.pairs_seen`, as the passes use them."""

  def run(toks):
    q = jnp.zeros((batch, 1, 1, cfg.n_q * cfg.block_q, 4))
    k = jnp.zeros((batch, 1, cfg.n_k * cfg.block_k, 4))
    ops = layout.Operands(q, k, k, None, None, None, toks)
    live = layout.pairs_seen(cfg, toks)
    count = lambda n, z, c: c + 1
    zero = jnp.zeros((), jnp.int32)
    rows = lax.map(
      lambda i: sweeps.for_key_blocks(
        cfg, ops, i, count, zero, None if live is None else live[i]
      ),
      jnp.arange(cfg.n_q),
    )
    cols = lax.map(
      lambda j: sweeps.for_query_blocks(
        cfg, ops, j, count, zero, None if live is None else live[:, j]
      ),
      jnp.arange(cfg.n_k),
    )
    return rows, cols, layout.visited_pairs(cfg, toks)

  return jax.jit(run)(toks)


# name -> (q_len, kv_len, causal, window, token arrays as for
# _structure_mask); blocks 8 x 8. Batch rows differ.
COUNT_CASES = {
  "packed": lambda: (
    61,
    61,
    False,
    None,
    dict(
      segment_ids=np.concatenate([_ids(30, (1,), 61, 6), _ids(31, (1,), 61, 4)])
    ),
  ),
  "lengths": lambda: (
    37,
    45,
    False,
    None,
    dict(
      q_lengths=np.array([9, 17], np.int32),
      kv_lengths=np.array([23, 0], np.int32),
    ),
  ),
  "window_causal": lambda: (50, 61, True, (10, 3), {}),
  "packed_causal": lambda: (
    61,
    61,
    True,
    None,
    dict(segment_ids=_ids(32, (2,), 61, 5)),
  ),
}


@pytest.mark.parametrize(
  "case", slow_except(COUNT_CASES, "packed", "window_causal")
)
def test_sweeps_visit_exactly_the_pairs_with_an_allowed_position(case):
  """Counted with a body that adds 1 per visit, in both sweeps: each query
  block visits exactly the key blocks holding an allowed position (in some
  batch row), each key block the query blocks; ``layout.visited_pairs``
  gives the same total."""
  q_len, kv_len, causal, window, toks = COUNT_CASES[case]()
  cfg = layout.Config(
    q_len, kv_len, 8, 8, causal, 0.0, True, None, window=window
  )
  batch = 2
  allowed = _structure_mask(
    (batch,), q_len, kv_len, window=window, causal=causal, **toks
  )[:, 0]
  want = _block_pairs(allowed, 8, 8)
  assert want.any() and not want.all()
  if toks:
    ids = toks.get("segment_ids")
    token_arrays = _padded_tokens(
      cfg, ids, ids, toks.get("q_lengths"), toks.get("kv_lengths")
    )
  else:
    token_arrays = None
  rows, cols, total = _sweep_counts(cfg, token_arrays, batch)
  np.testing.assert_array_equal(rows, want.sum(axis=1))
  np.testing.assert_array_equal(cols, want.sum(axis=0))
  assert int(total) == int(want.sum())


def test_sweeps_never_skip_a_needed_pair_when_structures_combine():
  """Segments, lengths and a causal window together: the block flags may
  keep a pair holding no allowed position (each structure is judged by
  itself), but every pair holding one is visited, and no more than the
  plan alone keeps."""
  q_len = kv_len = 61
  ids = _ids(33, (2,), 61, 4)
  q_lengths = np.array([50, 61], np.int32)
  kv_lengths = np.array([61, 37], np.int32)
  cfg = layout.Config(
    q_len, kv_len, 8, 8, True, 0.0, True, None, window=(20, 0)
  )
  allowed = _structure_mask(
    (2,),
    q_len,
    kv_len,
    segment_ids=ids,
    q_lengths=q_lengths,
    kv_lengths=kv_lengths,
    window=(20, 0),
    causal=True,
  )[:, 0]
  want = _block_pairs(allowed, 8, 8)
  toks = _padded_tokens(cfg, ids, ids, q_lengths, kv_lengths)
  rows, cols, total = _sweep_counts(cfg, toks, 2)
  assert np.all(rows >= want.sum(axis=1)) and np.all(cols >= want.sum(axis=0))
  planned = layout.plan(cfg).kind != layout.SKIP
  assert np.all(rows <= planned.sum(axis=1))
  assert int(total) == int(rows.sum()) == int(cols.sum())
  # Every needed pair is among those flagged.
  seen = np.asarray(layout.pairs_seen(cfg, toks)) & planned
  assert np.all(seen[want])


def test_visited_pairs_grow_linearly_with_a_window_or_fixed_documents():
  """A window (with causality or without) or documents of a fixed length:
  the pairs visited are linear in the length, ``a * L + b`` (4x the pairs
  at 4x the length, but the edges), not quadratic."""
  block = 8

  def window_pairs(length, causal):
    cfg = layout.Config(
      length, length, block, block, causal, 0.0, True, None, window=(16, 16)
    )
    return int(layout.visited_pairs(cfg, None))

  # Key blocks per query block inside the band [-16, 16] (causal: [-16, 0]).
  for causal, per_block in ((False, 5), (True, 3)):
    c1, c2, c4 = (window_pairs(n, causal) for n in (256, 512, 1024))
    n1, n2, n4 = (n // block for n in (256, 512, 1024))
    assert c4 - c2 == per_block * (n4 - n2), (c2, c4)
    assert c2 - c1 == per_block * (n2 - n1), (c1, c2)
    # c = per_block * n - edge: the pairs the first and last query blocks
    # lose at the sequence's ends, the same at every length.
    edge = per_block * n1 - c1
    assert 0 < edge <= per_block**2
    assert c4 == 4 * c1 + 3 * edge

  def document_pairs(length):
    cfg = layout.Config(length, length, block, block, False, 0.0, True, None)
    ids = (np.arange(length) // 64)[None]  # 8 blocks per document
    toks = _padded_tokens(cfg, ids, ids, None, None)
    return int(layout.visited_pairs(cfg, toks))

  d1, d4 = document_pairs(256), document_pairs(1024)
  assert d1 == 4 * 8 * 8 and d4 == 4 * d1


# --- Memory: XLA's own accounting of the compiled fwd+bwd (compile only). ---


def _temp_bytes(f, args) -> int:
  """Temp bytes of the jitted fwd+bwd (gradients of q, k, v)."""
  grad = jax.jit(
    jax.grad(
      lambda q, k, v, *rest: jnp.sum(f(q, k, v, *rest)), argnums=(0, 1, 2)
    )
  )
  return grad.lower(*args).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.slow
@pytest.mark.parametrize("structure", ["segments", "causal_window"])
def test_memory_far_below_the_dense_path(structure):
  """At L = 8192 the block-wise fwd+bwd with the keywords needs at most an
  eighth of the temporary memory of the dense path with the equivalent
  explicit mask (which holds the [L, L] scores). Compiled only, never run:
  the ids (say 4 documents) and the mask are abstract, and their values do
  not enter the compiled program. (Measured on XLA:CPU: about 2 MB against
  800 MB.)"""
  length = 8192
  x = jax.ShapeDtypeStruct((1, length, 1, 16), jnp.float32)
  mask = jax.ShapeDtypeStruct((1, 1, length, length), jnp.bool_)
  if structure == "segments":
    ids = jax.ShapeDtypeStruct((1, length), jnp.int32)
    ours = _temp_bytes(
      lambda q, k, v, ids: attention.blockwise_attention(
        q, k, v, segment_ids=ids
      ),
      (x, x, x, ids),
    )
  else:
    ours = _temp_bytes(
      lambda q, k, v: attention.blockwise_attention(
        q, k, v, is_causal=True, local_window_size=(512, 0)
      ),
      (x, x, x),
    )
  dense = _temp_bytes(
    lambda q, k, v, m: attention.dot_product_attention(q, k, v, mask=m),
    (x, x, x, mask),
  )
  assert dense >= length * length * 4  # the dense path holds the scores
  assert ours <= dense / 8, (ours, dense)


# --- Decoding: a few queries against a padded key/value cache. ---------------

DECODE_KV, DECODE_BLOCK_K = 300, 64


@pytest.mark.parametrize("q_len", [1, 4, 16, 17])
def test_decoding_config(q_len):
  """One query block of at most 16 queries, no dropout: the one-pass
  decoding forward."""
  # config(lengths, (block_q, block_k, n_iter), is_causal,
  #        (dropout_rng, dropout_rate, broadcast_dropout, deterministic),
  #        precision)
  blocks = (None, DECODE_BLOCK_K, None)
  cfg = blockwise.config(
    (q_len, DECODE_KV), blocks, False, (None, 0.0, True, False), None
  )
  assert cfg.decoding == (q_len <= 16)
  assert cfg.n_q == 1 and cfg.n_k == 5
  dropping = blockwise.config(
    (q_len, DECODE_KV),
    blocks,
    False,
    (jax.random.key(0), 0.1, True, False),
    None,
  )
  assert not dropping.decoding
  deterministic = blockwise.config(
    (q_len, DECODE_KV),
    blocks,
    False,
    (jax.random.key(0), 0.1, True, True),
    None,
  )
  assert deterministic.decoding == (q_len <= 16)


DECODE_PARAMS = [
  (n, a, "lengths") for n in (1, 4) for a in (1.0, 1.5, PER_HEAD)
]
DECODE_PARAMS += [(4, a, "structured") for a in (1.0, 1.5, PER_HEAD, 2.0)]
DECODE_PARAMS += [(1, 1.5, "structured")]


@pytest.mark.parametrize(
  "q_len, alpha, structure",
  [
    pytest.param(
      n,
      a,
      st,
      id=f"{n}-{ALPHA_IDS[a]}-{st}",
      marks=()
      if (n, a, st) == (4, PER_HEAD, "structured")
      else pytest.mark.slow,
    )
    for n, a, st in DECODE_PARAMS
  ],
)
def test_decoding_matches_dense(q_len, alpha, structure, monkeypatch):
  """1 or 4 queries against a 300-key cache filled differently per row
  (``kv_lengths``; one row empty), with or without segment ids, a window
  and the cap: values and gradients (per-head α's too) == dense with the
  explicit mask; the sparse maps take the decoding pass."""
  calls = []
  decoding_pass = forward.decoding_pass

  def spy(*a, **kw):
    calls.append(1)
    return decoding_pass(*a, **kw)

  monkeypatch.setattr(forward, "decoding_pass", spy)
  batch, heads = 3, 4
  q, k, v = _qkv((batch,), q_len, DECODE_KV, heads, 2, seed=40)
  toks = dict(kv_lengths=np.array([300, 123, 0], np.int32))
  static, cap = {}, None
  if structure == "structured":
    kv_ids = np.sort(
      np.random.default_rng(41).integers(0, 3, (batch, DECODE_KV)), axis=-1
    ).astype(np.int32)
    toks |= dict(
      q_segment_ids=np.array([[0, 0, 1, 1], [2, 2, 2, 2], [0, 1, 1, 2]])[
        :, :q_len
      ].astype(np.int32),
      kv_segment_ids=kv_ids,
    )
    static, cap = dict(local_window_size=(0, 150), logits_soft_cap=2.5), 2.5
  alpha_arg = _alpha_arg(alpha, heads)
  args = {"q": q, "k": k, "v": v}
  if alpha == PER_HEAD:
    args["alpha"] = alpha_arg
  mask = jnp.asarray(
    _structure_mask(
      (batch,), q_len, DECODE_KV, window=static.get("local_window_size"), **toks
    )
  )
  kw = {n: jnp.asarray(x) for n, x in toks.items()} | static

  def ours(a):
    return attention.blockwise_attention(
      a["q"],
      a["k"],
      a["v"],
      alpha=a.get("alpha", alpha_arg),
      block_k=DECODE_BLOCK_K,
      **kw,
    )

  def dense(a):
    return attention.dot_product_attention(
      a["q"],
      a["k"],
      a["v"],
      mask=mask,
      normalizer=_dense_map(alpha, a.get("alpha", alpha_arg), cap),
    )

  cotangent = _normal(95, q.shape)
  got = _value_and_grads(ours, args, cotangent)
  want = _value_and_grads(dense, args, cotangent)
  _assert_match(got, want, args)
  for b, n in enumerate(toks["kv_lengths"]):
    np.testing.assert_array_equal(got[1]["k"][b, n:], 0.0)
    np.testing.assert_array_equal(got[1]["v"][b, n:], 0.0)
  np.testing.assert_array_equal(got[0][2], 0.0)  # the empty cache
  assert bool(calls) == (alpha != 1.0)


# --- Errors. -----------------------------------------------------------------


def _bad_inputs():
  """(keywords, lengths (q, kv), error, the argument named) per bad input."""
  ints = np.zeros((2, 6), np.int32)
  floats = ints.astype(np.float32)
  return [
    (dict(segment_ids=floats), (6, 6), TypeError, "segment_ids"),
    (
      dict(q_segment_ids=floats, kv_segment_ids=ints),
      (6, 6),
      TypeError,
      "q_segment_ids",
    ),
    (
      dict(q_segment_ids=ints, kv_segment_ids=floats),
      (6, 6),
      TypeError,
      "kv_segment_ids",
    ),
    (dict(q_lengths=np.array([1.0, 2.0])), (6, 6), TypeError, "q_lengths"),
    (dict(kv_lengths=np.array([1.0, 2.0])), (6, 6), TypeError, "kv_lengths"),
    (dict(local_window_size=2.5), (6, 6), TypeError, "local_window_size"),
    (dict(local_window_size=(1, 2.0)), (6, 6), TypeError, "local_window_size"),
    (dict(local_window_size=(1, 2, 3)), (6, 6), TypeError, "local_window_size"),
    (dict(local_window_size=True), (6, 6), TypeError, "local_window_size"),
    (
      dict(local_window_size=jnp.array(3)),
      (6, 6),
      TypeError,
      "local_window_size",
    ),
    (
      dict(logits_soft_cap=jnp.array(5.0)),
      (6, 6),
      TypeError,
      "logits_soft_cap",
    ),
    (dict(logits_soft_cap="5"), (6, 6), TypeError, "logits_soft_cap"),
    (dict(logits_soft_cap=True), (6, 6), TypeError, "logits_soft_cap"),
    (
      dict(segment_ids=np.zeros((2, 7), np.int32)),
      (6, 6),
      ValueError,
      "segment_ids",
    ),
    (
      dict(segment_ids=np.zeros((3, 6), np.int32)),
      (6, 6),
      ValueError,
      "segment_ids",
    ),
    (
      dict(q_lengths=np.zeros((2, 6), np.int32)),
      (6, 6),
      ValueError,
      "q_lengths",
    ),
    (
      dict(kv_lengths=np.zeros((3,), np.int32)),
      (6, 6),
      ValueError,
      "kv_lengths",
    ),
    (
      dict(q_segment_ids=ints, kv_segment_ids=np.zeros((2, 5), np.int32)),
      (6, 6),
      ValueError,
      "kv_segment_ids",
    ),
    (dict(q_segment_ids=ints), (6, 6), ValueError, "kv_segment_ids"),
    (dict(kv_segment_ids=ints), (6, 6), ValueError, "q_segment_ids"),
    (
      dict(segment_ids=ints, q_segment_ids=ints, kv_segment_ids=ints),
      (6, 6),
      ValueError,
      "segment_ids",
    ),
    (dict(segment_ids=ints), (6, 7), ValueError, "segment_ids"),
    (dict(q_lengths=np.array([-1, 3])), (6, 6), ValueError, "q_lengths"),
    (dict(q_lengths=np.array([7, 3])), (6, 6), ValueError, "q_lengths"),
    (dict(kv_lengths=np.array([0, 8])), (6, 7), ValueError, "kv_lengths"),
    (dict(local_window_size=-1), (6, 6), ValueError, "local_window_size"),
    (dict(local_window_size=(3, -1)), (6, 6), ValueError, "local_window_size"),
    (dict(logits_soft_cap=0.0), (6, 6), ValueError, "logits_soft_cap"),
    (dict(logits_soft_cap=-2.0), (6, 6), ValueError, "logits_soft_cap"),
    (dict(logits_soft_cap=float("inf")), (6, 6), ValueError, "logits_soft_cap"),
  ]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_errors_name_the_argument(function):
  f = FUNCTIONS[function]
  for kw, (q_len, kv_len), error, name in _bad_inputs():
    q, k, v = _qkv((2,), q_len, kv_len, 2, 2)
    with pytest.raises(error, match=f"`{name}`"):
      f(q, k, v, **kw)
  # The boundaries are accepted: lengths 0 and L, window 0, an int cap.
  q, k, v = _qkv((2,), 6, 7, 2, 2)
  out = f(
    q,
    k,
    v,
    q_lengths=np.array([0, 6]),
    kv_lengths=np.array([7, 0], np.int64),
    local_window_size=0,
    logits_soft_cap=3,
  )
  assert out.shape == q.shape and np.all(np.isfinite(out))


# --- Half precision and huge scores. ----------------------------------------


@pytest.mark.parametrize(
  "alpha", slow_except([1.0, 1.5], 1.0), ids=ALPHA_IDS.get
)
def test_bfloat16_with_segment_ids_is_float32_rounded(alpha):
  """bfloat16 inputs: the float32 result on the same (rounded) inputs,
  rounded once; finite bfloat16 gradients."""
  case = _case("packed")
  q, k, v = (x.astype(jnp.bfloat16) for x in _qkv(*case["shapes"]))
  ids = jnp.asarray(case["toks"]["segment_ids"])
  f = lambda q, k, v: attention.blockwise_attention(
    q, k, v, alpha=alpha, segment_ids=ids, block_q=8, block_k=8
  )
  out = jax.jit(f)(q, k, v)
  assert out.dtype == jnp.bfloat16
  want = attention.dot_product_attention(
    *(x.astype(jnp.float32) for x in (q, k, v)),
    mask=jnp.asarray(_reference_mask(case)),
    normalizer=_dense_map(alpha, alpha),
  )
  np.testing.assert_allclose(
    out.astype(jnp.float32),
    want.astype(jnp.bfloat16).astype(jnp.float32),
    rtol=1e-2,
    atol=1e-2,
  )
  grads = jax.jit(
    jax.grad(lambda *a: f(*a).astype(jnp.float32).sum(), argnums=(0, 1, 2))
  )(q, k, v)
  for g in grads:
    assert g.dtype == jnp.bfloat16
    assert np.all(np.isfinite(g.astype(jnp.float32)))


@pytest.mark.parametrize(
  "alpha", slow_except([1.0, 1.5, 2.0], 1.5), ids=ALPHA_IDS.get
)
def test_soft_cap_keeps_huge_scores_finite(alpha):
  """Queries scaled by 1e4 (scores ~1e4): with the cap the scores lie in
  (-c, c); values equal the capping dense reference and, with gradients,
  stay finite."""
  cap = 4.0
  q, k, v = _qkv((2,), 37, 45, 2, 2, seed=50)
  q = q * 1e4
  ids = _ids(51, (2,), 45, 3)
  kw = dict(
    q_segment_ids=jnp.asarray(ids[:, :37]), kv_segment_ids=jnp.asarray(ids)
  )
  f = lambda q, k, v: attention.blockwise_attention(
    q, k, v, alpha=alpha, logits_soft_cap=cap, block_q=8, block_k=8, **kw
  )
  out = jax.jit(f)(q, k, v)
  mask = _structure_mask(
    (2,), 37, 45, q_segment_ids=ids[:, :37], kv_segment_ids=ids
  )
  want = attention.dot_product_attention(
    q, k, v, mask=jnp.asarray(mask), normalizer=_dense_map(alpha, alpha, cap)
  )
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
  grads = jax.jit(jax.grad(lambda *a: jnp.sum(f(*a) ** 2), argnums=(0, 1, 2)))(
    q, k, v
  )
  for g in grads:
    assert np.all(np.isfinite(g))
