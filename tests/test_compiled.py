"""What XLA:CPU makes of the normalisers: no full-size array from a broadcast.

On XLA:CPU a constant, or a per-row value, that several fused kernels share
can be materialised as a full ``[rows, d]`` array (an extra pass that writes
it, and another input for every kernel that reads it); this once doubled
the cost of the sparse maps at short rows. The code is written to avoid it
(see ``_core.solver.find_threshold`` and ``_core.rows.shift_rows``); these tests
keep it that way by reading the compiled HLO, which is deterministic, where
timing tests would not be. Other backends compile differently: skipped there.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

import softjax

pytestmark = pytest.mark.skipif(
  jax.default_backend() != "cpu", reason="XLA:CPU's fusion decisions"
)

# Short rows, as in attention, above XLA:CPU's 4096-element fusion threshold.
SHAPE = (512, 64)

MAPS = {
  "softmax": softjax.softmax,
  "log_softmax": softjax.log_softmax,
  "sparsemax": softjax.sparsemax,
  "entmax15": softjax.entmax15,
  "entmax_1_3": lambda x: softjax.entmax(x, 1.3),
  "entmax_array_alpha": lambda x: softjax.entmax(
    x, jnp.full((x.shape[0], 1), 1.4, x.dtype)
  ),
  "normmax": softjax.normmax,
  "normmax_array_alpha": lambda x: softjax.normmax(
    x, jnp.full((x.shape[0], 1), 1.7, x.dtype)
  ),
  "budget_sparsemax": lambda x: softjax.budget_sparsemax(x, 8.0),
}


def _materialised_broadcasts(hlo: str, shape: tuple[int, ...]) -> list[str]:
  """Computations whose result is a broadcast to the full ``shape``."""
  full = re.escape("f32[" + ",".join(map(str, shape)) + "]")
  found = []
  for match in re.finditer(r"^%(\S+) [^\n]*\{\n(.*?)\n\}", hlo, re.S | re.M):
    root = [line for line in match.group(2).splitlines() if "ROOT" in line]
    if root and re.search(r"= " + full + r"\S* broadcast\(", root[0]):
      found.append(match.group(1))
  return found


def _compiled(f, *args) -> str:
  return jax.jit(f).lower(*args).compile().as_text()


@pytest.mark.parametrize("name", MAPS)
def test_no_full_size_broadcast_is_materialised(name):
  f = MAPS[name]
  x = jnp.zeros(SHAPE, jnp.float32)
  fwd = _compiled(f, x)
  fwd_bwd = _compiled(lambda x, g: jax.vjp(f, x)[1](g), x, x)
  assert not _materialised_broadcasts(fwd, SHAPE), "forward"
  assert not _materialised_broadcasts(fwd_bwd, SHAPE), "forward+backward"


def test_the_detector_finds_a_materialised_broadcast():
  hlo = (
    "%fused (p: f32[]) -> f32[512,64] {\n"
    "  %p = f32[] parameter(0)\n"
    "  ROOT %b = f32[512,64]{1,0} broadcast(%p), dimensions={}\n"
    "}\n"
  )
  assert _materialised_broadcasts(hlo, SHAPE) == ["fused"]
