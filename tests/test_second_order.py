"""Second derivatives through the block-wise attention and the fused losses.

Their backward passes loop over blocks with ``lax.while_loop``. Forward over
reverse (``jax.hessian``, ``jax.jacfwd(jax.grad(f))``) works and is checked
against the same Hessian of the in-memory reference (dense attention, the
loss of the materialised logits ``h @ w``); reverse over reverse raises a
``NotImplementedError`` that names the function and the forms that work
(before: JAX's bare while-loop error). The in-memory functions the error
recommends are checked to support reverse over reverse: their
``grad(|grad f|²)`` is ``2 H ∇f`` with ``H`` and ``∇f`` of the block-wise
path. Forward mode is exact only for the members whose block-wise threshold
solve is (softmax, sparsemax, 1.5-entmax); any other α, learned or per head,
raises a ``NotImplementedError`` there (before: a NaN Hessian).
"""

from __future__ import annotations

from _tiers import slow_except
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softjax import attention
from softjax import losses

KEYS = jax.random.split(jax.random.key(7), 4)
Q, K, V = (jax.random.normal(k, (1, 16, 2, 4)) for k in KEYS[:3])
H = jax.random.normal(KEYS[0], (5, 6))
W = jax.random.normal(KEYS[1], (6, 12))
LABELS = jnp.array([0, 3, 11, 5, 7])
ALPHAS = {"softmax": 1.0, "entmax15": 1.5, "sparsemax": 2.0}


def _attention_fns(alpha):
  def blockwise(q):
    out = attention.blockwise_attention(
      q, K, V, alpha=alpha, is_causal=True, block_q=8, block_k=8
    )
    return jnp.sum(jnp.sin(out))

  def dense(q):
    out = attention.dot_product_attention(q, K, V, alpha=alpha, is_causal=True)
    return jnp.sum(jnp.sin(out))

  return blockwise, dense, Q


def _loss_fns(name):
  fused = {
    "softmax": losses.linear_softmax_loss,
    "entmax15": losses.linear_entmax15_loss,
  }[name]
  in_memory = {
    "softmax": losses.softmax_loss,
    "entmax15": losses.entmax15_loss,
  }[name]

  def blockwise(h):
    return jnp.sum(fused(h, W, LABELS))

  def dense(h):
    return jnp.sum(in_memory(h @ W, LABELS))

  return blockwise, dense, H


CASES = {
  **{
    f"attention-{n}": (lambda a=a: _attention_fns(a)) for n, a in ALPHAS.items()
  },
  "loss-softmax": lambda: _loss_fns("softmax"),
  "loss-entmax15": lambda: _loss_fns("entmax15"),
}
NAMES = {
  "attention": "blockwise_attention",
  "loss-softmax": "linear_softmax_loss",
  "loss-entmax15": "the linear sparse losses",
}


def _hessian(f, x):
  flat = lambda y: f(y.reshape(x.shape))  # noqa: E731
  return jax.hessian(flat)(x.ravel())


# Sparsemax takes the same exact forward mode as entmax15 (CI time).
HESSIAN_CASES = [c for c in CASES if c != "attention-sparsemax"]


@pytest.mark.parametrize(
  "case", slow_except(HESSIAN_CASES, "attention-entmax15", "loss-softmax")
)
def test_forward_over_reverse_matches_the_in_memory_hessian(case):
  blockwise, dense, x = CASES[case]()
  np.testing.assert_allclose(
    _hessian(blockwise, x), _hessian(dense, x), rtol=2e-4, atol=2e-5
  )


@pytest.mark.parametrize(
  "case", ["attention-softmax", "attention-entmax15", "loss-entmax15"]
)
def test_reverse_over_reverse_raises_a_clear_error(case):
  blockwise, _, x = CASES[case]()
  name = NAMES[case.rsplit("-", 1)[0] if case.startswith("attention") else case]
  grad_norm = lambda y: jnp.sum(jax.grad(blockwise)(y) ** 2)  # noqa: E731
  with pytest.raises(NotImplementedError) as info:
    jax.grad(grad_norm)(x)
  message = str(info.value)
  assert message.startswith(name + ":"), message
  assert "jax.hessian" in message and "jax.jacfwd(jax.grad(f))" in message


@pytest.mark.parametrize("case", ["attention-sparsemax", "loss-softmax"])
def test_the_recommended_in_memory_form_supports_reverse_over_reverse(case):
  blockwise, dense, x = CASES[case]()
  grad_norm = lambda y: jnp.sum(jax.grad(dense)(y) ** 2)  # noqa: E731
  hess = _hessian(blockwise, x)
  expected = 2 * hess @ jax.grad(blockwise)(x).ravel()
  np.testing.assert_allclose(
    jax.grad(grad_norm)(x).ravel(), expected, rtol=2e-4, atol=2e-5
  )


@pytest.mark.parametrize("case", ["attention-per_head", "loss-1.3"])
def test_forward_mode_for_a_general_alpha_raises_a_clear_error(case):
  kind, alpha = case.split("-")
  alpha = jnp.array([1.3, 1.8]) if alpha == "per_head" else 1.3
  if kind == "attention":
    blockwise, dense, x = _attention_fns(alpha)
    name = "blockwise_attention"
  else:
    blockwise = lambda h: jnp.sum(
      losses.linear_entmax_loss(h, W, LABELS, alpha)
    )  # noqa: E731
    dense = lambda h: jnp.sum(losses.entmax_loss(h @ W, LABELS, alpha))  # noqa: E731
    x, name = H, "the linear sparse losses"
  with pytest.raises(NotImplementedError, match=f"^{name}: second deriv"):
    _hessian(blockwise, x)
  # The in-memory form the error names works.
  assert np.isfinite(_hessian(dense, x)).all()


def test_vmap_and_jit_of_the_gradient_pass_through():
  blockwise, _, x = _attention_fns(jnp.array([1.3, 1.8]))
  grads = jax.jit(jax.vmap(jax.grad(blockwise)))(jnp.stack([x, 2 * x]))
  np.testing.assert_allclose(
    grads[1], jax.grad(blockwise)(2 * x), rtol=1e-5, atol=1e-6
  )
