"""In-painting: impute the cells inside polygons with a trained SQuINT (or CIFM) model.

AnnData in, AnnData out. The cells inside the polygons are *targets*: their
measured counts (if any) are never read; everything outside is observed.

Three methods:

``"context"`` (default for SQuINT; beyond the paper)
    Every target gets the learned mask token and reads, as its graph
    neighbours, its ``k`` nearest *observed* cells of its section (``k`` of
    the model's graph), however deep inside the polygon it lies; one forward
    pass gives its latent. Without it a cell deep inside a large polygon
    only sees other masked cells.

``"oneshot"`` (the paper, section 4.2)
    Every target gets the learned mask token; one forward pass on the
    slide's own graph, in the presence of C, gives each target a latent. Deep
    inside a large polygon a target's whole neighbourhood is masked, so its
    tokens only reflect C and the section.

``"infill"`` (beyond the paper; default for CIFM)
    From the polygon's boundary inwards. Ring 1 is the targets with an
    observed neighbour (hops on the model's padded neighbour table); they are
    imputed with every target masked, then their imputed counts replace their
    inputs and they count as observed; ring 2 is imputed next, and so on.
    Targets of one ring never use each other. Targets connected to no
    observed cell are imputed together at the end.

In every method the masked-code head turns a target's latent into a
distribution over the tokens observed cells use (the paper takes the nearest
code of the latent instead; models without the head still do) and the decoder
turns tokens into gene proportions, scaled by an estimated read depth
(:meth:`~napari_squint.api.squint.Squint.impute_cells`).

``draw`` says what an imputed profile is:

``"logmean"`` (default for SQuINT)
    The counts whose log-normalised values (``log1p`` of 10,000 per cell,
    what analyses and the metrics read) are the model's *expected*
    log-normalised expression under its predictive distribution (the token
    mixture and the negative binomial), :mod:`napari_squint.nn.log_estimate`.
    Expected counts log-normalise too high for every lowly expressed gene
    (Jensen); on the MERFISH patch benchmark this estimate halves the MMD and
    energy distance of the expected counts at equal correlation.
    ``imputed_nbr`` (``nbr_mode="sum"``) is then the measured counts of the
    observed members plus the log-space estimate of the target members, one
    negative binomial per gene with the decoder's microenvironment profile
    and dispersion.
``"mean"``
    The expected counts under the token mixture.
``"sample"``
    Generated counts (one token drawn, then negative-binomial counts), which
    reproduce the spread of real cells (far better MMD and energy distance)
    but correlate much less with the truth (docs/imputation.md).

With ``draw="logmean"`` both profiles then get the local residual
correction (``residual=True``, :mod:`napari_squint.tasks.residual`): the
model's error on the measured microenvironments nearest each target, added
on the log-normalised scale.

Read depth: a target's library is the median library of the observed cells
of its section; its microenvironment's read depth sums the measured
libraries of its observed members and the estimates of its targets.
``imputed_nbr`` is either the sum of the measured counts of the observed
members and the imputed counts of the target members (``nbr_mode="sum"``, the
default: near the polygon's edge it uses the measured neighbours, as the ring
baseline does) or the decoder's microenvironment head scaled by that read
depth (``nbr_mode="decoder"``, the paper's X_nbr output).

Interactive use: :class:`Imputer` prepares the slide once (graph, inputs,
covariates) and each call only touches the targets and their 1-hop
neighbours, so a 5,000-cell polygon on a 50,000-cell slide takes a fraction of
a second on a CPU (``benchmarks/impute_speed.py``).

Empty polygons (a tear, an unimaged area) are filled with new cells at the
local density (:mod:`napari_squint.tasks.fill`), linked into the graph and
imputed like any target; they are marked ``obs['squint_created']``.

CIFM models (:class:`~napari_squint.api.cifm.Cifm`, ``model.kind == "cifm"``)
go through the same class and the same output. Targets (and new cells) are
removed from CIFM's radius graph and padded with its learnt embedding, then
decoded (:meth:`~napari_squint.api.cifm.Cifm.impute_cells`, which the
one-shot method equals). ``"infill"`` takes the rings on the radius graph
(hops to an observed cell) and substitutes each ring's imputed profile before
the next one. New cells join the radius graph of their section. CIFM has no
tokens (``squint_token`` is -1), no microenvironment decoder head
(``nbr_mode="sum"`` only) and no count dispersion (``substitute="mean"`` only).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from napari_squint import _constants as K
from napari_squint.data.prepare import PreparedSlide
from napari_squint.data.validate import SlideError, section_depth
from napari_squint.nn.log_estimate import log_space_counts, log_space_counts_from_moments
from napari_squint.nn.nb import sample_nb
from napari_squint.tasks.residual import clean_cells, microenvironment_residuals

__all__ = ["DEFAULT_DRAW", "DEFAULT_METHOD", "DRAWS", "METHODS", "NBR_MODES", "REGION_KEY", "RING_KEY", "Imputer", "impute"]

#: imputation methods, see the module docstring
METHODS = ("context", "infill", "oneshot")
#: the default method (the better one on the Table 2 benchmark, docs/imputation.md)
DEFAULT_METHOD = "context"
#: how ``imputed_nbr`` is formed
NBR_MODES = ("decoder", "sum")
#: the default ``imputed_nbr`` (better than the decoder head on every X_nbr metric, docs/imputation.md)
DEFAULT_NBR = "sum"
#: what an imputed profile is: the expected counts or a draw (generated counts)
DRAWS = K.DRAWS
#: the default draw for SQuINT (better than "mean" on MMD and energy, on par on correlation: docs/imputation.md);
#: CIFM, which has no count distribution, always reports its expected counts ("mean")
DEFAULT_DRAW = "logmean"
#: obs column (categorical) naming the region of each output cell
REGION_KEY = "squint_region"
#: obs column (int) holding each output cell's infill ring (1 = next to measured cells; 0 for one-shot)
RING_KEY = "squint_ring"


def _check_genes(model, adata: AnnData, align: bool) -> None:
    missing = [g for g in model.genes if g not in adata.var_names]
    if not missing:
        return
    if align and len(missing) < len(model.genes):
        return
    raise SlideError(
        f"the slide lacks {len(missing)} of the model's {len(model.genes)} genes (e.g. {missing[:5]}): the model "
        f"was trained on other genes"
        + ("" if align else "; pass align=True (CLI: --align-genes) to fill the missing genes with zeros")
    )


def _log_norm(counts: np.ndarray, target_sum: float = 1e4) -> np.ndarray:
    """log1p of counts per 10,000, as the model's inputs.

    The same arithmetic as :func:`~napari_squint.data.prepare.log_normalise_sparse`
    (scanpy's ``normalize_total`` + ``log1p``; all-zero rows stay zero), in
    numpy for the small dense blocks of one infill ring, where scanpy's
    per-call overhead would dominate.
    """
    x = np.asarray(counts, dtype=np.float32)
    lib = x.sum(1, keepdims=True)
    return np.log1p(x / np.where(lib > 0, lib, 1.0) * np.float32(target_sum)).astype(np.float32)


def _rings(targets: np.ndarray, nbr: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Hops from each target to the nearest observed cell on a padded neighbour table.

    Parameters
    ----------
    targets
        (t,) local indices of the targets.
    nbr
        (u, m) local padded neighbour table (``-1`` padding); rows of targets are read.
    observed
        (u,) bool, cells that count as observed from the start.

    Returns
    -------
    (t,) int64 rings, 1 for targets next to an observed cell; targets with no
    path to an observed cell get ``max + 1`` (1 when no target is connected).
    """
    nb = nbr[targets]
    valid = nb >= 0
    return _ring_levels(targets, lambda known: (valid & known[np.maximum(nb, 0)]).any(1), observed)


def _adj_rings(cells: np.ndarray, adj, observed: np.ndarray) -> np.ndarray:
    """Hops from each target to the nearest observed cell on a sparse adjacency (CIFM's radius graph).

    The same rule as :func:`_rings`: ``cells`` (t,) global indices, ``adj``
    (N, N) CSR, ``observed`` (N,) bool; returns (t,) rings, 1 next to an
    observed cell, ``max + 1`` for targets with no path to one.
    """
    sub = sp.csr_matrix(adj)[cells]
    return _ring_levels(cells, lambda known: np.asarray(sub @ known.astype(np.float32)).ravel() > 0, observed)


def _ring_levels(cells: np.ndarray, touches, observed: np.ndarray) -> np.ndarray:
    """Breadth-first rings: ``touches(known)`` (t,) says which of ``cells`` have an observed (or already
    ringed) neighbour; each round rings those still unringed, which then count as known."""
    known = np.asarray(observed, dtype=bool).copy()
    ring = np.zeros(cells.size, dtype=np.int64)
    level = 0
    while True:
        todo = ring == 0
        if not todo.any():
            break
        hit = todo & touches(known)
        if not hit.any():
            break
        level += 1
        ring[hit] = level
        known[cells[hit]] = True
    ring[ring == 0] = level + 1
    return ring


class Imputer:
    """A trained model and one slide prepared once, for repeated imputation.

    Parameters
    ----------
    model
        A trained :class:`~napari_squint.api.squint.Squint` or
        :class:`~napari_squint.api.cifm.Cifm`.
    adata
        The slide (never modified). It must hold the model's genes.
    align
        Fill genes the slide lacks with zeros (a model trained on a panel
        that differs slightly from the slide's).

    Notes
    -----
    The prepared slide (graph, inputs, covariates of all cells) is built
    once here; every :meth:`impute` call then works on the targets and their
    1-hop neighbours only. Keep the object alive between calls (the napari
    plugin does).
    """

    def __init__(self, model, adata: AnnData, *, align: bool = False):
        _check_genes(model, adata, align)
        self.model = model
        self.adata = adata
        self.align = align
        #: ``"squint"`` or ``"cifm"``
        self.kind = str(getattr(model, "kind", "squint"))
        self._cifm_graph = None
        self.section_key = model.section_key if (model.section_key and model.section_key in adata.obs) else None
        self.spatial_key = model.spatial_key
        self.data: PreparedSlide = model.prepare(adata, align=align)
        self.library = self.data.library().astype(np.float64)
        if self.section_key is not None:
            self.section_labels = adata.obs[self.section_key].astype(str).to_numpy()
        else:
            self.section_labels = np.full(adata.n_obs, "", dtype=object)
        self._section_names = list(pd.unique(self.section_labels))
        # caches: section masks, k-d trees of cell pools, and the residuals of measured cells (computed on demand)
        self._section_masks: dict[str, np.ndarray] = {}
        self._trees: dict = {}
        self._resid: np.ndarray | None = None
        self._resid_done: np.ndarray | None = None

    # ------------------------------------------------------------------ regions
    def _resolve_residual(self, residual: bool | None, draw: str) -> bool:
        """Whether the local residual correction applies: None means exactly for SQuINT with ``draw="logmean"``,
        the only case it is defined for (True elsewhere is an error)."""
        possible = self.kind == "squint" and draw == "logmean"
        if residual and not possible:
            raise ValueError(f"residual=True needs a SQuINT model and draw='logmean' (the correction is on the "
                             f"log-normalised scale); got a {self.kind} model and draw={draw!r}")
        return possible if residual is None else bool(residual)

    @property
    def default_method(self) -> str:
        """The method used when none is given: ``"context"`` for SQuINT, ``"infill"`` for CIFM (which has no
        context method)."""
        return "infill" if self.kind == "cifm" else DEFAULT_METHOD

    @property
    def default_draw(self) -> str:
        """The draw used when none is given: ``"logmean"`` for SQuINT, ``"mean"`` for CIFM."""
        return "mean" if self.kind == "cifm" else DEFAULT_DRAW

    @property
    def n_cells(self) -> int:
        return self.data.n_cells

    def cells_in(self, regions: Sequence) -> tuple[np.ndarray, list]:
        """Cells inside the regions and the regions that hold no cell.

        Returns
        -------
        mask, labels, empty
            (n,) bool targets, (n,) region index of each target (-1 outside),
            and the list of indices of regions with no cell inside.
        """
        from napari_squint.io.geojson import cells_in_regions
        from shapely.validation import explain_validity

        labels = np.full(self.n_cells, -1, dtype=np.int64)
        empty = []
        for i, r in enumerate(regions):
            if not r.polygon.is_valid:
                raise SlideError(f"region {r.name!r}: invalid polygon ({explain_validity(r.polygon)}); "
                                 "self-intersecting polygons are not allowed")
            if r.polygon.area <= 0:
                raise SlideError(f"region {r.name!r}: polygon has zero area")
            m = cells_in_regions(self.adata, [r], section_key=self.section_key, spatial_key=self.spatial_key)
            if not m.any():
                empty.append(i)
            labels[m & (labels < 0)] = i
        return labels >= 0, labels, empty

    # ------------------------------------------------------------------ created
    def _create(self, region, *, seed: int):
        """New cells filling an empty region: coordinates, section, batch id, section cells, NN scale."""
        from napari_squint.tasks.fill import place_cells

        if region.section is None:
            if len(self._section_names) > 1:
                raise SlideError(f"region {region.name!r} has no section but the slide has "
                                 f"{len(self._section_names)} sections")
            section = self._section_names[0]
        else:
            section = str(region.section)
        idx = np.flatnonzero(self.section_labels == section)
        if idx.size == 0:
            raise SlideError(f"region {region.name!r} names section {section!r}, which is not in the slide")
        xy = self.data.coords[idx]
        new_xy = place_cells(region.polygon, xy, seed=seed)
        scale = self.data.scales.get(section)
        if scale is None:
            scale = next(iter(self.data.scales.values()))
        return new_xy, section, int(self.data.batch[idx[0]]), idx, scale

    # ------------------------------------------------------------------ engine
    def _mini(self, rows: np.ndarray, xin: np.ndarray, nbr: np.ndarray, cond: np.ndarray,
              batch: np.ndarray) -> PreparedSlide:
        """A PreparedSlide of the local rows ``rows`` (neighbours remapped, -1 outside)."""
        pos = np.full(xin.shape[0], -1, dtype=np.int64)
        pos[rows] = np.arange(rows.size)
        nb = nbr[rows]
        nb = np.where(nb >= 0, pos[np.maximum(nb, 0)], -1)
        g = xin.shape[1]
        empty = sp.csr_matrix((rows.size, g), dtype=np.float32)
        d = self.data
        return PreparedSlide(
            counts=empty, x_in=sp.csr_matrix(xin[rows]), nbr=nb, x_nbr=empty, cond=cond[rows], batch=batch[rows],
            tile=np.zeros(rows.size, dtype=np.int64), coords=np.zeros((rows.size, 2)),
            obs_names=pd.RangeIndex(rows.size), genes=d.genes, sections=d.sections,
            scales=d.scales,
        )

    def _step(self, seeds, xin, nbr, cond, batch, masked, est, *, draw: str = "mean", seed: int = 0):
        """Impute the local ``seeds`` given the current inputs and mask."""
        nb = nbr[seeds]
        rows = np.unique(np.concatenate([seeds, nb[nb >= 0]]))
        mini = self._mini(rows, xin, nbr, cond, batch)
        cells = np.searchsorted(rows, seeds)
        return self.model.impute_cells(mini, masked[rows], cells=cells, library=est[rows], draw=draw, seed=seed)

    def _created_rows(self, created: list, *, k: int, n_rbf: int, rbf_max: float):
        """Graph rows of the cells created in empty regions, numbered after the slide's cells.

        Returns lists (one entry per region) of coordinates, section names (flat), batch ids,
        kNN rows, covariates and region indices.
        """
        from napari_squint.tasks.fill import created_graph

        d = self.data
        c_xy, c_sec, c_batch, c_nbr, c_cond, c_reg = [], [], [], [], [], []
        offset = d.n_cells
        for ri, (new_xy, section, bid, idx, scale) in enumerate(created):
            nb, cond = created_graph(d.coords[idx], idx, new_xy, first_new=offset, k=k, max_degree=d.nbr.shape[1],
                                     scale=scale, n_rbf=n_rbf, rbf_max=rbf_max)
            c_xy.append(new_xy)
            c_sec += [section] * len(new_xy)
            c_batch.append(np.full(len(new_xy), bid, dtype=np.int64))
            c_nbr.append(nb)
            c_cond.append(cond)
            c_reg.append(np.full(len(new_xy), ri, dtype=np.int64))
            offset += len(new_xy)
        return c_xy, c_sec, c_batch, c_nbr, c_cond, c_reg

    def _all_targets(self, targets: np.ndarray, c_nbr: list):
        """(number of created cells, all target ids, their kNN rows); an error when there is nothing to impute."""
        d = self.data
        n_new = int(sum(len(x) for x in c_nbr))
        all_t = np.concatenate([targets, d.n_cells + np.arange(n_new)])
        if all_t.size == 0:
            raise SlideError("nothing to impute: no cell inside the regions and no empty region to fill")
        t_nbr = np.concatenate([d.nbr[targets]] + c_nbr) if n_new else d.nbr[targets]
        return n_new, all_t, t_nbr

    def impute_targets(self, targets: np.ndarray, *, method: str | None = None, nbr_mode: str = DEFAULT_NBR,
                       created: list | None = None, substitute: str = "mean", draw: str | None = None,
                       residual: bool | None = None, seed: int = 0) -> dict:
        """Impute existing cells ``targets`` (and new cells), the engine behind :meth:`impute`.

        Parameters
        ----------
        targets
            (t,) global indices of existing cells to impute.
        method
            ``"context"``, ``"infill"`` or ``"oneshot"``; None:
            :attr:`default_method`.
        nbr_mode
            ``"sum"`` or ``"decoder"`` (see the module docstring).
        created
            Output of :meth:`_create` for each empty region to fill.
        substitute
            What replaces an imputed ring's inputs in ``"infill"``: ``"mean"``
            (the expected counts) or ``"sample"`` (negative-binomial draws with
            the model's per-cell dispersion, seeded).
        draw
            ``"logmean"``, ``"mean"`` or ``"sample"`` (see the module
            docstring); None: :attr:`default_draw` (``"logmean"`` for SQuINT,
            ``"mean"`` for CIFM).
        residual
            Add the local residual correction
            (:mod:`napari_squint.tasks.residual`: the model's error on the
            measured microenvironments nearest each target, on the
            log-normalised scale) to both imputed profiles. Needs a SQuINT
            model and ``draw="logmean"``; None: True exactly then.

        Returns
        -------
        dict with ``imputed`` (t + c, g), ``imputed_nbr`` (t + c, g), ``tokens``,
        ``rings`` (t + c,), and for created cells ``created_xy`` (c, 2),
        ``created_section`` (c,), ``created_region`` (c,) (index into ``created``).
        """
        method, draw = method or self.default_method, draw or self.default_draw
        if method not in METHODS:
            raise ValueError(f"method={method!r}: expected one of {METHODS}")
        if nbr_mode not in NBR_MODES:
            raise ValueError(f"nbr_mode={nbr_mode!r}: expected one of {NBR_MODES}")
        if substitute not in ("mean", "sample"):
            raise ValueError(f"substitute={substitute!r}: expected 'mean' or 'sample'")
        if draw not in DRAWS:
            raise ValueError(f"draw={draw!r}: expected one of {DRAWS}")
        if self.kind == "cifm" and draw != "mean":
            raise ValueError(f"draw={draw!r}: CIFM has no token distribution or count dispersion to draw from; "
                             "use 'mean'")
        if self.kind == "cifm" and method == "context":
            raise ValueError("method='context' is for SQuINT models; CIFM imputes with 'infill' or 'oneshot'")
        residual = self._resolve_residual(residual, draw)
        if self.kind == "cifm":
            return self._impute_targets_cifm(targets, method=method, nbr_mode=nbr_mode, created=created,
                                             substitute=substitute)

        d = self.data
        n, g = d.n_cells, d.n_genes
        targets = np.unique(np.asarray(targets, dtype=np.int64))
        created = created or []
        # ---- virtual index space: existing cells 0..n-1, created cells n.. ----
        gc = self.model.config.graph
        c_xy, c_sec, c_batch, c_nbr, c_cond, c_reg = self._created_rows(created, k=gc.k, n_rbf=gc.n_rbf,
                                                                         rbf_max=gc.rbf_max)
        n_new, all_t, t_nbr = self._all_targets(targets, c_nbr)
        t_xy = np.concatenate([d.coords[targets]] + c_xy) if n_new else d.coords[targets]
        t_sec = np.concatenate([self.section_labels[targets].astype(object), np.asarray(c_sec, dtype=object)])
        if method == "context":  # the model reads each target's nearest observed cells instead of its graph row
            m_nbr = self._observed_context(t_xy, t_sec, targets, k=gc.k, width=d.nbr.shape[1])
        else:
            m_nbr = t_nbr
        local = np.unique(np.concatenate([all_t, m_nbr[m_nbr >= 0]]))
        u = local.size
        pos_t = np.searchsorted(local, all_t)
        is_target = np.zeros(u, dtype=bool)
        is_target[pos_t] = True
        exist = local < n
        ex = local[exist]
        # ---- local work arrays ----
        nbr = np.full((u, d.nbr.shape[1]), -1, dtype=np.int64)
        nbr[pos_t] = np.where(m_nbr >= 0, np.searchsorted(local, np.maximum(m_nbr, 0)), -1)
        cond = np.zeros((u, d.cond.shape[1]), dtype=np.float32)
        batch = np.zeros(u, dtype=np.int64)
        cond[exist], batch[exist] = d.cond[ex], d.batch[ex]
        if n_new:
            cond[~exist] = np.concatenate(c_cond)
            batch[~exist] = np.concatenate(c_batch)
        xin = np.zeros((u, g), dtype=np.float32)
        xin[exist] = d.x_in[ex].toarray()
        xin[is_target] = 0.0  # targets' measured inputs are never read
        # read depth: measured for observed cells, the section median of observed cells for targets
        est = np.zeros(u)
        est[exist] = self.library[ex]
        target_global = np.zeros(n, dtype=bool)
        target_global[targets] = True
        sec_of = np.concatenate([self.section_labels[ex].astype(object), np.asarray(c_sec, dtype=object)])
        for s in np.unique(sec_of[is_target]):
            obs = self._in_section(s) & ~target_global
            ref = obs if obs.any() else ~target_global
            if not ref.any():
                raise SlideError("every cell of the slide is a target: nothing is observed to impute from")
            est[is_target & (sec_of == s)] = section_depth(self.library, ref, self.data.obs_names, s)
        masked = is_target.copy()
        # ---- impute ----
        tt = all_t.size
        imputed = np.zeros((tt, g))
        imputed_nbr = np.zeros((tt, g))
        tokens = np.zeros(tt, dtype=np.int64)
        if method in ("oneshot", "context"):
            rings = np.zeros(tt, dtype=np.int64)
            order = [np.arange(tt)]
        else:
            rings = _rings(pos_t, nbr, ~is_target)
            order = [np.flatnonzero(rings == r) for r in np.unique(rings)]
        rng = np.random.default_rng(seed)
        log = draw == "logmean"  # the steps give expected counts and their moments; converted once at the end
        if log:
            var, probs_nbr, lib_nbr = np.zeros((tt, g)), np.zeros((tt, g)), np.zeros(tt)
        for step, sel in enumerate(order):
            res = self._step(pos_t[sel], xin, nbr, cond, batch, masked, est, draw="mean" if log else draw,
                             seed=seed + step)
            imputed[sel], imputed_nbr[sel], tokens[sel] = res["imputed"], res["imputed_nbr"], res["tokens"]
            if log:
                var[sel], probs_nbr[sel], lib_nbr[sel] = res["var"], res["probs_nbr"], res["library_nbr"]
            if method == "infill":
                x_sub = res["imputed"]  # expected (or, with draw="sample", generated) counts
                if substitute == "sample" and draw != "sample":  # draw="sample" already gives generated counts
                    x_sub = sample_nb(x_sub, self.model.dispersions()[0], rng)
                xin[pos_t[sel]] = _log_norm(x_sub)
                masked[pos_t[sel]] = False
        if log:
            theta_n = self.model.dispersions()[1]
            shift = self.local_correction(t_xy, t_sec.astype(str), target_global) if residual else None
            imputed = log_space_counts_from_moments(imputed, var, est[pos_t], shift=shift)
            if nbr_mode == "sum":
                imputed_nbr = self._nbr_sum_log(all_t, t_nbr, probs_nbr, est[pos_t], theta_n, target_global, n,
                                                shift=shift)
            else:
                imputed_nbr = log_space_counts(probs_nbr * lib_nbr[:, None], theta_n, lib_nbr, shift=shift)
        elif nbr_mode == "sum":
            imputed_nbr = self._nbr_sum(all_t, t_nbr, imputed, target_global, n)
        out = {"imputed": imputed, "imputed_nbr": imputed_nbr, "tokens": tokens, "rings": rings,
               "cells": all_t}
        if n_new:
            out.update(created_xy=np.concatenate(c_xy), created_section=np.asarray(c_sec, dtype=object),
                       created_region=np.concatenate(c_reg))
        return out

    # ------------------------------------------------------------------ CIFM
    def cifm_graph(self):
        """CIFM's radius graph of the prepared slide (built once, kept for later calls)."""
        if self._cifm_graph is None:
            self._cifm_graph = self.model.graph_of(self.data)
        return self._cifm_graph

    def _impute_targets_cifm(self, targets, *, method: str, nbr_mode: str, created: list | None,
                             substitute: str) -> dict:
        """:meth:`impute_targets` for a CIFM model (same inputs and outputs; ``tokens`` are -1)."""
        from napari_squint.api.cifm import counts_from_log
        from napari_squint.data.prepare import GraphConfig
        from napari_squint.data.cifm_batch import replace_rows
        from napari_squint.data.cifm_graph import build_graph
        from napari_squint.models.cifm_infer import reconstruct_tiled

        if nbr_mode != "sum":
            raise ValueError(f"nbr_mode={nbr_mode!r}: CIFM has no microenvironment decoder head; use 'sum'")
        if substitute != "mean":
            raise ValueError(f"substitute={substitute!r}: CIFM has no count dispersion to sample from; use 'mean'")
        model, cfg, d = self.model, self.model.config, self.data
        n, g = d.n_cells, d.n_genes
        targets = np.unique(np.asarray(targets, dtype=np.int64))
        created = created or []
        # ---- new cells: their kNN rows (for imputed_nbr, as in SQuINT) and their place in the radius graph ----
        gc = GraphConfig()
        c_xy, c_sec, c_batch, c_nbr, _, c_reg = self._created_rows(created, k=cfg.k, n_rbf=gc.n_rbf,
                                                                    rbf_max=gc.rbf_max)
        n_new, all_t, t_nbr = self._all_targets(targets, c_nbr)
        target_global = np.zeros(n, dtype=bool)
        target_global[targets] = True
        is_t = np.zeros(n + n_new, dtype=bool)
        is_t[all_t] = True
        # read depth: the section median of observed cells for every target, as for SQuINT
        sec_all = np.concatenate([self.section_labels.astype(object), np.asarray(c_sec, dtype=object)])
        est = np.concatenate([self.library, np.zeros(n_new)])
        for sec in np.unique(sec_all[is_t].astype(str)):
            obs = (self.section_labels == sec) & ~target_global
            ref = obs if obs.any() else ~target_global
            if not ref.any():
                raise SlideError("every cell of the slide is a target: nothing is observed to impute from")
            est[is_t & (sec_all.astype(str) == sec)] = section_depth(self.library, ref, self.data.obs_names, sec)
        # ---- the radius graph (new cells join their section's graph) ----
        if n_new:
            batch = np.concatenate([d.batch, np.concatenate(c_batch)])
            uniq, section_id = np.unique(batch, return_inverse=True)
            names = list(d.sections)
            scales = {i: float(d.scales[names[int(b)]]) for i, b in enumerate(uniq)
                      if int(b) < len(names) and names[int(b)] in d.scales}
            x0 = sp.vstack([d.x_in, sp.csr_matrix((n_new, g), dtype=np.float32)]).tocsr()
            graph = build_graph(x0, np.vstack([d.coords, np.concatenate(c_xy)]), section_id, cfg, scales=scales)
        else:
            graph = self.cifm_graph()
        # ---- impute: all targets masked; infill unmasks ring by ring with the imputed profile ----
        tt = all_t.size
        imputed = np.zeros((tt, g))
        if method == "oneshot":
            rings = np.zeros(tt, dtype=np.int64)
            order = [np.arange(tt)]
        else:
            rings = _adj_rings(all_t, graph.adj, ~is_t)
            order = [np.flatnonzero(rings == r) for r in np.unique(rings)]
        masked = is_t.copy()
        x_cur = graph.x_in
        for sel in order:
            rows = all_t[sel]
            rec = reconstruct_tiled(model.module, graph, masked, rows, cfg, model.device, x_override=x_cur)
            imputed[sel] = counts_from_log(rec, est[rows])
            if method == "infill":
                x_cur = replace_rows(x_cur, rows, _log_norm(imputed[sel]))
                masked[rows] = False
        imputed_nbr = self._nbr_sum(all_t, t_nbr, imputed, target_global, n)
        out = {"imputed": imputed, "imputed_nbr": imputed_nbr, "tokens": np.full(tt, -1, dtype=np.int64),
               "rings": rings, "cells": all_t}
        if n_new:
            out.update(created_xy=np.concatenate(c_xy), created_section=np.asarray(c_sec, dtype=object),
                       created_region=np.concatenate(c_reg))
        return out

    def _observed_context(self, xy: np.ndarray, sections: np.ndarray, targets: np.ndarray, *, k: int,
                          width: int) -> np.ndarray:
        """Each target's ``k`` nearest observed cells of its section, as a padded (t, width) neighbour table.

        ``xy`` (t, 2) and ``sections`` (t,) belong to the targets (existing ones first, then created ones);
        ``targets`` are the existing targets' global indices (never chosen as context).
        """
        d = self.data
        out = np.full((xy.shape[0], width), -1, dtype=np.int64)
        observed = np.ones(d.n_cells, dtype=bool)
        observed[targets] = False
        kk = min(k, width)
        sections = sections.astype(str)
        for s in np.unique(sections):
            rows = np.flatnonzero(sections == s)
            pool = np.flatnonzero(observed & self._in_section(s))
            if pool.size == 0:
                raise SlideError(f"section {s!r} has no observed cell left to impute from")
            m = min(kk, pool.size)
            _, nn = self._observed_tree(s, pool).query(xy[rows], k=m, workers=-1)
            out[rows, :m] = pool[np.asarray(nn).reshape(rows.size, m)]
        return out

    def _in_section(self, section: str) -> np.ndarray:
        """(n,) bool mask of the cells of ``section`` (cached)."""
        if section not in self._section_masks:
            self._section_masks[section] = self.section_labels == section
        return self._section_masks[section]

    def _observed_tree(self, section: str, pool: np.ndarray):
        """k-d tree of the observed cells ``pool`` of a section (kept while the pool stays the same)."""
        import hashlib

        from scipy.spatial import cKDTree

        key = (section, hashlib.blake2b(pool.tobytes(), digest_size=16).hexdigest())
        cache = self._trees
        if key not in cache:
            if len(cache) >= 8:
                cache.clear()
            cache[key] = cKDTree(self.data.coords[pool])
        return cache[key]

    def _nbr_parts(self, all_t, t_nbr, target_global, n) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """Membership of each target's microenvironment: (targets x slide cells) for its measured members and
        (targets x targets) for its target members (itself included)."""
        tt = all_t.size
        members = np.concatenate([all_t[:, None], t_nbr], axis=1)
        rows = np.broadcast_to(np.arange(tt)[:, None], members.shape)
        valid = members >= 0
        is_t = valid & ((members >= n) | target_global[np.clip(members, 0, n - 1)])
        meas = valid & ~is_t
        a_meas = sp.csr_matrix((np.ones(int(meas.sum())), (rows[meas], members[meas])), shape=(tt, n))
        slot = np.searchsorted(all_t, members[is_t])  # all_t is sorted
        a_imp = sp.csr_matrix((np.ones(slot.size), (rows[is_t], slot)), shape=(tt, tt))
        return a_meas, a_imp

    def _nbr_sum(self, all_t, t_nbr, imputed, target_global, n) -> np.ndarray:
        """Measured counts of observed members + imputed counts of target members."""
        a_meas, a_imp = self._nbr_parts(all_t, t_nbr, target_global, n)
        return (a_meas @ self.data.counts).toarray().astype(np.float64) + a_imp @ imputed

    def _nbr_sum_log(self, all_t, t_nbr, probs_nbr, library, theta_n, target_global, n, *,
                     shift: np.ndarray | None = None) -> np.ndarray:
        """``draw="logmean"`` microenvironments: measured counts of observed members plus, for the target
        members, the model's expected log-normalised expression.

        The target members' counts are one negative binomial per gene: the mean is the decoder's
        microenvironment profile (``probs_nbr``, the token mixture's) times the summed read depth of the
        target members (``library``), the dispersion is the decoder's; the measured members are a known
        offset (see :func:`napari_squint.nn.log_estimate.log_space_counts`). ``shift`` (t, g), the local
        residual correction, is weighted by the target members' share of the read depth.
        """
        a_meas, a_imp = self._nbr_parts(all_t, t_nbr, target_global, n)
        offset = (a_meas @ self.data.counts).toarray().astype(np.float64)
        depth = a_imp @ np.asarray(library, dtype=np.float64)
        total = offset.sum(1) + depth
        if shift is not None:
            shift = shift * (depth / total)[:, None]
        return log_space_counts(probs_nbr * depth[:, None], theta_n, total, offset, shift=shift)

    def local_correction(self, xy: np.ndarray, sections: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """The local residual correction (:mod:`napari_squint.tasks.residual`) at points ``xy`` (t, 2).

        For each point, the mean residual of the ``k`` (the model's graph
        ``k``) nearest measured cells of its section (``sections`` (t,)) whose
        microenvironment holds no target (``targets`` (n,) bool). Residuals
        do not depend on the targets, so each cell's is computed once and
        cached. Returns float64 (t, g); zero rows for a section with no such
        cell.
        """
        d = self.data
        k = self.model.config.graph.k
        out = np.zeros((len(xy), d.n_genes))
        if self._resid is None:
            self._resid = np.zeros((d.n_cells, d.n_genes), dtype=np.float32)
            self._resid_done = np.zeros(d.n_cells, dtype=bool)
        clean = clean_cells(d.nbr, targets)
        for s in np.unique(sections):
            rows = np.flatnonzero(sections == s)
            pool = np.flatnonzero(clean & self._in_section(s))
            if pool.size == 0:
                continue
            tree = self._observed_tree(s, pool)
            _, idx = tree.query(np.asarray(xy[rows], dtype=np.float64), k=min(k, pool.size), workers=-1)
            cells = pool[np.asarray(idx).reshape(rows.size, -1)]
            todo = np.unique(cells[~self._resid_done[cells]])
            if todo.size:
                self._resid[todo] = microenvironment_residuals(self.model, d, todo)
                self._resid_done[todo] = True
            out[rows] = self._resid[cells].mean(axis=1)
        return out

    # ------------------------------------------------------------------ API
    def impute(
        self,
        *,
        regions: Sequence | None = None,
        mask: np.ndarray | None = None,
        method: str | None = None,
        nbr_mode: str = DEFAULT_NBR,
        fill_empty: bool = True,
        seed: int = 0,
        draw: str | None = None,
        residual: bool | None = None,
        key_added: str = K.IMPUTED_LAYER,
    ) -> AnnData:
        """Impute the cells inside ``regions`` (or ``mask``); fill empty regions with new cells.

        Parameters
        ----------
        regions
            :class:`~napari_squint.io.geojson.Region` list (e.g. from
            :func:`~napari_squint.io.geojson.read_polygons`).
        mask
            (n,) bool of target cells, instead of ``regions``.
        method
            ``"context"``, ``"infill"`` or ``"oneshot"`` (the paper's pass);
            None: :attr:`default_method` (``"context"`` for SQuINT,
            ``"infill"`` for CIFM).
        nbr_mode
            ``"sum"`` (default) or ``"decoder"``: how ``imputed_nbr`` is formed
            (see the module docstring).
        fill_empty
            Place new cells in regions that hold none and impute them;
            otherwise such regions are an error.
        seed
            Seed of the placement of new cells and of ``draw="sample"``.
        draw
            ``"logmean"`` (counts whose log-normalisation is the expected
            log-normalised expression), ``"mean"`` (expected counts) or
            ``"sample"`` (generated counts), see the module docstring; None:
            :attr:`default_draw` (``"logmean"`` for SQuINT, ``"mean"`` for
            CIFM, which has only expected counts).
        residual
            Local residual correction (:mod:`napari_squint.tasks.residual`);
            None: on for SQuINT with ``draw="logmean"``.
        key_added
            Layer names: ``layers[key_added]`` and ``layers[key_added + '_nbr']``.

        Returns
        -------
        AnnData
            One row per target (and created) cell, genes in model order:
            ``X`` the measured counts (zero for created cells);
            ``layers[key_added]`` (m, g) imputed counts of the cell;
            ``layers[key_added + '_nbr']`` (m, g) imputed microenvironment counts;
            ``obs``: index = input cell ids (created cells: ``<region>_new<j>``),
            the section column, ``squint_token`` (categorical), ``squint_created``
            (bool), ``squint_region`` (categorical region name), ``squint_ring``;
            ``obsm[spatial_key]`` (m, 2); ``uns['squint']['impute']['params']``.

        Raises
        ------
        SlideError
            Both or neither of ``regions``/``mask``; a region naming an unknown
            section, lying far outside the slide, invalid (self-intersecting)
            or empty with ``fill_empty=False``; no target at all.
        """
        t0 = time.perf_counter()
        method = method or self.default_method
        draw = draw or self.default_draw
        if (regions is None) == (mask is None):
            raise SlideError("pass exactly one of regions= (polygons) or mask= (a bool array of cells)")
        created = []
        if regions is not None:
            regions = list(regions)
            if not regions:
                raise SlideError("regions is empty: draw at least one polygon")
            target_mask, labels, empty = self.cells_in(regions)
            if empty and not fill_empty:
                raise SlideError(f"region(s) {[regions[i].name for i in empty]} hold no cell; pass fill_empty=True "
                                 "(CLI: default) to place and impute new cells there")
            for j, i in enumerate(empty):
                created.append(self._create(regions[i], seed=seed + j))
            names = [r.name or f"region_{i}" for i, r in enumerate(regions)]
        else:
            target_mask = np.asarray(mask)
            if target_mask.shape != (self.n_cells,) or target_mask.dtype != bool:
                raise SlideError(f"mask must be a bool array of shape ({self.n_cells},), got "
                                 f"{target_mask.dtype} {target_mask.shape}")
            labels = np.where(target_mask, 0, -1)
            empty, names = [], ["mask"]
        targets = np.flatnonzero(target_mask)
        if targets.size == 0 and not created:
            raise SlideError("no cell lies inside the regions")
        if targets.size == self.n_cells:
            raise SlideError("every cell of the slide is inside the regions: nothing is observed to impute from")
        residual = self._resolve_residual(residual, draw)
        res = self.impute_targets(targets, method=method, nbr_mode=nbr_mode, created=created, seed=seed, draw=draw,
                                  residual=residual)
        out = self._to_anndata(res, targets, labels, empty, names, key_added)
        out.uns[K.UNS_KEY] = {"impute": {
            "params": {"method": method, "nbr_mode": nbr_mode, "fill_empty": fill_empty, "seed": seed, "draw": draw,
                       "residual": bool(residual),
                       "key_added": key_added, "n_regions": len(names), "model_genes": len(self.model.genes),
                       "model_kind": self.kind},
            "n_cells": int(targets.size), "n_created": int(out.n_obs - targets.size),
            "seconds": time.perf_counter() - t0,
        }}
        return out

    def _to_anndata(self, res, targets, labels, empty, names, key_added) -> AnnData:
        d = self.data
        t = targets.size
        n_new = res["imputed"].shape[0] - t
        X = sp.vstack([d.counts[targets], sp.csr_matrix((n_new, d.n_genes), dtype=np.float32)]).tocsr()
        sec_col = self.section_key or K.SECTION_KEY
        if n_new:
            reg_new = res["created_region"]
            new_names = []
            for ri in np.unique(reg_new):
                cnt = int((reg_new == ri).sum())
                new_names += [f"{names[empty[ri]]}_new{j}" for j in range(cnt)]
            obs_names = list(d.obs_names[targets].astype(str)) + new_names
            sections = np.concatenate([self.section_labels[targets], res["created_section"]])
            region = np.concatenate([labels[targets], np.asarray(empty)[reg_new]])
            xy = np.concatenate([d.coords[targets], res["created_xy"]])
        else:
            obs_names = list(d.obs_names[targets].astype(str))
            sections, region, xy = self.section_labels[targets], labels[targets], d.coords[targets]
        obs = pd.DataFrame(index=pd.Index(obs_names, dtype=str))
        obs[sec_col] = pd.Categorical(np.asarray(sections, dtype=str))
        tok = res["tokens"]
        obs[K.TOKEN_KEY] = pd.Categorical(tok, categories=np.unique(tok))
        obs[K.CREATED_KEY] = np.r_[np.zeros(t, dtype=bool), np.ones(n_new, dtype=bool)]
        obs[REGION_KEY] = pd.Categorical([names[i] for i in region], categories=list(dict.fromkeys(names)))
        obs[RING_KEY] = res["rings"].astype(np.int64)
        out = AnnData(X=X, obs=obs)
        out.var_names = list(d.genes)
        out.layers[key_added] = res["imputed"].astype(np.float32)
        out.layers[f"{key_added}_nbr"] = res["imputed_nbr"].astype(np.float32)
        out.obsm[self.spatial_key] = np.asarray(xy, dtype=np.float64)
        return out


def impute(
    model,
    adata: AnnData,
    *,
    regions: Sequence | None = None,
    mask: np.ndarray | None = None,
    method: str | None = None,
    nbr_mode: str = DEFAULT_NBR,
    fill_empty: bool = True,
    seed: int = 0,
    draw: str | None = None,
    residual: bool | None = None,
    align: bool = False,
    key_added: str = K.IMPUTED_LAYER,
) -> AnnData:
    """Impute the cells inside polygons (or a mask) of a slide with a trained model.

    One-off convenience around :class:`Imputer` (which keeps the prepared
    slide for repeated calls); see :meth:`Imputer.impute` for the parameters
    and the returned AnnData. ``adata`` is never modified.

    Examples
    --------
    >>> from napari_squint.io.geojson import read_polygons
    >>> out = impute(model, adata, regions=read_polygons("holes.geojson"))
    >>> out.layers["imputed"]        # (cells inside, model genes) counts
    """
    return Imputer(model, adata, align=align).impute(regions=regions, mask=mask, method=method, nbr_mode=nbr_mode,
                                                     fill_empty=fill_empty, seed=seed, draw=draw,
                                                     residual=residual, key_added=key_added)
