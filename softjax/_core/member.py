"""The member protocol: one object per call owns a map and its parameter.

A member of the family is a map from scores to a distribution with at most
one parameter (α, ``k``), held by a subclass of :class:`Member`: a Python
float (static) or an array (learnable, a pytree leaf that receives
gradients). Every member computes, from the scores and then from its output
alone,

* ``forward(x, temperature, rows, n_iter) -> (out, Residuals)``: plain JAX
  (plus the solver's ``custom_jvp``), so a caller that differentiates the
  output again (the losses) calls it directly;
* ``backward(rows, residuals, g) -> (dx, dtemperature, dmember)``: the VJP
  from the residuals, which keep only the output (and an array temperature,
  and the per-row shift a temperature varying along the row needs);

which the one in-memory ``custom_vjp`` (``softjax._maps.normalise``) wires
together. The members that the threshold solver drives also provide
``map``, ``linearized``, ``bracket``, ``slopes`` and the rest (see
:mod:`softjax._core.solver`), and the members with a Fenchel-Young loss the
entropy terms. :mod:`softjax._core.alpha` is the one place that turns an α
into a member.
"""

from __future__ import annotations

from typing import Any
from typing import NamedTuple

import jax


class Residuals(NamedTuple):
  """What a member's forward keeps for its backward pass."""

  saved: jax.Array  # the output (log_softmax: its probabilities)
  temperature: jax.Array | None  # an array temperature, else None
  member: Any  # the member (its array parameter, if any, is a leaf)
  shift: jax.Array | None  # per-row shift, for a temperature varying in-row


class Member:
  """A map of the family with one parameter: a Python float or an array.

  A pytree: a float parameter is static (auxiliary data, no leaves), an
  array parameter its one leaf, so a ``custom_vjp`` or ``custom_jvp`` taking
  a member gives an array parameter its cotangent or tangent as a member of
  the same class. Subclasses (registered as pytrees) store the parameter
  under their own name and expose it as :attr:`param`.
  """

  __slots__ = ()

  # The α = 1 member, which the block-wise and fused paths compute with an
  # online log-sum-exp instead of a threshold.
  is_softmax = False

  @property
  def param(self) -> float | jax.Array:
    raise NotImplementedError

  def tree_flatten(self):
    if isinstance(self.param, float):
      return (), self.param
    return (self.param,), None

  @classmethod
  def tree_unflatten(cls, aux, leaves):
    return cls(aux if aux is not None else leaves[0])

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.param!r})"

  @property
  def learnable(self) -> bool:
    """Whether the parameter is an array, which receives a gradient."""
    return not isinstance(self.param, float)

  @property
  def static(self) -> float | None:
    """The parameter if it is a Python float, else None."""
    return None if self.learnable else self.param
