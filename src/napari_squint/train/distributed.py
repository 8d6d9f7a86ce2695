"""Data-parallel training on torch.distributed (DistributedDataParallel).

Launch one process per GPU (or several CPU processes) with ``torchrun``::

    torchrun --nproc_per_node=2 -m napari_squint train DATA --out MODEL_DIR --distributed

or call :func:`train_distributed` from a script of your own (plain options, no command line).

Each rank reads the slide, builds the same graphs, and trains on its own shard
of spatial tiles (tiles are dealt to ranks round-robin after a seeded shuffle
that every rank reproduces). Gradients are averaged by DDP; the codebook's
k-means initialisation and EMA statistics are summed across ranks
(``nn/codebook.py``) and re-seeded codes are broadcast from rank 0, so every rank
holds the same codebook. Every rank takes the same number of steps per epoch.
Rank 0 alone writes the checkpoint. NCCL is used on GPUs and gloo on CPUs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from napari_squint import _constants as K


def init(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group started by torchrun (env:// rendezvous).

    Returns
    -------
    (rank, world_size, device): the device is ``cuda:LOCAL_RANK`` under NCCL, else CPU.
    """
    if not dist.is_initialized():
        if "RANK" not in os.environ:
            raise RuntimeError("distributed training needs torchrun (RANK/WORLD_SIZE are not set); see the README, 'Several processes or GPUs'")
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if dist.get_backend() == "nccl":
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        return rank, world, torch.device(f"cuda:{local}")
    return rank, world, torch.device("cpu")


def shard_cells(tile: np.ndarray, rank: int, world: int, seed: int = 0) -> np.ndarray:
    """Cells of the tiles dealt to ``rank``: (n,) tile ids -> sorted cell indices.

    Tiles are shuffled with ``seed`` (identical on every rank) and dealt
    round-robin, so shards are disjoint, cover every cell, and are spatially
    spread.
    """
    ids = np.unique(tile)
    order = np.random.default_rng(seed).permutation(ids.size)
    mine = ids[order[rank::world]]
    return np.flatnonzero(np.isin(tile, mine))


def train_ddp(model, *, callback=None, should_stop=None) -> list[dict]:
    """Train a :class:`~napari_squint.api.squint.Squint` model data-parallel.

    Call on every rank after :func:`init`, with a model built identically on
    each rank (same data, same seed). Returns this rank's history.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    from napari_squint.train.events import drive
    from napari_squint.train.loop import iter_train

    rank, world = dist.get_rank(), dist.get_world_size()
    device = model.device
    ddp = DDP(model.module, device_ids=[device.index] if device.type == "cuda" else None,
              find_unused_parameters=True, broadcast_buffers=True)
    cells = shard_cells(model.data.tile, rank, world, seed=model.config.train.seed)
    gen = iter_train(ddp, model.data, cells, model.config.train, device, history=model.history)
    n0 = len(model.history)
    drive(gen, callback=callback, should_stop=should_stop)
    return model.history[n0:]


@dataclass
class DistributedRun:
    """What a data-parallel training run needs besides the slide: plain values, no command-line objects.

    ``options`` are model options by name (``epochs``, ``seed``, ``batch_size``...); the device is chosen per
    rank (``cuda:LOCAL_RANK`` under NCCL, else CPU).
    """

    out: str | Path  #: model folder rank 0 writes
    section_key: str | None = K.SECTION_KEY
    spatial_key: str = K.SPATIAL_KEY
    genes: int | str | Sequence[str] | None = "all"
    holdout: np.ndarray | None = None  #: (n,) bool, cells kept out of training
    allow_non_counts: bool = False
    overwrite: bool = False  #: replace an existing model folder (only one napari-squint wrote)
    options: dict = field(default_factory=dict)
    backend: str | None = None  #: None: NCCL on GPUs, gloo on CPUs


def train_distributed(adata, run: DistributedRun, *, callback=None, should_stop=None) -> Path | None:
    """Train SQuINT data-parallel; call on every rank under ``torchrun``.

    Every rank reads the slide and builds the same model; each trains on its shard of tiles. Rank 0 then fits
    the masked-code head on the whole slide and writes the model folder (with ``meta["distributed"]``); the
    other ranks write nothing. ``callback`` receives progress events on rank 0 only. Returns the folder on rank 0,
    None on the others.
    """
    from napari_squint.api.squint import Squint
    from napari_squint.train.events import drive

    rank, world, device = init(run.backend)
    try:
        model = Squint(adata, section_key=run.section_key, spatial_key=run.spatial_key, genes=run.genes,
                       holdout=run.holdout, allow_non_counts=run.allow_non_counts,
                       **{**run.options, "device": str(device)})
        train_ddp(model, callback=callback if rank == 0 else None, should_stop=should_stop)
        path = None
        if rank == 0:
            drive(model.iter_fit_code_head(), callback=callback)  # on the whole slide, after the data-parallel epochs
            model.meta["distributed"] = {"world_size": world, "backend": dist.get_backend()}
            path = model.save(run.out, overwrite=run.overwrite)
        dist.barrier()
        return path
    finally:
        dist.destroy_process_group()
