r"""Fenchel-Young losses: softmax (cross-entropy), sparsemax and entmax losses.

Each loss pairs a normaliser :math:`p(z) = \arg\max_{p \in \Delta}
\langle p, z\rangle - \Omega(p)` with its Fenchel-Young loss

.. math::
  L(z; y) = \Omega^*(z) + \Omega(y) - \langle z, y\rangle
          = \langle p - y, z\rangle - \Omega(p) + \Omega(y),
  \qquad \Omega = -H_\alpha,

where :math:`H_\alpha(p) = \frac{1 - \sum_i p_i^\alpha}{\alpha(\alpha - 1)}`
is the Tsallis entropy (Shannon's :math:`-\sum_i p_i \log p_i` at
:math:`\alpha = 1`). The loss is non-negative, zero exactly when
:math:`p(z) = y`, convex in :math:`z`, and its gradient is
:math:`\nabla_z L = p(z) - y`: no derivative of the normaliser's solver is
needed. :math:`\alpha = 1` is the cross-entropy (softmax), :math:`\alpha = 2`
the sparsemax loss and :math:`\alpha = 1.5` the entmax15 loss.

Conventions shared by every loss here:

* **Labels.** An *integer* ``labels`` array holds class ids, one per example:
  its shape is that of ``logits`` without ``axis``, which must then be a
  single int. A *floating* ``labels`` array holds target distributions (one-hot
  or soft) and has the shape of ``logits``; ``axis`` may then also be a tuple
  or ``None``. Boolean labels raise ``TypeError``. Concrete labels are checked
  (ids in ``[0, C)``; distributions non-negative and summing to 1); traced
  labels cannot be, and an id outside ``[0, C)`` then gives a NaN loss.
* **Masks.** ``where=False`` classes are removed from the normaliser and from
  the loss. Labels must put no mass there: concrete labels that do raise
  ``ValueError``; traced ones give the loss ``+inf`` (the regulariser is
  infinite off the allowed support). A row whose classes are all masked is
  left out: its loss and all its gradients are 0, whatever its labels.
* **Values.** One loss per example (the class axis is reduced, nothing else).
  Rounding can leave a tiny negative number when :math:`p(z) \approx y`; it is
  clipped to 0 (the gradient is :math:`p - y` regardless). Half-precision
  logits are computed in float32 and the loss is returned in their dtype.
* **Gradients.** A ``jax.custom_vjp`` returns :math:`g\,(p - y)` for the
  logits. Integer labels get no cotangent (``float0``). Soft labels get
  :math:`g\,(\nabla\Omega(y) - z + c)` with a per-example constant :math:`c`
  (the loss is only defined for :math:`y` on the simplex, where :math:`c` has
  no effect, e.g. for targets produced by a softmax): here
  :math:`\nabla\Omega(y)_i = (\alpha y_i^{\alpha-1} - 1) / (\alpha(\alpha-1))`,
  :math:`1 + \log y_i` at :math:`\alpha = 1`. At :math:`\alpha = 1` that is
  :math:`-\infty` where :math:`y_i = 0`; we use 0 for the entropy term there, so
  the cotangent stays finite (it is exact wherever the targets are positive).
  Masked classes get zero cotangents.

References:
  M. Blondel, A. F. T. Martins, V. Niculae. "Learning with Fenchel-Young
  Losses". JMLR 21(35), 2020.
  A. F. T. Martins, R. F. Astudillo. "From Softmax to Sparsemax: A Sparse
  Model of Attention and Multi-Label Classification". ICML 2016.
  B. Peters, V. Niculae, A. F. T. Martins. "Sparse Sequence-to-Sequence
  Models". ACL 2019.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from softjax import _core
from softjax._core import Family
from softjax._losses import fused
from softjax._maps import dense
from softjax._maps.entmax import forward as entmax_forward
from softjax._maps.normmax import Normmax
from softjax._maps.normmax import forward as normmax_forward

__all__ = [
  "entmax15_loss",
  "entmax_loss",
  "linear_entmax15_loss",
  "linear_entmax_loss",
  "linear_softmax_loss",
  "linear_sparsemax_loss",
  "normmax_loss",
  "softmax_loss",
  "sparsemax_loss",
]


def _softmax_terms(x, y, live, rows):
  """``(p, centred, terms)`` for softmax: ``Σ terms = KL(y || p)``.

  Exact ``-log p_k`` for one-hot targets, like cross-entropy.
  """
  zero = jnp.zeros((), x.dtype)
  log_p = dense.forward(x, None, rows, True)[0]
  # -inf (masked) entries are replaced by 0 so that no product 0 * inf
  # appears in the derivatives of this forward pass (second order).
  centred = jnp.where(live, log_p, zero)
  has_mass = y > 0
  log_y = jnp.log(jnp.where(has_mass, y, jnp.ones((), y.dtype)))
  terms = jnp.where(has_mass, y * (log_y - centred), zero)
  return jnp.exp(log_p), centred, terms


def _predict(x, family, rows):
  """The normaliser's forward pass for the member ``family``.

  Plain JAX plus the solver's custom JVP, which keeps the loss
  differentiable in forward mode over reverse mode (``jax.hessian`` works).
  """
  if isinstance(family, Normmax):
    return normmax_forward(x, None, family, rows, None)[0]
  return entmax_forward(x, None, family, rows, None)[0]


def _entmax_terms(x, y, live, row_live, family, rows):
  """``(p, centred, terms)``: ``Σ terms = <p - y, z> + H(p) - H(y)``.

  ``H = -Ω`` is the Tsallis entropy of the entmax family, or ``1 -
  ||p||_α`` for normmax; ``family`` computes its terms (over ``rows``,
  which a regulariser that is not a sum over entries needs).
  """
  zero = jnp.zeros((), x.dtype)
  p = _predict(x, family, rows)
  shift = rows.max(jnp.where(live, x, -jnp.inf))
  # Rows holding +inf: the limit of the finite case, where the +inf entries
  # tie at the maximum (centred 0) and the others fall infinitely far below.
  posinf = shift == jnp.inf
  shift = jnp.where(row_live & ~posinf, shift, zero)
  centred = jnp.where(
    posinf, jnp.where(x == jnp.inf, zero, -jnp.inf), x - shift
  )
  centred = jnp.where(live, centred, zero)
  # Where p = y the term is 0 even if x - max overflowed to -inf (scores of
  # opposite sign near the dtype's limits) or the row holds +inf.
  linear = jnp.where(p != y, (p - y) * centred, zero)
  terms = linear + family.entropy_terms(p, rows) - family.entropy_terms(y, rows)
  return p, centred, terms


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _fy_loss(x, y, family, rows, soft):
  return _fy_loss_fwd(x, y, family, rows, soft)[0]


def _fy_loss_fwd(x, y, family, rows, soft):
  """``x``: masked (-inf) scores; ``y``: targets, both in the compute dtype."""
  zero = jnp.zeros((), x.dtype)
  # NaN counts as live, so that a NaN score makes its row's loss NaN (not
  # +inf, as a target on a masked class would).
  live = x != -jnp.inf
  row_live = rows.any(live)
  if family.is_softmax:
    p, centred, terms = _softmax_terms(x, y, live, rows)
  else:
    p, centred, terms = _entmax_terms(x, y, live, row_live, family, rows)
  loss = jnp.maximum(rows.sum(terms), zero)
  off_support = rows.any((y != 0) & ~live)
  loss = jnp.where(off_support, jnp.inf, loss)
  loss = jnp.where(row_live, loss, zero)
  loss = jnp.squeeze(loss, axis=rows.axes)
  return loss, (p, y, centred if soft else None, live, family)


def _fy_loss_bwd(rows, soft, res, g):
  p, y, centred, live, family = res
  zero = jnp.zeros((), p.dtype)
  g = jnp.expand_dims(g, rows.axes)
  g = jnp.where(rows.any(live), g, zero)
  dx = jnp.where(live, g * (p - y), zero)
  dy = None
  if soft:
    grad_y = family.entropy_gradient(y, rows)
    dy = jnp.where(live, g * (grad_y - centred), zero)
  d_family = None
  if family.learnable:
    # Envelope theorem: p maximises <p, z> + H_α(p), so only the explicit
    # dependence of H_α on α remains. This shard's part of the row sum;
    # param_cotangent adds up the shards.
    per_row = rows.local_sum(
      family.entropy_alpha_derivative(p, rows)
      - family.entropy_alpha_derivative(y, rows)
    )
    d_family = jax.tree.map(
      lambda leaf: _core.param_cotangent(g * per_row, leaf), family
    )
  return dx, dy, d_family


_fy_loss.defvjp(_fy_loss_fwd, _fy_loss_bwd)


def _family(alpha, loss_shape, axes, dtype, normmax):
  """The member for a loss's α: a float, or one α per example."""
  alpha = _core.check_alpha_per_example(alpha, loss_shape, normmax)
  if not isinstance(alpha, float):
    alpha = jnp.expand_dims(jnp.broadcast_to(alpha, loss_shape), axes)
  if normmax:
    return Normmax.of_alpha(alpha, dtype)
  return Family.of_alpha(alpha, dtype)


def _run(logits, labels, alpha, axis, where, axis_name, normmax=False):
  prep = _core.prepare(logits, axis, where, 1.0, axis_name, name="logits")
  x, axes, rows = prep.x, prep.axes, prep.rows
  labels, is_index = _core.canonical_labels(labels, x.shape, axis, axes)
  n_local = 1
  for a in axes:
    n_local *= x.shape[a]
  # Class ids are global; with the class axis split, this shard holds the
  # classes [offset, offset + n_local).
  n_classes = rows.size(x)
  offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * n_local
  if where is None:
    live = None
  elif _core.is_concrete(where):  # NumPy keeps it concrete under jit
    live = np.broadcast_to(np.asarray(where), x.shape)
  else:
    live = jnp.broadcast_to(where, x.shape)
  _core.check_label_values(labels, is_index, n_classes, live, axes)
  loss_shape = tuple(n for i, n in enumerate(x.shape) if i not in axes)
  family = _family(alpha, loss_shape, axes, x.dtype, normmax)
  if is_index:
    y = jax.nn.one_hot(labels - offset, n_local, dtype=x.dtype, axis=axes[0])
  else:
    y = labels.astype(x.dtype)
  loss = _fy_loss(x, y, family, rows, not is_index)
  if is_index:
    # Traced ids out of range would one-hot to zeros; make them visible.
    loss = jnp.where((labels < 0) | (labels >= n_classes), jnp.nan, loss)
  return loss.astype(prep.out_dtype)


@_core.shared_docs
def softmax_loss(
  logits: Any,
  labels: Any,
  axis: _core.Axis = -1,
  *,
  where: Any = None,
  axis_name: Any = None,
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

  Returns:
    {loss_returns}

  Raises:
    {loss_raises}

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

  References:
    {ref_blondel2020}
  """
  return _run(logits, labels, 1.0, axis, where, axis_name)


@_core.shared_docs
def sparsemax_loss(
  logits: Any,
  labels: Any,
  axis: _core.Axis = -1,
  *,
  where: Any = None,
  axis_name: Any = None,
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

  Returns:
    {loss_returns}

  Raises:
    {loss_raises}

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
  return _run(logits, labels, 2.0, axis, where, axis_name)


@_core.shared_docs
def entmax15_loss(
  logits: Any,
  labels: Any,
  axis: _core.Axis = -1,
  *,
  where: Any = None,
  axis_name: Any = None,
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

  Returns:
    {loss_returns}

  Raises:
    {loss_raises}

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
  return _run(logits, labels, 1.5, axis, where, axis_name)


@_core.shared_docs
def entmax_loss(
  logits: Any,
  labels: Any,
  alpha: float | jax.Array = 1.5,
  axis: _core.Axis = -1,
  *,
  where: Any = None,
  axis_name: Any = None,
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

  Returns:
    {loss_returns}

  Raises:
    ValueError: labels of the wrong shape, ids outside ``[0, C)`` or on a
      masked class, targets that are negative or do not sum to 1; ``axis``
      not an int with integer labels, or out of range; ``alpha`` < 1, not
      finite, or of a shape not broadcastable to the loss.
    TypeError: boolean labels or ``alpha``; boolean or complex logits.

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
  return _run(logits, labels, alpha, axis, where, axis_name)


@_core.shared_docs
def normmax_loss(
  logits: Any,
  labels: Any,
  alpha: float | jax.Array = 2.0,
  axis: _core.Axis = -1,
  *,
  where: Any = None,
  axis_name: Any = None,
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

  Returns:
    The loss per example: the shape of ``logits`` without ``axis``, in the
    floating dtype of ``logits``; non-negative.

  Raises:
    ValueError: labels of the wrong shape, ids outside ``[0, C)`` or on a
      masked class, targets that are negative or do not sum to 1; ``axis``
      not an int with integer labels, or out of range; ``alpha`` <= 1, not
      finite, or of a shape not broadcastable to the loss.
    TypeError: boolean labels or ``alpha``; boolean or complex logits.

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
  return _run(logits, labels, alpha, axis, where, axis_name, normmax=True)


# --------------------------------------------------------------------------
# Losses fused with the output layer (vocabulary scale): the [tokens, V]
# logits are never held; see softjax/fused.py.
# --------------------------------------------------------------------------


@_core.shared_docs
def linear_softmax_loss(
  hidden: Any,
  weight: Any,
  labels: Any,
  *,
  bias: Any = None,
  chunk_size: int | None = None,
  axis_name: Any = None,
) -> jax.Array:
  r"""Cross-entropy of a linear output layer, without the logit matrix.

  Equal to ``softmax_loss(hidden @ weight + bias, labels)`` (to float32
  rounding), with the same gradients for ``hidden``, ``weight`` and
  ``bias``, but the ``[tokens, V]`` logits are never held: with
  :math:`z = h W + b`,

  .. math::
    L(h; y) = \log \sum_{j=1}^{V} e^{z_j} - z_y,
    \qquad \log \sum_j e^{z_j} = m + \log \sum_{c} e^{m_c - m}
    \sum_{j \in c} e^{z_j - m_c},

  accumulated over blocks :math:`c` of ``chunk_size`` classes with a running
  maximum :math:`m` (online softmax); :math:`z_y` comes from the label's
  column of ``weight``. The backward pass recomputes each block's logits to
  form :math:`G = g\,(p - y)` and accumulates :math:`\partial h = G W^\top`,
  :math:`\partial W = h^\top G`, :math:`\partial b = \sum_t G_t` block by
  block. It keeps only the inputs and the per-token :math:`\log\sum e^{z}`,
  so temporary memory is O(tokens × chunk_size + d × V) instead of several
  ``[tokens, V]`` arrays. Jittable, differentiable (reverse mode) and
  vmappable.

  Args:
    hidden: {hidden}
    weight: {weight}
    labels: {linear_labels}
    bias: {linear_bias}
    chunk_size: classes per block; None picks a measured default (2048).
      Temporary memory grows with ``tokens × chunk_size``; V need not be a
      multiple of it.
    axis_name: inside ``jax.shard_map``, the mesh axis name (or names) over
      which the vocabulary is split: each device passes its own columns
      ``weight[:, shard]`` (and ``bias[shard]``) and the whole ``hidden`` and
      ``labels``; class ids stay global (device ``i`` holds ids
      ``[i * V_local, (i + 1) * V_local)``). The loss is that of the whole
      vocabulary, from one ``pmax`` and two ``psum`` of per-token values; no
      logits cross devices.

  Returns:
    {linear_returns}

  Raises:
    {linear_raises}

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import softjax
    >>> kh, kw = jax.random.split(jax.random.key(0))
    >>> hidden = jax.random.normal(kh, (2, 3, 8))      # [batch, seq, d]
    >>> weight = jax.random.normal(kw, (8, 10))        # [d, V]
    >>> labels = jnp.array([[1, 4, 9], [0, 0, 7]])
    >>> loss = softjax.losses.linear_softmax_loss(hidden, weight, labels,
    ...                                           chunk_size=4)
    >>> loss.shape
    (2, 3)
    >>> full = softjax.losses.softmax_loss(hidden @ weight, labels)
    >>> bool(jnp.allclose(loss, full, rtol=1e-5, atol=1e-5))
    True

  References:
    M. Milakov, N. Gimelshein. "Online normalizer calculation for softmax".
    arXiv:1805.02867, 2018.
    E. Wijmans, B. Huval, A. Hertzberg, V. Koltun, P. Krähenbühl. "Cut Your
    Losses in Large-Vocabulary Language Models". ICLR 2025.
  """
  return fused.run(hidden, weight, labels, 1.0, bias, chunk_size, axis_name)


@_core.shared_docs
def linear_sparsemax_loss(
  hidden: Any,
  weight: Any,
  labels: Any,
  *,
  bias: Any = None,
  chunk_size: int | None = None,
  axis_name: Any = None,
) -> jax.Array:
  r"""Sparsemax loss of a linear output layer, without the logit matrix.

  Equal to ``sparsemax_loss(hidden @ weight + bias, labels)`` (to float32
  rounding), with the same gradients for ``hidden``, ``weight`` and
  ``bias``: with :math:`z = h W + b` and :math:`p = \mathrm{sparsemax}(z)`,

  .. math::
    L(h; y) = \langle p - y, z\rangle + \tfrac12 \|p\|^2 - \tfrac12,
    \qquad \nabla_z L = p - y.

  The threshold of sparsemax depends only on the logits above it, so one
  pass over blocks of ``chunk_size`` classes keeps each token's largest
  logits as candidates; the threshold solved on them is the true one
  whenever the smallest candidate gets no mass (checked per token). The
  loss then needs the logits only on the candidates and at the label, and
  the backward pass touches only the rows of ``weight.T`` in each token's
  support and at its label: :math:`p - y` has at most (support + 1)
  nonzeros per token. Tokens whose support is wider than the 32 candidates
  are solved exactly by further passes over the vocabulary, in groups of
  tokens (slower, never approximate). Temporary memory is O(tokens ×
  chunk_size + d × V).

  Args:
    {linear_sparse_args}

  Returns:
    {linear_returns}

  Raises:
    {linear_raises}

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import softjax
    >>> kh, kw = jax.random.split(jax.random.key(0))
    >>> hidden = jax.random.normal(kh, (2, 3, 8))      # [batch, seq, d]
    >>> weight = jax.random.normal(kw, (8, 10))        # [d, V]
    >>> labels = jnp.array([[1, 4, 9], [0, 0, 7]])
    >>> loss = softjax.losses.linear_sparsemax_loss(hidden, weight, labels,
    ...     chunk_size=4)
    >>> loss.shape
    (2, 3)
    >>> full = softjax.losses.sparsemax_loss(hidden @ weight, labels)
    >>> bool(jnp.allclose(loss, full, rtol=1e-5, atol=1e-5))
    True

  References:
    A. F. T. Martins, R. F. Astudillo. "From Softmax to Sparsemax: A Sparse
    Model of Attention and Multi-Label Classification". ICML 2016.
    M. Blondel, A. F. T. Martins, V. Niculae. "Learning with Fenchel-Young
    Losses". JMLR 21(35), 2020.
  """
  return fused.run(hidden, weight, labels, 2.0, bias, chunk_size, axis_name)


@_core.shared_docs
def linear_entmax15_loss(
  hidden: Any,
  weight: Any,
  labels: Any,
  *,
  bias: Any = None,
  chunk_size: int | None = None,
  axis_name: Any = None,
) -> jax.Array:
  r"""1.5-entmax loss of a linear output layer, without the logit matrix.

  Equal to ``entmax15_loss(hidden @ weight + bias, labels)`` (to float32
  rounding), with the same gradients for ``hidden``, ``weight`` and
  ``bias``: with :math:`z = h W + b` and :math:`p = \mathrm{entmax}_{1.5}(z)`,

  .. math::
    L(h; y) = \langle p - y, z\rangle + H_{1.5}(p) - H_{1.5}(y),
    \qquad H_{1.5}(p) = \tfrac{4}{3}\big(1 - \textstyle\sum_i p_i^{3/2}\big),
    \qquad \nabla_z L = p - y.

  The threshold of entmax depends only on the logits above it, so one pass
  over blocks of ``chunk_size`` classes keeps each token's largest logits as
  candidates; the threshold solved on them is the true one whenever the
  smallest candidate gets no mass (checked per token). The loss then needs
  the logits only on the candidates and at the label, and the backward pass
  touches only the rows of ``weight.T`` in each token's support and at its
  label. Tokens whose support is wider than the 64 candidates are solved
  exactly by further passes over the vocabulary, in groups of tokens
  (slower, never approximate). Temporary memory is O(tokens × chunk_size +
  d × V).

  Args:
    {linear_sparse_args}

  Returns:
    {linear_returns}

  Raises:
    {linear_raises}

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import softjax
    >>> kh, kw = jax.random.split(jax.random.key(0))
    >>> hidden = jax.random.normal(kh, (2, 3, 8))      # [batch, seq, d]
    >>> weight = jax.random.normal(kw, (8, 10))        # [d, V]
    >>> labels = jnp.array([[1, 4, 9], [0, 0, 7]])
    >>> loss = softjax.losses.linear_entmax15_loss(hidden, weight, labels,
    ...     chunk_size=4)
    >>> loss.shape
    (2, 3)
    >>> full = softjax.losses.entmax15_loss(hidden @ weight, labels)
    >>> bool(jnp.allclose(loss, full, rtol=1e-5, atol=1e-5))
    True

  References:
    B. Peters, V. Niculae, A. F. T. Martins. "Sparse Sequence-to-Sequence
    Models". ACL 2019.
    M. Blondel, A. F. T. Martins, V. Niculae. "Learning with Fenchel-Young
    Losses". JMLR 21(35), 2020.
  """
  return fused.run(hidden, weight, labels, 1.5, bias, chunk_size, axis_name)


@_core.shared_docs
def linear_entmax_loss(
  hidden: Any,
  weight: Any,
  labels: Any,
  alpha: float | jax.Array = 1.5,
  *,
  bias: Any = None,
  chunk_size: int | None = None,
  axis_name: Any = None,
) -> jax.Array:
  r"""α-entmax loss of a linear output layer, without the logit matrix.

  Equal to ``entmax_loss(hidden @ weight + bias, labels, alpha)`` (to
  float32 rounding), with the same gradients for ``hidden``, ``weight`` and
  ``bias``: with :math:`z = h W + b` and :math:`p = \alpha\text{-entmax}(z)`,

  .. math::
    L(h; y) = \langle p - y, z\rangle + H_\alpha(p) - H_\alpha(y),
    \qquad H_\alpha(p) = \frac{1 - \sum_i p_i^\alpha}{\alpha(\alpha - 1)},
    \qquad \nabla_z L = p - y.

  α = 1 is :func:`linear_softmax_loss` (a Python float 1.0 runs it), α = 2
  :func:`linear_sparsemax_loss`. For α > 1 the threshold depends only on the
  logits above it, so one pass over blocks of ``chunk_size`` classes keeps
  each token's largest logits as candidates; the threshold solved on them is
  the true one whenever the smallest candidate gets no mass (checked per
  token). The backward pass touches only the rows of ``weight.T`` in each
  token's support and at its label. Tokens whose support is wider than the
  candidates (32 for α >= 2, else 64) are solved exactly by further passes
  over the vocabulary,
  in groups of tokens (slower, never approximate): the closer α is to 1,
  the larger the supports and the less this saves. An array α receives the
  gradient of :func:`entmax_loss` (envelope theorem). Temporary memory is
  O(tokens × chunk_size + d × V).

  Args:
    hidden: {hidden}
    weight: {weight}
    labels: {linear_labels}
    alpha: α >= 1, a Python float or an array with one α per token
      (broadcastable to ``labels.shape``).
    bias: {linear_bias}
    chunk_size: classes per block; None picks a measured default
      (4096; 2048 for a Python float α = 1).
      Temporary memory grows with ``tokens × chunk_size``; V need not be a
      multiple of it.
    axis_name: {linear_axis_name}

  Returns:
    {linear_returns}

  Raises:
    ValueError: ``weight`` not 2-D, ``hidden``'s last axis not ``weight``'s
      first (both shapes are named), ``bias`` not ``[V]``, ``labels`` of the
      wrong shape, concrete ids outside ``[0, V)``, ``chunk_size`` < 1;
      ``alpha`` < 1, not finite, or of a shape not broadcastable to the
      loss.
    TypeError: non-integer ``labels``; boolean or complex ``hidden``,
      ``weight`` or ``bias``; boolean ``alpha``.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import softjax
    >>> kh, kw = jax.random.split(jax.random.key(0))
    >>> hidden = jax.random.normal(kh, (2, 3, 8))      # [batch, seq, d]
    >>> weight = jax.random.normal(kw, (8, 10))        # [d, V]
    >>> labels = jnp.array([[1, 4, 9], [0, 0, 7]])
    >>> loss = softjax.losses.linear_entmax_loss(hidden, weight, labels, 1.3,
    ...     chunk_size=4)
    >>> loss.shape
    (2, 3)
    >>> full = softjax.losses.entmax_loss(hidden @ weight, labels, 1.3)
    >>> bool(jnp.allclose(loss, full, rtol=1e-5, atol=1e-5))
    True

  References:
    B. Peters, V. Niculae, A. F. T. Martins. "Sparse Sequence-to-Sequence
    Models". ACL 2019.
    G. M. Correia, V. Niculae, A. F. T. Martins. "Adaptively Sparse
    Transformers". EMNLP 2019.
    M. Blondel, A. F. T. Martins, V. Niculae. "Learning with Fenchel-Young
    Losses". JMLR 21(35), 2020.
  """
  return fused.run(hidden, weight, labels, alpha, bias, chunk_size, axis_name)
