"""The one ``custom_vjp`` of every map of rows held in memory.

:func:`normalise` runs a member's ``forward`` and, in reverse mode, its
``backward`` from the residuals the forward kept (the output, an array
temperature, the member itself, and a per-row shift only for a temperature
varying along the row). Whatever the member, nothing else is saved between
the two passes. See :mod:`softjax._core.member` for the protocol.
"""

from __future__ import annotations

import functools
from typing import Any

import jax

from softjax import _core


def _forward(x, temperature, member, rows, n_iter):
  return member.forward(x, temperature, rows, n_iter)


def _backward(rows, n_iter, res, g):
  del n_iter
  return res.member.backward(rows, res, g)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _normalise(
  x: jax.Array,
  temperature: jax.Array | None,
  member: _core.Member,
  rows: _core.Rows,
  n_iter: int | None,
) -> jax.Array:
  """The member's map of prepared scores (masked with ``-inf``).

  ``temperature`` is an array (which gets a cotangent) or None (a constant
  one was applied by ``prepare``); an array parameter of ``member`` gets a
  cotangent too.
  """
  return _forward(x, temperature, member, rows, n_iter)[0]


_normalise.defvjp(_forward, _backward)

# The map every caller uses: eager calls reuse the compiled map
# (``_core.eager_cached``); traced ones are the custom_vjp itself.
normalise = _core.eager_cached(_normalise)


def run(
  x: Any,
  alpha: Any,
  axis: Any,
  where: Any,
  temperature: Any,
  n_iter: Any,
  axis_name: Any,
  normmax: bool = False,
) -> jax.Array:
  """``prepare → member → normalise → finish`` for an α-parametrised map."""
  prep = _core.prepare(x, axis, where, temperature, axis_name)
  member = _core.member_for_rows(
    alpha, prep.x.shape, prep.axes, prep.x.dtype, normmax
  )
  n_iter = _core.check_n_iter(n_iter)
  out = normalise(prep.x, prep.temperature, member, prep.rows, n_iter)
  return _core.finish(out, prep)
