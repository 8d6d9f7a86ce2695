"""Tests for the synthetic tissue generator and section tiling."""

from __future__ import annotations

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.spatial import cKDTree
from scipy.stats import spearmanr

from napari_squint.data.synthetic import make_tissue, tile_sections
from napari_squint.data.synthetic_expression import _negative_binomial


@pytest.fixture(scope="module")
def tissue() -> anndata.AnnData:
    return make_tissue()


def _gene_sum(adata: anndata.AnnData, genes: list[str]) -> np.ndarray:
    return np.asarray(adata[:, genes].X.sum(axis=1)).ravel()


def _median_nn(xy: np.ndarray) -> float:
    dist, _ = cKDTree(xy).query(xy, k=2)
    return float(np.median(dist[:, 1]))


def test_shapes_and_dtypes(tissue):
    assert tissue.shape == (6000, 200)
    assert isinstance(tissue.X, sp.csr_matrix)
    assert tissue.X.dtype == np.int32
    assert tissue.obs_names[0] == "cell_000000" and tissue.obs_names.is_unique
    assert tissue.var_names[0] == "gene_0000" and tissue.var_names[-1] == "gene_0199"
    xy = tissue.obsm["spatial"]
    assert xy.shape == (6000, 2) and xy.dtype == np.float32
    for key in ("section", "sample", "condition", "domain", "cell_type", "niche"):
        assert isinstance(tissue.obs[key].dtype, pd.CategoricalDtype), key
    assert list(tissue.obs["section"].cat.categories) == ["section_0", "section_1", "section_2"]
    assert tissue.obs["planted_niche"].dtype == bool


def test_counts_are_nonnegative_integers_and_every_cell_has_some(tissue):
    X = tissue.X
    assert X.data.min() >= 0
    assert np.asarray(X.sum(axis=1)).min() >= 1
    assert 100 < X.sum() / X.shape[0] < 300  # mean library around 200
    as_float = make_tissue(n_cells=600, n_genes=60, dtype=np.float32).X
    assert as_float.dtype == np.float32
    np.testing.assert_array_equal(as_float.data, np.round(as_float.data))


def test_cell_types_and_domain_dependent_composition(tissue):
    types = tissue.obs["cell_type"]
    assert types.nunique() >= 10
    assert {"Tumour", "T_cell", "Macrophage", "Fibroblast"} <= set(types.cat.categories)
    assert tissue.obs["domain"].nunique() == 4
    comp = pd.crosstab(tissue.obs["domain"], types, normalize="index").to_numpy()
    total_variation = 0.5 * np.abs(comp[:, None, :] - comp[None, :, :]).sum(-1)
    assert total_variation[np.triu_indices(len(comp), 1)].min() > 0.2


def test_layout_uniform_unique_and_micrometre_like(tissue):
    xy = tissue.obsm["spatial"]
    assert len(np.unique(xy, axis=0)) == len(xy)
    assert 9.0 < _median_nn(xy) < 11.0
    # sections are laid side by side without overlapping
    x = tissue.obs.assign(x=xy[:, 0]).groupby("section", observed=True)["x"]
    ranges = x.agg(["min", "max"])
    assert (ranges["min"].to_numpy()[1:] > ranges["max"].to_numpy()[:-1]).all()


def test_same_seed_identical_different_seed_different():
    kw = dict(n_cells=900, n_genes=60)
    a, b, c = make_tissue(seed=3, **kw), make_tissue(seed=3, **kw), make_tissue(seed=4, **kw)
    assert (a.X != b.X).nnz == 0
    np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])
    pd.testing.assert_frame_equal(a.obs, b.obs)
    assert a.uns["synthetic"] == b.uns["synthetic"]
    assert (a.X != c.X).nnz > 0
    assert not np.array_equal(a.obsm["spatial"], c.obsm["spatial"])


def test_spatial_scale_scales_coordinates_and_nothing_else():
    kw = dict(n_cells=900, n_genes=60, seed=1)
    a, b = make_tissue(**kw), make_tissue(spatial_scale=2.5, **kw)
    np.testing.assert_allclose(b.obsm["spatial"], 2.5 * a.obsm["spatial"], rtol=1e-6)
    assert (a.X != b.X).nnz == 0
    pd.testing.assert_frame_equal(a.obs, b.obs)
    expected = 2.5 * _median_nn(a.obsm["spatial"])
    assert _median_nn(b.obsm["spatial"]) == pytest.approx(expected, rel=1e-4)


def test_neighbourhood_drives_the_neighbour_programme(tissue):
    syn = tissue.uns["synthetic"]
    is_t = (tissue.obs["cell_type"] == syn["neighbour_type"]).to_numpy()
    frac = np.empty(tissue.n_obs)
    for section in tissue.obs["section"].cat.categories:
        rows = np.flatnonzero(tissue.obs["section"] == section)
        _, idx = cKDTree(tissue.obsm["spatial"][rows]).query(tissue.obsm["spatial"][rows], k=11)
        frac[rows] = is_t[rows][idx[:, 1:]].mean(axis=1)
    np.testing.assert_allclose(tissue.obs["neighbour_fraction"], frac, atol=1e-6)

    library = np.asarray(tissue.X.sum(axis=1)).ravel()
    score = _gene_sum(tissue, syn["neighbour_programme_genes"]) / library
    # within a single cell type, so the cell's own identity cannot explain it
    rows = np.flatnonzero(tissue.obs["cell_type"] == "Oligodendrocyte")
    rho = spearmanr(score[rows], frac[rows])[0]
    shuffled = spearmanr(score[rows], np.random.default_rng(0).permutation(frac[rows]))[0]
    assert rho > 0.2 and rho > abs(shuffled) + 0.15
    rho_all = spearmanr(score, frac)[0]
    assert rho_all > 0.3


def test_planted_niche_only_in_last_condition_with_its_own_programme(tissue):
    syn = tissue.uns["synthetic"]
    obs = tissue.obs
    inside = obs["planted_niche"].to_numpy()
    assert inside.sum() > 30
    assert set(obs.loc[inside, "condition"]) == {"case"}
    for section, group in obs.groupby("section", observed=True):
        assert group["planted_niche"].any() == (group["condition"].iloc[0] == "case"), section

    # compact disc: the smallest circle around it holds (almost) only niche cells
    xy = tissue.obsm["spatial"]
    centre = xy[inside].mean(axis=0)
    radius = np.hypot(*(xy[inside] - centre).T).max()
    in_circle = np.hypot(*(xy - centre).T) <= radius
    assert inside[in_circle].mean() > 0.9

    # Tumour is enriched and its activation programme is silent elsewhere
    tumour = (obs["cell_type"] == syn["niche_cell_type"]).to_numpy()
    assert tumour[inside].mean() > 0.5 > 2 * tumour[~inside].mean()
    niche_expr = _gene_sum(tissue, syn["niche_genes"])
    assert niche_expr[inside].mean() > 5.0
    assert niche_expr[~inside].mean() < 0.05
    assert niche_expr[inside & tumour].mean() > 10 * max(niche_expr[~inside].mean(), 1e-3)
    assert set(syn["niche_genes"]).isdisjoint(syn["neighbour_programme_genes"])


def test_no_planted_niche_when_disabled():
    adata = make_tissue(n_cells=900, n_genes=60, planted_niche=False)
    assert not adata.obs["planted_niche"].any()
    assert (adata.obs["niche"] != "planted").all()


def test_conditions_round_robin_and_samples():
    adata = make_tissue(n_cells=800, n_genes=60, n_sections=4, conditions=("a", "b"))
    per_section = adata.obs.groupby("section", observed=True)[["condition", "sample"]].first()
    assert per_section["condition"].tolist() == ["a", "b", "a", "b"]
    assert per_section["sample"].nunique() == 4
    single = make_tissue(n_cells=600, n_genes=60, conditions=("only",))
    assert single.obs["planted_niche"].any()


def test_uns_records_parameters_and_markers(tissue):
    syn = tissue.uns["synthetic"]
    assert syn["seed"] == 0
    assert syn["params"]["n_cells"] == 6000 and syn["params"]["mean_library"] == 200.0
    assert set(syn["marker_genes"]) == set(tissue.obs["cell_type"].cat.categories)
    library = np.asarray(tissue.X.sum(axis=1)).ravel()
    for cell_type, genes in syn["marker_genes"].items():
        score = _gene_sum(tissue, genes) / library
        own = (tissue.obs["cell_type"] == cell_type).to_numpy()
        assert score[own].mean() > 5 * score[~own].mean(), cell_type


def test_h5ad_round_trip(tissue, tmp_path):
    path = tmp_path / "tissue.h5ad"
    tissue[:500].copy().write_h5ad(path)
    back = anndata.read_h5ad(path)
    assert (back.X != tissue[:500].X).nnz == 0
    assert list(back.uns["synthetic"]["niche_genes"]) == tissue.uns["synthetic"]["niche_genes"]


def test_small_and_wide_configurations():
    tiny = make_tissue(n_cells=40, n_genes=10, n_sections=2, n_cell_types=2, n_domains=1)
    assert tiny.shape == (40, 10) and tiny.obs["cell_type"].nunique() <= 2
    wide = make_tissue(n_cells=1000, n_genes=1200, n_cell_types=25)
    assert wide.shape == (1000, 1200) and sp.issparse(wide.X)
    assert wide.obs["cell_type"].nunique() > 20
    assert np.asarray(wide.X.sum(axis=1)).min() >= 1


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(n_cells=50, n_sections=3), "n_cells"),
        (dict(n_genes=20), "n_genes"),
        (dict(n_sections=0), "n_sections"),
        (dict(n_cell_types=1), "n_cell_types"),
        (dict(n_domains=0), "n_domains"),
        (dict(seed=-1), "seed"),
        (dict(conditions=()), "conditions"),
        (dict(conditions=("a", "a")), "conditions"),
        (dict(mean_library=0.0), "mean_library"),
        (dict(spatial_scale=float("nan")), "spatial_scale"),
        (dict(dtype=bool), "dtype"),
        (dict(dtype="not-a-dtype"), "dtype"),
    ],
)
def test_bad_parameters_raise_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_tissue(**kwargs)


def test_negative_binomial_sampler_matches_its_moments():
    rng = np.random.default_rng(0)
    theta = np.array([0.5, 3.0, 20.0, 0.5, 3.0, 20.0])
    mu = np.tile(np.array([0.3, 0.3, 0.3, 12.0, 12.0, 12.0], dtype=np.float32), (40000, 1))
    counts = _negative_binomial(rng, mu, theta)
    assert counts.dtype == np.int32 and counts.min() >= 0
    np.testing.assert_allclose(counts.mean(axis=0), mu[0], rtol=0.05)
    np.testing.assert_allclose(counts.var(axis=0), mu[0] + mu[0] ** 2 / theta, rtol=0.1)
    zero = np.exp(-theta * np.log1p(mu[0] / theta))
    np.testing.assert_allclose((counts == 0).mean(axis=0), zero, atol=0.01)


def test_tile_sections_replicates_sections(tissue):
    small = tissue[:1500].copy()
    tiled = tile_sections(small, 3)
    assert tiled.n_obs == 3 * small.n_obs
    assert tiled.obs_names.is_unique
    assert tiled.obs_names[0] == "cell_000000_tile0"
    sections = set(tiled.obs["section"].cat.categories)
    assert sections == {f"{s}_tile{i}" for s in small.obs["section"].unique() for i in range(3)}
    assert isinstance(tiled.X, sp.csr_matrix)
    assert (tiled.X != sp.vstack([small.X] * 3)).nnz == 0
    pd.testing.assert_series_equal(
        tiled.obs["cell_type"].iloc[: small.n_obs].reset_index(drop=True),
        small.obs["cell_type"].reset_index(drop=True),
    )
    x = tiled.obsm["spatial"][:, 0].reshape(3, -1)
    assert (x[1:].min(axis=1) > x[:-1].max(axis=1)).all()  # copies do not overlap
    np.testing.assert_allclose(tiled.obsm["spatial"][: small.n_obs], small.obsm["spatial"])
    assert small.n_obs == 1500 and "_tile" not in small.obs["section"].iloc[0]  # input untouched


def test_tile_sections_gap_missing_section_and_errors():
    adata = anndata.AnnData(
        X=sp.csr_matrix(np.eye(4, dtype=np.float32)),
        obsm={"spatial": np.array([[0, 0], [1, 0], [0, 1], [2, 1]], dtype=np.float32)},
    )
    tiled = tile_sections(adata, 2, gap=3.0)
    np.testing.assert_allclose(tiled.obsm["spatial"][4:, 0], adata.obsm["spatial"][:, 0] + 5.0)
    assert list(tiled.obs["section"].cat.categories) == ["section_tile0", "section_tile1"]
    assert tile_sections(adata, 1).n_obs == 4
    with pytest.raises(ValueError, match="n_copies"):
        tile_sections(adata, 0)
    with pytest.raises(ValueError, match="gap"):
        tile_sections(adata, 2, gap=-1.0)


@pytest.mark.slow
def test_large_generation_stays_sparse():
    adata = make_tissue(n_cells=200_000, n_genes=500)
    assert isinstance(adata.X, sp.csr_matrix)
    assert adata.X.shape == (200_000, 500)
    assert adata.X.nnz < 0.6 * 200_000 * 500
    assert np.asarray(adata.X.sum(axis=1)).min() >= 1


def test_tile_sections_keeps_obsm_data_frames_aligned(tissue):
    a = tissue.copy()
    a.obsm["xyz"] = pd.DataFrame({"x": np.arange(a.n_obs), "z": 1.0}, index=a.obs_names)
    t = tile_sections(a, 3)
    assert t.n_obs == 3 * a.n_obs
    assert (t.obsm["xyz"].index == t.obs_names).all()
    np.testing.assert_array_equal(t.obsm["xyz"]["x"].to_numpy(), np.tile(np.arange(a.n_obs), 3))
