"""A Haiku MLP trained with the sparsemax loss: sparse predicted distributions.

Run from the repository root after ``pip install ".[examples]"``::

  python examples/haiku_classifier.py          # full run (seconds on a CPU)
  python examples/haiku_classifier.py --fast   # quick run (tests, CI)

The data are synthetic: Gaussian blobs in 2-D, one per class, some of them
overlapping. The classifier is a ``hk.nets.MLP`` trained with
``softjax.losses.sparsemax_loss`` (the Fenchel-Young loss of sparsemax, which
takes integer class labels) in a jit-compiled optax loop. Its predictions are
``softjax.sparsemax(logits)``: points far from the other classes get a one-hot
distribution, points on a boundary share the mass between the two or three
plausible classes only, and every other class gets exactly 0.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import haiku as hk  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import softjax  # noqa: E402

N_CLASSES = 5
# Class centres in 2-D; classes 3 and 4 overlap on purpose.
CENTRES = np.array(
  [[0.0, 3.0], [3.0, 0.0], [-3.0, 0.0], [0.0, -2.0], [0.8, -2.6]], np.float32
)


def make_data(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
  """``n`` points, labels uniform over the classes, unit-variance blobs."""
  k_label, k_noise = jax.random.split(key)
  labels = jax.random.randint(k_label, (n,), 0, N_CLASSES)
  x = jnp.asarray(CENTRES)[labels] + 0.8 * jax.random.normal(k_noise, (n, 2))
  return x, labels


def forward(x: jax.Array) -> jax.Array:
  return hk.nets.MLP([64, 64, N_CLASSES], activation=jax.nn.gelu)(x)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--fast",
    action="store_true",
    default=os.environ.get("SOFTJAX_FAST", "") not in ("", "0"),
    help="fewer steps, for tests and CI (also SOFTJAX_FAST=1)",
  )
  args = parser.parse_args(argv)
  steps = 200 if args.fast else 2000

  model = hk.without_apply_rng(hk.transform(forward))
  k_init, k_train, k_test = jax.random.split(jax.random.key(0), 3)
  x_train, y_train = make_data(k_train, 4096)
  x_test, y_test = make_data(k_test, 2048)
  params = model.init(k_init, x_train[:1])
  tx = optax.adam(optax.cosine_decay_schedule(1e-2, steps, 0.05))
  opt_state = tx.init(params)

  def loss_fn(params, x, y):
    logits = model.apply(params, x)
    # Integer labels are class ids; the loss is 0 once the class leads by
    # enough for sparsemax to put all the mass on it.
    return jnp.mean(softjax.losses.sparsemax_loss(logits, y))

  @jax.jit
  def train_step(params, opt_state, step):
    idx = jax.random.randint(
      jax.random.fold_in(k_train, step), (256,), 0, x_train.shape[0]
    )
    loss, grads = jax.value_and_grad(loss_fn)(
      params, x_train[idx], y_train[idx]
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def evaluate(params):
    probs = softjax.sparsemax(model.apply(params, x_test))
    accuracy = jnp.mean(jnp.argmax(probs, -1) == y_test)
    support = jnp.sum(probs > 0, -1)
    return loss_fn(params, x_test, y_test), accuracy, support, probs

  loss0, acc0, _, _ = evaluate(params)
  print(
    f"Haiku MLP, sparsemax loss, {N_CLASSES} classes, {steps} steps"
    f"{' (--fast)' if args.fast else ''}"
  )
  print(
    f"step {0:5d}: test loss {float(loss0):.4f}, accuracy {float(acc0):.3f}"
  )
  for step in range(steps):
    params, opt_state, loss = train_step(params, opt_state, step)
    if (step + 1) % (steps // 4) == 0:
      print(f"step {step + 1:5d}: train loss {float(loss):.4f}", flush=True)
  loss, accuracy, support, probs = jax.device_get(evaluate(params))
  print(f"test loss {float(loss):.4f}, test accuracy {float(accuracy):.3f}")
  counts = np.bincount(support, minlength=N_CLASSES + 1)[1:]
  print(
    "support sizes of the predicted distributions (test set): "
    + ", ".join(f"{k}: {c}" for k, c in enumerate(counts, 1) if c)
  )
  print(
    f"exact zeros: {float(np.mean(probs == 0)):.1%} of all predicted "
    "probabilities"
  )

  print("\nsparsemax predictions at a few points (exact zeros print as 0):")
  points = np.array(
    [[0.0, 3.0], [1.5, 1.5], [0.0, 0.0], [0.4, -2.3], [-3.0, 0.2]], np.float32
  )
  p = np.asarray(softjax.sparsemax(model.apply(params, points)))
  print(
    "      x      y  " + "  ".join(f"p[{c}]".rjust(5) for c in range(N_CLASSES))
  )
  for point, row in zip(points, p):
    cells = "  ".join(("0" if v == 0 else f"{v:.2f}").rjust(5) for v in row)
    print(f"{point[0]:7.1f}{point[1]:7.1f}  {cells}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
