"""The one place that handles what every normaliser shares.

* ``prepare`` validates the arguments, casts to the compute dtype (half
  precision runs in float32) and applies the ``where`` mask by turning masked
  scores into ``-inf``; every normaliser gives ``-inf`` exactly zero mass and a
  zero gradient, so masking needs no code of its own anywhere else.
* ``sanitize_rows`` gives rows that contain ``+inf`` their limiting value
  (the mass shared equally among the ``+inf`` entries).
* ``temperature_cotangent`` and ``reduce_to_shape`` turn a cotangent of the
  scaled scores into cotangents of an array temperature or α.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from softjax import _checks


class Prepared(NamedTuple):
  x: jax.Array               # scores in the compute dtype, masked with -inf
  axes: tuple[int, ...]      # normalised axes, sorted and non-negative
  temperature: jax.Array | None  # array temperature, or None (already applied)
  out_dtype: Any             # dtype the result is returned in


def prepare(x: Any, axis: _checks.Axis, where: Any, temperature: Any
            ) -> Prepared:
  x = _checks.as_float_array(x)
  axes = _checks.canonicalize_axis(axis, x.ndim)
  where = _checks.check_where(where, x.shape)
  temperature = _checks.check_temperature(temperature, x.shape)
  out_dtype = x.dtype
  cdtype = _checks.compute_dtype(out_dtype)
  x = x.astype(cdtype)
  if where is not None:
    x = jnp.where(where, x, -jnp.inf)
  if isinstance(temperature, float):
    # A constant temperature is applied here so that autodiff keeps nothing.
    if temperature != 1.0:
      x = x / jnp.asarray(temperature, cdtype)
    temperature = None
  else:
    temperature = temperature.astype(cdtype)
  return Prepared(x, axes, temperature, out_dtype)


def varies_along(value: jax.Array | None, ndim: int, axes: tuple[int, ...]
                 ) -> bool:
  """Whether an array argument takes different values along ``axes``."""
  if value is None:
    return False
  shape = (1,) * (ndim - value.ndim) + value.shape
  return any(shape[a] != 1 for a in axes)


def row_max(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  # `initial` makes an empty axis reduce to -inf instead of raising.
  return jnp.max(x, axis=axes, keepdims=True, initial=-jnp.inf)


def sanitize_rows(x: jax.Array, axes: tuple[int, ...]
                  ) -> tuple[jax.Array, jax.Array]:
  """Returns ``(x, m)`` with ``+inf`` rows replaced by their limit.

  ``m`` is the row maximum to shift by: finite for every row that has a
  finite maximum, 0 for rows that are all ``-inf`` (all masked) or that held
  ``+inf`` (those rows become 0 on the ``+inf`` entries and ``-inf``
  elsewhere, so they share their mass equally among the ``+inf`` entries).
  NaN rows keep their NaN, which then stays confined to the row.
  """
  m = row_max(x, axes)
  posinf = m == jnp.inf
  x = jnp.where(posinf, jnp.where(x == jnp.inf, 0.0, -jnp.inf).astype(x.dtype),
                x)
  m = jnp.where(jnp.isinf(m), jnp.zeros((), x.dtype), m)
  return x, m


def scale(x: jax.Array, temperature: jax.Array | None) -> jax.Array:
  """``x / T`` whose derivative in ``T`` is 0, not NaN, at infinite scores.

  Masked scores are ``-inf``; the plain quotient has ``d(-inf / T)/dT = inf``,
  which turns into NaN when second derivatives multiply it by 0.
  """
  if temperature is None:
    return x
  finite = jnp.isfinite(x)
  safe = jnp.where(finite, x, jnp.zeros((), x.dtype))
  return jnp.where(finite, safe / temperature, x)


def reduce_to_shape(value: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Sums a broadcast cotangent back to the shape of its primal."""
  lead = value.ndim - len(shape)
  if lead:
    value = value.sum(axis=tuple(range(lead)))
  axes = tuple(i for i, n in enumerate(shape) if n == 1 and value.shape[i] != 1)
  if axes:
    value = value.sum(axis=axes, keepdims=True)
  return value.reshape(shape)


def temperature_cotangent(du: jax.Array, centred: jax.Array,
                          temperature: jax.Array,
                          shift: jax.Array | None) -> jax.Array:
  """Cotangent of ``T`` in ``u = x / T`` from the cotangent ``du`` of ``u``.

  ``dT = -sum(du * u) / T``. The normalisers recover ``u`` from their output
  only up to a per-row constant (``centred = u - shift``); since ``du`` sums to
  zero along the normalised axis that constant drops out whenever ``T`` is
  constant along the axis. Only a temperature that varies along the axis
  needs the per-row ``shift``, which is then kept as a residual.
  """
  u = centred if shift is None else centred + shift
  return reduce_to_shape(-du * u / temperature, temperature.shape)


def finish(out: jax.Array, prepared: Prepared) -> jax.Array:
  return out.astype(prepared.out_dtype)
