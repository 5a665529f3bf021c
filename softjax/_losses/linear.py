r"""Losses fused with the output layer, at vocabulary scale.

The ``[tokens, V]`` logits are never held: each public function documents
its loss and calls :func:`softjax._losses.fused.run` with its α.
"""

from __future__ import annotations

from typing import Any

import jax

from softjax import _core
from softjax._losses import fused


@_core.shared_docs
def linear_softmax_loss(
  hidden: Any,
  weight: Any,
  labels: Any,
  *,
  bias: Any = None,
  chunk_size: int | None = None,
  axis_name: Any = None,
  where: Any = None,
  ignore_index: int | None = None,
  reduction: str = "none",
  label_smoothing: float = 0.0,
  logit_soft_cap: float | None = None,
  transposed_weight: bool = False,
  z_loss: float = 0.0,
  return_lse: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
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
    {linear_options}
    z_loss: {z_loss}
    return_lse: {return_lse}

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
  opts = fused.Options(
    where,
    ignore_index,
    reduction,
    label_smoothing,
    z_loss,
    logit_soft_cap,
    transposed_weight,
    "lse" if return_lse else None,
  )
  return fused.run(
    hidden, weight, labels, 1.0, bias, chunk_size, axis_name, None, opts
  )


@_core.shared_docs
def linear_sparsemax_loss(
  hidden: Any,
  weight: Any,
  labels: Any,
  *,
  bias: Any = None,
  chunk_size: int | None = None,
  axis_name: Any = None,
  where: Any = None,
  ignore_index: int | None = None,
  reduction: str = "none",
  label_smoothing: float = 0.0,
  logit_soft_cap: float | None = None,
  transposed_weight: bool = False,
  return_support: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
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
    {linear_options}
    return_support: {return_support}

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
  opts = fused.Options(
    where,
    ignore_index,
    reduction,
    label_smoothing,
    0.0,
    logit_soft_cap,
    transposed_weight,
    "support" if return_support else None,
  )
  return fused.run(
    hidden, weight, labels, 2.0, bias, chunk_size, axis_name, None, opts
  )


@_core.shared_docs
def linear_entmax15_loss(
  hidden: Any,
  weight: Any,
  labels: Any,
  *,
  bias: Any = None,
  chunk_size: int | None = None,
  axis_name: Any = None,
  where: Any = None,
  ignore_index: int | None = None,
  reduction: str = "none",
  label_smoothing: float = 0.0,
  logit_soft_cap: float | None = None,
  transposed_weight: bool = False,
  return_support: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
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
    {linear_options}
    return_support: {return_support}

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
  opts = fused.Options(
    where,
    ignore_index,
    reduction,
    label_smoothing,
    0.0,
    logit_soft_cap,
    transposed_weight,
    "support" if return_support else None,
  )
  return fused.run(
    hidden, weight, labels, 1.5, bias, chunk_size, axis_name, None, opts
  )


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
  where: Any = None,
  ignore_index: int | None = None,
  reduction: str = "none",
  label_smoothing: float = 0.0,
  logit_soft_cap: float | None = None,
  transposed_weight: bool = False,
  return_support: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
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
    {linear_options}
    return_support: {return_support}

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
  opts = fused.Options(
    where,
    ignore_index,
    reduction,
    label_smoothing,
    0.0,
    logit_soft_cap,
    transposed_weight,
    "support" if return_support else None,
  )
  return fused.run(
    hidden, weight, labels, alpha, bias, chunk_size, axis_name, None, opts
  )
