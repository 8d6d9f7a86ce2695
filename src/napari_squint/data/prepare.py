"""Slides -> the arrays a model trains on.

:class:`PreparedSlide` holds, for all sections stacked together (graphs never
cross sections):

* ``counts`` (n, g) CSR raw counts of the model's genes,
* ``x_in`` (n, g) CSR log1p(counts normalised to 10^4) model inputs (scanpy),
* ``nbr`` (n, m) padded neighbour table in global indices (-1 padding),
* ``x_nbr`` (n, g) CSR microenvironment counts (cell + neighbours),
* ``cond`` (n, R) relative-distance covariates, ``batch`` (n,) section ids,
* ``tile`` (n,) spatial tile ids used to form mini-batches,
* ``coords`` (n, 2) or (n, 3): a slide with (x, y, z) coordinates is a volume,
  and its graph, covariates, scale and tiles are all built in 3D.

Everything is sparse or O(n * k): nothing here is a dense cells x genes matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from napari_squint.data.covariates import rbf_covariates
from napari_squint.data.graph import knn_graph, median_nn_distance, neighbourhood_sum
from napari_squint.data.tiles import grid_tiles
from napari_squint.data.validate import SlideError, validate_slide


@dataclass
class GraphConfig:
    """How a slide becomes a graph. Shared by the API, the CLI and the plugin."""

    k: int = 8  #: nearest neighbours (symmetrised)
    max_degree: int = 16  #: width of the padded neighbour table
    n_rbf: int = 16  #: RBF centres of the distance covariates
    rbf_max: float = 4.0  #: largest centre, in median-NN units
    #: target cells per spatial tile; a mini-batch is ~batch_size/tile_cells random tiles from across the slide.
    #: Small tiles keep batches spatially diverse: with 256-cell tiles each batch covered one region, the decoder's
    #: biases tracked each batch's local mean and the latents collapsed (synthetic 8,000 x 200: deviance explained
    #: 0.00 -> 0.14; MERFISH 0.35 -> 0.55 with 8-cell tiles, 0.51 with 32), while seed-seed edges for the adjacency
    #: loss remain inside tiles. Smaller tiles mean larger halos (slower steps on wide panels): 16 is the compromise.
    tile_cells: int = 16


@dataclass
class PreparedSlide:
    counts: sp.csr_matrix
    x_in: sp.csr_matrix
    nbr: np.ndarray
    x_nbr: sp.csr_matrix
    cond: np.ndarray
    batch: np.ndarray
    tile: np.ndarray
    coords: np.ndarray
    obs_names: pd.Index
    genes: list[str]
    sections: list[str]
    scales: dict[str, float] = field(default_factory=dict)

    def replace_counts(self, cells: np.ndarray, counts) -> PreparedSlide:
        """A copy whose ``cells`` have new counts (imputed or perturbed); the graph is unchanged.

        ``x_in`` and ``x_nbr`` are recomputed; the original object is untouched.
        """
        import copy

        cells = np.asarray(cells, dtype=np.int64)
        new = sp.csr_matrix(counts, dtype=np.float32)
        if new.shape != (cells.size, self.n_genes):
            raise ValueError(f"counts has shape {new.shape}; expected ({cells.size}, {self.n_genes})")
        keep = np.ones(self.n_cells, dtype=bool)
        keep[cells] = False
        eye = sp.identity(self.n_cells, dtype=np.float32, format="csr")
        sel_keep = eye[np.flatnonzero(keep)]
        place = sp.csr_matrix((np.ones(cells.size, dtype=np.float32), (cells, np.arange(cells.size))),
                              shape=(self.n_cells, cells.size))
        counts_new = (sel_keep.T @ self.counts[keep] + place @ new).tocsr()
        out = copy.copy(self)
        out.counts = counts_new
        out.x_in = log_normalise_sparse(counts_new)
        out.x_nbr = neighbourhood_sum(counts_new, self.nbr)
        return out

    def library(self) -> np.ndarray:
        """(n,) total counts per cell."""
        return np.asarray(self.counts.sum(1)).ravel()

    @property
    def n_cells(self) -> int:
        return self.counts.shape[0]

    @property
    def n_genes(self) -> int:
        return self.counts.shape[1]


def log_normalise_sparse(counts: sp.csr_matrix, target_sum: float = 1e4) -> sp.csr_matrix:
    """log1p of counts normalised to ``target_sum`` per row (scanpy), kept sparse."""
    import scanpy as sc

    tmp = AnnData(X=sp.csr_matrix(counts, dtype=np.float32))
    sc.pp.normalize_total(tmp, target_sum=target_sum)
    sc.pp.log1p(tmp)
    return sp.csr_matrix(tmp.X, dtype=np.float32)


def _is_lazy(adata: AnnData, layer: str | None) -> bool:
    X = adata.X if layer is None else adata.layers[layer]
    return not isinstance(X, (np.ndarray, sp.spmatrix, sp.sparray)) and hasattr(X, "shape")


def load_counts_chunked(adata: AnnData, gidx: np.ndarray, *, layer: str | None = None, chunk: int = 50_000,
                        allow_non_counts: bool = False, validate: bool = True) -> sp.csr_matrix:
    """Read the counts of genes ``gidx`` from a backed ``.h5ad`` or a lazy (dask / on-disk) matrix.

    Only ``chunk`` rows of the full matrix are in memory at a time, so a slide
    whose full matrix does not fit in memory can be used when the model's genes
    do. Each chunk is validated like in-memory counts.
    """
    from napari_squint.data.validate import check_counts

    X = adata.X if layer is None else adata.layers[layer]
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    parts = []
    for start in range(0, adata.n_obs, chunk):
        block = X[start:start + chunk]
        if hasattr(block, "compute"):
            block = block.compute()
        block = sp.csr_matrix(block)[:, gidx]
        if validate:
            check_counts(block, where=f"{where} rows {start}-{start + block.shape[0]}", allow_non_counts=allow_non_counts)
        parts.append(sp.csr_matrix(block, dtype=np.float32))
    return sp.vstack(parts, format="csr")


def prepare_slide(
    adata: AnnData,
    genes: list[str],
    *,
    section_key: str | None,
    spatial_key: str,
    layer: str | None = None,
    graph: GraphConfig | None = None,
    sections: list[str] | None = None,
    allow_non_counts: bool = False,
    validate: bool = True,
) -> PreparedSlide:
    """Validate a slide and build every array the models need.

    Parameters
    ----------
    adata
        The slide; several sections are stacked, each with its own graph.
    genes
        Model genes, in model order; all must be present in ``adata``.
    sections
        Known section names in batch-id order (a trained model's sections);
        sections not in the list get the "unknown" batch id ``len(sections)``.
    """
    graph = graph or GraphConfig()
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        raise SlideError(
            f"{len(missing)} of the model's {len(genes)} genes are missing from the slide, e.g. {missing[:5]}; "
            "the model was trained on other genes (use align_genes=True to fill them with zeros)"
        )
    gidx = adata.var_names.get_indexer(genes)
    if adata.isbacked or _is_lazy(adata, layer):
        # counts stay on disk: read them chunk by chunk, keeping only the model's genes
        from napari_squint.data.validate import check_coordinates, check_sections

        if validate and not adata.obs_names.is_unique:
            raise SlideError("duplicate cell ids in adata.obs_names")
        coords = check_coordinates(adata, spatial_key)
        sec = check_sections(adata, section_key, min_cells=graph.k + 1)
        counts = load_counts_chunked(adata, gidx, layer=layer, allow_non_counts=allow_non_counts,
                                     validate=validate)
        if validate:
            from napari_squint.data.validate import check_not_all_zero

            check_not_all_zero(counts, where="adata.X" if layer is None else f"adata.layers[{layer!r}]")
    else:
        if validate:
            counts_all, coords, sec = validate_slide(
                adata, section_key=section_key, spatial_key=spatial_key, layer=layer, k=graph.k,
                allow_non_counts=allow_non_counts,
            )
        else:
            from napari_squint.data.validate import check_coordinates, check_sections, get_counts

            counts_all = get_counts(adata, layer)
            coords = check_coordinates(adata, spatial_key)
            sec = check_sections(adata, section_key, min_cells=graph.k + 1)
        counts = sp.csr_matrix(counts_all[:, gidx], dtype=np.float32)
    x_in = log_normalise_sparse(counts)

    names = [str(s) for s in sec.cat.categories]
    known = list(sections) if sections is not None else names
    n = adata.n_obs
    m = graph.max_degree
    nbr = np.full((n, m), -1, dtype=np.int64)
    cond = np.zeros((n, graph.n_rbf), dtype=np.float32)
    tile = np.zeros(n, dtype=np.int64)
    batch = np.zeros(n, dtype=np.int64)
    scales: dict[str, float] = {}
    codes = sec.cat.codes.to_numpy()
    tile_offset = 0
    for s_code, s_name in enumerate(names):
        idx = np.flatnonzero(codes == s_code)
        if idx.size == 0:
            continue
        xy = coords[idx]
        local_nbr, _, dist = knn_graph(xy, graph.k, max_degree=m)
        nbr[idx] = np.where(local_nbr >= 0, idx[np.maximum(local_nbr, 0)], -1)
        scale = median_nn_distance(xy)
        scales[s_name] = scale
        cond[idx] = rbf_covariates(dist, scale, n_rbf=graph.n_rbf, max_dist=graph.rbf_max)
        t = grid_tiles(xy, graph.tile_cells)
        _, t = np.unique(t, return_inverse=True)
        tile[idx] = t + tile_offset
        tile_offset += int(t.max()) + 1
        batch[idx] = known.index(s_name) if s_name in known else len(known)
    x_nbr = neighbourhood_sum(counts, nbr)
    return PreparedSlide(
        counts=counts, x_in=x_in, nbr=nbr, x_nbr=x_nbr, cond=cond, batch=batch, tile=tile,
        coords=coords, obs_names=adata.obs_names.copy(), genes=list(genes), sections=known, scales=scales,
    )
