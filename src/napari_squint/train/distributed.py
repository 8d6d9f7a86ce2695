"""Data-parallel training on torch.distributed (DistributedDataParallel).

Launch one process per GPU (or several CPU processes) with ``torchrun``::

    torchrun --nproc_per_node=2 -m napari_squint.cli.main train DATA --out MODEL_DIR --distributed

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

import numpy as np
import torch
import torch.distributed as dist


def init(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group started by torchrun (env:// rendezvous).

    Returns
    -------
    (rank, world_size, device): the device is ``cuda:LOCAL_RANK`` under NCCL, else CPU.
    """
    if not dist.is_initialized():
        if "RANK" not in os.environ:
            raise RuntimeError("--distributed needs torchrun (RANK/WORLD_SIZE are not set); see docs/benchmarks.md")
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


def train_distributed_cli(args, adata, *, holdout, genes, options) -> int:
    """``squint train ... --distributed`` (under torchrun)."""
    from napari_squint.api.squint import Squint
    from napari_squint.cli import common
    from napari_squint.cli.progress import TerminalProgress

    if args.model != "squint":
        raise ValueError("--distributed is available for --model squint only")
    rank, world, device = init()
    options = {**options, "device": str(device)}
    model = Squint(adata, section_key=common.section_key(args), spatial_key=args.spatial_key, genes=genes,
                   holdout=holdout, allow_non_counts=args.allow_non_counts, **options)
    train_ddp(model, callback=TerminalProgress() if rank == 0 else None)
    if rank == 0:
        from napari_squint.train.events import drive

        drive(model.iter_fit_code_head())  # on the whole slide, after the data-parallel training
        model.meta["distributed"] = {"world_size": world, "backend": dist.get_backend()}
        model.save(args.out, overwrite=getattr(args, "overwrite", False))
        print(f"rank 0 wrote {args.out} (world size {world})")
    dist.barrier()
    dist.destroy_process_group()
    return 0
