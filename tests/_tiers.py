"""The unit tier's share of a parameterised test.

``pytest -n 2 tests`` runs every parameter; ``pytest -n 2 -m "not slow"
tests``, the unit tier, leaves out those marked ``slow`` (registered in
pyproject.toml). :func:`slow_except` keeps a few cheap, representative
parameters in the unit tier and marks the rest slow, so that the unit tier
still exercises each test once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest


def slow_except(values: Iterable[Any], *keep: Any) -> list[Any]:
  """``values`` as parameters, each marked slow unless it is in ``keep``.

  For a parametrize of one argument (a tuple value is one argument).

  The test ids are those of the plain values.
  """
  values = list(values)
  missing = [k for k in keep if k not in values]
  assert not missing, f"not among the parameters: {missing}"
  return [
    pytest.param(v, marks=() if v in keep else pytest.mark.slow) for v in values
  ]


# The unit tier's share of parameterised tests in files edited by others
# while the tiers were introduced, set here rather than in the file
# (tests/conftest.py applies it at collection; better moved into those files
# as slow_except): file -> test -> the parameter ids the unit tier keeps;
# every other parameter of that test is marked slow. Each kept set still
# calls the named maps and losses (softmax, an entmax, a learned alpha).
UNIT_IDS = {
  "test_blockwise_attention.py": {
    "test_matches_dense": (
      "softmax-causal_grouped_key_bias",
      "entmax15-mask_bias_grouped",
      "per_head_alpha-causal_grouped_key_bias",
    ),
    "test_sharded_jit_keeps_sharding_and_never_gathers": ("explicit_entmax15",),
    "test_shard_map_batch_and_heads": ("per_head",),
    "test_dropout_is_block_wise_and_regenerated_in_backward": (
      "per_head_alpha",
    ),
    "test_half_precision_computes_in_float32": ("bfloat16",),
  },
  "test_linear_losses.py": {
    "test_matches_materialised": (
      "softmax-bias",
      "sparsemax-no_bias",
      "entmax15-bias",
      "entmax_1.3-no_bias",
    ),
    "test_batch_shapes": (
      "softmax-batch0",
      "sparsemax-batch1",
    ),
    "test_ties_at_threshold": ("sparsemax",),
    "test_memory_fwd_bwd": ("entmax15",),
    "test_shard_map_vocabulary_split": ("softmax",),
    "test_support_wider_than_candidates": ("entmax15",),
    "test_vmap": ("softmax",),
    "test_wide_support": ("sparsemax",),
    "test_half_precision": ("softmax-bfloat16",),
    "test_default_chunk": ("entmax15",),
    "test_tied_embedding": ("softmax",),
  },
}


def mark_unit_ids(items: list[pytest.Item]) -> None:
  """Marks slow the parameters of :data:`UNIT_IDS`' tests it does not keep.

  A test none of whose collected ids is kept (the table went stale) is left
  alone: the unit tier then runs all of it rather than none.
  """
  tests: dict[str, list[pytest.Item]] = {}
  for item in items:
    name = getattr(item, "originalname", None)
    if name and hasattr(item, "callspec"):
      tests.setdefault(f"{item.path.name}::{name}", []).append(item)
  for file, keeps in UNIT_IDS.items():
    for test, keep in keeps.items():
      params = tests.get(f"{file}::{test}", [])
      if any(item.callspec.id in keep for item in params):
        for item in params:
          if item.callspec.id not in keep:
            item.add_marker(pytest.mark.slow)
