"""Stratification: top tokens of a group, activation score, low-vs-high comparisons.

Known answers: hand-assigned tokens give exact scores; a model trained on a
tissue with a planted condition-specific niche finds it (its cells score
high, the others low).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from napari_squint import _constants as K
from napari_squint.tasks.stratify import (
    activation_score,
    compare_activation,
    neighbour_table,
    select_tokens,
    stratify,
    token_enrichment,
)


def planted_niche_tissue(*, n_cells=2000, n_genes=60, fraction=0.3, boost=30, seed=0):
    """Two sections (control, case); in the case section a disc holding ``fraction`` of its cells
    expresses the niche programme strongly (obs['planted_niche'] is redefined as that disc)."""
    from napari_squint.data.synthetic import make_tissue

    ad = make_tissue(n_cells=n_cells, n_genes=n_genes, n_sections=2, n_cell_types=6, seed=seed)
    xy = np.asarray(ad.obsm["spatial"], dtype=float)
    case = (ad.obs["condition"] == "case").to_numpy()
    centre = xy[ad.obs["planted_niche"].to_numpy()].mean(0)
    d = np.hypot(*(xy - centre).T)
    d[~case] = np.inf
    niche = d <= np.quantile(d[case], fraction)
    ad.obs["planted_niche"] = niche
    X = ad.X.toarray()
    gi = ad.var_names.get_indexer(ad.uns["synthetic"]["niche_genes"])
    X[np.ix_(niche, gi)] += np.random.default_rng(seed).poisson(boost, size=(niche.sum(), gi.size))
    ad.X = sp.csr_matrix(X)
    return ad


@pytest.fixture(scope="module")
def niche():
    """The planted-niche tissue, tokenised by a small model trained without covariates.

    Without covariates the encoder does not see section ids, so tokens cannot
    simply encode the section (here each condition is a single section).
    """
    from napari_squint.api.squint import Squint

    ad = planted_niche_tissue()
    model = Squint(ad, epochs=6, codebook_size=16, heads=1, latent=32, hidden=64, batch_size=128, seed=0,
                   use_covariates=False, device="cpu")
    model.train()
    model.tokens(ad)
    return ad, model


# ------------------------------------------------------------------ exact, hand-made tokens
def _grid(n_side=10, n_sections=2):
    """n_sections square grids of n_side^2 cells, one condition per section."""
    from anndata import AnnData

    g = np.stack(np.meshgrid(np.arange(n_side), np.arange(n_side)), -1).reshape(-1, 2).astype(float)
    xy = np.concatenate([g + 100 * s for s in range(n_sections)])
    n = xy.shape[0]
    obs = pd.DataFrame({"section": np.repeat([f"s{s}" for s in range(n_sections)], n_side**2),
                        "condition": np.repeat(["control", "case"][:n_sections], n_side**2)},
                       index=[f"c{i}" for i in range(n)])
    rng = np.random.default_rng(0)
    return AnnData(X=sp.csr_matrix(rng.poisson(3, size=(n, 12)).astype(np.float32)), obs=obs,
                   obsm={"spatial": xy})


def test_activation_score_known_values():
    tokens = np.array([1, 2, 1, 3])
    nbr = np.array([[1, 2, -1], [0, -1, -1], [0, 3, 1], [2, -1, -1]])
    s = activation_score(tokens, nbr, [1])
    # cell 0: itself + nbr 2 hold token 1 -> 2 / 3; cell 1: nbr 0 -> 1/2; cell 2: itself + 0 -> 2/4; cell 3: nbr 2 -> 1/2
    np.testing.assert_allclose(s, [2 / 3, 1 / 2, 2 / 4, 1 / 2])
    assert s.dtype == np.float32


def test_hand_tokens_block_scores_one_inside_zero_far_away():
    ad = _grid()
    xy = ad.obsm["spatial"]
    case = (ad.obs["condition"] == "case").to_numpy()
    block = case & (xy[:, 0] % 100 < 5) & (xy[:, 1] % 100 < 5)  # 25 cells in one corner of the case section
    ad.obs[K.TOKEN_KEY] = pd.Categorical(np.where(block, 7, 1))
    res = stratify(ad, condition_key="condition", group="case", top_k=1, method="enrichment", min_cells=5, k=4,
                   cell_type_key=None)
    assert res.top_tokens == [7]
    a = ad.obs[K.ACTIVATION_KEY].to_numpy()
    inner = block & (xy[:, 0] % 100 < 3) & (xy[:, 1] % 100 < 3)
    assert np.all(a[inner] == 1.0)
    far = ~block & ((xy[:, 0] % 100 > 6) | (xy[:, 1] % 100 > 6))
    assert np.all(a[far] == 0.0)
    assert a.min() >= 0 and a.max() <= 1
    # the frequency method (paper) picks the most used token of the group instead
    res_f = stratify(ad, condition_key="condition", group="case", top_k=1, method="frequency", k=4,
                     cell_type_key=None, copy=True)
    assert res_f.top_tokens == [1]
    assert K.ACTIVATION_KEY in res_f.adata.obs and res_f.adata is not ad


def test_enrichment_statistics_and_errors():
    ad = _grid()
    case = (ad.obs["condition"] == "case").to_numpy()
    tok = np.ones(ad.n_obs, dtype=int)
    tok[np.flatnonzero(case)[:30]] = 5  # only in case
    tok[np.flatnonzero(~case)[:30]] = 6  # only in control
    ad.obs[K.TOKEN_KEY] = tok
    enr = token_enrichment(ad, condition_key="condition", group="case")
    assert enr.loc[5, "n_group"] == 30 and enr.loc[5, "n_other"] == 0
    assert enr.loc[5, "log2_odds_ratio"] > 3 > 0 > enr.loc[6, "log2_odds_ratio"]
    assert enr.loc[5, "qval"] < 1e-6
    assert (enr["qval"] >= enr["pval"] - 1e-12).all()
    assert select_tokens(enr, top_k=3, method="enrichment") == [5]
    assert select_tokens(enr, top_k=2, method="frequency") == [1, 5]
    with pytest.raises(ValueError, match="method"):
        select_tokens(enr, method="magic")
    with pytest.raises(ValueError, match="group 'nope'"):
        token_enrichment(ad, condition_key="condition", group="nope")
    with pytest.raises(KeyError, match="patient"):
        token_enrichment(ad, condition_key="patient", group="case")
    ad.obs[K.TOKEN_KEY] = 1
    with pytest.raises(ValueError, match="no token is enriched"):
        stratify(ad, condition_key="condition", group="case", method="enrichment", k=4, cell_type_key=None)


def test_neighbour_table_matches_model_graph(niche):
    ad, model = niche
    nbr = neighbour_table(ad, model=model)
    np.testing.assert_array_equal(nbr, model.prepare(ad).nbr)


# ------------------------------------------------------------------ end to end, planted niche
def test_planted_niche_is_found(niche):
    from sklearn.metrics import roc_auc_score

    ad, model = niche
    before = ad.copy()
    res = stratify(ad, condition_key="condition", group="case", model=model, method="enrichment", top_k=5,
                   cell_type_key="cell_type", copy=True)
    a = res.activation
    pn = ad.obs["planted_niche"].to_numpy()
    assert roc_auc_score(pn, a) > 0.85
    assert a[pn].mean() > 0.3 > 0.2 > a[~pn].mean()
    assert (a[pn] > 0.75).mean() > 5 * max((a[~pn] > 0.75).mean(), 1e-3)
    # copy=True: the input is untouched; the copy holds the documented keys
    assert K.ACTIVATION_KEY not in ad.obs and ad.obs.equals(before.obs)
    out = res.adata
    entry = out.uns["squint"]["stratify"]
    assert entry["params"]["method"] == "enrichment" and entry["top_tokens"] == [str(t) for t in res.top_tokens]
    assert set(res.top_tokens) <= set(ad.obs[K.TOKEN_KEY].astype(int))
    # high-activation cells are enriched for the niche's dominant cell type
    comp = res.composition
    assert comp.loc["Tumour", "frac_high"] > comp.loc["Tumour", "frac_low"]


def test_low_high_de_finds_niche_genes(niche):
    ad, model = niche
    res = stratify(ad, condition_key="condition", group="case", model=model, method="enrichment",
                   cell_type_key="cell_type", de_cell_type="Tumour", copy=True)
    de = res.de
    assert {"gene", "logfoldchange", "pval_adj", "mean_low", "mean_high"} <= set(de.columns)
    assert de["pval_adj"].between(0, 1).all()
    top = de.sort_values("pval_adj").head(5)
    niche_genes = set(ad.uns["synthetic"]["niche_genes"])
    assert niche_genes & set(top["gene"]), top
    assert (de.set_index("gene").loc[list(niche_genes), "logfoldchange"] > 0).all()
    # round trip through h5ad
    from napari_squint.io.write import write_h5ad

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        write_h5ad(res.adata, Path(d) / "s.h5ad")


def test_compare_activation_errors():
    ad = _grid()
    ad.obs[K.ACTIVATION_KEY] = np.linspace(0, 1, ad.n_obs)
    ad.obs["cell_type"] = np.where(np.arange(ad.n_obs) % 2, "A", "B")
    comp, de = compare_activation(ad, cell_type_key="cell_type")
    assert de is None and set(comp.index) == {"A", "B"}
    assert comp["n_low"].sum() == (ad.obs[K.ACTIVATION_KEY] < 0.25).sum()
    with pytest.raises(ValueError, match="low < high"):
        compare_activation(ad, low=0.8, high=0.2)
    ad.obs[K.ACTIVATION_KEY] = 0.1
    with pytest.raises(ValueError, match="needs at least 2"):
        compare_activation(ad, cell_type_key="cell_type", de_cell_type="A")


def test_unknown_condition_column_named_with_the_available_ones(tissue):
    from napari_squint.data.validate import SlideError
    from napari_squint.tasks.stratify import stratify

    with pytest.raises(SlideError, match=r"'nosuchcol' not found in adata.obs \(available: \[.*'section'"):
        stratify(tissue, condition_key="nosuchcol", group="a")
