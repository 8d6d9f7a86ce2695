"""CIFM's mini-batches: a core of whole tiles plus the halo of cells within a few edges of it.

Memory does not grow with the slide: a mini-batch is a few whole spatial tiles
(``core`` cells, about ``batch_size`` of them) plus a *halo* of the cells
within ``hops`` edges of the core in the radius graph. With ``hops =
n_layers_enc + n_layers_dec`` the halo is the exact receptive field of the core
cells, so the core cells' outputs equal those of a forward pass on the whole
section (up to floating-point rounding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from napari_squint.data.cifm_graph import CifmGraph
from napari_squint.data.radius import induced_edge_index, k_hop
from napari_squint.data.tiles import tile_batches

__all__ = ["SubgraphBatch", "disjoint_masks", "replace_rows", "subgraph_batch", "tile_batches"]


@dataclass
class SubgraphBatch:
    """A core set of cells plus its halo, with local indices (tensors on CPU)."""

    nodes: np.ndarray  #: (U,) global indices, sorted
    core: np.ndarray  #: (U,) bool, True for core cells
    x: torch.Tensor  #: (U, g) normalised log expression
    coords: torch.Tensor  #: (U, 2) model coordinates
    edge_index: torch.Tensor  #: (2, E) local radius-graph edges
    section: torch.Tensor  #: (U,) section ids


def subgraph_batch(
    graph: CifmGraph, core, hops: int, *, x_override: np.ndarray | None = None
) -> SubgraphBatch:
    """The subgraph induced by ``core`` and every cell within ``hops`` edges of it.

    Parameters
    ----------
    graph
        The slide graph.
    core
        Global indices of the core cells.
    hops
        Halo width in edges (the receptive field for exact outputs).
    x_override
        Optional ``(n, g)`` expression (dense or sparse) used instead of
        ``graph.x_in``.
    """
    core = np.unique(np.asarray(core, dtype=np.int64))
    nodes = k_hop(graph.adj, core, hops)
    is_core = np.isin(nodes, core, assume_unique=True)
    src = graph.x_in if x_override is None else x_override
    x = src[nodes].toarray() if sp.issparse(src) else np.asarray(src[nodes], np.float32)
    return SubgraphBatch(
        nodes=nodes, core=is_core, x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        coords=torch.from_numpy(graph.coords[nodes].astype(np.float32)),
        edge_index=torch.from_numpy(induced_edge_index(graph.adj, nodes)),
        section=torch.from_numpy(graph.section[nodes]),
    )


def replace_rows(x: sp.csr_matrix, rows: np.ndarray, values: np.ndarray) -> sp.csr_matrix:
    """A copy of ``x`` whose ``rows`` are replaced by the dense ``values`` (kept sparse).

    Parameters
    ----------
    x
        ``(n, g)`` CSR matrix.
    rows
        ``(m,)`` unique row indices.
    values
        ``(m, g)`` new rows.
    """
    rows = np.asarray(rows, dtype=np.int64)
    values = np.asarray(values, dtype=np.float32)
    n, g = x.shape
    if values.shape != (rows.size, g):
        raise ValueError(f"values has shape {values.shape}; expected ({rows.size}, {g})")
    keep = np.ones(n, dtype=np.float32)
    keep[rows] = 0.0
    base = sp.diags(keep) @ sp.csr_matrix(x, dtype=np.float32)
    new = sp.csr_matrix((values.ravel(), (np.repeat(rows, g), np.tile(np.arange(g), rows.size))), shape=(n, g))
    out = (base + new).tocsr()
    out.eliminate_zeros()
    return out


def disjoint_masks(cells: np.ndarray, ratio: float, *, seed: int = 0,
                   n_rounds: int | None = None) -> list[np.ndarray]:
    """Split ``cells`` into ``ceil(1 / ratio)`` random disjoint groups (each a mask).

    Masking one group at a time reconstructs every cell exactly once, each
    time with about ``1 - ratio`` of its context present, as in training.
    """
    cells = np.asarray(cells, dtype=np.int64)
    if n_rounds is None:
        n_rounds = int(np.ceil(1.0 / ratio))
    n_rounds = max(1, min(int(n_rounds), cells.size))
    perm = np.random.default_rng(seed).permutation(cells)
    return [np.sort(g) for g in np.array_split(perm, n_rounds) if g.size]
