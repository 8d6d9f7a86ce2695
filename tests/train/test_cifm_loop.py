"""CIFM training loop: config, radius graph helpers, halo batches, exact tiled inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_squint.data.radius import k_hop
from napari_squint.models.cifm import CifmModule
from napari_squint.train.cifm_loop import (
    CifmConfig,
    build_graph,
    disjoint_masks,
    encode_tiled,
    iter_train_cifm,
    masked_loss,
    reconstruct_tiled,
    subgraph_batch,
    tile_batches,
)
from napari_squint.train.events import ProgressEvent

G = 7


def make_graph(n=300, seed=0, cfg=None):
    rng = np.random.default_rng(seed)
    coords = rng.uniform(0, 100, size=(n, 2))
    section = (coords[:, 0] > 50).astype(np.int64)  # two sections
    x = rng.gamma(1.0, 1.0, size=(n, G)) * (rng.random((n, G)) < 0.6)
    cfg = cfg or CifmConfig(hidden=8, latent=4, layers=1, tile_cells=40, batch_size=60, infer_cells=50)
    return build_graph(x, coords, section, cfg), cfg, coords, section


def make_module(cfg, seed=0):
    torch.manual_seed(seed)
    return CifmModule(G, hidden=cfg.hidden, latent=cfg.latent, n_layers_enc=cfg.layers,
                      n_layers_dec=cfg.layers)


def test_build_graph_model_units_and_default_radius():
    graph, cfg, coords, section = make_graph()
    assert graph.n_cells == 300 and graph.x_in.shape == (300, G)
    from napari_squint.data.radius import median_nn_distance

    for s in (0, 1):
        idx = section == s
        d = median_nn_distance(coords[idx])
        assert graph.radius[s] == pytest.approx(cfg.radius_factor * d)
        np.testing.assert_allclose(graph.coords[idx], (coords[idx] - coords[idx].mean(0)) / d)
    # tiles never straddle sections
    for t in np.unique(graph.tile):
        assert np.unique(section[graph.tile == t]).size == 1


def test_tile_batches_cover_every_cell_once():
    graph, cfg, *_ = make_graph()
    cells = np.arange(graph.n_cells)
    seen = np.concatenate(list(tile_batches(graph.tile, cells, 60, np.random.default_rng(0))))
    np.testing.assert_array_equal(np.sort(seen), cells)


def test_subgraph_batch_halo_is_the_receptive_field():
    graph, cfg, *_ = make_graph()
    core = np.flatnonzero(graph.tile == graph.tile[0])
    b = subgraph_batch(graph, core, 2)
    np.testing.assert_array_equal(b.nodes, k_hop(graph.adj, core, 2))
    np.testing.assert_array_equal(b.nodes[b.core], np.sort(core))
    assert b.x.shape == (b.nodes.size, G) and b.edge_index.max() < b.nodes.size


@pytest.mark.parametrize("layers", [1, 2])
def test_tiled_reconstruction_and_embedding_are_exact(layers):
    cfg = CifmConfig(hidden=8, latent=4, layers=layers, tile_cells=30, infer_cells=40)
    graph, cfg, *_ = make_graph(cfg=cfg)
    module = make_module(cfg).double()
    masked = np.zeros(graph.n_cells, bool)
    masked[np.random.default_rng(0).choice(graph.n_cells, 30, replace=False)] = True
    cells = np.flatnonzero(masked)
    x = torch.from_numpy(graph.x_in.toarray()).double()
    xy = torch.from_numpy(graph.coords)
    ei = torch.from_numpy(np.stack(graph.adj.nonzero()).astype(np.int64))
    with torch.no_grad():
        full = module.forward_masked(x, xy, torch.from_numpy(masked), ei).numpy()
        z_full = module.encode(x, xy, ei).numpy()
    module = module.float()
    tiled = reconstruct_tiled(module, graph, masked, cells, cfg, torch.device("cpu"))
    np.testing.assert_allclose(tiled, full, rtol=1e-4, atol=1e-5)
    z = encode_tiled(module, graph, np.arange(graph.n_cells), cfg, torch.device("cpu"))
    np.testing.assert_allclose(z, z_full, rtol=1e-4, atol=1e-5)


def test_iter_train_yields_events_and_reduces_loss():
    torch.set_num_threads(1)
    cfg = CifmConfig(hidden=16, latent=8, layers=1, tile_cells=40, batch_size=150, epochs=8, lr=1e-2,
                     mask_ratio=0.2, infer_cells=400)
    # expression follows a spatial gradient, so the context predicts a masked cell
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 100, size=(500, 2))
    w = np.stack([coords[:, 0] / 100, 1 - coords[:, 0] / 100, coords[:, 1] / 100], 1)
    x = np.log1p(rng.poisson(20 * np.repeat(w, 3, axis=1)[:, :G]))
    graph = build_graph(x, coords, np.zeros(500, np.int64), cfg)
    module = make_module(cfg)
    module.init_output(x.mean(0))
    before = masked_loss(module, graph, np.arange(500), cfg, torch.device("cpu"), seed=3)
    gen = iter_train_cifm(module, graph, np.arange(500), cfg, torch.device("cpu"))
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        history = stop.value
    assert all(isinstance(e, ProgressEvent) for e in events)
    assert [e.epoch for e in events if e.stage == "epoch"] == list(range(1, 9))
    assert len(history) == 8 and history[0]["n_masked"] > 0
    after = masked_loss(module, graph, np.arange(500), cfg, torch.device("cpu"), seed=3)
    assert after < 0.8 * before


def test_disjoint_masks_partition():
    cells = np.arange(103)
    groups = disjoint_masks(cells, 0.05, seed=0)
    assert len(groups) == 20
    np.testing.assert_array_equal(np.sort(np.concatenate(groups)), cells)
    assert max(g.size for g in groups) - min(g.size for g in groups) <= 1


def test_config_validation_and_roundtrip():
    cfg = CifmConfig(radius=20.0, epochs=3)
    assert CifmConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.receptive_hops == 2 * cfg.layers
    for bad in (dict(radius=-1.0), dict(hidden=0), dict(mask_ratio=0.0), dict(halo_hops=-1), dict(lr=0)):
        with pytest.raises(ValueError):
            CifmConfig(**bad)
    with pytest.raises(ValueError, match="unknown CIFM option"):
        CifmConfig.from_dict({"bogus": 1})


def test_replace_rows_keeps_other_rows_and_sparsity():
    import scipy.sparse as sp

    from napari_squint.train.cifm_loop import replace_rows

    x = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]], dtype=np.float32))
    out = replace_rows(x, np.array([1]), np.array([[5.0, 0.0]]))
    np.testing.assert_array_equal(out.toarray(), [[1, 0], [5, 0], [3, 4]])
    assert sp.issparse(out) and out.nnz == 4
    np.testing.assert_array_equal(x.toarray()[1], [0, 2])  # input untouched
    with pytest.raises(ValueError, match="values has shape"):
        replace_rows(x, np.array([0, 1]), np.zeros((1, 2)))


def test_fully_masked_subgraph_decodes_from_padding_alone():
    graph, cfg, *_ = make_graph()
    module = make_module(cfg)
    masked = np.ones(graph.n_cells, dtype=bool)
    out = reconstruct_tiled(module, graph, masked, np.arange(5), cfg, torch.device("cpu"))
    assert out.shape == (5, G) and np.isfinite(out).all()
