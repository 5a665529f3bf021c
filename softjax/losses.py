r"""Fenchel-Young losses: softmax (cross-entropy), sparsemax and entmax losses.

Each loss pairs a normaliser :math:`p(z) = \arg\max_{p \in \Delta}
\langle p, z\rangle - \Omega(p)` with its Fenchel-Young loss

.. math::
  L(z; y) = \Omega^*(z) + \Omega(y) - \langle z, y\rangle
          = \langle p - y, z\rangle - \Omega(p) + \Omega(y),
  \qquad \Omega = -H_\alpha,

where :math:`H_\alpha(p) = \frac{1 - \sum_i p_i^\alpha}{\alpha(\alpha - 1)}`
is the Tsallis entropy (Shannon's :math:`-\sum_i p_i \log p_i` at
:math:`\alpha = 1`). The loss is non-negative, zero exactly when
:math:`p(z) = y`, convex in :math:`z`, and its gradient is
:math:`\nabla_z L = p(z) - y`: no derivative of the normaliser's solver is
needed. :math:`\alpha = 1` is the cross-entropy (softmax), :math:`\alpha = 2`
the sparsemax loss and :math:`\alpha = 1.5` the entmax15 loss.

Conventions shared by every loss here:

* **Labels.** An *integer* ``labels`` array holds class ids, one per example:
  its shape is that of ``logits`` without ``axis``, which must then be a
  single int. A *floating* ``labels`` array holds target distributions (one-hot
  or soft) and has the shape of ``logits``; ``axis`` may then also be a tuple
  or ``None``. Boolean labels raise ``TypeError``. Concrete labels are checked
  (ids in ``[0, C)``; distributions non-negative and summing to 1); traced
  labels cannot be, and an id outside ``[0, C)`` then gives a NaN loss
  (except in a row masked whole, or a token ignored: there the loss is 0).
* **Leaving tokens out.** ``ignore_index`` (e.g. ``-100``) ignores the
  examples whose class id equals it, as PyTorch and Liger do; the fused
  losses also take ``where``, one boolean per token. Ignored examples have
  loss 0 and zero gradients, whatever their id, and leave the mean. (Do not
  multiply a loss by 0 to drop a token: NaN * 0 = NaN.)
* **Masks.** ``where=False`` classes are removed from the normaliser and from
  the loss. Labels must put no mass there: concrete labels that do raise
  ``ValueError``; traced ones give the loss ``+inf`` (the regulariser is
  infinite off the allowed support). A row whose classes are all masked is
  left out: its loss and all its gradients are 0, whatever its labels.
* **Values.** One loss per example by default (the class axis is reduced,
  nothing else); ``reduction="sum"`` or ``"mean"`` (over the examples not
  ignored, 0 when none is) returns a scalar. ``label_smoothing``,
  ``logit_soft_cap`` and (softmax) ``z_loss`` change the target, the logits
  and the loss in the same way for the in-memory and the fused losses.
  Rounding can leave a tiny negative number when :math:`p(z) \approx y`; it is
  clipped to 0 (the gradient is :math:`p - y` regardless). Half-precision
  logits are computed in float32 and the loss is returned in their dtype.
* **Gradients.** A ``jax.custom_vjp`` returns :math:`g\,(p - y)` for the
  logits. Integer labels get no cotangent (``float0``). Soft labels get
  :math:`g\,(\nabla\Omega(y) - z + c)` with a per-example constant :math:`c`
  (the loss is only defined for :math:`y` on the simplex, where :math:`c` has
  no effect, e.g. for targets produced by a softmax): here
  :math:`\nabla\Omega(y)_i = (\alpha y_i^{\alpha-1} - 1) / (\alpha(\alpha-1))`,
  :math:`1 + \log y_i` at :math:`\alpha = 1`. At :math:`\alpha = 1` that is
  :math:`-\infty` where :math:`y_i = 0`; we use 0 for the entropy term there, so
  the cotangent stays finite (it is exact wherever the targets are positive).
  Masked classes get zero cotangents.

References:
  M. Blondel, A. F. T. Martins, V. Niculae. "Learning with Fenchel-Young
  Losses". JMLR 21(35), 2020.
  A. F. T. Martins, R. F. Astudillo. "From Softmax to Sparsemax: A Sparse
  Model of Attention and Multi-Label Classification". ICML 2016.
  B. Peters, V. Niculae, A. F. T. Martins. "Sparse Sequence-to-Sequence
  Models". ACL 2019.
"""

from softjax._losses import entmax15_loss
from softjax._losses import entmax_loss
from softjax._losses import linear_entmax15_loss
from softjax._losses import linear_entmax_loss
from softjax._losses import linear_softmax_loss
from softjax._losses import linear_sparsemax_loss
from softjax._losses import normmax_loss
from softjax._losses import softmax_loss
from softjax._losses import sparsemax_loss

__all__ = [
  "entmax15_loss",
  "entmax_loss",
  "linear_entmax15_loss",
  "linear_entmax_loss",
  "linear_softmax_loss",
  "linear_sparsemax_loss",
  "normmax_loss",
  "softmax_loss",
  "sparsemax_loss",
]
