"""Held-out sites and training without them (paper section 5.1, appendix C.4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_squint.data.validate import SlideError
from napari_squint.tasks.holdout import (
    choose_patches,
    choose_random_cells,
    choose_sites,
    mark_heldout,
    patch_regions,
    train_heldout,
)

TINY = dict(epochs=1, batch_size=256, codebook_size=8, heads=2, latent=16, hidden=32, seed=0, kmeans_cells=2000)


def test_patches_are_contiguous_disjoint_and_sized(small_tissue):
    sec = "section_1"
    labels = choose_patches(small_tissue, section=sec, n_patches=3, fraction=0.03, seed=0)
    in_sec = small_tissue.obs["section"].astype(str).to_numpy() == sec
    n_sec = int(in_sec.sum())
    assert sorted(np.unique(labels)) == [-1, 0, 1, 2]
    assert not (labels[~in_sec] >= 0).any()  # only in the chosen section
    sizes = np.bincount(labels[labels >= 0])
    assert (sizes == round(0.03 * n_sec)).all()
    xy = np.asarray(small_tissue.obsm["spatial"], dtype=float)
    # contiguous: each patch is exactly the cells of a disc (the exact circle round trip proves it)
    regions = patch_regions(small_tissue, labels)
    from napari_squint.io.geojson import cells_in_regions

    back = cells_in_regions(small_tissue, regions, section_key="section")
    assert (back == (labels >= 0)).all()
    # separated: the closest cells of two different patches are farther apart than the patch's NN spacing
    for a in range(3):
        for b in range(a + 1, 3):
            pa, pb = xy[labels == a], xy[labels == b]
            gap = np.min(np.linalg.norm(pa[:, None] - pb[None], axis=-1))
            within = np.median(np.sort(np.linalg.norm(pa[:, None] - pa[None], axis=-1), 1)[:, 1])
            assert gap > 2 * within


def test_patches_are_seeded(small_tissue):
    a = choose_patches(small_tissue, section="section_0", seed=1)
    b = choose_patches(small_tissue, section="section_0", seed=1)
    c = choose_patches(small_tissue, section="section_0", seed=2)
    assert (a == b).all()
    assert not (a == c).all()


def test_random_sites(small_tissue):
    labels = choose_sites(small_tissue, sites="random", section="section_0", n_patches=3, fraction=0.03, seed=0)
    in_sec = small_tissue.obs["section"].astype(str).to_numpy() == "section_0"
    assert (labels >= 0).sum() == round(0.09 * in_sec.sum())
    assert not (labels[~in_sec] >= 0).any()
    assert (labels == choose_random_cells(small_tissue, section="section_0", fraction=0.09, seed=0)).all()


def test_site_errors(small_tissue):
    with pytest.raises(SlideError, match="nowhere"):
        choose_patches(small_tissue, section="nowhere")
    with pytest.raises(SlideError, match="sites="):
        choose_sites(small_tissue, sites="grid")
    with pytest.raises(SlideError, match="fraction"):
        choose_patches(small_tissue, fraction=1.5)
    with pytest.raises(SlideError, match="could not place"):
        choose_patches(small_tissue, section="section_0", n_patches=4, fraction=0.12, max_tries=50)


def test_geojson_round_trip(small_tissue, tmp_path):
    from napari_squint.io.geojson import cells_in_regions, read_polygons, write_polygons

    labels = choose_patches(small_tissue, section="section_0", seed=3)
    path = write_polygons(patch_regions(small_tissue, labels), tmp_path / "patches.geojson")
    regions = read_polygons(path)
    assert [r.name for r in regions] == ["patch_0", "patch_1", "patch_2"]
    assert {r.section for r in regions} == {"section_0"}
    assert (cells_in_regions(small_tissue, regions, section_key="section") == (labels >= 0)).all()


def test_mark_heldout(small_tissue):
    labels = choose_patches(small_tissue, section="section_0", seed=0)
    out = mark_heldout(small_tissue, labels >= 0, copy=True)
    assert out.obs["squint_heldout"].sum() == (labels >= 0).sum()
    assert "squint_heldout" not in small_tissue.obs
    assert out.uns["squint"]["holdout"]["n_heldout"] == (labels >= 0).sum()


def _weights(model):
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def _train(adata, held):
    return train_heldout(adata, held, **TINY)


def test_heldout_cells_never_reach_training(small_tissue):
    """Held-out cells are absent from the training slide, and their counts cannot change the weights."""
    labels = choose_patches(small_tissue, section="section_0", seed=0)
    held = labels >= 0
    base = _train(small_tissue, held)
    names = set(base.data.obs_names)
    assert not names & set(small_tissue.obs_names[held])
    assert len(names) == int((~held).sum())
    # scramble the held-out cells' counts: a leak through inputs, neighbourhood sums or losses would show
    scrambled = small_tissue.copy()
    X = scrambled.X.toarray()
    rng = np.random.default_rng(0)
    X[held] = rng.poisson(20, size=(int(held.sum()), X.shape[1]))
    scrambled.X = type(small_tissue.X)(X)
    same = _train(scrambled, held)
    w0, w1 = _weights(base), _weights(same)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    # positive control: the same change on observed cells does change the weights
    other = small_tissue.copy()
    X2 = other.X.toarray()
    obs_cells = np.flatnonzero(~held)[: int(held.sum())]
    X2[obs_cells] = rng.poisson(20, size=(obs_cells.size, X2.shape[1]))
    other.X = type(small_tissue.X)(X2)
    changed = _train(other, held)
    w2 = _weights(changed)
    assert not all(torch.equal(w0[k], w2[k]) for k in w0)


def test_patches_in_a_volume_are_balls(small_volume):
    a = small_volume
    labels = choose_patches(a, n_patches=3, fraction=0.03, seed=0)
    xyz = np.asarray(a.obsm["spatial"], dtype=float)
    m = round(0.03 * a.n_obs)
    assert (np.bincount(labels[labels >= 0]) == m).all()
    for p in range(3):
        members = np.flatnonzero(labels == p)
        # a ball: some member's m nearest cells in 3D are exactly the patch
        d = np.linalg.norm(xyz[:, None, :] - xyz[None, members, :], axis=-1)  # (n, m)
        nearest = np.argsort(d, axis=0)[:m]
        assert any(set(nearest[:, j]) == set(members) for j in range(m))
        # and not a column through the block: the patch keeps to a part of the depth
        assert np.ptp(xyz[members, 2]) < 0.8 * np.ptp(xyz[:, 2])
    # the ball keeps away from the block's faces (the hull inset holds in 3D)
    lo, hi = xyz.min(0), xyz.max(0)
    held = xyz[labels >= 0]
    assert (held.min(0) > lo).all() and (held.max(0) < hi).all()


def test_patches_with_a_constant_z_match_the_plane(small_tissue):
    b = small_tissue.copy()
    b.obsm["spatial"] = np.column_stack([b.obsm["spatial"], np.full(b.n_obs, 5.0)])
    np.testing.assert_array_equal(choose_patches(b, section="section_1", seed=4),
                                  choose_patches(small_tissue, section="section_1", seed=4))


def test_a_volume_trains_and_imputes_in_3d(small_volume):
    from napari_squint.tasks.impute import Imputer

    a = small_volume
    held = choose_patches(a, n_patches=1, fraction=0.03, seed=1) >= 0
    model = train_heldout(a, held, **TINY)
    assert model.data.coords.shape == (int((~held).sum()), 3)
    assert model.history and np.isfinite(model.history[-1]["loss"])
    out = Imputer(model, a).impute(mask=held)
    x = np.asarray(out.X.toarray() if hasattr(out.X, "toarray") else out.X)
    assert out.n_obs == int(held.sum()) and np.isfinite(x).all()
    assert out.obsm["spatial"].shape == (int(held.sum()), 3)
    # new cells are placed in a plane: an empty drawn region on a volume is refused with a reason
    from shapely.geometry import Point

    from napari_squint.io.geojson import Region

    from scipy.spatial import cKDTree

    grid = np.stack(np.meshgrid(np.linspace(5, 25, 41), np.linspace(5, 25, 41)), -1).reshape(-1, 2)
    xy = np.asarray(a.obsm["spatial"], dtype=float)[:, :2]
    gap = grid[np.argmax(cKDTree(xy).query(grid)[0])]  # the widest hole in the projection
    with pytest.raises(SlideError, match="3 columns"):
        Imputer(model, a).impute(regions=[Region("block", Point(*gap).buffer(0.05), "empty")])


def test_patches_in_a_thin_slab_keep_away_from_its_sides():
    # a 40 x 40 x 2 slab: no ball of 80 cells (radius ~5 in x, y) fits in the depth, so the edge rule uses the
    # (x, y) hull instead of being given up, and every patch stays inside the slab's sides
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    n = 1600
    xyz = rng.uniform(0, 1, size=(n, 3)) * np.array([40.0, 40.0, 2.0])
    a = ad.AnnData(X=sp.csr_matrix(rng.poisson(1.0, size=(n, 5)).astype(np.float32)))
    a.obsm["spatial"] = xyz
    for seed in range(4):
        labels = choose_patches(a, n_patches=3, fraction=0.05, seed=seed, section_key=None)
        for p in range(3):
            members = xyz[labels == p]
            assert np.ptp(members[:, 2]) > 1.5  # through the depth
            centre = members[:, :2].mean(0)
            r = np.linalg.norm(members[:, :2] - centre, axis=1).max()
            assert (centre - r > -0.5).all() and (centre + r < 40.5).all(), (seed, p)
