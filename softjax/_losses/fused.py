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
from softjax._losses.vocab import Target
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


class Options(NamedTuple):
  """The keyword options of a fused loss, as the caller gave them."""

  where: Any = None  # [tokens] booleans: False ignores the token
  ignore_index: Any = None  # labels equal to it are ignored
  reduction: Any = "none"  # "none" | "mean" | "sum"
  label_smoothing: Any = 0.0  # ε: target (1 - ε) onehot + ε / V
  z_loss: Any = 0.0  # λ: + λ lse² (softmax only)
  logit_soft_cap: Any = None  # c: logits c tanh(z / c)
  transposed_weight: Any = False  # weight given as [V, d]
  return_aux: str | None = None  # also return "lse" (softmax) or "support"


DEFAULTS = Options()


class Prepared(NamedTuple):
  h: jax.Array  # [T, d], the caller's dtype
  w: jax.Array  # [d, V_local], or [V_local, d] when transposed
  b: jax.Array | None  # [V_local] or None
  labels: jax.Array  # [T] integer class ids (global)
  keep: jax.Array  # [T] booleans: the tokens not ignored
  vocab: Vocab
  target: Target
  batch: tuple[int, ...]  # the shape of the loss
  out_dtype: Any


def _check_weight(weight: jax.Array, hidden: jax.Array, transposed: bool):
  """``weight`` is ``[d, V]`` (or ``[V, d]`` when ``transposed``)."""
  layout = "[V, d] (transposed_weight=True)" if transposed else "[d, V]"
  other = (
    "for a [d, V] Dense kernel pass transposed_weight=False"
    if transposed
    else "for a tied [V, d] embedding table pass it as is with "
    "transposed_weight=True"
  )
  if weight.ndim != 2:
    raise ValueError(
      f"`weight` must be a matrix {layout}, got shape {weight.shape}; {other}."
    )
  d, n = weight.shape[::-1] if transposed else weight.shape
  if hidden.ndim < 1 or hidden.shape[-1] != d:
    raise ValueError(
      f"`hidden` has shape {hidden.shape} and `weight` {weight.shape}: the "
      f"last axis of `hidden` (d) must match `weight`'s d (weight is "
      f"{layout}; {other})."
    )
  if n == 0:
    raise ValueError(
      f"`weight` has no classes (shape {weight.shape}); V must be at least 1."
    )
  return n


def _target(smoothing: float, z_loss: float, is_softmax: bool) -> Target:
  if z_loss and not is_softmax:
    raise ValueError(
      "`z_loss` (λ lse²) applies to the softmax loss only: the sparse "
      "losses have no log-sum-exp. Use linear_softmax_loss, or z_loss=0."
    )
  return Target(smoothing, z_loss)


def _keep(labels: jax.Array, opts: Options, batch: tuple[int, ...]):
  """``[tokens]`` booleans: not masked by ``where`` nor ``ignore_index``."""
  keep = jnp.ones(batch, bool)
  if opts.where is not None:
    where = jnp.asarray(opts.where)
    if where.dtype != jnp.bool_:
      raise TypeError(
        f"`where` must be a boolean mask of the tokens, got dtype "
        f"{where.dtype}; pass e.g. `labels != pad_id`."
      )
    if where.shape != batch:
      raise ValueError(
        f"`where` has shape {where.shape}; it masks tokens, so it needs the "
        f"shape of `labels`, {batch}."
      )
    keep = where
  if opts.ignore_index is not None:  # an int: _core.check_loss_options
    keep = keep & (labels != opts.ignore_index)
  return keep


def prepare(
  hidden: Any,
  weight: Any,
  labels: Any,
  bias: Any,
  chunk_size: Any,
  axis_name: Any,
  opts: Options = DEFAULTS,
  is_softmax: bool = True,
) -> Prepared:
  """Validates the arguments of a fused loss; flattens the tokens."""
  smoothing, z_loss, cap = _core.check_loss_options(
    opts.reduction,
    opts.ignore_index,
    opts.label_smoothing,
    opts.z_loss,
    opts.logit_soft_cap,
  )
  hidden = _core.as_float_array(hidden, "hidden")
  weight = _core.as_float_array(weight, "weight")
  transposed = opts.transposed_weight
  if not isinstance(transposed, bool):
    raise TypeError(
      f"`transposed_weight` must be a bool, got {type(transposed).__name__}."
    )
  n = _check_weight(weight, hidden, transposed)
  if bias is not None:
    bias = _core.as_float_array(bias, "bias")
    if bias.shape != (n,):
      raise ValueError(
        f"`bias` has shape {bias.shape}; it needs one entry per class of "
        f"`weight` {weight.shape}, shape ({n},)."
      )
  batch = hidden.shape[:-1]
  labels = _core.check_token_labels(labels, batch)
  keep = _keep(jnp.asarray(labels), opts, batch)
  axis_name = _core.check_axis_name(axis_name)
  chunk = _check_chunk_size(chunk_size, n)
  vocab = Vocab(n, chunk, axis_name, transposed, cap)
  checked = jnp.where(keep, jnp.asarray(labels), 0)  # ignored: any value
  _core.check_label_values(checked, True, n_classes(vocab), None, (0,))
  dtypes = [hidden.dtype, weight.dtype] + ([] if bias is None else [bias.dtype])
  tokens = math.prod(batch)
  return Prepared(
    hidden.reshape(tokens, hidden.shape[-1]),
    weight,
    bias,
    jnp.asarray(labels).astype(jnp.int32).reshape(tokens),
    keep.reshape(tokens),
    vocab,
    _target(smoothing, z_loss, is_softmax),
    batch,
    jnp.result_type(*dtypes),
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


# Eager calls reuse the compiled losses (``_core.eager_cached``).
_softmax_loss = _core.eager_cached(fused_softmax.loss)
_sparse_loss = _core.eager_cached(fused_sparse.loss)


def _reduce(loss: jax.Array, keep: jax.Array, reduction: Any) -> jax.Array:
  """``"none"``, or the sum, or the mean over the tokens kept (0 if none);
  ``reduction`` was checked by :func:`prepare`."""
  if reduction == "none":
    return loss
  total = jnp.sum(loss)
  if reduction == "sum":
    return total
  count = jnp.sum(keep.astype(loss.dtype))
  return total / jnp.maximum(count, 1.0)


def run(
  hidden: Any,
  weight: Any,
  labels: Any,
  alpha: Any,
  bias: Any,
  chunk_size: Any,
  axis_name: Any,
  candidates: Any = None,
  opts: Options = DEFAULTS,
) -> Any:
  """The loss for α-entmax (α = 1: softmax), shaped like labels (or
  reduced), with the per-token ``lse`` or support size when asked."""
  family = _core.member_for_tokens(alpha, jnp.shape(labels), F32)
  prep = prepare(
    hidden, weight, labels, bias, chunk_size, axis_name, opts, family.is_softmax
  )
  if family.is_softmax:
    loss, aux = _softmax_loss(
      prep.h, prep.w, prep.b, prep.labels, prep.keep, prep.vocab, prep.target
    )
  else:
    k = _check_candidates(candidates, family)
    vocab = prep.vocab
    if chunk_size is None:
      vocab = vocab._replace(chunk=min(DEFAULT_CHUNK_SPARSE, vocab.size))
    loss, aux = _sparse_loss(
      prep.h,
      prep.w,
      prep.b,
      prep.labels,
      prep.keep,
      family,
      vocab,
      k,
      GROUP,
      prep.target,
    )
  loss = loss.reshape(prep.batch).astype(prep.out_dtype)
  loss = _reduce(loss, prep.keep, opts.reduction)
  if opts.return_aux is None:
    return loss
  if opts.return_aux == "support" and family.is_softmax:
    # Softmax gives every class mass (α = 1 through linear_entmax_loss).
    aux = jnp.where(prep.keep, n_classes(prep.vocab), 0).astype(jnp.int32)
  return loss, aux.reshape(prep.batch)
