"""Gumbel-Softmax (Concrete) samples, relaxed or straight-through hard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from softjax import _checks
from softjax import _dense


@jax.custom_vjp
def _straight_through(soft: jax.Array, hard: jax.Array) -> jax.Array:
  """Returns ``hard`` exactly; the cotangent goes to ``soft`` unchanged."""
  return hard


def _straight_through_fwd(soft, hard):
  del soft
  return hard, None


def _straight_through_bwd(_, g):
  return g, None


_straight_through.defvjp(_straight_through_fwd, _straight_through_bwd)


def _one_hot_argmax(values: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  """One-hot of the (first) arg-max over ``axes``, which may be several."""
  batch = [i for i in range(values.ndim) if i not in axes]
  perm = batch + list(axes)
  moved = jnp.transpose(values, perm)
  flat = moved.reshape(moved.shape[:len(batch)] + (-1,))
  if flat.shape[-1] == 0:
    return jnp.zeros_like(values)
  index = jnp.argmax(flat, axis=-1)
  one_hot = jax.nn.one_hot(index, flat.shape[-1], dtype=values.dtype)
  return jnp.transpose(one_hot.reshape(moved.shape), np.argsort(perm))


def gumbel_softmax(key: Any, logits: Any, temperature: float | jax.Array = 1.0,
                   axis: _checks.Axis = -1, *, hard: bool = False,
                   where: Any = None,
                   normalizer: Callable[..., jax.Array] = _dense.softmax
                   ) -> jax.Array:
  r"""Gumbel-Softmax: a relaxed, differentiable categorical sample.

  With Gumbel noise :math:`G_i = -\log(-\log U_i)`, :math:`U_i \sim U(0, 1)`,
  the relaxed (Concrete) sample is

  .. math::
    y = \mathrm{softmax}\big((\mathrm{logits} + G) / T\big),

  a point in the simplex that tends to a one-hot sample as :math:`T \to 0`
  (the Gumbel-max trick: :math:`\arg\max_i (\mathrm{logits}_i + G_i)` is an
  exact sample of :math:`\mathrm{Categorical}(\mathrm{softmax}(z))`, with
  :math:`z` the logits).
  With ``hard=True`` the forward value is exactly the one-hot vector of
  :math:`\arg\max y`, while the gradient is that of the relaxed sample
  :math:`y` (the straight-through estimator), computed by a
  ``jax.custom_vjp`` that returns the one-hot array unchanged and passes the
  cotangent to :math:`y`.

  ``normalizer`` replaces the softmax: ``normalizer=softjax.sparsemax`` (or
  ``softjax.entmax15``) gives *sparse* relaxed samples, exactly one-hot
  whenever one perturbed score leads the others by more than :math:`T`
  (sparsemax). These maps preserve the order of their inputs, so the hard
  sample is the same Gumbel-max sample from
  :math:`\mathrm{Categorical}(\mathrm{softmax}(\mathrm{logits}))` whatever the
  normaliser and whatever a positive temperature that is constant along
  ``axis``.

  Args:
    key: one PRNG key, from ``jax.random.key`` or the legacy
      ``jax.random.PRNGKey`` (a uint32 array of shape ``(2,)``). To draw many
      samples, ``jax.vmap`` over a batch of keys.
    logits: unnormalised log-probabilities; any real dtype. ``float16`` and
      ``bfloat16`` are sampled and normalised in float32 and returned in their
      own dtype.
    temperature: a positive float, or a positive array broadcastable to
      ``logits`` (which then receives a gradient).
    axis: the axis or axes holding the categories (an int, a tuple of ints,
      or ``None`` for all axes; with several axes the categories are their
      flattened product).
    hard: if True, return the exact one-hot sample with straight-through
      gradients. Must be a Python bool.
    where: optional boolean mask broadcastable to ``logits``; ``False``
      categories are never sampled, get exactly 0 and a zero gradient. A row
      with every category masked gives zeros (also when ``hard=True``).
    normalizer: the map applied to the perturbed scores, called as
      ``normalizer(scores, axis=axis, where=where, temperature=temperature)``;
      default :func:`softjax.softmax`. Any softjax normaliser works.

  Returns:
    An array of the shape and floating dtype of ``logits`` whose entries along
    ``axis`` are non-negative and sum to 1 (exactly one-hot when ``hard``).

  Raises:
    TypeError: ``key`` is not a PRNG key, ``hard`` is not a bool,
      ``normalizer`` is not callable, boolean or complex ``logits``.
    ValueError: ``key`` is a batch of keys, ``axis`` out of range,
      ``temperature`` not positive and finite, ``where`` not broadcastable.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> import softjax
    >>> key = jax.random.key(0)
    >>> logits = jnp.log(jnp.array([0.5, 0.3, 0.2]))
    >>> y = softjax.gumbel_softmax(key, logits, temperature=0.5)
    >>> bool((y > 0).all()), float(y.sum().round(5))
    (True, 1.0)
    >>> h = softjax.gumbel_softmax(key, logits, 0.5, hard=True)
    >>> sorted(np.asarray(h).tolist()), int(h.argmax()) == int(y.argmax())
    ([0.0, 0.0, 1.0], True)
    >>> keys = jax.random.split(key, 10_000)
    >>> hs = jax.vmap(lambda k: softjax.gumbel_softmax(k, logits, hard=True)
    ...               )(keys)
    >>> np.asarray(hs.mean(0)).round(1)    # frequencies -> [0.5, 0.3, 0.2]
    array([0.5, 0.3, 0.2], dtype=float32)
    >>> m = jnp.array([True, False, True])
    >>> float(softjax.gumbel_softmax(key, logits, where=m)[1])
    0.0

  References:
    E. Jang, S. Gu, B. Poole. "Categorical Reparameterization with
    Gumbel-Softmax". ICLR 2017.
    C. J. Maddison, A. Mnih, Y. W. Teh. "The Concrete Distribution: A
    Continuous Relaxation of Discrete Random Variables". ICLR 2017.
    E. J. Gumbel. "Statistical Theory of Extreme Values and Some Practical
    Applications". US Government Printing Office, 1954.
  """
  key = _checks.check_key(key)
  hard = _checks.check_static_bool(hard, "hard")
  normalizer = _checks.check_callable(normalizer, "normalizer")
  logits = _checks.as_float_array(logits, "logits")
  axes = _checks.canonicalize_axis(axis, logits.ndim)
  where = _checks.check_where(where, logits.shape)
  out_dtype = logits.dtype
  cdtype = _checks.compute_dtype(out_dtype)
  noise = jax.random.gumbel(key, logits.shape, cdtype)
  scores = logits.astype(cdtype) + noise
  soft = normalizer(scores, axis=axis, where=where, temperature=temperature)
  if hard:
    if where is None:
      live = jnp.ones(soft.shape, bool)
    else:
      live = jnp.broadcast_to(where, soft.shape)
    # Masked entries are 0 in `soft`; -1 keeps them off the arg-max even in
    # a row where rounding left every live entry at 0.
    ranked = jnp.where(live, jax.lax.stop_gradient(soft), -1.0)
    one_hot = _one_hot_argmax(ranked, axes)
    any_live = jnp.any(live, axis=axes, keepdims=True)
    one_hot = jnp.where(any_live, one_hot, 0.0).astype(soft.dtype)
    soft = _straight_through(soft, one_hot)
  return soft.astype(out_dtype)
