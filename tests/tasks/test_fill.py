"""Filling empty regions with new cells at the local density, and imputing them."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from scipy.spatial import cKDTree

from napari_squint.data.validate import SlideError
from napari_squint.tasks.fill import created_graph, jitter_for, local_density, place_cells


def _nn(xy):
    d, _ = cKDTree(xy).query(xy, k=2)
    return d[:, 1]


@pytest.fixture(scope="module")
def torn(small_tissue, make_disc):
    """section_0 with a disc of ~120 cells cut out (a tear), and the disc."""
    region = make_disc(small_tissue, "section_0", 120, name="tear")
    xy = np.asarray(small_tissue.obsm["spatial"], dtype=float)
    sec0 = (small_tissue.obs["section"] == "section_0").to_numpy()
    inside = sec0 & shapely.contains_xy(region.polygon, xy[:, 0], xy[:, 1])
    return small_tissue[~inside].copy(), region, int(inside.sum())


def test_new_cells_match_the_local_density_and_spacing(torn):
    adata, region, n_removed = torn
    sec0 = (adata.obs["section"] == "section_0").to_numpy()
    xy = np.asarray(adata.obsm["spatial"], dtype=float)[sec0]
    new = place_cells(region.polygon, xy, seed=0)
    assert shapely.contains_xy(region.polygon, new[:, 0], new[:, 1]).all()
    # as many cells as the tissue held there (the tear removed n_removed cells)
    assert abs(len(new) - n_removed) <= 0.2 * n_removed
    # nearest-neighbour spacing of the new cells (among themselves and the tissue) close to the tissue's
    _, nn_tissue = local_density(region.polygon, xy)
    both = np.concatenate([new, xy])
    nn_new = np.median(_nn(both)[: len(new)])
    assert nn_new == pytest.approx(nn_tissue, rel=0.2)
    # seeded
    assert np.array_equal(new, place_cells(region.polygon, xy, seed=0))
    assert not np.array_equal(new, place_cells(region.polygon, xy, seed=1))


def test_a_lattice_at_the_nn_spacing_would_be_too_dense(torn):
    """Why density and spacing are matched separately: real tissue is irregular."""
    adata, region, _ = torn
    xy = np.asarray(adata.obsm["spatial"], dtype=float)[(adata.obs["section"] == "section_0").to_numpy()]
    density, nn = local_density(region.polygon, xy)
    assert 0.3 < nn * np.sqrt(density) < 1.0  # a perfect hexagonal lattice has 1.07
    assert 0 < jitter_for(nn * np.sqrt(density)) <= 0.9
    assert jitter_for(1.07) == pytest.approx(0.0, abs=0.02)


def test_tiny_polygon_gets_one_cell(torn):
    adata, region, _ = torn
    xy = np.asarray(adata.obsm["spatial"], dtype=float)
    c = region.polygon.centroid
    tiny = shapely.geometry.Point(c.x, c.y).buffer(0.01)
    assert place_cells(tiny, xy).shape == (1, 2)


def test_created_graph_links_new_cells_to_the_tissue(torn):
    adata, region, _ = torn
    sec0 = np.flatnonzero((adata.obs["section"] == "section_0").to_numpy())
    xy = np.asarray(adata.obsm["spatial"], dtype=float)[sec0]
    new = place_cells(region.polygon, xy, seed=0)
    first = adata.n_obs
    nbr, cond = created_graph(xy, sec0, new, first_new=first, k=8, max_degree=16, scale=float(np.median(_nn(xy))),
                              n_rbf=16, rbf_max=4.0)
    assert nbr.shape == (len(new), 16) and cond.shape == (len(new), 16)
    assert ((nbr >= 0).sum(1) >= 8).all()  # at least k neighbours each
    existing = nbr[(nbr >= 0) & (nbr < first)]
    assert np.isin(existing, sec0).all() and existing.size > 0  # boundary cells link to the section's cells
    assert not (nbr == (first + np.arange(len(new)))[:, None]).any()  # no self loops
    assert np.isfinite(cond).all() and (cond >= 0).all()


def test_impute_fills_empty_regions(torn, tiny_model):
    from napari_squint.tasks.impute import Imputer

    adata, region, n_removed = torn
    imputer = Imputer(tiny_model, adata)
    out = imputer.impute(regions=[region], seed=0, method="infill")
    assert out.obs["squint_created"].all()
    assert abs(out.n_obs - n_removed) <= 0.2 * n_removed
    assert out.obs_names.is_unique and out.obs_names[0] == "tear_new0"
    assert not set(out.obs_names) & set(adata.obs_names)
    xy = out.obsm["spatial"]
    assert shapely.contains_xy(region.polygon, xy[:, 0], xy[:, 1]).all()
    assert (out.obs["section"] == "section_0").all()
    assert out.X.sum() == 0  # nothing was measured there
    assert (out.layers["imputed"].sum(1) > 0).all() and (out.layers["imputed_nbr"].sum(1) > 0).all()
    assert out.obs["squint_ring"].min() == 1 and out.obs["squint_ring"].max() >= 2
    assert out.uns["squint"]["impute"]["n_created"] == out.n_obs
    with pytest.raises(SlideError, match="hold no cell"):
        imputer.impute(regions=[region], fill_empty=False)


def test_fill_and_impute_together(torn, tiny_model, make_disc):
    """An empty and a populated region in one call: measured targets first, then created cells."""
    from napari_squint.tasks.impute import Imputer

    adata, tear, _ = torn
    other = make_disc(adata, "section_1", 30, name="patch")
    out = Imputer(tiny_model, adata).impute(regions=[other, tear])
    created = out.obs["squint_created"].to_numpy()
    assert (~created).sum() == 30 and created.sum() > 0
    assert (out.obs["squint_region"][~created] == "patch").all()
    assert (out.obs["squint_region"][created] == "tear").all()


def test_context_method_fills_empty_regions_from_observed_cells(torn, tiny_model, make_disc):
    from napari_squint.tasks.impute import Imputer

    adata, tear, _ = torn
    other = make_disc(adata, "section_1", 30, name="patch")
    imputer = Imputer(tiny_model, adata)
    out = imputer.impute(regions=[other, tear], method="context")
    created = out.obs["squint_created"].to_numpy()
    assert (~created).sum() == 30 and created.sum() > 0
    assert (out.layers["imputed"].sum(1) > 0).all() and (out.obs["squint_ring"] == 0).all()
    # the context of a created cell is the nearest observed cells of its own section
    sec = np.asarray(["section_1"] * 30 + ["section_0"] * int(created.sum()), dtype=object)
    from types import SimpleNamespace

    ts = SimpleNamespace(cells=np.arange(out.n_obs), xy=out.obsm["spatial"], sections=sec,
                         target_mask=np.isin(adata.obs_names, out.obs_names))
    ctx = imputer.engine._observed_context(ts, k=8, width=16)
    labels = adata.obs["section"].astype(str).to_numpy()
    assert (labels[ctx[created][:, :8]] == "section_0").all() and (ctx[:, 8:] == -1).all()
    assert not np.isin(ctx, np.flatnonzero(np.isin(adata.obs_names, out.obs_names))).any()


def test_cifm_with_its_residual_correction_fills_empty_regions(torn):
    """Created cells get CIFM's correction too (their nearest measured cells are found from their positions)."""
    from napari_squint.api.cifm import Cifm
    from napari_squint.tasks.impute import Imputer

    adata, region, _ = torn
    model = Cifm(adata, epochs=1, hidden=16, latent=8, layers=1, batch_size=256, tile_cells=64, device="cpu",
                 seed=0)
    model.train()
    off = Imputer(model, adata).impute(regions=[region])
    model.config.update(residual=True)
    on = Imputer(model, adata).impute(regions=[region])
    new = ~off.obs_names.isin(adata.obs_names)
    assert new.sum() > 50 and (on.obs_names == off.obs_names).all()
    x_on, x_off = on.layers["imputed"][new], off.layers["imputed"][new]
    assert np.isfinite(x_on).all() and (x_on >= 0).all()
    assert np.abs(x_on - x_off).mean() > 1e-3  # the created cells moved
    np.testing.assert_allclose(x_on.sum(1), x_off.sum(1), rtol=1e-3)  # at the same read depth
