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
    SQuINT: generated counts (one token drawn, then negative-binomial counts).
    CIFM: a measured cell of the section whose masked reconstruction matches
    the target's (predictive mean matching, :mod:`napari_squint.api.cifm_pmm`).
    Both reproduce the spread of real cells (far better MMD and energy
    distance) but correlate much less with the truth (docs/imputation.md,
    docs/cifm.md).

With ``draw="logmean"`` both profiles then get the local residual
correction (``residual=True``, :mod:`napari_squint.api.squint_residual`): the
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
a second on a CPU (``benchmarks/impute_speed.py``). A widget can locate a
polygon's cells once (:func:`locate_regions`, which also checks the
polygons) and pass the result to :meth:`Imputer.impute` (``located=``).

Layout: this module is the front end (regions -> targets -> result AnnData);
the model-specific work is the model's engine (``model.imputation_engine``:
:mod:`napari_squint.api.squint_impute`, :mod:`napari_squint.api.cifm_impute`);
what a model offers (methods, draws, residual, ``imputed_nbr`` modes) are its
capability attributes (:class:`~napari_squint.api.base.BaseModel`).

Empty polygons (a tear, an unimaged area) are filled with new cells at the
local density (:mod:`napari_squint.tasks.fill`), linked into the graph and
imputed like any target; they are marked ``obs['squint_created']``.

CIFM models (:class:`~napari_squint.api.cifm.Cifm`) go through the same
class and the same output. Targets (and new cells) are
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
from napari_squint.api.impute_engine import TargetSet
from napari_squint.data.imputation import section_median_depth
from napari_squint.data.validate import SlideError
from napari_squint.tasks.regions import RegionTargets, locate_regions

__all__ = ["DEFAULT_DRAW", "DEFAULT_METHOD", "DEFAULT_NBR", "DRAWS", "METHODS", "NBR_MODES", "Imputer",
           "RegionTargets", "impute", "locate_regions", "resolve_options"]

#: every imputation method of any model (a model offers ``model.impute_methods``), see the module docstring
METHODS = ("context", "infill", "oneshot")
#: the method and draw shown before any model is loaded (SQuINT's defaults; a model's are its attributes)
DEFAULT_METHOD = "context"
DEFAULT_DRAW = "logmean"
#: how ``imputed_nbr`` is formed
NBR_MODES = ("decoder", "sum")
#: the default ``imputed_nbr`` (better than the decoder head on every X_nbr metric, docs/imputation.md)
DEFAULT_NBR = "sum"
#: what an imputed profile is: the expected counts or a draw (generated counts)
DRAWS = K.DRAWS


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


def resolve_options(model, *, method: str | None = None, draw: str | None = None, residual: bool | None = None,
                    nbr_mode: str = DEFAULT_NBR, substitute: str = "mean") -> dict:
    """Check the in-painting options against what ``model`` offers and fill in its defaults, once.

    ``method``/``draw`` None take ``model.default_method``/``model.default_draw``;
    ``residual`` None means on exactly when the model supports it and
    ``draw="logmean"`` (True elsewhere is an error).

    Returns
    -------
    dict with ``method``, ``draw``, ``residual``, ``nbr_mode``, ``substitute``.
    """
    method, draw = method or model.default_method, draw or model.default_draw
    for name, value, offered in (("method", method, model.impute_methods), ("draw", draw, model.draws),
                                 ("nbr_mode", nbr_mode, model.nbr_modes), ("substitute", substitute, model.substitutes)):
        if value not in offered:
            raise ValueError(f"{name}={value!r}: {model.label} offers {offered}")
    possible = model.supports_residual and draw == "logmean"
    if residual and not possible:
        raise ValueError(f"residual=True needs a model with the residual correction and draw='logmean' (the "
                         f"correction is on the log-normalised scale); got {model.label} and draw={draw!r}")
    return {"method": method, "draw": draw, "residual": possible if residual is None else bool(residual),
            "nbr_mode": nbr_mode, "substitute": substitute}


class Imputer:
    """A trained model and one slide prepared once, for repeated imputation.

    Parameters
    ----------
    model
        A trained model (:class:`~napari_squint.api.squint.Squint`,
        :class:`~napari_squint.api.cifm.Cifm`).
    adata
        The slide (never modified). It must hold the model's genes.
    align
        Fill genes the slide lacks with zeros (a model trained on a panel
        that differs slightly from the slide's).

    Notes
    -----
    The prepared slide (graph, inputs, covariates of all cells) and the
    model's engine are built once here; every :meth:`impute` call then works
    on the targets and their neighbours only. Keep the object alive between
    calls (the napari plugin does).
    """

    def __init__(self, model, adata: AnnData, *, align: bool = False):
        _check_genes(model, adata, align)
        self.model = model
        self.adata = adata
        self.align = align
        self.section_key = model.section_key if (model.section_key and model.section_key in adata.obs) else None
        self.spatial_key = model.spatial_key
        self.data = model.prepare(adata, align=align)
        if self.section_key is not None:
            self.section_labels = adata.obs[self.section_key].astype(str).to_numpy()
        else:
            self.section_labels = np.full(adata.n_obs, "", dtype=object)
        self._section_names = list(pd.unique(self.section_labels))
        self.engine = model.imputation_engine(self.data, self.section_labels)

    @property
    def n_cells(self) -> int:
        return self.data.n_cells

    def locate(self, regions: Sequence) -> RegionTargets:
        """:func:`locate_regions` on this slide."""
        return locate_regions(self.adata, regions, section_key=self.section_key, spatial_key=self.spatial_key)

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
        if self.data.coords.shape[1] != 2:
            raise SlideError(f"region {region.name!r} holds no cell to impute: new cells are placed in a plane, "
                             f"and this slide's coordinates have {self.data.coords.shape[1]} columns (x, y, z); "
                             "impute existing cells, or use a two-column spatial key")
        new_xy = place_cells(region.polygon, self.data.coords[idx], seed=seed)
        scale = self.data.scales.get(section)
        if scale is None:
            scale = next(iter(self.data.scales.values()))
        return new_xy, section, int(self.data.batch[idx[0]]), idx, scale

    def target_set(self, targets: np.ndarray, created: list | None = None) -> TargetSet:
        """The :class:`~napari_squint.api.impute_engine.TargetSet` of existing ``targets`` and new cells.

        ``created`` holds :meth:`_create`'s output for each empty region; new
        cells are linked into their section's kNN graph as ``prepare`` would.
        """
        from napari_squint.tasks.fill import created_graph

        d, gc = self.data, self.model.graph_config()
        n = d.n_cells
        targets = np.unique(np.asarray(targets, dtype=np.int64))
        c_xy, c_sec, c_batch, c_nbr, c_cond, c_reg = [], [], [], [], [], []
        offset = n
        for ri, (new_xy, section, bid, idx, scale) in enumerate(created or []):
            nb, cond = created_graph(d.coords[idx], idx, new_xy, first_new=offset, k=gc.k, max_degree=d.nbr.shape[1],
                                     scale=scale, n_rbf=gc.n_rbf, rbf_max=gc.rbf_max)
            c_xy.append(new_xy)
            c_sec += [section] * len(new_xy)
            c_batch.append(np.full(len(new_xy), bid, dtype=np.int64))
            c_nbr.append(nb)
            c_cond.append(cond)
            c_reg.append(np.full(len(new_xy), ri, dtype=np.int64))
            offset += len(new_xy)
        n_new = offset - n
        cells = np.concatenate([targets, n + np.arange(n_new)])
        if cells.size == 0:
            raise SlideError("nothing to impute: no cell inside the regions and no empty region to fill")
        mask = np.zeros(n, dtype=bool)
        mask[targets] = True
        sections = np.concatenate([self.section_labels[targets].astype(object), np.asarray(c_sec, dtype=object)])
        depth = section_median_depth(self.engine.library, self.section_labels, ~mask, sections.astype(str),
                                     obs_names=d.obs_names)
        ts = TargetSet(
            targets=targets, cells=cells, nbr=np.concatenate([d.nbr[targets]] + c_nbr) if n_new else d.nbr[targets],
            xy=np.concatenate([d.coords[targets]] + c_xy) if n_new else d.coords[targets], sections=sections,
            depth=depth, target_mask=mask)
        if n_new:
            ts.created_batch, ts.created_cond = np.concatenate(c_batch), np.concatenate(c_cond)
            ts.created_xy, ts.created_region = np.concatenate(c_xy), np.concatenate(c_reg)
        return ts

    # ------------------------------------------------------------------ engine
    def impute_targets(self, targets: np.ndarray, *, method: str | None = None, nbr_mode: str = DEFAULT_NBR,
                       created: list | None = None, substitute: str = "mean", draw: str | None = None,
                       residual: bool | None = None, seed: int = 0, options: dict | None = None) -> dict:
        """Impute existing cells ``targets`` (and new cells): the model's engine behind :meth:`impute`.

        Parameters
        ----------
        targets
            (t,) global indices of existing cells to impute.
        method, draw, residual, nbr_mode
            See :meth:`impute` (checked by :func:`resolve_options` unless
            ``options``, its output, is given).
        created
            Output of :meth:`_create` for each empty region to fill.
        substitute
            What replaces an imputed ring's inputs in ``"infill"``: ``"mean"``
            (the expected counts) or, where the model offers it, ``"sample"``
            (negative-binomial draws with the model's per-cell dispersion, seeded).

        Returns
        -------
        dict with ``imputed`` (t + c, g), ``imputed_nbr`` (t + c, g), ``tokens``,
        ``rings`` (t + c,), ``cells``, and for created cells ``created_xy`` (c, 2),
        ``created_section`` (c,), ``created_region`` (c,) (index into ``created``).
        """
        opts = options or resolve_options(self.model, method=method, draw=draw, residual=residual,
                                          nbr_mode=nbr_mode, substitute=substitute)
        ts = self.target_set(targets, created)
        out = self.engine.impute(ts, seed=seed, **opts)
        out["cells"] = ts.cells
        if ts.n_created:
            n_t = ts.targets.size
            out.update(created_xy=ts.created_xy, created_section=ts.sections[n_t:], created_region=ts.created_region)
        return out

    # ------------------------------------------------------------------ API
    def impute(
        self,
        *,
        regions: Sequence | None = None,
        mask: np.ndarray | None = None,
        located: RegionTargets | None = None,
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
        located
            :func:`locate_regions`'s result for the regions (instead of
            ``regions``: the cells are not located again).
        method
            One of ``model.impute_methods`` (``"context"``, ``"infill"``,
            ``"oneshot"``); None: ``model.default_method``.
        nbr_mode
            ``"sum"`` (default) or, where the model offers it, ``"decoder"``:
            how ``imputed_nbr`` is formed (see the module docstring).
        fill_empty
            Place new cells in regions that hold none and impute them;
            otherwise such regions are an error.
        seed
            Seed of the placement of new cells and of ``draw="sample"``.
        draw
            One of ``model.draws`` (``"logmean"``, ``"mean"``, ``"sample"``,
            see the module docstring); None: ``model.default_draw``.
        residual
            Local residual correction (:mod:`napari_squint.api.squint_residual`);
            None: on where the model supports it and ``draw="logmean"``.
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
            Not exactly one of ``regions``/``located``/``mask``; a region naming an
            unknown section, lying far outside the slide, invalid (self-intersecting)
            or empty with ``fill_empty=False``; no target at all.
        """
        t0 = time.perf_counter()
        opts = resolve_options(self.model, method=method, draw=draw, residual=residual, nbr_mode=nbr_mode)
        if sum(x is not None for x in (regions, mask, located)) != 1:
            raise SlideError("pass exactly one of regions= (polygons) or mask= (a bool array of cells)")
        created = []
        if mask is None:
            located = located if located is not None else self.locate(regions)
            if located.empty and not fill_empty:
                raise SlideError(f"region(s) {[located.regions[i].name for i in located.empty]} hold no cell; pass "
                                 "fill_empty=True (CLI: default) to place and impute new cells there")
            for j, i in enumerate(located.empty):
                created.append(self._create(located.regions[i], seed=seed + j))
            target_mask, labels, empty, names = located.mask, located.labels, located.empty, located.names
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
        res = self.impute_targets(targets, created=created, seed=seed, options=opts)
        out = self._to_anndata(res, targets, labels, empty, names, key_added)
        out.uns[K.UNS_KEY] = {"impute": {
            "params": {"method": opts["method"], "nbr_mode": nbr_mode, "fill_empty": fill_empty, "seed": seed,
                       "draw": opts["draw"], "residual": opts["residual"], "key_added": key_added,
                       "n_regions": len(names), "model_genes": len(self.model.genes), "model_kind": self.model.kind},
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
        obs[K.REGION_KEY] = pd.Categorical([names[i] for i in region], categories=list(dict.fromkeys(names)))
        obs[K.RING_KEY] = res["rings"].astype(np.int64)
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
