"""The shared in-painting rules: read depth, microenvironment sums, log-normalisation, infill rings."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from napari_squint.data.imputation import (
    counts_from_log,
    hops_to_observed,
    log_normalise_rows,
    microenv_members,
    microenv_sum,
    section_median_depth,
)
from napari_squint.data.validate import SlideError


def reads(nbr):
    r, c = np.nonzero(nbr >= 0)
    return sp.csr_matrix((np.ones(r.size), (r, nbr[r, c])), shape=(nbr.shape[0], nbr.shape[0]))


def test_ring_order_on_a_chain():
    # chain 0-1-2-3-4-5, cell 0 observed, 5 isolated from the observed side by nothing: rings 1..5
    nbr = np.full((6, 2), -1)
    for i in range(6):
        nbr[i] = [i - 1 if i > 0 else -1, i + 1 if i < 5 else -1]
    observed = np.array([True, False, False, False, False, False])
    assert hops_to_observed(np.arange(1, 6), reads(nbr), observed).tolist() == [1, 2, 3, 4, 5]
    # an island with no observed cell becomes one last ring
    nbr2 = np.array([[1, -1], [0, -1], [-1, -1], [-1, -1]])
    assert hops_to_observed(np.array([1, 2, 3]), reads(nbr2), np.array([True, False, False, False])).tolist() == [1, 2, 2]


def test_rings_on_an_adjacency_equal_the_rings_on_its_rows():
    rng = np.random.default_rng(0)
    adj = sp.random(80, 80, density=0.05, random_state=1, format="csr")
    adj = ((adj + adj.T) > 0).astype(float)
    targets = np.sort(rng.choice(80, 50, replace=False))
    observed = np.ones(80, dtype=bool)
    observed[targets] = False
    width = int(adj.sum(1).max())
    nbr = np.full((80, width), -1)
    for i in range(80):
        row = adj[i].indices
        nbr[i, :row.size] = row
    np.testing.assert_array_equal(hops_to_observed(targets, adj, observed), hops_to_observed(targets, reads(nbr), observed))


def test_section_median_depth_reads_only_observed_cells_of_the_section():
    lib = np.array([10.0, 20.0, 30.0, 1000.0, 4.0, 6.0])
    groups = np.array(["a", "a", "a", "a", "b", "b"])
    observed = np.array([True, True, True, False, True, True])
    np.testing.assert_allclose(section_median_depth(lib, groups, observed, np.array(["a", "b", "a"])), [20, 5, 20])
    # a section with no observed cell takes the slide's observed median
    np.testing.assert_allclose(section_median_depth(lib, np.array(list("aaaabb")), observed & (groups == "a"),
                                                    np.array(["b"])), [20])
    with pytest.raises(SlideError, match="nothing is observed"):
        section_median_depth(lib, groups, np.zeros(6, dtype=bool), np.array(["a"]))


def test_microenvironment_sum_is_measured_plus_imputed_members():
    counts = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [5.0, 5.0]]))
    # targets: cell 2 and a created cell 4; cell 2 reads 1 and 4, cell 4 reads 0 and 2
    cells, nbr = np.array([2, 4]), np.array([[1, 4], [0, 2]])
    imputed = np.array([[7.0, 7.0], [9.0, 9.0]])
    a_meas, a_imp = microenv_members(cells, nbr, cells, 4)
    out = microenv_sum(counts, a_meas, a_imp, imputed)
    np.testing.assert_allclose(out, [[0 + 7 + 9, 2 + 7 + 9], [9 + 1 + 7, 9 + 0 + 7]])


def test_log_normalise_rows_and_its_inverse():
    x = np.array([[1.0, 3.0], [0.0, 0.0]])
    y = log_normalise_rows(x)
    np.testing.assert_allclose(y[0], np.log1p([2500.0, 7500.0]), rtol=1e-6)
    assert (y[1] == 0).all()
    np.testing.assert_allclose(counts_from_log(y[:1], np.array([4.0])), x[:1], rtol=1e-5)
