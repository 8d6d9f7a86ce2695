"""Neighbour-sampled mini-batches.

A batch is a set of *seed* cells (whole spatial tiles, so most graph edges
between seeds are present for the adjacency decoder) plus their 1-hop
neighbours, which feed GraphSAGE. Memory per batch is O(batch_size * k * g)
whatever the slide size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from napari_squint.data.prepare import PreparedSlide


@dataclass
class Batch:
    """One mini-batch (all tensors on the model's device).

    ``U`` nodes (seeds and their 1-hop neighbours) feed the encoder; the ``B``
    seeds are encoded, quantised and decoded.
    """

    x_in: torch.Tensor  #: (U, g) log-normalised inputs of all nodes
    masked: torch.Tensor  #: (U,) bool, nodes whose input is replaced by the mask token
    seed_local: torch.Tensor  #: (B,) position of each seed among the U nodes
    edge_index: torch.Tensor  #: (2, E) node (0..U-1) -> seed (0..B-1) edges
    cond: torch.Tensor  #: (B, R) relative-distance covariates
    batch_id: torch.Tensor  #: (B,) section ids (n_batches = unknown)
    x_nbr: torch.Tensor | None = None  #: (B, g) microenvironment counts (targets)
    x_cell: torch.Tensor | None = None  #: (B, g) the seeds' own counts (targets)
    pos_edges: torch.Tensor | None = None  #: (2, P) seed-seed edges
    neg_edges: torch.Tensor | None = None  #: (2, P) sampled seed-seed non-edges
    seeds: np.ndarray | None = None  #: (B,) global indices of the seeds

    def to(self, device, non_blocking: bool = False) -> Batch:
        kw = {}
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            kw[name] = v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
        return Batch(**kw)

    def pin_memory(self) -> Batch:
        kw = {n: (v.pin_memory() if isinstance(v, torch.Tensor) else v)
              for n, v in ((n, getattr(self, n)) for n in self.__dataclass_fields__)}
        return Batch(**kw)


def make_batch(
    data: PreparedSlide,
    seeds: np.ndarray,
    *,
    masked: np.ndarray | None = None,
    x_in_override: dict[int, np.ndarray] | None = None,
    targets: bool = True,
    rng: np.random.Generator | None = None,
    batch_id: np.ndarray | None = None,
) -> Batch:
    """Assemble the batch of ``seeds`` (global cell indices).

    Parameters
    ----------
    masked
        (n,) bool over all cells: whose input is replaced by the mask token.
    targets
        Include X_nbr targets and positive/negative seed pairs (training).
    batch_id
        (B,) section ids overriding ``data.batch[seeds]``.
    """
    seeds = np.asarray(seeds, dtype=np.int64)
    b = seeds.size
    nb = data.nbr[seeds]  # (B, m)
    valid = nb >= 0
    deg = valid.sum(1)
    nodes = np.concatenate([seeds, nb[valid]])
    uniq, inv = np.unique(nodes, return_inverse=True)
    seed_local = inv[:b]
    src = inv[b:]
    dst = np.repeat(np.arange(b), deg)
    x = data.x_in[uniq].toarray()
    msk = masked[uniq] if masked is not None else np.zeros(uniq.size, dtype=bool)
    t = torch.from_numpy
    bid = data.batch[seeds] if batch_id is None else batch_id
    out = Batch(
        x_in=t(x), masked=t(msk), seed_local=t(seed_local), edge_index=t(np.stack([src, dst])),
        cond=t(data.cond[seeds]), batch_id=t(np.asarray(bid, dtype=np.int64)), seeds=seeds,
    )
    if targets:
        out.x_nbr = t(data.x_nbr[seeds].toarray())
        out.x_cell = t(data.counts[seeds].toarray())
        seed_of_node = np.full(uniq.size, -1, dtype=np.int64)
        seed_of_node[seed_local] = np.arange(b)
        j = seed_of_node[src]
        ok = (j >= 0) & (j != dst)
        pos = np.stack([dst[ok], j[ok]])
        rng = rng or np.random.default_rng(0)
        p = pos.shape[1]
        neg = rng.integers(0, b, size=(2, p))
        out.pos_edges, out.neg_edges = t(pos), t(neg)
    return out


def epoch_batches(data: PreparedSlide, cells: np.ndarray, batch_size: int, rng: np.random.Generator):
    """Split ``cells`` into batches of whole tiles in a random order.

    Yields arrays of global seed indices of about ``batch_size`` cells.
    """
    cells = np.asarray(cells, dtype=np.int64)
    tiles = data.tile[cells]
    order = np.argsort(tiles, kind="stable")
    cells, tiles = cells[order], tiles[order]
    bounds = np.flatnonzero(np.diff(tiles)) + 1
    groups = np.split(cells, bounds)
    perm = rng.permutation(len(groups))
    current: list[np.ndarray] = []
    size = 0
    for gi in perm:
        current.append(groups[gi])
        size += groups[gi].size
        if size >= batch_size:
            yield np.concatenate(current)
            current, size = [], 0
    if current:
        yield np.concatenate(current)


def chunks(n: int, batch_size: int):
    """Contiguous index chunks for inference over all cells."""
    for start in range(0, n, batch_size):
        yield np.arange(start, min(n, start + batch_size))
