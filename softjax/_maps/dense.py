"""Softmax and log-softmax with hand-written VJPs that keep only the output."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from softjax import _core


def forward(
  x: jax.Array, temperature: jax.Array | None, rows: _core.Rows, log: bool
) -> tuple[jax.Array, tuple[Any, ...]]:
  """The forward pass of :func:`normalise`: ``(out, residuals)``.

  Plain JAX, so callers that need the output differentiable to second order
  (the losses) call this directly. The one output-sized residual is the
  probabilities ``p``, for log_softmax too, whose backward ``g - p Σg`` then
  needs no ``exp`` (a second transcendental per entry is what kept it at 2x
  ``jax.nn.log_softmax``). Only with an array temperature, whose cotangent
  needs every live entry's log-probability (``p`` loses it where it
  underflows), does log_softmax keep its output instead.
  """
  u = _core.scale(x, temperature)
  shifted, m, scale = _core.shift_rows_for_exp(u, rows)
  unnormalized = jnp.exp(shifted)
  total = _core.exp_total(rows.sum(unnormalized))
  if log:
    # log_softmax outputs the shifted scores, so it needs the exact -inf of
    # the finite entries of rows holding +inf (see shift_rows_for_exp).
    out = shifted * (1.0 / scale) - jnp.log(total)
    saved = out if temperature is not None else unnormalized / total
  else:
    out = saved = unnormalized / total
  shift = None
  if _core.varies_along(temperature, x.ndim, rows.axes):
    shift = _core.finite_or_zero(m + jnp.log(total))
  return out, (saved, temperature, shift)


def _backward(rows, log, res, g):
  saved, temperature, shift = res
  if not log:
    p = saved
    du = p * (g - rows.sum(g * p))
    centred = None if temperature is None else _safe_log(p)
  elif temperature is None:
    # `saved` is p. A -inf output has p = 0 and takes no part; its own
    # cotangent is 0 for any finite function of the outputs (log_softmax
    # drops it explicitly for entries masked with `where`).
    du = g - saved * rows.sum(g)
  else:
    # `saved` is the output; -inf outputs are constants whose cotangent is
    # dropped.
    live = saved > -jnp.inf
    g = jnp.where(live, g, jnp.zeros((), g.dtype))
    du = g - jnp.exp(saved) * rows.sum(g)
    centred = jnp.where(live, saved, jnp.zeros((), saved.dtype))
  if temperature is None:
    return du, None
  dt = _core.temperature_cotangent(du, centred, temperature, shift)
  return du / temperature, dt


def _safe_log(p: jax.Array) -> jax.Array:
  """``log p`` where ``p > 0``, else 0 (log p up to a per-row constant).

  The safe argument avoids ``log(0)`` even in the discarded branch, which
  would poison second derivatives.
  """
  positive = p > 0
  return jnp.where(
    positive,
    jnp.log(jnp.where(positive, p, jnp.ones((), p.dtype))),
    jnp.zeros((), p.dtype),
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def normalise(
  x: jax.Array, temperature: jax.Array | None, rows: _core.Rows, log: bool
) -> jax.Array:
  """softmax (``log=False``) or log_softmax of prepared scores.

  A ``custom_vjp`` keeping only the probabilities (and an array
  temperature).
  """
  return forward(x, temperature, rows, log)[0]


normalise.defvjp(forward, _backward)


@_core.shared_docs
def softmax(
  x: Any,
  axis: _core.Axis = -1,
  *,
  where: Any = None,
  temperature: float | jax.Array = 1.0,
  axis_name: Any = None,
) -> jax.Array:
  r"""Softmax: scores to a dense probability distribution.

  .. math::
    \mathrm{softmax}(x)_i = \frac{\exp(x_i / T - m)}{\sum_j \exp(x_j / T - m)},
    \qquad m = \max_j x_j / T,

  where subtracting the row maximum :math:`m` changes nothing mathematically
  and prevents overflow, so any finite input is safe. It is the
  :math:`\alpha = 1` member of the entmax family and the gradient map of
  :math:`\log\sum\exp` (Bridle, 1990).

  The gradient is a ``jax.custom_vjp`` that keeps only the output ``p`` (and
  an array temperature): :math:`\bar x = p \odot (g - \langle g, p\rangle)`.

  Args:
    {normaliser_args}

  Returns:
    An array of the shape and floating dtype of ``x`` whose entries along
    ``axis`` are non-negative and sum to 1.

  Raises:
    {normaliser_raises}

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import softjax
    >>> np.asarray(softjax.softmax(jnp.array([1000.0, 999.0, 998.0]))).round(3)
    array([0.665, 0.245, 0.09 ], dtype=float32)
    >>> np.asarray(softjax.softmax(jnp.array([1.0, 3.0, 2.0]), temperature=0.5)
    ...            ).round(3)
    array([0.016, 0.867, 0.117], dtype=float32)

  References:
    {ref_bridle1990}
  """
  prep = _core.prepare(x, axis, where, temperature, axis_name)
  return _core.finish(
    normalise(prep.x, prep.temperature, prep.rows, False), prep
  )


@_core.shared_docs
def log_softmax(
  x: Any,
  axis: _core.Axis = -1,
  *,
  where: Any = None,
  temperature: float | jax.Array = 1.0,
  axis_name: Any = None,
) -> jax.Array:
  r"""Log-softmax: the logarithm of :func:`softmax`, computed stably.

  .. math::
    \mathrm{log\_softmax}(x)_i = x_i / T - m - \log \sum_j \exp(x_j / T - m),
    \qquad m = \max_j x_j / T.

  Huge logits stay finite. The gradient is a ``jax.custom_vjp`` that keeps
  only the probabilities :math:`p = e^{\ell}`:
  :math:`\bar x = g - p \sum_j g_j`, with no second transcendental (an
  array temperature keeps :math:`\ell` instead, whose cotangent needs it).
  The cotangent of a ``-inf`` output is dropped for entries masked with
  ``where``; for a ``-inf`` score it is 0 whenever the function of the
  outputs being differentiated is finite.

  Args:
    x: {x}
    axis: {axis}
    where: optional boolean mask broadcastable to ``x``; ``False`` entries get
      ``-inf`` and a zero gradient.
    temperature: {temperature}
    axis_name: {axis_name}

  Returns:
    An array of the shape and floating dtype of ``x``; ``exp`` of it sums to 1
    along ``axis`` (to 0 on rows where every entry is masked).

  Raises:
    {normaliser_raises}

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import softjax
    >>> softjax.log_softmax(jnp.array([1e30, 0.0]))
    Array([  0.e+00, -1.e+30], dtype=float32)
    >>> np.exp(softjax.log_softmax(jnp.array([1.0, 3.0, 2.0]))).round(3)
    array([0.09 , 0.665, 0.245], dtype=float32)

  References:
    {ref_bridle1990}
  """
  prep = _core.prepare(x, axis, where, temperature, axis_name)
  out = normalise(prep.x, prep.temperature, prep.rows, True)
  if prep.where is not None:
    # Masked outputs are the constant -inf: this drops their cotangents,
    # which the backward pass (keeping only p) could not tell apart.
    out = jnp.where(prep.where, out, -jnp.inf)
  return _core.finish(out, prep)
