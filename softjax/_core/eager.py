"""Calls that reuse their traced and compiled code.

Outside ``jit`` JAX runs each primitive as it comes, and a ``while_loop``,
``scan`` or ``custom_vjp`` is compiled for the functions it is given. The
maps, losses and attention build those functions per call (closures over
the call's settings), so an eager call compiled its loops again on every
call: 0.5 s for ``entmax15`` of an ``[8, 32]`` array, 2.3 s for block-wise
entmax15 attention (XLA:CPU), where ``jax.nn.softmax`` takes 0.1 ms. An
eager ``jax.grad`` or ``jax.vmap`` of them did the same (0.2 s for the
gradient of ``entmax15``, 1.5 s for block-wise entmax15 attention, on every
call).

:func:`cached` runs such a computation through one ``jax.jit`` per public
function, whose cache is keyed by everything that is not an array (the
pytree structure, the static settings), so a repeated call with the same
shapes and settings reuses the trace and the compiled program, as
``jax.nn``'s own functions do (they are ``jax.jit``-wrapped too). Under a
transformation the arrays are tracers and the same ``jit`` is traced
through: JAX caches the derivative and batching of a jitted function, so
an eager gradient or ``vmap`` compiles once, and inside the caller's
``jit`` it is a nested call that XLA inlines. It wraps the *compute* of a
public function, after its argument checks, so that concrete values are
still checked (and errors raised) eagerly.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
from typing import Any
from typing import TypeVar

import jax
import numpy as np

F = TypeVar("F", bound=Callable[..., Any])


def _is_array(leaf: Any) -> bool:
  return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


def cached(fn: F) -> F:
  """``fn``, whose calls run one traced and compiled program per setting.

  Arrays (tracers included) are the program's arguments; every other leaf
  (numbers, None, strings, hashable settings) is part of the cache key. An
  unhashable leaf calls ``fn`` directly.
  """

  def call(spec: tuple[Any, ...], arrays: tuple[Any, ...]) -> Any:
    treedef, statics, where = spec
    arrays, statics = iter(arrays), iter(statics)
    leaves = [next(arrays) if dynamic else next(statics) for dynamic in where]
    args, kwargs = jax.tree.unflatten(treedef, leaves)
    return fn(*args, **kwargs)

  # The program's name in jaxprs and residual listings is the function's.
  call.__name__ = call.__qualname__ = fn.__name__
  program = jax.jit(call, static_argnums=(0,))

  @functools.wraps(fn)
  def wrapper(*args: Any, **kwargs: Any) -> Any:
    leaves, treedef = jax.tree.flatten((args, kwargs))
    where = tuple(_is_array(leaf) for leaf in leaves)
    statics = tuple(leaf for leaf, d in zip(leaves, where) if not d)
    arrays = tuple(leaf for leaf, d in zip(leaves, where) if d)
    spec = (treedef, statics, where)
    try:
      hash(spec)
    except TypeError:
      return fn(*args, **kwargs)
    return program(spec, arrays)

  return wrapper
