r"""The entry point of the losses fused with the output layer.

:func:`run` validates the arguments (:func:`prepare`), picks the defaults
(the block size, the candidates per token, the group of the wide-support
fallback) and hands α = 1 to :mod:`fused_softmax` (online log-sum-exp),
α > 1 to :mod:`fused_sparse` (candidates and a sparse backward pass); both
walk the vocabulary with :mod:`vocab`. The ``[tokens, V]`` logits never
exist.
"""

from __future__ import annotations

import math
import numbers
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp

from softjax import _core
from softjax._losses import fused_softmax
from softjax._losses import fused_sparse
from softjax._losses.vocab import F32
from softjax._losses.vocab import Vocab
from softjax._losses.vocab import n_classes

# --------------------------------------------------------------------------
# Defaults.
# --------------------------------------------------------------------------

# Classes per block of the softmax loss when the caller passes
# chunk_size=None: see docs/benchmarks/linear_loss.md (at 4096 tokens,
# d = 512 on XLA:CPU). Softmax's time hardly depends on it (1024 to 4096
# within noise), so the smaller memory wins; the sparse losses are faster
# with fewer, larger blocks (fewer top-k merges), see DEFAULT_CHUNK_SPARSE.
DEFAULT_CHUNK_SOFTMAX = 2048

# Classes per block of the sparse losses (α > 1) when the caller passes
# chunk_size=None. At 4096 tokens, d = 512, V = 32768 (XLA:CPU,
# docs/benchmarks/linear_loss.md) blocks of 4096 took 0.37x (sparsemax) and
# 0.50x (entmax15) of the materialised softmax loss's time, against 0.40x /
# 0.58x for 2048 and 0.47x / 0.70x for 1024, for 6 MiB more temp memory
# than 2048 (74 against 68 MiB); an earlier run ranked them the same way.
DEFAULT_CHUNK_SPARSE = 4096


def default_candidates(family: _core.Member) -> int:
  """Logits kept per token: 32 for α >= 2, else 64.

  A top-k costs more per entry the larger ``k``, and a token whose support
  is wider than ``k`` costs a few passes of matmuls. At 4096 tokens, d =
  512, V = 32768 (random ``W``, XLA:CPU) sparsemax supports average 5
  classes (at most 13 in 512 tokens), entmax15 ones 30 (at most 62): there
  entmax15's fwd+bwd took 4.8 s with 32 candidates (41% of the tokens
  falling back), 2.3 s with 64 and 3.0 s with 128; sparsemax 1.5 s with
  32 (the materialised softmax loss: 3.0 s).
  """
  if family.static is not None and family.static >= 1.0:  # ε = α - 1
    return 32
  return 64


# Tokens per group of the wide-support fallback: see docs/vocabulary.md.
GROUP = 256


# --------------------------------------------------------------------------
# Argument checking and the entry point of the public functions.
# --------------------------------------------------------------------------


def _check_chunk_size(chunk_size: Any, n: int) -> int:
  if chunk_size is None:
    return max(1, min(DEFAULT_CHUNK_SOFTMAX, n))
  if isinstance(chunk_size, bool) or not isinstance(
    chunk_size, numbers.Integral
  ):
    raise TypeError(
      f"`chunk_size` must be a positive int (classes per block) or None, "
      f"got {chunk_size!r}."
    )
  if chunk_size < 1:
    raise ValueError(f"`chunk_size` must be >= 1, got {chunk_size}.")
  return max(1, min(int(chunk_size), n))


class Prepared(NamedTuple):
  h: jax.Array  # [T, d], the caller's dtype
  w: jax.Array  # [d, V_local]
  b: jax.Array | None  # [V_local] or None
  labels: jax.Array  # [T] integer class ids (global)
  vocab: Vocab
  batch: tuple[int, ...]  # the shape of the loss
  out_dtype: Any


def prepare(
  hidden: Any,
  weight: Any,
  labels: Any,
  bias: Any,
  chunk_size: Any,
  axis_name: Any,
) -> Prepared:
  """Validates the arguments of a fused loss; flattens the tokens."""
  hidden = _core.as_float_array(hidden, "hidden")
  weight = _core.as_float_array(weight, "weight")
  if weight.ndim != 2:
    raise ValueError(
      f"`weight` must be a matrix [d, V] (a Dense kernel; for tied "
      f"embeddings [V, d] pass `embedding.T`), got shape {weight.shape}."
    )
  if hidden.ndim < 1 or hidden.shape[-1] != weight.shape[0]:
    raise ValueError(
      f"`hidden` has shape {hidden.shape} and `weight` {weight.shape}: "
      f"the last axis of `hidden` (d) must match the first of `weight` "
      f"(weight is [d, V]; for tied embeddings [V, d] pass "
      f"`embedding.T`)."
    )
  if weight.shape[1] == 0:
    raise ValueError(
      f"`weight` has no classes (shape {weight.shape}); V must be at least 1."
    )
  if bias is not None:
    bias = _core.as_float_array(bias, "bias")
    if bias.shape != (weight.shape[1],):
      raise ValueError(
        f"`bias` has shape {bias.shape}; it needs one entry per class of "
        f"`weight` {weight.shape}, shape ({weight.shape[1]},)."
      )
  batch = hidden.shape[:-1]
  labels = _core.check_token_labels(labels, batch)
  axis_name = _core.check_axis_name(axis_name)
  vocab = Vocab(
    weight.shape[1], _check_chunk_size(chunk_size, weight.shape[1]), axis_name
  )
  _core.check_label_values(labels, True, n_classes(vocab), None, (0,))
  dtypes = [hidden.dtype, weight.dtype] + ([] if bias is None else [bias.dtype])
  out_dtype = jnp.result_type(*dtypes)
  tokens = math.prod(batch)
  return Prepared(
    hidden.reshape(tokens, hidden.shape[-1]),
    weight,
    bias,
    jnp.asarray(labels).astype(jnp.int32).reshape(tokens),
    vocab,
    batch,
    out_dtype,
  )


def _check_candidates(candidates: Any, family: _core.Member) -> int:
  if candidates is None:
    return default_candidates(family)
  if isinstance(candidates, bool) or not isinstance(
    candidates, numbers.Integral
  ):
    raise TypeError(
      "`candidates` must be a positive int (logits kept per token) or None, "
      f"got {candidates!r}."
    )
  if candidates < 1:
    raise ValueError(f"`candidates` must be >= 1, got {candidates}.")
  return int(candidates)


def run(
  hidden: Any,
  weight: Any,
  labels: Any,
  alpha: Any,
  bias: Any,
  chunk_size: Any,
  axis_name: Any,
  candidates: Any = None,
) -> jax.Array:
  """The loss per token for α-entmax (α = 1: softmax), shaped like labels."""
  prep = prepare(hidden, weight, labels, bias, chunk_size, axis_name)
  family = _core.member_for_tokens(alpha, prep.batch, F32)
  k = _check_candidates(candidates, family)
  if family.is_softmax:
    loss = fused_softmax.loss(prep.h, prep.w, prep.b, prep.labels, prep.vocab)
  else:
    vocab = prep.vocab
    if chunk_size is None:
      chunk = min(DEFAULT_CHUNK_SPARSE, vocab.size)
      vocab = vocab._replace(chunk=chunk)
    loss = fused_sparse.loss(
      prep.h, prep.w, prep.b, prep.labels, family, vocab, k, GROUP
    )
  return loss.reshape(prep.batch).astype(prep.out_dtype)
