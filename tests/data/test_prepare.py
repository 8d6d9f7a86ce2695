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
