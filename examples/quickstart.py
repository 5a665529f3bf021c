"""softjax quickstart: softmax and log_softmax of a few logits, side by side.

Run from the repository root after ``pip install ".[examples]"``::

  python examples/quickstart.py          # full demo
  python examples/quickstart.py --fast   # quick run (used by the tests)

For each example it prints one table: a row per temperature, with the
softmax probabilities, their sum, and the log_softmax values. The overflow
example [1000, 999, 998] shows that huge logits are safe: at temperature 1 it
gives [0.665, 0.245, 0.090], exactly as [2, 1, 0] would.

``--fast`` does nothing different today; it is kept so that callers (the tests,
CI) keep working once the demo grows a training loop that it will shorten.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import jax.numpy as jnp

import softjax

TEMPERATURES = (0.5, 1.0, 2.0)

# (title, logits, where-mask or None)
EXAMPLES = (
    ("small logits", [1.0, 3.0, 2.0], None),
    ("overflow: logits near 1000 (naive exp overflows)", [1000.0, 999.0, 998.0],
     None),
    ("ties: equal logits give the uniform distribution", [0.0, 0.0, 0.0, 0.0],
     None),
    ("masked: where=[True, True, False, True]", [2.0, 1.0, 5.0, 0.0],
     [True, True, False, True]),
)


def _fmt(value: float, width: int) -> str:
  if math.isinf(value):
    text = "-inf" if value < 0 else "inf"
  else:
    text = f"{value:.3f}"
  return text.rjust(width)


def format_table(title: str, logits: Sequence[float],
                 where: Sequence[bool] | None = None,
                 temperatures: Sequence[float] = TEMPERATURES) -> str:
  """Returns a plain-text table of softmax/log_softmax for ``logits``."""
  x = jnp.asarray(logits, dtype=jnp.float32)
  mask = None if where is None else jnp.asarray(where, dtype=bool)
  w = 7  # width of one number column
  n = x.shape[-1]

  def group(values):
    return " ".join(_fmt(float(v), w) for v in values)

  group_width = n * w + (n - 1)
  rows = [("T".rjust(4), "softmax".center(group_width), "sum".rjust(w),
           "log_softmax".center(group_width))]
  for t in temperatures:
    p = softjax.softmax(x, where=mask, temperature=t)
    lp = softjax.log_softmax(x, where=mask, temperature=t)
    rows.append((f"{t:4.1f}", group(p), _fmt(float(jnp.sum(p)), w), group(lp)))
  lines = [" | ".join(row).rstrip() for row in rows]
  rule = "-" * max(len(line) for line in lines)
  logits_text = ", ".join(f"{float(v):g}" for v in logits)
  return "\n".join([title, f"logits = [{logits_text}]", rule, lines[0], rule,
                    *lines[1:], rule])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
      "--fast", action="store_true",
      help="quick run for tests and CI (no effect yet; it will shorten the "
           "training demo)")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  del args  # --fast: nothing to shorten yet.
  print(f"softjax {softjax.__version__}: softmax and log_softmax at "
        f"temperatures {', '.join(str(t) for t in TEMPERATURES)}\n")
  for title, logits, where in EXAMPLES:
    print(format_table(title, logits, where))
    print()
  return 0


if __name__ == "__main__":
  sys.exit(main())
