"""3D stacks: held-out cells per level, per-level report with globally ranked gene groups, 3D graph."""

from __future__ import annotations

import numpy as np
import pytest

from napari_squint import _constants as K
from napari_squint.tasks.stack import (
    group_labels,
    holdout_per_level,
    stack_imputation,
    write_stack_result,
    z_levels,
)

TINY = dict(epochs=2, codebook_size=8, heads=1, latent=16, hidden=32, batch_size=256, seed=0, device="cpu")


@pytest.fixture(scope="module")
def stack():
    """Three synthetic sections laid on top of each other, 50 units apart."""
    from napari_squint.data.synthetic import make_tissue

    ad = make_tissue(n_cells=1500, n_genes=30, n_sections=3, n_cell_types=5, seed=2)
    xy = np.asarray(ad.obsm["spatial"], dtype=float).copy()
    sec = ad.obs["section"].cat.codes.to_numpy()
    for s in range(3):
        xy[sec == s] -= xy[sec == s].mean(0)
    ad.obsm["spatial"] = xy
    ad.obs["z"] = sec * 50.0
    ad.obsm["spatial_3d"] = np.column_stack([xy, ad.obs["z"].to_numpy()])
    return ad


@pytest.fixture(scope="module")
def result(stack):
    return stack_imputation(stack, z_key="z", graphs=("section", "3d"), gene_groups=(5, 10, None), **TINY)


def test_one_row_per_level_and_heldout_counts(stack, result):
    levels = sorted(stack.obs["z"].unique())
    assert result.levels == levels
    for rep in result.reports.values():
        for tab in (rep.x, rep.x_nbr):
            assert list(tab.index) == levels
            assert list(tab.columns) == ["top 5", "top 10", "all 30"]
            assert np.isfinite(tab.to_numpy()).all() and (np.abs(tab.to_numpy()) <= 1).all()
        per_level = stack.obs["z"].value_counts().sort_index()
        np.testing.assert_array_equal(rep.n_heldout.to_numpy(), np.round(0.1 * per_level.to_numpy()).astype(int))
    assert result.heldout.sum() == sum(result.reports["section"].n_heldout)


def test_heldout_cells_never_trained(stack, result):
    held = set(stack.obs_names[result.heldout])
    for rep in result.reports.values():
        assert not held & set(rep.model.data.obs_names)
        assert rep.model.data.n_cells == stack.n_obs - len(held)


def test_genes_ranked_globally_and_groups_use_them(result):
    for rep in result.reports.values():
        g = rep.genes
        for pc, rank in (("pc_x", "rank_x"), ("pc_nbr", "rank_nbr")):
            assert sorted(g[rank]) == list(range(1, len(g) + 1))
            ordered = g.sort_values(rank)[pc].to_numpy()
            finite = ordered[np.isfinite(ordered)]
            assert np.all(np.diff(finite) <= 1e-12)  # best first
            assert np.isfinite(ordered[: finite.size]).all()  # undefined correlations rank last
        top5 = g.index[g["rank_x"] <= 5]
        expect = rep.per_gene_x[top5].mean(1, skipna=True)
        np.testing.assert_allclose(rep.x["top 5"].to_numpy(), expect.to_numpy())
        top10 = g.index[g["rank_nbr"] <= 10]
        np.testing.assert_allclose(rep.x_nbr["top 10"].to_numpy(), rep.per_gene_nbr[top10].mean(1).to_numpy())


def test_3d_graph_links_levels(result):
    s, d = result.reports["section"].graph_stats, result.reports["3d"].graph_stats
    assert s["cross_level_edges"] == 0.0
    assert 0.1 < d["cross_level_edges"] < 0.9
    assert d["z_scale"] > 0
    comp = result.comparison()
    assert set(comp["graph"]) == {"section", "3d"} and set(comp["space"]) == {"X", "X_nbr"}
    assert set(comp["method"]) == {"squint", "knn_average"}


def test_baseline_tables(result):
    for rep in result.reports.values():
        for tab in (rep.baseline_x, rep.baseline_x_nbr):
            assert tab.shape == rep.x.shape and list(tab.index) == list(rep.x.index)
            assert np.isfinite(tab.to_numpy()).all()
        # the baseline microenvironment holds the true neighbours' counts: it tracks X_nbr closely
        assert rep.baseline_x_nbr["all 30"].mean() > rep.baseline_x["all 30"].mean()


def test_holdout_reproducible_and_z_sources(stack):
    z = z_levels(stack, "z")
    np.testing.assert_array_equal(z, z_levels(stack, "spatial_3d"))
    a = holdout_per_level(z, 0.1, seed=1)
    np.testing.assert_array_equal(a, holdout_per_level(z, 0.1, seed=1))
    assert (a != holdout_per_level(z, 0.1, seed=2)).any()
    with pytest.raises(KeyError, match="nope"):
        z_levels(stack, "nope")
    with pytest.raises(ValueError, match="fraction"):
        holdout_per_level(z, 1.5)
    assert group_labels([10, 20, 50, None], 30) == [("top 10", 10), ("top 20", 20), ("all 30", 30)]


def test_template_settings_reused_and_errors(stack):
    from napari_squint.api.squint import Squint

    tmpl = Squint(stack, genes=list(stack.var_names[:12]), section_key="section", **TINY)
    res = stack_imputation(stack, z_key="z", template=tmpl, epochs=1, gene_groups=(5, None))
    rep = res.reports["section"]
    assert list(rep.model.genes) == list(stack.var_names[:12])
    assert rep.model.config.model.latent == 16 and rep.model.config.train.epochs == 1
    assert tmpl.config.train.epochs == 2  # the template is not modified
    assert list(rep.x.columns) == ["top 5", "all 12"]
    with pytest.raises(ValueError, match="single level"):
        stack_imputation(stack[stack.obs["z"] == 0].copy(), z_key="z", **TINY)
    with pytest.raises(ValueError, match="graphs"):
        stack_imputation(stack, z_key="z", graphs=("4d",), **TINY)


def test_write_stack_result(stack, result, tmp_path):
    from napari_squint.io.write import write_h5ad

    out = write_stack_result(stack, result, copy=True)
    assert K.HELDOUT_KEY not in stack.obs
    assert out.obs[K.HELDOUT_KEY].sum() == result.heldout.sum()
    summ = out.uns["squint"]["stack"]["summary"]
    assert len(summ) == 2 * 2 * 2 * 3 * 3  # graphs x methods x spaces x levels x groups
    assert set(summ["method"]) == {"squint", "knn_average"}
    write_h5ad(out, tmp_path / "stack.h5ad")
