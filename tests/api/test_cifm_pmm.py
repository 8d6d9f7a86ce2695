"""Predictive mean matching for CIFM's in-painting: donors, matching and draws on known answers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_squint.api.cifm_pmm import DonorMatcher, donor_cells


def test_donor_cells_are_measured_cells_of_the_targets_sections():
    section = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    measured = np.array([1, 0, 1, 1, 1, 0, 1, 1], dtype=bool)
    got = donor_cells(section, measured, np.array([0, 1, 1]), max_donors=10)
    assert got.tolist() == [0, 2, 3, 4]  # never cell 1 or 5 (not measured), never section 2 (no target there)
    capped = donor_cells(section, measured, np.array([0, 1]), max_donors=1, seed=3)
    assert capped.size == 2 and set(capped) <= {0, 2, 3, 4}
    assert section[capped].tolist() == [0, 1]  # at most one per section


def test_matching_finds_the_donors_with_the_nearest_predictions():
    # four donors on a line of predictions (two genes); their measured profiles are far from their predictions
    pred = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    meas = np.array([[10.0, 1.0], [11.0, 2.0], [12.0, 3.0], [13.0, 4.0]])
    m = DonorMatcher(pred, meas)
    near = m.nearest(np.array([[0.9, 0.0], [2.9, 0.0]]), 2)
    assert sorted(near[1].tolist()) == [2, 3]
    assert near[0, 0] == 1 and near[1, 0] == 3  # the nearest first
    # d=1 gives back the nearest donor's *measured* profile, not its prediction
    got = m.draw(np.array([[2.1, 0.0]]), 1, np.random.default_rng(0))
    np.testing.assert_allclose(got, [[12.0, 3.0]])


def test_draws_spread_over_the_matched_donors_and_keep_to_the_group():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(40, 3))
    meas = np.arange(40, dtype=float)[:, None] * np.ones((1, 3))
    groups = np.repeat(["a", "b"], 20)
    m = DonorMatcher(pred, meas, groups=groups)
    q = np.repeat(pred[:1], 400, axis=0)  # the same prediction 400 times, drawn among its 5 nearest
    picked = m.draw(q, 5, np.random.default_rng(1), groups=np.full(400, "b"))[:, 0].astype(int)
    near = set(m.nearest(q[:1], 5, np.array(["b"]))[0].tolist())
    assert set(picked.tolist()) == near  # every one of the five is drawn, nothing else
    assert all(p >= 20 for p in picked)  # donors of group b only, though the query equals a donor of group a
    with pytest.raises(ValueError, match="group 'c'"):
        m.nearest(q[:1], 5, np.array(["c"]))


def test_a_group_with_fewer_donors_than_asked_repeats_them():
    m = DonorMatcher(np.array([[0.0], [1.0], [5.0]]), np.array([[0.0], [1.0], [5.0]]), groups=np.array([0, 0, 1]))
    near = m.nearest(np.array([[4.0]]), 3, np.array([1]))
    assert near.tolist() == [[2, 2, 2]]


def test_bad_donors_are_refused():
    with pytest.raises(ValueError, match="differ"):
        DonorMatcher(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="no donor cells"):
        DonorMatcher(np.zeros((0, 2)), np.zeros((0, 2)))


# ---- the draw inside CIFM: impute_cells, the Imputer (napari, CLI) and the benchmark ----

SMALL = dict(hidden=16, latent=8, layers=1, batch_size=128, tile_cells=64, device="cpu", seed=0, epochs=2)


@pytest.fixture(scope="module")
def small():
    import torch

    from napari_squint.api.cifm import Cifm
    from napari_squint.data.synthetic import make_tissue

    torch.set_num_threads(1)
    tissue = make_tissue(n_cells=600, n_genes=20, n_sections=2, n_cell_types=4, seed=2)
    hold = np.zeros(tissue.n_obs, dtype=bool)
    hold[:30] = True
    model = Cifm(tissue, holdout=hold, **SMALL)
    model.train()
    return model, tissue, hold


def _log_rows(counts):
    from napari_squint.data.imputation import log_normalise_rows

    return log_normalise_rows(np.asarray(counts, dtype=np.float64)).astype(np.float64)


def _assert_donors(imputed, cells, data, hold):
    """Every imputed profile is a measured (not held-out) cell's profile of the target's own section."""
    got = _log_rows(imputed)
    measured = _log_rows(data.counts.toarray())
    for i, c in enumerate(cells):
        match = np.flatnonzero(np.abs(measured - got[i]).max(1) < 1e-4)
        assert match.size, f"imputed cell {c} is no measured cell's profile"
        assert ((~hold[match]) & (data.batch[match] == data.batch[c])).any()


def test_impute_cells_sample_gives_measured_cells_of_the_same_section(small):
    model, tissue, hold = small
    data = model.prepare(tissue)
    res = model.impute_cells(data, hold, draw="sample", seed=4)
    _assert_donors(res["imputed"], res["cells"], data, hold)
    # its depth is the target's, as for the mean; seeded; another draw than the mean and than another seed
    np.testing.assert_allclose(res["imputed"].sum(1), model.impute_cells(data, hold)["imputed"].sum(1), rtol=1e-6)
    np.testing.assert_allclose(model.impute_cells(data, hold, draw="sample", seed=4)["imputed"], res["imputed"])
    assert not np.allclose(model.impute_cells(data, hold, draw="sample", seed=5)["imputed"], res["imputed"])
    with pytest.raises(ValueError, match="draw='logmean'"):
        model.impute_cells(data, hold, draw="logmean")


def test_the_draw_spreads_like_measured_cells_where_the_mean_does_not(small):
    model, tissue, hold = small
    data = model.prepare(tissue)
    spread = {d: _log_rows(model.impute_cells(data, hold, draw=d)["imputed"]).std(0).mean() for d in ("mean", "sample")}
    real = _log_rows(data.counts[~hold].toarray()).std(0).mean()
    assert spread["sample"] > 2 * spread["mean"] and spread["sample"] > 0.5 * real


def test_the_imputer_offers_cifms_draw(small):
    from napari_squint.tasks.impute import Imputer

    model, tissue, hold = small
    assert "sample" in model.draws and model.default_draw == "mean"
    out = Imputer(model, tissue).impute(mask=hold, draw="sample", seed=4)
    data = model.prepare(tissue)
    _assert_donors(out.layers["imputed"], np.flatnonzero(hold), data, hold)
    mean = Imputer(model, tissue).impute(mask=hold).layers["imputed"]
    assert not np.allclose(out.layers["imputed"], mean)


def test_the_benchmark_scores_both_draws_of_one_trained_model(small):
    from napari_squint.api.cifm import make_benchmark_method

    _, tissue, hold = small
    test = np.flatnonzero(hold)[::2]
    opts = {k: v for k, v in SMALL.items() if k != "seed"}
    both = make_benchmark_method(draws=("mean", "sample"), **opts)(tissue, hold, test, 0)
    assert set(both) == {"", " sample"}
    x_mean, _ = make_benchmark_method(**opts)(tissue, hold, test, 0)
    np.testing.assert_allclose(both[""][0], x_mean)  # the mean row is what it was
    assert both[" sample"][0].shape == x_mean.shape and not np.allclose(both[" sample"][0], x_mean)
