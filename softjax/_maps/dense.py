"""Softmax and log-softmax: the public maps of the α = 1 member
(:class:`softjax._core.softmax.Softmax`), whose VJPs keep only the output."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from softjax import _core
from softjax._maps.normalise import normalise


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
    normalise(prep.x, prep.temperature, _core.Softmax(), prep.rows, None),
    prep,
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
  member = _core.Softmax(log=True)
  out = normalise(prep.x, prep.temperature, member, prep.rows, None)
  if prep.where is not None:
    # Masked outputs are the constant -inf: this drops their cotangents,
    # which the backward pass (keeping only p) could not tell apart.
    out = jnp.where(prep.where, out, -jnp.inf)
  return _core.finish(out, prep)
