"""What ``shard_map`` and sharded ``jit`` ask of code building its own arrays.

* :func:`filled`: the one way to start a loop carry or an accumulator so that
  it has the type of the updates added to it (varying over the same mesh
  axes inside ``shard_map``, sharded like them under explicit sharding).
* :func:`match_vma`: a cotangent summed over the mesh axes its primal is
  replicated on.
"""

from __future__ import annotations

from typing import Any

import jax
from jax import lax
import jax.numpy as jnp


def filled(
  shape: tuple[int, ...],
  value: Any,
  dtype: Any,
  *refs: Any,
  like: jax.Array | None = None,
) -> jax.Array:
  """An array of ``shape`` filled with ``value``, typed like ``refs``.

  Inside ``shard_map`` a loop carry must keep its type, and the updates
  added to an accumulator vary over the mesh axes their operands vary over:
  the result varies over every axis one of ``refs`` (arrays or None) varies
  over. A scalar zero taken from each, ``zeros_like(ref, shape=())``, adds
  that type without reading any value, and XLA folds the additions away.
  ``like``, an operand whose leading axes (batch, kv heads) ``shape``
  shares, also keeps its sharding along them (explicit sharding needs the
  initial value of a loop carry sharded like its updates). Elsewhere this
  is ``jnp.full``.
  """
  if like is None:
    x = jnp.full(shape, value, dtype)
  elif tuple(shape) == like.shape:
    x = jnp.zeros_like(like, dtype=dtype) + jnp.asarray(value, dtype)
  else:  # shares the batch and kv-head axes
    base = like[:, :, *(slice(0, 1),) * (like.ndim - 2)]
    base = base.reshape(base.shape[:2] + (1,) * (len(shape) - 2))
    x = jnp.zeros_like(base, dtype=dtype) + jnp.asarray(value, dtype)
  for ref in refs:
    if ref is not None:
      x = x + jnp.zeros_like(ref, dtype=dtype, shape=())
  return jnp.broadcast_to(x, shape)


def _varying(value: jax.Array) -> frozenset:
  """The mesh axes ``value`` varies over inside ``shard_map`` (else empty)."""
  aval = jax.typeof(value)
  manual = getattr(aval, "manual_axis_type", None)  # JAX >= 0.9
  if manual is not None:
    return frozenset(manual.varying)
  return frozenset(getattr(aval, "vma", ()))  # older JAX


def match_vma(cotangent: jax.Array, primal: jax.Array) -> jax.Array:
  """Sums a cotangent over the mesh axes its primal is replicated on.

  Inside ``shard_map`` a parameter replicated over a mesh axis (an α or a
  temperature shared by all shards) gets one partial cotangent per shard;
  its true cotangent is their sum, and JAX requires the types to match.
  Outside ``shard_map`` there are no such axes and this is the identity.
  """
  extra = _varying(cotangent) - _varying(primal)
  if not extra:
    return cotangent
  return lax.psum(cotangent, tuple(sorted(extra)))
