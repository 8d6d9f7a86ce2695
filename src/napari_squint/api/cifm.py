"""User-facing CIFM model, behind the same interface as :class:`~napari_squint.api.squint.Squint`.

>>> model = Cifm(adata, section_key="section", genes="all", epochs=20)
>>> model.train()
>>> model.embed(adata)             # writes obsm['cifm_microenv'], obsm['cifm_cell']
>>> data = model.prepare(adata)
>>> res = model.impute_cells(data, masked)   # same keys as Squint.impute_cells
>>> model.save("my_cifm")
>>> model = Cifm.load("my_cifm")

CIFM (You et al., "Building foundation models to characterize cellular
interactions via geometric self-supervised learning on spatial genomics")
encodes a radius graph of cells with void-invariant EGNN layers and learns to
reconstruct the normalised log expression of cells removed from the graph.
It has no discrete vocabulary: :meth:`Cifm.tokens` raises and points to
:meth:`Cifm.embed`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace

import numpy as np
import scipy.sparse as sp
import torch
from anndata import AnnData

from napari_squint import _constants as K
from napari_squint.api.base import BaseModel
from napari_squint.api.cifm_impute import CifmImputeEngine
from napari_squint.config import CifmConfig
from napari_squint.data.cifm_batch import replace_rows
from napari_squint.data.cifm_graph import CifmGraph, build_graph, graph_from_prepared
from napari_squint.data.imputation import counts_from_log, masked_depth, microenv_members, microenv_sum
from napari_squint.data.prepare import GraphConfig, PreparedSlide
from napari_squint.data.tiles import validation_tiles
from napari_squint.data.validate import section_rows
from napari_squint.models.cifm import CifmModule
from napari_squint.models.cifm_infer import encode_tiled, infill_tiled, masked_loss, reconstruct_tiled
from napari_squint.train.cifm_loop import iter_train_cifm
from napari_squint.train.events import ProgressEvent

__all__ = ["Cifm", "CifmConfig", "NoTokensError", "benchmark_method", "counts_from_log", "make_benchmark_method"]

#: uns[UNS_KEY] entry written by :meth:`Cifm.embed`.
EMBED_UNS = K.CIFM_EMBED_UNS


class NoTokensError(NotImplementedError):
    """CIFM has continuous embeddings, not discrete tokens."""


class Cifm(BaseModel):
    """CIFM: masked geometric autoencoder of cellular microenvironments.

    Construction, training, ``prepare``, ``save`` and ``load`` are
    :class:`~napari_squint.api.base.BaseModel`'s; ``config`` is a
    :class:`~napari_squint.config.CifmConfig` and keyword options
    (``radius=``, ``mask_ratio=``, ``hidden=``, ``latent=``, ``layers=``,
    ``epochs=``, ``lr=``, ``batch_size=``, ``seed=``, ``device=``...) override
    it; an option CIFM does not have raises ``ValueError``. Each section gets
    its own radius graph; ``holdout`` cells are removed from the training
    graph altogether.
    """

    kind = "cifm"
    label = "CIFM"
    config_class = CifmConfig
    has_tokens = False
    #: no context method: CIFM reads its radius graph, not a kNN row it could swap
    impute_methods = ("infill", "oneshot")
    default_method = "infill"
    #: "mean": the decoded conditional mean; "sample": a measured donor cell drawn by predictive mean matching
    #: (api/cifm_pmm.py: the spread of real cells, at a cost in correlation; docs/cifm.md)
    draws = ("mean", "sample")
    default_draw = "mean"
    perturbation = "inject"

    def __init__(self, adata: AnnData | None, **kwargs):
        self.graph: CifmGraph | None = None
        super().__init__(adata, **kwargs)

    # ------------------------------------------------------------------ hooks
    def graph_config(self) -> GraphConfig:
        return self.config.graph_config()

    def _after_prepare(self) -> None:
        self.graph = graph_from_prepared(self.data, self.config)
        self.meta.update(radius=[float(r) for r in self.graph.radius], mean_degree=self.graph.mean_degree())

    def _make_module(self, n_genes: int, n_sections: int) -> CifmModule:
        c = self.config
        # coordinates reach the module already in median-NN units (data/cifm_graph.py)
        return CifmModule(n_genes, hidden=c.hidden, latent=c.latent, n_layers_enc=c.layers, n_layers_dec=c.layers,
                          act=c.act, coord_scale=c.coord_scale, length_scale=1.0)

    def _init_from_data(self) -> None:
        if self.config.loss == "poisson":  # the decoder predicts expression per 10^4: start at its mean
            self.module.init_output(np.asarray(self.data.x_in.expm1().mean(0)).ravel())
        else:
            self.module.init_output(np.asarray(self.data.x_in.mean(0)).ravel())

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.module.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)

    def validation_cells(self) -> np.ndarray:
        """The training cells kept out of the loss to choose the training length (``val_frac``; empty when 0).

        Whole tiles (:func:`~napari_squint.data.tiles.validation_tiles`) drawn with the model's seed, so a
        second ``train()`` call checks the same cells."""
        if self.config.val_frac <= 0 or self.data.n_cells < 2:
            return np.zeros(0, dtype=np.int64)
        rng = np.random.default_rng([self.config.seed, 104729])
        return validation_tiles(self.graph.tile, np.arange(self.data.n_cells), self.config.val_frac, rng)

    def _iter_epochs(self, start: int, stop: int, optimizer: torch.optim.Optimizer):
        cfg = replace(self.config, epochs=stop)
        val = self.validation_cells()
        self.meta["validation_cells"] = int(val.size)
        cells = np.setdiff1d(np.arange(self.data.n_cells), val)
        return iter_train_cifm(self.module, self.graph, cells, cfg, self.device, optimizer=optimizer,
                               start_epoch=start, val_cells=val)

    def _describe(self) -> str:
        return (f"{self.data.n_cells} cells, {len(self.genes)} genes, {len(self.sections)} sections, "
                f"radius graph mean degree {self.graph.mean_degree():.1f} on {self.device}")

    # -------------------------------------------------------------- inference
    def imputation_engine(self, data: PreparedSlide, section_labels: np.ndarray) -> CifmImputeEngine:
        return CifmImputeEngine(self, data, section_labels)

    def graph_of(self, data: PreparedSlide) -> CifmGraph:
        """The radius graph of prepared data (the training graph for ``self.data``)."""
        if data is self.data and self.graph is not None:
            return self.graph
        return graph_from_prepared(data, self.config)

    def reconstruct(self, data: PreparedSlide, masked: np.ndarray, *, cells: np.ndarray | None = None,
                    graph: CifmGraph | None = None) -> np.ndarray:
        """Reconstructed normalised log expression of ``cells`` (default: the masked ones).

        Masked cells are removed from the encoder graph and padded with the
        learnt embedding ``e`` at their location (eqs. 2-3).

        Returns
        -------
        numpy.ndarray
            ``(m, g)`` log1p(counts per 10^4), rows in ``cells`` order.
        """
        masked = self._check_mask(data, masked)
        cells = np.flatnonzero(masked) if cells is None else np.asarray(cells, dtype=np.int64)
        graph = graph or self.graph_of(data)
        return reconstruct_tiled(self.module, graph, masked, cells, self.config, self.device)

    def encode(self, data: PreparedSlide, *, masked: np.ndarray | None = None,
               cells: np.ndarray | None = None, decode: bool = False) -> dict[str, np.ndarray]:
        """Microenvironment embeddings of ``cells`` (default all), as ``Squint.encode`` names them.

        ``masked`` cells are removed from the graph; a masked cell among
        ``cells`` gets the embedding of its reconstruction in place (see
        :meth:`impute_cells`). ``decode=True`` adds ``x_dec``, the
        reconstruction of every requested cell.

        Returns
        -------
        dict with ``latent`` (m, latent), ``tokens`` (m,) all -1 and ``codes``
        (m, 0): CIFM has no tokens.
        """
        cells = np.arange(data.n_cells) if cells is None else np.asarray(cells, dtype=np.int64)
        graph = self.graph_of(data)
        masked = np.zeros(data.n_cells, bool) if masked is None else self._check_mask(data, masked)
        out: dict[str, np.ndarray] = {}
        if masked.any():
            rows = np.flatnonzero(masked)
            rec = reconstruct_tiled(self.module, graph, masked, rows, self.config, self.device)
            x = replace_rows(graph.x_in, rows, rec)
            lat = encode_tiled(self.module, graph, cells, self.config, self.device, x_override=x)
            if decode:
                out["x_dec"] = x[cells].toarray()
        else:
            lat = encode_tiled(self.module, graph, cells, self.config, self.device)
            if decode:
                out["x_dec"] = reconstruct_tiled(self.module, graph, masked, cells, self.config, self.device)
        out.update(latent=lat, tokens=np.full(cells.size, -1, dtype=np.int64),
                   codes=np.zeros((cells.size, 0), dtype=np.int64))
        return out

    def impute_cells(self, data: PreparedSlide, masked: np.ndarray, *, cells: np.ndarray | None = None,
                     library: np.ndarray | None = None, draw: str = "mean",
                     seed: int | None = None) -> dict[str, np.ndarray]:
        """Impute ``cells`` (default: the masked ones) from their microenvironment.

        With ``config.impute_path="oneshot"`` all ``masked`` cells are removed
        from the encoder graph and padded with ``e`` at their location; with
        ``"infill"`` they are decoded ring by ring from the observed cells
        inward, each ring with the earlier rings' reconstructions as context
        (:func:`~napari_squint.models.cifm_infer.infill_tiled`). The decoder's normalised log expression is
        turned into counts with :func:`counts_from_log` at an estimated depth:
        a masked cell's library is the median library of the observed cells of
        its section (unless ``library`` (n,) is given), exactly as in
        ``Squint.impute_cells``. With ``draw="sample"`` each masked cell's
        profile is instead a measured cell drawn by predictive mean matching
        (:func:`~napari_squint.api.cifm_pmm.draw_from_donors`, ``config.donors``
        donors, ``seed`` default ``config.seed``; the residual correction is not applied).

        Returns
        -------
        dict with
            ``imputed`` (m, g) expected counts; ``imputed_nbr`` (m, g) the
            cell's microenvironment on the same kNN (``data.nbr``) that defines
            ``X_nbr``: measured counts of its observed members plus the imputed
            counts of its masked members; ``x_log`` (m, g) the reconstruction
            itself; ``tokens`` (m,) all -1 and ``codes`` (m, 0) (CIFM has no
            tokens); ``latent`` (m, latent) the microenvironment embedding of
            the cell with every masked cell carrying its reconstruction;
            ``cells`` (m,).
        """
        if draw not in self.draws:
            raise ValueError(f"draw={draw!r}: CIFM offers {list(self.draws)}")
        masked = self._check_mask(data, masked)
        cells = np.flatnonzero(masked) if cells is None else np.asarray(cells, dtype=np.int64)
        est = masked_depth(data, masked, library)
        graph = self.graph_of(data)
        # every masked cell reconstructed once (config.impute_path): needed for cells, their kNN members and
        # the latent
        all_masked = np.flatnonzero(masked)
        x_all, _ = infill_tiled(self.module, graph, masked, self.config, self.device, path=self.config.impute_path)
        if draw == "sample" and all_masked.size:
            drawn = self.donor_draw(graph, masked, data.batch, x_all[all_masked].toarray(), data.batch[all_masked],
                                    seed=self.config.seed if seed is None else seed)
            x_all = replace_rows(x_all, all_masked, drawn)
        elif self.config.residual and all_masked.size:
            shift = self.local_correction(data, graph, masked, data.coords[all_masked], data.batch[all_masked])
            x_all = replace_rows(x_all, all_masked, np.maximum(x_all[all_masked].toarray() + shift, 0.0))
        x_cells = x_all[cells].toarray()
        seen = ~masked[cells]  # an observed cell: its reconstruction with itself visible
        if seen.any():
            x_cells[seen] = reconstruct_tiled(self.module, graph, masked, cells[seen], self.config, self.device)
        imputed = counts_from_log(x_cells, est[cells])
        # imputed X_nbr on the kNN table: measured observed members + imputed masked members
        a_meas, a_imp = microenv_members(cells, data.nbr[cells], all_masked, data.n_cells)
        nbr_sum = microenv_sum(data.counts, a_meas, a_imp, counts_from_log(x_all[all_masked].toarray(), est[all_masked]))
        latent = encode_tiled(self.module, graph, cells, self.config, self.device, x_override=x_all)
        return {"imputed": imputed, "imputed_nbr": nbr_sum, "x_log": x_cells,
                "tokens": np.full(cells.size, -1, dtype=np.int64),
                "codes": np.zeros((cells.size, 0), dtype=np.int64), "latent": latent, "cells": cells}

    def donor_draw(self, graph, masked: np.ndarray, section: np.ndarray, target_log: np.ndarray,
                   target_section: np.ndarray, *, seed: int) -> np.ndarray:
        """``(t, g)`` log profiles of measured donor cells matched to the targets' reconstructions ``target_log``
        (predictive mean matching, :func:`napari_squint.api.cifm_pmm.draw_from_donors`). ``graph`` is the radius
        graph the targets are decoded on, ``masked`` (len(graph),) the targets, ``section`` (n,) the labels of its
        first n cells (the slide's) and ``target_section`` (t,) the targets' labels, comparable with them."""
        from napari_squint.api.cifm_pmm import draw_from_donors

        return draw_from_donors(
            lambda m, rows: reconstruct_tiled(self.module, graph, m, rows, self.config, self.device),
            graph.x_in, masked, section, target_log, target_section, mask_ratio=self.config.mask_ratio,
            donors=self.config.donors, seed=seed)

    def local_correction(self, data: PreparedSlide, graph, masked: np.ndarray, query_xy: np.ndarray,
                         query_section: np.ndarray, section: np.ndarray | None = None) -> np.ndarray:
        """``(t, g)`` log-space correction at points ``query_xy``: the mean masked-reconstruction residual of each
        point's ``k`` nearest measured cells of its section (:mod:`napari_squint.api.cifm_residual`).

        ``graph`` is the radius graph the targets are decoded on (its first ``data.n_cells`` rows are ``data``'s
        cells), ``masked`` (len(graph),) the targets; ``section`` (n,) labels comparable with ``query_section``
        (default ``data.batch``)."""
        from napari_squint.api.cifm_residual import local_correction, masked_residuals, nearest_measured

        n = data.n_cells
        section = data.batch if section is None else np.asarray(section)
        near = nearest_measured(np.asarray(data.coords, dtype=np.float64), section, ~masked[:n], query_xy,
                                query_section, self.config.k)
        return local_correction(near, lambda cells: masked_residuals(
            lambda m, rows: reconstruct_tiled(self.module, graph, m, rows, self.config, self.device),
            graph.x_in, masked, cells, self.config.mask_ratio, seed=self.config.seed), data.n_genes)

    def impute_locations(self, adata: AnnData, coords, *, section: str | None = None,
                         masked: np.ndarray | None = None, library: float | None = None) -> dict[str, np.ndarray]:
        """Predict new cells at given locations from their microenvironment (fill of empty regions).

        The new cells join the section's radius graph as masked cells: they
        are padded with ``e`` at ``coords`` and decoded with the section's
        measured cells as context.

        Parameters
        ----------
        adata
            The slide.
        coords
            ``(m, 2)`` positions of the new cells, in slide units.
        section
            The section receiving them (needed when the slide has several).
        masked
            Optional ``(n,)`` bool over ``adata``: existing cells of that
            section removed from the graph altogether (cells being replaced
            by the new ones, e.g. inside a polygon). Placing a new cell where
            a removed cell was gives exactly that cell's
            :meth:`impute_cells` reconstruction.
        library
            Depth of the new cells (default: the median library of the
            section's unmasked cells).

        Returns
        -------
        dict with ``imputed`` (m, g) expected counts, ``x_log`` (m, g)
        normalised log expression and ``coords`` (m, 2).
        """
        coords = np.asarray(coords, dtype=np.float64)
        if coords.ndim != 2 or coords.shape[1] != 2 or not np.isfinite(coords).all():
            raise ValueError(f"coords must be a finite (m, 2) array, got shape {coords.shape}")
        sk = self.section_key if (self.section_key and self.section_key in adata.obs) else None
        labels = adata.obs[sk].astype(str).to_numpy() if sk else np.full(adata.n_obs, "all", dtype=object)
        section, rows = section_rows(labels, section, sk)
        data = self.prepare(adata[rows])
        keep = np.ones(rows.size, dtype=bool) if masked is None else ~np.asarray(masked, dtype=bool)[rows]
        m, n_keep = coords.shape[0], int(keep.sum())
        x = sp.vstack([data.x_in[keep], sp.csr_matrix((m, data.n_genes), dtype=np.float32)]).tocsr()
        scale = float(next(iter(data.scales.values())))  # the whole section's scale, as in prepare()
        graph = build_graph(x, np.vstack([data.coords[keep], coords]), np.zeros(n_keep + m, np.int64),
                            self.config, scales={0: scale})
        mask = np.concatenate([np.zeros(n_keep, dtype=bool), np.ones(m, dtype=bool)])
        x_log = reconstruct_tiled(self.module, graph, mask, np.arange(n_keep, n_keep + m), self.config,
                                  self.device)
        lib = data.library()[keep]
        depth = float(library) if library is not None else float(np.median(lib)) if lib.size else 1.0
        return {"imputed": counts_from_log(x_log, np.full(m, depth)), "x_log": x_log, "coords": coords}

    def embed(self, adata: AnnData, *, key_added: str = K.CIFM_EMB_KEY, cell_key_added: str = K.CIFM_CELL_EMB_KEY,
              copy: bool = False, align: bool = False) -> AnnData | None:
        """Write microenvironment and cell embeddings of every cell.

        ``obsm[key_added]`` (``'cifm_microenv'``) is the encoder output on the
        radius graph; ``obsm[cell_key_added]`` (``'cifm_cell'``) the encoder
        output with every edge removed (each cell alone), as in section 4 of
        the paper. Parameters go to ``uns['squint']['cifm_embed']``.
        """
        data = self.prepare(adata, align=align)
        graph = self.graph_of(data)
        micro = encode_tiled(self.module, graph, np.arange(data.n_cells), self.config, self.device)
        cell = self.embed_cells(data)
        target = adata.copy() if copy else adata
        target.obsm[key_added] = micro
        target.obsm[cell_key_added] = cell
        target.uns.setdefault(K.UNS_KEY, {})[EMBED_UNS] = {
            "params": {"key_added": key_added, "cell_key_added": cell_key_added, "latent": self.config.latent,
                       "radius": [float(r) for r in graph.radius], "sections": list(data.sections)},
        }
        return target if copy else None

    @torch.no_grad()
    def embed_cells(self, data: PreparedSlide, *, chunk: int = 8192) -> np.ndarray:
        """Cell embeddings (edges removed) of every cell of prepared data, ``(n, latent)``."""
        self.module.eval()
        out = []
        for start in range(0, data.n_cells, chunk):
            x = torch.from_numpy(data.x_in[start:start + chunk].toarray()).to(self.device)
            out.append(self.module.embed_cells(x).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.config.latent), np.float32)

    def masked_loss(self, data: PreparedSlide | None = None, *, cells: np.ndarray | None = None,
                    seed: int = 0) -> float:
        """Balanced MSE (eq. 15) of reconstructing ``cells`` under disjoint random masks.

        Every cell is masked once, in ``ceil(1 / mask_ratio)`` rounds. Use it
        on a validation slide to pick epochs or options.
        """
        data = data or self.data
        graph = self.graph_of(data)
        cells = np.arange(data.n_cells) if cells is None else np.asarray(cells, dtype=np.int64)
        return masked_loss(self.module, graph, cells, self.config, self.device, seed=seed)

    def tokens(self, *args, **kwargs):
        """CIFM has no tokens; always raises :class:`NoTokensError`.

        CIFM learns continuous microenvironment embeddings, not a codebook.
        Use :meth:`embed` (``obsm['cifm_microenv']`` / ``obsm['cifm_cell']``)
        and cluster them (e.g. ``scanpy.tl.leiden``) if discrete niches are
        needed, or train a :class:`~napari_squint.api.squint.Squint` model.
        """
        raise NoTokensError(
            "CIFM has no tokens (no codebook): use Cifm.embed(adata) for obsm['cifm_microenv'] and "
            "obsm['cifm_cell'] embeddings and cluster them, or train a Squint model for tokens")

    def summary(self) -> str:
        """One line for users: genes, sections, architecture and radius."""
        c = self.config
        radius = f"radius {c.radius:g}" if c.radius is not None else f"radius {c.radius_factor:g}× median NN"
        return (f"{self.label}: {len(self.genes)} genes, {len(self.sections)} sections, hidden {c.hidden}, "
                f"latent {c.latent}, {c.layers} layers, {radius}")

    def __repr__(self) -> str:
        c = self.config
        radius = f"{c.radius:g}" if c.radius is not None else f"{c.radius_factor:g} x median NN"
        return (f"Cifm(genes={len(self.genes)}, sections={len(self.sections)}, radius={radius}, "
                f"hidden={c.hidden}, latent={c.latent}, layers={c.layers}, device={self.device})")


def benchmark_method(
    adata: AnnData,
    heldout: np.ndarray,
    test_idx: np.ndarray | None = None,
    *,
    section_key: str | None = K.SECTION_KEY,
    spatial_key: str = K.SPATIAL_KEY,
    genes: int | str | Sequence[str] | None = "all",
    seed: int = 0,
    callback: Callable[[ProgressEvent], None] | None = None,
    draws: Sequence[str] = ("mean",),
    **options,
) -> dict:
    """CIFM as an imputation method: train without ``heldout``, then impute it (once per entry of ``draws``).

    Parameters
    ----------
    adata
        The whole slide (counts).
    heldout
        ``(n,)`` bool, cells excluded from training and masked at imputation.
    test_idx
        Cells to return (default: every held-out cell), rows in this order.
    genes
        Model genes (use the benchmark's gene list so columns match).
    options
        CIFM options (``epochs=``, ``radius=``...).

    Returns
    -------
    dict with ``imputed`` and ``imputed_nbr`` (m, g) expected counts (see
    :meth:`Cifm.impute_cells`) of the first draw, ``by_draw`` (draw -> (imputed, imputed_nbr)) for every draw,
    ``cells`` (m,), ``model`` (the trained Cifm) and ``train_seconds``.
    """
    heldout = np.asarray(heldout, dtype=bool)
    model = Cifm(adata, section_key=section_key, spatial_key=spatial_key, genes=genes, holdout=heldout,
                 seed=seed, **options)
    t0 = time.perf_counter()
    model.train(callback=callback)
    seconds = time.perf_counter() - t0
    data = model.prepare(adata)
    cells = np.flatnonzero(heldout) if test_idx is None else np.asarray(test_idx, dtype=np.int64)
    by_draw = {}
    for draw in draws:
        res = model.impute_cells(data, heldout, cells=cells, draw=draw, seed=seed)
        by_draw[draw] = (res["imputed"], res["imputed_nbr"])
    first = by_draw[draws[0]]
    return {"imputed": first[0], "imputed_nbr": first[1], "by_draw": by_draw, "cells": cells, "model": model,
            "train_seconds": seconds}


def make_benchmark_method(*, section_key: str | None = K.SECTION_KEY, spatial_key: str = K.SPATIAL_KEY,
                          genes: int | str | Sequence[str] | None = "all", seed: int | None = None,
                          draws: Sequence[str] = ("mean",),
                          **options) -> Callable[[AnnData, np.ndarray, np.ndarray, int], tuple | dict]:
    """An ``extra_methods`` entry for :func:`napari_squint.tasks.benchmark_impute.benchmark_impute`.

    >>> from napari_squint.tasks.benchmark_impute import benchmark_impute
    >>> res = benchmark_impute(adata, extra_methods={"CIFM": make_benchmark_method(epochs=30)})

    ``seed=None`` (the default) trains CIFM with each benchmark run's seed, as SQuINT is, so the spread over
    seeds covers training as well as the patches; an integer fixes it for every run. ``draws`` lists the
    draws imputed from each trained model: with more than one the callable returns ``{"": ..., " sample": ...}``
    (one benchmark row per draw, ``"mean"`` unnamed).

    Returns
    -------
    callable
        ``fn(adata, holdout_mask, test_idx, run_seed) -> (imputed, imputed_nbr)``, both
        ``(n_test, n_genes)`` counts; ``imputed_nbr`` sums, on the same kNN
        graph as the benchmark's ``X_nbr`` (``k=8``), the measured counts of
        observed members and CIFM's imputed counts of held-out members.
    """
    def method(adata: AnnData, holdout: np.ndarray, test_idx: np.ndarray,
               run_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        out = benchmark_method(adata, holdout, test_idx, section_key=section_key, spatial_key=spatial_key,
                               genes=genes, seed=run_seed if seed is None else seed, draws=draws, **options)
        hist = out["model"].history
        # how long this run's CIFM trained (the benchmark keeps it in the run's record)
        method.last_training = {"epochs": len(hist), "best_epoch": hist[-1].get("best_epoch") if hist else None,
                                "stopped_by_validation": bool(hist and hist[-1].get("stopped", False)),
                                "validation_cells": int(out["model"].meta.get("validation_cells", 0)),
                                "train_seconds": float(out["train_seconds"])}
        if len(draws) == 1:
            return out["imputed"], out["imputed_nbr"]
        return {("" if d == "mean" else f" {d}"): out["by_draw"][d] for d in draws}

    method.__name__ = "cifm"
    # every CIFM option as the model resolves it (defaults included), for the benchmark's record
    method.settings = {k: v for k, v in asdict(CifmConfig().update(**options)).items()
                       if k not in ("device", "num_threads")}
    method.settings["seed"] = "the run's seed" if seed is None else int(seed)
    method.settings["draws"] = list(draws)
    return method
