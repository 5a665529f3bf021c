"""The Fenchel-Young machinery of the in-memory losses.

A loss sums its terms over the class axis: :func:`_softmax_terms` for
softmax (the exact cross-entropy, from the log-softmax) and
:func:`_entmax_terms` for the other members (α-entmax, α-normmax), from
the normaliser's forward pass. The ``jax.custom_vjp`` :func:`_fy_loss` gives
the gradients (``g (p - y)`` for the logits; soft labels and an array α as
described in :mod:`softjax.losses`, whose conventions hold here);
:func:`run` checks the arguments and builds the member and the targets.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from softjax import _core


def _softmax_terms(x, y, live, rows):
  """``(p, centred, terms)`` for softmax: ``Σ terms = KL(y || p)``.

  Exact ``-log p_k`` for one-hot targets, like cross-entropy.
  """
  zero = jnp.zeros((), x.dtype)
  log_p = _core.Softmax(log=True).forward(x, None, rows)[0]
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
  return family.forward(x, None, rows, None)[0]


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


def run(logits, labels, alpha, axis, where, axis_name, normmax=False):
  """The loss per example; ``normmax``: α-normmax, else α-entmax."""
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
  family = _core.member_for_examples(alpha, loss_shape, axes, x.dtype, normmax)
  if is_index:
    y = jax.nn.one_hot(labels - offset, n_local, dtype=x.dtype, axis=axes[0])
  else:
    y = labels.astype(x.dtype)
  loss = _fy_loss(x, y, family, rows, not is_index)
  if is_index:
    # Traced ids out of range would one-hot to zeros; make them visible.
    loss = jnp.where((labels < 0) | (labels >= n_classes), jnp.nan, loss)
  return loss.astype(prep.out_dtype)
