"""Budget sparsemax, a sparse and differentiable top-k (its member:
:class:`softjax._core.budget.Budget`)."""

from __future__ import annotations

from typing import Any

import jax

from softjax import _core
from softjax._maps.normalise import normalise


@_core.shared_docs
def budget_sparsemax(
  x: Any,
  k: float | jax.Array,
  axis: _core.Axis = -1,
  *,
  where: Any = None,
  temperature: float | jax.Array = 1.0,
  axis_name: Any = None,
) -> jax.Array:
  r"""Budget sparsemax: a sparse, differentiable top-k.

  The Euclidean projection of the scores onto the capped simplex:

  .. math::
    \mathrm{budget}_k(x) = \arg\min_{0 \le p \le 1,\ \sum_i p_i = k}
      \|p - x\|^2 = \mathrm{clip}(x - \tau, 0, 1),
    \qquad \textstyle\sum_i \mathrm{clip}(x_i - \tau, 0, 1) = k.

  It puts mass ``k`` on the top entries with each entry at most 1: entries
  far above the rest are exactly 1, entries far below are exactly 0, and
  only the entries near the threshold (the *fraction*
  :math:`F = \{i : 0 < p_i < 1\}`) are in between and move with the
  scores. A relaxation of top-``k`` selection (mixture-of-experts routing,
  token selection, subset sampling); ``k = 1`` is :func:`sparsemax`. The
  threshold is found without sorting, by the safeguarded secant iteration
  shared with the entmax family, stopping at the exact root once it has
  found the fraction.

  The gradient is a ``jax.custom_vjp`` keeping only ``p`` (and an array
  ``k``): with :math:`s = 1_F`,
  :math:`\bar x = s \odot g - s \langle s, g\rangle / |F|` and, for an
  array ``k``, :math:`\bar k = \langle s, g\rangle / |F|` (0 where no entry
  is fractional: there the output jumps as ``k`` crosses an integer).

  Rows with ``+inf`` scores give each of their ``c`` infinite entries
  ``min(1, k / c)`` and 0 elsewhere. Float32 accuracy: the row sum is ``k``
  to a few ulps of ``k``, so the fractional entries are within about
  ``4 k eps / |F|`` of the exact projection; use float64 for more.

  Args:
    x: {x}
    k: the budget: a positive number at most the number of (unmasked)
      entries of a row, or an array broadcastable to ``x`` with size 1 along
      ``axis`` (one ``k`` per row; it receives a gradient). A traced ``k``
      above a row's unmasked entries gives 1 on each of them; a traced
      ``k <= 0`` gives zeros, NaN a NaN row.
    axis: {axis}
    where: {where}
    temperature: {temperature}
    axis_name: {axis_name}

  Returns:
    An array of the shape and floating dtype of ``x``, in ``[0, 1]``,
    summing to ``k`` along ``axis``, with exact zeros and ones outside the
    fraction.

  Raises:
    ValueError: ``k`` not positive and finite, above the row length or, with
      a concrete ``where``, above a row's unmasked entries, or of a shape
      other than one per row; ``axis`` out of range, ``temperature`` not
      positive and finite, ``where`` not broadcastable to ``x``.
    TypeError: boolean ``k``; {raises_type}

  Example:
    >>> import jax.numpy as jnp
    >>> import softjax
    >>> x = jnp.array([3.0, 1.5, 1.25, 0.25, -1.0])
    >>> softjax.budget_sparsemax(x, 2.0)
    Array([1.   , 0.625, 0.375, 0.   , 0.   ], dtype=float32)
    >>> softjax.budget_sparsemax(x, 1.0)   # sparsemax
    Array([1., 0., 0., 0., 0.], dtype=float32)

  References:
    W. Wang, C. Lu. "Projection onto the Capped Simplex". arXiv:1503.01002,
    2015.
    {ref_martins2016}
    C. Michelot. "A finite algorithm for finding the projection of a point
    onto the canonical simplex of R^n". JOTA, 1986.
  """
  prep = _core.prepare(x, axis, where, temperature, axis_name)
  k = _core.check_k(k, prep.x.shape, prep.axes, prep.rows.size(prep.x), where)
  member = _core.Budget.of_k(k, prep.x.dtype)
  out = normalise(prep.x, prep.temperature, member, prep.rows, None)
  return _core.finish(out, prep)
