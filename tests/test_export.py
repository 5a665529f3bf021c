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
_MASK = np.arange(SHAPE[1]) % 3 != 0                           # (16,)
_T_ROW = np.linspace(0.5, 2.0, SHAPE[0], dtype=np.float32)[:, None]  # (4, 1)
_T_FULL = np.linspace(0.5, 2.0, SHAPE[0] * SHAPE[1],
                      dtype=np.float32).reshape(SHAPE)

# name -> function of one (4, 16) float32 array. New normalisers (sparsemax,
# entmax, ...) add one line each here; their gradients are covered for free.
PUBLIC_FUNCTIONS = {
    "softmax": lambda x: softjax.softmax(x),
    "softmax_axis0": lambda x: softjax.softmax(x, axis=0),
    "softmax_where_t_row": lambda x: softjax.softmax(
        x, where=_MASK, temperature=_T_ROW),
    "softmax_where_t_full": lambda x: softjax.softmax(
        x, where=_MASK, temperature=_T_FULL),
    "log_softmax": lambda x: softjax.log_softmax(x),
    "log_softmax_axis_none": lambda x: softjax.log_softmax(x, axis=None),
    "log_softmax_where_t_row": lambda x: softjax.log_softmax(
        x, where=_MASK, temperature=_T_ROW),
}


def _with_gradient(functions):
  """Pairs each function with the gradient of a weighted sum of it."""
  w = np.linspace(-1.0, 1.0, SHAPE[0] * SHAPE[1],
                  dtype=np.float32).reshape(SHAPE)
  for name, f in functions.items():
    yield pytest.param(f, id=name)
    # Default args bind f now, not the loop's last value.
    yield pytest.param(jax.grad(lambda x, f=f: (f(x) * w).sum()),
                       id=f"grad_{name}")


@pytest.mark.parametrize("fn", list(_with_gradient(PUBLIC_FUNCTIONS)))
def test_exports_for_all_platforms(fn):
  exported = jax.export.export(jax.jit(fn), platforms=list(PLATFORMS))(
      jax.ShapeDtypeStruct(SHAPE, jnp.float32))
  assert tuple(exported.platforms) == PLATFORMS
  text = exported.mlir_module()
  assert isinstance(text, str) and text.strip()
  assert "@main" in text
  out, = exported.out_avals
  assert out.shape == SHAPE and out.dtype == jnp.float32


def test_array_temperature_gradient_exports():
  # The temperature itself as a differentiated input, with a mask.
  def loss(x, t):
    return (softjax.softmax(x, where=_MASK, temperature=t) ** 2).sum()

  exported = jax.export.export(
      jax.jit(jax.grad(loss, argnums=(0, 1))), platforms=list(PLATFORMS))(
          jax.ShapeDtypeStruct(SHAPE, jnp.float32),
          jax.ShapeDtypeStruct((SHAPE[0], 1), jnp.float32))
  assert tuple(exported.platforms) == PLATFORMS
  assert exported.mlir_module().strip()
  assert [a.shape for a in exported.out_avals] == [SHAPE, (SHAPE[0], 1)]
