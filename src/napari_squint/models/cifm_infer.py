"""CIFM inference on slides of any size: decode or encode chunk by chunk with exact halos.

Each chunk is a few whole tiles plus the cells within the receptive field of
them (:func:`napari_squint.data.cifm_batch.subgraph_batch`), so every output
equals that of one forward pass on the whole section, in bounded memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch_geometric.utils import subgraph

from napari_squint.data.cifm_batch import disjoint_masks, replace_rows, subgraph_batch
from napari_squint.data.cifm_graph import CifmGraph
from napari_squint.data.imputation import hops_to_observed
from napari_squint.data.tiles import tile_batches
from napari_squint.models.cifm import CifmModule
from napari_squint.models.cifm_loss import balanced_mse, loss_function

if TYPE_CHECKING:
    from napari_squint.config import CifmConfig

__all__ = ["encode_tiled", "infill_tiled", "masked_loss", "reconstruct_tiled"]


def _positions(n: int, cells: np.ndarray) -> np.ndarray:
    """``pos[c]`` = row of cell ``c`` in ``cells`` (cells must be unique)."""
    if np.unique(cells).size != cells.size:
        raise ValueError("cells holds duplicate indices")
    if cells.size and (cells.min() < 0 or cells.max() >= n):
        raise ValueError(f"cells holds indices outside [0, {n})")
    pos = np.full(n, -1, dtype=np.int64)
    pos[cells] = np.arange(cells.size)
    return pos


@torch.no_grad()
def reconstruct_tiled(
    module: CifmModule,
    graph: CifmGraph,
    masked: np.ndarray,
    cells: np.ndarray,
    cfg: CifmConfig,
    device: torch.device,
    *,
    x_override: np.ndarray | None = None,
) -> np.ndarray:
    """Decode ``cells`` with the ``masked`` cells removed from the encoder (eqs. 2-3).

    Masked cells are padded with ``e`` at their location. Outputs are exact
    (the halo is the full receptive field), computed chunk by chunk.

    Parameters
    ----------
    masked
        ``(n,)`` bool over all cells of ``graph``.
    cells
        ``(m,)`` cells to return (usually masked ones; an unmasked cell's
        output is its reconstruction with itself visible).
    x_override
        Optional ``(n, g)`` expression (dense or CSR) replacing ``graph.x_in``.

    Returns
    -------
    numpy.ndarray
        ``(m, g)`` float32 normalised log expression, rows in ``cells`` order.
    """
    module.eval()
    masked = np.asarray(masked, dtype=bool)
    cells = np.asarray(cells, dtype=np.int64)
    out = np.zeros((cells.size, module.n_genes), dtype=np.float32)
    pos = _positions(graph.n_cells, cells)
    for core in tile_batches(graph.tile, cells, cfg.infer_cells):
        b = subgraph_batch(graph, core, cfg.receptive_hops, x_override=x_override)
        m = masked[b.nodes]  # may all be masked (deep inside a large region): decoded from e alone
        keep = torch.from_numpy(~m)
        ei = b.edge_index
        enc_edges, _ = subgraph(keep, ei, relabel_nodes=True, num_nodes=b.nodes.size)
        x, xy = b.x.to(device), b.coords.to(device)
        z = module.encode(x[keep.to(device)], xy[keep.to(device)], enc_edges.to(device))
        z_pad = module.pad(z, torch.from_numpy(m).to(device))
        dec = module.decode(z_pad, xy, ei.to(device))
        if cfg.loss == "poisson":  # the decoder predicts expression per 10^4; every caller reads log1p of it
            dec = torch.log1p(dec)
        dec = dec.cpu().numpy()
        rows = np.flatnonzero(b.core)
        out[pos[b.nodes[rows]]] = dec[rows]
    return out


@torch.no_grad()
def infill_tiled(
    module: CifmModule,
    graph: CifmGraph,
    masked: np.ndarray,
    cfg: CifmConfig,
    device: torch.device,
    *,
    path: str = "infill",
):
    """Reconstruct every ``masked`` cell; ``"infill"`` goes ring by ring from the observed cells inward.

    With ``path="infill"`` the masked cells are ordered by hops to the nearest
    observed cell on the radius graph (ring 1 reads an observed cell). Ring
    ``r`` is decoded with rings ``< r`` already put back into the graph with
    their reconstruction, and rings ``>= r`` removed, so every decoded cell
    has at least one cell of context within one hop (unless its connected
    component holds no observed cell at all). ``"oneshot"`` decodes all of
    them at once with every masked cell removed (eqs. 2-3).

    Returns
    -------
    x_all : scipy.sparse.csr_matrix
        ``(n, g)`` ``graph.x_in`` with the masked rows replaced by their reconstruction.
    rings : numpy.ndarray
        ``(m,)`` ring of each masked cell (in increasing cell order; all 1 for ``"oneshot"``).
    """
    if path not in ("infill", "oneshot"):
        raise ValueError(f"path must be 'infill' or 'oneshot', got {path!r}")
    masked = np.asarray(masked, dtype=bool)
    cells = np.flatnonzero(masked)
    if cells.size == 0:
        return graph.x_in, np.zeros(0, dtype=np.int64)
    if path == "oneshot":
        rec = reconstruct_tiled(module, graph, masked, cells, cfg, device)
        return replace_rows(graph.x_in, cells, rec), np.ones(cells.size, dtype=np.int64)
    rings = hops_to_observed(cells, graph.adj, ~masked)
    cur_mask = masked.copy()
    x_cur = graph.x_in
    for r in np.unique(rings):
        rows = cells[rings == r]
        rec = reconstruct_tiled(module, graph, cur_mask, rows, cfg, device, x_override=x_cur)
        x_cur = replace_rows(x_cur, rows, rec)
        cur_mask[rows] = False
    return x_cur, rings


@torch.no_grad()
def encode_tiled(
    module: CifmModule,
    graph: CifmGraph,
    cells: np.ndarray,
    cfg: CifmConfig,
    device: torch.device,
    *,
    masked: np.ndarray | None = None,
    x_override: np.ndarray | None = None,
) -> np.ndarray:
    """Microenvironment embeddings (encoder on the radius graph) of ``cells``.

    ``masked`` cells (if given) are removed from the graph first; they must
    not be among ``cells``.

    Returns
    -------
    numpy.ndarray
        ``(m, latent)`` float32, rows in ``cells`` order.
    """
    module.eval()
    cells = np.asarray(cells, dtype=np.int64)
    masked = np.zeros(graph.n_cells, bool) if masked is None else np.asarray(masked, dtype=bool)
    if masked[cells].any():
        raise ValueError("encode_tiled: some requested cells are masked (removed from the graph)")
    out = np.zeros((cells.size, module.latent), dtype=np.float32)
    pos = _positions(graph.n_cells, cells)
    hops = int(cfg.layers)
    for core in tile_batches(graph.tile, cells, cfg.infer_cells):
        b = subgraph_batch(graph, core, hops, x_override=x_override)
        keep = torch.from_numpy(~masked[b.nodes])
        ei, _ = subgraph(keep, b.edge_index, relabel_nodes=True, num_nodes=b.nodes.size)
        z = module.encode(b.x[keep].to(device), b.coords[keep].to(device), ei.to(device)).cpu().numpy()
        kept = b.nodes[keep.numpy()]
        is_core = b.core[keep.numpy()]
        out[pos[kept[is_core]]] = z[is_core]
    return out


@torch.no_grad()
def masked_loss(
    module: CifmModule,
    graph: CifmGraph,
    cells: np.ndarray,
    cfg: CifmConfig,
    device: torch.device,
    *,
    seed: int = 0,
    n_rounds: int | None = None,
) -> float:
    """The training loss (``cfg.loss``; balanced MSE for ``"poisson"``) of reconstructing ``cells`` under disjoint
    random masks.

    ``cells`` are split into ``n_rounds`` (default ``ceil(1 / mask_ratio)``)
    random disjoint groups; each group is masked in turn among the cells of
    ``graph`` and reconstructed. Used for validation.
    """
    cells = np.asarray(cells, dtype=np.int64)
    rounds = disjoint_masks(cells, cfg.mask_ratio, seed=seed, n_rounds=n_rounds)
    preds, trues, secs = [], [], []
    for group in rounds:
        masked = np.zeros(graph.n_cells, dtype=bool)
        masked[group] = True
        preds.append(reconstruct_tiled(module, graph, masked, group, cfg, device))
        trues.append(graph.x_in[group].toarray())
        secs.append(graph.section[group])
    p, t = torch.from_numpy(np.concatenate(preds)), torch.from_numpy(np.concatenate(trues))
    # reconstructions are log1p in every case; the capped balance reads the graph's share of zeros
    fn = balanced_mse if cfg.loss == "poisson" else loss_function(cfg.loss, graph.x_in)
    keep = t.sum(dim=1) > 0  # empty cells are never targets, as in training
    return float(fn(t[keep], p[keep], batch=torch.from_numpy(np.concatenate(secs))[keep]))


