"""Argument validation and canonicalisation shared by every public function.

Everything here runs at trace time on static information (shapes, dtypes,
Python scalars, concrete arrays). Errors name the offending argument and say
what to pass instead. Traced values cannot be checked here; see
:mod:`softjax.checks` for opt-in runtime checks with ``jax.experimental.checkify``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Axis = int | Sequence[int] | None


def _is_concrete(value: Any) -> bool:
  """True when ``value`` holds numbers we can look at now (not a tracer)."""
  return not isinstance(value, jax.core.Tracer)


def as_float_array(x: Any, name: str = "x") -> jax.Array:
  """Returns ``x`` as a floating-point JAX array.

  Integers are promoted to the default float dtype, as ``jax.nn.softmax``
  does. Booleans and complex numbers have no meaning as scores and raise.
  """
  if isinstance(x, (list, tuple)) or np.isscalar(x):
    x = np.asarray(x)
  dtype = getattr(x, "dtype", None)
  if dtype is None:
    raise TypeError(
        f"`{name}` must be an array of scores, got {type(x).__name__}.")
  if jnp.issubdtype(dtype, jnp.bool_):
    raise TypeError(
        f"`{name}` has boolean dtype; scores must be real numbers. To mask "
        "entries pass the boolean array as `where=` instead.")
  if jnp.issubdtype(dtype, jnp.complexfloating):
    raise TypeError(
        f"`{name}` has complex dtype {dtype}; scores must be real. Pass "
        f"`{name}.real` (or `jnp.abs({name})`) if that is what you mean.")
  if not (jnp.issubdtype(dtype, jnp.floating)
          or jnp.issubdtype(dtype, jnp.integer)):
    raise TypeError(f"`{name}` must have a numeric dtype, got {dtype}.")
  if jnp.issubdtype(dtype, jnp.integer):
    return jnp.asarray(x, dtype=jnp.result_type(float))
  return jnp.asarray(x)


def compute_dtype(dtype: Any) -> Any:
  """The dtype the maths runs in: at least float32, as the brief demands."""
  return jnp.promote_types(dtype, jnp.float32)


def canonicalize_axis(axis: Axis, ndim: int, name: str = "axis"
                      ) -> tuple[int, ...]:
  """Returns ``axis`` as a sorted tuple of non-negative ints."""
  if axis is None:
    return tuple(range(ndim))
  axes = (axis,) if isinstance(axis, numbers.Integral) else axis
  try:
    axes = tuple(axes)
  except TypeError:
    raise TypeError(
        f"`{name}` must be an int, a tuple of ints or None, got {axis!r}."
    ) from None
  out = []
  for a in axes:
    if isinstance(a, bool) or not isinstance(a, numbers.Integral):
      raise TypeError(
          f"`{name}` must be an int, a tuple of ints or None, got {axis!r}.")
    if not -ndim <= a < ndim:
      raise ValueError(
          f"`{name}`={axis!r} is out of range for an input with {ndim} "
          f"dimension(s); valid values are {-ndim}..{ndim - 1}."
          if ndim else
          f"`{name}`={axis!r} is out of range: the input is a scalar, so "
          "there is no axis to normalise over. Pass an array of scores.")
    out.append(int(a) % ndim)
  if len(set(out)) != len(out):
    raise ValueError(f"`{name}`={axis!r} names the same axis twice.")
  return tuple(sorted(out))


def check_broadcastable(value: jax.Array, shape: tuple[int, ...], name: str,
                        what: str = "broadcastable to `x`") -> None:
  try:
    broadcast = jnp.broadcast_shapes(jnp.shape(value), shape)
  except ValueError:
    broadcast = None
  if broadcast != tuple(shape):
    raise ValueError(
        f"`{name}` has shape {jnp.shape(value)}, which is not {what} of "
        f"shape {tuple(shape)}.")


def check_where(where: Any, shape: tuple[int, ...]) -> jax.Array | None:
  """Validates a boolean mask; returns it as an array (or None)."""
  if where is None:
    return None
  where = jnp.asarray(where)
  if where.dtype != jnp.bool_:
    raise TypeError(
        f"`where` must be a boolean mask, got dtype {where.dtype}. Pass "
        "`mask.astype(bool)` (True keeps an entry).")
  check_broadcastable(where, shape, "where")
  return where


def _check_positive_finite(value: Any, name: str) -> None:
  if not _is_concrete(value):
    return
  arr = np.asarray(value, dtype=np.float64)
  if np.isnan(arr).any():
    raise ValueError(f"`{name}` contains NaN; it must be a positive number.")
  if not np.isfinite(arr).all():
    raise ValueError(f"`{name}` must be finite, got {value!r}.")
  if (arr <= 0).any():
    raise ValueError(
        f"`{name}` must be > 0, got {value!r}. A temperature near 0 gives "
        "the arg-max; use a small positive value such as 1e-3 instead.")


def check_temperature(temperature: Any, shape: tuple[int, ...]
                      ) -> float | jax.Array:
  """Returns a Python float, or a float array broadcastable to ``shape``."""
  if isinstance(temperature, bool):
    raise TypeError("`temperature` must be a number or an array, not a bool.")
  if isinstance(temperature, numbers.Real):
    _check_positive_finite(temperature, "temperature")
    return float(temperature)
  t = as_float_array(temperature, "temperature")
  check_broadcastable(t, shape, "temperature")
  _check_positive_finite(t, "temperature")
  return t


def check_alpha(alpha: Any, shape: tuple[int, ...], axes: tuple[int, ...]
                ) -> float | jax.Array:
  """Returns α as a Python float, or an array with size 1 along ``axes``."""
  if isinstance(alpha, bool):
    raise TypeError("`alpha` must be a number or an array, not a bool.")
  if isinstance(alpha, numbers.Real):
    alpha = float(alpha)
    if math.isnan(alpha) or alpha < 1:
      raise ValueError(
          f"`alpha` must be >= 1 (1 is softmax, 2 is sparsemax), got {alpha}.")
    if math.isinf(alpha):
      raise ValueError("`alpha` must be finite; alpha -> inf is the arg-max.")
    return alpha
  a = as_float_array(alpha, "alpha")
  check_broadcastable(a, shape, "alpha")
  a_shape = (1,) * (len(shape) - a.ndim) + a.shape
  if any(a_shape[i] != 1 for i in axes):
    raise ValueError(
        f"`alpha` has shape {jnp.shape(alpha)}: it must have size 1 along the "
        f"normalised axis {axes} (one alpha per row or per head, e.g. shape "
        "(heads, 1, 1) for scores (batch, heads, q, k)).")
  if _is_concrete(a):
    arr = np.asarray(a, dtype=np.float64)
    if np.isnan(arr).any() or (arr < 1).any():
      raise ValueError(f"`alpha` must be >= 1 everywhere, got {alpha!r}.")
    if np.isinf(arr).any():
      raise ValueError("`alpha` must be finite; alpha -> inf is the arg-max.")
  return a


def check_n_iter(n_iter: Any) -> int | None:
  if n_iter is None:
    return None
  if isinstance(n_iter, bool) or not isinstance(n_iter, numbers.Integral):
    raise TypeError(f"`n_iter` must be a positive int or None, got {n_iter!r}.")
  if n_iter < 1:
    raise ValueError(f"`n_iter` must be >= 1, got {n_iter}.")
  return int(n_iter)
