r"""The α = 1 member: softmax and log-softmax, and the online log-sum-exp.

:class:`Softmax` is the entmax member ε = 0 (so the Fenchel-Young losses
take its entropy terms from :class:`~softjax._core.entmax.Family`) whose
threshold is closed-form, ``t = logsumexp(z)``: its forward and backward
passes are the dense ones below, and the code that holds rows in blocks
(block-wise attention, the fused losses) folds the blocks into one running
log-sum-exp, :class:`LSE` (online softmax).

References:
  J. S. Bridle. "Probabilistic Interpretation of Feedforward Classification
  Network Outputs". Neurocomputing, 1990.
  M. Milakov, N. Gimelshein. "Online normalizer calculation for softmax".
  arXiv:1805.02867, 2018.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any
from typing import NamedTuple

import jax
from jax import lax
import jax.numpy as jnp

from softjax._core.entmax import Family
from softjax._core.member import Residuals
from softjax._core.rows import Rows
from softjax._core.rows import exp_total
from softjax._core.rows import finite_or_zero
from softjax._core.rows import safe_log
from softjax._core.rows import scale
from softjax._core.rows import shift_rows_for_exp
from softjax._core.rows import temperature_cotangent
from softjax._core.rows import varies_along
from softjax._core.sharding import filled


@jax.tree_util.register_pytree_node_class
class Softmax(Family):
  """softmax (``log=False``) or log-softmax: the member α = 1 (ε = 0).

  A pytree without leaves (``log`` is static).
  """

  __slots__ = ("log",)

  def __init__(self, log: bool = False):
    super().__init__(0.0)
    self.log = log

  def tree_flatten(self):
    return (), self.log

  @classmethod
  def tree_unflatten(cls, aux, leaves):
    return cls(aux)

  def __repr__(self) -> str:
    return f"Softmax(log={self.log})"

  is_softmax = True

  def map(self, z: jax.Array, t: jax.Array) -> jax.Array:
    """``exp(z - t)``, the family's map at ε = 0 (``t = logsumexp(z)``)."""
    return jnp.exp(z - t)

  map_differentiable = map

  def slopes(self, p: jax.Array) -> jax.Array:
    """``s = ∂p/∂z`` up to the row coupling: ``p^(1-ε)``, here ``p``."""
    return p

  def forward(
    self,
    x: jax.Array,
    temperature: jax.Array | None,
    rows: Rows,
    n_iter: int | None = None,
  ) -> tuple[jax.Array, Residuals]:
    """``(out, residuals)`` of prepared scores (masked with ``-inf``).

    Plain JAX, so callers that need the output differentiable to second
    order (the losses) call this directly. The one output-sized residual is
    the probabilities ``p``, for log_softmax too, whose backward ``g - p
    Σg`` then needs no ``exp`` (a second transcendental per entry is what
    kept it at 2x ``jax.nn.log_softmax``). Only with an array temperature,
    whose cotangent needs every live entry's log-probability (``p`` loses it
    where it underflows), does log_softmax keep its output instead.
    """
    del n_iter  # closed form
    u = scale(x, temperature)
    shifted, m, scale_ = shift_rows_for_exp(u, rows)
    unnormalized = jnp.exp(shifted)
    total = exp_total(rows.sum(unnormalized))
    if self.log:
      # log_softmax outputs the shifted scores, so it needs the exact -inf
      # of the finite entries of rows holding +inf (see
      # shift_rows_for_exp).
      out = shifted * (1.0 / scale_) - jnp.log(total)
      saved = out if temperature is not None else unnormalized / total
    else:
      out = saved = unnormalized / total
    shift = None
    if varies_along(temperature, x.ndim, rows.axes):
      shift = finite_or_zero(m + jnp.log(total))
    return out, Residuals(saved, temperature, self, shift)

  def backward(
    self, rows: Rows, res: Residuals, g: jax.Array
  ) -> tuple[Any, ...]:
    """``(dx, dtemperature, None)``: ``p (g - <g, p>)``, or ``g - p Σg``."""
    saved, temperature, _, shift = res
    if not self.log:
      p = saved
      du = p * (g - rows.sum(g * p))
      centred = None if temperature is None else _log_or_zero(p)
    elif temperature is None:
      # `saved` is p. A -inf output has p = 0 and takes no part; its own
      # cotangent is 0 for any finite function of the outputs (log_softmax
      # drops it explicitly for entries masked with `where`).
      du = g - saved * rows.sum(g)
    else:
      # `saved` is the output; -inf outputs are constants whose cotangent
      # is dropped.
      live = saved > -jnp.inf
      g = jnp.where(live, g, jnp.zeros((), g.dtype))
      du = g - jnp.exp(saved) * rows.sum(g)
      centred = jnp.where(live, saved, jnp.zeros((), saved.dtype))
    if temperature is None:
      return du, None, None
    dt = temperature_cotangent(du, centred, temperature, shift)
    return du / temperature, dt, None


def _log_or_zero(p: jax.Array) -> jax.Array:
  """``log p`` where ``p > 0``, else 0 (log p up to a per-row constant)."""
  live, log_p = safe_log(p)
  return jnp.where(live, log_p, jnp.zeros((), p.dtype))


# --------------------------------------------------------------------------
# Online softmax: rows held in blocks.


class LSE(NamedTuple):
  """Online log-sum-exp: ``Σ exp z = s exp(m)`` over the blocks seen."""

  m: jax.Array  # running maximum, floored at -finfo.max
  s: jax.Array  # running Σ exp(z - m)


def lse_start(shape: tuple[int, ...], dtype: Any, *refs: Any, like=None) -> LSE:
  """The statistic of no block (``refs``, ``like``: see ``filled``)."""
  # The floor keeps m finite when a whole block is -inf (masked): m - m_new
  # is then never -inf - -inf, and no per-row select is needed.
  big = float(jnp.finfo(dtype).max)
  return LSE(
    filled(shape, -big, dtype, *refs, like=like),
    filled(shape, 0.0, dtype, *refs, like=like),
  )


def lse_add(stat: LSE, z: jax.Array) -> tuple[LSE, jax.Array, jax.Array]:
  """Folds a block of scores ``z`` (rows on the leading axes) into ``stat``.

  Returns ``(stat, p, rescale)``: the block's ``exp(z - m)`` at the new
  maximum, and ``exp(m_old - m)``, the factor that brings any sum over the
  earlier blocks (``s`` itself, a weighted output) to the new maximum.
  """
  m = jnp.maximum(stat.m, jnp.max(z, axis=-1))
  rescale = jnp.exp(stat.m - m)
  p = jnp.exp(z - m[..., None])
  return LSE(m, stat.s * rescale + jnp.sum(p, axis=-1)), p, rescale


def lse_finish(stat: LSE, axis_name: Hashable | None = None) -> jax.Array:
  """``log Σ exp z`` per row, combined over the devices holding the row."""
  m, s = stat
  if axis_name is not None:
    m_all = lax.pmax(m, axis_name)
    s = lax.psum(s * jnp.exp(m - m_all), axis_name)
    m = m_all
  return m + jnp.log(s)
