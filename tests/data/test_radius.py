"""Radius graphs built with cKDTree, checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from napari_squint.data.radius import (
    XENIUM_RADIUS_UM,
    induced_edge_index,
    k_hop,
    radius_adjacency,
    default_radius,
    median_nn_distance,
    radius_graph,
    radius_in_units,
)


def brute_force_edges(pts: np.ndarray, r: float) -> set[tuple[int, int]]:
    d = np.linalg.norm(pts[:, None, :] - pts[None, :, :], axis=-1)
    n = len(pts)
    return {(i, j) for i in range(n) for j in range(n) if i != j and d[i, j] <= r}


@pytest.fixture
def pts() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 10, size=(50, 2))


def test_matches_brute_force(pts):
    ei = radius_graph(pts, 2.0)
    assert ei.dtype == np.int64 and ei.shape[0] == 2
    got = set(map(tuple, ei.T.tolist()))
    assert len(got) == ei.shape[1]  # no duplicates
    assert got == brute_force_edges(pts, 2.0)
    assert len(got) > 50  # the test graph is not trivially empty


def test_symmetric_no_self_loops_sorted(pts):
    ei = radius_graph(pts, 2.5)
    edges = set(map(tuple, ei.T.tolist()))
    assert all((j, i) in edges for i, j in edges)
    assert not (ei[0] == ei[1]).any()
    order = np.lexsort((ei[1], ei[0]))
    np.testing.assert_array_equal(order, np.arange(ei.shape[1]))


def test_3d_matches_brute_force():
    pts = np.random.default_rng(1).uniform(0, 5, size=(30, 3))
    got = set(map(tuple, radius_graph(pts, 1.5).T.tolist()))
    assert got == brute_force_edges(pts, 1.5)


def test_distance_equal_to_radius_is_connected():
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    assert set(map(tuple, radius_graph(pts, 1.0).T.tolist())) == {(0, 1), (1, 0)}
    capped = radius_graph(pts, 1.0, max_neighbours=5)
    assert set(map(tuple, capped.T.tolist())) == {(0, 1), (1, 0)}


def test_max_neighbours_caps_degree_and_stays_symmetric(pts):
    full = set(map(tuple, radius_graph(pts, 3.0).T.tolist()))
    ei = radius_graph(pts, 3.0, max_neighbours=4)
    edges = set(map(tuple, ei.T.tolist()))
    assert edges <= full
    assert all((j, i) in edges for i, j in edges)
    assert np.bincount(ei[1], minlength=len(pts)).max() <= 4
    assert not (ei[0] == ei[1]).any()
    # a cap above every degree changes nothing
    big = radius_graph(pts, 3.0, max_neighbours=len(pts))
    assert set(map(tuple, big.T.tolist())) == full


def test_coincident_points_are_connected_without_self_loops():
    pts = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    for cap in (None, 1):
        ei = radius_graph(pts, 1.0, max_neighbours=cap)
        assert set(map(tuple, ei.T.tolist())) == {(0, 1), (1, 0)}


def test_tiny_inputs():
    assert radius_graph(np.zeros((0, 2)), 1.0).shape == (2, 0)
    assert radius_graph(np.zeros((1, 2)), 1.0).shape == (2, 0)


def test_default_radius_from_median_nn(pts):
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    expected = np.median(d.min(axis=1))
    assert median_nn_distance(pts) == pytest.approx(expected)
    assert default_radius(pts) == pytest.approx(2 * expected)
    assert default_radius(pts, factor=3.0) == pytest.approx(3 * expected)


def test_default_radius_gives_a_handful_of_neighbours():
    g = np.stack(np.meshgrid(np.arange(10.0), np.arange(10.0)), -1).reshape(-1, 2)
    pts = g + np.random.default_rng(2).normal(scale=0.05, size=g.shape)
    deg = np.bincount(radius_graph(pts, default_radius(pts))[1], minlength=len(pts))
    inner = deg[(g[:, 0] > 1) & (g[:, 0] < 8) & (g[:, 1] > 1) & (g[:, 1] < 8)]
    assert 6 <= np.median(inner) <= 14


def test_median_nn_ignores_duplicates():
    pts = np.array([[0.0, 0.0], [0.0, 0.0], [2.0, 0.0], [4.0, 0.0]])
    assert median_nn_distance(pts) == pytest.approx(2.0)


def test_radius_in_units():
    assert radius_in_units(XENIUM_RADIUS_UM, 1 / 0.5) == pytest.approx(40.0)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: radius_graph(np.zeros(5), 1.0), "coords"),
        (lambda: radius_graph([[0.0, np.nan]], 1.0), "coords"),
        (lambda: radius_graph(np.zeros((3, 2)), 0.0), "radius"),
        (lambda: radius_graph(np.zeros((3, 2)), float("inf")), "radius"),
        (lambda: radius_graph(np.zeros((3, 2)), 1.0, max_neighbours=0), "max_neighbours"),
        (lambda: default_radius(np.random.rand(5, 2), factor=-1), "factor"),
        (lambda: median_nn_distance(np.zeros((3, 2))), "coords"),
        (lambda: median_nn_distance(np.zeros((1, 2))), "coords"),
        (lambda: radius_in_units(-1.0, 1.0), "radius_um"),
        (lambda: radius_in_units(1.0, 0), "units_per_um"),
    ],
)
def test_invalid_inputs_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_radius_adjacency_blocks_sections_and_matches_radius_graph():
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, 10, size=(80, 2))
    groups = (pts[:, 1] > 5).astype(np.int64)
    adj = radius_adjacency(pts, [1.5, 2.5], groups=groups)
    assert (adj != adj.T).nnz == 0 and adj.diagonal().sum() == 0
    src, dst = adj.nonzero()
    assert (groups[src] == groups[dst]).all()
    for g, r in ((0, 1.5), (1, 2.5)):
        idx = np.flatnonzero(groups == g)
        ei = radius_graph(pts[idx], r)
        sub = adj[idx][:, idx]
        assert sub.nnz == ei.shape[1]
        assert set(zip(*sub.nonzero())) == set(zip(*ei))
    with pytest.raises(ValueError, match="radius has 1 values"):
        radius_adjacency(pts, [1.0], groups=groups)


def test_k_hop_and_induced_edges_on_a_path():
    n = 6  # path 0-1-2-3-4-5
    rows = np.r_[np.arange(n - 1), np.arange(1, n)]
    cols = np.r_[np.arange(1, n), np.arange(n - 1)]
    adj = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    np.testing.assert_array_equal(k_hop(adj, [2], 0), [2])
    np.testing.assert_array_equal(k_hop(adj, [2], 1), [1, 2, 3])
    np.testing.assert_array_equal(k_hop(adj, [0, 5], 2), [0, 1, 2, 3, 4, 5])
    ei = induced_edge_index(adj, np.array([1, 2, 3]))
    assert set(zip(*ei)) == {(0, 1), (1, 0), (1, 2), (2, 1)}
