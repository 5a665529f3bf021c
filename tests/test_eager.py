"""Eager calls reuse their compiled code (issue 25).

Outside ``jit`` a repeated call of a public function with the same shapes
and settings must not compile anything: JAX reports every backend compile
through ``jax.monitoring``, and the second and third calls of each function
here must report none. (Before the fix every eager call of a sparse map,
loss or block-wise attention compiled its loops again: 0.5-2.5 s a call.)
Timings are in ``benchmarks/bench_eager.py``, not here.
"""

from __future__ import annotations

import contextlib

import jax
from jax import monitoring
import jax.numpy as jnp
import numpy as np
import pytest

import softjax
from softjax import attention
from softjax import losses

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def _count_compiles():
  """Counts backend compiles in the block: ``with ... as n: ...; n[0]``."""
  count = [0]

  def listener(event: str, duration: float, **kwargs) -> None:
    del duration, kwargs
    if event == _COMPILE_EVENT:
      count[0] += 1

  monitoring.register_event_duration_secs_listener(listener)
  try:
    yield count
  finally:
    monitoring.unregister_event_duration_listener(listener)


def _array(seed: int, shape: tuple[int, ...]) -> jax.Array:
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


X = _array(0, (8, 32)).astype(jnp.float32)
LABELS = jnp.asarray(np.arange(8) % 32, jnp.int32)
Q = _array(1, (1, 40, 2, 8)).astype(jnp.float32)
W = _array(2, (32, 100)).astype(jnp.float32)
TOKENS = jnp.asarray(np.arange(8) % 100, jnp.int32)

CALLS = {
  "softmax": lambda: softjax.softmax(X),
  "log_softmax": lambda: softjax.log_softmax(X),
  "sparsemax": lambda: softjax.sparsemax(X),
  "entmax15": lambda: softjax.entmax15(X),
  "entmax_1.3": lambda: softjax.entmax(X, 1.3),
  "entmax_array": lambda: softjax.entmax(X, jnp.full((8, 1), 1.4)),
  "normmax": lambda: softjax.normmax(X, 2.0),
  "budget_sparsemax": lambda: softjax.budget_sparsemax(X, 3.0),
  "gumbel_softmax": lambda: softjax.gumbel_softmax(jax.random.key(0), X),
  "softmax_loss": lambda: losses.softmax_loss(X, LABELS),
  "sparsemax_loss": lambda: losses.sparsemax_loss(X, LABELS),
  "entmax15_loss": lambda: losses.entmax15_loss(X, LABELS),
  "entmax_loss": lambda: losses.entmax_loss(X, LABELS, 1.3),
  "normmax_loss": lambda: losses.normmax_loss(X, LABELS, 2.0),
  "linear_softmax_loss": lambda: losses.linear_softmax_loss(X, W, TOKENS),
  "linear_sparsemax_loss": lambda: losses.linear_sparsemax_loss(X, W, TOKENS),
  "linear_entmax15_loss": lambda: losses.linear_entmax15_loss(X, W, TOKENS),
  "linear_entmax_loss": lambda: losses.linear_entmax_loss(X, W, TOKENS, 1.3),
  "dot_product_attention": lambda: attention.dot_product_attention(
    Q, Q, Q, alpha=1.5
  ),
  "blockwise_softmax": lambda: attention.blockwise_attention(
    Q, Q, Q, is_causal=True, block_q=16, block_k=16
  ),
  "blockwise_entmax15": lambda: attention.blockwise_attention(
    Q, Q, Q, alpha=1.5, block_q=16, block_k=16
  ),
  "blockwise_per_head": lambda: attention.blockwise_attention(
    Q, Q, Q, alpha=jnp.array([1.2, 1.7]), block_q=16, block_k=16
  ),
}


@pytest.mark.parametrize("name", CALLS)
def test_repeated_eager_calls_compile_nothing(name):
  call = CALLS[name]
  first = jax.block_until_ready(call())
  with _count_compiles() as compiles:
    again = [jax.block_until_ready(call()) for _ in range(2)]
  assert compiles[0] == 0, f"{name}: {compiles[0]} compiles on repeated calls"
  for out in again:  # the cached program computes the same thing
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(first)):
      np.testing.assert_array_equal(a, b)


def test_the_counter_sees_compiles():
  """The listener does count: a new jitted function compiles once."""
  with _count_compiles() as compiles:
    jax.jit(lambda x: x * 3.0 + 1.0)(X)
  assert compiles[0] >= 1


def test_eager_errors_still_raise():
  """The cache wraps the computation after the argument checks: concrete
  bad values still raise at once."""
  with pytest.raises(ValueError, match="`alpha`"):
    softjax.entmax(X, 0.5)
  with pytest.raises(ValueError, match="`labels`"):
    losses.linear_softmax_loss(X, W, TOKENS + 100)


def _squares(out) -> jax.Array:
  return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(out))


# name: (function of the differentiated arrays, those arrays)
TRANSFORMED = {
  "softmax": (softjax.softmax, (X,)),
  "entmax15": (softjax.entmax15, (X,)),
  "entmax_array": (softjax.entmax, (X, jnp.full((8, 1), 1.4))),
  "normmax": (lambda x: softjax.normmax(x, 2.0), (X,)),
  "budget_sparsemax": (lambda x: softjax.budget_sparsemax(x, 3.0), (X,)),
  "entmax15_loss": (lambda x: losses.entmax15_loss(x, LABELS), (X,)),
  "linear_entmax15_loss": (
    lambda x, w: losses.linear_entmax15_loss(x, w, TOKENS),
    (X, W),
  ),
  "linear_softmax_loss": (
    lambda x, w: losses.linear_softmax_loss(x, w, TOKENS),
    (X, W),
  ),
  "dot_product_attention": (
    lambda q, a: attention.dot_product_attention(q, q, q, alpha=a),
    (Q, jnp.array([1.2, 1.7])),
  ),
  "blockwise_per_head": (
    lambda q, a: attention.blockwise_attention(
      q, q, q, alpha=a, block_q=16, block_k=16
    ),
    (Q, jnp.array([1.2, 1.7])),
  ),
}


@pytest.mark.parametrize("name", TRANSFORMED)
def test_repeated_eager_grads_and_vmaps_compile_nothing(name):
  """An eager ``jax.grad`` or ``jax.vmap`` of a public function, as a
  gradient check in a test suite runs it, reuses its compiled code too.
  (Before: every call traced and compiled the passes again, 0.2 s for the
  gradient of ``entmax15``, 1.5 s for block-wise attention.)"""
  f, args = TRANSFORMED[name]
  argnums = tuple(range(len(args)))
  grad = lambda: jax.grad(lambda *a: _squares(f(*a)), argnums)(*args)
  batched = lambda: jax.vmap(f)(*(jnp.stack([a, a + 0.5]) for a in args))
  for call in (grad, batched):
    first = jax.block_until_ready(call())
    with _count_compiles() as compiles:
      again = [jax.block_until_ready(call()) for _ in range(2)]
    assert compiles[0] == 0, f"{name}: {compiles[0]} compiles on repeats"
    for out in again:
      for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(first)):
        np.testing.assert_array_equal(a, b)
