"""The Fenchel-Young machinery of the in-memory losses.

A loss sums its terms over the class axis: :func:`_softmax_terms` for
softmax (the exact cross-entropy, from the log-softmax) and
:func:`_entmax_terms` for the other members (α-entmax, α-normmax), from
the normaliser's forward pass. The ``jax.custom_vjp`` :func:`_fy_loss` gives
the gradients (``g (p - y)`` for the logits; soft labels and an array α as
described in :mod:`softjax.losses`, whose conventions hold here);
:func:`run` checks the arguments and builds the member and the targets,
and applies the keyword options (:class:`Options`) around that core, in this
one place for every loss: the soft cap on the logits, label smoothing of the
target, the z-loss, ``ignore_index`` and the reduction.
"""

from __future__ import annotations

import functools
from typing import Any
from typing import NamedTuple

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
# Eager calls reuse the compiled loss (``_core.eager_cached``).
_cached_fy_loss = _core.eager_cached(_fy_loss)


class Options(NamedTuple):
  """The keyword options of an in-memory loss, as the caller gave them."""

  ignore_index: Any = None  # integer labels equal to it are ignored
  reduction: Any = "none"  # "none" | "sum" | "mean"
  label_smoothing: Any = 0.0  # ε: target (1 - ε) y + ε / V_live
  z_loss: Any = 0.0  # λ: + λ lse² (softmax only)
  logit_soft_cap: Any = None  # c: logits c tanh(z / c)


DEFAULTS = Options()


def _check_options(opts: Options) -> tuple[float, float, float | None]:
  """``(label_smoothing, z_loss, logit_soft_cap)``, checked."""
  return _core.check_loss_options(
    opts.reduction,
    opts.ignore_index,
    opts.label_smoothing,
    opts.z_loss,
    opts.logit_soft_cap,
  )


def _smooth(y: jax.Array, x: jax.Array, rows, eps: float) -> jax.Array:
  """``(1 - ε) y + ε / V`` on the ``V`` classes of the row not masked."""
  live = x != -jnp.inf
  n_live = rows.sum(live.astype(y.dtype))
  spread = jnp.asarray(eps, y.dtype) / jnp.maximum(n_live, 1)
  return (1 - eps) * y + jnp.where(live, spread, jnp.zeros((), y.dtype))


def _lse(x: jax.Array, rows, row_live: jax.Array) -> jax.Array:
  """``log Σ exp x`` per row over the classes not masked; 0 for dead rows."""
  m = rows.max(jax.lax.stop_gradient(x))
  m = jnp.where(jnp.isfinite(m), m, jnp.zeros((), x.dtype))
  total = rows.sum(jnp.exp(x - m))
  # Dead rows sum to 0: log(1) keeps their (zero) cotangent free of inf.
  total = jnp.where(row_live, total, jnp.ones((), x.dtype))
  lse = jnp.where(row_live, m + jnp.log(total), jnp.zeros((), x.dtype))
  return jnp.squeeze(lse, axis=rows.axes)


def _ignored(labels, is_index, index, live, axes):
  """``(keep, checked)``: the examples not ignored (None: all) and the ids
  to check, where an ignored example takes its row's first unmasked class."""
  if index is None:
    return None, labels
  if not is_index:
    raise ValueError(
      "`ignore_index` applies to integer class ids; with floating (soft) "
      "targets leave it None and mask whole rows with `where`, or weight "
      "the per-example loss."
    )
  if not _core.is_concrete(labels):
    return jnp.asarray(labels) != index, labels
  keep = np.asarray(labels) != index
  fill = 0
  if live is not None and _core.is_concrete(live):
    fill = np.argmax(np.moveaxis(np.asarray(live), axes[0], -1), axis=-1)
  return keep, np.where(keep, np.asarray(labels), fill)


def _reduce(loss, keep, row_live, rows, reduction):
  """The loss per example, its sum, or its mean over the examples kept."""
  if reduction == "none":
    return loss
  total = jnp.sum(loss)
  if reduction == "sum":
    return total
  counted = jnp.squeeze(row_live, axis=rows.axes)
  if keep is not None:
    counted = counted & keep
  return total / jnp.maximum(jnp.sum(counted.astype(loss.dtype)), 1)


def _target(labels, is_index, keep, x, rows, axis_name, smoothing):
  """The target distribution ``y`` (one-hot for class ids), smoothed."""
  axes = rows.axes
  if is_index:
    n_local = 1
    for a in axes:
      n_local *= x.shape[a]
    # Class ids are global; with the class axis split, this shard holds the
    # classes [offset, offset + n_local).
    offset = 0
    if axis_name is not None:
      offset = jax.lax.axis_index(axis_name) * n_local
    ids = labels if keep is None else jnp.where(keep, labels, 0)
    y = jax.nn.one_hot(ids - offset, n_local, dtype=x.dtype, axis=axes[0])
  else:
    y = labels.astype(x.dtype)
  return _smooth(y, x, rows, smoothing) if smoothing else y


def run(
  logits, labels, alpha, axis, where, axis_name, normmax=False, opts=DEFAULTS
):
  """The loss per example, or reduced (``opts``: the keyword options);
  ``normmax``: α-normmax, else α-entmax."""
  smoothing, z_loss, cap = _check_options(opts)
  prep = _core.prepare(logits, axis, where, 1.0, axis_name, name="logits")
  x, axes, rows = prep.x, prep.axes, prep.rows
  if cap is not None:
    x = _core.soft_cap(x, cap)
  labels, is_index = _core.canonical_labels(labels, x.shape, axis, axes)
  n_classes = rows.size(x)
  if where is None:
    live = None
  elif _core.is_concrete(where):  # NumPy keeps it concrete under jit
    live = np.broadcast_to(np.asarray(where), x.shape)
  else:
    live = jnp.broadcast_to(where, x.shape)
  keep, checked = _ignored(labels, is_index, opts.ignore_index, live, axes)
  _core.check_label_values(checked, is_index, n_classes, live, axes)
  loss_shape = tuple(n for i, n in enumerate(x.shape) if i not in axes)
  family = _core.member_for_examples(alpha, loss_shape, axes, x.dtype, normmax)
  y = _target(labels, is_index, keep, x, rows, axis_name, smoothing)
  loss = _cached_fy_loss(x, y, family, rows, not is_index)
  row_live = None
  if z_loss or opts.reduction == "mean" or is_index:
    row_live = rows.any(x != -jnp.inf)
  if z_loss:
    loss = loss + z_loss * jnp.square(_lse(x, rows, row_live))
  if is_index:
    # Traced ids out of range would one-hot to zeros; make them visible,
    # except in rows masked whole, which are left out (loss 0).
    bad = (labels < 0) | (labels >= n_classes)
    bad = bad & jnp.squeeze(row_live, axis=axes)
    loss = jnp.where(bad, jnp.nan, loss)
  if keep is not None:
    loss = jnp.where(keep, loss, jnp.zeros((), loss.dtype))
  loss = _reduce(loss, keep, row_live, rows, opts.reduction)
  return loss.astype(prep.out_dtype)
