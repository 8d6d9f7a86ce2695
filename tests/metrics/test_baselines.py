"""Tests for napari_squint.metrics.baselines."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from napari_squint.metrics import (
    knn_index,
    mean_profile,
    microenvironment,
    nbr_profile,
    neighbourhood_average,
    ring_infill,
)


@pytest.fixture
def line():
    """Ten cells on a line, one gene with counts i**2; cell 5 held out."""
    coords = np.arange(10.0)[:, None]
    counts = (np.arange(10.0) ** 2)[:, None]
    observed = np.ones(10, dtype=bool)
    observed[5] = False
    return coords, counts, observed


@pytest.fixture
def gradient_grid():
    """A 30 x 30 grid of cells whose genes vary smoothly; a 12 x 12 patch held out."""
    xy = np.stack(np.meshgrid(np.arange(30.0), np.arange(30.0)), axis=-1).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    counts = np.stack([1 + x, 31 - x, 1 + y, 1 + 0.5 * (x + y), np.full_like(x, 5.0)], axis=1)
    patch = (np.abs(x - 14.5) < 6) & (np.abs(y - 14.5) < 6)
    return xy, counts, ~patch, np.flatnonzero(patch)


def test_mean_profile_hand_computed():
    # compositions (1/4, 3/4) and (1/2, 1/2) -> mean (3/8, 5/8); the empty row is
    # ignored; median library size of the non-empty rows is 4 -> (1.5, 2.5)
    train = np.array([[1.0, 3.0], [2.0, 2.0], [0.0, 0.0]])
    out = mean_profile(train, 3)
    assert out.shape == (3, 2)
    np.testing.assert_allclose(out, [[1.5, 2.5]] * 3)
    np.testing.assert_allclose(mean_profile(sp.csr_matrix(train), 3), out)


def test_neighbourhood_average_on_a_line(line):
    coords, counts, observed = line
    # k=2: cells 4 and 6 -> (16 + 36) / 2; k=4 adds 3 and 7 -> (9 + 16 + 36 + 49) / 4
    np.testing.assert_allclose(neighbourhood_average(coords, counts, observed, [5], k=2), [[26.0]])
    np.testing.assert_allclose(neighbourhood_average(coords, counts, observed, [5], k=4), [[27.5]])


def test_neighbourhood_average_is_unit_free_and_never_reads_test_rows(line):
    coords, counts, observed = line
    leaky = counts.copy()
    leaky[5] = 1e9
    ref = neighbourhood_average(coords, counts, observed, [5], k=4)
    for scale in (1e-3, 1.0, 1e6):
        np.testing.assert_allclose(neighbourhood_average(coords * scale, leaky, observed, [5], k=4), ref)
    np.testing.assert_allclose(neighbourhood_average(coords, sp.csr_matrix(leaky), observed, [5], k=4), ref)


def test_neighbourhood_average_stays_in_section():
    coords = np.vstack([np.arange(5.0)[:, None]] * 2)  # two sections, same coordinates
    counts = np.r_[np.ones(5), np.full(5, 100.0)][:, None]
    section = np.array(["a"] * 5 + ["b"] * 5)
    observed = np.ones(10, dtype=bool)
    observed[[2, 7]] = False
    out = neighbourhood_average(coords, counts, observed, [2, 7], k=3, section=section)
    np.testing.assert_allclose(out, [[1.0], [100.0]])


def test_neighbourhood_average_rejects_bad_input(line):
    coords, counts, observed = line
    with pytest.raises(ValueError, match="observed cells"):
        neighbourhood_average(coords, counts, observed, [4])
    section = np.array(["a"] * 5 + ["b"] * 5)
    only_a = np.arange(10) < 5
    with pytest.raises(ValueError, match="'b'"):
        neighbourhood_average(coords, counts, only_a, [7], section=section)
    with pytest.raises(ValueError, match="observed_mask"):
        neighbourhood_average(coords, counts, observed.astype(int), [5])


def test_neighbourhood_average_in_log_space_hand_computed():
    # two observed neighbours of cell 2: (1, 3) and (2, 2) counts; libraries 4 and 4
    coords = np.array([[0.0], [1.0], [2.0], [10.0]])
    counts = np.array([[1.0, 3.0], [2.0, 2.0], [50.0, 50.0], [0.0, 8.0]])
    observed = np.array([True, True, False, True])
    out = neighbourhood_average(coords, counts, observed, [2], k=2, space="log")
    mean_log = (np.log1p(np.array([1.0, 3.0]) / 4 * 1e4) + np.log1p(np.array([2.0, 2.0]) / 4 * 1e4)) / 2
    np.testing.assert_allclose(out, [np.expm1(mean_log) * 4 / 1e4])
    # one neighbour: its own counts come back, whatever the space
    np.testing.assert_allclose(neighbourhood_average(coords, counts, observed, [2], k=1, space="log"),
                               counts[[1]])
    # averaging logs shrinks a gene that only one neighbour expresses more than averaging counts does
    sparse = np.array([[0.0, 4.0], [4.0, 0.0], [9.0, 9.0], [1.0, 1.0]])
    lin = neighbourhood_average(coords, sparse, observed, [2], k=2)
    lg = neighbourhood_average(coords, sparse, observed, [2], k=2, space="log")
    assert np.all(lg < lin)
    with pytest.raises(ValueError, match="space"):
        neighbourhood_average(coords, counts, observed, [2], k=2, space="sqrt")


def test_ring_infill_fills_outer_ring_first_on_a_chain():
    # chain 0..7, cells 0-2 observed with counts 0, 1, 2; cells 3-7 held out (truth 99).
    # k=2 graph: cell 3 touches observed cell 2 (ring 1), cell 4 only touches 3 (ring 2).
    # ring 1: cell 3 <- mean(cell 2, cell 1) = 1.5
    # ring 2: cell 4 <- mean(cell 3 estimate, cell 2) = (1.5 + 2) / 2 = 1.75
    coords = np.arange(8.0)[:, None]
    counts = np.array([0.0, 1.0, 2.0, 99, 99, 99, 99, 99])[:, None]
    observed = np.arange(8) < 3
    est, rings = ring_infill(coords, counts, observed, [4, 3], k=2, return_rings=True)
    np.testing.assert_array_equal(rings, [2, 1])
    np.testing.assert_allclose(est, [[1.75], [1.5]])
    # neighbourhood_average gives both the boundary mean
    np.testing.assert_allclose(neighbourhood_average(coords, counts, observed, [4, 3], k=2), [[1.5], [1.5]])


def test_ring_one_matches_neighbourhood_average(gradient_grid):
    coords, counts, observed, test = gradient_grid
    est, rings = ring_infill(coords, counts, observed, test, k=8, return_rings=True)
    first = rings == 1
    assert first.any() and (rings > 1).any()
    np.testing.assert_allclose(est[first], neighbourhood_average(coords, counts, observed, test[first], k=8))


def test_ring_infill_beats_neighbourhood_average_on_smooth_gradient(gradient_grid):
    coords, counts, observed, test = gradient_grid
    truth = counts[test]
    ring = ring_infill(coords, counts, observed, test, k=8)
    avg = neighbourhood_average(coords, counts, observed, test, k=8)
    assert ((ring - truth) ** 2).mean() < ((avg - truth) ** 2).mean()


def test_ring_infill_handles_cells_cut_off_from_observed_ones():
    # a far-away island of held-out cells joins no observed cell in the kNN graph:
    # it becomes the last ring and takes its nearest known cells
    coords = np.r_[np.arange(6.0), 1000 + np.arange(4.0)][:, None]
    counts = np.r_[np.arange(6.0), np.zeros(4)][:, None]
    observed = np.arange(10) < 5
    est, rings = ring_infill(coords, counts, observed, [5, 9], k=2, return_rings=True)
    np.testing.assert_array_equal(rings, [1, 2])
    np.testing.assert_allclose(est[0], [3.5])
    assert np.isfinite(est).all()


def test_knn_index_excludes_self_and_pads():
    coords = np.array([[0.0], [1.0], [3.0], [0.0], [5.0]])
    section = np.array([0, 0, 0, 1, 1])
    idx = knn_index(coords, 3, section=section)
    assert idx.shape == (5, 3)
    np.testing.assert_array_equal(idx[0], [1, 2, -1])
    np.testing.assert_array_equal(idx[3], [4, -1, -1])
    assert not (idx == np.arange(5)[:, None]).any()


def test_microenvironment_sums_cell_and_neighbours():
    profiles = np.array([[1.0, 0.0], [2.0, 1.0], [4.0, 0.0], [8.0, 3.0]])
    nbr = np.array([[1, 2], [0, -1], [3, 1], [2, 0]])
    out = microenvironment(profiles, nbr)
    np.testing.assert_allclose(out, [[7, 1], [3, 1], [14, 4], [13, 3]])
    np.testing.assert_allclose(microenvironment(profiles, nbr, cells=[2]), [[14, 4]])
    full = np.c_[np.arange(4), nbr]  # self already listed
    np.testing.assert_allclose(microenvironment(profiles, full, include_self=False), out)
    with pytest.raises(ValueError, match="twice"):
        microenvironment(profiles, full)


def test_nbr_profile_mixes_measured_and_estimated():
    # cells 2 and 3 held out; their measured rows must never be read
    measured = np.array([[1.0, 0.0], [2.0, 0.0], [1000.0, 1000.0], [4000.0, 1.0]])
    held = np.array([False, False, True, True])
    est_compact = np.array([[10.0, 1.0], [20.0, 2.0]])  # rows for cells 2, 3
    est_full = np.zeros((4, 2))
    est_full[2:] = est_compact
    est_full[:2] = -5.0  # rows of observed cells are never read either
    nbr = np.array([[1, -1], [0, 2], [1, 3], [2, 0]])
    # cell 2: own estimate (10, 1) + measured cell 1 (2, 0) + estimate of cell 3 (20, 2)
    # cell 3: own estimate (20, 2) + estimate of cell 2 (10, 1) + measured cell 0 (1, 0)
    expected = [[32.0, 3.0], [31.0, 3.0]]
    np.testing.assert_allclose(nbr_profile(measured, est_compact, held, nbr, [2, 3]), expected)
    np.testing.assert_allclose(nbr_profile(measured, est_full, held, nbr, [2, 3]), expected)
    np.testing.assert_allclose(nbr_profile(sp.csr_matrix(measured), est_compact, held, nbr, [2, 3]), expected)
    # an observed cell next to a held-out one also sees the estimate: (2, 0) + (1, 0) + (10, 1)
    np.testing.assert_allclose(nbr_profile(measured, est_compact, held, nbr, [1]), [[13.0, 1.0]])
    with pytest.raises(ValueError, match="estimates"):
        nbr_profile(measured, np.zeros((3, 2)), held, nbr, [2])
