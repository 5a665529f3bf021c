"""Sparsemax, entmax15 and α-entmax: custom VJPs over the shared solver."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from softjax import _checks
from softjax import _core
from softjax import _dense
from softjax import _threshold


def _live_power(p: jax.Array, exponent: Any) -> jax.Array:
  """``p ** exponent`` on the support, 0 elsewhere, safe to differentiate."""
  zero = jnp.zeros((), p.dtype)
  live = p > 0
  safe = jnp.where(live, p, jnp.ones((), p.dtype))
  return jnp.where(live, jnp.exp(exponent * jnp.log(safe)), zero)


def _slopes(p: jax.Array, eps: _threshold.Eps) -> jax.Array:
  """``s = p^(1-ε)`` on the support: the diagonal of the Jacobian's core."""
  if isinstance(eps, float) and eps == 1.0:
    return (p > 0).astype(p.dtype)
  if isinstance(eps, float) and eps == 0.5:
    live = p > 0
    return jnp.where(live, jnp.sqrt(jnp.where(live, p, 1.0)), 0.0).astype(
        p.dtype)
  return _live_power(p, 1.0 - eps)


def _centred(p: jax.Array, eps: _threshold.Eps) -> tuple[jax.Array, jax.Array]:
  """Scores minus the threshold, ``v = z - t``, recovered from ``p`` alone.

  On the support ``1 + ε v = p^ε``; off it ``v`` is set to 0 (every use
  multiplies it by something that vanishes there). Returns ``(v, w = ε v)``.
  """
  zero = jnp.zeros((), p.dtype)
  if isinstance(eps, float) and eps == 1.0:
    w = jnp.where(p > 0, p - 1.0, zero)
    return w, w
  live = p > 0
  log_p = jnp.log(jnp.where(live, p, jnp.ones((), p.dtype)))
  w = jnp.where(live, jnp.expm1(eps * log_p), zero)
  if isinstance(eps, float):
    return w / eps, w
  eps_safe = jnp.where(eps > 0, eps, jnp.ones((), p.dtype))
  v = jnp.where(eps > 0, w / eps_safe, jnp.where(live, log_p, zero))
  return v, w


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _entmax(x, temperature, eps_array, axes, eps_static, n_iter):
  return _entmax_fwd(x, temperature, eps_array, axes, eps_static, n_iter)[0]


def _entmax_fwd(x, temperature, eps_array, axes, eps_static, n_iter):
  eps = eps_static if eps_array is None else eps_array
  u = _core.scale(x, temperature)
  u, m = _core.sanitize_rows(u, axes)
  z = u - m
  t, total = _threshold.solve(z, eps, axes, n_iter)
  p, _ = _threshold.family(z, t, eps)
  # Dividing by the sum at the final iterate puts the output on the simplex
  # to rounding at no extra pass; NaN rows stay NaN, empty rows stay zero.
  total = jnp.where(jnp.isnan(m), jnp.nan, total).astype(p.dtype)
  p = p / jnp.where(total == 0, jnp.ones((), total.dtype), total)
  shift = t + m if _core.varies_along(temperature, x.ndim, axes) else None
  return p, (p, temperature, eps_array, shift)


def _entmax_bwd(axes, eps_static, n_iter, res, g):
  del n_iter
  p, temperature, eps_array, shift = res
  eps = eps_static if eps_array is None else eps_array
  keep = dict(axis=axes, keepdims=True)
  s = _slopes(p, eps)
  slope = jnp.sum(s, **keep)
  slope = jnp.where(slope == 0, jnp.ones((), slope.dtype), slope)
  sg = jnp.sum(s * g, **keep)
  du = s * g - s * (sg / slope)
  d_eps = None
  v = None
  if eps_array is not None or temperature is not None:
    v, w = _centred(p, eps)
  if eps_array is not None:
    # ∂p/∂ε = r - s Σr / Σs with r = p v² ψ(ε v) (implicit function theorem).
    r = jnp.where(p > 0, p * v * v * _threshold.psi(w), 0.0).astype(p.dtype)
    per_row = jnp.sum(g * r, **keep) - sg * jnp.sum(r, **keep) / slope
    d_eps = _core.reduce_to_shape(per_row, eps_array.shape)
  if temperature is None:
    return du, None, d_eps
  dt = _core.temperature_cotangent(du, v, temperature, shift)
  return du / temperature, dt, d_eps


_entmax.defvjp(_entmax_fwd, _entmax_bwd)


def _run(x, alpha, axis, where, temperature, n_iter):
  prep = _core.prepare(x, axis, where, temperature)
  alpha = _checks.check_alpha(alpha, prep.x.shape, prep.axes)
  n_iter = _checks.check_n_iter(n_iter)
  if isinstance(alpha, float):
    if alpha == 1.0:
      out = _dense._dense(prep.x, prep.temperature, prep.axes, False)
    else:
      out = _entmax(prep.x, prep.temperature, None, prep.axes, alpha - 1.0,
                    n_iter)
  else:
    eps = alpha.astype(prep.x.dtype) - 1.0
    out = _entmax(prep.x, prep.temperature, eps, prep.axes, None, n_iter)
  return _core.finish(out, prep)


def sparsemax(x: Any, axis: _checks.Axis = -1, *, where: Any = None,
              temperature: float | jax.Array = 1.0) -> jax.Array:
  r"""Sparsemax: the Euclidean projection of the scores onto the simplex.

  .. math::
    \mathrm{sparsemax}(x) = \arg\min_{p \in \Delta} \|p - x\|^2
      = [x - \tau]_+, \qquad \textstyle\sum_i [x_i - \tau]_+ = 1.

  Unlike softmax it returns exact zeros: entries more than 1 below the
  largest score always get 0. It is :func:`entmax` at :math:`\alpha = 2`. The
  threshold :math:`\tau` is found by Newton's method from a lower bound,
  which for sparsemax terminates at the exact root (no sort). The gradient is
  a ``jax.custom_vjp`` keeping only ``p``: with :math:`s = 1[p > 0]`,
  :math:`\bar x = s \odot g - s \langle s, g\rangle / \langle s, 1\rangle`.

  Args:
    x: scores; any real dtype. Integers are promoted to float; ``float16``
      and ``bfloat16`` are computed in float32 and returned in their dtype.
    axis: the axis or axes to normalise over (an int, a tuple of ints, or
      ``None`` for all axes).
    where: optional boolean mask broadcastable to ``x``; ``False`` entries get
      exactly 0 and a zero gradient. Rows with every entry masked give zeros.
    temperature: a positive float, or a positive array broadcastable to ``x``
      (which then receives a gradient); the map is applied to ``x / T``.

  Returns:
    An array of the shape and floating dtype of ``x``: non-negative, summing
    to 1 along ``axis``, with exact zeros outside the support.

  Raises:
    ValueError: ``axis`` out of range, ``temperature`` not positive and finite,
      ``where`` not broadcastable to ``x``.
    TypeError: boolean or complex ``x``, non-boolean ``where``.

  Example:
    >>> import jax.numpy as jnp
    >>> import softjax
    >>> softjax.sparsemax(jnp.array([0.75, 0.5, -1.0]))
    Array([0.625, 0.375, 0.   ], dtype=float32)
    >>> softjax.sparsemax(jnp.array([2.3, 1.1, -0.4]))
    Array([1., 0., 0.], dtype=float32)

  References:
    A. F. T. Martins, R. F. Astudillo. "From Softmax to Sparsemax: A Sparse
    Model of Attention and Multi-Label Classification". ICML 2016.
    C. Michelot. "A finite algorithm for finding the projection of a point
    onto the canonical simplex of R^n". JOTA, 1986.
  """
  return _run(x, 2.0, axis, where, temperature, None)


def entmax15(x: Any, axis: _checks.Axis = -1, *, where: Any = None,
             temperature: float | jax.Array = 1.0) -> jax.Array:
  r"""1.5-entmax: sparse like sparsemax, smooth like softmax on its support.

  .. math::
    \mathrm{entmax}_{1.5}(x) = \arg\max_{p \in \Delta}
      \langle p, x\rangle + H_{1.5}(p)
      = \left[\tfrac{x}{2} - \tau\right]_+^2,

  with :math:`H_\alpha` the Tsallis entropy. It is :func:`entmax` at
  :math:`\alpha = 1.5`. The gradient is a ``jax.custom_vjp`` keeping only
  ``p``: with :math:`s = \sqrt{p}`,
  :math:`\bar x = s \odot g - s \langle s, g\rangle / \langle s, 1\rangle`.

  Args:
    x: scores; any real dtype. Integers are promoted to float; ``float16``
      and ``bfloat16`` are computed in float32 and returned in their dtype.
    axis: the axis or axes to normalise over (an int, a tuple of ints, or
      ``None`` for all axes).
    where: optional boolean mask broadcastable to ``x``; ``False`` entries get
      exactly 0 and a zero gradient. Rows with every entry masked give zeros.
    temperature: a positive float, or a positive array broadcastable to ``x``
      (which then receives a gradient); the map is applied to ``x / T``.

  Returns:
    An array of the shape and floating dtype of ``x``: non-negative, summing
    to 1 along ``axis``, with exact zeros outside the support.

  Raises:
    ValueError: ``axis`` out of range, ``temperature`` not positive and finite,
      ``where`` not broadcastable to ``x``.
    TypeError: boolean or complex ``x``, non-boolean ``where``.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import softjax
    >>> np.asarray(softjax.entmax15(jnp.array([2.3, 1.1, -0.4]))).round(4)
    array([0.8842, 0.1158, 0.    ], dtype=float32)

  References:
    B. Peters, V. Niculae, A. F. T. Martins. "Sparse Sequence-to-Sequence
    Models". ACL 2019.
  """
  return _run(x, 1.5, axis, where, temperature, None)


def entmax(x: Any, alpha: float | jax.Array = 1.5, axis: _checks.Axis = -1,
           *, where: Any = None, temperature: float | jax.Array = 1.0,
           n_iter: int | None = None) -> jax.Array:
  r"""α-entmax: the family from softmax (α = 1) to sparsemax (α = 2) and beyond.

  .. math::
    \alpha\text{-entmax}(x) = \arg\max_{p \in \Delta}
      \langle p, x\rangle + H_\alpha(p)
      = [(\alpha - 1) x - \tau]_+^{1/(\alpha - 1)},
    \qquad H_\alpha(p) = \frac{1 - \sum_i p_i^\alpha}{\alpha(\alpha - 1)}.

  Larger α gives sparser outputs; values are continuous in α, including at
  α = 1 (softmax). The threshold :math:`\tau` comes from one safeguarded
  solver: Newton steps from a closed-form lower bound for α ≤ 2 (convex
  case: monotone, no overshoot), bisection for α > 2, stopping at the dtype's
  tolerance or after ``n_iter`` steps.

  Gradients are a ``jax.custom_vjp`` keeping only ``p`` and α. For the
  scores, with :math:`s = p^{2-\alpha}` on the support,
  :math:`\bar x = s \odot g - s \langle s, g\rangle / \langle s, 1\rangle`.
  For an array α (learnable, e.g. one per attention head), the gradient of
  Correia et al. (2019) is computed in a form that stays accurate as α → 1.

  Args:
    x: scores; any real dtype. Integers are promoted to float; ``float16``
      and ``bfloat16`` are computed in float32 and returned in their dtype.
    alpha: α >= 1, a Python float or an array broadcastable to ``x`` with
      size 1 along ``axis`` (one α per row or per head, e.g. shape
      ``(heads, 1, 1)`` for scores ``(batch, heads, q, k)``); an array α
      receives a gradient.
    axis: the axis or axes to normalise over (an int, a tuple of ints, or
      ``None`` for all axes).
    where: optional boolean mask broadcastable to ``x``; ``False`` entries get
      exactly 0 and a zero gradient. Rows with every entry masked give zeros.
    temperature: a positive float, or a positive array broadcastable to ``x``
      (which then receives a gradient); the map is applied to ``x / T``.
    n_iter: maximum number of solver steps; ``None`` picks one that reaches
      the dtype's precision (30 for float32, 60 for float64). The solver stops
      earlier once the output sums to 1 within the dtype's tolerance.

  Returns:
    An array of the shape and floating dtype of ``x``: non-negative, summing
    to 1 along ``axis``, with exact zeros outside the support (for α > 1).

  Raises:
    ValueError: ``axis`` out of range, ``temperature`` not positive and finite,
      ``where`` not broadcastable to ``x``, ``alpha`` < 1 or NaN.
    TypeError: boolean or complex ``x``, non-boolean ``where``.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import softjax
    >>> x = jnp.array([2.3, 1.1, -0.4])
    >>> softjax.entmax(x, 2.0)   # sparsemax
    Array([1., 0., 0.], dtype=float32)
    >>> np.asarray(softjax.entmax(x, 1.25)).round(4)
    array([0.8154, 0.1788, 0.0057], dtype=float32)
    >>> alpha = jnp.array([[1.1], [3.0]])   # one α per row, learnable
    >>> np.asarray(softjax.entmax(jnp.stack([x, x]), alpha)).round(4)
    array([[0.765 , 0.2053, 0.0297],
           [1.    , 0.    , 0.    ]], dtype=float32)

  References:
    B. Peters, V. Niculae, A. F. T. Martins. "Sparse Sequence-to-Sequence
    Models". ACL 2019.
    G. M. Correia, V. Niculae, A. F. T. Martins. "Adaptively Sparse
    Transformers". EMNLP 2019.
  """
  return _run(x, alpha, axis, where, temperature, n_iter)
