"""Cotangents that may be differentiated forward but not in reverse again.

The block-wise attention and the fused losses compute their cotangents with
hand-written passes over blocks (``lax.while_loop``: the blocks to visit are
counted at run time). Forward-mode differentiates a while loop, so
``jax.hessian`` (forward over reverse) and ``jax.jacfwd(jax.grad(f))`` work;
reverse mode cannot transpose one, and a second ``jax.grad`` used to stop
with JAX's bare while-loop error, which names neither the function nor the
way out.

:func:`first_order_only` passes its arrays through unchanged, as an identity
primitive that is linear: its derivative is itself (so forward mode and
``vmap`` pass through), and its transpose, which only a second reverse-mode
pass asks for, raises a ``NotImplementedError`` that says what to use
instead. The backward passes apply it to the cotangents they return; the
transpose of the outermost operation runs first, so the clear error comes
before JAX's.

Forward mode over the backward pass also differentiates the forward pass,
whose block-wise threshold solve has no derivative rule of its own: its
derivative is that of the iterations, exact for the members whose solve is
exact (softmax, sparsemax, 1.5-entmax) and NaN or inexact for a general α.
:func:`forward_mode_exact` lets the operands through for those members and,
for the others, through an identity whose derivative raises instead of
returning a wrong Hessian.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.extend import core as jex_core
from jax.interpreters import ad
from jax.interpreters import batching
from jax.interpreters import mlir

_identity = jex_core.Primitive("softjax_first_order_only")
_no_jvp = jex_core.Primitive("softjax_no_forward_mode")


def first_order_only(tree: Any, what: str) -> Any:
  """The arrays of ``tree`` unchanged; reverse-over-reverse raises.

  ``what`` names the function in the error, e.g. ``"blockwise_attention"``.
  ``None`` leaves stay ``None``.
  """
  return jax.tree.map(lambda x: _identity.bind(x, what=what), tree)


# What computes the same in memory, for the error's advice.
_IN_MEMORY = {
  "blockwise_attention": "softjax.attention.dot_product_attention",
  "linear_softmax_loss": "softjax.losses.softmax_loss of h @ w",
  "the linear sparse losses": "The loss of h @ w in softjax.losses",
}


def _transpose(ct, x, *, what):
  del ct, x
  raise NotImplementedError(
    f"{what}: a second reverse-mode derivative (jax.grad of jax.grad, or "
    "jax.vjp of a gradient) is not supported: its backward pass loops over "
    "blocks with lax.while_loop, which reverse mode cannot transpose. "
    "Forward over reverse works: use jax.hessian(f) or "
    "jax.jacfwd(jax.grad(f)), or jax.jvp of jax.grad(f) for "
    f"Hessian-vector products. {_IN_MEMORY[what]} supports every order."
  )


def forward_mode_exact(tree: Any, member: Any, what: str) -> Any:
  """``tree`` unchanged; forward-mode derivatives raise for a general α.

  For the operands a block-wise forward pass solves its thresholds from.
  Softmax, sparsemax (α = 2) and 1.5-entmax pass as they are.
  """
  if member.static in (0.0, 0.5, 1.0):
    return tree
  return jax.tree.map(lambda x: _no_jvp.bind(x, what=what), tree)


def _jvp_error(primals, tangents, *, what):
  del primals, tangents
  raise NotImplementedError(
    f"{what}: second derivatives (jax.hessian, forward over reverse) with "
    "an α other than 1, 1.5 and 2 (a learned or per-head α included) are "
    "not supported: the block-wise threshold solve has no derivative rule "
    f"of its own. {_IN_MEMORY[what]} supports them; so do α = 1, 1.5, 2."
  )


def _batcher(primitive):
  def batch(args, dims, *, what):
    return primitive.bind(args[0], what=what), dims[0]

  return batch


for _primitive in (_identity, _no_jvp):
  _primitive.def_impl(lambda x, *, what: x)
  # The abstract value passes through whole (with its sharding and, inside
  # shard_map, the mesh axes it varies over).
  _primitive.def_abstract_eval(lambda x, *, what: x)
  batching.primitive_batchers[_primitive] = _batcher(_primitive)
  mlir.register_lowering(
    _primitive, mlir.lower_fun(lambda x, *, what: x, multiple_results=False)
  )
ad.deflinear2(_identity, _transpose)
ad.primitive_jvps[_no_jvp] = _jvp_error
