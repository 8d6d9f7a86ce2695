"""Validation inside the training cells: pseudo-patches, the scoring of output settings, the choice rule."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from napari_squint.api.squint_calibrate import (RESIDUAL_WEIGHTS, SPREADS, calibrate_output, choose_setting,
                                                pseudo_patches, score_settings, validation_discs)
from napari_squint.config import ModelConfig, SquintConfig, TrainConfig

TINY = dict(epochs=2, batch_size=256, codebook_size=8, heads=2, latent=16, hidden=32, seed=0, num_threads=1)


def test_pseudo_patches_are_discs_of_the_largest_section(trained_tiny):
    d = trained_tiny.data
    rng = np.random.default_rng(0)
    held = pseudo_patches(d, rng, n_patches=3, fraction=0.03)
    big = int(np.bincount(d.batch).argmax())
    m = int(round(0.03 * (d.batch == big).sum()))
    assert held.sum() == 3 * m  # three discs that do not overlap
    assert (d.batch[held] == big).all()
    # contiguous: a disc cell's nearest other cell of the section is mostly another disc cell
    from scipy.spatial import cKDTree

    pool = np.flatnonzero(d.batch == big)
    _, nn = cKDTree(d.coords[pool]).query(d.coords[np.flatnonzero(held)], k=2)
    assert held[pool[nn[:, 1]]].mean() > 0.8


def test_choose_setting_rule():
    base = {"neighbourhood average": {"pc_gene": 0.3, "mmd": 0.02, "energy": 0.5},
            "ring average": {"pc_gene": 0.32, "mmd": 0.03, "energy": 0.7}}
    rows = [{"residual_weight": 1.0, "spread": 1.0, "pc_gene": 0.33, "mmd": 0.018, "energy": 0.45},
            {"residual_weight": 0.5, "spread": 1.0, "pc_gene": 0.36, "mmd": 0.03, "energy": 0.6},
            {"residual_weight": 0.75, "spread": 1.15, "pc_gene": 0.35, "mmd": 0.019, "energy": 0.49},
            {"residual_weight": 0.75, "spread": 1.3, "pc_gene": 0.352, "mmd": 0.019, "energy": 0.51}]
    # best per-gene PC among the rows beating the neighbourhood average on MMD *and* energy
    assert choose_setting({"settings": rows, "baselines": base}) is rows[2]
    worse = {"neighbourhood average": {"pc_gene": 0.3, "mmd": 0.01, "energy": 0.1}, "ring average": {}}
    assert choose_setting({"settings": rows, "baselines": worse}) is rows[0]  # none does: lowest MMD


def _garbage_at(adata, held):
    """A copy of ``adata`` whose ``held`` cells carry random counts (a leak of them would change the result)."""
    out = adata.copy()
    x = out.X.toarray()
    x[held] = np.random.default_rng(1).poisson(50.0, size=(held.sum(), x.shape[1]))
    out.X = sp.csr_matrix(x)
    return out


def test_calibration_never_reads_a_held_out_cell(tissue):
    """Held-out cells are not in the model's training data, so the calibration cannot see them: replacing
    their counts by garbage changes nothing (same seed, one thread: bit-identical training)."""
    from napari_squint.tasks.holdout import train_heldout

    held = np.zeros(tissue.n_obs, dtype=bool)
    held[np.flatnonzero(tissue.obs["section"].astype(str).to_numpy() == tissue.obs["section"].astype(str)
                        .iloc[0])[:80]] = True
    garbage = _garbage_at(tissue, held)
    out = []
    for adata in (tissue, garbage):
        model = train_heldout(adata, held, genes="all", **TINY)
        assert model.data.n_cells == (~held).sum()
        out.append(calibrate_output(model, repeats=1))
    assert out[0]["chosen"] == out[1]["chosen"]
    for a, b in zip(out[0]["settings"], out[1]["settings"]):
        assert a["pc_gene"] == pytest.approx(b["pc_gene"]) and a["mmd"] == pytest.approx(b["mmd"])


def test_calibrate_output_sets_the_chosen_setting(trained_tiny):
    model = copy.deepcopy(trained_tiny)
    res = calibrate_output(model, repeats=1)
    chosen = res["chosen"]
    assert chosen["residual_weight"] in RESIDUAL_WEIGHTS and chosen["spread"] in SPREADS
    assert model.config.model.residual_weight == chosen["residual_weight"]
    assert model.config.model.spread == chosen["spread"]
    assert len(res["settings"]) == len(RESIDUAL_WEIGHTS) * len(SPREADS)
    assert model.meta["impute_calibration"]["chosen"] == chosen
    assert set(res["baselines"]) == {"neighbourhood average", "ring average"}
    assert all(np.isfinite([r["pc_gene"], r["mmd"], r["energy"]]).all() for r in res["settings"])


def test_score_settings_restores_the_config(trained_tiny):
    model = copy.deepcopy(trained_tiny)
    model.config.update(residual_weight=0.3, spread=1.2)
    score_settings(model, [{"residual_weight": 0.0, "spread": 1.0}], repeats=1)
    assert (model.config.model.residual_weight, model.config.model.spread) == (0.3, 1.2)


@pytest.mark.parametrize(("part", "name", "value"), [
    (ModelConfig, "residual_weight", -0.5), (ModelConfig, "spread", 0.0), (ModelConfig, "token_mixture", 0),
    (ModelConfig, "token_temperature", -1.0), (ModelConfig, "code_head_context", "yes"),
    (TrainConfig, "calibrate_output", 1), (TrainConfig, "calibrate_holdout", "yes"),
])
def test_new_options_are_checked_by_name(part, name, value):
    with pytest.raises(ValueError, match=name):
        part(**{name: value})
    with pytest.raises(ValueError, match=name):
        SquintConfig().update(**{name: value})


def test_calibrate_holdout_validates_on_discs_held_out_of_training(tissue):
    """With calibrate_holdout the calibration discs never enter training (the model's data lacks them and the
    scored held-out cells), and the benchmark's held-out cells stay unread: garbage there changes nothing."""
    from napari_squint.tasks.holdout import train_heldout

    sec = tissue.obs["section"].astype(str).to_numpy()
    held = np.zeros(tissue.n_obs, dtype=bool)
    held[np.flatnonzero(sec == sec[0])[:80]] = True
    val = validation_discs(tissue, held, section_key="section", spatial_key="spatial", seed=0)
    assert val.any() and not (val & held).any()
    biggest = pd.Series(sec[~held]).value_counts().index[0]
    assert (sec[val] == biggest).all()
    garbage = _garbage_at(tissue, held)
    out = []
    for adata in (tissue, garbage):
        model = train_heldout(adata, held, genes="all", calibrate_output=True, calibrate_holdout=True, **TINY)
        assert model.data.n_cells == (~held & ~val).sum()
        assert set(model.data.obs_names).isdisjoint(adata.obs_names[val | held])
        res = model.meta["impute_calibration"]
        assert res["validation"] == {"held_out_of_training": True, "cells": int(val.sum())}
        assert model._validation is None  # the slide is not kept with the model
        out.append(res)
    assert out[0]["chosen"] == out[1]["chosen"]
    for a, b in zip(out[0]["settings"], out[1]["settings"]):
        assert a["pc_gene"] == pytest.approx(b["pc_gene"]) and a["mmd"] == pytest.approx(b["mmd"])


def test_without_calibrate_holdout_nothing_more_is_held_out(tissue):
    from napari_squint.tasks.holdout import train_heldout

    held = np.zeros(tissue.n_obs, dtype=bool)
    held[:50] = True
    model = train_heldout(tissue, held, genes="all", **{**TINY, "epochs": 1}, calibrate_holdout=True)
    assert model.data.n_cells == (~held).sum()  # calibrate_holdout alone (no calibrate_output) splits nothing
