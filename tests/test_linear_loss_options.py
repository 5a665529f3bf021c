"""The options of the fused output-layer losses against materialised ones.

``softjax.losses.linear_{softmax,sparsemax,entmax15,entmax}_loss`` with
``where``, ``ignore_index``, ``reduction``, ``label_smoothing``,
``logit_soft_cap``, ``z_loss``, ``transposed_weight``, ``return_lse`` and
``return_support``, alone and together.

References are built here from the whole logits ``z = h @ w + b`` (soft-capped
here as ``c · tanh(z / c)``), with the smoothed target ``q = (1 - ε)
onehot(y) + ε / V`` built here too, and the masking and reduction done here:

* softmax: optax's ``softmax_cross_entropy_with_integer_labels`` (ε = 0) or
  ``softmax_cross_entropy(z, q)`` minus the entropy of ``q`` (ε > 0), plus
  ``λ · logsumexp(z)²``;
* the sparse maps: the in-memory Fenchel-Young losses of ``softjax.losses``
  (``sparsemax_loss``, ``entmax15_loss``, ``entmax_loss``) with the integer
  label or the soft target ``q``, called without any of their own options;
* support sizes: the entries of ``softjax.entmax``/``softjax.sparsemax`` of
  the capped logits that are positive;
* memory: XLA's ``memory_analysis().temp_size_in_bytes`` of the compiled
  forward and backward passes (compiled, never run).

Gradients (hidden, weight, bias and an array α) are those JAX derives
through the materialised reference. The inputs mix near-uniform tokens
(supports wider than the candidates: the sparse losses' exact fallback)
with peaked ones (the candidates' path); ``test_inputs_take_both_paths``
checks that both paths run, from the forward pass's residuals.
"""

from __future__ import annotations

import functools
import re

from _tiers import slow_except
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import optax
import pytest

import softjax
from softjax import _core
from softjax import losses
from softjax._losses import fused
from softjax._losses import fused_sparse
from softjax._losses.vocab import Target
from softjax._losses.vocab import Vocab

T, D, V, CHUNK = 40, 16, 300, 64  # V: four blocks of 64 and a rest of 44
EPS, CAP, Z_LOSS, IGNORE = 0.1, 4.0, 0.1, -100
# Tokens masked by `where` and tokens labelled IGNORE: both mix near-uniform
# (even) and peaked (odd) tokens.
WHERE = np.arange(T) % 5 != 1
IGNORED = np.arange(T) % 7 == 3
KEEP = WHERE & ~IGNORED

# One α per token (softmax's α = 1 included) and a 0-d array α. α > 2 only
# on peaked (odd) tokens: on near-uniform rows float32 entmax with α > 2 is
# ill-conditioned at the edge of the support (softjax.entmax's docstring:
# errors up to ~1e-3 at α = 3), in the reference as in the fused loss.
ALPHA_PER_TOKEN = np.zeros(T, np.float32)
ALPHA_PER_TOKEN[0::2] = np.resize([1.0, 1.2, 1.5, 2.0], T // 2)
ALPHA_PER_TOKEN[1::2] = np.resize([3.0, 1.3, 2.0, 1.5], T // 2)
ALPHAS = {
  "softmax": 1.0,
  "sparsemax": 2.0,
  "entmax15": 1.5,
  "entmax_1.3": 1.3,
  "entmax_array": ALPHA_PER_TOKEN,
  "entmax_scalar_array": np.float32(1.7),
}
NAMES = list(ALPHAS)
SPARSE = NAMES[1:]
ARRAY = ("entmax_array", "entmax_scalar_array")
CANDIDATES = {"sparsemax": 32}  # the others: 64 (fused.default_candidates)


def _inputs(seed=0, flat=True):
  """Even tokens near-uniform (hidden × 0.01; the bias is small too), odd
  ones peaked (logits of standard deviation ~3)."""
  kh, kw, kb, ky = jax.random.split(jax.random.key(seed), 4)
  h = jax.random.normal(kh, (T, D), jnp.float32)
  if flat:
    h = h.at[::2].multiply(0.01)
  w = jax.random.normal(kw, (D, V), jnp.float32) * (3.0 / np.sqrt(D))
  b = jax.random.normal(kb, (V,), jnp.float32) * 0.02
  y = jax.random.randint(ky, (T,), 0, V)
  return h, w, b, y


def _alpha(name):
  """The α argument: a Python float, or a jnp array (differentiated)."""
  a = ALPHAS[name]
  return jnp.asarray(a) if name in ARRAY else a


# --------------------------------------------------------------------------
# The fused call and its independent reference.
# --------------------------------------------------------------------------


def _fused(name, h, w, b, y, a, **opts):
  """The public fused loss; ``a`` is the α of the array names."""
  opts = dict(bias=b, chunk_size=CHUNK) | opts
  if name == "softmax":
    return losses.linear_softmax_loss(h, w, y, **opts)
  if name == "sparsemax":
    return losses.linear_sparsemax_loss(h, w, y, **opts)
  if name == "entmax15":
    return losses.linear_entmax15_loss(h, w, y, **opts)
  alpha = a if name in ARRAY else ALPHAS[name]
  return losses.linear_entmax_loss(h, w, y, alpha, **opts)


def _logits(h, w, b, cap=None):
  z = h.astype(jnp.float32) @ w.astype(jnp.float32)
  if b is not None:
    z = z + b.astype(jnp.float32)
  return z if cap is None else cap * jnp.tanh(z / cap)


def _smoothed(y, eps, n=V):
  return (1.0 - eps) * jax.nn.one_hot(y, n) + eps / n


def _token_losses(name, z, y, a, eps, z_loss):
  """Per-token reference losses of the (capped) logits, ids in range."""
  if name == "softmax":
    if eps:
      q = _smoothed(y, eps)
      entropy = -jnp.sum(q * jnp.log(q), axis=-1)
      loss = optax.softmax_cross_entropy(z, q) - entropy
    else:
      loss = optax.softmax_cross_entropy_with_integer_labels(z, y)
    return loss + z_loss * jnp.square(jax.nn.logsumexp(z, axis=-1))
  assert not z_loss
  target = _smoothed(y, eps) if eps else y
  if name == "sparsemax":
    return losses.sparsemax_loss(z, target)
  if name == "entmax15":
    return losses.entmax15_loss(z, target)
  alpha = a if name in ARRAY else ALPHAS[name]
  return losses.entmax_loss(z, target, alpha)


def _keep(y, where, ignore_index):
  keep = jnp.ones(y.shape, bool)
  if where is not None:
    keep = keep & where
  if ignore_index is not None:
    keep = keep & (y != ignore_index)
  return keep


def _reduce(loss, keep, reduction):
  if reduction == "none":
    return loss
  if reduction == "sum":
    return jnp.sum(loss)
  return jnp.sum(loss) / jnp.maximum(jnp.sum(keep.astype(loss.dtype)), 1.0)


def _reference(
  name,
  h,
  w,
  b,
  y,
  a,
  *,
  where=None,
  ignore_index=None,
  reduction="none",
  label_smoothing=0.0,
  logit_soft_cap=None,
  z_loss=0.0,
):
  """The materialised loss with the fused loss's keywords."""
  z = _logits(h, w, b, logit_soft_cap)
  keep = _keep(y, where, ignore_index)
  safe = jnp.where(keep, y, 0)
  loss = _token_losses(name, z, safe, a, label_smoothing, z_loss)
  return _reduce(jnp.where(keep, loss, 0.0), keep, reduction)


# name -> the keywords of one configuration. where=True stands for the mask
# WHERE; with ignore_index the tokens IGNORED get the label IGNORE (_labels).
CONFIGS = {
  "where": dict(where=True),
  "ignore_index": dict(ignore_index=IGNORE),
  "smoothing": dict(label_smoothing=EPS),
  "cap": dict(logit_soft_cap=CAP),
  "z_loss": dict(z_loss=Z_LOSS),
  "sum": dict(reduction="sum"),
  "mean": dict(where=True, reduction="mean"),
}
_ALL = dict(
  where=True, ignore_index=IGNORE, label_smoothing=EPS, logit_soft_cap=CAP
)
for _r in ("none", "sum", "mean"):
  CONFIGS[f"all_{_r}"] = _ALL | dict(reduction=_r)


def _options(name, config):
  """(static keywords, use the `where` mask) of a configuration."""
  opts = dict(CONFIGS[config])
  masked = opts.pop("where", False)
  if config.startswith("all") and name == "softmax":
    opts["z_loss"] = Z_LOSS
  return opts, masked


def _labels(y, opts):
  if opts.get("ignore_index") is None:
    return y
  return jnp.where(IGNORED, opts["ignore_index"], y)


@functools.cache
def _value_and_grad(which, name, items):
  """Jitted ``(sum(loss · u), loss), grads`` of the fused loss
  (``which="fused"``) or the reference, for the keywords ``items``.

  The gradients are those of hidden, weight, bias (and α for the array
  names); the per-token weights ``u`` keep per-token errors from
  cancelling.
  """
  f = _fused if which == "fused" else _reference
  opts = dict(items)

  def objective(h, w, b, a, y, where, u):
    loss = f(name, h, w, b, y, a, where=where, **opts)
    return jnp.sum(loss * u), loss

  argnums = (0, 1, 2, 3) if name in ARRAY else (0, 1, 2)
  return jax.jit(jax.value_and_grad(objective, argnums, has_aux=True))


def _weights(opts):
  if opts.get("reduction", "none") != "none":
    return jnp.ones((), jnp.float32)
  return jax.random.uniform(jax.random.key(7), (T,), jnp.float32, 0.5, 1.5)


def _assert_close(got, want, rtol=2e-5, atol=2e-5, what=""):
  if want is None:  # no bias
    assert got is None, what
    return
  assert got.shape == want.shape and got.dtype == want.dtype, what
  np.testing.assert_allclose(
    np.asarray(got, np.float32),
    np.asarray(want, np.float32),
    rtol,
    atol,
    err_msg=what,
  )


def _compare(name, opts, masked, h, w, b, y, a):
  """Fused against reference: values and gradients; returns the loss."""
  items = tuple(sorted(opts.items()))
  where = jnp.asarray(WHERE) if masked else None
  u = _weights(opts)
  args = (h, w, b, a if name in ARRAY else None, y, where, u)
  (_, loss), grads = _value_and_grad("fused", name, items)(*args)
  (_, want), ref_grads = _value_and_grad("reference", name, items)(*args)
  reduced = opts.get("reduction", "none") != "none"
  assert loss.shape == (() if reduced else y.shape)
  _assert_close(loss, want, what="loss")
  whats = ("hidden", "weight", "bias", "alpha")
  for got, ref, what in zip(grads, ref_grads, whats):
    rtol = 1e-4 if what == "alpha" else 2e-5
    _assert_close(got, ref, rtol=rtol, what=what)
  return loss, grads


# Each option alone for softmax and entmax15 (the softmax pass and the
# sparse one); every option together, with each reduction, for every loss.
CASES = [
  (name, config)
  for name in NAMES
  for config in CONFIGS
  if (config != "z_loss" or name == "softmax")
  and (config.startswith("all_") or name in ("softmax", "entmax15"))
]


UNIT_CASES = (
  ("softmax", "all_mean"),
  ("entmax15", "all_none"),
  ("entmax_array", "all_sum"),
)


@pytest.mark.parametrize(
  "name,config",
  [
    pytest.param(
      *case,
      id="-".join(case),
      marks=() if case in UNIT_CASES else pytest.mark.slow,
    )
    for case in CASES
  ],
)
def test_matches_reference(name, config):
  """Each option alone and all together (where, ignore_index = -100,
  smoothing, cap, z_loss for softmax) against the reference; V = 300 in
  blocks of 64, near-uniform and peaked tokens."""
  opts, masked = _options(name, config)
  h, w, b, y = _inputs()
  y = _labels(y, opts)
  loss, grads = _compare(name, opts, masked, h, w, b, y, _alpha(name))
  keep = _keep(
    y, jnp.asarray(WHERE) if masked else None, opts.get("ignore_index")
  )
  if loss.ndim:  # ignored tokens: loss 0 and no gradient
    np.testing.assert_array_equal(np.asarray(loss)[~np.asarray(keep)], 0.0)
  np.testing.assert_array_equal(np.asarray(grads[0])[~np.asarray(keep)], 0.0)


# --------------------------------------------------------------------------
# Which path the sparse losses take.
# --------------------------------------------------------------------------


@functools.cache
def _forward_pass(name, cap, eps):
  """Jitted ``sparse_fwd_pass(h, w, b, labels, keep)``: (loss, support,
  residuals) with the public functions' defaults (k, group)."""
  alpha = _alpha(name)
  family = _core.member_for_tokens(alpha, (T,), jnp.float32)
  k = CANDIDATES.get(name, 64)
  vocab = Vocab(V, CHUNK, None, False, cap)
  return jax.jit(
    lambda h, w, b, y, keep: fused_sparse.sparse_fwd_pass(
      h, w, b, y, keep, family, vocab, k, fused.GROUP, Target(eps, 0.0)
    )
  )


@pytest.mark.slow
@pytest.mark.parametrize("cap", [None, CAP], ids=["no_cap", "cap"])
@pytest.mark.parametrize("name", SPARSE)
def test_inputs_take_both_paths(name, cap):
  """With the inputs of test_matches_reference (smoothing, the mask of the
  "all" configurations), some kept tokens take the wide-support fallback
  and some the candidates' path, with and without the cap."""
  h, w, b, y = _inputs()
  keep = jnp.asarray(KEEP)
  y = jnp.where(IGNORED, 0, y)  # sparse_fwd_pass takes the mask as is
  _, support, res = _forward_pass(name, cap, EPS)(h, w, b, y, keep)
  wide = np.asarray(res.wide)
  assert np.any(wide & KEEP) and np.any(~wide & KEEP), (wide, support)
  assert not np.any(wide & ~KEEP)
  k = CANDIDATES.get(name, 64)
  np.testing.assert_array_less(k - 1, np.asarray(support)[wide])


@pytest.mark.parametrize("name", slow_except(SPARSE, "entmax15"))
def test_ignored_tokens_never_reach_the_fallback(name):
  """Ignored tokens with hidden = 0 and no bias (all V logits tie: support
  V, which is wide) are not flagged wide and get loss 0 and support 0;
  kept tokens are wide exactly when their support reaches the candidates.
  (Their gradients: test_matches_reference.)"""
  h, w, _, y = _inputs(seed=1)
  h = jnp.where(KEEP[:, None], h, 0.0)
  where = jnp.asarray(WHERE)
  y = jnp.where(IGNORED, IGNORE, y)
  keep = _keep(y, where, IGNORE)
  loss, support, res = _forward_pass(name, None, EPS)(
    h, w, None, jnp.where(keep, y, 0), keep
  )
  wide = np.asarray(res.wide)
  assert not np.any(wide[~KEEP])
  # Kept tokens are wide exactly when their support reaches the k
  # candidates (the smallest one has mass), and some are.
  k = CANDIDATES.get(name, 64)
  want = np.asarray(_support_reference(name, _logits(h, w, None))) >= k
  np.testing.assert_array_equal(wide[KEEP], want[KEEP])
  assert np.any(wide[KEEP])
  np.testing.assert_array_equal(np.asarray(support)[~KEEP], 0)
  np.testing.assert_array_equal(np.asarray(loss)[~KEEP], 0.0)


# --------------------------------------------------------------------------
# return_lse and return_support.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cap", slow_except([None, CAP], CAP))
def test_return_lse(cap):
  """lse equals logsumexp of the (capped) logits of every token, and an
  objective of the loss (smoothing, z_loss) and the kept tokens' lse has
  autodiff's gradients; a z-loss built from the returned lse equals
  z_loss=λ."""
  h, w, b, y = _inputs(seed=2, flat=False)
  where = jnp.asarray(WHERE)
  u = jax.random.uniform(jax.random.key(3), (T,), jnp.float32, 0.5, 1.5)
  u2 = jax.random.uniform(jax.random.key(4), (T,), jnp.float32, -1.0, 1.0)
  opts = dict(where=where, logit_soft_cap=cap)
  with_loss = dict(label_smoothing=EPS, z_loss=Z_LOSS)

  def fused_objective(h, w, b):
    o = opts | with_loss | dict(bias=b, chunk_size=CHUNK, return_lse=True)
    loss, lse = losses.linear_softmax_loss(h, w, y, **o)
    return jnp.sum(loss * u) + jnp.sum(jnp.where(where, lse, 0.0) * u2), lse

  def ref_objective(h, w, b):
    lse = jax.nn.logsumexp(_logits(h, w, b, cap), axis=-1)
    loss = _reference("softmax", h, w, b, y, None, **opts, **with_loss)
    return jnp.sum(loss * u) + jnp.sum(jnp.where(where, lse, 0.0) * u2), lse

  grad = lambda f: jax.jit(jax.value_and_grad(f, (0, 1, 2), has_aux=True))
  (_, lse), grads = grad(fused_objective)(h, w, b)
  (_, ref_lse), ref_grads = grad(ref_objective)(h, w, b)
  assert lse.shape == (T,) and lse.dtype == jnp.float32
  _assert_close(lse, ref_lse, what="lse")
  for got, want, what in zip(grads, ref_grads, ("hidden", "weight", "bias")):
    _assert_close(got, want, what=what)

  # A z-loss built by the user from the returned lse (kept tokens) against
  # the z_loss option: values and gradients.
  def by_hand(h, w, b):
    o = opts | dict(bias=b, chunk_size=CHUNK, return_lse=True)
    loss, lse = losses.linear_softmax_loss(h, w, y, **o)
    z_loss = jnp.where(where, Z_LOSS * jnp.square(lse), 0.0)
    return jnp.sum((loss + z_loss) * u)

  def built_in(h, w, b):
    o = opts | dict(bias=b, chunk_size=CHUNK, z_loss=Z_LOSS)
    return jnp.sum(losses.linear_softmax_loss(h, w, y, **o) * u)

  got = jax.jit(jax.value_and_grad(built_in, (0, 1, 2)))(h, w, b)
  want = jax.jit(jax.value_and_grad(by_hand, (0, 1, 2)))(h, w, b)
  for g, r, what in zip(
    jax.tree.leaves(got), jax.tree.leaves(want), ("loss", "h", "w", "b")
  ):
    _assert_close(g, r, what=what)


def _support_reference(name, z):
  if name == "sparsemax":
    p = softjax.sparsemax(z)
  else:
    alpha = jnp.asarray(ALPHAS[name])
    p = softjax.entmax(z, alpha.reshape(alpha.shape + (1,) * (alpha.ndim > 0)))
  return jnp.sum(p > 0, axis=-1)


@pytest.mark.slow
@pytest.mark.parametrize("name", SPARSE)
def test_return_support(name):
  """The support size equals the positive entries of the materialised map
  of the capped logits (0 for ignored tokens); the loss is unchanged."""
  h, w, b, y = _inputs(seed=3)
  where = jnp.asarray(WHERE)
  y = jnp.where(IGNORED, IGNORE, y)
  a = _alpha(name)
  opts = dict(
    where=where, ignore_index=IGNORE, logit_soft_cap=CAP, label_smoothing=EPS
  )
  f = jax.jit(
    lambda h, w, b, a: _fused(name, h, w, b, y, a, **opts, return_support=True)
  )
  loss, support = f(h, w, b, a)
  assert support.shape == (T,) and support.dtype == jnp.int32
  want = np.where(KEEP, _support_reference(name, _logits(h, w, b, CAP)), 0)
  np.testing.assert_array_equal(support, want)
  assert np.any(want > CANDIDATES.get(name, 64))  # wide tokens among them
  plain = jax.jit(lambda h, w, b, a: _fused(name, h, w, b, y, a, **opts))
  np.testing.assert_array_equal(loss, plain(h, w, b, a))


@pytest.mark.slow
def test_return_support_of_softmax_is_the_vocabulary():
  """α = 1 through linear_entmax_loss: every class has mass."""
  h, w, b, y = _inputs(seed=3, flat=False)
  where = jnp.asarray(WHERE)
  loss, support = losses.linear_entmax_loss(
    h, w, y, 1.0, bias=b, chunk_size=CHUNK, where=where, return_support=True
  )
  assert support.dtype == jnp.int32
  np.testing.assert_array_equal(support, np.where(WHERE, V, 0))


# --------------------------------------------------------------------------
# transposed_weight.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
  "name",
  slow_except(
    ["softmax", "sparsemax", "entmax15", "entmax_array"], "sparsemax"
  ),
)
def test_transposed_weight(name):
  """A [V, d] table with transposed_weight=True: the values and gradients
  of the [d, V] call (the table's gradient is the transposed one), with
  every option on and wide tokens."""
  h, w, b, y = _inputs(seed=4)
  y = jnp.where(IGNORED, IGNORE, y)
  where = jnp.asarray(WHERE)
  a = _alpha(name) if name in ARRAY else None
  opts = dict(
    where=where, ignore_index=IGNORE, label_smoothing=EPS, logit_soft_cap=CAP
  )
  if name == "softmax":
    opts["z_loss"] = Z_LOSS
  u = _weights(opts)
  argnums = (0, 1, 2, 3) if name in ARRAY else (0, 1, 2)

  def objective(h, w, b, a, transposed):
    loss = _fused(name, h, w, b, y, a, transposed_weight=transposed, **opts)
    return jnp.sum(loss * u), loss

  grad = lambda tr: jax.jit(
    jax.value_and_grad(
      functools.partial(objective, transposed=tr), argnums, has_aux=True
    )
  )
  (_, loss), grads = grad(False)(h, w, b, a)
  (_, loss_t), grads_t = grad(True)(h, w.T, b, a)
  _assert_close(loss_t, loss, rtol=1e-6, atol=1e-6, what="loss")
  assert grads_t[1].shape == (V, D)
  grads_t = list(grads_t)
  grads_t[1] = grads_t[1].T
  for got, want, what in zip(
    grads_t, grads, ("hidden", "weight", "bias", "alpha")
  ):
    _assert_close(got, want, rtol=1e-5, atol=1e-6, what=what)


T_MEM, D_MEM, V_MEM, C_MEM = 512, 64, 8192, 256


def _temp_bytes(f, *shapes):
  args = [jax.ShapeDtypeStruct(s, d) for s, d in shapes]
  return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.slow
@pytest.mark.parametrize("name", ["softmax", "sparsemax"])
def test_transposed_weight_is_not_copied(name):
  """fwd+bwd with a [V, d] table and transposed_weight=True holds no
  temporary the size of the weight: temp bytes < d × V × 4 in all, and no
  more than the [d, V] call's.

  XLA's temp bytes are asserted rather than the absence of `transpose` in
  the compiled HLO: a layout change may appear as a `copy`, a fusion or a
  transposed layout of another op, and differs between backends, while any
  materialised copy of W (or of its cotangent) must take d × V × 4 bytes
  of temp memory. (The [d, V] sparse call does copy W: it reads Wᵀ by
  rows; the softmax one does not.)"""
  shapes = [
    ((T_MEM, D_MEM), jnp.float32),
    ((D_MEM, V_MEM), jnp.float32),
    ((V_MEM,), jnp.float32),
    ((T_MEM,), jnp.int32),
    ((T_MEM,), jnp.float32),
  ]
  opts = dict(
    chunk_size=C_MEM,
    ignore_index=IGNORE,
    label_smoothing=EPS,
    logit_soft_cap=30.0,
  )

  def fwd_bwd(transposed):
    def f(h, w, b, y, g):
      loss = lambda h, w, b: _fused(
        name, h, w, b, y, None, transposed_weight=transposed, **opts
      )
      return jax.vjp(loss, h, w, b)[1](g)

    return f

  plain = _temp_bytes(fwd_bwd(False), *shapes)
  shapes[1] = ((V_MEM, D_MEM), jnp.float32)
  transposed = _temp_bytes(fwd_bwd(True), *shapes)
  weight = D_MEM * V_MEM * 4
  assert transposed < weight, (transposed, weight)
  assert transposed <= plain, (transposed, plain)


# --------------------------------------------------------------------------
# Half precision.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
  "name", slow_except(["softmax", "entmax15"], "entmax15")
)
def test_bfloat16_accumulates_in_float32(name):
  """bfloat16 hidden and weight, float32 bias (a float32 loss): the loss of
  the bf16 values upcast to float32, to float32 tolerance; with a bf16
  bias the loss is bf16, the same rounded; softmax's lse is float32."""
  h, w, b, y = _inputs(seed=5)
  y = jnp.where(IGNORED, IGNORE, y)
  bf = lambda a: a.astype(jnp.bfloat16)
  h16, w16 = bf(h), bf(w)
  up = lambda a: a.astype(jnp.float32)
  opts = dict(ignore_index=IGNORE, label_smoothing=EPS, logit_soft_cap=CAP)
  f = jax.jit(lambda h, w, b: _fused(name, h, w, b, y, None, **opts))
  ref = jax.jit(lambda h, w, b: _reference(name, h, w, b, y, None, **opts))
  want = ref(up(h16), up(w16), b)
  got = f(h16, w16, b)
  _assert_close(got, want, rtol=1e-5, atol=1e-5)
  got16 = f(h16, w16, bf(b))
  assert got16.dtype == jnp.bfloat16
  want16 = ref(up(h16), up(w16), up(bf(b)))
  np.testing.assert_allclose(up(got16), want16, rtol=8e-3, atol=1e-5)
  if name == "softmax":
    g = lambda h, w, b: _fused(name, h, w, b, y, None, return_lse=True, **opts)
    _, lse = jax.jit(g)(h16, w16, bf(b))
    assert lse.dtype == jnp.float32
    z = _logits(up(h16), up(w16), up(bf(b)), CAP)
    _assert_close(lse, jax.nn.logsumexp(z, -1), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------
# Memory at vocabulary scale (compiled only).
# --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["softmax", "sparsemax"])
def test_memory_with_every_option(name):
  """T = 4096, d = 512, V = 32768: fwd+bwd temp bytes with where,
  smoothing, cap (z_loss for softmax) and reduction="mean" are at most 1/16
  of the materialised reference's (default chunk)."""
  t, d, v = 4096, 512, 32768
  shapes = [
    ((t, d), jnp.float32),
    ((d, v), jnp.float32),
    ((v,), jnp.float32),
    ((t,), jnp.int32),
    ((t,), jnp.bool_),
  ]
  opts = dict(label_smoothing=EPS, logit_soft_cap=30.0, reduction="mean")
  if name == "softmax":
    opts["z_loss"] = 1e-4

  def fwd_bwd(f):
    return lambda h, w, b, y, m: jax.grad(
      lambda h, w, b: f(h, w, b, y, m), argnums=(0, 1, 2)
    )(h, w, b)

  def ours(h, w, b, y, m):
    return _fused(name, h, w, b, y, None, chunk_size=None, where=m, **opts)

  def theirs(h, w, b, y, m):
    z = _logits(h, w, b, 30.0)
    keep, safe = m, jnp.where(m, y, 0)
    q = _smoothed(safe, EPS, v)
    if name == "softmax":
      loss = optax.softmax_cross_entropy(z, q)
      loss = loss + 1e-4 * jnp.square(jax.nn.logsumexp(z, -1))
    else:
      loss = losses.sparsemax_loss(z, q)
    return _reduce(jnp.where(keep, loss, 0.0), keep, "mean")

  fused_bytes = _temp_bytes(fwd_bwd(ours), *shapes)
  full_bytes = _temp_bytes(fwd_bwd(theirs), *shapes)
  assert full_bytes >= t * v * 4  # the materialised logits
  assert fused_bytes <= full_bytes // 16, (fused_bytes, full_bytes)


# --------------------------------------------------------------------------
# Every token ignored.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
  "name", slow_except(["softmax", "sparsemax", "entmax15"], "softmax")
)
def test_mean_of_no_tokens_is_zero(name):
  """reduction="mean" with every token ignored (by where, and by
  ignore_index): 0, not NaN, and zero gradients; "sum" is 0 too."""
  h, w, b, y = _inputs(seed=6)
  none = jnp.zeros((T,), bool)
  ignored = jnp.full((T,), IGNORE)
  opts = dict(label_smoothing=EPS, logit_soft_cap=CAP)

  def run(h, w, b, reduction):
    by_where = _fused(
      name, h, w, b, y, None, where=none, reduction=reduction, **opts
    )
    by_index = _fused(
      name,
      h,
      w,
      b,
      ignored,
      None,
      ignore_index=IGNORE,
      reduction=reduction,
      **opts,
    )
    return by_where + 2.0 * by_index

  for reduction in ("mean", "sum"):
    value, grads = jax.jit(
      jax.value_and_grad(run, (0, 1, 2)), static_argnums=3
    )(h, w, b, reduction)
    assert value == 0.0, (reduction, value)
    for g in grads:
      np.testing.assert_array_equal(g, 0.0)


# --------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["softmax", "sparsemax", "entmax_1.3"])
def test_bad_options(name):
  h, w, b, y = _inputs(seed=7)
  f = functools.partial(_fused, name, h, w, b, y, None)
  bad = [
    (ValueError, "`reduction`", dict(reduction="average")),
    (ValueError, "`label_smoothing`", dict(label_smoothing=1.0)),
    (ValueError, "`label_smoothing`", dict(label_smoothing=-0.1)),
    (TypeError, "`label_smoothing`", dict(label_smoothing="0.1")),
    (ValueError, "`logit_soft_cap`", dict(logit_soft_cap=0.0)),
    (ValueError, "`logit_soft_cap`", dict(logit_soft_cap=-1.0)),
    (TypeError, "`logit_soft_cap`", dict(logit_soft_cap=jnp.asarray(2.0))),
    (TypeError, "`where`", dict(where=jnp.ones((T,), jnp.int32))),
    (ValueError, "`where`", dict(where=jnp.ones((T + 1,), bool))),
    (ValueError, "`where`", dict(where=jnp.ones((T, 1), bool))),
    (TypeError, "`ignore_index`", dict(ignore_index=-100.0)),
    (TypeError, "`ignore_index`", dict(ignore_index=True)),
    (TypeError, "`transposed_weight`", dict(transposed_weight=1)),
  ]
  if name == "softmax":
    bad.append((ValueError, "`z_loss`", dict(z_loss=-0.1)))
  for error, match, opts in bad:
    with pytest.raises(error, match=re.escape(match)):
      f(**opts)

  # The [d, V] weight given as a table, and a table given as [d, V].
  with pytest.raises(ValueError, match=r"`weight`.*transposed_weight=True"):
    _fused(name, h, w, b, y, None, transposed_weight=True)
  with pytest.raises(ValueError, match="`weight`.*transposed_weight=True"):
    _fused(name, h, w.T, b, y, None)


def test_z_loss_of_a_sparse_loss():
  """No `z_loss` keyword on the sparse losses, and the shared entry point
  refuses one for α > 1."""
  h, w, b, y = _inputs(seed=7)
  with pytest.raises(TypeError, match="z_loss"):
    losses.linear_sparsemax_loss(h, w, y, z_loss=0.1)
  with pytest.raises(ValueError, match="`z_loss`"):
    fused.run(h, w, y, 1.5, b, CHUNK, None, None, fused.Options(z_loss=0.1))
  with pytest.raises(ValueError, match="`z_loss`"):
    fused.run(
      h, w, y, jnp.asarray(1.5), b, CHUNK, None, None, fused.Options(z_loss=0.1)
    )


@pytest.mark.parametrize(
  "name", slow_except(["softmax", "entmax15"], "softmax")
)
def test_label_range(name):
  """Concrete ids out of range raise unless ignored (by ignore_index or
  where); traced ones that are not ignored give NaN for their token only."""
  h, w, b, y = _inputs(seed=8)
  with pytest.raises(ValueError, match=r"`labels`.*\[0, 300\)"):
    _fused(name, h, w, b, y.at[3].set(V), None)
  with pytest.raises(ValueError, match=r"`labels`.*\[0, 300\)"):
    _fused(name, h, w, b, y.at[3].set(IGNORE), None)  # no ignore_index
  with pytest.raises(ValueError, match=r"`labels`.*\[0, 300\)"):
    _fused(name, h, w, b, y.at[3].set(-1), None, ignore_index=IGNORE)
  masked = y.at[1].set(IGNORE).at[6].set(V + 5)
  where = jnp.asarray(np.arange(T) != 6)
  loss = _fused(name, h, w, b, masked, None, where=where, ignore_index=IGNORE)
  np.testing.assert_array_equal(loss[jnp.array([1, 6])], 0.0)
  # Traced: out-of-range ids not ignored give NaN, ignored ones 0.
  traced = y.at[1].set(IGNORE).at[2].set(V).at[4].set(-3)
  opts = dict(ignore_index=IGNORE, label_smoothing=EPS, logit_soft_cap=CAP)
  loss = jax.jit(lambda y: _fused(name, h, w, b, y, None, **opts))(traced)
  assert loss[1] == 0.0
  assert np.all(np.isnan(loss[jnp.array([2, 4])]))
  finite = np.ones(T, bool)
  finite[[2, 4]] = False
  assert np.all(np.isfinite(loss[finite]))


# --------------------------------------------------------------------------
# Transformations.
# --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["softmax", "sparsemax"])
def test_vmap_and_jit(name):
  """vmap over examples (hidden, labels, where; a weight per example) gives
  each example's own call's values and gradients, with every option, for
  reductions "none" and "mean". A third of the tokens are near-uniform
  (wide supports: the fallback's loop runs under vmap). The per-example
  calls are jitted: an eager gradient costs seconds here (CI time)."""
  n, t, d, v = 2, 12, 8, 70
  kh, kw, ky, km = jax.random.split(jax.random.key(9), 4)
  h = jax.random.normal(kh, (n, t, d)).at[:, ::3].multiply(0.01)
  w = jax.random.normal(kw, (n, d, v))
  y = jax.random.randint(ky, (n, t), 0, v).at[:, 2::5].set(IGNORE)
  where = jax.random.uniform(km, (n, t)) < 0.8
  u = jax.random.uniform(jax.random.key(2), (t,), jnp.float32, 0.5, 1.5)
  opts = dict(
    ignore_index=IGNORE,
    label_smoothing=EPS,
    logit_soft_cap=CAP,
    chunk_size=16,
  )
  if name == "softmax":
    opts["z_loss"] = Z_LOSS

  def objective(h, w, y, m):
    f = functools.partial(_fused, name, h, w, None, y, None, where=m, **opts)
    each, mean = f(), f(reduction="mean")
    return jnp.sum(each * u) + 3.0 * mean, (each, mean)

  g = jax.value_and_grad(objective, (0, 1), has_aux=True)
  batched = jax.jit(jax.vmap(g))(h, w, y, where)
  for i in range(n):
    plain = jax.jit(g)(h[i], w[i], y[i], where[i])
    for got, want in zip(jax.tree.leaves(batched), jax.tree.leaves(plain)):
      _assert_close(got[i], want, rtol=2e-5, atol=2e-5)


def _mesh():
  return jax.make_mesh((2, 4), ("data", "model"))


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices")
@pytest.mark.slow
@pytest.mark.parametrize("transposed", [False, True], ids=["dv", "vd"])
@pytest.mark.parametrize("name", ["softmax", "sparsemax"])
def test_shard_map_vocabulary_split(name, transposed):
  """W[:, shard] per device (26 classes each; a [V, d] table split by rows
  when transposed), tokens over "data": with smoothing, ignore_index and
  the cap (z_loss for softmax), the loss, the lse (softmax) or support
  size, and the gradients of the unsplit call. Token 0 is flat (a wide
  support: the fallback's collectives), token 3 flat and ignored."""
  mesh = _mesh()
  t, d, v = 8, 8, 104
  kh, kw, kb, ky = jax.random.split(jax.random.key(10), 4)
  h = jax.random.normal(kh, (t, d)).at[0].set(0.0).at[3].set(0.0)
  w = jax.random.normal(kw, (d, v))
  b = jax.random.normal(kb, (v,)) * 0.01
  y = jax.random.randint(ky, (t,), 0, v).at[3].set(IGNORE).at[6].set(IGNORE)
  z = _logits(h, w, b, CAP)
  assert jnp.sum(softjax.sparsemax(z[0]) > 0) > CANDIDATES["sparsemax"]
  opts = dict(
    ignore_index=IGNORE,
    label_smoothing=EPS,
    logit_soft_cap=CAP,
    chunk_size=5,
    transposed_weight=transposed,
  )
  if name == "softmax":
    opts |= dict(z_loss=Z_LOSS, return_lse=True)
  else:
    opts |= dict(return_support=True)
  keep = y != IGNORE
  u = jax.random.uniform(jax.random.key(1), (t,), jnp.float32, 0.5, 1.5)
  w_spec = P("model", None) if transposed else P(None, "model")
  specs = (P("data", None), w_spec, P("model"), P("data"))
  put = lambda a, s: jax.device_put(a, NamedSharding(mesh, s))
  if transposed:
    w = w.T
  args = [put(a, s) for a, s in zip((h, w, b, y), specs)]
  local = jax.shard_map(
    lambda h, w, b, y: _fused(
      name, h, w, b, y, None, axis_name="model", **opts
    ),
    mesh=mesh,
    in_specs=specs,
    out_specs=(P("data"), P("data")),
  )
  whole = lambda h, w, b, y: _fused(name, h, w, b, y, None, **opts)

  def obj(f):
    def objective(h, w, b, y):
      loss, aux = f(h, w, b, y)
      if name == "softmax":  # the kept tokens' lse too
        loss = loss + jnp.where(keep, aux, 0.0)
      return jnp.sum(loss * u)

    return jax.jit(jax.value_and_grad(objective, argnums=(0, 1, 2)))

  got = obj(local)(*args)
  want = obj(whole)(h, w, b, y)
  loss, aux = jax.jit(local)(*args)
  ref_loss, ref_aux = jax.jit(whole)(h, w, b, y)
  np.testing.assert_array_equal(np.asarray(loss)[[3, 6]], 0.0)
  np.testing.assert_allclose(loss, ref_loss, rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(aux, ref_aux, rtol=2e-5, atol=2e-5)
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, r, rtol=2e-5, atol=2e-5)
