"""The one place that handles what every normaliser shares.

* ``prepare`` validates the arguments, casts to the compute dtype (half
  precision runs in float32) and applies the ``where`` mask by turning masked
  scores into ``-inf``; every normaliser gives ``-inf`` exactly zero mass and a
  zero gradient, so masking needs no code of its own anywhere else.
* ``shift_rows`` (and ``shift_rows_for_exp``, its cheaper form for softmax)
  subtracts the row maximum, giving rows with an infinite maximum their
  limiting value (all masked: zeros; holding ``+inf``: the mass shared among
  the ``+inf`` entries) with no per-entry select.
* ``temperature_cotangent`` and ``reduce_to_shape`` turn a cotangent of the
  scaled scores into cotangents of an array temperature or α.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp

from softjax._core import args
from softjax._core.sharding import match_vma


class Rows(NamedTuple):
  """The normalised axes of a row, possibly split across named devices.

  Every reduction along a row goes through here: with ``axis_name`` set (inside
  ``shard_map`` or ``pmap``, the row split over that mesh axis) a local
  reduction is followed by one collective, so the full row is never gathered.
  Hashable, so it can be a static argument of ``custom_vjp``/``custom_jvp``.
  """

  axes: tuple[int, ...]  # sorted, non-negative
  axis_name: Hashable | None = None  # mesh axis (or tuple of axes) or None

  def sum(self, x: jax.Array, chunks: int = 1) -> jax.Array:
    """Row sums; ``chunks > 1`` (one normalised axis, divisible) first sums
    that many chunks of each row: faster for few long rows on XLA:CPU, and
    only for code that is not differentiated (see ``solver._chunks``)."""
    if chunks == 1:
      total = jnp.sum(x, axis=self.axes, keepdims=True)
    else:
      (a,) = self.axes
      split = x.reshape(
        x.shape[:a] + (chunks, x.shape[a] // chunks) + x.shape[a + 1 :]
      )
      # The barrier keeps XLA from fusing the two sums back into one.
      partial = lax.optimization_barrier(jnp.sum(split, axis=a + 1))
      total = jnp.sum(partial, axis=a, keepdims=True)
    return total if self.axis_name is None else lax.psum(total, self.axis_name)

  def max(self, x: jax.Array) -> jax.Array:
    # `initial` makes an empty axis reduce to -inf instead of raising.
    top = jnp.max(x, axis=self.axes, keepdims=True, initial=-jnp.inf)
    return top if self.axis_name is None else lax.pmax(top, self.axis_name)

  def min(self, x: jax.Array) -> jax.Array:
    low = jnp.min(x, axis=self.axes, keepdims=True, initial=jnp.inf)
    return low if self.axis_name is None else lax.pmin(low, self.axis_name)

  def any(self, mask: jax.Array) -> jax.Array:
    """Whether any entry of each row (over all its shards) is True."""
    return self.max(mask.astype(jnp.float32)) > 0

  def size(self, x: jax.Array) -> int:
    """Number of entries in a whole row (all shards)."""
    local = 1
    for a in self.axes:
      local *= x.shape[a]
    if self.axis_name is None:
      return local
    return local * lax.psum(1, self.axis_name)

  def local_sum(self, x: jax.Array) -> jax.Array:
    """This shard's part of a row sum (for cotangents, see match_vma)."""
    return jnp.sum(x, axis=self.axes, keepdims=True)


class Prepared(NamedTuple):
  x: jax.Array  # scores in the compute dtype, masked with -inf
  rows: Rows  # normalised axes and the mesh axis they span
  temperature: jax.Array | None  # array temperature, or None (already applied)
  out_dtype: Any  # dtype the result is returned in
  where: jax.Array | None = None  # the checked mask, if one was given

  @property
  def axes(self) -> tuple[int, ...]:
    return self.rows.axes


def prepare(
  x: Any,
  axis: args.Axis,
  where: Any,
  temperature: Any,
  axis_name: Any = None,
  name: str = "x",
) -> Prepared:
  """Checks a normaliser's arguments and masks and scales the scores.

  ``name`` is the scores' argument name, for error messages.
  """
  x = args.as_float_array(x, name)
  axes = args.canonicalize_axis(axis, x.ndim)
  rows = Rows(axes, args.check_axis_name(axis_name))
  where = args.check_where(where, x.shape)
  temperature = args.canonical_temperature(temperature, x.shape)
  out_dtype = x.dtype
  cdtype = args.compute_dtype(out_dtype)
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
  return Prepared(x, rows, temperature, out_dtype, where)


def varies_along(
  value: jax.Array | None, ndim: int, axes: tuple[int, ...]
) -> bool:
  """Whether an array argument takes different values along ``axes``."""
  if value is None:
    return False
  shape = (1,) * (ndim - value.ndim) + value.shape
  return any(shape[a] != 1 for a in axes)


def finite_or_zero(value: jax.Array) -> jax.Array:
  """Zero where ``value`` is not finite (residual shifts of empty rows)."""
  return jnp.where(jnp.isfinite(value), value, jnp.zeros((), value.dtype))


def shift_rows(x: jax.Array, rows: Rows) -> tuple[jax.Array, jax.Array]:
  """Returns ``(z, m)``: the scores shifted by their row maximum ``m``.

  For rows with a finite maximum ``z = x - m`` exactly. Rows with an infinite
  maximum get their limiting value:

  * all ``-inf`` (every entry masked): ``z`` is ``-inf`` everywhere, so
    every map gives zeros once :func:`safe_total` guards the division;
  * holding ``+inf``: ``z`` is 0 at the ``+inf`` entries and ``-inf``
    elsewhere, ``finfo.max`` included, so the mass is shared equally among the
    ``+inf`` entries (the limit of the finite case) for every normaliser;
  * holding NaN: NaN, which stays in its row.

  ``m`` is the row maximum floored at ``-finfo.max``.

  Why the arithmetic looks odd: XLA:CPU's vectorised fused kernels
  (YNNPACK) have no per-entry compare or select, so the limits above come
  from ``min`` and scaling alone. Working in quarters gives the headroom that
  tells ``+inf`` from ``finfo.max``: with the shift clipped to ``finfo.max``
  every finite quarter lands at ``-0.75 * finfo.max`` or below, which the
  exact factor 4 sends to ``-inf``, while ``+inf`` stays ``+inf`` and is
  clipped to 0. Scaling by a power of two is exact, so finite rows get
  exactly ``x - m``. softmax, which needs no ``-inf``, uses the cheaper
  :func:`shift_rows_for_exp`.
  """
  big = float(jnp.finfo(x.dtype).max)
  # The floor keeps the shift finite in all -inf rows (no -inf - -inf). It is
  # applied after the reduction: as the reduction's initial value it would
  # make the derivative of the maximum 0/0 there (no entry equals it).
  m = jnp.maximum(rows.max(x), -big)
  shift = jnp.minimum(m * 0.25, big)
  # The 0 is a per-row array (shift * 0: not folded) rather than a constant,
  # which XLA:CPU would materialise as a full-size array when another
  # fusion uses the same constant (see solver.find_threshold).
  z = jnp.minimum(x * 0.25 - shift, shift * 0.0) * 4.0
  return z, m


def shift_rows_for_exp(
  x: jax.Array, rows: Rows
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Like :func:`shift_rows` for callers that take ``exp`` of ``z``.

  Finite entries of a row that holds ``+inf`` come out at ``-0.75 *
  finfo.max`` or below rather than at ``-inf``; ``exp`` sends both to exactly
  0, and everything else is as in :func:`shift_rows`. This saves the scale by
  4 there, one of only three ops per entry: ``z = min(x * a - s, 0)``. A
  caller that needs the exact ``-inf`` (log_softmax) multiplies by the
  per-row ``1 / a``, which sends those entries past ``-finfo.max``.

  The per-row scale ``a`` (1, or 1/4 in rows holding ``+inf``) and shift
  ``s`` cost a select per row, not per entry: finite rows get ``x * 1 - m``,
  which is exact, and ``+inf`` rows the quarters of :func:`shift_rows`.
  softmax's speed rests on this (see docs/benchmarks.md): per-entry ops, not
  per-row ones, are what cost on XLA:CPU. Returns ``(z, m, a)``; ``m`` is
  the row maximum (not floored).
  """
  big = float(jnp.finfo(x.dtype).max)
  m = rows.max(x)
  holds_inf = m == jnp.inf
  a = jnp.where(holds_inf, jnp.asarray(0.25, x.dtype), jnp.ones((), x.dtype))
  # Differentiable in m, like shift_rows: the min below ties at each row's
  # maximum, where m's derivative cancels the entry's (second order).
  s = jnp.where(holds_inf, jnp.asarray(big, x.dtype), jnp.maximum(m, -big))
  return jnp.minimum(x * a - s, 0.0), m, a


def safe_total(total: jax.Array) -> jax.Array:
  """A row sum to divide by: 1 where it is 0 (empty rows, empty supports).

  Row sums are non-negative, so ``1 - sign(total)`` is 1 exactly at 0 and 0
  elsewhere: a select-free form (see shift_rows) with a zero derivative.
  """
  return total + (1 - jnp.sign(total))


def exp_total(total: jax.Array) -> jax.Array:
  """:func:`safe_total` for a row sum of ``exp`` of shifted scores.

  Such a sum is 0 (every entry masked) or at least 1: the row maximum
  contributes ``exp(0)``. ``max(total, 1/2)`` is then 1/2 exactly where
  :func:`safe_total` is 1, and costs one op per row instead of three, which
  shows in softmax's speed at many short rows. The floor is 1/2, not 1, so
  that no sum ever ties with it: ``max`` splits its derivative at a tie.
  """
  return jnp.maximum(total, 0.5)


def safe_log(q: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(q > 0, log q)`` with 0 off the support (never ``log 0``).

  The argument is guarded, not only the result: ``log 0`` in a branch that
  a ``where`` discards would still poison second derivatives.
  """
  live = q > 0
  return live, jnp.log(jnp.where(live, q, jnp.ones((), q.dtype)))


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


def param_cotangent(value: jax.Array, primal: jax.Array) -> jax.Array:
  """A broadcast cotangent summed back to ``primal``'s shape and mesh axes."""
  return match_vma(reduce_to_shape(value, primal.shape), primal)


def temperature_cotangent(
  du: jax.Array,
  centred: jax.Array,
  temperature: jax.Array,
  shift: jax.Array | None,
) -> jax.Array:
  """Cotangent of ``T`` in ``u = x / T`` from the cotangent ``du`` of ``u``.

  ``dT = -sum(du * u) / T``. The normalisers recover ``u`` from their output
  only up to a per-row constant (``centred = u - shift``); since ``du`` sums to
  zero along the normalised axis that constant drops out whenever ``T`` is
  constant along the axis. Only a temperature that varies along the axis
  needs the per-row ``shift``, which is then kept as a residual.
  """
  u = centred if shift is None else centred + shift
  return param_cotangent(-du * u / temperature, temperature)


def finish(out: jax.Array, prepared: Prepared) -> jax.Array:
  return out.astype(prepared.out_dtype)
