"""CIFM regional split, baselines, cell typing and the regional evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_squint.api.cifm import Cifm
from napari_squint.data.synthetic import make_tissue
from napari_squint.tasks.cifm_eval import (
    TEST,
    TRAIN,
    VAL,
    TypingClassifier,
    evaluate_region,
    fit_random_baselines,
    reconstruction_metrics,
    regional_split,
    table_markdown,
    topk_typing,
    train_with_validation,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "merfish_hypothalamus_moffitt2018_9sections.h5ad"
pytestmark_real = pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data (real MERFISH file)")
SMALL = dict(hidden=16, latent=8, layers=1, batch_size=128, tile_cells=64, device="cpu", seed=0)


@pytest.fixture(scope="module")
def tissue():
    torch.set_num_threads(1)
    return make_tissue(n_cells=900, n_genes=24, n_sections=2, n_cell_types=4, seed=2)


def test_regional_split_follows_appendix_b1():
    x, y = np.meshgrid(np.arange(11.0), np.arange(11.0))
    coords = np.c_[x.ravel(), y.ravel()]
    split = regional_split(coords)
    np.testing.assert_array_equal(split == TRAIN, coords[:, 0] <= 6)
    np.testing.assert_array_equal(split == VAL, (coords[:, 0] > 6) & (coords[:, 1] >= 5))
    np.testing.assert_array_equal(split == TEST, (coords[:, 0] > 6) & (coords[:, 1] < 5))
    # thresholds are per section: a shifted copy splits the same way
    both = np.vstack([coords, coords + 1000])
    s2 = regional_split(both, section=np.r_[np.zeros(121), np.ones(121)])
    np.testing.assert_array_equal(s2[:121], s2[121:])
    with pytest.raises(ValueError, match="x_frac"):
        regional_split(coords, x_frac=1.2)


def test_regional_split_on_anndata_writes_obs(tissue):
    ad = tissue.copy()
    split = regional_split(ad, key_added="cifm_split")
    assert list(ad.obs["cifm_split"].cat.categories) == [TRAIN, VAL, TEST]
    frac = {k: (split == k).mean() for k in (TRAIN, VAL, TEST)}
    assert 0.5 < frac[TRAIN] < 0.7 and 0.1 < frac[VAL] < 0.3 and 0.1 < frac[TEST] < 0.3
    assert "regional_split" in ad.uns["squint"]


def test_random_baselines_follow_training_statistics():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, size=(4000, 5)) * (rng.random((4000, 5)) < [0.1, 0.3, 0.5, 0.7, 0.9])
    rb = fit_random_baselines(x)
    b = rb.bernoulli(20000, np.random.default_rng(1))
    np.testing.assert_allclose((b > 0).mean(0), (x > 0).mean(0), atol=0.02)
    u = rb.uniform(20000, np.random.default_rng(1))
    assert (u >= x.min(0)).all() and (u <= x.max(0)).all()
    np.testing.assert_allclose(rb.mean_profile(3), np.tile(x.mean(0), (3, 1)))


def test_reconstruction_metrics_known_answers():
    t = np.array([[0.0, 1.0, 2.0], [2.0, 0.0, 1.0]])
    perfect = reconstruction_metrics(t, t)
    assert perfect["pc_cell"] == pytest.approx(1.0) and perfect["rmse"] == 0 and perfect["balanced_mse"] == 0
    off = reconstruction_metrics(t, t + 1.0)
    assert off["rmse"] == pytest.approx(1.0) and off["balanced_mse"] == pytest.approx(1.0)


def test_topk_typing_agreement_and_labels():
    rng = np.random.default_rng(0)
    centres = np.eye(3) * 4
    lab = rng.integers(0, 3, 600)
    x = centres[lab] + rng.normal(0, 0.5, (600, 3))
    clf = TypingClassifier(x, np.array(["a", "b", "c"])[lab])
    same = topk_typing(clf, x, x, labels=np.array(["a", "b", "c"])[lab], ks=(1, 3))
    assert same["agree@1"] == 1.0 and same["agree@3"] == 1.0 and same["label@1"] > 0.95
    shuffled = topk_typing(clf, x, x[rng.permutation(600)], ks=(1, 2))
    assert shuffled["agree@1"] < 0.5 and shuffled["agree@2"] > shuffled["agree@1"]


def test_evaluate_region_scores_every_test_cell_once(tissue):
    split = regional_split(tissue)
    model = Cifm(tissue, holdout=split != TRAIN, epochs=2, **SMALL)
    summary = train_with_validation(model, tissue[split == VAL], epochs=2, max_rounds=2)
    assert summary["best_epoch"] in (1, 2) and "val_loss" in model.history[-1]
    test = tissue[split == TEST]
    res = evaluate_region(model, test, train_adata=tissue[split == TRAIN], cell_type_key="cell_type",
                          ks=(1, 2), keep_predictions=True)
    assert res.n_cells == test.n_obs
    np.testing.assert_array_equal(np.sort(res.cells), np.arange(test.n_obs))
    t = res.table
    assert {"CIFM", "neighbourhood average", "uniform", "Bernoulli", "mean profile"} <= set(t.index)
    assert {"pc_cell", "pc_gene", "rmse", "balanced_mse", "agree@1", "label@2"} <= set(t.columns)
    assert t.loc["measured (typer ceiling)", "label@1"] > 0.8  # synthetic types are well separated
    # the uniform baseline is the worst mismatch; the neighbourhood average is a real competitor
    assert t.loc["uniform", "rmse"] > t.loc["neighbourhood average", "rmse"]
    assert "| CIFM |" in table_markdown(t)


@pytestmark_real
def test_real_merfish_split_ratio():
    import anndata as ad

    a = ad.read_h5ad(DATA, backed="r")
    split = regional_split(np.asarray(a.obsm["spatial"]), section=a.obs["section"].to_numpy())
    frac = {k: (split == k).mean() for k in (TRAIN, VAL, TEST)}
    assert frac[TRAIN] == pytest.approx(0.6, abs=0.05)  # about 3:1:1, as in the paper's Fig. 5B
    assert frac[VAL] == pytest.approx(0.2, abs=0.05) and frac[TEST] == pytest.approx(0.2, abs=0.05)
