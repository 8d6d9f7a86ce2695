"""CIFM configuration, radius-graph mini-batches, training loop and tiled inference.

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
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.utils import subgraph

from napari_squint.data.prepare import PreparedSlide
from napari_squint.data.radius import induced_edge_index, k_hop, radius_adjacency
from napari_squint.models.cifm import CifmModule
from napari_squint.models.cifm_loss import balanced_mse
from napari_squint.train.events import ProgressEvent

__all__ = [
    "CifmConfig",
    "CifmGraph",
    "SQUINT_ONLY_OPTIONS",
    "build_graph",
    "disjoint_masks",
    "graph_from_prepared",
    "tile_batches",
    "encode_tiled",
    "iter_train_cifm",
    "masked_loss",
    "reconstruct_tiled",
    "replace_rows",
    "subgraph_batch",
]

#: Options of :class:`~napari_squint.train.config.SquintConfig` that have no
#: meaning for CIFM; passing one warns and ignores it (the CLI may pass them).
SQUINT_ONLY_OPTIONS = frozenset({
    "codebook_size", "heads", "use_covariates", "learnable_mask", "ema_decay", "dead_threshold",
    "batch_embed", "adj_dim", "mask_start", "mask_end", "mask_noise", "lambda_x", "lambda_cell",
    "lambda_a", "lambda_e", "lambda_m", "kmeans_cells", "batch_unknown_p", "n_rbf", "rbf_max",
})


@dataclass
class CifmConfig:
    """Every CIFM option, shared by the Python API, the CLI and the plugin.

    Defaults are sized for a CPU; the paper's model is far larger.
    """

    # --- geometric graph (appendix B.1)
    radius: float | None = None  #: radius in slide units (paper: 20 µm); None: radius_factor * median NN distance
    radius_factor: float = 3.0  #: default radius in median nearest-neighbour distances (see docs/cifm.md)
    max_neighbours: int | None = 32  #: degree cap of the radius graph (mutual nearest), None for none
    k: int = 8  #: kNN of the PreparedSlide: X_nbr / imputed_nbr mean the same as for SQuINT
    max_degree: int = 16  #: width of the kNN table
    tile_cells: int = 256  #: cells per spatial tile (mini-batch unit)
    # --- architecture (appendix B.2)
    hidden: int = 64  #: width of the EGNN layers
    latent: int = 32  #: width D of the encoder output and of the padding embedding e
    layers: int = 2  #: void-invariant EGNN layers in the encoder and in the decoder (each)
    act: str = "silu"  #: zero-preserving activation of the bias-free MLPs
    coord_scale: float = 0.1  #: scale of the coordinate update (eq. 13)
    # --- self-supervised training (appendix B.3)
    mask_ratio: float = 0.05  #: fraction of cells removed per mini-batch (paper: 5 %)
    epochs: int = 20
    lr: float = 2e-3
    lr_schedule: str = "cosine"  #: "cosine" (decay to lr_min_frac * lr over the call's epochs) or "constant"
    lr_min_frac: float = 0.05
    weight_decay: float = 1e-5
    batch_size: int = 1024  #: core cells per mini-batch (whole tiles)
    halo_hops: int | None = None  #: halo around the core; None: exact receptive field (2 * layers)
    grad_clip: float = 5.0
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None  #: torch CPU threads (None: torch's default)
    infer_cells: int = 4096  #: core cells per inference chunk

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> CifmConfig:
        """Check every value; raises ``ValueError`` naming the option."""
        def pos_int(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"CIFM option {name} must be a positive integer, got {v!r}")

        for name in ("k", "max_degree", "tile_cells", "hidden", "latent", "layers", "epochs",
                     "batch_size", "infer_cells"):
            if name == "epochs" and self.epochs == 0:
                continue
            pos_int(name)
        if self.radius is not None and not (float(self.radius) > 0 and np.isfinite(self.radius)):
            raise ValueError(f"CIFM option radius must be a positive number or None, got {self.radius!r}")
        if not (float(self.radius_factor) > 0):
            raise ValueError(f"CIFM option radius_factor must be positive, got {self.radius_factor!r}")
        if not (0.0 < float(self.mask_ratio) < 1.0):
            raise ValueError(f"CIFM option mask_ratio must lie in (0, 1), got {self.mask_ratio!r}")
        if not float(self.lr) > 0:
            raise ValueError(f"CIFM option lr must be positive, got {self.lr!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"CIFM option lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if not 0.0 <= float(self.lr_min_frac) <= 1.0:
            raise ValueError(f"CIFM option lr_min_frac must lie in [0, 1], got {self.lr_min_frac!r}")
        if self.halo_hops is not None and (isinstance(self.halo_hops, bool) or int(self.halo_hops) < 0):
            raise ValueError(f"CIFM option halo_hops must be a non-negative integer or None, got {self.halo_hops!r}")
        if self.max_neighbours is not None:
            pos_int("max_neighbours")
        return self

    @property
    def receptive_hops(self) -> int:
        """Hops that influence a decoded cell: encoder layers + decoder layers."""
        return 2 * int(self.layers)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CifmConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown CIFM option(s): {sorted(unknown)}")
        return cls(**d)

    def update(self, **overrides) -> CifmConfig:
        """Set options by name (``epochs=5``, ``radius=20``...).

        SQuINT-only options (:data:`SQUINT_ONLY_OPTIONS`, e.g. ``codebook_size``
        passed by ``squint train --model cifm``) are ignored with a
        ``UserWarning``; any other unknown name raises ``ValueError``.
        """
        names = {f.name for f in fields(self)}
        for key, value in overrides.items():
            if key in names:
                setattr(self, key, value)
            elif key in SQUINT_ONLY_OPTIONS:
                warnings.warn(f"option {key}={value!r} only applies to SQuINT; CIFM ignores it",
                              UserWarning, stacklevel=3)
            else:
                raise ValueError(f"unknown CIFM option {key!r} (options: {sorted(names)})")
        return self.validate()


# ---------------------------------------------------------------------- graph
@dataclass
class CifmGraph:
    """The arrays CIFM runs on: expression, model coordinates, radius graph, tiles.

    Attributes
    ----------
    x_in
        ``(n, g)`` CSR normalised log expression (log1p of counts per 10^4).
    coords
        ``(n, 2)`` float64 coordinates in model units (slide units divided by
        the section's median nearest-neighbour distance).
    adj
        ``(n, n)`` CSR block-diagonal radius graph (sections never connected).
    section
        ``(n,)`` int64 section id.
    tile
        ``(n,)`` int64 spatial tile id (unique across sections).
    radius
        ``(n_sections,)`` radius of each section, in slide units.
    """

    x_in: sp.csr_matrix
    coords: np.ndarray
    adj: sp.csr_matrix
    section: np.ndarray
    tile: np.ndarray
    radius: np.ndarray

    @property
    def n_cells(self) -> int:
        return self.x_in.shape[0]

    def mean_degree(self) -> float:
        return float(self.adj.nnz / max(self.n_cells, 1))


def _section_scale(coords: np.ndarray) -> float:
    from napari_squint.data.radius import median_nn_distance

    return median_nn_distance(coords) if coords.shape[0] >= 2 else 1.0


def build_graph(
    x_in,
    coords: np.ndarray,
    section: np.ndarray,
    cfg: CifmConfig,
    *,
    tile: np.ndarray | None = None,
    scales: dict[int, float] | None = None,
) -> CifmGraph:
    """Build a :class:`CifmGraph` from expression, slide coordinates and section ids.

    Parameters
    ----------
    x_in
        ``(n, g)`` normalised log expression (dense or sparse).
    coords
        ``(n, 2)`` coordinates in slide units.
    section
        ``(n,)`` integer section ids (graphs never cross them).
    cfg
        Radius options (``radius``, ``radius_factor``, ``max_neighbours``, ``tile_cells``).
    tile
        Optional ``(n,)`` tile ids; computed on a grid otherwise.
    scales
        Optional median nearest-neighbour distance of each section id; derived
        from ``coords`` otherwise.

    Returns
    -------
    CifmGraph
    """
    coords = np.asarray(coords, dtype=np.float64)
    section = np.asarray(section, dtype=np.int64)
    n = coords.shape[0]
    if section.shape != (n,):
        raise ValueError(f"section must have shape ({n},), got {section.shape}")
    n_sec = int(section.max()) + 1 if n else 0
    model_xy = np.zeros_like(coords)
    radius = np.ones(max(n_sec, 1))
    tiles = np.zeros(n, dtype=np.int64) if tile is None else np.asarray(tile, dtype=np.int64)
    offset = 0
    for s in range(n_sec):
        idx = np.flatnonzero(section == s)
        if idx.size == 0:
            continue
        xy = coords[idx]
        scale = float(scales[s]) if scales is not None and s in scales else _section_scale(xy)
        radius[s] = float(cfg.radius) if cfg.radius is not None else cfg.radius_factor * scale
        model_xy[idx] = (xy - xy.mean(0)) / scale
        if tile is None:
            t = _grid_tiles(xy, cfg.tile_cells)
            tiles[idx] = t + offset
            offset += int(t.max()) + 1
    adj = radius_adjacency(coords, radius, groups=section, max_neighbours=cfg.max_neighbours)
    x = sp.csr_matrix(x_in, dtype=np.float32)
    return CifmGraph(x_in=x, coords=model_xy, adj=adj, section=section, tile=tiles, radius=radius)


def graph_from_prepared(data: PreparedSlide, cfg: CifmConfig) -> CifmGraph:
    """:func:`build_graph` on a :class:`PreparedSlide` (its ``x_in``, ``batch``, ``tile``)."""
    scales = {b: data.scales[name] for b, name in enumerate(data.sections) if name in data.scales}
    _, section = np.unique(data.batch, return_inverse=True)
    uniq = np.unique(data.batch)
    scales = {i: scales[int(b)] for i, b in enumerate(uniq) if int(b) in scales}
    return build_graph(data.x_in, data.coords, section, cfg, tile=data.tile, scales=scales)


def _grid_tiles(coords: np.ndarray, tile_cells: int) -> np.ndarray:
    """Grid tiles of about ``tile_cells`` cells (ids 0.. local to the section)."""
    n = coords.shape[0]
    n_tiles = max(1, int(round(n / tile_cells)))
    lo, hi = coords.min(0), coords.max(0)
    span = np.maximum(hi - lo, 1e-12)
    nx = max(1, int(round(np.sqrt(n_tiles * span[0] / span[1]))))
    ny = max(1, int(round(n_tiles / nx)))
    ix = np.minimum(((coords[:, 0] - lo[0]) / span[0] * nx).astype(np.int64), nx - 1)
    iy = np.minimum(((coords[:, 1] - lo[1]) / span[1] * ny).astype(np.int64), ny - 1)
    _, t = np.unique(ix * ny + iy, return_inverse=True)
    return t.astype(np.int64)


# ------------------------------------------------------------------- batches
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


def tile_batches(tile: np.ndarray, cells: np.ndarray, batch_size: int,
                 rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Group ``cells`` into batches of whole tiles of at least ``batch_size`` cells.

    Tiles come in a random order when ``rng`` is given, else in id order.
    """
    cells = np.asarray(cells, dtype=np.int64)
    if cells.size == 0:
        return
    t = tile[cells]
    order = np.argsort(t, kind="stable")
    cells, t = cells[order], t[order]
    groups = np.split(cells, np.flatnonzero(np.diff(t)) + 1)
    perm = rng.permutation(len(groups)) if rng is not None else np.arange(len(groups))
    current, size = [], 0
    for gi in perm:
        current.append(groups[gi])
        size += groups[gi].size
        if size >= batch_size:
            yield np.concatenate(current)
            current, size = [], 0
    if current:
        yield np.concatenate(current)


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


# ---------------------------------------------------------------------- train
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


# ------------------------------------------------------------------ inference
def _positions(n: int, cells: np.ndarray) -> np.ndarray:
    """``pos[c]`` = row of cell ``c`` in ``cells`` (cells must be unique)."""
    if np.unique(cells).size != cells.size:
        raise ValueError("cells holds duplicate indices")
    if cells.size and (cells.min() < 0 or cells.max() >= n):
        raise ValueError(f"cells holds indices outside [0, {n})")
    pos = np.full(n, -1, dtype=np.int64)
    pos[cells] = np.arange(cells.size)
    return pos


def _chunks(graph: CifmGraph, cells: np.ndarray, size: int) -> Iterator[np.ndarray]:
    yield from tile_batches(graph.tile, cells, size, None)


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
    for core in _chunks(graph, cells, cfg.infer_cells):
        b = subgraph_batch(graph, core, cfg.receptive_hops, x_override=x_override)
        m = masked[b.nodes]  # may all be masked (deep inside a large region): decoded from e alone
        keep = torch.from_numpy(~m)
        ei = b.edge_index
        enc_edges, _ = subgraph(keep, ei, relabel_nodes=True, num_nodes=b.nodes.size)
        x, xy = b.x.to(device), b.coords.to(device)
        z = module.encode(x[keep.to(device)], xy[keep.to(device)], enc_edges.to(device))
        z_pad = module.pad(z, torch.from_numpy(m).to(device))
        dec = module.decode(z_pad, xy, ei.to(device)).cpu().numpy()
        rows = np.flatnonzero(b.core)
        out[pos[b.nodes[rows]]] = dec[rows]
    return out


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
    for core in _chunks(graph, cells, cfg.infer_cells):
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
    """Balanced MSE of reconstructing ``cells`` under disjoint random masks.

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
    return float(balanced_mse(t, p, batch=torch.from_numpy(np.concatenate(secs))))


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
