"""CIFM's graph and batches: unit-free coordinates, default radius, tiles, halo batches, masks, row replacement."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from napari_squint.data.cifm_batch import disjoint_masks, replace_rows, subgraph_batch
from napari_squint.data.radius import k_hop, median_nn_distance
from napari_squint.data.tiles import grid_tiles, tile_batches

G = 7


def test_build_graph_model_units_and_default_radius(make_cifm_graph):
    graph, cfg, coords, section = make_cifm_graph()
    assert graph.n_cells == 300 and graph.x_in.shape == (300, G)
    for s in (0, 1):
        idx = section == s
        d = median_nn_distance(coords[idx])
        assert graph.radius[s] == pytest.approx(cfg.radius_factor * d)
        np.testing.assert_allclose(graph.coords[idx], (coords[idx] - coords[idx].mean(0)) / d)
    # tiles never straddle sections
    for t in np.unique(graph.tile):
        assert np.unique(section[graph.tile == t]).size == 1


def test_tile_batches_cover_every_cell_once(make_cifm_graph):
    graph, cfg, *_ = make_cifm_graph()
    cells = np.arange(graph.n_cells)
    seen = np.concatenate(list(tile_batches(graph.tile, cells, 60, np.random.default_rng(0))))
    np.testing.assert_array_equal(np.sort(seen), cells)


def test_subgraph_batch_halo_is_the_receptive_field(make_cifm_graph):
    graph, cfg, *_ = make_cifm_graph()
    core = np.flatnonzero(graph.tile == graph.tile[0])
    b = subgraph_batch(graph, core, 2)
    np.testing.assert_array_equal(b.nodes, k_hop(graph.adj, core, 2))
    np.testing.assert_array_equal(b.nodes[b.core], np.sort(core))
    assert b.x.shape == (b.nodes.size, G) and b.edge_index.max() < b.nodes.size


def test_disjoint_masks_partition():
    cells = np.arange(103)
    groups = disjoint_masks(cells, 0.05, seed=0)
    assert len(groups) == 20
    np.testing.assert_array_equal(np.sort(np.concatenate(groups)), cells)
    assert max(g.size for g in groups) - min(g.size for g in groups) <= 1


def test_replace_rows_keeps_other_rows_and_sparsity():
    x = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]], dtype=np.float32))
    out = replace_rows(x, np.array([1]), np.array([[5.0, 0.0]]))
    np.testing.assert_array_equal(out.toarray(), [[1, 0], [5, 0], [3, 4]])
    assert sp.issparse(out) and out.nnz == 4
    np.testing.assert_array_equal(x.toarray()[1], [0, 2])  # input untouched
    with pytest.raises(ValueError, match="values has shape"):
        replace_rows(x, np.array([0, 1]), np.zeros((1, 2)))


def test_grid_tiles_are_compact_ids_of_about_the_requested_size():
    xy = np.random.default_rng(0).uniform(0, 100, size=(1000, 2))
    t = grid_tiles(xy, 100)
    np.testing.assert_array_equal(np.unique(t), np.arange(t.max() + 1))
    assert 6 <= t.max() + 1 <= 14
