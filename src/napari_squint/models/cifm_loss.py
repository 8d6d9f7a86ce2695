"""Balanced mean-squared error of CIFM (appendix B.3, eq. 15).

Expression matrices are mostly zeros; a plain MSE is dominated by them and
rewards predicting 0 everywhere. The balanced MSE gives the expressed entries
(``target > 0``) and the unexpressed ones (``target == 0``) half the weight
each::

    L = 0.5 * mean_{target > 0} (target - pred)^2 + 0.5 * mean_{target == 0} (target - pred)^2

When one of the two sets is empty (a sample with every entry expressed, or
none), the loss is the mean over the other set alone (weight 1), so it stays
an MSE instead of being halved. Negative targets (never present in log1p
expression) are counted with the zeros, so no entry is dropped.

The balance exists to stop the zeros, the majority of a sparse panel, from
dominating. On a dense panel the zeros are the minority (STARmap's amplicon
intensities: 1.3 % of the entries of non-empty cells), and weight 0.5 hands
that handful of entries half the loss: the model learns to predict far too
little everywhere (docs/cifm.md, "STARmap 3D"). ``loss="balanced_mse_capped"``
(the default) therefore never gives the zeros more than their share: weight
``min(0.5, p0)`` for the zero set, ``p0`` the share of zero entries of the
panel (its non-empty training cells, decided once per training run). Where
``p0 >= 0.5`` (MERFISH, the lung tumour, STARmap mPFC) it is eq. 15 exactly;
where ``p0 < 0.5`` (osmFISH, STARmap 3D) each set weighs what it holds of the
panel, as in a plain MSE (:func:`mse`).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

__all__ = ["LOSSES", "balanced_mse", "capped_zero_weight", "loss_function", "mse", "poisson_deviance"]


def balanced_mse(target: Tensor, pred: Tensor, *, batch: Tensor | None = None,
                 zero_weight: float = 0.5) -> Tensor:
    """Balanced MSE between masked expression and its reconstruction (eq. 15).

    Parameters
    ----------
    target
        ``(m, g)`` true expression of the masked cells (non-negative).
    pred
        ``(m, g)`` reconstruction, same shape as ``target``.
    batch
        Optional ``(m,)`` int64 sample index of each row. Then the balanced MSE
        is computed per sample and averaged over the samples that have rows
        (the ``1/K`` sum of eq. 15). ``None`` treats all rows as one sample.
    zero_weight
        Weight of the zero set (the non-zero set gets ``1 - zero_weight``); 0.5 is eq. 15.
        ``loss="balanced_mse_capped"`` (the default) uses ``min(0.5, p0)``, ``p0`` the share of zero entries of the
        panel's non-empty training cells (:func:`capped_zero_weight`; see the module docstring).

    Returns
    -------
    Tensor
        Scalar loss, differentiable with respect to ``pred``.
    """
    if target.shape != pred.shape:
        raise ValueError(
            f"target and pred must have the same shape, got {tuple(target.shape)} "
            f"and {tuple(pred.shape)}"
        )
    if target.numel() == 0:
        raise ValueError("target is empty: balanced_mse needs at least one entry")
    target = target.to(pred.dtype)
    se = (target - pred) ** 2
    pos = (target > 0).to(pred.dtype)
    neg = 1.0 - pos

    if batch is None:
        sums_pos, sums_neg = (se * pos).sum(), (se * neg).sum()
        n_pos, n_neg = pos.sum(), neg.sum()
    else:
        if batch.dim() != 1 or batch.shape[0] != target.shape[0]:
            raise ValueError(
                f"batch must have shape ({target.shape[0]},), got {tuple(batch.shape)}"
            )
        n_samples = int(batch.max()) + 1

        def per_sample(v: Tensor) -> Tensor:
            rows = v.reshape(v.shape[0], -1).sum(dim=1)
            return rows.new_zeros(n_samples).index_add(0, batch, rows)

        sums_pos, sums_neg = per_sample(se * pos), per_sample(se * neg)
        n_pos, n_neg = per_sample(pos), per_sample(neg)

    has_pos, has_neg = (n_pos > 0).to(se.dtype), (n_neg > 0).to(se.dtype)
    mean_pos = sums_pos / n_pos.clamp_min(1)
    mean_neg = sums_neg / n_neg.clamp_min(1)
    if not 0.0 <= zero_weight <= 1.0:
        raise ValueError(f"zero_weight must be in [0, 1], got {zero_weight!r}")
    w_pos, w_neg = has_pos * (1.0 - zero_weight), has_neg * zero_weight
    n_sets = w_pos + w_neg  # 0 for samples without rows, or whose only set has weight 0
    per = (w_pos * mean_pos + w_neg * mean_neg) / torch.where(n_sets > 0, n_sets, torch.ones_like(n_sets))
    has = has_pos + has_neg
    per = torch.where(n_sets > 0, per, (has_pos * mean_pos + has_neg * mean_neg) / has.clamp_min(1))
    if batch is None:
        return per
    return per[has > 0].mean()


def poisson_deviance(target_log: Tensor, rate: Tensor, *, batch: Tensor | None = None) -> Tensor:
    """Half the Poisson deviance of normalised expression, averaged per sample (the ``loss="poisson"`` option).

    The target is ``y = expm1(target_log)`` (expression per 10^4 when
    ``target_log`` is log1p of it) and the prediction a non-negative ``rate``
    on the same scale::

        L = mean(rate - y + y * log(y / rate))      (0 when rate == y)

    Its minimiser is the conditional *mean* of the expression, so sums of
    predicted cells (a microenvironment) are unbiased, whereas an MSE on log
    expression predicts a geometric-like mean that is too low for sparse genes.
    The gradient with respect to ``log(rate)`` is ``rate - y``, whatever the scale.

    Parameters
    ----------
    target_log
        ``(m, g)`` log1p expression of the masked cells (non-negative).
    rate
        ``(m, g)`` predicted expression, same scale as ``expm1(target_log)``.
    batch
        Optional ``(m,)`` sample index; the loss is averaged per sample, then over samples.
    """
    if target_log.shape != rate.shape:
        raise ValueError(f"target and rate must have the same shape, got {tuple(target_log.shape)} "
                         f"and {tuple(rate.shape)}")
    if target_log.numel() == 0:
        raise ValueError("target is empty: poisson_deviance needs at least one entry")
    y = torch.expm1(target_log.to(rate.dtype)).clamp_min(0)
    r = rate.clamp_min(1e-8)
    dev = r - y + torch.xlogy(y, y) - y * torch.log(r)
    return _sample_mean(dev.mean(dim=1), batch)


def _sample_mean(rows: Tensor, batch: Tensor | None) -> Tensor:
    """Mean of per-row values within each sample of ``batch``, then over the samples that have rows."""
    if batch is None:
        return rows.mean()
    n_samples = int(batch.max()) + 1
    sums = rows.new_zeros(n_samples).index_add(0, batch, rows)
    counts = rows.new_zeros(n_samples).index_add(0, batch, torch.ones_like(rows))
    present = counts > 0
    return (sums[present] / counts[present]).mean()


def mse(target: Tensor, pred: Tensor, *, batch: Tensor | None = None) -> Tensor:
    """Plain mean-squared error, averaged per sample and then over the samples with rows (``loss="mse"``).

    Every entry weighs the same. On dense panels (few zeros, e.g. STARmap's amplicon intensities) the balanced
    MSE gives a handful of zero entries half the loss and drags every prediction towards 0; this does not.
    """
    if target.shape != pred.shape:
        raise ValueError(f"target and pred must have the same shape, got {tuple(target.shape)} "
                         f"and {tuple(pred.shape)}")
    if target.numel() == 0:
        raise ValueError("target is empty: mse needs at least one entry")
    return _sample_mean(((target.to(pred.dtype) - pred) ** 2).mean(dim=1), batch)


def capped_zero_weight(x) -> float:
    """``min(0.5, p0)``: ``p0`` the share of zero entries among the non-empty rows of ``x`` (n, g), sparse or dense."""
    x = sp.csr_matrix(x)
    nonempty = np.asarray(x.sum(axis=1)).ravel() > 0
    if not nonempty.any():
        return 0.5
    nz = int((x[nonempty] != 0).sum())
    return float(min(0.5, 1.0 - nz / (int(nonempty.sum()) * x.shape[1])))


def loss_function(name: str, x=None):
    """The loss ``fn(target, pred, batch=)`` of ``CifmConfig.loss``; ``x``: the training inputs (n, g), which set
    ``balanced_mse_capped``'s zero weight (:func:`capped_zero_weight`)."""
    if name == "balanced_mse_capped":
        return partial(balanced_mse, zero_weight=capped_zero_weight(x) if x is not None else 0.5)
    return LOSSES[name]


#: CifmConfig.loss -> loss function(target, pred, batch=); ``balanced_mse_capped`` needs the data: loss_function
LOSSES = {"balanced_mse": balanced_mse, "mse": mse, "poisson": poisson_deviance}
