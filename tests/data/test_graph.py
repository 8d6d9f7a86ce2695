import numpy as np
import pytest
import scipy.sparse as sp

from napari_squint.data.graph import (edge_index_from_padded, knn, knn_graph, median_nn_distance,
                                      neighbourhood_sum)


def _grid(n=6):
    xx, yy = np.meshgrid(np.arange(n), np.arange(n))
    return np.c_[xx.ravel(), yy.ravel()].astype(float)


def test_knn_excludes_self_and_sorts():
    rng = np.random.default_rng(0)
    xy = rng.random((50, 2))
    idx, dist = knn(xy, 5)
    assert idx.shape == (50, 5)
    assert not (idx == np.arange(50)[:, None]).any()
    assert np.all(np.diff(dist, axis=1) >= 0)
    brute = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(brute, np.inf)
    np.testing.assert_allclose(dist, np.sort(brute, axis=1)[:, :5])


def test_graph_is_symmetric_and_has_no_self_loops():
    rng = np.random.default_rng(1)
    xy = rng.random((200, 2)) * 100
    nbr, idx, _ = knn_graph(xy, 8)
    ei = edge_index_from_padded(nbr)
    a = sp.csr_matrix((np.ones(ei.shape[1]), (ei[1], ei[0])), shape=(200, 200))
    assert (a != a.T).nnz == 0
    assert a.diagonal().sum() == 0
    # every kNN edge is present
    for i in range(200):
        assert set(idx[i]) <= set(nbr[i][nbr[i] >= 0])


def test_neighbourhood_sum_known_answer():
    xy = np.array([[0.0, 0], [1, 0], [2, 0], [10, 0]])
    nbr, _, _ = knn_graph(xy, 1, max_degree=3)
    X = sp.csr_matrix(np.array([[1, 0], [0, 2], [3, 0], [0, 5]]))
    out = neighbourhood_sum(X, nbr).toarray()
    # 0<->1 (1 is 0's NN; 0 and 2 tie for 1's NN), 2->1, 3->2: symmetrised
    expected_rows = {i: set(nbr[i][nbr[i] >= 0]) for i in range(4)}
    for i in range(4):
        want = X.toarray()[[i, *expected_rows[i]]].sum(0)
        np.testing.assert_array_equal(out[i], want)


def test_median_nn_distance_unit_free():
    xy = _grid()
    assert median_nn_distance(xy) == 1.0
    assert median_nn_distance(xy * 250.0) == 250.0


def test_nearest_sources_stay_in_the_section_and_skip_non_sources():
    from napari_squint.data.graph import nearest_sources
    from napari_squint.data.validate import SlideError

    # two sections on top of each other; cell 1 is not a source
    coords = np.array([[0.0, 0.0], [0.1, 0.0], [1.0, 0.0], [3.0, 0.0], [0.05, 0.0], [0.2, 0.0]])
    section = np.array(["a", "a", "a", "a", "b", "b"])
    source = np.array([True, False, True, True, False, True])
    got = {tuple(section[queries[pos]].tolist()): nn for queries in [np.array([1, 4])]
           for pos, nn in nearest_sources(coords, source, queries, 2, section=section)}
    assert got[("a",)].tolist() == [[0, 2]]  # nearest sources of cell 1 in section a, never itself
    assert got[("b",)].tolist() == [[5]]  # section b has one source: fewer than k columns
    with pytest.raises(SlideError, match="section 'b' holds test cells but no observed cell"):
        list(nearest_sources(coords, source & (section == "a"), np.array([4]), 2, section=section))


def test_knn_in_3d_known_answer():
    # two 6 x 6 lattices (spacing 1) half a unit apart in z: in 3D each cell's nearest cell is its copy in the other
    # layer (0.5), then its four lattice neighbours in its own layer (1.0); in the (x, y) projection the copy
    # would sit at distance 0
    g = _grid()
    xyz = np.r_[np.c_[g, np.zeros(len(g))], np.c_[g, np.full(len(g), 0.5)]]
    n = len(g)
    idx, dist = knn(xyz, 1)
    np.testing.assert_array_equal(idx[:, 0], np.r_[np.arange(n, 2 * n), np.arange(n)])
    np.testing.assert_allclose(dist[:, 0], 0.5)
    assert median_nn_distance(xyz) == 0.5
    centre = 2 * 6 + 2  # an inner lattice cell of the bottom layer
    idx5, dist5 = knn(xyz, 5)
    np.testing.assert_allclose(dist5[centre], [0.5, 1, 1, 1, 1])
    same_layer = set(idx5[centre, 1:])
    assert same_layer == {centre - 1, centre + 1, centre - 6, centre + 6}
    nbr, _, _ = knn_graph(xyz, 5)
    assert centre + n in nbr[centre]
