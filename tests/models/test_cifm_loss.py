"""Balanced MSE (CIFM eq. 15)."""

from __future__ import annotations

import pytest
import torch

from napari_squint.models.cifm_loss import balanced_mse


def loop_formula(target: torch.Tensor, pred: torch.Tensor) -> float:
    pos, zero = [], []
    for j in range(target.shape[0]):
        for k in range(target.shape[1]):
            se = float(target[j, k] - pred[j, k]) ** 2
            (pos if target[j, k] > 0 else zero).append(se)
    if pos and zero:
        return sum(pos) / (2 * len(pos)) + sum(zero) / (2 * len(zero))
    return sum(pos or zero) / len(pos or zero)


def test_matches_loop_formula():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(5, 7, generator=g, dtype=torch.float64)
    target[target < 0.7] = 0.0
    pred = torch.rand(5, 7, generator=g, dtype=torch.float64)
    assert 0 < int((target > 0).sum()) < target.numel()
    assert float(balanced_mse(target, pred)) == pytest.approx(loop_formula(target, pred), rel=1e-12)


def test_hand_example():
    target = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    pred = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    # expressed: (2-1)^2 / 1 = 1; zeros: (1 + 0 + 0) / 3; weights 1/2 each
    assert float(balanced_mse(target, pred)) == pytest.approx(0.5 * 1 + 0.5 / 3)


@pytest.mark.parametrize("fill", [0.0, 1.5])
def test_one_set_empty_uses_the_other(fill):
    target = torch.full((3, 4), fill, dtype=torch.float64)
    pred = torch.rand(3, 4, dtype=torch.float64)
    expected = float(((target - pred) ** 2).mean())
    assert float(balanced_mse(target, pred)) == pytest.approx(expected, rel=1e-12)
    assert float(balanced_mse(target, pred)) == pytest.approx(loop_formula(target, pred), rel=1e-12)


def test_batch_averages_per_sample_losses():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(7, 5, generator=g, dtype=torch.float64)
    target[target < 0.5] = 0.0
    target[5:] = 0.0  # the last sample has no expressed entry
    pred = torch.rand(7, 5, generator=g, dtype=torch.float64)
    batch = torch.tensor([0, 0, 0, 2, 2, 3, 3])  # sample 1 has no rows
    per = [loop_formula(target[batch == b], pred[batch == b]) for b in (0, 2, 3)]
    assert float(balanced_mse(target, pred, batch=batch)) == pytest.approx(sum(per) / 3, rel=1e-12)


def test_gradient_and_zero_at_perfect_prediction():
    target = torch.tensor([[0.0, 1.0], [3.0, 0.0]])
    pred = target.clone().requires_grad_(True)
    loss = balanced_mse(target, pred)
    assert float(loss.detach()) == 0.0
    (balanced_mse(target, pred + 0.5)).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_invalid_inputs():
    with pytest.raises(ValueError, match="same shape"):
        balanced_mse(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="target is empty"):
        balanced_mse(torch.zeros(0, 3), torch.zeros(0, 3))
    with pytest.raises(ValueError, match="batch"):
        balanced_mse(torch.zeros(2, 3), torch.zeros(2, 3), batch=torch.zeros(3, dtype=torch.long))


def test_poisson_deviance_is_zero_at_the_target_and_minimised_by_the_mean():
    import numpy as np

    from napari_squint.models.cifm_loss import poisson_deviance

    g = torch.Generator().manual_seed(0)
    y = torch.poisson(torch.full((50, 4), 3.0), generator=g).double()
    t = torch.log1p(y)
    assert float(poisson_deviance(t, y.clamp_min(1e-12))) == pytest.approx(0.0, abs=1e-9)
    # formula, with 0 * log 0 = 0
    r = torch.rand(50, 4, generator=g, dtype=torch.float64) + 0.5
    ref = (r - y + torch.where(y > 0, y * torch.log(y / r), torch.zeros_like(y))).mean()
    assert float(poisson_deviance(t, r)) == pytest.approx(float(ref), rel=1e-12)
    # over constant predictions, the per-gene mean of y is the best (not exp of the mean log)
    mean = y.mean(0, keepdim=True).expand_as(y)
    geo = torch.expm1(t.mean(0, keepdim=True)).expand_as(y)
    assert float(poisson_deviance(t, mean)) < float(poisson_deviance(t, geo))
    # per-sample averaging
    batch = torch.tensor([0] * 10 + [1] * 40)
    per = [float(poisson_deviance(t[:10], r[:10])), float(poisson_deviance(t[10:], r[10:]))]
    assert float(poisson_deviance(t, r, batch=batch)) == pytest.approx(np.mean(per), rel=1e-12)


def test_mse_weighs_every_entry_the_same_unlike_balanced_mse():
    from napari_squint.models.cifm_loss import LOSSES, mse

    # a dense row with one zero entry: balanced MSE gives that one entry half the loss
    t = torch.tensor([[5.0, 5.0, 5.0, 0.0]])
    p = torch.full((1, 4), 5.0)
    assert float(mse(t, p)) == pytest.approx(25.0 / 4)
    assert float(balanced_mse(t, p)) == pytest.approx(0.5 * 0.0 + 0.5 * 25.0)
    # per-sample averaging, as the other losses
    t2 = torch.tensor([[1.0, 1.0], [0.0, 0.0], [2.0, 2.0]])
    p2 = torch.zeros(3, 2)
    batch = torch.tensor([0, 1, 1])
    assert float(mse(t2, p2, batch=batch)) == pytest.approx((1.0 + (0.0 + 4.0) / 2) / 2)
    assert set(LOSSES) == {"balanced_mse", "mse", "poisson"}
    with pytest.raises(ValueError, match="target is empty"):
        mse(torch.zeros(0, 3), torch.zeros(0, 3))


def test_capped_balance_is_eq15_on_sparse_panels_and_share_weighted_on_dense_ones():
    import numpy as np
    import scipy.sparse as sp

    from napari_squint.models.cifm_loss import capped_zero_weight, loss_function, mse

    g = torch.Generator().manual_seed(0)
    p = torch.rand(6, 8, generator=g, dtype=torch.float64) * 3
    sparse = torch.rand(6, 8, generator=g, dtype=torch.float64) * 4 + 0.1
    sparse[:, :5] = 0.0  # 5 of 8 entries zero: p0 >= 0.5
    assert capped_zero_weight(sparse.numpy()) == 0.5
    capped = loss_function("balanced_mse_capped", sparse.numpy())
    assert float(capped(sparse, p)) == pytest.approx(float(balanced_mse(sparse, p)), rel=1e-12)
    dense = sparse.clone()
    dense[:, :4] = 2.0  # 1 of 8 zero: the zeros keep their share, no more
    panel = np.vstack([dense.numpy(), np.zeros((3, 8))])  # empty rows do not count
    assert capped_zero_weight(sp.csr_matrix(panel)) == pytest.approx(1 / 8)
    capped = loss_function("balanced_mse_capped", panel)
    # the panel's shares in every sample: on rows with the panel's share it is the plain MSE
    assert float(capped(dense, p)) == pytest.approx(float(mse(dense, p)), rel=1e-12)
    assert float(capped(dense, p)) < float(balanced_mse(dense, p))
    assert float(capped(dense, p)) == pytest.approx(float(balanced_mse(dense, p, zero_weight=1 / 8)), rel=1e-12)
    # one set empty: the mean over the other, as eq. 15
    assert float(capped(torch.zeros(2, 3), torch.ones(2, 3))) == pytest.approx(1.0)
    assert float(capped(torch.full((2, 3), 2.0), torch.ones(2, 3))) == pytest.approx(1.0)
    assert loss_function("mse") is mse and loss_function("balanced_mse") is balanced_mse
    with pytest.raises(ValueError, match="zero_weight"):
        balanced_mse(dense, p, zero_weight=1.5)


def test_a_zero_weighted_set_alone_is_still_scored():
    # zero_weight 0 (a panel without zeros) and a sample of zeros only: the mean over that set, not nan
    t = torch.zeros(2, 3)
    p = torch.ones(2, 3)
    assert float(balanced_mse(t, p, zero_weight=0.0)) == pytest.approx(1.0)
    both = torch.cat([t, torch.full((2, 3), 3.0)])
    batch = torch.tensor([0, 0, 1, 1])
    assert float(balanced_mse(both, torch.ones(4, 3), batch=batch, zero_weight=0.0)) == pytest.approx((1.0 + 4.0) / 2)
