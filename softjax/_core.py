"""The one place that handles what every normaliser shares.

* ``prepare`` validates the arguments, casts to the compute dtype (half
  precision runs in float32) and applies the ``where`` mask by turning masked
  scores into ``-inf``; every normaliser gives ``-inf`` exactly zero mass and a
  zero gradient, so masking needs no code of its own anywhere else.
* ``shift_rows`` subtracts the row maximum and ``repair_rows`` gives rows
  with an infinite maximum their limiting value (all masked: zeros; holding
  ``+inf``: the mass shared among the ``+inf`` entries).
* ``temperature_cotangent`` and ``reduce_to_shape`` turn a cotangent of the
  scaled scores into cotangents of an array temperature or α.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

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


def finite_or_zero(value: jax.Array) -> jax.Array:
  """Zero where ``value`` is not finite (residual shifts of empty rows)."""
  return jnp.where(jnp.isfinite(value), value, jnp.zeros((), value.dtype))


def shift_rows(x: jax.Array, axes: tuple[int, ...]
               ) -> tuple[jax.Array, jax.Array]:
  """Returns ``(x - m, m)`` with ``m`` the row maximum.

  Exactly the pattern ``x - max(x)``, with ``m`` used by nothing else on the
  hot path: XLA's CPU backend then fuses it into the following pass. Rows
  whose maximum is infinite come out NaN here; their row sums are NaN, and
  :func:`repair_rows` gives them their limiting value.
  """
  m = row_max(x, axes)
  return x - m, m


def repair_rows(out: jax.Array, x: jax.Array, total: jax.Array,
                axes: tuple[int, ...], log: bool = False) -> jax.Array:
  """Gives rows with an infinite maximum their limiting value.

  ``total`` is the row sum of the shifted map, NaN exactly for rows that are
  all ``-inf``, hold ``+inf``, or hold NaN. Then:

  * all ``-inf`` (every entry masked): zeros (``-inf`` for log outputs);
  * holding ``+inf``: the mass shared equally among the ``+inf`` entries,
    the limit of the finite case, for every normaliser;
  * NaN rows are untouched: NaN stays in its row.

  The per-row flags take reductions over ``x``, run only when some row needs
  them (under ``vmap`` the condition becomes a select and they always run).
  """
  keep = dict(axis=axes, keepdims=True)

  def flags():
    empty = jnp.all(x == -jnp.inf, **keep)
    count = jnp.sum((x == jnp.inf).astype(x.dtype), **keep)
    # A row holding NaN keeps its NaN even when it also holds +inf.
    count = jnp.where(jnp.any(jnp.isnan(x), **keep), 0.0, count)
    return empty, count

  def no_flags():
    return (jnp.zeros(total.shape, bool), jnp.zeros(total.shape, x.dtype))

  empty, count = lax.cond(jnp.any(jnp.isnan(total)), flags, no_flags)
  posinf = count > 0
  if log:
    share = jnp.where(x == jnp.inf, -jnp.log(jnp.maximum(count, 1.0)),
                      -jnp.inf)
    empty_value = -jnp.inf
  else:
    share = jnp.where(x == jnp.inf, 1.0 / jnp.maximum(count, 1.0), 0.0)
    empty_value = 0.0
  out = jnp.where(empty, jnp.asarray(empty_value, out.dtype), out)
  return jnp.where(posinf, share.astype(out.dtype), out)


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
