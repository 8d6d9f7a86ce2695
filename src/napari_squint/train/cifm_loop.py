"""CIFM's training loop (the graph and batches are in ``data/``, tiled inference in ``models/``).

Training follows appendix B.3: in every mini-batch a fraction ``mask_ratio``
(5 %) of the cells is removed from the encoder graph, padded with the
learnable embedding ``e`` at its location, decoded on the full graph, and the
balanced MSE (eq. 15) of the masked cells' normalised log expression is
minimised.

Memory does not grow with the slide: a mini-batch is a few whole spatial tiles
(``core`` cells, about ``batch_size`` of them) plus a *halo* of the cells
within ``halo_hops`` edges of the core in the radius graph. With
``halo_hops = n_layers_enc + n_layers_dec`` (the default) the halo is the
exact receptive field of the core cells, so the core cells' outputs equal
those of a forward pass on the whole section (up to floating-point rounding):
inference uses that, and training too unless ``halo_hops`` is lowered. Loss
terms come from masked *core* cells only; halo cells are masked at the same
rate so that the context has the training distribution everywhere.

Coordinates enter the model in units of each section's median
nearest-neighbour distance, so a model is unit-free (a slide in pixels and one
in micrometres give the same inputs); the radius graph is built in slide units
(``radius``) or, by default, at ``radius_factor`` median nearest-neighbour
distances.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from napari_squint.config import CifmConfig
from napari_squint.data.cifm_batch import SubgraphBatch, subgraph_batch
from napari_squint.data.cifm_graph import CifmGraph
from napari_squint.data.tiles import tile_batches
from napari_squint.models.cifm import CifmModule
from napari_squint.models.cifm_loss import balanced_mse
from napari_squint.train.events import ProgressEvent

__all__ = ["iter_train_cifm"]


def _draw_mask(n: int, ratio: float, core: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mask = rng.random(n) < ratio
    if not (mask & core).any():  # at least one loss term per batch
        mask[rng.choice(np.flatnonzero(core))] = True
    if mask.all():
        mask[rng.choice(np.flatnonzero(mask))] = False
    return mask


def _step_loss(module: CifmModule, b: SubgraphBatch, mask: np.ndarray, device) -> torch.Tensor:
    m = torch.from_numpy(mask).to(device)
    out = module.forward_masked(b.x.to(device), b.coords.to(device), m, b.edge_index.to(device))
    sel = torch.from_numpy(b.core[mask]).to(device)
    target = b.x.to(device)[m][sel]
    return balanced_mse(target, out[sel], batch=b.section.to(device)[m][sel])


def iter_train_cifm(
    module: CifmModule,
    graph: CifmGraph,
    cells: np.ndarray,
    cfg: CifmConfig,
    device: torch.device,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    start_epoch: int = 0,
):
    """Masked-cell reconstruction training; a generator of :class:`ProgressEvent`.

    Parameters
    ----------
    module
        The CIFM module (on ``device``).
    graph
        Training graph.
    cells
        Core cells to train on (usually all of ``graph``).
    cfg
        Options (epochs, lr, batch_size, mask_ratio, halo_hops, seed...).
    device
        Torch device.

    Returns
    -------
    list of dict
        Per-epoch history (the generator's return value): ``epoch``, ``loss``
        (mean balanced MSE of the masked cells), ``lr`` (last learning rate;
        cosine decay over epochs ``start_epoch .. cfg.epochs`` unless
        ``lr_schedule="constant"``), ``seconds`` (wall clock), ``cpu_seconds``
        (process CPU time, all threads), ``cells_per_s``,
        ``n_masked``, ``mean_batch_nodes``.
    """
    torch.manual_seed(cfg.seed + start_epoch)
    rng = np.random.default_rng(cfg.seed + 7919 * start_epoch)
    cells = np.asarray(cells, dtype=np.int64)
    hops = cfg.receptive_hops if cfg.halo_hops is None else int(cfg.halo_hops)
    if optimizer is None:
        optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_batches_est = max(1, int(np.ceil(cells.size / cfg.batch_size)))
    total_steps = max(1, n_batches_est * (cfg.epochs - start_epoch))
    done = 0

    def set_lr() -> float:
        if cfg.lr_schedule == "constant":
            lr = cfg.lr
        else:
            frac = min(done / total_steps, 1.0)
            lr = cfg.lr * (cfg.lr_min_frac + (1 - cfg.lr_min_frac) * 0.5 * (1 + np.cos(np.pi * frac)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    history = []
    for epoch in range(start_epoch, cfg.epochs):
        module.train()
        t0, c0 = time.perf_counter(), time.process_time()
        tot, n_steps, n_masked, n_nodes = 0.0, 0, 0, 0
        for step, core in enumerate(tile_batches(graph.tile, cells, cfg.batch_size, rng)):
            b = subgraph_batch(graph, core, hops)
            mask = _draw_mask(b.nodes.size, cfg.mask_ratio, b.core, rng)
            lr = set_lr()
            done += 1
            loss = _step_loss(module, b, mask, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
            optimizer.step()
            val = float(loss.detach())
            tot += val
            n_steps += 1
            n_masked += int((mask & b.core).sum())
            n_nodes += b.nodes.size
            yield ProgressEvent("step", step=step + 1, total=n_batches_est, epoch=epoch + 1,
                                n_epochs=cfg.epochs, metrics={"loss": val})
        dt = time.perf_counter() - t0
        rec = {"epoch": epoch + 1, "loss": tot / max(n_steps, 1), "lr": lr if n_steps else float("nan"),
               "seconds": dt, "cpu_seconds": time.process_time() - c0,
               "cells_per_s": cells.size / max(dt, 1e-9), "n_masked": n_masked,
               "mean_batch_nodes": n_nodes / max(n_steps, 1)}
        history.append(rec)
        yield ProgressEvent("epoch", epoch=epoch + 1, n_epochs=cfg.epochs, step=epoch + 1,
                            total=cfg.epochs, metrics=rec)
    return history
