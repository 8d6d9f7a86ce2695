"""CIFM training loop: progress events, history, loss going down."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_blob_mask_is_contiguous_at_the_given_ratio():
    from scipy.spatial import cKDTree

    from napari_squint.train.cifm_loop import _draw_mask, blob_mask

    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 100, size=(2000, 2))
    mask = blob_mask(coords, 400, 32, np.random.default_rng(1))
    assert mask.sum() == 400  # exactly the requested count
    # contiguous: a masked cell's nearest neighbours are mostly masked too (a scattered 20% mask gives ~0.2)
    _, nb = cKDTree(coords).query(coords[mask], k=5)
    assert mask[nb[:, 1:]].mean() > 0.6
    scattered = rng.random(2000) < 0.2
    _, nb = cKDTree(coords).query(coords[scattered], k=5)
    assert mask[nb[:, 1:]].mean() < 0.4 or scattered[nb[:, 1:]].mean() < 0.35
    # the mix: blob_frac of the ratio in blobs, the rest scattered; overall ratio kept
    core = np.ones(2000, dtype=bool)
    fracs = [_draw_mask(2000, 0.2, core, np.random.default_rng(s), coords=coords, blob_frac=0.5).mean()
             for s in range(5)]
    assert abs(np.mean(fracs) - 0.2) < 0.02
    plain = _draw_mask(2000, 0.2, core, np.random.default_rng(0), coords=coords, blob_frac=0.0)
    assert abs(plain.mean() - 0.2) < 0.03


def test_min_steps_repeats_the_tiles_within_each_epoch():
    from napari_squint.train.cifm_loop import passes_per_epoch

    torch.set_num_threads(1)
    cfg = CifmConfig(hidden=8, latent=4, layers=1, tile_cells=40, batch_size=150, epochs=2, mask_ratio=0.2,
                     min_steps=20, blob_frac=0.5, blob_cells=8)
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 100, size=(300, 2))
    x = np.log1p(rng.poisson(5, size=(300, G)))
    graph = build_graph(x, coords, np.zeros(300, np.int64), cfg)
    module = make_module(cfg)
    module.init_output(x.mean(0))
    steps = [e for e in iter_train_cifm(module, graph, np.arange(300), cfg, torch.device("cpu"))
             if e.stage == "step"]
    assert passes_per_epoch(300, cfg, 2) == 5  # 2 batches a pass, 2 epochs: 5 passes for 20 steps
    assert len(steps) >= 20
    assert passes_per_epoch(300, CifmConfig(batch_size=150), 2) == 1  # min_steps 0: one pass


def test_poisson_loss_trains():
    torch.set_num_threads(1)
    cfg = CifmConfig(hidden=16, latent=8, layers=1, tile_cells=40, batch_size=150, epochs=8, lr=1e-2,
                     mask_ratio=0.2, infer_cells=400, loss="poisson")
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 100, size=(500, 2))
    w = np.stack([coords[:, 0] / 100, 1 - coords[:, 0] / 100, coords[:, 1] / 100], 1)
    x = np.log1p(rng.poisson(20 * np.repeat(w, 3, axis=1)[:, :G]))
    graph = build_graph(x, coords, np.zeros(500, np.int64), cfg)
    module = make_module(cfg)
    module.init_output(np.expm1(x).mean(0))
    from napari_squint.data.cifm_batch import disjoint_masks
    from napari_squint.models.cifm_infer import reconstruct_tiled
    from napari_squint.models.cifm_loss import poisson_deviance

    def held_out_deviance():  # every cell masked once (5 rounds), deviance of the predicted expression
        tot = 0.0
        for group in disjoint_masks(np.arange(500), 0.2, seed=3):
            masked = np.zeros(500, dtype=bool)
            masked[group] = True
            rate = np.expm1(reconstruct_tiled(module, graph, masked, group, cfg, torch.device("cpu")))
            tot += float(poisson_deviance(torch.from_numpy(x[group]), torch.from_numpy(rate).double())) / 5
        return tot

    before = held_out_deviance()
    gen = iter_train_cifm(module, graph, np.arange(500), cfg, torch.device("cpu"))
    hist = [e.metrics["loss"] for e in gen if e.stage == "epoch"]
    assert np.isfinite(hist).all()
    assert held_out_deviance() < 0.8 * before


def test_empty_cells_are_never_targets():
    """A masked cell with no count at all (a failed detection) adds nothing to the loss."""
    import torch

    from napari_squint.data.cifm_batch import subgraph_batch
    from napari_squint.models.cifm_loss import mse
    from napari_squint.train.cifm_loop import _step_loss

    cfg = CifmConfig(hidden=8, latent=4, layers=1, tile_cells=40, batch_size=200)
    rng = np.random.default_rng(1)
    coords = rng.uniform(0, 50, size=(60, 2))
    x = np.log1p(rng.poisson(5.0, size=(60, G))).astype(np.float64)
    x[x.sum(1) == 0, 0] = 1.0
    empty = np.arange(60) % 4 == 0
    x[empty] = 0.0
    graph = build_graph(x, coords, np.zeros(60, np.int64), cfg)
    module = make_module(cfg)
    module.init_output(x[~empty].mean(0))
    b = subgraph_batch(graph, np.arange(60), 2)
    mask = np.zeros(b.nodes.size, dtype=bool)
    mask[np.flatnonzero(empty[b.nodes])[:5]] = True
    full = _step_loss(module, b, mask, torch.device("cpu"), mse)
    assert float(full.detach()) == 0.0  # only empty cells masked: no target
    full.backward()  # still a graph to step through
    keep = np.flatnonzero(~empty[b.nodes])[:5]
    mask_ok = np.zeros_like(mask)
    mask_ok[keep] = True
    alone = float(_step_loss(module, b, mask_ok, torch.device("cpu"), mse))
    with_empties = float(_step_loss(module, b, mask_ok | mask, torch.device("cpu"), mse))
    assert alone > 0
    # the empty cells are removed from the graph (voids) either way, so only their loss terms could differ
    direct = mask_ok | mask
    out = module.forward_masked(b.x, b.coords, torch.from_numpy(direct), b.edge_index)
    sel = ~empty[b.nodes][direct]
    ref = float(((b.x[torch.from_numpy(direct)][torch.from_numpy(sel)] - out[torch.from_numpy(sel)]) ** 2).mean())
    assert with_empties == pytest.approx(ref, rel=1e-5)


def _gradient_slide(cfg, n=500, seed=0):
    rng = np.random.default_rng(seed)
    coords = rng.uniform(0, 100, size=(n, 2))
    w = np.stack([coords[:, 0] / 100, 1 - coords[:, 0] / 100, coords[:, 1] / 100], 1)
    x = np.log1p(rng.poisson(20 * np.repeat(w, 3, axis=1)[:, :G]))
    return x, build_graph(x, coords, np.zeros(n, np.int64), cfg)


def _run(gen):
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        return events, stop.value


def test_validation_epochs_are_at_least_val_epoch_steps():
    from napari_squint.train.cifm_loop import VAL_EPOCH_STEPS, passes_per_epoch

    cfg = CifmConfig(batch_size=150, epochs=60)
    assert passes_per_epoch(300, cfg, 60) == 1
    # 2 batches a pass: an epoch is ceil(50 / 2) passes when a validation set is checked after each
    assert passes_per_epoch(300, cfg, 60, validated=True) == int(np.ceil(VAL_EPOCH_STEPS / 2))
    # a slide with more batches than VAL_EPOCH_STEPS keeps one pass
    assert passes_per_epoch(150 * (VAL_EPOCH_STEPS + 1), cfg, 60, validated=True) == 1
    # min_steps still applies when it asks for more
    assert passes_per_epoch(300, CifmConfig(batch_size=150, epochs=2, min_steps=400), 2, validated=True) == 100


def test_validation_stops_at_the_third_plateau_and_keeps_the_best_weights():
    from napari_squint.train.cifm_loop import PLATEAUS

    torch.set_num_threads(1)
    cfg = CifmConfig(hidden=8, latent=4, layers=1, tile_cells=40, batch_size=250, epochs=40, lr=1e-2,
                     mask_ratio=0.2, infer_cells=400, patience=2)
    x, graph = _gradient_slide(cfg)
    val = np.arange(0, 500, 5)
    train = np.setdiff1d(np.arange(500), val)
    module = make_module(cfg)
    module.init_output(x.mean(0))
    events, history = _run(iter_train_cifm(module, graph, train, cfg, torch.device("cpu"), val_cells=val))
    vals = [h["val_loss"] for h in history]
    # every epoch is checked; the learning rate only falls, 5x at a time
    lrs = [h["lr"] for h in history]
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))
    assert {round(a / b, 6) for a, b in zip(lrs, lrs[1:]) if a != b} <= {5.0}
    best = int(np.argmin(vals))
    assert history[-1]["best_epoch"] == best + 1
    # the weights kept are the best epoch's: the same fixed-mask loss comes back
    assert masked_loss(module, graph, val, cfg, torch.device("cpu"), seed=cfg.seed) == pytest.approx(vals[best],
                                                                                                         rel=1e-5)
    if history[-1]["stopped"]:  # stopped before the cap: PLATEAUS plateaus of `patience` epochs each
        assert len(history) < cfg.epochs
        assert len(history) - (best + 1) <= cfg.patience * PLATEAUS
    # a learning rate too small to move anything: epoch 1 is the best, then a plateau every `patience` epochs
    module = make_module(cfg)
    module.init_output(x.mean(0))
    _, flat = _run(iter_train_cifm(module, graph, train, CifmConfig(**{**cfg.to_dict(), "lr": 1e-12}),
                                   torch.device("cpu"), val_cells=val))
    assert len(flat) == 1 + cfg.patience * PLATEAUS and flat[-1]["stopped"] and flat[-1]["best_epoch"] == 1


def test_validation_cells_are_never_targets():
    torch.set_num_threads(1)
    cfg = CifmConfig(hidden=8, latent=4, layers=1, tile_cells=40, batch_size=250, epochs=2, lr=1e-2,
                     mask_ratio=0.5, infer_cells=400)
    x, graph = _gradient_slide(cfg)
    val = np.arange(0, 500, 2)
    train = np.setdiff1d(np.arange(500), val)
    seen = []
    import napari_squint.train.cifm_loop as loop

    real = loop._step_loss

    def spy(module, b, mask, device, loss):
        seen.append(b.nodes[mask & b.core])
        return real(module, b, mask, device, loss)

    loop._step_loss = spy
    try:
        module = make_module(cfg)
        module.init_output(x.mean(0))
        _run(iter_train_cifm(module, graph, train, cfg, torch.device("cpu"), val_cells=val))
    finally:
        loop._step_loss = real
    targets = np.unique(np.concatenate(seen))
    assert targets.size > 0 and not np.isin(targets, val).any()
