"""Seeded test inputs shared by the test files: scores, masks, temperatures.

Every function is deterministic in its arguments (NumPy's ``default_rng``
seeded by ``seed``), so a test that names its seed gets the same numbers on
every run and every machine. Arrays are NumPy, built without touching a JAX
device. The references the results are checked against are in
``tests/_references.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rng(seed: int = 0) -> np.random.Generator:
  """NumPy's generator for ``seed``."""
  return np.random.default_rng(seed)


def scores(
  shape: Sequence[int], scale: float = 1.0, seed: int = 0, dtype=np.float32
) -> np.ndarray:
  """Normal scores with standard deviation ``scale``, in ``dtype``."""
  return (scale * rng(seed).normal(size=shape)).astype(dtype)


def grid(
  rows: int, d: int, spacing: float, shift: float = 1.0, seed: int = 0
) -> np.ndarray:
  """``rows`` float64 rows, each a permutation of ``spacing * arange(d) -
  shift`` (row ``r`` drawn with seed ``seed + r``).

  Entries are ``spacing`` apart, so for suitable spacings every row keeps a
  margin from the kinks of a piecewise-smooth map (the edge of a sparse
  support) far beyond check_grads' finite-difference step; each test file
  picks the spacing that does so for its maps, and asserts the margin.
  """
  base = spacing * np.arange(d) - shift
  return np.stack([rng(seed + r).permutation(base) for r in range(rows)])


def random_mask(shape: Sequence[int], seed: int, keep: float) -> np.ndarray:
  """Boolean mask, each entry True with probability ``keep``."""
  return rng(seed).random(shape) < keep


def row_shape(shape: Sequence[int], axis) -> tuple[int, ...]:
  """Shape of one value per normalised row (size 1 along the axes).

  ``axis`` is an int, a tuple of ints or None (all axes), as the library's
  ``axis`` argument.
  """
  axes = range(len(shape)) if axis is None else np.atleast_1d(axis)
  axes = {int(a) % len(shape) for a in axes}
  return tuple(1 if i in axes else n for i, n in enumerate(shape))


def temperature(
  shape: Sequence[int],
  kind: str,
  axis=-1,
  *,
  seed: int = 2,
  low: float = 0.5,
  high: float = 2.0,
  dtype=np.float64,
):
  """A temperature for scores of ``shape`` normalised over ``axis``.

  ``kind``: "float" (the Python float 0.7), "row" (uniform in ``[low,
  high)``, one per row: :func:`row_shape`) or "full" (one per entry).
  """
  if kind == "float":
    return 0.7
  t_shape = row_shape(shape, axis) if kind == "row" else shape
  return rng(seed).uniform(low, high, t_shape).astype(dtype)
