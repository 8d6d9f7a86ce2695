"""CIFM tiled inference: exact outputs chunk by chunk, fully masked chunks decoded from the padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_squint.config import CifmConfig
from napari_squint.models.cifm import CifmModule
from napari_squint.models.cifm_infer import encode_tiled, reconstruct_tiled


G = 7


def make_module(cfg, seed=0):
    torch.manual_seed(seed)
    return CifmModule(G, hidden=cfg.hidden, latent=cfg.latent, n_layers_enc=cfg.layers,
                      n_layers_dec=cfg.layers)


@pytest.mark.parametrize("layers", [1, 2])
def test_tiled_reconstruction_and_embedding_are_exact(layers, make_cifm_graph):
    cfg = CifmConfig(hidden=8, latent=4, layers=layers, tile_cells=30, infer_cells=40)
    graph, cfg, *_ = make_cifm_graph(cfg=cfg)
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


def test_fully_masked_subgraph_decodes_from_padding_alone(make_cifm_graph):
    graph, cfg, *_ = make_cifm_graph()
    module = make_module(cfg)
    masked = np.ones(graph.n_cells, dtype=bool)
    out = reconstruct_tiled(module, graph, masked, np.arange(5), cfg, torch.device("cpu"))
    assert out.shape == (5, G) and np.isfinite(out).all()


def test_infill_goes_ring_by_ring_with_context_for_every_cell(make_cifm_graph):
    from napari_squint.models.cifm_infer import infill_tiled

    graph, cfg, coords, _ = make_cifm_graph(n=400)
    module = make_module(cfg)
    # a contiguous disc, several rings deep
    masked = np.hypot(coords[:, 0] - 25, coords[:, 1] - 50) < 22
    cells = np.flatnonzero(masked)
    x_all, rings = infill_tiled(module, graph, masked, cfg, torch.device("cpu"), path="infill")
    assert rings.shape == (cells.size,) and rings.min() == 1 and rings.max() >= 3
    adj = graph.adj.tocsr()
    ring_of = np.zeros(graph.n_cells, dtype=np.int64)  # 0 = observed
    ring_of[cells] = rings
    for c, r in zip(cells, rings):
        nb = adj.indices[adj.indptr[c]:adj.indptr[c + 1]]
        assert (ring_of[nb] < r).any()  # decoded with an observed or earlier-ring cell within one hop
    # ring 1 is decoded exactly as in one shot (all masked cells removed)
    one = reconstruct_tiled(module, graph, masked, cells[rings == 1], cfg, torch.device("cpu"))
    np.testing.assert_allclose(x_all[cells[rings == 1]].toarray(), one, rtol=1e-5, atol=1e-6)
    # observed rows untouched; deeper rings differ from the one-shot pass (they now have context)
    np.testing.assert_array_equal(x_all[~masked].toarray(), graph.x_in[~masked].toarray())
    x_one, r_one = infill_tiled(module, graph, masked, cfg, torch.device("cpu"), path="oneshot")
    assert (r_one == 1).all()
    deep = cells[rings >= 2]
    assert np.abs(x_all[deep].toarray() - x_one[deep].toarray()).max() > 1e-4
    with pytest.raises(ValueError, match="path"):
        infill_tiled(module, graph, masked, cfg, torch.device("cpu"), path="rings")


def test_poisson_decoder_is_read_as_log1p(make_cifm_graph):
    from dataclasses import replace

    graph, cfg, *_ = make_cifm_graph()
    module = make_module(cfg)
    masked = np.zeros(graph.n_cells, bool)
    masked[:10] = True
    log_out = reconstruct_tiled(module, graph, masked, np.arange(10), cfg, torch.device("cpu"))
    pois = reconstruct_tiled(module, graph, masked, np.arange(10), replace(cfg, loss="poisson"),
                             torch.device("cpu"))
    np.testing.assert_allclose(pois, np.log1p(log_out), rtol=1e-5, atol=1e-6)
