"""In-painting: AnnData in and out, infill rings, no leak of the targets' counts, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from napari_squint.data.validate import SlideError
from napari_squint.tasks.impute import Imputer, impute


@pytest.fixture(scope="module")
def imputer(tiny_model, small_tissue):
    return Imputer(tiny_model, small_tissue)


@pytest.fixture(scope="module")
def region(small_tissue, make_disc):
    return make_disc(small_tissue, "section_1", 80, name="hole")


def test_output_layout(imputer, region, small_tissue, tiny_model):
    out = imputer.impute(regions=[region])
    from napari_squint.io.geojson import cells_in_regions

    inside = cells_in_regions(small_tissue, [region], section_key="section")
    assert out.n_obs == inside.sum() == 80
    assert list(out.obs_names) == list(small_tissue.obs_names[inside])
    assert list(out.var_names) == list(tiny_model.genes)
    for layer in ("imputed", "imputed_nbr"):
        assert out.layers[layer].shape == (80, len(tiny_model.genes))
        assert np.isfinite(out.layers[layer]).all() and (out.layers[layer] >= 0).all()
    assert (out.obs["section"] == "section_1").all()
    assert np.allclose(out.obsm["spatial"], np.asarray(small_tissue.obsm["spatial"])[inside])
    assert out.obs["squint_token"].dtype.name == "category"
    assert not out.obs["squint_created"].any()
    assert (out.obs["squint_region"] == "hole").all()
    assert (out.obs["squint_ring"] == 0).all()  # the default (context) method has no rings
    # X holds the measured counts of the model genes
    assert np.allclose(out.X.toarray(), small_tissue[inside, tiny_model.genes].X.toarray())
    # a target's library is the median library of the observed cells of its section (expected counts add up
    # to it; the default log-space estimate stays below it, Jensen)
    lib = np.asarray(small_tissue.X.sum(1)).ravel()
    obs = (small_tissue.obs["section"] == "section_1").to_numpy() & ~inside
    expected = imputer.impute(regions=[region], draw="mean")
    assert np.allclose(expected.layers["imputed"].sum(1), np.median(lib[obs]), rtol=1e-4)
    assert (out.layers["imputed"].sum(1) < np.median(lib[obs])).all()
    # the microenvironment is larger than the cell
    assert (out.layers["imputed_nbr"].sum(1) > out.layers["imputed"].sum(1)).all()
    params = out.uns["squint"]["impute"]["params"]
    assert params["method"] == "context" and params["key_added"] == "imputed" and params["draw"] == "logmean"


def test_mask_equals_regions_and_function_equals_class(imputer, region, tiny_model, small_tissue):
    a = imputer.impute(regions=[region], method="oneshot")
    from napari_squint.io.geojson import cells_in_regions

    mask = cells_in_regions(small_tissue, [region], section_key="section")
    b = imputer.impute(mask=mask, method="oneshot")
    c = impute(tiny_model, small_tissue, regions=[region], method="oneshot")
    for other in (b, c):
        assert np.allclose(a.layers["imputed"], other.layers["imputed"])
        assert np.allclose(a.layers["imputed_nbr"], other.layers["imputed_nbr"])


def test_targets_counts_are_never_read(tiny_model, small_tissue, region):
    """Scrambling the counts of the cells inside the polygon changes nothing in the imputation."""
    from napari_squint.io.geojson import cells_in_regions

    inside = cells_in_regions(small_tissue, [region], section_key="section")
    scrambled = small_tissue.copy()
    X = scrambled.X.toarray()
    X[inside] = np.random.default_rng(0).poisson(30, size=(int(inside.sum()), X.shape[1]))
    scrambled.X = sp.csr_matrix(X)
    for method in ("infill", "oneshot"):
        for nbr_mode in ("decoder", "sum"):
            a = impute(tiny_model, small_tissue, regions=[region], method=method, nbr_mode=nbr_mode)
            b = impute(tiny_model, scrambled, regions=[region], method=method, nbr_mode=nbr_mode)
            assert np.allclose(a.layers["imputed"], b.layers["imputed"])
            assert np.allclose(a.layers["imputed_nbr"], b.layers["imputed_nbr"])
            assert (a.obs["squint_token"].to_numpy() == b.obs["squint_token"].to_numpy()).all()


def test_infill_rings_follow_the_graph(imputer, region):
    out = imputer.impute(regions=[region], method="infill")
    d = imputer.data
    idx = d.obs_names.get_indexer(out.obs_names)
    ring = dict(zip(idx, out.obs["squint_ring"].to_numpy()))
    for cell, r in ring.items():
        nb = d.nbr[cell][d.nbr[cell] >= 0]
        nb_rings = [ring.get(j, 0) for j in nb]  # 0 = observed
        assert min(nb_rings) == r - 1  # a neighbour one ring closer to the measured cells
    assert out.obs["squint_ring"].max() >= 3


def test_infill_first_ring_equals_oneshot(imputer, region):
    inf = imputer.impute(regions=[region], method="infill")
    one = imputer.impute(regions=[region], method="oneshot")
    r1 = (inf.obs["squint_ring"] == 1).to_numpy()
    assert np.allclose(inf.layers["imputed"][r1], one.layers["imputed"][r1], rtol=1e-5, atol=1e-6)
    assert (one.obs["squint_ring"] == 0).all()


class NeighbourMeanModel:
    """A stand-in model whose imputation is the mean input of a cell's *unmasked* neighbours.

    It makes the infill mechanics visible whatever a tiny trained model learned:
    a cell with no unmasked neighbour gets zeros.
    """

    def __init__(self, model):
        self._model = model
        self.genes, self.config = model.genes, model.config
        self.section_key, self.spatial_key = model.section_key, model.spatial_key

    def __getattr__(self, name):  # capabilities, graph_config, prepare: the wrapped model's
        return getattr(self._model, name)

    def imputation_engine(self, data, section_labels):
        from napari_squint.api.squint_impute import SquintImputeEngine

        return SquintImputeEngine(self, data, section_labels)

    def impute_cells(self, data, masked, *, cells=None, library=None, draw="mean", seed=0):
        x = np.expm1(data.x_in.toarray())
        out = np.zeros((len(cells), data.n_genes))
        seen = np.zeros(len(cells), dtype=np.int64)
        for i, c in enumerate(cells):
            nb = data.nbr[c][data.nbr[c] >= 0]
            nb = nb[~masked[nb]]
            seen[i] = nb.size
            if nb.size:
                out[i] = x[nb].mean(0)
        return {"imputed": out, "imputed_nbr": out, "tokens": seen, "codes": seen[:, None], "latent": out,
                "cells": np.asarray(cells)}


def test_infill_propagates_imputed_rings_inwards(tiny_model, small_tissue, region):
    imp = Imputer(NeighbourMeanModel(tiny_model), small_tissue)
    inf = imp.impute(regions=[region], method="infill", nbr_mode="decoder", draw="mean")
    one = imp.impute(regions=[region], method="oneshot", nbr_mode="decoder", draw="mean")
    ring = inf.obs["squint_ring"].to_numpy()
    filled = inf.layers["imputed"].sum(1) > 0
    assert filled.all()  # every ring saw imputed (unmasked) neighbours
    assert (inf.obs["squint_token"].astype(int).to_numpy() > 0).all()
    # one-shot: only ring-1 cells have an unmasked neighbour; deeper cells see mask tokens only
    assert ((one.layers["imputed"].sum(1) > 0) == (ring == 1)).all()


def test_nbr_sum_uses_measured_neighbours(imputer, region, small_tissue):
    out = imputer.impute(regions=[region], nbr_mode="sum", draw="mean")  # logmean: see the test at the end
    from napari_squint.metrics import nbr_profile

    d = imputer.data
    held = np.zeros(d.n_cells, dtype=bool)
    idx = d.obs_names.get_indexer(out.obs_names)
    held[idx] = True
    est = np.zeros((d.n_cells, d.n_genes))
    est[idx] = out.layers["imputed"]
    expect = nbr_profile(d.counts, est, held, d.nbr, idx)
    assert np.allclose(out.layers["imputed_nbr"], expect, rtol=1e-4)


def test_key_added(imputer, region):
    out = imputer.impute(regions=[region], key_added="sq")
    assert set(out.layers) == {"sq", "sq_nbr"}


def test_errors(imputer, tiny_model, small_tissue, region):
    from shapely.geometry import Polygon

    from napari_squint.io.geojson import Region

    with pytest.raises(SlideError, match="exactly one"):
        imputer.impute()
    with pytest.raises(SlideError, match="exactly one"):
        imputer.impute(regions=[region], mask=np.zeros(small_tissue.n_obs, bool))
    with pytest.raises(SlideError, match="not in the slide"):
        imputer.impute(regions=[Region("section_9", region.polygon, "x")])
    bowtie = Polygon([(0, 0), (100, 100), (100, 0), (0, 100)])
    with pytest.raises(SlideError, match="self-intersecting"):
        imputer.impute(regions=[Region("section_0", bowtie, "bow")])
    far = Polygon([(1e6, 1e6), (1e6 + 10, 1e6), (1e6, 1e6 + 10)])
    with pytest.raises(SlideError, match="far outside"):
        imputer.impute(regions=[Region("section_0", far, "far")])
    with pytest.raises(SlideError, match="shape"):
        imputer.impute(mask=np.zeros(3, bool))
    with pytest.raises(SlideError, match="no cell lies inside"):
        imputer.impute(mask=np.zeros(small_tissue.n_obs, bool))
    with pytest.raises(ValueError, match="method"):
        imputer.impute(regions=[region], method="magic")
    other = small_tissue.copy()
    other.var_names = [f"other_{i}" for i in range(other.n_vars)]
    with pytest.raises(SlideError, match="trained on other genes"):
        Imputer(tiny_model, other)


def test_sampled_substitution_is_seeded(imputer, region):
    from napari_squint.io.geojson import cells_in_regions

    targets = np.flatnonzero(cells_in_regions(imputer.adata, [region], section_key="section"))
    a = imputer.impute_targets(targets, substitute="sample", seed=1)
    b = imputer.impute_targets(targets, substitute="sample", seed=1)
    assert np.array_equal(a["imputed"], b["imputed"])
    with pytest.raises(ValueError, match="substitute"):
        imputer.impute_targets(targets, substitute="median")


def test_draw_sample_gives_seeded_generated_counts(imputer, region):
    mean = imputer.impute(regions=[region])
    a = imputer.impute(regions=[region], draw="sample", seed=4)
    b = imputer.impute(regions=[region], draw="sample", seed=4)
    np.testing.assert_array_equal(a.layers["imputed"], b.layers["imputed"])
    assert np.all(a.layers["imputed"] == np.round(a.layers["imputed"]))
    assert not np.allclose(a.layers["imputed"], mean.layers["imputed"])
    assert a.uns["squint"]["impute"]["params"]["draw"] == "sample"
    with pytest.raises(ValueError, match="draw"):
        imputer.impute(regions=[region], draw="mode")


def test_context_reads_each_targets_nearest_observed_cells(tiny_model, small_tissue, region):
    from scipy.spatial import cKDTree

    imp = Imputer(NeighbourMeanModel(tiny_model), small_tissue)
    out = imp.impute(regions=[region], method="context", nbr_mode="decoder", draw="mean")
    one = imp.impute(regions=[region], method="oneshot", nbr_mode="decoder", draw="mean")
    d = imp.data
    targets = np.flatnonzero(np.isin(d.obs_names.astype(str), out.obs_names))
    # every target, however deep, sees only observed cells: its k nearest ones of its section
    assert (out.obs["squint_token"].astype(int).to_numpy() == tiny_model.config.graph.k).all()
    assert (one.obs["squint_token"].astype(int).to_numpy() == 0).any()  # the graph leaves deep cells blind
    sec = small_tissue.obs["section"].astype(str).to_numpy()
    pool = np.flatnonzero((sec == "section_1") & ~np.isin(np.arange(d.n_cells), targets))
    _, nn = cKDTree(d.coords[pool]).query(d.coords[targets], k=tiny_model.config.graph.k)
    expected = np.expm1(d.x_in.toarray())[pool[nn]].mean(1)
    order = np.argsort(targets)
    np.testing.assert_allclose(out.layers["imputed"], expected[order], rtol=1e-5, atol=1e-5)
    assert out.obs["squint_ring"].eq(0).all()
    # microenvironments (Σ) still follow the slide's graph, whatever context the model read
    from napari_squint.metrics import nbr_profile

    ctx = imp.impute(regions=[region], method="context", nbr_mode="sum", draw="mean")
    idx = d.obs_names.get_indexer(ctx.obs_names)
    held = np.zeros(d.n_cells, dtype=bool)
    held[idx] = True
    est = np.zeros((d.n_cells, d.n_genes))
    est[idx] = ctx.layers["imputed"]
    np.testing.assert_allclose(ctx.layers["imputed_nbr"], nbr_profile(d.counts, est, held, d.nbr, idx), rtol=1e-4)


def test_logmean_is_the_log_space_estimate_of_the_same_prediction(imputer, region, small_tissue):
    from napari_squint.metrics import nbr_profile

    mean = imputer.impute(regions=[region], draw="mean", nbr_mode="sum")
    lm = imputer.impute(regions=[region], draw="logmean", nbr_mode="sum", residual=False)
    again = imputer.impute(regions=[region], draw="logmean", nbr_mode="sum", residual=False)
    np.testing.assert_array_equal(lm.layers["imputed"], again.layers["imputed"])  # deterministic
    assert list(lm.obs["squint_token"]) == list(mean.obs["squint_token"])  # same tokens as the mean
    x, x_mean = lm.layers["imputed"], mean.layers["imputed"]
    # Jensen: expm1(E[log1p(sY)]) / s <= E[Y], strictly for every expressed gene
    assert np.all(x <= x_mean + 1e-9)
    assert np.all(x[x_mean > 0.05] < x_mean[x_mean > 0.05])
    assert np.all(x >= 0)
    # microenvironments hold the measured counts of their observed members, plus a non-negative estimate
    d = imputer.data
    idx = d.obs_names.get_indexer(lm.obs_names)
    held = np.zeros(d.n_cells, dtype=bool)
    held[idx] = True
    measured_part = nbr_profile(d.counts, np.zeros((idx.size, d.n_genes)), held, d.nbr, idx)
    assert np.all(lm.layers["imputed_nbr"] >= measured_part - 1e-9)
    assert (lm.layers["imputed_nbr"] > measured_part + 1e-6).any()
    assert lm.uns["squint"]["impute"]["params"]["draw"] == "logmean"


def test_located_regions_are_reused_and_give_the_same_result(imputer, region, monkeypatch):
    """A widget locates a polygon's cells once and passes them on: the Imputer does not locate them again."""
    located = imputer.locate([region])
    assert located.mask.sum() > 0 and located.names == [region.name]
    ref = imputer.impute(regions=[region], draw="mean")

    def no_second_look(*args, **kwargs):
        raise AssertionError("cells located twice")

    monkeypatch.setattr(imputer, "locate", no_second_look)
    out = imputer.impute(located=located, draw="mean")
    np.testing.assert_allclose(out.layers["imputed"], ref.layers["imputed"])
    with pytest.raises(SlideError, match="exactly one"):
        imputer.impute(located=located, mask=located.mask)


def test_options_are_checked_against_what_the_model_offers(imputer):
    from napari_squint.tasks.impute import resolve_options

    opts = resolve_options(imputer.model)
    assert opts["method"] == imputer.model.default_method and opts["draw"] == imputer.model.default_draw
    assert opts["residual"] is True  # SQuINT with its default draw, logmean
    with pytest.raises(ValueError, match="method='nope': SQuINT offers"):
        resolve_options(imputer.model, method="nope")
