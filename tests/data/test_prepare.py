import anndata as ad
import numpy as np
import pytest

from napari_squint.data.prepare import GraphConfig, prepare_slide
from napari_squint.data.validate import SlideError


def _prep(a, **kw):
    return prepare_slide(a, a.var_names.tolist()[:30], section_key="section", spatial_key="spatial",
                         graph=GraphConfig(k=6, max_degree=12), **kw)


def test_backed_h5ad_matches_in_memory(tmp_path, tissue):
    p = tmp_path / "s.h5ad"
    tissue.write_h5ad(p)
    mem = _prep(tissue)
    backed = ad.read_h5ad(p, backed="r")
    lazy = prepare_slide(backed, tissue.var_names.tolist()[:30], section_key="section", spatial_key="spatial",
                         graph=GraphConfig(k=6, max_degree=12))
    assert (mem.counts != lazy.counts).nnz == 0
    assert (mem.x_nbr != lazy.x_nbr).nnz == 0
    np.testing.assert_array_equal(mem.nbr, lazy.nbr)


def test_prepared_arrays_are_sparse_and_consistent(tissue):
    d = _prep(tissue)
    n = tissue.n_obs
    assert d.counts.shape == (n, 30) and d.x_nbr.shape == (n, 30)
    # X_nbr = own counts + neighbours' counts
    i = 17
    nb = d.nbr[i][d.nbr[i] >= 0]
    np.testing.assert_allclose(d.x_nbr[i].toarray().ravel(), d.counts[[i, *nb]].toarray().sum(0))
    # graphs never cross sections
    sec = tissue.obs["section"].cat.codes.to_numpy()
    ok = d.nbr >= 0
    assert (sec[np.where(ok, d.nbr, 0)][ok] == np.repeat(sec, ok.sum(1))).all()
    # tiles are spatially compact and within one section
    assert all(len(set(sec[d.tile == t])) == 1 for t in np.unique(d.tile)[:20])


def test_replace_counts_leaves_original(tissue):
    d = _prep(tissue)
    before = d.counts.copy()
    d2 = d.replace_counts(np.array([0, 5]), np.full((2, 30), 3.0))
    assert (d.counts != before).nnz == 0
    np.testing.assert_array_equal(d2.counts[[0, 5]].toarray(), 3.0)
    np.testing.assert_array_equal(d2.counts[1].toarray(), before[1].toarray())
    with pytest.raises(ValueError, match="shape"):
        d.replace_counts(np.array([0]), np.ones((2, 30)))


def test_missing_genes_named(tissue):
    with pytest.raises(SlideError, match="trained on other genes"):
        prepare_slide(tissue, ["gene_0000", "not_a_gene"], section_key="section", spatial_key="spatial")


def test_volume_is_prepared_in_3d(small_volume):
    from napari_squint.data.graph import knn_graph, median_nn_distance

    a = small_volume
    d = prepare_slide(a, a.var_names.tolist(), section_key="section", spatial_key="spatial",
                      graph=GraphConfig(k=6, max_degree=12))
    xyz = np.asarray(a.obsm["spatial"])
    assert d.coords.shape == (a.n_obs, 3)
    nbr, _, _ = knn_graph(xyz, 6, max_degree=12)
    np.testing.assert_array_equal(d.nbr, nbr)
    assert d.scales["block"] == median_nn_distance(xyz)
    # neighbours found in 3D mostly share the cell's depth layer (type); in the projection they mix
    flat = prepare_slide(a, a.var_names.tolist(), section_key="section", spatial_key="spatial_xy",
                         graph=GraphConfig(k=6, max_degree=12))
    t = a.obs["cell_type"].astype(int).to_numpy()

    def same_type(nb):
        ok = nb >= 0
        return (t[np.maximum(nb, 0)] == t[:, None])[ok].mean()

    assert same_type(d.nbr) > same_type(flat.nbr) + 0.2


def test_constant_z_prepares_exactly_like_the_plane(tissue):
    a = tissue.copy()
    b = tissue.copy()
    b.obsm["spatial"] = np.column_stack([a.obsm["spatial"], np.full(a.n_obs, 3.0)])
    pa, pb = _prep(a), _prep(b)
    for name in ("nbr", "cond", "tile", "batch"):
        np.testing.assert_array_equal(getattr(pa, name), getattr(pb, name))
    assert pa.scales == pb.scales
    assert (pa.x_nbr != pb.x_nbr).nnz == 0
