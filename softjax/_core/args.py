"""Argument validation and canonicalisation shared by every public function.

Everything here runs at trace time on static information (shapes, dtypes,
Python scalars, concrete arrays). Errors name the offending argument and say
what to pass instead. Traced values cannot be checked here; see
:mod:`softjax.checks` for opt-in runtime checks with
``jax.experimental.checkify``.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Axis = int | Sequence[int] | None


def is_concrete(value: Any) -> bool:
  """True when ``value`` holds numbers we can look at now (not a tracer)."""
  return not isinstance(value, jax.core.Tracer)


def array_and_dtype(value: Any, name: str, what: str) -> tuple[Any, Any]:
  """``(value, dtype)``, lists and Python scalars made NumPy arrays.

  Raises a ``TypeError`` naming ``name`` (which must be ``what``) for
  anything without a dtype.
  """
  if isinstance(value, (list, tuple)) or np.isscalar(value):
    value = np.asarray(value)
  dtype = getattr(value, "dtype", None)
  if dtype is None:
    raise TypeError(f"`{name}` must be {what}, got {type(value).__name__}.")
  return value, dtype


def as_float_array(x: Any, name: str = "x") -> jax.Array:
  """Returns ``x`` as a floating-point JAX array.

  Integers are promoted to the default float dtype, as ``jax.nn.softmax``
  does. Booleans and complex numbers have no meaning as scores and raise.
  """
  x, dtype = array_and_dtype(x, name, "an array of scores")
  if jnp.issubdtype(dtype, jnp.bool_):
    raise TypeError(
      f"`{name}` has boolean dtype; scores must be real numbers. To mask "
      "entries pass the boolean array as `where=` instead."
    )
  if jnp.issubdtype(dtype, jnp.complexfloating):
    raise TypeError(
      f"`{name}` has complex dtype {dtype}; scores must be real. Pass "
      f"`{name}.real` (or `jnp.abs({name})`) if that is what you mean."
    )
  if not (
    jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
  ):
    raise TypeError(f"`{name}` must have a numeric dtype, got {dtype}.")
  if jnp.issubdtype(dtype, jnp.integer):
    return jnp.asarray(x, dtype=jnp.result_type(float))
  return jnp.asarray(x)


def check_axis_name(axis_name: Any) -> Any:
  """A mesh axis name, a tuple of them, or None; bound where it is used."""
  if axis_name is None:
    return None
  names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
  if not names or any(
    isinstance(n, (list, dict, set)) or n is None for n in names
  ):
    raise TypeError(
      f"`axis_name` must be a mesh axis name or a tuple of names, got "
      f"{axis_name!r}."
    )
  for n in names:
    try:
      jax.lax.axis_size(n)
    except NameError:
      raise ValueError(
        f"`axis_name`={n!r} is not bound here. Pass it only inside "
        "`jax.shard_map` or `jax.pmap` over that mesh axis, when the "
        "normalised axis is split across it."
      ) from None
  return axis_name


def compute_dtype(dtype: Any) -> Any:
  """The dtype the maths runs in: at least float32, as the brief demands."""
  return jnp.promote_types(dtype, jnp.float32)


def canonicalize_axis(
  axis: Axis, ndim: int, name: str = "axis"
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
        f"`{name}` must be an int, a tuple of ints or None, got {axis!r}."
      )
    if not -ndim <= a < ndim:
      raise ValueError(
        f"`{name}`={axis!r} is out of range for an input with {ndim} "
        f"dimension(s); valid values are {-ndim}..{ndim - 1}."
        if ndim
        else f"`{name}`={axis!r} is out of range: the input is a scalar, so "
        "there is no axis to normalise over. Pass an array of scores."
      )
    out.append(int(a) % ndim)
  if len(set(out)) != len(out):
    raise ValueError(f"`{name}`={axis!r} names the same axis twice.")
  return tuple(sorted(out))


def check_broadcastable(
  value: jax.Array, shape: tuple[int, ...], name: str
) -> None:
  try:
    broadcast = jnp.broadcast_shapes(jnp.shape(value), shape)
  except ValueError:
    broadcast = None
  if broadcast != tuple(shape):
    raise ValueError(
      f"`{name}` has shape {jnp.shape(value)}, which is not broadcastable "
      f"to `x` of shape {tuple(shape)}."
    )


def check_where(where: Any, shape: tuple[int, ...]) -> jax.Array | None:
  """Validates a boolean mask; returns it as an array (or None)."""
  if where is None:
    return None
  where = jnp.asarray(where)
  if where.dtype != jnp.bool_:
    raise TypeError(
      f"`where` must be a boolean mask, got dtype {where.dtype}. Pass "
      "`mask.astype(bool)` (True keeps an entry)."
    )
  check_broadcastable(where, shape, "where")
  return where


def _check_positive_finite(value: Any, name: str) -> None:
  if not is_concrete(value):
    return
  arr = np.asarray(value, dtype=np.float64)
  if np.isnan(arr).any():
    raise ValueError(f"`{name}` contains NaN; it must be a positive number.")
  if not np.isfinite(arr).all():
    raise ValueError(f"`{name}` must be finite, got {value!r}.")
  if (arr <= 0).any():
    raise ValueError(
      f"`{name}` must be > 0, got {value!r}. A temperature near 0 gives "
      "the arg-max; use a small positive value such as 1e-3 instead."
    )


def canonical_temperature(
  temperature: Any, shape: tuple[int, ...]
) -> float | jax.Array:
  """Returns a Python float, or a float array broadcastable to ``shape``."""
  if isinstance(temperature, bool):
    raise TypeError("`temperature` must be a number or an array, not a bool.")
  if isinstance(temperature, numbers.Real):
    _check_positive_finite(temperature, "temperature")
    return float(temperature)
  t = as_float_array(temperature, "temperature")
  check_broadcastable(t, shape, "temperature")
  # The original value: a NumPy array closed over by a jitted function is
  # concrete, while its conversion to a JAX array there is a tracer.
  _check_positive_finite(temperature, "temperature")
  return t


def alpha_as_number_or_array(alpha: Any) -> float | jax.Array:
  """α as a Python float, or a float array; rejects booleans."""
  if isinstance(alpha, (bool, np.bool_)):
    raise TypeError("`alpha` must be a number or an array, not a bool.")
  if isinstance(alpha, numbers.Real):
    return float(alpha)
  return as_float_array(alpha, "alpha")


def check_alpha_values(alpha: float | jax.Array, normmax: bool = False) -> None:
  """Raises if a concrete α is NaN, below 1 or infinite (tracers pass).

  The one value check behind :func:`canonical_alpha` (normalisers) and
  :func:`check_alpha_per_example` (losses). α-normmax (``normmax``) needs
  α > 1: at α = 1 its regulariser ``||p||_1`` is constant on the simplex.
  """
  if not is_concrete(alpha):
    return
  arr = np.asarray(alpha, dtype=np.float64)
  if normmax and (np.isnan(arr).any() or (arr <= 1).any()):
    raise ValueError(
      f"`alpha` must be > 1 for normmax (at alpha = 1 the norm ||p||_1 is "
      f"constant on the simplex and the map is the arg-max), got {alpha!r}."
    )
  if np.isnan(arr).any() or (arr < 1).any():
    if arr.ndim == 0:
      raise ValueError(
        f"`alpha` must be >= 1 (1 is softmax, 2 is sparsemax), got "
        f"{float(arr)}."
      )
    raise ValueError(f"`alpha` must be >= 1 everywhere, got {alpha!r}.")
  if np.isinf(arr).any():
    limit = "uniform on the support of sparsemax" if normmax else "the arg-max"
    raise ValueError(f"`alpha` must be finite; alpha -> inf is {limit}.")


def check_per_row(
  value: jax.Array, shape: tuple[int, ...], axes: tuple[int, ...], name: str
) -> None:
  """Raises unless an array parameter has one value per row (or fewer).

  It must broadcast to the scores and have size 1 along the normalised
  ``axes``.
  """
  check_broadcastable(value, shape, name)
  v_shape = (1,) * (len(shape) - value.ndim) + value.shape
  if any(v_shape[i] != 1 for i in axes):
    raise ValueError(
      f"`{name}` has shape {value.shape}: it must have size 1 along the "
      f"normalised axis {axes} (one {name} per row or per head, e.g. shape "
      "(heads, 1, 1) for scores (batch, heads, q, k))."
    )


def canonical_alpha(
  alpha: Any,
  shape: tuple[int, ...],
  axes: tuple[int, ...],
  normmax: bool = False,
) -> float | jax.Array:
  """Returns α as a Python float, or an array with size 1 along ``axes``."""
  a = alpha_as_number_or_array(alpha)
  if isinstance(a, float):
    check_alpha_values(a, normmax)
    return a
  check_per_row(a, shape, axes, "alpha")
  # The original value: concrete even where its conversion is a tracer.
  check_alpha_values(alpha, normmax)
  return a


def check_k(
  k: Any,
  shape: tuple[int, ...],
  axes: tuple[int, ...],
  n: int,
  where: Any,
) -> float | jax.Array:
  """Budget sparsemax's ``k``: a Python float, or an array with one per row.

  ``n`` is the row length (all shards); ``where``, when concrete, lowers
  the bound to the number of unmasked entries of each row that has any.
  """
  if isinstance(k, (bool, np.bool_)):
    raise TypeError("`k` must be a number or an array, not a bool.")
  value = float(k) if isinstance(k, numbers.Real) else as_float_array(k, "k")
  if not isinstance(value, float):
    check_per_row(value, shape, axes, "k")
  if not is_concrete(k):
    return value
  arr = np.asarray(k, dtype=np.float64)
  if np.isnan(arr).any() or not (arr > 0).all() or np.isinf(arr).any():
    raise ValueError(
      f"`k` must be a positive finite number (the total mass, at most the "
      f"number of entries per row), got {k!r}."
    )
  if n and (arr > n).any():
    raise ValueError(
      f"`k`={k!r} is more than the {n} entries of a row: the capped simplex "
      "{0 <= p <= 1, sum(p) = k} would be empty."
    )
  if where is not None and is_concrete(where):
    _check_k_against_mask(arr, np.asarray(where), shape, axes)
  return value


def _check_k_against_mask(k, where, shape, axes):
  """Raises where ``k`` exceeds a row's unmasked entries (empty rows pass)."""
  live = np.broadcast_to(where, shape).sum(axis=axes, keepdims=True)
  need = np.broadcast_to(k, live.shape)
  bad = (live > 0) & (need > live)
  if bad.any():
    raise ValueError(
      f"`k` is more than the number of unmasked entries in some rows "
      f"(k={need[bad].ravel()[:3].tolist()}, unmasked "
      f"{live[bad].ravel()[:3].tolist()}): unmask more entries or lower `k`."
    )


def check_n_iter(n_iter: Any) -> int | None:
  if n_iter is None:
    return None
  if isinstance(n_iter, bool) or not isinstance(n_iter, numbers.Integral):
    raise TypeError(f"`n_iter` must be a positive int or None, got {n_iter!r}.")
  if n_iter < 1:
    raise ValueError(f"`n_iter` must be >= 1, got {n_iter}.")
  return int(n_iter)


def check_key(key: Any, name: str = "key") -> Any:
  """Accepts one PRNG key: a typed ``jax.random.key`` or a raw uint32 (2,)."""
  dtype = getattr(key, "dtype", None)
  shape = getattr(key, "shape", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    if shape != ():
      raise ValueError(
        f"`{name}` holds {math.prod(shape)} keys of shape {shape}; pass one "
        f"key, and `jax.vmap` over a batch of keys instead."
      )
    return key
  if dtype is not None and dtype == np.uint32 and shape == (2,):
    return key
  if dtype is not None and dtype == np.uint32 and shape[-1:] == (2,):
    raise ValueError(
      f"`{name}` has shape {shape}: that is a batch of raw keys. Pass one "
      f"key, and `jax.vmap` over a batch of keys instead."
    )
  described = (
    type(key).__name__
    if dtype is None
    else f"an array of dtype {dtype} and shape {shape}"
  )
  raise TypeError(
    f"`{name}` must be a PRNG key from `jax.random.key(seed)` (or a legacy "
    f"`jax.random.PRNGKey(seed)`), got {described}. The key comes first: "
    f"`gumbel_softmax(key, logits)`."
  )


def check_callable(value: Any, name: str) -> Any:
  if not callable(value):
    raise TypeError(
      f"`{name}` must be a callable such as `softjax.softmax` or "
      f"`softjax.sparsemax`, got {type(value).__name__}."
    )
  return value


def check_static_bool(value: Any, name: str) -> bool:
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(
      f"`{name}` must be a Python bool (it changes the computation, so it "
      f"cannot be traced), got {type(value).__name__}."
    )
  return bool(value)


def canonical_labels(
  labels: Any, shape: tuple[int, ...], axis: Axis, axes: tuple[int, ...]
) -> tuple[jax.Array, bool]:
  """Returns ``(labels, is_index)`` for a loss over ``axes`` of ``shape``.

  Integer labels are class ids (one per example, ``axis`` a single int);
  floating labels are distributions of the shape of the scores.
  """
  labels, dtype = array_and_dtype(labels, "labels", "an array")
  if jnp.issubdtype(dtype, jnp.bool_):
    raise TypeError(
      "`labels` has boolean dtype. Pass integer class ids, or a one-hot / "
      "soft target as floats: `labels.astype(jnp.float32)`."
    )
  if jnp.issubdtype(dtype, jnp.integer):
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
      raise ValueError(
        f"`axis`={axis!r}: integer `labels` (class ids) need a single int "
        "`axis`. For several class axes pass a one-hot (floating) target "
        "of the shape of `logits` instead."
      )
    expected = tuple(n for i, n in enumerate(shape) if i not in axes)
    if tuple(np.shape(labels)) != expected:
      raise ValueError(
        f"`labels` has shape {tuple(np.shape(labels))}; integer class ids "
        f"need one per example, shape {expected} (the shape of `logits` "
        f"{tuple(shape)} without axis {axes[0]})."
      )
    # Returned unconverted: a NumPy array stays concrete (checkable) even
    # inside a jitted function, where its conversion would be a tracer.
    return labels, True
  if jnp.issubdtype(dtype, jnp.floating):
    if tuple(np.shape(labels)) != tuple(shape):
      raise ValueError(
        f"`labels` has shape {tuple(np.shape(labels))}; floating labels are "
        f"target distributions and need the shape of `logits`, "
        f"{tuple(shape)}. For class ids pass an integer array."
      )
    return labels, False
  raise TypeError(
    f"`labels` must be integer class ids or floating target distributions, "
    f"got dtype {dtype}."
  )


def check_label_values(
  labels: jax.Array,
  is_index: bool,
  n_classes: int,
  live: jax.Array | None,
  axes: tuple[int, ...],
) -> None:
  """Checks concrete labels: ids in range, distributions on the simplex.

  ``live`` (concrete or None) marks the classes that are not masked; labels
  may not put mass on masked classes, except in rows with no live class.
  """
  if not is_concrete(labels):
    return
  if live is not None and not is_concrete(live):
    live = None
    if not is_index:
      return
  if is_index:
    _check_class_ids(np.asarray(labels), n_classes, live, axes)
  else:
    _check_distributions(np.asarray(labels), n_classes, live, axes)


def _check_class_ids(y, n_classes, live, axes):
  lv = None
  bad = (y < 0) | (y >= n_classes)
  if live is not None:
    lv = np.moveaxis(np.asarray(live), axes[0], -1)
    lv = np.broadcast_to(lv, y.shape + (n_classes,))
    bad = bad & lv.any(-1)  # a row masked whole is left out: any id
  if bad.any():
    raise ValueError(
      f"`labels` must be class ids in [0, {n_classes}), got "
      f"{y[bad].ravel()[:5].tolist()}. To leave tokens out (padding), pass "
      "their id as `ignore_index` (e.g. `ignore_index=-100`) or mask them: "
      "the fused losses' `where` takes one boolean per token, the in-memory "
      "losses' `where` masks classes (mask the token's whole row). Either "
      "way their loss is exactly 0. Multiplying the loss by 0 does not "
      "remove a bad id: traced, it gives a NaN loss, and NaN * 0 = NaN."
    )
  if lv is None:
    return
  y = np.where((y < 0) | (y >= n_classes), 0, y)  # only in rows masked whole
  hit = np.take_along_axis(lv, y[..., None], axis=-1)[..., 0]
  bad = ~hit & lv.any(-1)
  if bad.any():
    raise ValueError(
      f"`labels` point at masked classes "
      f"({y[bad].ravel()[:5].tolist()}); the loss would be +inf. "
      "Unmask the target class, or mask the whole row to leave the "
      "example out."
    )


def _check_distributions(labels, n_classes, live, axes):
  y = labels.astype(np.float64)
  if np.isnan(y).any():
    raise ValueError("`labels` contains NaN.")
  if (y < 0).any():
    raise ValueError(
      f"`labels` must be non-negative (a distribution over classes), got "
      f"{y[y < 0].ravel()[:5].tolist()}."
    )
  lv = (
    np.ones(y.shape, bool)
    if live is None
    else np.broadcast_to(np.asarray(live), y.shape)
  )
  row_live = lv.any(axis=axes)
  if ((y > 0) & ~lv).any(axis=axes)[row_live].any():
    raise ValueError(
      "`labels` put mass on masked classes; the loss would be +inf. Make "
      "the target 0 wherever `where` is False."
    )
  eps = float(np.finfo(labels.dtype).eps)
  tol = max(math.sqrt(eps), 4 * n_classes * eps)
  sums = y.sum(axis=axes)
  off = (np.abs(sums - 1.0) > tol) & row_live
  if off.any():
    raise ValueError(
      f"`labels` must sum to 1 along the class axis (floating labels are "
      f"target distributions), got sums {sums[off].ravel()[:5].tolist()}. "
      "For class ids pass an integer array."
    )


def check_alpha_per_example(
  alpha: Any, loss_shape: tuple[int, ...], normmax: bool = False
) -> float | jax.Array:
  """α for a loss: a float, or an array broadcastable to the loss's shape."""
  a = alpha_as_number_or_array(alpha)
  if isinstance(a, float):
    check_alpha_values(a, normmax)
    return a
  try:
    ok = jnp.broadcast_shapes(a.shape, loss_shape) == tuple(loss_shape)
  except ValueError:
    ok = False
  if not ok:
    raise ValueError(
      f"`alpha` has shape {a.shape}; an array alpha holds one value per "
      f"example and must be broadcastable to the loss's shape "
      f"{tuple(loss_shape)} (the shape of `logits` without the class axis; "
      "drop that axis from `alpha` rather than keeping it with size 1)."
    )
  check_alpha_values(alpha, normmax)
  return a


def check_token_labels(labels: Any, batch: tuple[int, ...]) -> Any:
  """Integer class ids of shape ``batch``, one per token (fused losses)."""
  labels, dtype = array_and_dtype(labels, "labels", "an array of class ids")
  if jnp.issubdtype(dtype, jnp.bool_) or not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(
      f"`labels` has dtype {dtype}; the fused losses take integer class "
      "ids only (soft targets would need the [tokens, V] matrix this "
      "function avoids). For soft targets compute the logits and use "
      "softjax.losses.softmax_loss and friends."
    )
  if tuple(np.shape(labels)) != batch:
    raise ValueError(
      f"`labels` has shape {tuple(np.shape(labels))}; it needs one class "
      f"id per token, the shape of `hidden` without its last axis, "
      f"{batch}."
    )
  return labels


REDUCTIONS = ("none", "sum", "mean")


def _option_float(value: Any, name: str, low: float, high: float) -> float:
  """A Python float in ``[low, high)``, or an error naming ``name``."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(
      f"`{name}` must be a Python float (it shapes the computation, so it "
      f"cannot be traced), got {type(value).__name__}."
    )
  value = float(value)
  if not low <= value < high:
    raise ValueError(f"`{name}` must lie in [{low}, {high}), got {value}.")
  return value


def check_loss_options(
  reduction: Any,
  ignore_index: Any,
  label_smoothing: Any,
  z_loss: Any,
  logit_soft_cap: Any,
) -> tuple[float, float, float | None]:
  """The options every loss shares, checked: ``(ε, λ, cap or None)``.

  ``reduction`` one of :data:`REDUCTIONS`, ``ignore_index`` an int or None,
  ``label_smoothing`` in ``[0, 1)``, ``z_loss`` ``>= 0``, ``logit_soft_cap``
  positive and finite or None; all Python values (they shape the program).
  """
  if not isinstance(reduction, str) or reduction not in REDUCTIONS:
    raise ValueError(
      f'`reduction` must be "none", "sum" or "mean", got {reduction!r}.'
    )
  if ignore_index is not None and (
    isinstance(ignore_index, bool)
    or not isinstance(ignore_index, numbers.Integral)
  ):
    raise TypeError(
      "`ignore_index` must be a Python int (e.g. -100) or None, got "
      f"{ignore_index!r}."
    )
  smoothing = _option_float(label_smoothing, "label_smoothing", 0.0, 1.0)
  z_loss = _option_float(z_loss, "z_loss", 0.0, math.inf)
  cap = logit_soft_cap
  if cap is not None:
    cap = _option_float(cap, "logit_soft_cap", 0.0, math.inf)
    if cap == 0.0:
      raise ValueError("`logit_soft_cap` must be positive, got 0.")
  return smoothing, z_loss, cap
