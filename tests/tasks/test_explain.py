"""Token interpretation: composition, markers, programme dot-plot table, co-occurrence across levels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

from napari_squint import _constants as K
from napari_squint.tasks.explain import explain_tokens, programme_table, token_cooccurrence, token_labels


@pytest.fixture(scope="module")
def typed(tissue):
    """The tiny tissue whose 'tokens' are its cell types (a perfect tokeniser), one token with 1 cell."""
    ad = tissue.copy()
    codes = ad.obs["cell_type"].cat.codes.to_numpy().astype(int)
    codes[0] = 99  # a singleton token: no marker test possible
    ad.obs[K.TOKEN_KEY] = pd.Categorical(codes)
    return ad


def test_explain_tokens_composition_and_markers(typed):
    ad = typed
    res = explain_tokens(ad, condition_key="condition", cell_type_key="cell_type", n_markers=5, copy=True)
    s = res.summary
    assert s["n_cells"].sum() == ad.n_obs and s["n_cells"].is_monotonic_decreasing
    np.testing.assert_allclose(s["fraction"].sum(), 1.0)
    # tokens are cell types: every token (but the singleton) is pure
    assert (s.drop(index=99)["top_cell_type_fraction"] == 1.0).all()
    assert res.too_small == [99] and 99 not in set(res.markers["token"])
    names = list(ad.obs["cell_type"].cat.categories)
    markers = ad.uns["synthetic"]["marker_genes"]
    hits = 0
    for t in s.index.drop(99):
        top = set(res.markers.loc[res.markers["token"] == t, "gene"])
        hits += bool(top & set(markers[names[t]]))
    assert hits >= len(s) - 2  # the planted marker genes come out for (nearly) every type
    assert res.markers["pval_adj"].between(0, 1).all()
    # composition tables
    assert res.sections.to_numpy().sum() == ad.n_obs
    assert set(res.conditions.columns) == {"control", "case"}
    np.testing.assert_allclose(res.composition("cell_types").sum(1), 1.0)
    # mean expression equals a direct computation
    import scanpy as sc

    tmp = AnnData(X=ad.X.astype(np.float32).copy())
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    t0 = s.index[0]
    sel = ad.obs[K.TOKEN_KEY].to_numpy().astype(int) == t0
    np.testing.assert_allclose(res.mean_expression.loc[t0].to_numpy(), np.asarray(tmp.X[sel].mean(0)).ravel(),
                               rtol=1e-5, atol=1e-6)
    assert "explain" not in ad.uns.get("squint", {})  # copy=True


def test_programme_table_fractions_and_means(typed):
    ad = typed
    genes = list(ad.var_names[:4])
    tab = programme_table(ad, genes)
    assert list(tab.columns) == ["token", "gene", "fraction", "mean", "n_cells"]
    t0 = tab["token"].iloc[0]
    sel = ad.obs[K.TOKEN_KEY].to_numpy().astype(int) == t0
    X = ad.X.toarray()
    np.testing.assert_allclose(tab.loc[tab["token"] == t0, "fraction"].to_numpy(), (X[sel][:, :4] > 0).mean(0))
    assert tab["fraction"].between(0, 1).all() and (tab["mean"] >= 0).all()
    assert ad.uns["squint"]["programme"]["params"]["genes"] == genes
    # restricted to a subset of cells, and a missing gene is named
    macs = (ad.obs["cell_type"] == "Macrophage").to_numpy()
    sub = programme_table(ad, genes, cells=macs)
    assert sub.groupby("token")["n_cells"].first().sum() == macs.sum()
    with pytest.raises(KeyError, match="NotAGene"):
        programme_table(ad, ["NotAGene"])


def test_cooccurrence_known_correlations():
    # 4 levels; token 1 and 2 rise with depth together, token 3 falls, token 4 is constant
    rows = []
    counts = {1: [10, 20, 30, 40], 2: [5, 10, 15, 20], 3: [55, 40, 25, 10], 4: [10, 10, 10, 10]}  # 80 per level
    for lev in range(4):
        for t, c in counts.items():
            rows += [(lev * 50.0, t)] * c[lev]
    z, tok = map(np.array, zip(*rows))
    ad = AnnData(X=sp.csr_matrix((z.size, 3), dtype=np.float32),
                 obs=pd.DataFrame({"z": z, K.TOKEN_KEY: tok}, index=[f"c{i}" for i in range(z.size)]))
    res = token_cooccurrence(ad, level_key="z", top_n=10)
    assert list(res.usage.index) == [0.0, 50.0, 100.0, 150.0]
    np.testing.assert_allclose(res.usage.sum(1), 1.0)
    c = res.correlation
    assert c.loc[1, 2] > 0.9 and c.loc[1, 3] < -0.9 and c.loc[4, 1] == 0.0
    np.testing.assert_allclose(np.diag(c), 1.0)
    assert sorted(res.order) == [1, 2, 3, 4]
    pos = {t: i for i, t in enumerate(res.order)}
    assert abs(pos[1] - pos[2]) == 1  # the co-varying pair are dendrogram neighbours
    assert res.linkage.shape == (3, 4)
    assert "cooccurrence" in ad.uns["squint"]
    with pytest.raises(ValueError, match="at least 2"):
        token_cooccurrence(ad[ad.obs["z"] == 0].copy(), level_key="z")


def test_token_labels_errors(typed):
    with pytest.raises(KeyError, match="no_tokens"):
        token_labels(typed, "no_tokens")
    ad = typed.copy()
    ad.obs["lab"] = np.where(np.arange(ad.n_obs) % 2, "a", "b")
    assert token_labels(ad, "lab").dtype.kind == "U"
