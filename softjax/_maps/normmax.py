"""α-normmax, the normaliser of sparse Hopfield networks (its member:
:class:`softjax._core.normmax.Normmax`)."""

from __future__ import annotations

from typing import Any

import jax

from softjax import _core
from softjax._maps.normalise import run


@_core.shared_docs
def normmax(
  x: Any,
  alpha: float | jax.Array = 2.0,
  axis: _core.Axis = -1,
  *,
  where: Any = None,
  temperature: float | jax.Array = 1.0,
  n_iter: int | None = None,
  axis_name: Any = None,
) -> jax.Array:
  r"""α-normmax: the normaliser of sparse Hopfield networks.

  .. math::
    \alpha\text{-normmax}(x) = \arg\max_{p \in \Delta}
      \langle p, x\rangle - \|p\|_\alpha
      = \frac{u}{\sum_j u_j}, \quad
    u_i = [x_i - \tau]_+^{1/(\alpha - 1)}, \quad
    \textstyle\sum_i u_i^\alpha = 1.

  Sparse like α-entmax, but its regulariser is a norm, not a sum over the
  entries, so it favours equal weights on its support: as α grows the
  support's weights flatten, and as α → ∞ normmax is the uniform
  distribution on the support of :func:`sparsemax`; as α → 1 it tends to the
  arg-max. The threshold :math:`\tau` is that of :math:`\alpha'`-entmax of
  :math:`x / \varepsilon'` with :math:`\varepsilon' = (\alpha - 1)/\alpha`
  and :math:`\alpha' = 2 - 1/\alpha`, found by the shared solver
  (α = 2 uses entmax15's transcendental-free form); then
  :math:`p \propto \alpha'\text{-entmax}^{1/\alpha}`.

  Gradients are a ``jax.custom_vjp`` keeping only ``p`` and α. With
  :math:`s = p^{2 - \alpha}` on the support and :math:`N = \|p\|_\alpha`,
  the Jacobian is symmetric:
  :math:`\bar x = \frac{N^{\alpha-1}}{\alpha - 1}\,[s \odot g
  - \langle g, p\rangle s - \langle g, s\rangle p
  + \langle g, p\rangle \langle s, 1\rangle p]`. An array α (learnable)
  gets the gradient of the implicit function ``Σ u^α = 1``.

  Args:
    x: {x}
    alpha: α > 1, a Python float or an array broadcastable to ``x`` with
      size 1 along ``axis`` (one α per row or per head); an array α receives
      a gradient and is evaluated at ``max(α, 1 + 1e-6)`` (so a traced
      α <= 1 gives the near-arg-max of α = 1 + 1e-6, with a zero α-gradient;
      NaN or infinite α gives NaN).
    axis: {axis}
    where: {where}
    temperature: {temperature}
    n_iter: maximum number of solver steps; ``None`` picks one that reaches
      the dtype's precision (30 for float32, 60 for float64).
    axis_name: {axis_name}

  Returns:
    An array of the shape and floating dtype of ``x``: non-negative, summing
    to 1 along ``axis``, with exact zeros outside the support.

  Raises:
    ValueError: ``alpha`` <= 1, NaN or infinite, or not one per row;
      ``axis`` out of range, ``temperature`` not positive and finite,
      ``where`` not broadcastable to ``x``.
    TypeError: boolean ``alpha``; {raises_type}

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import softjax
    >>> x = jnp.array([1.2, 0.8, 0.5, -0.4])
    >>> np.asarray(softjax.normmax(x)).round(4)   # alpha = 2
    array([0.5772, 0.3112, 0.1116, 0.    ], dtype=float32)
    >>> np.asarray(softjax.normmax(x, 4.0)).round(4)   # flatter support
    array([0.4479, 0.3508, 0.2013, 0.    ], dtype=float32)

  References:
    S. Santos, V. Niculae, D. McNamee, A. F. T. Martins. "Sparse and
    Structured Hopfield Networks". ICML 2024.
    {ref_blondel2020}
  """
  return run(
    x, alpha, axis, where, temperature, n_iter, axis_name, normmax=True
  )
