r"""The Fenchel-Young losses of the normalisers, on logits held in memory.

Each public function documents its loss and calls
:func:`softjax._losses.fenchel_young.run` with its α; the conventions they
share are in :mod:`softjax.losses`.
"""

from __future__ import annotations

from typing import Any

import jax

from softjax import _core
from softjax._losses import fenchel_young


@_core.shared_docs
def softmax_loss(
  logits: Any,
  labels: Any,
  axis: _core.Axis = -1,
  *,
  where: Any = None,
  axis_name: Any = None,
  ignore_index: int | None = None,
  reduction: str = "none",
  label_smoothing: float = 0.0,
  logit_soft_cap: float | None = None,
  z_loss: float = 0.0,
) -> jax.Array:
  r"""Softmax (cross-entropy) loss: the Fenchel-Young loss of softmax.

  .. math::
    L(z; y) = \log\sum_j e^{z_j} - \langle z, y\rangle + \sum_i y_i \log y_i
            = \mathrm{KL}(y \,\|\, \mathrm{softmax}(z)).

  For class ids (one-hot targets) this is the cross-entropy
  :math:`-\log \mathrm{softmax}(z)_k`, computed from the log-softmax so that it
  is exact for huge logits; for soft targets it is the cross-entropy minus the
  entropy of the target. The gradient is :math:`\mathrm{softmax}(z) - y`. See
  :mod:`softjax.losses` for the conventions on labels, masks and gradients.

  Args:
    {loss_args}
    {loss_options}
    z_loss: {loss_z_loss}

  Returns:
    {loss_options_returns}

  Raises:
    ValueError: labels of the wrong shape, ids outside ``[0, C)`` (other
      than ``ignore_index``) or on a masked class, targets that are negative
      or do not sum to 1; ``axis`` not an int with integer labels, or out of
      range; an unknown ``reduction``, ``label_smoothing`` outside ``[0, 1)``,
      a negative ``z_loss``, a ``logit_soft_cap`` that is not positive,
      ``ignore_index`` with floating labels.
    TypeError: boolean labels; boolean or complex logits; a traced or
      non-numeric ``label_smoothing``, ``z_loss`` or ``logit_soft_cap``; an
      ``ignore_index`` that is not an int.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import softjax
    >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> np.asarray(softjax.losses.softmax_loss(logits, jnp.array([0, 1]))
    ...            ).round(4)
    array([0.2761, 2.9518], dtype=float32)
    >>> soft = jnp.array([[0.8, 0.1, 0.1], [0.0, 0.5, 0.5]])
    >>> np.asarray(softjax.losses.softmax_loss(logits, soft)).round(4)
    array([0.0071, 1.1087], dtype=float32)
    >>> ids = jnp.array([0, -100])    # -100: padding, left out of the mean
    >>> loss = softjax.losses.softmax_loss(
    ...   logits, ids, ignore_index=-100, reduction="mean", label_smoothing=0.1)
    >>> np.asarray(loss).round(4)
    np.float32(0.1083)

  References:
    {ref_blondel2020}
  """
  opts = fenchel_young.Options(
    ignore_index, reduction, label_smoothing, z_loss, logit_soft_cap
  )
  return fenchel_young.run(
    logits, labels, 1.0, axis, where, axis_name, opts=opts
  )


@_core.shared_docs
def sparsemax_loss(
  logits: Any,
  labels: Any,
  axis: _core.Axis = -1,
  *,
  where: Any = None,
  axis_name: Any = None,
  ignore_index: int | None = None,
  reduction: str = "none",
  label_smoothing: float = 0.0,
  logit_soft_cap: float | None = None,
) -> jax.Array:
  r"""Sparsemax loss: the Fenchel-Young loss of :func:`softjax.sparsemax`.

  .. math::
    L(z; y) = \tfrac12 \|y - z\|^2 - \tfrac12 \|p - z\|^2,
    \qquad p = \mathrm{sparsemax}(z).

  It is 0 as soon as the target class leads the others by at least 1 (for a
  one-hot target), unlike cross-entropy, which is never 0. The gradient is
  :math:`p - y`. See :mod:`softjax.losses` for the conventions on labels,
  masks and gradients.

  Args:
    {loss_args}
    {loss_options}

  Returns:
    {loss_options_returns}

  Raises:
    {loss_options_raises}

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import softjax
    >>> logits = jnp.array([[2.3, 1.1, -0.4], [0.75, 0.5, -1.0]])
    >>> np.asarray(softjax.losses.sparsemax_loss(logits, jnp.array([0, 1]))
    ...            ).round(4)
    array([0.    , 0.3906], dtype=float32)

  References:
    {ref_martins2016}
    {ref_blondel2020}
  """
  opts = fenchel_young.Options(
    ignore_index, reduction, label_smoothing, 0.0, logit_soft_cap
  )
  return fenchel_young.run(
    logits, labels, 2.0, axis, where, axis_name, opts=opts
  )


@_core.shared_docs
def entmax15_loss(
  logits: Any,
  labels: Any,
  axis: _core.Axis = -1,
  *,
  where: Any = None,
  axis_name: Any = None,
  ignore_index: int | None = None,
  reduction: str = "none",
  label_smoothing: float = 0.0,
  logit_soft_cap: float | None = None,
) -> jax.Array:
  r"""1.5-entmax loss: the Fenchel-Young loss of :func:`softjax.entmax15`.

  .. math::
    L(z; y) = \langle p - y, z\rangle + H_{1.5}(p) - H_{1.5}(y),
    \qquad H_{1.5}(p) = \tfrac{4}{3}\big(1 - \textstyle\sum_i p_i^{3/2}\big),

  with :math:`p = \mathrm{entmax}_{1.5}(z)`. The gradient is :math:`p - y`.
  See :mod:`softjax.losses` for the conventions on labels, masks and
  gradients.

  Args:
    {loss_args}
    {loss_options}

  Returns:
    {loss_options_returns}

  Raises:
    {loss_options_raises}

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import softjax
    >>> logits = jnp.array([[2.3, 1.1, -0.4], [0.75, 0.5, -1.0]])
    >>> np.asarray(softjax.losses.entmax15_loss(logits, jnp.array([0, 1]))
    ...            ).round(4)
    array([0.0333, 0.5266], dtype=float32)

  References:
    {ref_peters2019}
    {ref_blondel2020}
  """
  opts = fenchel_young.Options(
    ignore_index, reduction, label_smoothing, 0.0, logit_soft_cap
  )
  return fenchel_young.run(
    logits, labels, 1.5, axis, where, axis_name, opts=opts
  )


@_core.shared_docs
def entmax_loss(
  logits: Any,
  labels: Any,
  alpha: float | jax.Array = 1.5,
  axis: _core.Axis = -1,
  *,
  where: Any = None,
  axis_name: Any = None,
  ignore_index: int | None = None,
  reduction: str = "none",
  label_smoothing: float = 0.0,
  logit_soft_cap: float | None = None,
) -> jax.Array:
  r"""α-entmax loss: the Fenchel-Young loss of :func:`softjax.entmax`.

  .. math::
    L(z; y) = \langle p - y, z\rangle + H_\alpha(p) - H_\alpha(y),
    \qquad H_\alpha(p) = \frac{1 - \sum_i p_i^\alpha}{\alpha(\alpha - 1)},

  with :math:`p = \alpha\text{-entmax}(z)`: the softmax loss at α = 1, the
  sparsemax loss at α = 2. The gradient in the logits is :math:`p - y`.

  An array α (one per example) receives a gradient. By the envelope theorem
  (``p`` maximises :math:`\langle p, z\rangle + H_\alpha(p)`) only the explicit
  dependence on α remains: :math:`\partial L / \partial\alpha =
  \partial_\alpha H_\alpha(p) - \partial_\alpha H_\alpha(y)` at fixed ``p``
  and ``y``, computed in a form that stays accurate as α → 1. See
  :mod:`softjax.losses` for the conventions on labels, masks and gradients.

  Args:
    logits: {logits}
    labels: {labels}
    alpha: α >= 1, a Python float or an array with one α per example:
      broadcastable to the loss's shape (``logits.shape`` without ``axis``;
      e.g. shape ``(batch,)`` for logits ``(batch, classes)``). Note that,
      unlike :func:`softjax.entmax`, the class axis is not kept.
    axis: {loss_axis}
    where: {loss_where}
    axis_name: {loss_axis_name}
    {loss_options}

  Returns:
    {loss_options_returns}

  Raises:
    ValueError: labels of the wrong shape, ids outside ``[0, C)`` (other
      than ``ignore_index``) or on a masked class, targets that are negative
      or do not sum to 1; ``axis`` not an int with integer labels, or out of
      range; ``alpha`` < 1, not finite, or of a shape not broadcastable to
      the loss; an unknown ``reduction``, ``label_smoothing`` outside
      ``[0, 1)``, a ``logit_soft_cap`` that is not positive, ``ignore_index``
      with floating labels.
    TypeError: boolean labels or ``alpha``; boolean or complex logits; a
      traced or non-numeric ``label_smoothing`` or ``logit_soft_cap``; an
      ``ignore_index`` that is not an int.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import softjax
    >>> logits = jnp.array([[2.3, 1.1, -0.4], [0.75, 0.5, -1.0]])
    >>> labels = jnp.array([0, 1])
    >>> np.asarray(softjax.losses.entmax_loss(logits, labels, 1.5)).round(4)
    array([0.0333, 0.5266], dtype=float32)
    >>> alpha = jnp.array([1.0, 2.0])    # one alpha per example
    >>> np.asarray(softjax.losses.entmax_loss(logits, labels, alpha)).round(4)
    array([0.3136, 0.3906], dtype=float32)
    >>> f = lambda a: softjax.losses.entmax_loss(logits, labels, a).sum()
    >>> jax.grad(f)(alpha).shape
    (2,)

  References:
    {ref_peters2019}
    {ref_correia2019}
    {ref_blondel2020}
  """
  opts = fenchel_young.Options(
    ignore_index, reduction, label_smoothing, 0.0, logit_soft_cap
  )
  return fenchel_young.run(
    logits, labels, alpha, axis, where, axis_name, opts=opts
  )


@_core.shared_docs
def normmax_loss(
  logits: Any,
  labels: Any,
  alpha: float | jax.Array = 2.0,
  axis: _core.Axis = -1,
  *,
  where: Any = None,
  axis_name: Any = None,
  ignore_index: int | None = None,
  reduction: str = "none",
  label_smoothing: float = 0.0,
  logit_soft_cap: float | None = None,
) -> jax.Array:
  r"""α-normmax loss: the Fenchel-Young loss of :func:`softjax.normmax`.

  .. math::
    L(z; y) = \langle p - y, z\rangle - \|p\|_\alpha + \|y\|_\alpha,
    \qquad p = \alpha\text{-normmax}(z),

  the Fenchel-Young loss of the regulariser
  :math:`\Omega(p) = \|p\|_\alpha - 1` (Santos et al., 2024). It is
  non-negative, zero exactly when :math:`p = y`, and its gradient in the
  logits is :math:`p - y`. An array α (one per example) receives the
  gradient :math:`\partial_\alpha \|y\|_\alpha - \partial_\alpha
  \|p\|_\alpha` at fixed ``p`` and ``y`` (envelope theorem). See
  :mod:`softjax.losses` for the conventions on labels, masks and gradients;
  soft labels get the cotangent :math:`g\,(\nabla\Omega(y) - z + c)` with
  :math:`\nabla\Omega(y) = (y / \|y\|_\alpha)^{\alpha - 1}`.

  Args:
    logits: {logits}
    labels: {labels}
    alpha: α > 1, a Python float or an array with one α per example:
      broadcastable to the loss's shape (``logits.shape`` without ``axis``).
      An array α is evaluated at ``max(α, 1 + 1e-6)``.
    axis: {loss_axis}
    where: {loss_where}
    axis_name: {loss_axis_name}
    {loss_options}

  Returns:
    {loss_options_returns}

  Raises:
    ValueError: labels of the wrong shape, ids outside ``[0, C)`` (other
      than ``ignore_index``) or on a masked class, targets that are negative
      or do not sum to 1; ``axis`` not an int with integer labels, or out of
      range; ``alpha`` <= 1, not finite, or of a shape not broadcastable to
      the loss; an unknown ``reduction``, ``label_smoothing`` outside
      ``[0, 1)``, a ``logit_soft_cap`` that is not positive, ``ignore_index``
      with floating labels.
    TypeError: boolean labels or ``alpha``; boolean or complex logits; a
      traced or non-numeric ``label_smoothing`` or ``logit_soft_cap``; an
      ``ignore_index`` that is not an int.

  Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import softjax
    >>> logits = jnp.array([[2.3, 1.1, -0.4], [0.75, 0.5, -1.0]])
    >>> np.asarray(softjax.losses.normmax_loss(logits, jnp.array([0, 1]))
    ...            ).round(4)
    array([0.   , 0.429], dtype=float32)

  References:
    S. Santos, V. Niculae, D. McNamee, A. F. T. Martins. "Sparse and
    Structured Hopfield Networks". ICML 2024.
    {ref_blondel2020}
  """
  opts = fenchel_young.Options(
    ignore_index, reduction, label_smoothing, 0.0, logit_soft_cap
  )
  return fenchel_young.run(
    logits, labels, alpha, axis, where, axis_name, normmax=True, opts=opts
  )
