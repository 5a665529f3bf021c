"""Gumbel-Softmax (Concrete) samples, relaxed or straight-through hard."""

from __future__ import annotations

from collections.abc import Callable
import math
from typing import Any

import jax
import jax.numpy as jnp

from softjax import _core
from softjax._maps.dense import softmax


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


def _first_argmax_one_hot(values: jax.Array, rows: _core.Rows) -> jax.Array:
  """One-hot of the first arg-max of each row (over all its shards).

  The row may span several axes (flattened in C order) and, with
  ``rows.axis_name``, several devices: the winner is the entry with the
  smallest global index among those equal to the global maximum, so exactly
  one entry per row is 1 even when shards tie. Rows whose maximum is
  ``-inf`` (nothing to pick) give zeros.
  """
  top = rows.max(values)
  hit = (values == top) & (top > -jnp.inf)
  shape = [values.shape[a] for a in rows.axes]
  n_local = math.prod(shape)
  index = jnp.zeros((1,) * values.ndim, jnp.int32)
  stride = 1
  for a in reversed(rows.axes):
    iota = jax.lax.broadcasted_iota(
      jnp.int32,
      [values.shape[i] if i == a else 1 for i in range(values.ndim)],
      a,
    )
    index = index + iota * stride
    stride *= values.shape[a]
  if rows.axis_name is not None:
    index = index + jax.lax.axis_index(rows.axis_name) * n_local
  never = jnp.iinfo(jnp.int32).max
  candidate = jnp.where(hit, index, never)
  first = jnp.min(candidate, axis=rows.axes, keepdims=True, initial=never)
  if rows.axis_name is not None:
    first = jax.lax.pmin(first, rows.axis_name)
  return (hit & (index == first)).astype(values.dtype)


def _hard_sample(
  soft: jax.Array, scores: jax.Array, noise: jax.Array, rows: _core.Rows
) -> jax.Array:
  """The one-hot arg-max of ``soft``, with the limits of the finite case.

  ``scores`` are the perturbed logits with masked entries at ``-inf``.

  * Ties in ``soft`` go to the larger perturbed score, and ties there (huge
    logits absorb the noise in rounding: ``3e38 + G == 3e38``) to the larger
    noise, so the sample is still the Gumbel-max one.
  * A row holding ``+inf`` logits puts all its mass on them; among them the
    noise alone decides (``inf + G = inf``), so the sample is uniform over
    the ``+inf`` entries, the limit of the finite case.
  * A row with no entry above ``-inf`` (all masked) gives zeros, and a row
    holding NaN gives NaN, as the soft sample does.
  """
  soft = jax.lax.stop_gradient(soft)
  live = scores > -jnp.inf
  has_posinf = rows.any(scores == jnp.inf)
  top = soft == rows.max(soft)
  candidate = live & jnp.where(has_posinf, scores == jnp.inf, top)
  best = rows.max(jnp.where(candidate, scores, -jnp.inf))
  final = candidate & (scores == best)
  one_hot = _first_argmax_one_hot(jnp.where(final, noise, -jnp.inf), rows)
  one_hot = jnp.where(rows.any(final), one_hot, 0.0)
  has_nan = rows.any(jnp.isnan(soft) | jnp.isnan(scores))
  return jnp.where(has_nan, jnp.nan, one_hot).astype(soft.dtype)


def gumbel_softmax(
  key: Any,
  logits: Any,
  temperature: float | jax.Array = 1.0,
  axis: _core.Axis = -1,
  *,
  hard: bool = False,
  where: Any = None,
  normalizer: Callable[..., jax.Array] = softmax,
  axis_name: Any = None,
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
      With ``axis_name`` it is also passed ``axis_name=axis_name``.
    axis_name: inside ``jax.shard_map`` or ``jax.pmap``, the mesh axis name
      (or names) across which the category axis is split. Each shard draws
      its own noise (the key is folded with the shard index), so the sample
      has the same distribution as an unsharded one but not the same bits;
      the soft sample and the hard arg-max are global over the row.

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
  key = _core.check_key(key)
  hard = _core.check_static_bool(hard, "hard")
  normalizer = _core.check_callable(normalizer, "normalizer")
  # The temperature is left to the normaliser, which applies it.
  prep = _core.prepare(logits, axis, where, 1.0, axis_name, name="logits")
  if axis_name is not None:
    # Independent noise on every shard of the row.
    key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
  noise = jax.random.gumbel(key, prep.x.shape, prep.x.dtype)
  # Masked scores stay -inf; `where` is passed on all the same, since a
  # custom normaliser may treat it otherwise than a -inf score.
  scores = prep.x + noise
  extra = {} if axis_name is None else {"axis_name": axis_name}
  soft = normalizer(
    scores, axis=axis, where=where, temperature=temperature, **extra
  )
  if hard:
    soft = _straight_through(soft, _hard_sample(soft, scores, noise, prep.rows))
  return soft.astype(prep.out_dtype)
