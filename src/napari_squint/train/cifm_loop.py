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

With ``val_frac > 0`` the training length is chosen by validation inside
the training cells: whole tiles holding that share of them are kept out of the
loss (they stay in the graph as context, never as targets), and their
masked-cell loss (:func:`~napari_squint.models.cifm_infer.masked_loss`, fixed
masks) is checked after every epoch. The learning rate stays at ``lr`` and
drops 5x after ``patience`` epochs without a better validation loss; the third
such plateau ends training and the best weights are kept. An epoch is then at
least :data:`VAL_EPOCH_STEPS` steps, so a small slide is checked as often, in
steps, as a large one, and trains as long as its validation loss improves.

Coordinates enter the model in units of each section's median
nearest-neighbour distance, so a model is unit-free (a slide in pixels and one
in micrometres give the same inputs); the radius graph is built in slide units
(``radius``) or, by default, at ``radius_factor`` median nearest-neighbour
distances.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from scipy.spatial import cKDTree

from napari_squint.config import CifmConfig
from napari_squint.data.cifm_batch import SubgraphBatch, subgraph_batch
from napari_squint.data.cifm_graph import CifmGraph
from napari_squint.data.tiles import tile_batches
from napari_squint.models.cifm import CifmModule
from napari_squint.models.cifm_infer import masked_loss
from napari_squint.models.cifm_loss import loss_function
from napari_squint.train.events import ProgressEvent

__all__ = ["VAL_EPOCH_STEPS", "blob_mask", "iter_train_cifm", "passes_per_epoch"]

#: with a validation set, an epoch (the interval between checks) is at least this many optimiser steps
VAL_EPOCH_STEPS = 50
#: with a validation set: learning-rate factor at each plateau, and plateaus that end training
LR_DROP, PLATEAUS = 0.2, 3


def blob_mask(coords: np.ndarray, n_masked: int, max_cells: int, rng: np.random.Generator) -> np.ndarray:
    """About ``n_masked`` cells in contiguous blobs: each the 1..``max_cells`` nearest cells of a random cell.

    Blobs are drawn until ``n_masked`` cells are covered (overlaps count once), and the last blob is cut so
    that exactly ``min(n_masked, n)`` cells are masked.

    Parameters
    ----------
    coords
        ``(n, d)`` cell coordinates (any unit).
    n_masked
        Number of cells to mask.
    max_cells
        Largest blob, in cells.
    rng
        Random generator.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` bool.
    """
    n = coords.shape[0]
    mask = np.zeros(n, dtype=bool)
    n_masked = min(int(n_masked), n)
    if n_masked <= 0:
        return mask
    kk = min(int(max_cells), n)
    tree = cKDTree(coords)
    left = n_masked
    while left > 0:
        # a batch of centres at a time (expected blob size (kk + 1) / 2); overlaps are topped up next round
        n_c = max(1, int(np.ceil(2 * left / (kk + 1))))
        centres = rng.choice(np.flatnonzero(~mask), size=min(n_c, int((~mask).sum())), replace=False)
        _, nb = tree.query(coords[centres], k=kk)
        nb = np.asarray(nb).reshape(centres.size, kk)
        sizes = rng.integers(1, kk + 1, size=centres.size)
        for row, s in zip(nb, sizes):
            new = row[:s][~mask[row[:s]]]
            new = new[:left]
            mask[new] = True
            left -= new.size
            if left <= 0:
                break
    return mask


def _draw_mask(n: int, ratio: float, core: np.ndarray, rng: np.random.Generator, *,
               coords: np.ndarray | None = None, blob_frac: float = 0.0, blob_cells: int = 32) -> np.ndarray:
    if blob_frac > 0 and coords is not None:
        n_blob = int(round(blob_frac * ratio * n))
        mask = blob_mask(coords, n_blob, blob_cells, rng)
        rest = (1 - blob_frac) * ratio * n / max(n - int(mask.sum()), 1)  # scattered cells for the remainder
        mask |= rng.random(n) < rest
    else:
        mask = rng.random(n) < ratio
    if not (mask & core).any():  # at least one loss term per batch
        mask[rng.choice(np.flatnonzero(core))] = True
    if mask.all():
        mask[rng.choice(np.flatnonzero(mask))] = False
    return mask


def passes_per_epoch(n_cells: int, cfg: CifmConfig, n_epochs: int, *, validated: bool = False) -> int:
    """Passes over the tiles per epoch so that ``n_epochs`` epochs take at least ``cfg.min_steps`` steps
    (and, when ``validated``, every epoch at least :data:`VAL_EPOCH_STEPS`)."""
    per_pass = max(1, int(np.ceil(n_cells / cfg.batch_size)))
    passes = 1
    if cfg.min_steps > 0 and n_epochs > 0:
        passes = max(1, int(np.ceil(cfg.min_steps / (per_pass * n_epochs))))
    if validated:
        passes = max(passes, int(np.ceil(VAL_EPOCH_STEPS / per_pass)))
    return passes


class _Plateau:
    """The validation schedule: keeps the best weights, drops the learning rate at each plateau, says when to
    stop (after :data:`PLATEAUS` plateaus)."""

    def __init__(self, module: CifmModule, lr: float, patience: int):
        self.module, self.lr, self.patience = module, float(lr), int(patience)
        self.best, self.best_epoch, self.state = float("inf"), 0, None
        self.bad, self.plateaus = 0, 0

    def update(self, loss: float, epoch: int) -> bool:
        """Record an epoch's validation loss; True when training should stop."""
        if loss < self.best * (1 - 1e-4):
            self.best, self.best_epoch, self.bad = loss, epoch, 0
            self.state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
            return False
        self.bad += 1
        if self.bad < self.patience:
            return False
        self.plateaus += 1
        self.bad = 0
        if self.plateaus >= PLATEAUS:
            return True
        self.lr *= LR_DROP
        return False

    def restore(self) -> None:
        if self.state is not None:
            self.module.load_state_dict(self.state)


def _step_loss(module: CifmModule, b: SubgraphBatch, mask: np.ndarray, device, loss: Callable) -> torch.Tensor:
    """``loss`` (:func:`~napari_squint.models.cifm_loss.loss_function`) of the batch's masked core cells."""
    m = torch.from_numpy(mask).to(device)
    x = b.x.to(device)
    out = module.forward_masked(x, b.coords.to(device), m, b.edge_index.to(device))
    xm = x[m]
    # an empty cell (no count at all: a failed detection) is a void to the encoder, never a target
    sel = torch.from_numpy(b.core[mask]).to(device) & (xm.sum(dim=1) > 0)
    if not bool(sel.any()):  # every masked core cell is empty: a zero loss that keeps the graph
        return out.sum() * 0.0
    return loss(xm[sel], out[sel], batch=b.section.to(device)[m][sel])


def iter_train_cifm(
    module: CifmModule,
    graph: CifmGraph,
    cells: np.ndarray,
    cfg: CifmConfig,
    device: torch.device,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    start_epoch: int = 0,
    val_cells: np.ndarray | None = None,
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
    val_cells
        Cells of ``graph`` (not in ``cells``) whose masked-cell loss chooses the training length (see the
        module's docstring); None or empty: ``cfg.epochs`` epochs on ``cfg.lr_schedule``.

    Returns
    -------
    list of dict
        Per-epoch history (the generator's return value): ``epoch``, ``loss``
        (mean balanced MSE of the masked cells), ``lr`` (last learning rate;
        cosine decay over epochs ``start_epoch .. cfg.epochs`` unless
        ``lr_schedule="constant"`` or validated), ``seconds`` (wall clock), ``cpu_seconds``
        (process CPU time, all threads), ``cells_per_s``,
        ``n_masked``, ``mean_batch_nodes``; validated, also ``val_loss``, ``best_epoch`` and ``stopped``
        (True on the last epoch when the plateaus ended training).
    """
    torch.manual_seed(cfg.seed + start_epoch)
    rng = np.random.default_rng(cfg.seed + 7919 * start_epoch)
    cells = np.asarray(cells, dtype=np.int64)
    hops = cfg.receptive_hops if cfg.halo_hops is None else int(cfg.halo_hops)
    if optimizer is None:
        optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    val_cells = None if val_cells is None or len(val_cells) == 0 else np.asarray(val_cells, dtype=np.int64)
    plateau = None if val_cells is None else _Plateau(module, cfg.lr, cfg.patience)
    passes = passes_per_epoch(cells.size, cfg, cfg.epochs - start_epoch, validated=plateau is not None)
    loss_fn = loss_function(cfg.loss, graph.x_in[cells])  # the capped balance reads the panel's share of zeros
    n_batches_est = passes * max(1, int(np.ceil(cells.size / cfg.batch_size)))
    total_steps = max(1, n_batches_est * (cfg.epochs - start_epoch))
    done = 0

    def set_lr() -> float:
        if plateau is not None:
            lr = plateau.lr
        elif cfg.lr_schedule == "constant":
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
        batches = (core for _ in range(passes) for core in tile_batches(graph.tile, cells, cfg.batch_size, rng))
        for step, core in enumerate(batches):
            b = subgraph_batch(graph, core, hops)
            mask = _draw_mask(b.nodes.size, cfg.mask_ratio, b.core, rng, coords=b.coords.numpy(),
                              blob_frac=cfg.blob_frac, blob_cells=cfg.blob_cells)
            lr = set_lr()
            done += 1
            loss = _step_loss(module, b, mask, device, loss_fn)
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
        stop = False
        if plateau is not None:
            module.eval()
            rec["val_loss"] = masked_loss(module, graph, val_cells, cfg, device, seed=cfg.seed)
            stop = plateau.update(rec["val_loss"], epoch + 1)
            rec.update(best_epoch=plateau.best_epoch, stopped=stop)
            if stop or epoch + 1 == cfg.epochs:
                plateau.restore()
            rec["seconds"] = time.perf_counter() - t0
        history.append(rec)
        yield ProgressEvent("epoch", epoch=epoch + 1, n_epochs=cfg.epochs, step=epoch + 1,
                            total=cfg.epochs, metrics=rec)
        if stop:
            break
    return history
