"""Docstring text that several public functions share, written once.

In a docstring, a line ``<indent><name>: {key}`` (an argument, or a Raises
entry) or ``<indent>{key}`` (a whole entry, such as a reference) stands for
the text registered here under ``key``, indented to match: its first line
follows the placeholder's prefix, the rest keep their indentation relative to
it. :func:`shared` fills a function's ``__doc__`` when softjax is imported, so
``help()``, doctests and ``inspect`` see the whole text; the documentation
site fills the source docstrings the same way (docs/_griffe_softjax.py), so
the two cannot differ.
"""

from __future__ import annotations

from collections.abc import Callable
import re
from typing import TypeVar

F = TypeVar("F", bound=Callable)

TEXT = {
  # The normalisers' arguments.
  "x": """\
scores; any real dtype. Integers are promoted to float; ``float16``
  and ``bfloat16`` are computed in float32 and returned in their dtype.""",
  "axis": """\
the axis or axes to normalise over (an int, a tuple of ints, or
  ``None`` for all axes).""",
  "where": """\
optional boolean mask broadcastable to ``x``; ``False`` entries get
  exactly 0 and a zero gradient. Rows with every entry masked give zeros.""",
  "temperature": """\
a positive float, or a positive array broadcastable to ``x``
  (which then receives a gradient); the map is applied to ``x / T``.""",
  "axis_name": """\
inside ``jax.shard_map`` or ``jax.pmap``, the mesh axis name
  (or tuple of names) across which the normalised axis is split. The
  result is then the distribution over the whole axis, computed from
  local reductions and one small collective each (``pmax``/``psum``),
  never gathering the axis. ``None`` (default): the axis is local.""",
  "raises_value": """\
``axis`` out of range, ``temperature`` not positive and finite,
  ``where`` not broadcastable to ``x``.""",
  "raises_type": """\
boolean or complex ``x``, non-boolean ``where``.""",
  # The losses' arguments.
  "logits": """\
scores; any real dtype.""",
  "labels": """\
integer class ids of shape ``logits.shape`` without ``axis``, or
  floating target distributions of the shape of ``logits``.""",
  "loss_axis": """\
the class axis (an int; floating labels also allow a tuple of ints
  or ``None``).""",
  "loss_where": """\
optional boolean mask broadcastable to ``logits``; ``False``
  classes are left out (targets must be 0 there).""",
  "loss_axis_name": """\
inside ``jax.shard_map`` or ``jax.pmap``, the mesh axis name
  (or names) across which the class axis is split: the loss is then that
  of the whole row, from per-row collectives. Class ids stay global (this
  shard holds ids ``[i * n_local, (i + 1) * n_local)`` for shard ``i``).""",
  "loss_raises_value": """\
labels of the wrong shape, ids outside ``[0, C)`` or on a
  masked class, targets that are negative or do not sum to 1; ``axis``
  not an int with integer labels, or out of range.""",
  "loss_raises_type": """\
boolean labels; boolean or complex logits.""",
  # Attention's arguments.
  "query": """\
queries, ``[batch..., q_length, num_heads, qk_depth]``.""",
  "key": """\
keys, ``[batch..., kv_length, num_kv_heads, qk_depth]``.""",
  "bias": """\
optional scores added before normalising, broadcastable to
  ``[batch..., num_heads, q_length, kv_length]``.""",
  "broadcast_dropout": """\
share the dropout mask across batch and head dimensions.""",
  "dropout_rng": """\
PRNG key for dropout; needed when dropout is applied.""",
  "dropout_rate": """\
probability of dropping an attention weight.""",
  "deterministic": """\
if True, no dropout.""",
  "attention_mask": """\
optional boolean mask broadcastable to the scores ``[batch...,
  heads, q_length, kv_length]``, ``True`` meaning attend (a float 0/1 mask,
  as Flax builds them, attends where positive). An additive mask (0 /
  ``-inf``) belongs in ``bias``: passed here, a concrete one raises
  ``TypeError`` and a traced one attends nowhere (zeros), never inverted.""",
  "attention_mask_weights": """\
optional boolean mask broadcastable to the scores, ``True``
  meaning attend (a float 0/1 mask, as Flax builds them, attends where
  positive; an additive 0 / ``-inf`` mask belongs in ``bias``: passed
  here, a concrete one raises ``TypeError`` and a traced one attends
  nowhere). Passed to ``normalizer`` as ``where=``: masked keys get
  exactly 0, and queries with every key masked get all-zero weights.""",
  "attention_mask_blockwise": """\
optional boolean mask broadcastable to the scores, ``True``
  meaning attend, as in ``dot_product_attention`` (float 0/1 masks as
  Flax builds them attend where positive; additive masks belong in
  ``bias``). A key-padding mask ``[batch, 1, 1, kv]`` costs ``O(kv)``.""",
  # The token structure of attention (softjax._attention.tokens).
  "segment_ids": """\
optional ``[batch..., length]`` integer ids of packed documents,
  for queries and keys alike (needs ``q_length == kv_length``): a query
  sees only the keys of its own segment.""",
  "q_segment_ids": """\
optional ``[batch..., q_length]`` segment ids of the queries;
  with ``kv_segment_ids``, in place of ``segment_ids``.""",
  "kv_segment_ids": """\
optional ``[batch..., kv_length]`` segment ids of the keys.""",
  "q_lengths": """\
optional ``[batch...]`` integer numbers of valid queries (padding
  at the end, as ``query_seq_lengths`` of ``jax.nn.dot_product_attention``):
  later queries give a zero output and zero gradients.""",
  "kv_lengths": """\
optional ``[batch...]`` integer numbers of valid keys (as
  ``key_value_seq_lengths``); later keys get zero weight. For decoding,
  the filled length of the key/value cache.""",
  "local_window_size": """\
sliding-window attention: a Python int ``w`` or a pair
  ``(left, right)``; query ``q`` sees key ``k`` only when
  ``q - left <= k <= q + right`` (``w`` means ``(w, w)``, as in
  ``jax.nn.dot_product_attention``). Combines with ``is_causal``.""",
  "logits_soft_cap": """\
a positive Python float ``c``: the scores (bias included) become
  ``c * tanh(scores / c)`` before the normaliser, as in Gemma 2.""",
  "attention_raises_type": """\
an unknown keyword, a ``normalizer`` that is not callable,
  segment ids or lengths that are not integers, a ``local_window_size``
  or ``logits_soft_cap`` that is not a Python number.""",
  "attention_raises_tokens": """\
segment ids or lengths of a shape that does not fit the
  query and key, one of ``q_segment_ids``/``kv_segment_ids`` without the
  other, concrete lengths outside ``[0, length]``, a negative window, a
  soft cap that is not positive.""",
  # softjax.checks.
  "checkify_raises": """\
when called eagerly on a bad concrete value; inside a
  function transformed by ``checkify.checkify`` the failure is returned
  as its error value instead.""",
  # References, one per paper.
  "ref_bridle1990": """\
J. S. Bridle, "Probabilistic interpretation of feedforward classification
network outputs", Neurocomputing, 1990.""",
  "ref_martins2016": """\
A. F. T. Martins, R. F. Astudillo. "From Softmax to Sparsemax: A Sparse
Model of Attention and Multi-Label Classification". ICML 2016.""",
  "ref_peters2019": """\
B. Peters, V. Niculae, A. F. T. Martins. "Sparse Sequence-to-Sequence
Models". ACL 2019.""",
  "ref_correia2019": """\
G. M. Correia, V. Niculae, A. F. T. Martins. "Adaptively Sparse
Transformers". EMNLP 2019.""",
  "ref_blondel2020": """\
M. Blondel, A. F. T. Martins, V. Niculae. "Learning with Fenchel-Young
Losses". JMLR 21(35), 2020.""",
  "ref_vaswani2017": """\
A. Vaswani et al. "Attention Is All You Need". NeurIPS 2017.""",
  # The fused output-layer losses' arguments.
  "hidden": """\
``[..., d]`` features of each token (any leading shape).""",
  "weight": """\
``[d, V]``, the output layer's kernel (a Flax ``Dense`` kernel), or
  ``[V, d]`` with ``transposed_weight=True`` (a tied ``nn.Embed`` table,
  read by rows in place).""",
  "linear_where": """\
optional boolean mask of the tokens, shape ``labels.shape``;
  ``False`` ignores the token: loss 0, zero gradients, left out of the
  ``"mean"``, and (sparse losses) no solver work.""",
  "ignore_index": """\
optional int; tokens whose label equals it (e.g. ``-100``, as
  PyTorch and Liger) are ignored like ``where=False``.""",
  "reduction": """\
``"none"`` (default: the loss per token), ``"sum"``, or
  ``"mean"`` over the tokens not ignored (0 when every token is).""",
  "label_smoothing": """\
ε in ``[0, 1)``: the Fenchel-Young loss against the target
  ``q = (1 - ε) onehot(y) + ε / V`` (streamed: it needs only each token's
  sum of logits), with its gradient ``p - q``. It is the smoothed
  cross-entropy minus the entropy of ``q``, a constant: zero at
  ``p = q``.""",
  "z_loss": """\
λ ≥ 0: adds ``λ · lse²`` per token (PaLM's auxiliary loss that
  keeps the log-normaliser near 0), gradient ``2 λ lse · p``.""",
  "logit_soft_cap": """\
optional c > 0: the logits become ``c · tanh(z / c)`` block by
  block (Gemma 2), before the loss; the backward pass multiplies by
  ``1 - tanh²``.""",
  "transposed_weight": """\
``weight`` is ``[V, d]`` (an embedding table) instead of
  ``[d, V]``; no transpose is materialised.""",
  "return_lse": """\
also return the per-token log-sum-exp of the (capped) logits
  (float32, shape ``labels.shape``, of every token, ignored or not, and
  differentiable): ``(loss, lse)``.""",
  "return_support": """\
also return each token's support size, the number of classes
  with positive probability (int32, shape ``labels.shape``; 0 for ignored
  tokens): ``(loss, support)``.""",
  "linear_labels": """\
integer class ids, shape ``hidden.shape[:-1]``. Soft targets are
  not accepted: they would need the ``[tokens, V]`` matrix.""",
  "linear_bias": """\
``[V]`` or None.""",
  "linear_chunk_size": """\
classes per block; None picks a measured default (4096).
  Temporary memory grows with ``tokens × chunk_size``; V need not be a
  multiple of it.""",
  "linear_axis_name": """\
inside ``jax.shard_map``, the mesh axis name (or names) over
  which the vocabulary is split: each device passes its own columns
  ``weight[:, shard]`` (and ``bias[shard]``) and the whole ``hidden`` and
  ``labels``; class ids stay global. Each device contributes its own
  candidates; no logits cross devices.""",
  "linear_returns": """\
The loss per token, shape ``hidden.shape[:-1]`` (a scalar with
``reduction="mean"`` or ``"sum"``), in the result dtype of ``hidden``,
``weight`` and ``bias`` (half precision is computed in float32);
non-negative; 0 for ignored tokens. A traced class id outside ``[0, V)``
that is not ignored gives NaN (and no gradient) for its token.""",
  "linear_raises_value": """\
``weight`` not 2-D, ``hidden``'s last axis not ``weight``'s
  d (both shapes are named), ``bias`` not ``[V]``, ``labels`` or
  ``where`` of the wrong shape, concrete ids outside ``[0, V)`` that are
  not ignored, ``chunk_size`` < 1, an unknown ``reduction``,
  ``label_smoothing`` outside ``[0, 1)``, a negative ``z_loss`` (or one
  for a sparse loss), a ``logit_soft_cap`` that is not positive.""",
  "linear_raises_type": """\
non-integer ``labels``; boolean or complex ``hidden``,
  ``weight`` or ``bias``; a ``where`` that is not boolean; a traced or
  non-numeric ``label_smoothing``, ``z_loss`` or ``logit_soft_cap``; an
  ``ignore_index`` that is not an int.""",
  # The in-memory losses' keyword options (softjax._losses.fenchel_young).
  "loss_ignore_index": """\
optional int, for integer labels only: examples whose
  label equals it (e.g. ``-100``, as PyTorch) give loss 0 and zero
  gradients and are left out of the ``"mean"``; their label need not be a
  class id.""",
  "loss_reduction": """\
``"none"`` (default: the loss per example), ``"sum"``, or
  ``"mean"`` over the examples kept: not ignored and with a class not
  masked (0, with zero gradients, when there are none).""",
  "loss_label_smoothing": """\
ε in ``[0, 1)``: the loss against the target
  ``q = (1 - ε) y + ε / V``, ``y`` the one-hot of the class id (or the
  soft target) and ``V`` the number of classes not masked (by ``where``
  or a ``-inf`` logit); masked classes get no share of ε. Equal to
  passing ``q`` as a soft target; the gradient is ``p - q``.""",
  "loss_z_loss": """\
λ ≥ 0: adds ``λ · lse²`` per example, ``lse`` the log-sum-exp
  of the (capped) logits over the classes not masked (PaLM's auxiliary
  loss that keeps the log-normaliser near 0); gradient ``2 λ lse · p``.""",
  "loss_logit_soft_cap": """\
optional c > 0: the logits become ``c · tanh(z / c)``
  (Gemma 2) before the loss, and its gradient is multiplied by
  ``1 - tanh²``; masked classes and ``-inf`` logits stay masked.""",
  "loss_options_returns": """\
The loss per example: the shape of ``logits`` without ``axis`` (a scalar
with ``reduction="sum"`` or ``"mean"``), in the floating dtype of
``logits``; non-negative; 0 for ignored examples.""",
  "loss_options_raises_value": """\
labels of the wrong shape, ids outside ``[0, C)`` (other
  than ``ignore_index``) or on a masked class, targets that are negative
  or do not sum to 1; ``axis`` not an int with integer labels, or out of
  range; an unknown ``reduction``, ``label_smoothing`` outside ``[0, 1)``,
  a ``logit_soft_cap`` that is not positive, ``ignore_index`` with
  floating labels.""",
  "loss_options_raises_type": """\
boolean labels; boolean or complex logits; a traced or
  non-numeric ``label_smoothing`` or ``logit_soft_cap``; an
  ``ignore_index`` that is not an int.""",
  "ref_checkify": """\
JAX documentation, "The checkify transformation",
https://docs.jax.dev/en/latest/debugging/checkify_guide.html""",
}


def _entries(**keys: str) -> str:
  """Several ``name: text`` entries as one block (``name=key`` pairs)."""
  return "\n".join(f"{name}: {TEXT[key]}" for name, key in keys.items())


# Whole blocks that several functions share (an Args or Raises section's
# entries, in order): one placeholder line stands for all of them.
TEXT.update(
  normaliser_args=_entries(
    x="x",
    axis="axis",
    where="where",
    temperature="temperature",
    axis_name="axis_name",
  ),
  normaliser_raises=_entries(
    ValueError="raises_value", TypeError="raises_type"
  ),
  loss_args=_entries(
    logits="logits",
    labels="labels",
    axis="loss_axis",
    where="loss_where",
    axis_name="loss_axis_name",
  ),
  loss_returns="""\
The loss per example: the shape of ``logits`` without ``axis``, in the
floating dtype of ``logits``; non-negative.""",
  loss_raises=_entries(
    ValueError="loss_raises_value", TypeError="loss_raises_type"
  ),
  loss_options=_entries(
    ignore_index="loss_ignore_index",
    reduction="loss_reduction",
    label_smoothing="loss_label_smoothing",
    logit_soft_cap="loss_logit_soft_cap",
  ),
  loss_options_raises=_entries(
    ValueError="loss_options_raises_value",
    TypeError="loss_options_raises_type",
  ),
  linear_sparse_args=_entries(
    hidden="hidden",
    weight="weight",
    labels="linear_labels",
    bias="linear_bias",
    chunk_size="linear_chunk_size",
    axis_name="linear_axis_name",
  ),
  linear_options=_entries(
    where="linear_where",
    ignore_index="ignore_index",
    reduction="reduction",
    label_smoothing="label_smoothing",
    logit_soft_cap="logit_soft_cap",
    transposed_weight="transposed_weight",
  ),
  linear_raises=_entries(
    ValueError="linear_raises_value", TypeError="linear_raises_type"
  ),
)

_PLACEHOLDER = re.compile(
  r"^(?P<indent>[ \t]*)(?P<head>\w+: )?\{(?P<key>[a-z][a-z0-9_]*)\}$", re.M
)


def fill(doc: str) -> str:
  """``doc`` with every placeholder line replaced by its registered text."""

  def replace(match: re.Match[str]) -> str:
    indent = match.group("indent")
    first, *rest = TEXT[match.group("key")].split("\n")
    lines = [indent + (match.group("head") or "") + first]
    lines += [indent + line if line else "" for line in rest]
    return "\n".join(lines)

  return _PLACEHOLDER.sub(replace, doc)


def shared(fn: F) -> F:
  """Fills ``fn.__doc__`` (see the module docstring); returns ``fn``."""
  if fn.__doc__:
    fn.__doc__ = fill(fn.__doc__)
  return fn
