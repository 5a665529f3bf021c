"""Every public function, and its gradient, lowers for CPU, CUDA and TPU.

``jax.export`` lowers without the hardware, so this catches ops or custom
rules that have no lowering on some platform even on a CPU-only machine.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softjax

SHAPE = (4, 16)
PLATFORMS = ("cpu", "cuda", "tpu")

# Constants, built with numpy so that collecting the tests touches no device.
_MASK = np.arange(SHAPE[1]) % 3 != 0  # (16,)
_T_ROW = np.linspace(0.5, 2.0, SHAPE[0], dtype=np.float32)[:, None]  # (4, 1)
_T_FULL = np.linspace(0.5, 2.0, SHAPE[0] * SHAPE[1], dtype=np.float32).reshape(
  SHAPE
)
_ALPHA_ROW = np.linspace(1.0, 2.5, SHAPE[0], dtype=np.float32)[
  :, None
]  # (4, 1)

_RAW_KEY = np.array([0, 42], np.uint32)  # legacy PRNG key
_IDS = (np.arange(SHAPE[0]) * 3 + 2).astype(np.int32)  # live classes
_SOFT = np.full(SHAPE, 1.0 / SHAPE[1], np.float32)
_SOFT_MASKED = np.broadcast_to(
  np.where(_MASK, 1.0 / _MASK.sum(), 0.0), SHAPE
).astype(np.float32)
_ALPHA = np.linspace(1.0, 2.5, SHAPE[0], dtype=np.float32)  # one per row


def _per_row(loss):
  return jnp.broadcast_to(loss[:, None], SHAPE)


# softjax.attention: x as (length 4, heads 4, depth 4) queries; keys and
# values derived from it; outputs and weights reshaped back to SHAPE.
_KEY_MASK = np.array([True, True, True, False])[None, None, :]  # (1, 1, k)
_ALPHA_HEAD = np.linspace(1.2, 2.0, 4, dtype=np.float32)[:, None, None]


def _attend(x, **kwargs):
  q = x.reshape(4, 4, 4)
  return softjax.attention.dot_product_attention(
    q, q[::-1], 0.5 * q, **kwargs
  ).reshape(SHAPE)


def _attention_weights(x, **kwargs):
  q = x.reshape(4, 4, 4)
  return softjax.attention.dot_product_attention_weights(
    q, q[::-1], **kwargs
  ).reshape(SHAPE)


# name -> function of one (4, 16) float32 array. New normalisers (sparsemax,
# entmax, ...) add one line each here; their gradients are covered for free.
PUBLIC_FUNCTIONS = {
  "softmax": lambda x: softjax.softmax(x),
  "softmax_axis0": lambda x: softjax.softmax(x, axis=0),
  "softmax_where_t_row": lambda x: softjax.softmax(
    x, where=_MASK, temperature=_T_ROW
  ),
  "softmax_where_t_full": lambda x: softjax.softmax(
    x, where=_MASK, temperature=_T_FULL
  ),
  "log_softmax": lambda x: softjax.log_softmax(x),
  "log_softmax_axis_none": lambda x: softjax.log_softmax(x, axis=None),
  "log_softmax_where_t_row": lambda x: softjax.log_softmax(
    x, where=_MASK, temperature=_T_ROW
  ),
  # Sparse maps: the solver's while_loop and the custom VJPs.
  "sparsemax": lambda x: softjax.sparsemax(x),
  "entmax15": lambda x: softjax.entmax15(x),
  "entmax_alpha_1_3": lambda x: softjax.entmax(x, 1.3),
  "entmax_array_alpha": lambda x: softjax.entmax(x, _ALPHA_ROW),
  # The gradient w.r.t. a learnable alpha, broadcast back to SHAPE.
  "entmax_alpha_gradient": lambda x: jnp.broadcast_to(
    jax.grad(lambda a: (softjax.entmax(x, a) ** 2).sum())(_ALPHA_ROW), SHAPE
  ),
  "normmax": lambda x: softjax.normmax(x, where=_MASK, temperature=_T_ROW),
  "normmax_alpha_gradient": lambda x: jnp.broadcast_to(
    jax.grad(lambda a: (softjax.normmax(x, a) ** 2).sum())(_ALPHA_ROW + 0.5),
    SHAPE,
  ),
  "budget_sparsemax": lambda x: softjax.budget_sparsemax(x, 3.5, where=_MASK),
  "budget_sparsemax_k_gradient": lambda x: jnp.broadcast_to(
    jax.grad(lambda k: (softjax.budget_sparsemax(x, k) * x).sum())(
      _ALPHA_ROW + 1.0
    ),
    SHAPE,
  ),
  # Gumbel-softmax with a fixed key closed over (typed, and legacy raw).
  "gumbel_softmax": lambda x: softjax.gumbel_softmax(
    jax.random.key(0), x, 0.5, where=_MASK
  ),
  "gumbel_softmax_hard_sparsemax": lambda x: softjax.gumbel_softmax(
    _RAW_KEY, x, _T_ROW, hard=True, normalizer=softjax.sparsemax
  ),
  # Losses give one value per row; broadcast back to SHAPE for the harness.
  "softmax_loss": lambda x: _per_row(softjax.losses.softmax_loss(x, _IDS)),
  "softmax_loss_soft_where": lambda x: _per_row(
    softjax.losses.softmax_loss(x, _SOFT_MASKED, where=_MASK)
  ),
  "sparsemax_loss": lambda x: _per_row(softjax.losses.sparsemax_loss(x, _IDS)),
  "entmax15_loss_soft": lambda x: _per_row(
    softjax.losses.entmax15_loss(x, _SOFT)
  ),
  "entmax_loss_alpha_array": lambda x: _per_row(
    softjax.losses.entmax_loss(x, _IDS, _ALPHA, where=_MASK)
  ),
  "normmax_loss_alpha_array": lambda x: _per_row(
    softjax.losses.normmax_loss(x, _SOFT_MASKED, _ALPHA + 0.5, where=_MASK)
  ),
  # Attention: masks through `where`, causal, dropout, a per-head alpha.
  "attention_softmax_mask_causal": lambda x: _attend(
    x, mask=_KEY_MASK, is_causal=True
  ),
  "attention_entmax15_dropout": lambda x: _attend(
    x,
    normalizer=softjax.entmax15,
    dropout_rate=0.1,
    dropout_rng=jax.random.key(0),
  ),
  "attention_weights_alpha_per_head": lambda x: _attention_weights(
    x,
    mask=_KEY_MASK,
    normalizer=lambda s, **kw: softjax.entmax(s, _ALPHA_HEAD, **kw),
  ),
  # Block-wise: the block loops, causal skipping, a padded block, dropout.
  "blockwise_attention_causal_mask_dropout": lambda x: (
    softjax.attention.blockwise_attention(
      x.reshape(4, 4, 4),
      x.reshape(4, 4, 4)[::-1],
      0.5 * x.reshape(4, 4, 4),
      mask=_KEY_MASK,
      is_causal=True,
      block_q=2,
      block_k=3,
      dropout_rate=0.1,
      dropout_rng=jax.random.key(0),
    ).reshape(SHAPE)
  ),
}


def _with_gradient(functions):
  """Pairs each function with the gradient of a weighted sum of it."""
  w = np.linspace(-1.0, 1.0, SHAPE[0] * SHAPE[1], dtype=np.float32).reshape(
    SHAPE
  )
  for name, f in functions.items():
    yield pytest.param(f, id=name)
    # Default args bind f now, not the loop's last value.
    yield pytest.param(
      jax.grad(lambda x, f=f: (f(x) * w).sum()), id=f"grad_{name}"
    )


# Every public function: the unit tier keeps one export, the one below.
@pytest.mark.slow
@pytest.mark.parametrize("fn", list(_with_gradient(PUBLIC_FUNCTIONS)))
def test_exports_for_all_platforms(fn):
  exported = jax.export.export(jax.jit(fn), platforms=list(PLATFORMS))(
    jax.ShapeDtypeStruct(SHAPE, jnp.float32)
  )
  assert tuple(exported.platforms) == PLATFORMS
  text = exported.mlir_module()
  assert isinstance(text, str) and text.strip()
  assert "@main" in text
  (out,) = exported.out_avals
  assert out.shape == SHAPE and out.dtype == jnp.float32


def test_array_temperature_gradient_exports():
  # The temperature itself as a differentiated input, with a mask.
  def loss(x, t):
    return (softjax.softmax(x, where=_MASK, temperature=t) ** 2).sum()

  exported = jax.export.export(
    jax.jit(jax.grad(loss, argnums=(0, 1))), platforms=list(PLATFORMS)
  )(
    jax.ShapeDtypeStruct(SHAPE, jnp.float32),
    jax.ShapeDtypeStruct((SHAPE[0], 1), jnp.float32),
  )
  assert tuple(exported.platforms) == PLATFORMS
  assert exported.mlir_module().strip()
  assert [a.shape for a in exported.out_avals] == [SHAPE, (SHAPE[0], 1)]
