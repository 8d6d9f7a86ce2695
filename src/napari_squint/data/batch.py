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
from napari_squint.data.tiles import tile_batches


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
    #: (B,) per-row sums of log(x!) of x_nbr and x_cell (training batches; the NB likelihood's data constant)
    lfact_nbr: torch.Tensor | None = None
    lfact_cell: torch.Tensor | None = None

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
    yield from tile_batches(data.tile, cells, batch_size, rng)


def chunks(n: int, batch_size: int):
    """Contiguous index chunks for inference over all cells."""
    for start in range(0, n, batch_size):
        yield np.arange(start, min(n, start + batch_size))


# ------------------------------------------------------------------ training: once per slide, once per epoch
#: dense copies of a slide's matrices kept for training when they fit in this many bytes together (the rest are
#: gathered from CSR at each step); override with NAPARI_SQUINT_DENSE_CACHE_MB
DENSE_CACHE_BYTES = 1 << 30


def _dense_budget() -> int:
    import os

    mb = os.environ.get("NAPARI_SQUINT_DENSE_CACHE_MB")
    return int(float(mb) * 2**20) if mb else DENSE_CACHE_BYTES


class SlideTensors:
    """A slide's training arrays as torch tensors, built once per training run.

    ``x_in``, ``x_nbr`` and ``counts`` are dense ``(n, g)`` float32 tensors (on ``device``) when they fit in the
    dense-cache budget, so a step gathers its rows with one ``index_select`` each and nothing is densified or
    copied from host to tensor per step; a matrix that does not fit stays CSR and its rows are densified per step.
    """

    def __init__(self, data: PreparedSlide, device: torch.device | str = "cpu", *, budget: int | None = None):
        device = torch.device(device)
        self.device, self.data = device, data
        budget = _dense_budget() if budget is None else budget
        n, g = data.n_cells, data.n_genes
        self.dense: dict[str, torch.Tensor] = {}
        for name in ("x_in", "x_nbr", "counts"):  # x_in first: a step gathers ~2x more rows of it (the halo)
            size = n * g * 4
            if size <= budget:
                self.dense[name] = torch.from_numpy(getattr(data, name).toarray().astype(np.float32, copy=False)).to(device)
                budget -= size
        self.cond = torch.from_numpy(np.ascontiguousarray(data.cond, dtype=np.float32)).to(device)
        from napari_squint.nn.nb import log_factorial_rows

        self.lfact = {name: torch.from_numpy(log_factorial_rows(getattr(data, name))).to(device)
                      for name in ("x_nbr", "counts")}
        self.pin = device.type == "cuda"

    def rows(self, name: str, idx_np: np.ndarray, idx_t: torch.Tensor) -> torch.Tensor:
        if name in self.dense:
            return self.dense[name].index_select(0, idx_t)
        t = torch.from_numpy(getattr(self.data, name)[idx_np].toarray())
        return (t.pin_memory() if self.pin else t).to(self.device, non_blocking=True)


@dataclass
class EpochPlan:
    """Index arrays of every mini-batch of one epoch, computed at once (vectorised) at the start of the epoch.

    Batch ``i`` covers seeds ``seeds[s_off[i]:s_off[i+1]]``, nodes ``nodes[u_off[i]:u_off[i+1]]`` (the seeds and
    their 1-hop neighbours, sorted by cell id as :func:`make_batch` orders them), edges
    ``src/dst[e_off[i]:e_off[i+1]]`` (local ids) and seed pairs ``pos/neg[:, p_off[i]:p_off[i+1]]``.
    """

    seeds: np.ndarray
    s_off: np.ndarray
    seed_local: np.ndarray
    batch_id: np.ndarray
    nodes: np.ndarray
    u_off: np.ndarray
    node_masked: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    e_off: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    p_off: np.ndarray

    def __len__(self) -> int:
        return self.s_off.size - 1


def plan_epoch(data: PreparedSlide, batches: list[np.ndarray], *, masked: np.ndarray | None,
               batch_ids: list[np.ndarray], neg_seeds: list[int]) -> EpochPlan:
    """The index arrays of ``batches`` (lists of global seed ids), as :func:`make_batch` would build them one by
    one with ``rng=np.random.default_rng(neg_seeds[i])`` and ``batch_id=batch_ids[i]``, but in a few vectorised
    numpy calls for the whole epoch."""
    n = data.n_cells
    sizes = np.array([b.size for b in batches], dtype=np.int64)
    s_off = np.concatenate([[0], np.cumsum(sizes)])
    seeds = np.concatenate(batches).astype(np.int64) if batches else np.zeros(0, np.int64)
    bo = np.repeat(np.arange(sizes.size), sizes)  # batch of each seed
    nb = data.nbr[seeds]
    valid = nb >= 0
    deg = valid.sum(1)
    nbv = nb[valid]
    bo_edge = np.repeat(bo, deg)
    keys = np.concatenate([bo * n + seeds, bo_edge * n + nbv])
    ukeys, inv = np.unique(keys, return_inverse=True)
    inv = inv.ravel()
    u_off = np.searchsorted(ukeys // n, np.arange(sizes.size + 1))
    nodes = ukeys % n
    seed_local = inv[:seeds.size] - u_off[bo]
    src = inv[seeds.size:] - u_off[bo_edge]
    pos_in_batch = np.arange(seeds.size) - s_off[bo]
    dst = np.repeat(pos_in_batch, deg)
    e_off = np.concatenate([[0], np.cumsum(np.bincount(bo_edge, minlength=sizes.size))])
    # seed-seed edges (positive pairs) and as many random seed pairs (negatives) per batch
    seed_of_node = np.full(nodes.size, -1, dtype=np.int64)
    seed_of_node[u_off[bo] + seed_local] = pos_in_batch
    j = seed_of_node[u_off[bo_edge] + src]
    ok = (j >= 0) & (j != dst)
    pos = np.stack([dst[ok], j[ok]])
    p_cnt = np.bincount(bo_edge[ok], minlength=sizes.size)
    p_off = np.concatenate([[0], np.cumsum(p_cnt)])
    neg = np.concatenate([np.random.default_rng(s).integers(0, b, size=(2, p)) for s, b, p in
                          zip(neg_seeds, sizes, p_cnt)], axis=1) if sizes.size else np.zeros((2, 0), np.int64)
    msk = masked[nodes] if masked is not None else np.zeros(nodes.size, dtype=bool)
    bid = np.concatenate(batch_ids).astype(np.int64) if batch_ids else np.zeros(0, np.int64)
    return EpochPlan(seeds=seeds, s_off=s_off, seed_local=seed_local, batch_id=bid, nodes=nodes, u_off=u_off,
                     node_masked=msk, src=src, dst=dst, e_off=e_off, pos=pos, neg=neg, p_off=p_off)


class EpochBatches:
    """The batches of an :class:`EpochPlan`, gathered from :class:`SlideTensors` (index arrays moved to the
    device once per epoch; a step only slices them and gathers rows)."""

    def __init__(self, plan: EpochPlan, tensors: SlideTensors):
        self.plan, self.tensors = plan, tensors
        dev = tensors.device
        t = torch.from_numpy
        self.seeds_t = t(plan.seeds).to(dev)
        self.nodes_t = t(plan.nodes).to(dev)
        self.masked_t = t(plan.node_masked).to(dev)
        self.seed_local_t = t(plan.seed_local).to(dev)
        self.edges_t = t(np.stack([plan.src, plan.dst])).to(dev)
        self.bid_t = t(plan.batch_id).to(dev)
        self.pos_t, self.neg_t = t(plan.pos).to(dev), t(plan.neg).to(dev)

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> Batch:
        p, ts = self.plan, self.tensors
        s0, s1 = int(p.s_off[i]), int(p.s_off[i + 1])
        u0, u1 = int(p.u_off[i]), int(p.u_off[i + 1])
        e0, e1 = int(p.e_off[i]), int(p.e_off[i + 1])
        q0, q1 = int(p.p_off[i]), int(p.p_off[i + 1])
        seeds_np, seeds_t = p.seeds[s0:s1], self.seeds_t[s0:s1]
        nodes_np, nodes_t = p.nodes[u0:u1], self.nodes_t[u0:u1]
        return Batch(
            x_in=ts.rows("x_in", nodes_np, nodes_t), masked=self.masked_t[u0:u1],
            seed_local=self.seed_local_t[s0:s1], edge_index=self.edges_t[:, e0:e1].contiguous(),
            cond=ts.cond.index_select(0, seeds_t), batch_id=self.bid_t[s0:s1],
            x_nbr=ts.rows("x_nbr", seeds_np, seeds_t), x_cell=ts.rows("counts", seeds_np, seeds_t),
            pos_edges=self.pos_t[:, q0:q1].contiguous(), neg_edges=self.neg_t[:, q0:q1].contiguous(), seeds=seeds_np,
            lfact_nbr=ts.lfact["x_nbr"].index_select(0, seeds_t), lfact_cell=ts.lfact["counts"].index_select(0, seeds_t),
        )
