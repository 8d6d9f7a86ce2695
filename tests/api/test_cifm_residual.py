"""CIFM's local residual correction: the pieces on known answers, and the correction inside impute_cells."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse as sp

from napari_squint.api.cifm_residual import local_correction, masked_residuals, nearest_measured


@pytest.fixture(scope="module")
def trained_cifm(tissue):
    """A small CIFM trained without a contiguous patch of section 0 (the patch is what gets imputed)."""
    from napari_squint.api.cifm import Cifm

    xy = tissue.obsm["spatial"]
    sec0 = np.flatnonzero((tissue.obs["section"] == tissue.obs["section"].cat.categories[0]).to_numpy())
    hold = np.zeros(tissue.n_obs, dtype=bool)
    hold[sec0[np.argsort(np.hypot(*(xy[sec0] - xy[sec0[0]]).T))[:50]]] = True
    model = Cifm(tissue, holdout=hold, epochs=2, hidden=16, latent=8, layers=1, batch_size=256, tile_cells=64,
                 device="cpu", seed=0)
    model.train()
    return model, hold


def test_nearest_measured_stays_in_the_section_and_skips_targets():
    # ten cells on a line, two sections (0-4, 5-9); cells 2 and 7 are targets, 3 is masked too
    coords = np.c_[np.arange(10.0), np.zeros(10)]
    section = np.repeat([0, 1], 5)
    measured = np.ones(10, dtype=bool)
    measured[[2, 3, 7]] = False
    near = nearest_measured(coords, section, measured, coords[[2, 7]], np.array([0, 1]), k=2)
    assert near[0, 0] == 1 and near[0, 1] in (0, 4)  # 1 at distance 1, then 0 or 4 (both at 2)
    assert sorted(near[1]) == [6, 8]  # never 4 (the other section), never 7 itself
    # a section with fewer measured cells than k pads with -1; a point anywhere is answered from its section
    lone = nearest_measured(coords, section, np.isin(np.arange(10), [0, 9]), np.array([[2.0, 0.0], [7.5, 3.0]]),
                            np.array([0, 1]), k=3)
    assert lone.tolist() == [[0, -1, -1], [9, -1, -1]]


def test_local_correction_averages_each_cells_residual_once():
    near = np.array([[0, 2, -1], [2, 2, 5], [-1, -1, -1]])
    asked = []

    def residual_of(cells):
        asked.append(cells.tolist())
        return np.c_[cells * 1.0, -cells * 1.0]

    out = local_correction(near, residual_of, 2)
    assert asked == [[0, 2, 5]]  # the distinct cells, once
    np.testing.assert_allclose(out, [[1.0, -1.0], [3.0, -3.0], [0.0, 0.0]])
    assert local_correction(np.full((2, 3), -1), residual_of, 2).shape == (2, 2)


def test_masked_residuals_mask_each_cell_once_beside_the_targets():
    x = sp.csr_matrix(np.arange(40, dtype=float).reshape(10, 4))
    targets = np.zeros(10, dtype=bool)
    targets[0] = True
    seen = []

    def reconstruct(m, rows):
        seen.append((m.copy(), rows.copy()))
        assert m[0] and m[rows].all()  # the targets stay masked; the cells being scored are masked
        return np.ones((rows.size, 4))

    cells = np.arange(1, 10)
    r = masked_residuals(reconstruct, x, targets, cells, mask_ratio=0.25, seed=0)
    np.testing.assert_allclose(r, x.toarray()[1:] - 1.0)  # measured minus reconstruction, in the cells' order
    scored = np.concatenate([rows for _, rows in seen])
    assert sorted(scored.tolist()) == cells.tolist() and len(seen) <= 4  # each once, in ceil(1 / 0.25) passes
    # each pass masks only its own group beside the targets
    for m, rows in seen:
        assert m.sum() == 1 + rows.size


def test_cifm_residual_follows_a_regional_shift(tissue, trained_cifm):
    """Quadruple gene 0 in every cell at imputation time: with the correction the imputed cells follow it."""
    from napari_squint.metrics import log_normalise

    model, hold = trained_cifm
    shifted = tissue.copy()
    X = shifted.X.toarray().astype(float)
    X[:, 0] *= 4.0
    shifted.X = sp.csr_matrix(X)
    on = copy.deepcopy(model)
    on.config.update(residual=True)
    y = {}
    for name, m, a in (("base", on, tissue), ("moved", on, shifted), ("alone", model, shifted)):
        res = m.impute_cells(m.prepare(a), hold)
        y[name] = log_normalise(res["imputed"])
    up = (y["moved"][:, 0] - y["base"][:, 0]).mean()
    assert up > 0.5  # log 4 = 1.39, less the renormalisation
    assert abs((y["alone"][:, 0] - y["base"][:, 0]).mean()) < up / 2


def test_the_imputer_applies_cifms_correction_as_impute_cells_does(tissue, trained_cifm):
    """CifmConfig.residual reaches in-painting through the Imputer (napari, CLI) as through impute_cells."""
    from napari_squint.tasks.impute import Imputer

    model, hold = trained_cifm
    on = copy.deepcopy(model)
    on.config.update(residual=True)
    ref_on = on.impute_cells(on.prepare(tissue), hold)["imputed"]
    ref_off = model.impute_cells(model.prepare(tissue), hold)["imputed"]
    got_on = Imputer(on, tissue).impute(mask=hold)
    got_off = Imputer(model, tissue).impute(mask=hold)
    # the two paths agree up to float32 rounding of the ring substitution (well under 1%) ...
    np.testing.assert_allclose(got_off.layers["imputed"], ref_off, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(got_on.layers["imputed"], ref_on, rtol=1e-2, atol=1e-2)
    # ... while the correction moves the profiles by far more than that
    gap = np.abs(got_on.layers["imputed"] - got_off.layers["imputed"]).mean()
    assert gap > 20 * np.abs(got_on.layers["imputed"] - ref_on).mean()
