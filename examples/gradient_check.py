"""Gradient-checking a model that uses softjax, and computing its Hessian.

Run from the repository root after ``pip install ".[examples]"``::

  python examples/gradient_check.py          # full run
  python examples/gradient_check.py --fast   # same checks, fewer of them

Every softjax normaliser is a ``jax.custom_vjp``: it has a hand-written
reverse-mode rule and **no** forward-mode rule. What that means in practice
(checked below with JAX's own tools, in float64):

* Reverse mode works: ``jax.grad``, ``jax.vjp``, ``jax.jacrev``, and
  ``jax.test_util.check_grads(..., modes=["rev"])`` at order 1 and 2
  (reverse-over-reverse). ``chex.assert_trees_all_close`` compares a gradient
  with your own finite differences.
* Forward mode *of the function itself* fails: ``jax.jvp``, ``jax.jacfwd``,
  ``jax.linearize`` and ``check_grads(..., modes=["fwd"])`` raise
  ``TypeError: can't apply forward-mode autodiff (jvp) to a custom_vjp
  function``.
* Forward-over-reverse works: ``jax.hessian`` (which is
  ``jacfwd(jacrev(f))``) and Hessian-vector products
  ``jax.jvp(jax.grad(f), ...)``. The outer forward pass differentiates the
  *backward* rule, which is ordinary JAX code; the threshold solver of the
  sparse maps is a ``jax.custom_jvp`` (implicit differentiation), so the
  iterations of its ``while_loop`` are never differentiated. The result
  equals ``jax.jacrev(jax.grad(f))`` and finite differences of the gradient.

Sparse maps are piecewise smooth: the checks use points away from the kinks
(where an entry enters or leaves the support), as any finite-difference check
of sparsemax or entmax must.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from collections.abc import Sequence
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import chex  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import softjax  # noqa: E402

# Finite differences need float64.
jax.config.update("jax_enable_x64", True)


def make_model(
  normalizer: Callable[..., jax.Array],
) -> Callable[[dict[str, jax.Array], jax.Array], jax.Array]:
  """A one-head attention read-out: ``loss(params, x)``, a scalar."""

  def loss(params, x):
    scores = (x @ params["wq"]) @ (x @ params["wk"]).T
    weights = normalizer(scores)  # rows on the simplex
    out = weights @ (x @ params["wv"])
    return jnp.sum(jnp.tanh(out) * params["target"])

  return loss


def finite_difference_jacobian(f, x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Central differences of ``f`` along every coordinate of ``x``.

  Returns ``[x.size, *f(x).shape]``: for a scalar ``f`` the gradient
  (flattened), for ``f = jax.grad(g)`` the Hessian of ``g``. All the
  perturbed points are evaluated at once, with ``vmap`` under ``jit``.
  """
  steps = eps * jnp.eye(x.size, dtype=x.dtype).reshape((x.size,) + x.shape)
  fv = jax.jit(jax.vmap(f))
  return (fv(x + steps) - fv(x - steps)) / (2 * eps)


def _report(name: str, fn: Callable[[], object]) -> bool:
  try:
    fn()
  except Exception as e:  # noqa: BLE001  (we print what JAX says)
    print(
      f"  {name:<44} fails: {type(e).__name__}: {str(e).splitlines()[0][:70]}"
    )
    return False
  print(f"  {name:<44} OK")
  return True


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--fast",
    action="store_true",
    default=os.environ.get("SOFTJAX_FAST", "") not in ("", "0"),
    help="check entmax15 only, for tests and CI (also SOFTJAX_FAST=1)",
  )
  args = parser.parse_args(argv)

  keys = jax.random.split(jax.random.key(0), 5)
  d = 4
  params = {
    name: 0.7 * jax.random.normal(k, (d, d), jnp.float64)
    for name, k in zip(("wq", "wk", "wv"), keys)
  }
  params["target"] = jax.random.normal(keys[3], (5, d), jnp.float64)
  x = jax.random.normal(keys[4], (5, d), jnp.float64)

  alpha = jnp.array([[1.3]])  # a learnable α, size 1 along the axis
  normalizers = {
    "softmax": softjax.softmax,
    "sparsemax": softjax.sparsemax,
    "entmax15": softjax.entmax15,
    "entmax(alpha=array)": lambda s: softjax.entmax(s, alpha),
  }
  if args.fast:
    normalizers = {"entmax15": normalizers["entmax15"]}

  failures = 0
  for name, normalizer in normalizers.items():
    loss = make_model(normalizer)
    f_x = lambda x_: loss(params, x_)  # a function of the input only
    print(f"{name}:")
    weights = normalizer((x @ params["wq"]) @ (x @ params["wk"]).T)
    print(
      f"  (attention weights: {int(jnp.sum(weights == 0))} exact zeros "
      f"of {weights.size})"
    )
    ok = [
      _report(
        "check_grads(order=1, modes=['rev'])",
        lambda: check_grads(loss, (params, x), order=1, modes=["rev"]),
      ),
      _report(
        "check_grads(order=2, modes=['rev'])",
        lambda: check_grads(f_x, (x,), order=2, modes=["rev"]),
      ),
      _report(
        "chex: jax.grad == finite differences",
        lambda: chex.assert_trees_all_close(
          jax.grad(f_x)(x).ravel(),
          finite_difference_jacobian(f_x, x),
          atol=1e-6,
          rtol=1e-6,
        ),
      ),
    ]
    hessian = jax.hessian(f_x)(x)  # forward-over-reverse
    reverse2 = jax.jacrev(jax.grad(f_x))(x)  # reverse-over-reverse
    fd = finite_difference_jacobian(jax.grad(f_x), x)  # [x.size, *x.shape]
    ok += [
      _report(
        "jax.hessian == jacrev(grad)",
        lambda: chex.assert_trees_all_close(hessian, reverse2, atol=1e-8),
      ),
      _report(
        "jax.hessian == finite differences",
        lambda: chex.assert_trees_all_close(
          hessian.reshape(x.shape + (x.size,)).transpose(2, 0, 1),
          fd,
          atol=1e-5,
          rtol=1e-5,
        ),
      ),
      _report(
        "Hessian-vector product jvp(grad(f))",
        lambda: chex.assert_trees_all_close(
          jax.jvp(jax.grad(f_x), (x,), (jnp.ones_like(x),))[1],
          jnp.einsum("ijkl,kl->ij", hessian, jnp.ones_like(x)),
          atol=1e-8,
        ),
      ),
    ]
    failures += ok.count(False)
    # Forward mode of the function itself is not available: expected errors.
    for what, fn in (
      ("jax.jvp(f)", lambda: jax.jvp(f_x, (x,), (x,))),
      ("jax.jacfwd(f)", lambda: jax.jacfwd(f_x)(x)),
    ):
      if _report(what + " (expected to fail)", fn):
        failures += 1
  if "entmax(alpha=array)" in normalizers:
    print("gradient with respect to α:")
    f_alpha = lambda a: make_model(lambda s: softjax.entmax(s, a))(params, x)
    failures += not _report(
      "check_grads on α (order=2, modes=['rev'])",
      lambda: check_grads(f_alpha, (alpha,), order=2, modes=["rev"]),
    )
  print(f"\n{'all checks passed' if failures == 0 else f'{failures} FAILED'}")
  return 0 if failures == 0 else 1


if __name__ == "__main__":
  sys.exit(main())
