"""Simulated injection with CIFM: placement, autoregressive rings, control, transitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from shapely.geometry import box

from napari_squint.api.cifm import Cifm
from napari_squint.data.synthetic import make_tissue
from napari_squint.tasks.inject import iter_inject, simulate_injection, transition_matrix


@pytest.fixture(scope="module")
def model_and_tissue():
    torch.set_num_threads(1)
    ad = make_tissue(n_cells=800, n_genes=24, n_sections=2, n_cell_types=4, seed=5)
    model = Cifm(ad, epochs=1, hidden=16, latent=8, layers=1, batch_size=256, tile_cells=64, device="cpu")
    model.train()
    return model, ad


def test_transition_matrix_counts_and_offdiagonal_proportions():
    before = ["a", "a", "a", "b", "b", "c"]
    after = ["a", "b", "c", "b", "b", "c"]
    counts, prop = transition_matrix(before, after)
    assert counts.loc["a", "a"] == 1 and counts.loc["a", "b"] == 1 and counts.to_numpy().sum() == 6
    np.testing.assert_allclose(np.diag(prop.to_numpy()), 0.0)
    assert prop.loc["a", "b"] == pytest.approx(0.5) and prop.loc["a", "c"] == pytest.approx(0.5)
    assert prop.loc["b"].sum() == 0  # no b cell changed type


def test_injection_updates_rings_and_reports(model_and_tissue):
    model, ad = model_and_tissue
    sec = ad.obs["section"].cat.categories[0]
    in_sec = (ad.obs["section"] == sec).to_numpy()
    xy = ad.obsm["spatial"]
    centre = np.median(xy[in_sec], axis=0)
    dist = np.where(in_sec, np.linalg.norm(xy - centre, axis=1), np.inf)
    region = dist <= np.sort(dist)[29]  # the 30 cells nearest the centre
    from napari_squint.data.radius import median_nn_distance

    nn = median_nn_distance(xy[in_sec])
    before_obs = ad.obs.copy()
    stages = []
    res = simulate_injection(model, ad, cell_type="T_cell", n_cells=5, region=region, steps=2,
                             seed=0, callback=lambda ev: stages.append(ev.stage))
    pd.testing.assert_frame_equal(ad.obs, before_obs)  # input untouched
    assert stages.count("inject") == 3
    n_sec = in_sec.sum()
    assert res.section_cells.size == n_sec and res.injected_coords.shape == (5, 2)
    # injected cells are placed near region cells
    d = np.min(np.linalg.norm(res.injected_coords[:, None] - xy[region][None], axis=2), axis=1)
    assert (d <= 0.5 * nn + 1e-9).all()
    # ring structure: step-1 cells neighbour injected cells, step 2 adds more
    assert (res.step_of == 1).sum() > 0 and (res.step_of == 2).sum() > 0
    assert res.steps[1]["targets"] > res.steps[0]["targets"]
    assert np.isin(res.affected, res.section_cells).all() and (np.diff(res.affected) > 0).all()
    m = res.affected.size
    assert res.x_after.shape == (m, model.data.n_genes) and res.before.shape == (m,)
    assert list(res.obs_names) == list(ad.obs_names[res.affected])
    # the composition counts the same updated cells three times
    assert (res.composition[["before", "control", "after"]].sum() == m).all()
    assert res.transition_counts.to_numpy().sum() == m
    np.testing.assert_allclose(res.composition["change"], res.composition["after"] - res.composition["control"])
    # perturb-style tables: off-diagonal counts only
    assert res.transitions.to_numpy().sum() == res.n_changed == len(res.changed)
    # the control differs from the injection only through the injected cells
    assert not np.allclose(res.x_after, res.x_control)
    np.testing.assert_allclose(res.composition[["p_before", "p_control", "p_after"]].sum(), 1.0, rtol=1e-6)
    assert list(res.shift.index) == [1, 2] and (res.shift["rms"] > 0).all()
    assert res.shift["alignment"].between(-1, 1).all()
    assert res.gene_shift.shape == (model.data.n_genes,)
    out = ad.copy()
    res.annotate(out)
    assert (out.obs["cifm_inject_step"] > 0).sum() == m
    assert out.obs["cifm_inject_after"].notna().sum() == m
    assert "cifm_inject" in out.uns["squint"]


def test_injection_is_seeded_and_accepts_polygons(model_and_tissue):
    model, ad = model_and_tissue
    sec = str(ad.obs["section"].cat.categories[1])
    xy = ad.obsm["spatial"][(ad.obs["section"] == sec).to_numpy()]
    lo, hi = np.percentile(xy, 40, axis=0), np.percentile(xy, 60, axis=0)
    poly = box(lo[0], lo[1], hi[0], hi[1])
    a = simulate_injection(model, ad, cell_type="T_cell", n_cells=4, region=poly, section=sec, steps=1, seed=3)
    b = simulate_injection(model, ad, cell_type="T_cell", n_cells=4, region=poly, section=sec, steps=1, seed=3)
    np.testing.assert_array_equal(a.injected_coords, b.injected_coords)
    np.testing.assert_array_equal(a.after, b.after)
    assert all(poly.contains(__import__("shapely.geometry", fromlist=["Point"]).Point(*p))
               for p in a.injected_coords)


def test_injection_errors(model_and_tissue):
    model, ad = model_and_tissue
    with pytest.raises(ValueError, match="no cell of type"):
        simulate_injection(model, ad, cell_type="Unicorn", n_cells=2, section=str(ad.obs["section"].cat.categories[0]))
    with pytest.raises(ValueError, match="pass section"):
        next(iter_inject(model, ad, cell_type="T_cell", n_cells=2))
    with pytest.raises(ValueError, match="one section"):
        next(iter_inject(model, ad, cell_type="T_cell", n_cells=2, region=np.ones(ad.n_obs, bool)))
