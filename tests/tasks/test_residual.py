"""Local residual correction: the pieces on known answers, and the correction inside the Imputer."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse as sp

from napari_squint.metrics import log_normalise
from napari_squint.tasks.impute import Imputer
from napari_squint.api.squint_residual import clean_cells, microenvironment_residuals


def test_clean_cells_on_a_chain():
    # chain 0-1-2-3-4; target 2: 1 and 3 touch it, 0 and 4 are clean, 2 itself is not
    nbr = np.array([[1, -1], [0, 2], [1, 3], [2, 4], [3, -1]])
    targets = np.array([False, False, True, False, False])
    assert clean_cells(nbr, targets).tolist() == [True, False, False, False, True]
    assert clean_cells(nbr, np.zeros(5, dtype=bool)).all()


def test_residuals_do_not_depend_on_the_targets(tiny_model, small_tissue):
    """A clean cell's residual is the same whether or not the targets are masked (one GraphSAGE hop)."""
    imp = Imputer(tiny_model, small_tissue)
    d = imp.data
    targets = np.zeros(d.n_cells, dtype=bool)
    targets[np.arange(0, 200)] = True
    cells = np.flatnonzero(clean_cells(d.nbr, targets))[:300]
    r = microenvironment_residuals(tiny_model, d, cells)
    assert r.shape == (cells.size, d.n_genes) and np.isfinite(r).all()
    enc = tiny_model.encode(d, masked=targets, cells=cells, decode=True)
    enc0 = tiny_model.encode(d, cells=cells, decode=True)
    np.testing.assert_allclose(enc["probs"], enc0["probs"], rtol=1e-5, atol=1e-7)
    # the residual is measured minus expected on the log-normalised scale: zero where the model is exact
    measured = d.x_nbr[cells]
    assert np.abs(r).mean() < np.abs(log_normalise(measured)).mean()


@pytest.fixture(scope="module")
def imputer(tiny_model, small_tissue):
    return Imputer(tiny_model, small_tissue)


def test_correction_carries_a_regional_shift_into_the_polygon(tiny_model, small_tissue, make_disc):
    """Quadruple gene 0 in every cell of the section after training: the corrected imputation of a polygon
    follows (up on gene 0); the model alone cannot see it."""
    region = make_disc(small_tissue, "section_1", 60, name="hole")
    shifted = small_tissue.copy()
    X = shifted.X.toarray().astype(np.float64)
    sec = (shifted.obs["section"] == "section_1").to_numpy()
    X[sec, 0] *= 4.0
    shifted.X = sp.csr_matrix(X)
    base = Imputer(tiny_model, small_tissue).impute(regions=[region])
    moved = Imputer(tiny_model, shifted).impute(regions=[region])
    alone = Imputer(tiny_model, shifted).impute(regions=[region], residual=False)
    g0 = tiny_model.genes.index(small_tissue.var_names[0])
    y = {k: log_normalise(v.layers["imputed"]) for k, v in (("base", base), ("moved", moved), ("alone", alone))}
    up = (y["moved"][:, g0] - y["base"][:, g0]).mean()
    assert up > 0.5  # the correction follows the regional change (log 4 = 1.39 minus renormalisation)
    assert abs((y["alone"][:, g0] - y["base"][:, g0]).mean()) < up / 2
    assert moved.uns["squint"]["impute"]["params"]["residual"] is True
    assert alone.uns["squint"]["impute"]["params"]["residual"] is False


def test_residuals_are_computed_once_and_cached(imputer, small_tissue, make_disc):
    region = make_disc(small_tissue, "section_0", 50, name="a")
    a = imputer.impute(regions=[region])
    assert imputer.engine._resid_done.sum() > 0
    done = imputer.engine._resid_done.copy()
    b = imputer.impute(regions=[region])
    np.testing.assert_array_equal(a.layers["imputed"], b.layers["imputed"])
    np.testing.assert_array_equal(done, imputer.engine._resid_done)  # nothing recomputed


def test_residual_needs_squint_logmean(imputer, small_tissue, make_disc):
    region = make_disc(small_tissue, "section_0", 30, name="a")
    with pytest.raises(ValueError, match="residual=True needs"):
        imputer.impute(regions=[region], draw="mean", residual=True)
    out = imputer.impute(regions=[region], draw="mean")  # default: off for expected counts
    assert out.uns["squint"]["impute"]["params"]["residual"] is False


def test_residual_weight_scales_the_correction_in_log_space(tiny_model, small_tissue):
    """residual_weight=0 is the model alone; 0.5 puts the cell profile half-way in log-normalised space."""
    model = copy.deepcopy(tiny_model)
    imp = Imputer(model, small_tissue)
    targets = np.flatnonzero(imp.section_labels == "section_1")[:60]
    depth = imp.target_set(targets).depth[:, None]  # the frame of the log-space estimate and its correction

    def y(**kw):
        out = imp.impute_targets(targets, method="context", draw="logmean", nbr_mode="sum", **kw)["imputed"]
        return np.log1p(out * 1e4 / depth)

    full, alone = y(), y(residual=False)
    model.config.update(residual_weight=0.0)
    np.testing.assert_allclose(y(), alone, rtol=1e-9, atol=1e-9)
    model.config.update(residual_weight=0.5)
    half = y()
    inside = (full > 0) & (alone > 0) & (half > 0)  # the floor at zero counts aside
    assert inside.mean() > 0.5
    np.testing.assert_allclose(half[inside], ((full + alone) / 2)[inside], atol=1e-6)


def test_widen_spread_is_a_per_gene_affine_map():
    from napari_squint.api.squint_impute import widen_spread

    rng = np.random.default_rng(0)
    lib = rng.uniform(200, 400, size=50)
    counts = rng.gamma(2.0, 3.0, size=(50, 6)) + 5.0  # well above zero: the floor is never reached
    assert widen_spread(counts, lib, 1.0) is counts
    y0 = np.log1p(counts * 1e4 / lib[:, None])
    y1 = np.log1p(widen_spread(counts, lib, 1.5) * 1e4 / lib[:, None])
    np.testing.assert_allclose(y1.mean(0), y0.mean(0), rtol=1e-9)
    np.testing.assert_allclose(y1.std(0), 1.5 * y0.std(0), rtol=1e-9)
    for g in range(6):
        assert np.corrcoef(y0[:, g], y1[:, g])[0, 1] == pytest.approx(1.0)
    # a weight of zero leaves a row as it is (measured members of a microenvironment)
    w = np.zeros(50)
    w[:25] = 1.0
    y2 = np.log1p(widen_spread(counts, lib, 1.5, weight=w) * 1e4 / lib[:, None])
    np.testing.assert_allclose(y2[25:], y0[25:], rtol=1e-9)


def test_a_target_set_imputed_again_reuses_the_models_pass(tiny_model, small_tissue):
    """Output settings changed between two calls on one TargetSet (what the calibration does): the second call
    skips the model's pass and still equals a fresh imputation with those settings."""
    model = copy.deepcopy(tiny_model)
    imp = Imputer(model, small_tissue)
    targets = np.flatnonzero(imp.section_labels == "section_1")[:60]
    ts = imp.target_set(targets)
    opts = dict(method="context", draw="logmean", residual=True, nbr_mode="sum", substitute="mean", seed=0)
    first = imp.engine.impute(ts, **opts)
    model.config.update(residual_weight=0.5, spread=1.2)
    calls = []
    step = imp.engine._step
    imp.engine._step = lambda *a, **kw: calls.append(1) or step(*a, **kw)
    again = imp.engine.impute(ts, **opts)
    assert not calls  # the model's pass was reused
    fresh = Imputer(model, small_tissue).engine.impute(imp.target_set(targets), **opts)
    for key in ("imputed", "imputed_nbr", "tokens"):
        np.testing.assert_allclose(again[key], fresh[key], rtol=1e-12)
    assert not np.allclose(again["imputed"], first["imputed"])
    imp.engine.impute(imp.target_set(targets), **opts)  # another TargetSet: a new pass
    assert calls


def test_residual_k_sets_how_many_measured_cells_are_averaged(tiny_model, small_tissue):
    """The correction at a point is the mean residual of its residual_k nearest clean cells (None: the graph's k)."""
    from scipy.spatial import cKDTree

    model = copy.deepcopy(tiny_model)
    imp = Imputer(model, small_tissue)
    eng, d = imp.engine, imp.data
    targets = np.zeros(d.n_cells, dtype=bool)
    targets[:40] = True
    sec = str(eng.section_labels[100])
    pool = np.flatnonzero(clean_cells(d.nbr, targets) & eng.in_section(sec))
    xy = d.coords[[100, 150]].astype(np.float64)
    for k, want in ((None, model.config.graph.k), (3, 3), (25, 25)):
        model.config.update(residual_k=k)
        got = eng.local_correction(xy, np.array([sec, sec]), targets)
        _, nn = cKDTree(d.coords[pool]).query(xy, k=want)
        ref = microenvironment_residuals(model, d, pool[nn.ravel()]).reshape(2, want, -1).mean(axis=1)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="residual_k"):
        model.config.update(residual_k=0)
