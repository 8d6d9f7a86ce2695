"""Tests for napari_squint.metrics.correlation."""

from __future__ import annotations

import numpy as np
import pytest

from napari_squint.metrics import pearson_per_cell, pearson_per_gene

# Hand computation for the 2 x 3 example below.
# Row 0: true (1, 2, 3), centred (-1, 0, 1), sum of squares 2;
#        pred (2, 4, 7), mean 13/3, centred (-7/3, -1/3, 8/3), sum of squares 114/9.
#        covariance sum = 7/3 + 0 + 8/3 = 5, so r = 5 / sqrt(2 * 114/9) = 15 / sqrt(228).
# Row 1: pred (1, 0, 1) is an exact negative affine map of true (0, 1, 0): r = -1.
TRUE = np.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]])
PRED = np.array([[2.0, 4.0, 7.0], [1.0, 0.0, 1.0]])
R0 = 15 / np.sqrt(228)


def test_per_cell_hand_computed():
    mean, per_cell = pearson_per_cell(TRUE, PRED, return_per_cell=True)
    np.testing.assert_allclose(per_cell, [R0, -1.0])
    assert mean == pytest.approx((R0 - 1.0) / 2)
    assert pearson_per_cell(TRUE, PRED) == pytest.approx(mean)


def test_per_gene_hand_computed_on_transpose():
    # per gene on the (3 cells x 2 genes) transpose is per cell on the original
    mean, per_gene = pearson_per_gene(TRUE.T, PRED.T, return_per_gene=True)
    np.testing.assert_allclose(per_gene, [R0, -1.0])
    assert mean == pytest.approx((R0 - 1.0) / 2)


def test_constant_true_row_is_excluded_and_constant_pred_counts_zero():
    true = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [1.0, 2.0, 3.0]])
    pred = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    mean, r = pearson_per_cell(true, pred, return_per_cell=True)
    assert r[0] == pytest.approx(1.0)
    assert np.isnan(r[1])  # measured constant: nothing to correlate with
    assert r[2] == 0.0  # prediction collapsed: scored, not dropped
    assert mean == pytest.approx(0.5)


def test_all_constant_gives_nan():
    assert np.isnan(pearson_per_cell(np.ones((2, 3)), np.ones((2, 3))))


def test_per_gene_min_var_filters_measured_genes():
    true = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.01], [2.0, 0.0, 0.99]])
    pred = np.array([[0.0, 3.0, 1.0], [1.0, 2.0, 0.99], [2.0, 1.0, 1.01]])
    mean, r = pearson_per_gene(true, pred, return_per_gene=True)
    assert np.isnan(r[1])  # constant in the measured data
    assert r[0] == pytest.approx(1.0) and r[2] == pytest.approx(-1.0)
    assert mean == pytest.approx(0.0)
    assert pearson_per_gene(true, pred, min_var=1e-3) == pytest.approx(1.0)


def test_invariant_to_affine_maps_of_prediction():
    rng = np.random.default_rng(0)
    true, pred = rng.random((5, 7)), rng.random((5, 7))
    assert pearson_per_cell(true, 3 * pred + 2) == pytest.approx(pearson_per_cell(true, pred))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        pearson_per_cell(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="min_var"):
        pearson_per_gene(np.ones((2, 3)), np.ones((2, 3)), min_var=-1)
