"""Sparsemax, entmax15 and α-entmax: the entmax family's public maps (its
member: :class:`softjax._core.entmax.Family`)."""

from __future__ import annotations

from typing import Any

import jax

from softjax import _core
from softjax._maps.normalise import run


@_core.shared_docs
def sparsemax(
  x: Any,
  axis: _core.Axis = -1,
  *,
  where: Any = None,
  temperature: float | jax.Array = 1.0,
  axis_name: Any = None,
) -> jax.Array:
  r"""Sparsemax: the Euclidean projection of the scores onto the simplex.

  .. math::
    \mathrm{sparsemax}(x) = \arg\min_{p \in \Delta} \|p - x\|^2
      = [x - \tau]_+, \qquad \textstyle\sum_i [x_i - \tau]_+ = 1.

  Unlike softmax it returns exact zeros: entries more than 1 below the
  largest score always get 0. It is :func:`entmax` at :math:`\alpha = 2`. The
  threshold :math:`\tau` is found without sorting, by a safeguarded secant
  iteration from a closed-form lower bound that stops at the exact root. The
  gradient is a ``jax.custom_vjp`` keeping only ``p``: with
  :math:`s = 1[p > 0]`,
  :math:`\bar x = s \odot g - s \langle s, g\rangle / \langle s, 1\rangle`.

  Args:
    {normaliser_args}

  Returns:
    An array of the shape and floating dtype of ``x``: non-negative, summing
    to 1 along ``axis``, with exact zeros outside the support.

  Raises:
    {normaliser_raises}

  Example:
    >>> import jax.numpy as jnp
    >>> import softjax
    >>> softjax.sparsemax(jnp.array([0.75, 0.5, -1.0]))
    Array([0.625, 0.375, 0.   ], dtype=float32)
    >>> softjax.sparsemax(jnp.array([2.3, 1.1, -0.4]))
    Array([1., 0., 0.], dtype=float32)

  References:
    {ref_martins2016}
    C. Michelot. "A finite algorithm for finding the projection of a point
    onto the canonical simplex of R^n". JOTA, 1986.
  """
  return run(x, 2.0, axis, where, temperature, None, axis_name)


@_core.shared_docs
def entmax15(
  x: Any,
  axis: _core.Axis = -1,
  *,
  where: Any = None,
  temperature: float | jax.Array = 1.0,
  axis_name: Any = None,
) -> jax.Array:
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
    {normaliser_args}

  Returns:
    An array of the shape and floating dtype of ``x``: non-negative, summing
    to 1 along ``axis``, with exact zeros outside the support.

  Raises:
    {normaliser_raises}

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import softjax
    >>> np.asarray(softjax.entmax15(jnp.array([2.3, 1.1, -0.4]))).round(4)
    array([0.8842, 0.1158, 0.    ], dtype=float32)

  References:
    {ref_peters2019}
  """
  return run(x, 1.5, axis, where, temperature, None, axis_name)


@_core.shared_docs
def entmax(
  x: Any,
  alpha: float | jax.Array = 1.5,
  axis: _core.Axis = -1,
  *,
  where: Any = None,
  temperature: float | jax.Array = 1.0,
  n_iter: int | None = None,
  axis_name: Any = None,
) -> jax.Array:
  r"""α-entmax: the family from softmax (α = 1) to sparsemax (α = 2) and beyond.

  .. math::
    \alpha\text{-entmax}(x) = \arg\max_{p \in \Delta}
      \langle p, x\rangle + H_\alpha(p)
      = [(\alpha - 1) x - \tau]_+^{1/(\alpha - 1)},
    \qquad H_\alpha(p) = \frac{1 - \sum_i p_i^\alpha}{\alpha(\alpha - 1)}.

  Larger α gives sparser outputs; values are continuous in α, including at
  α = 1 (softmax). The threshold :math:`\tau` comes from one safeguarded
  solver shared by the family: secant steps from a closed-form lower bound
  for α ≤ 2 (convex case: monotone, no overshoot), bisection for α > 2,
  stopping at the dtype's tolerance or after ``n_iter`` steps. An array α is
  evaluated at ``max(α, 1 + 1e-7)``, within ``6e-8`` of softmax at α = 1.

  Accuracy: for α ≤ 2 the result matches the exact solution to float32
  rounding (≤ 2e-6 for scores up to 100 in magnitude). For α > 2 the map
  is not Lipschitz at the edge of the support (:math:`\partial p/\partial x
  = p^{2-\alpha}` is unbounded there), so an entry within a few float32 ulps
  of the edge may differ from the exact value by up to
  :math:`(4(\alpha-1)\,\mathrm{eps})^{1/(\alpha-1)}` (about 1e-3 at α = 3);
  use float64 if that matters.

  Gradients are a ``jax.custom_vjp`` keeping only ``p`` and α. For the
  scores, with :math:`s = p^{2-\alpha}` on the support,
  :math:`\bar x = s \odot g - s \langle s, g\rangle / \langle s, 1\rangle`.
  For an array α (learnable, e.g. one per attention head), the gradient of
  Correia et al. (2019) is computed in a form that stays accurate as α → 1.

  Args:
    x: {x}
    alpha: α >= 1, a Python float or an array broadcastable to ``x`` with
      size 1 along ``axis`` (one α per row or per head, e.g. shape
      ``(heads, 1, 1)`` for scores ``(batch, heads, q, k)``); an array α
      receives a gradient.
    axis: {axis}
    where: {where}
    temperature: {temperature}
    n_iter: maximum number of solver steps; ``None`` picks one that reaches
      the dtype's precision (30 for float32, 60 for float64). The solver stops
      earlier once the output sums to 1 within the dtype's tolerance.
    axis_name: {axis_name}

  Returns:
    An array of the shape and floating dtype of ``x``: non-negative, summing
    to 1 along ``axis``, with exact zeros outside the support (for α > 1).

  Raises:
    ValueError: ``axis`` out of range, ``temperature`` not positive and finite,
      ``where`` not broadcastable to ``x``, ``alpha`` < 1 or NaN.
    TypeError: {raises_type}

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
    {ref_peters2019}
    {ref_correia2019}
  """
  return run(x, alpha, axis, where, temperature, n_iter, axis_name)
