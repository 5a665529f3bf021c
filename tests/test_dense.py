"""softmax / log_softmax against jax.nn, closed forms and finite differences.

Every reference here is independent of softjax: ``jax.nn`` (with ``x / T``
for temperatures and ``where=`` for masks), hand-computed numbers, or
``jax.test_util.check_grads`` (finite differences).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import re

import _inputs
from _tiers import slow_except
from absl.testing import parameterized
import chex
import jax
import jax.ad_checkpoint
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

import softjax

# name -> (softjax function, jax.nn reference).
FUNCS = {
  "softmax": (softjax.softmax, jax.nn.softmax),
  "log_softmax": (softjax.log_softmax, jax.nn.log_softmax),
}
FUNC_NAMES = tuple(FUNCS)

# (case id, shape, axis): 1-D to 4-D, negative axes, tuples, None.
VALUE_CASES = (
  ("1d", (7,), -1),
  ("1d_axis0", (7,), 0),
  ("1d_none", (7,), None),
  ("2d_last", (3, 5), -1),
  ("2d_first", (3, 5), 0),
  ("2d_tuple", (3, 5), (0, 1)),
  ("3d_mid", (2, 3, 4), 1),
  ("3d_neg_tuple", (2, 3, 4), (-1, -3)),
  ("4d_tuple", (2, 2, 3, 4), (1, 3)),
  ("4d_none", (2, 2, 3, 4), None),
)

RTOL, ATOL = 1e-5, 1e-6
# Spread of the scores, 3 so that rows are far from uniform.
SCALE = 3.0


def _mask(shape, axis, seed=1, kind="random") -> np.ndarray:
  if kind == "broadcast":
    # A key-padding style mask over the last axis only.
    m = np.ones(shape[-1:], bool)
    m[-2:] = False
    return m
  m = _inputs.random_mask(shape, seed, 0.7)
  if axis is not None and len(shape) > 1:
    # Mask one whole row so the all-masked path is exercised too.
    row = tuple(
      0 if n == 1 else slice(None) for n in _inputs.row_shape(shape, axis)
    )
    m[row] = False
  return m


def _assert_close(actual, expected, rtol=RTOL, atol=ATOL):
  # assert_allclose treats matching infinities as equal, as -inf needs.
  np.testing.assert_allclose(
    np.asarray(actual, np.float64),
    np.asarray(expected, np.float64),
    rtol=rtol,
    atol=atol,
  )


# --------------------------------------------------------------------------
# Values, under every chex variant (jit, device placement, pmap).
# --------------------------------------------------------------------------

_VARIANTS = dict(
  with_jit=True,
  without_jit=True,
  with_device=True,
  without_device=True,
  with_pmap=True,
)


class ValuesTest(chex.TestCase):
  @chex.variants(**_VARIANTS)
  @parameterized.named_parameters(
    (f"{case}_{fn}", shape, axis, fn)
    for (case, shape, axis), fn in itertools.product(VALUE_CASES, FUNC_NAMES)
  )
  def test_matches_jax_nn(self, shape, axis, fn):
    ours, ref = FUNCS[fn]
    x = _inputs.scores(shape, SCALE)
    # Only arrays go through the variant (pmap would broadcast an axis too).
    out = self.variant(lambda x: ours(x, axis=axis))(x)
    chex.assert_shape(out, shape)
    chex.assert_type(out, jnp.float32)
    _assert_close(out, ref(x, axis=axis))

  @chex.variants(**_VARIANTS)
  @parameterized.named_parameters(
    (f"{case}_{mask}_{temp}_{fn}", shape, axis, mask, temp, fn)
    for (case, shape, axis), mask, temp, fn in (
      (VALUE_CASES[3], "random", "float", "softmax"),
      (VALUE_CASES[3], "broadcast", "row", "log_softmax"),
      (VALUE_CASES[4], "random", "full", "softmax"),
      (VALUE_CASES[6], "random", "row", "log_softmax"),
      (VALUE_CASES[7], "broadcast", "full", "softmax"),
      (VALUE_CASES[8], "random", "full", "log_softmax"),
      (VALUE_CASES[9], "random", "row", "softmax"),
      (VALUE_CASES[0], "random", "full", "log_softmax"),
    )
  )
  def test_mask_and_temperature_match_jax_nn(self, shape, axis, mask, temp, fn):
    ours, ref = FUNCS[fn]
    x = _inputs.scores(shape, SCALE)
    m = _mask(shape, axis, kind=mask)
    t = _inputs.temperature(shape, temp, axis, dtype=np.float32)
    if temp == "float":
      f = lambda x, m: ours(x, axis=axis, where=m, temperature=t)
      out = self.variant(f)(x, m)
    else:
      f = lambda x, m, t: ours(x, axis=axis, where=m, temperature=t)
      out = self.variant(f)(x, m, t)
    chex.assert_shape(out, shape)
    chex.assert_type(out, jnp.float32)
    _assert_close(out, ref(x / t, axis=axis, where=m))


@pytest.mark.parametrize("fn", FUNC_NAMES)
@pytest.mark.parametrize("kind", ["float", "row", "full"])
def test_temperature_without_mask(fn, kind):
  ours, ref = FUNCS[fn]
  x = _inputs.scores((3, 5), SCALE)
  t = _inputs.temperature((3, 5), kind, -1, dtype=np.float32)
  _assert_close(ours(x, temperature=t), ref(x / t))


def test_python_list_and_scalar_temperature_array():
  _assert_close(
    softjax.softmax([[1.0, 3.0, 2.0]], temperature=jnp.array(2.0)),
    jax.nn.softmax(jnp.array([[0.5, 1.5, 1.0]])),
  )


# --------------------------------------------------------------------------
# Worked examples (closed forms).
# --------------------------------------------------------------------------


def test_worked_example_small():
  _assert_close(
    softjax.softmax(jnp.array([1.0, 3.0, 2.0])),
    [0.090, 0.665, 0.245],
    atol=1e-3,
    rtol=0,
  )


def test_worked_example_overflow_safe():
  # Naive exp(1000) overflows; the row-max shift makes it exact.
  p = softjax.softmax(jnp.array([1000.0, 999.0, 998.0]))
  _assert_close(p, [0.665, 0.245, 0.090], atol=1e-3, rtol=0)
  e = np.exp([0.0, -1.0, -2.0])
  _assert_close(p, e / e.sum())


def test_log_softmax_huge_logits_finite():
  out = softjax.log_softmax(jnp.array([1e30, 0.0]))
  assert np.isfinite(np.asarray(out)).all()
  _assert_close(out, [0.0, -1e30])


def test_cross_entropy_gradient_is_p_minus_y():
  z = jnp.array([2.0, 1.0, 0.5])
  g = jax.grad(lambda z: -softjax.log_softmax(z)[0])(z)
  _assert_close(g, [-0.371, 0.231, 0.140], atol=1e-3, rtol=0)
  e = np.exp([2.0, 1.0, 0.5])
  _assert_close(g, e / e.sum() - np.array([1.0, 0.0, 0.0]))


# --------------------------------------------------------------------------
# vmap and pmap.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fn", slow_except(FUNC_NAMES, "log_softmax"))
def test_vmap_matches_batched_jax_nn(fn):
  ours, ref = FUNCS[fn]
  x = _inputs.scores((4, 3, 5), SCALE)
  m = _mask((4, 3, 5), -1)
  t = _inputs.temperature((4, 3, 5), "row", -1, dtype=np.float32)
  f = lambda x, m, t: ours(x, where=m, temperature=t)
  _assert_close(jax.vmap(f)(x, m, t), ref(x / t, where=m))
  # Mapping over a middle axis: inside, axis=-1 is still the last axis.
  g = jax.vmap(f, in_axes=(1, 1, 1), out_axes=1)
  _assert_close(g(x, m, t), ref(x / t, where=m))


@pytest.mark.parametrize("fn", FUNC_NAMES)
def test_pmap_over_all_devices(fn, devices, n_devices):
  ours, ref = FUNCS[fn]
  shape = (n_devices, 2, 5)
  x = _inputs.scores(shape, SCALE)
  m = _mask(shape, 1)
  t = _inputs.temperature(shape, "full", 1, dtype=np.float32)
  # axis=0 inside the map is axis 1 of the stacked input.
  f = jax.pmap(
    lambda x, m, t: ours(x, axis=0, where=m, temperature=t), devices=devices
  )
  out = f(x, m, t)
  chex.assert_shape(out, shape)
  _assert_close(out, ref(x / t, axis=1, where=m))


def test_pmap_gradient(devices, n_devices):
  x = _inputs.scores((n_devices, 5), SCALE)
  w = _inputs.scores((n_devices, 5), SCALE, seed=3)
  grad = jax.pmap(
    jax.grad(lambda x, w: (softjax.softmax(x) * w).sum()), devices=devices
  )
  p = jax.nn.softmax(x)
  # Closed form: p * (w - <w, p>).
  expected = p * (w - (w * p).sum(-1, keepdims=True))
  _assert_close(grad(x, w), expected, atol=1e-5)


# --------------------------------------------------------------------------
# Gradients vs finite differences, in float64.
# --------------------------------------------------------------------------

_GRAD_SHAPE = (3, 4)


def _grad_cases(order):
  for fn, axis, mask, temp in itertools.product(
    FUNC_NAMES,
    (-1, (0, 1)),
    (None, "random", "all_masked_row"),
    (None, "row", "full"),
  ):
    # Masks with an array temperature at order 2 are the regression test for
    # d(-inf / T)/dT, which once made second derivatives NaN: the unit tier
    # keeps those at order 2, and the last axis at order 1.
    if order == 2:
      unit = mask == "all_masked_row" and temp is not None
    else:
      unit = axis == -1
    yield pytest.param(
      fn,
      axis,
      mask,
      temp,
      id=f"{fn}-{axis}-{mask}-{temp}".replace(" ", ""),
      marks=() if unit else pytest.mark.slow,
    )


def _grad_setup(fn, axis, mask, temp):
  """Returns (function of the differentiated args, args), in float64."""
  ours = FUNCS[fn][0]
  x = _inputs.scores(_GRAD_SHAPE, SCALE, dtype=np.float64) / 3
  w = _inputs.scores(_GRAD_SHAPE, SCALE, seed=5, dtype=np.float64)
  m = None
  if mask is not None:
    m = _inputs.random_mask(_GRAD_SHAPE, 1, 0.6)
    m[:, 0] = True
    if mask == "all_masked_row":
      m[1] = False
  live = np.ones(_GRAD_SHAPE, bool) if m is None else m

  def wrap(out):
    # -inf outputs are constants; finite differences of them would be NaN.
    return jnp.where(live, out, 0.0) * w

  if temp is None:
    return (lambda x: wrap(ours(x, axis=axis, where=m))), (jnp.asarray(x),)
  t = _inputs.temperature(_GRAD_SHAPE, temp, axis)
  f = lambda x, t: wrap(ours(x, axis=axis, where=m, temperature=t))
  return f, (jnp.asarray(x), jnp.asarray(t))


@pytest.mark.parametrize("fn,axis,mask,temp", list(_grad_cases(1)))
def test_grads_first_order(fn, axis, mask, temp):
  with jax.enable_x64(True):
    f, args = _grad_setup(fn, axis, mask, temp)
    check_grads(f, args, order=1, modes=["rev"])


@pytest.mark.parametrize("fn,axis,mask,temp", list(_grad_cases(2)))
def test_grads_second_order(fn, axis, mask, temp):
  with jax.enable_x64(True):
    f, args = _grad_setup(fn, axis, mask, temp)
    check_grads(f, args, order=2, modes=["rev"])


def test_float_temperature_grad_closed_form():
  # d/dx softmax(x / T) . w = p * (w - <w, p>) / T.
  x, w, t = (
    _inputs.scores((3, 5), SCALE),
    _inputs.scores((3, 5), SCALE, seed=3),
    0.5,
  )
  g = jax.grad(lambda x: (softjax.softmax(x, temperature=t) * w).sum())(x)
  p = jax.nn.softmax(x / t)
  _assert_close(g, p * (w - (w * p).sum(-1, keepdims=True)) / t, atol=1e-5)


# --------------------------------------------------------------------------
# Masks.
# --------------------------------------------------------------------------


def _masked_inputs():
  x = _inputs.scores((3, 5), SCALE)
  m = np.array(
    [
      [1, 0, 1, 1, 0],
      [0, 0, 0, 0, 0],  # all masked
      [1, 1, 1, 1, 1],
    ],
    bool,
  )
  w = _inputs.scores((3, 5), SCALE, seed=3)
  return x, m, w


@pytest.mark.parametrize("fn", slow_except(FUNC_NAMES, "softmax"))
def test_second_order_when_the_row_sum_is_exactly_one(fn):
  # In the first row exp of every entry but the maximum underflows, so the
  # row sum of the shifted exponentials is exactly 1, the floor's neighbour.
  x = jnp.array([[0.0, -200.0, -300.0], [0.5, 0.0, -1.0]])
  v = jnp.array([[1.0, -2.0, 0.5], [0.3, 1.0, -0.7]])
  ours, ref = FUNCS[fn]

  def hvp(f):
    loss = lambda x: jnp.sum(jnp.sin(3 * jnp.exp(f(x))))
    return jax.jvp(jax.grad(loss), (x,), (v,))[1]

  np.testing.assert_allclose(hvp(ours), hvp(ref), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t", [1.0, 0.5])
def test_softmax_mask_exact_zeros_and_gradient(t):
  x, m, w = _masked_inputs()
  p = softjax.softmax(x, where=m, temperature=t)
  assert (np.asarray(p)[~m] == 0).all()
  _assert_close(np.asarray(p).sum(-1), [1.0, 0.0, 1.0])
  g = jax.grad(
    lambda x: (softjax.softmax(x, where=m, temperature=t) * w).sum()
  )(x)
  g = np.asarray(g)
  assert np.isfinite(g).all()
  assert (g[~m] == 0).all()
  # Closed form on the live entries, with p from jax.nn.
  p_ref = np.where(m, jax.nn.softmax(x / t, where=m), 0.0)
  expected = p_ref * (w - (w * p_ref).sum(-1, keepdims=True)) / t
  _assert_close(g, expected, atol=1e-5)


def test_log_softmax_mask_exact_neg_inf_and_gradient():
  x, m, w = _masked_inputs()
  out = np.asarray(softjax.log_softmax(x, where=m))
  assert (out[~m] == -np.inf).all()
  assert np.isfinite(out[m]).all()
  # The cotangent of a -inf (constant) output is dropped, even unwrapped.
  g = np.asarray(
    jax.grad(lambda x: (softjax.log_softmax(x, where=m) * w).sum())(x)
  )
  assert np.isfinite(g).all()
  assert (g[~m] == 0).all()
  p = np.where(m, jax.nn.softmax(x, where=m), 0.0)
  w_live = np.where(m, w, 0.0)
  expected = w_live - p * w_live.sum(-1, keepdims=True)
  _assert_close(g, expected, atol=1e-5)


@pytest.mark.parametrize("fn", FUNC_NAMES)
def test_all_masked_row_zero_gradient_with_array_temperature(fn):
  x, m, w = _masked_inputs()
  t = _inputs.temperature((3, 5), "full", -1, dtype=np.float32)
  live = jnp.asarray(m)
  f = lambda x, t: (
    jnp.where(live, FUNCS[fn][0](x, where=m, temperature=t), 0.0) * w
  ).sum()
  gx, gt = map(np.asarray, jax.grad(f, argnums=(0, 1))(x, t))
  assert np.isfinite(gx).all() and np.isfinite(gt).all()
  assert (gx[~m] == 0).all() and (gt[~m] == 0).all()


def test_all_masked_softmax_never_nan():
  p = softjax.softmax(jnp.zeros((2, 4)), where=jnp.zeros((2, 4), bool))
  assert (np.asarray(p) == 0).all()
  out = softjax.log_softmax(jnp.zeros((2, 4)), where=jnp.zeros((2, 4), bool))
  assert (np.asarray(out) == -np.inf).all()


# --------------------------------------------------------------------------
# Dtypes and input types.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fn", FUNC_NAMES)
@pytest.mark.parametrize(
  "dtype", slow_except([jnp.float16, jnp.bfloat16], jnp.bfloat16)
)
def test_half_precision_keeps_dtype(fn, dtype):
  ours, ref = FUNCS[fn]
  x = jnp.asarray(_inputs.scores((3, 6), SCALE)).astype(dtype)
  w = jnp.asarray(_inputs.scores((3, 6), SCALE, seed=3)).astype(dtype)
  out = ours(x)
  chex.assert_type(out, dtype)
  # Reference: jax.nn in float32 on the same (rounded) inputs.
  x32, w32 = x.astype(jnp.float32), w.astype(jnp.float32)
  _assert_close(out.astype(jnp.float32), ref(x32), rtol=2e-2, atol=1e-2)
  g = jax.grad(lambda x: (ours(x) * w).sum().astype(jnp.float32))(x)
  chex.assert_type(g, dtype)
  g_ref = jax.grad(lambda x: (ref(x) * w32).sum())(x32)
  _assert_close(g.astype(jnp.float32), g_ref, rtol=5e-2, atol=3e-2)


@pytest.mark.parametrize("fn", FUNC_NAMES)
def test_int_input_promotes_to_float32(fn):
  ours, ref = FUNCS[fn]
  x = jnp.array([[1, 3, 2], [0, -4, 5]], jnp.int32)
  out = ours(x)
  chex.assert_type(out, jnp.float32)
  _assert_close(out, ref(x.astype(jnp.float32)))


@pytest.mark.parametrize("fn", FUNC_NAMES)
def test_list_input(fn):
  ours, ref = FUNCS[fn]
  out = ours([[1.0, 3.0, 2.0], [0.5, 0.5, -1.0]], axis=1)
  chex.assert_shape(out, (2, 3))
  _assert_close(out, ref(jnp.array([[1.0, 3.0, 2.0], [0.5, 0.5, -1.0]])))


# --------------------------------------------------------------------------
# Argument errors: right type, message names the argument.
# --------------------------------------------------------------------------

_X = np.zeros((2, 3), np.float32)
_ERROR_CASES = [
  ("axis_too_big", _X, dict(axis=2), ValueError, "axis"),
  ("axis_too_negative", _X, dict(axis=-3), ValueError, "axis"),
  ("axis_tuple_out_of_range", _X, dict(axis=(0, 5)), ValueError, "axis"),
  ("axis_scalar_input", np.float32(1.0), {}, ValueError, "axis"),
  ("temperature_zero", _X, dict(temperature=0.0), ValueError, "temperature"),
  (
    "temperature_negative",
    _X,
    dict(temperature=-1.0),
    ValueError,
    "temperature",
  ),
  (
    "temperature_nan",
    _X,
    dict(temperature=float("nan")),
    ValueError,
    "temperature",
  ),
  (
    "temperature_inf",
    _X,
    dict(temperature=float("inf")),
    ValueError,
    "temperature",
  ),
  (
    "temperature_array_nonpositive",
    _X,
    dict(temperature=np.array([[1.0], [0.0]])),
    ValueError,
    "temperature",
  ),
  (
    "temperature_array_inf",
    _X,
    dict(temperature=np.array([1.0, np.inf, 1.0])),
    ValueError,
    "temperature",
  ),
  ("x_bool", np.ones((2, 3), bool), {}, TypeError, "x"),
  ("x_complex", np.ones((2, 3), np.complex64), {}, TypeError, "x"),
  (
    "where_not_broadcastable",
    _X,
    dict(where=np.ones((2,), bool)),
    ValueError,
    "where",
  ),
  (
    "where_not_bool",
    _X,
    dict(where=np.ones((2, 3), np.int32)),
    TypeError,
    "where",
  ),
]


@pytest.mark.parametrize("fn", FUNC_NAMES)
@pytest.mark.parametrize(
  "x,kwargs,exc,name", [pytest.param(*c[1:], id=c[0]) for c in _ERROR_CASES]
)
def test_bad_arguments_raise(fn, x, kwargs, exc, name):
  with pytest.raises(exc, match=rf"`{name}`"):
    FUNCS[fn][0](x, **kwargs)


def test_bad_arguments_raise_at_trace_time():
  # Static checks fire while tracing under jit, not only eagerly.
  with pytest.raises(ValueError, match="axis"):
    jax.jit(lambda x: softjax.softmax(x, axis=3))(_X)
  with pytest.raises(ValueError, match="temperature"):
    jax.jit(lambda x: softjax.log_softmax(x, temperature=-2.0))(_X)


# --------------------------------------------------------------------------
# Residuals: the VJP keeps the output (plus an array temperature).
# --------------------------------------------------------------------------

_RESIDUAL = re.compile(r"^\s*(\w+)\[([0-9,]*)\]")


def _saved_shapes(f, *args):
  """Shapes of the non-scalar residuals jax.vjp would keep, sorted."""
  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    jax.ad_checkpoint.print_saved_residuals(f, *args)
  shapes = []
  for line in buf.getvalue().splitlines():
    match = _RESIDUAL.match(line)
    assert match, line
    shape = tuple(int(n) for n in match.group(2).split(",") if n)
    if shape:  # scalar literals (e.g. a float temperature) cost nothing
      shapes.append(shape)
  return sorted(shapes)


@pytest.mark.parametrize("fn", FUNC_NAMES)
def test_vjp_saves_only_the_output(fn):
  ours = FUNCS[fn][0]
  x = jnp.asarray(_inputs.scores((3, 5), SCALE))
  assert _saved_shapes(lambda x: ours(x), x) == [(3, 5)]
  assert _saved_shapes(lambda x: ours(x, temperature=2.0), x) == [(3, 5)]
  assert _saved_shapes(lambda x: ours(x, axis=(0, 1)), x) == [(3, 5)]
  # A per-row temperature adds itself and nothing else.
  t_row = jnp.full((3, 1), 2.0)
  assert _saved_shapes(lambda x, t: ours(x, temperature=t), x, t_row) == [
    (3, 1),
    (3, 5),
  ]
  # A per-element temperature also needs the per-row log-normaliser.
  t_full = jnp.full((3, 5), 2.0)
  assert _saved_shapes(lambda x, t: ours(x, temperature=t), x, t_full) == [
    (3, 1),
    (3, 5),
    (3, 5),
  ]
  # jax.nn keeps more, so the comparison above is not vacuous.
  assert len(_saved_shapes(FUNCS[fn][1], x)) > 1
