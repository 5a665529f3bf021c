"""Opt-in runtime checks of traced arguments, for ``jax.experimental.checkify``.

softjax validates every argument it can see at trace time: a Python-float or
concrete-array ``alpha`` or ``temperature``, concrete labels, shapes, dtypes,
axes. A value *computed inside* ``jax.jit`` (a learnable α, a scheduled
temperature, labels from a data pipeline) is a tracer there, and a compiled
program cannot raise. For such values softjax does not raise; it defines
what happens (see ``docs/semantics.md``):

* ``alpha`` NaN gives NaN outputs; ``alpha < 1`` is evaluated as
  ``alpha = 1 + 1e-7`` (softmax to within ``6e-8``); ``alpha = +inf`` gives
  NaN.
* ``temperature`` that is 0, negative, NaN or infinite gives ``x / T``
  anyway: NaN or a reversed order, never an error.
* integer ``labels`` outside ``[0, C)`` give a NaN loss.

The functions here turn those cases into errors for users who opt in. Each
calls :func:`jax.experimental.checkify.check` and returns its argument
unchanged, so it can wrap a value where it is used::

  p = softjax.entmax(x, softjax.checks.check_alpha(alpha))

and the function that calls it is run through ``checkify.checkify``, which
returns an error value to inspect (``err.get()``) or raise (``err.throw()``).
Called on concrete values outside ``jit``, they raise at once. Called inside
``jit`` *without* ``checkify.checkify`` they make tracing fail (that is how
``checkify.check`` works): add them only to code you run checkified.

All the checks run on device, cost one reduction over their argument, and
work under ``jit``, ``vmap`` and ``grad``.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.experimental import checkify
import jax.numpy as jnp

from softjax import _core

__all__ = [
  "check_alpha",
  "check_labels",
  "check_scores",
  "check_temperature",
]


def _first(values: jax.Array, bad: jax.Array) -> jax.Array:
  """The first entry of ``values`` where ``bad`` holds (any entry if none)."""
  flat = jnp.ravel(values)
  return flat[jnp.argmax(jnp.ravel(bad))]


def _as_array(value: Any, name: str) -> jax.Array:
  value = jnp.asarray(value)
  if not (
    jnp.issubdtype(value.dtype, jnp.floating)
    or jnp.issubdtype(value.dtype, jnp.integer)
  ):
    raise TypeError(
      f"`{name}` must be a real number or array, got dtype {value.dtype}."
    )
  return value


@_core.shared_docs
def check_alpha(alpha: Any) -> Any:
  """Checks that every α is finite and >= 1; returns ``alpha`` unchanged.

  Use it on an α that is computed inside ``jit`` (e.g. a learnable α), which
  :func:`softjax.entmax` and :func:`softjax.losses.entmax_loss` cannot check.
  Without the check a NaN α gives NaN outputs, α < 1 is evaluated as
  ``1 + 1e-7`` (softmax) and α = +inf gives NaN.

  Args:
    alpha: a number or an array of α values, concrete or traced.

  Returns:
    ``alpha``, unchanged.

  Raises:
    JaxRuntimeError: {checkify_raises}

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from jax.experimental import checkify
    >>> import softjax
    >>> @jax.jit
    ... def f(x, s):
    ...   alpha = 1.0 + jnp.sqrt(s)        # NaN for s < 0: a traced bad value
    ...   return softjax.entmax(x, softjax.checks.check_alpha(alpha))
    >>> checked = jax.jit(checkify.checkify(f))
    >>> x = jnp.array([2.3, 1.1, -0.4])
    >>> err, p = checked(x, 0.25)
    >>> print(err.get())
    None
    >>> err, p = checked(x, -1.0)
    >>> print(err.get())    # doctest: +ELLIPSIS
    softjax: `alpha` must be finite and >= 1, got nan...
    >>> bool(jnp.isnan(p).all())   # what entmax itself does with it
    True

  References:
    {ref_checkify}
  """
  a = _as_array(alpha, "alpha")
  if a.size == 0:
    return alpha
  bad = ~((a >= 1) & jnp.isfinite(a))
  checkify.check(
    ~jnp.any(bad),
    "softjax: `alpha` must be finite and >= 1, got {} (1 is "
    "softmax, 2 is sparsemax).",
    _first(a, bad),
  )
  return alpha


@_core.shared_docs
def check_temperature(temperature: Any) -> Any:
  """Checks that every temperature is finite and > 0; returns it unchanged.

  Without the check a traced temperature that is 0, negative, NaN or
  infinite is used as it is: the scores are divided by it, giving NaN, zeros
  divided by zero, or a reversed order.

  Args:
    temperature: a number or an array, concrete or traced.

  Returns:
    ``temperature``, unchanged.

  Raises:
    JaxRuntimeError: {checkify_raises}

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from jax.experimental import checkify
    >>> import softjax
    >>> def f(x, log_t):
    ...   t = softjax.checks.check_temperature(jnp.exp(log_t) - 1.0)
    ...   return softjax.softmax(x, temperature=t)
    >>> err, _ = jax.jit(checkify.checkify(f))(jnp.ones(3), 0.0)   # t = 0
    >>> print(err.get())    # doctest: +ELLIPSIS
    softjax: `temperature` must be finite and > 0, got 0.0...

  References:
    {ref_checkify}
  """
  t = _as_array(temperature, "temperature")
  if t.size == 0:
    return temperature
  bad = ~((t > 0) & jnp.isfinite(t))
  checkify.check(
    ~jnp.any(bad),
    "softjax: `temperature` must be finite and > 0, got {}.",
    _first(t, bad),
  )
  return temperature


@_core.shared_docs
def check_scores(x: Any) -> Any:
  """Checks that the scores hold no NaN; returns ``x`` unchanged.

  A NaN score makes its whole row NaN (and only that row). ``-inf`` (an
  entry that gets no mass) and ``+inf`` (entries that share the mass) are
  defined and pass this check.

  Args:
    x: scores (or logits), concrete or traced.

  Returns:
    ``x``, unchanged.

  Raises:
    JaxRuntimeError: when called eagerly on scores holding NaN; inside a
      function transformed by ``checkify.checkify`` the failure is returned
      as its error value instead.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from jax.experimental import checkify
    >>> import softjax
    >>> def f(x):
    ...   return softjax.sparsemax(softjax.checks.check_scores(jnp.log(x)))
    >>> err, _ = jax.jit(checkify.checkify(f))(jnp.array([1.0, -1.0, 2.0]))
    >>> print(err.get())    # doctest: +ELLIPSIS
    softjax: the scores hold 1 NaN value(s)...

  References:
    {ref_checkify}
  """
  v = _as_array(x, "x")
  if v.size == 0 or not jnp.issubdtype(v.dtype, jnp.floating):
    return x
  count = jnp.sum(jnp.isnan(v))
  checkify.check(
    count == 0,
    "softjax: the scores hold {} NaN value(s); a NaN makes its row NaN.",
    count,
  )
  return x


@_core.shared_docs
def check_labels(
  labels: Any, num_classes: int, *, ignore_index: int | None = None
) -> Any:
  """Checks integer class ids lie in ``[0, num_classes)``; returns them.

  The losses check concrete labels themselves; traced ids out of range give
  a NaN loss instead of an error. This check makes them an error. Ids equal
  to ``ignore_index`` (the padding id the loss is told to ignore) pass.

  Args:
    labels: integer class ids, concrete or traced.
    num_classes: the number of classes ``C`` (the size of the class axis).
    ignore_index: an id that is allowed anywhere (e.g. ``-100``), as the
      losses' ``ignore_index``; None: none.

  Returns:
    ``labels``, unchanged.

  Raises:
    TypeError: ``labels`` is not an integer array.
    JaxRuntimeError: when called eagerly on ids out of range; inside a
      function transformed by ``checkify.checkify`` the failure is returned
      as its error value instead.

  Example:
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from jax.experimental import checkify
    >>> import softjax
    >>> def f(logits, labels):
    ...   labels = softjax.checks.check_labels(labels, logits.shape[-1])
    ...   return softjax.losses.sparsemax_loss(logits, labels)
    >>> err, _ = jax.jit(checkify.checkify(f))(jnp.zeros((2, 3)),
    ...                                         jnp.array([0, 3]))
    >>> print(err.get())    # doctest: +ELLIPSIS
    softjax: `labels` must be class ids in [0, 3), got 3...
    >>> padded = jnp.array([2, -100])   # -100: padding the loss ignores
    >>> softjax.checks.check_labels(padded, 3, ignore_index=-100)
    Array([   2, -100], dtype=int32)

  References:
    {ref_checkify}
  """
  y = jnp.asarray(labels)
  if not jnp.issubdtype(y.dtype, jnp.integer):
    raise TypeError(f"`labels` must be integer class ids, got dtype {y.dtype}.")
  if y.size == 0:
    return labels
  bad = (y < 0) | (y >= num_classes)
  if ignore_index is not None:
    bad = bad & (y != ignore_index)
  checkify.check(
    ~jnp.any(bad),
    f"softjax: `labels` must be class ids in [0, {num_classes}), got {{}}.",
    _first(y, bad),
  )
  return labels
