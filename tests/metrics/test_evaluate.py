"""Tests for napari_squint.metrics.evaluate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from napari_squint.metrics import (
    METRICS,
    evaluate_imputation,
    mean_profile,
    reference_pca,
    summarise,
    to_markdown,
)


@pytest.fixture(scope="module")
def data():
    """Two cell states with different programmes; 40 test and 80 training cells."""
    rng = np.random.default_rng(0)
    base = rng.gamma(2.0, 2.0, size=(2, 30))

    def cells(n):
        state = rng.integers(0, 2, n)
        return rng.poisson(base[state] * rng.uniform(0.5, 2.0, (n, 1))).astype(float)

    return cells(40), cells(80)


@pytest.fixture(scope="module")
def pca(data):
    return reference_pca(data[1], n_components=10)


def test_perfect_prediction(data, pca):
    true, _ = data
    out = evaluate_imputation(true, true.copy(), pca=pca)
    assert tuple(out) == METRICS
    assert out["pc_cell"] == pytest.approx(1.0) and out["pc_gene"] == pytest.approx(1.0)
    assert out["mmd"] == 0.0 and out["energy"] == 0.0


def test_mean_profile_is_worse_than_truth(data, pca):
    true, train = data
    out = evaluate_imputation(true, mean_profile(train, len(true)), pca=pca)
    assert out["pc_gene"] == 0.0  # constant per gene by construction
    assert out["pc_cell"] < 1.0 and out["mmd"] > 0 and out["energy"] > 0


def test_pca_reuse_equals_fitting_inside(data):
    true, train = data
    pred = true[::-1].copy()
    inside = evaluate_imputation(true, pred, train_counts=sp.csr_matrix(train), seed=2)
    reused = evaluate_imputation(true, pred, pca=reference_pca(train, seed=2), seed=2)
    assert inside == pytest.approx(reused)
    assert evaluate_imputation(true, pred, pca=reference_pca(train), max_n=15, seed=1) == (
        evaluate_imputation(true, pred, pca=reference_pca(train), max_n=15, seed=1)
    )


def test_evaluate_rejects_bad_input(data, pca):
    true, _ = data
    with pytest.raises(ValueError, match="train_counts"):
        evaluate_imputation(true, true)
    with pytest.raises(ValueError, match="shape"):
        evaluate_imputation(true, true[:5], pca=pca)
    with pytest.raises(ValueError, match="genes"):
        evaluate_imputation(true[:, :5], true[:, :5], pca=pca)


def test_summarise_mean_and_sd():
    runs = [{"mmd": 1.0, "pc_cell": 0.5}, {"mmd": 2.0, "pc_cell": 0.5}, {"mmd": 3.0, "pc_cell": 0.5}]
    out = summarise(runs)
    assert out["mmd"] == {"mean": 2.0, "sd": 1.0, "n": 3}  # sample sd of 1, 2, 3
    assert out["pc_cell"]["sd"] == 0.0
    assert math.isnan(summarise([{"mmd": 1.0}])["mmd"]["sd"])
    assert math.isnan(summarise([{"pc_cell": float("nan")}, {"pc_cell": 1.0}])["pc_cell"]["mean"])


def test_to_markdown_table():
    table = {
        "SQuINT": {"mmd": {"mean": 0.0391, "sd": 0.0012}, "pc_cell": {"mean": 0.916, "sd": 0.008}},
        "WFM": {"mmd": {"mean": 0.1358, "sd": float("nan")}, "pc_cell": {"mean": float("nan"), "sd": 0}},
        "mean": {"mmd": 0.5, "extra": 1.0},
    }
    expected = (
        "| method | PC cell ↑ | MMD ↓ | extra |\n"
        "|---|---|---|---|\n"
        "| SQuINT | 0.916 ± 0.008 | 0.039 ± 0.001 | NA |\n"
        "| WFM | NA | 0.136 | NA |\n"
        "| mean | NA | 0.500 | 1.000 |\n"
    )
    assert to_markdown(table) == expected
