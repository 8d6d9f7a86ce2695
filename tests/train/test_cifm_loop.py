"""CIFM training loop: progress events, history, loss going down."""

from __future__ import annotations

import numpy as np
import torch

from napari_squint.config import CifmConfig
from napari_squint.data.cifm_graph import build_graph
from napari_squint.models.cifm import CifmModule
from napari_squint.models.cifm_infer import masked_loss
from napari_squint.train.cifm_loop import iter_train_cifm
from napari_squint.train.events import ProgressEvent

G = 7


def make_module(cfg, seed=0):
    torch.manual_seed(seed)
    return CifmModule(G, hidden=cfg.hidden, latent=cfg.latent, n_layers_enc=cfg.layers,
                      n_layers_dec=cfg.layers)


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
