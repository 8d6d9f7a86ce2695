"""In-silico cell-level perturbation (paper section 5.4).

Replace the expression of a set of cells (e.g. T cells inside a painted ROI)
with a prototype profile (e.g. the mean of activated T cells), re-encode the
cells whose token can change, and compare tokens before and after, in
particular for *responder* cells (e.g. macrophages with a perturbed neighbour).

Why only a subgraph is re-encoded: the encoder has one GraphSAGE layer, so a
cell's token depends on its own input and on its 1-hop neighbours' inputs.
Changing the perturbed cells' inputs can therefore only change the tokens of
the perturbed cells and of cells with a perturbed neighbour; encoding those
needs their neighbours' inputs too (the perturbed cells' 2-hop
neighbourhood), which :meth:`Squint.encode` gathers itself. Every other
cell keeps its token by construction.

The prototype is turned into counts as follows (``scale=``):

* ``"library"`` (default): the prototype's gene *proportions* times each
  replaced cell's own library size, so only composition changes;
* ``"none"``: the prototype counts as given, for every replaced cell.

The encoder sees log-normalised inputs (counts scaled to 10^4 per cell), so
the tokens do not depend on this choice; the microenvironment counts
(``X_nbr``) do. With ``sample=True`` the counts are drawn from a Poisson
distribution around that mean with ``seed`` (realistic sparsity); otherwise
the mean itself is used (the paper). The user's AnnData is never changed:
the replacement lives in a copy of the model's prepared arrays
(:meth:`PreparedSlide.replace_counts`).

Keys written (only with ``write=True``)
---------------------------------------
``obs['squint_token_before']``, ``obs['squint_token_after']`` (categorical
tokens of every cell), ``obs['squint_perturbed']`` (bool), and
``uns['squint']['perturb']`` (``params`` and the transition table).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from napari_squint import _constants as K
from napari_squint.tasks.explain import _h5ad_frame, record_uns

__all__ = ["PerturbResult", "perturb", "select_cells", "transition_tables", "prototype_profile"]

SCALES = ("library", "none")


@dataclass
class PerturbResult:
    """Tokens before and after a perturbation.

    Attributes
    ----------
    affected
        (m,) indices of the cells whose token can change (perturbed cells and
        cells with a perturbed neighbour), ascending.
    obs_names
        (m,) their names.
    before, after
        (m,) their tokens before and after.
    perturbed
        (n,) bool, cells whose expression was replaced.
    responders
        (n,) bool, the responder cells analysed (``None`` when not given).
    transitions
        Responders' token changes: rows = token before, columns = token after,
        off-diagonal counts only (the diagonal is 0), restricted to tokens
        involved in a change; an empty frame when nothing changed.
    transition_proportions
        ``transitions`` divided by its row sums (each row: where that token's
        changed cells went).
    token_proportions
        Per token (index): ``n_before``, ``n_after``, ``before``, ``after``
        (fractions of responders).
    changed
        One row per affected cell whose token changed: ``cell``, ``index``,
        ``before``, ``after``, ``perturbed``, ``responder``.
    """

    affected: np.ndarray
    obs_names: pd.Index
    before: np.ndarray
    after: np.ndarray
    perturbed: np.ndarray
    responders: np.ndarray | None
    transitions: pd.DataFrame
    transition_proportions: pd.DataFrame
    token_proportions: pd.DataFrame
    changed: pd.DataFrame
    params: dict = field(default_factory=dict)
    adata: AnnData | None = None

    @property
    def n_changed_responders(self) -> int:
        return int(self.transitions.to_numpy().sum()) if self.transitions.size else 0

    @property
    def n_responders(self) -> int:
        """Cells whose transitions are tabulated: the chosen responders, or every affected cell when none."""
        return int(self.responders.sum()) if self.responders is not None else int(self.affected.size)


# --------------------------------------------------------------------------- selection
def select_cells(
    adata: AnnData,
    *,
    regions=None,
    cell_type: str | Sequence[str] | None = None,
    cell_type_key: str = K.CELL_TYPE_KEY,
    section_key: str | None = K.SECTION_KEY,
    spatial_key: str = K.SPATIAL_KEY,
) -> np.ndarray:
    """(n,) bool mask: cells inside ``regions`` (and) of ``cell_type``.

    ``regions`` is a GeoJSON path, a list of :class:`~napari_squint.io.geojson.Region`
    or an (n,) bool mask; ``None`` means the whole slide.
    """
    mask = np.ones(adata.n_obs, dtype=bool)
    if regions is not None:
        if isinstance(regions, np.ndarray) and regions.dtype == bool:
            if regions.shape != (adata.n_obs,):
                raise ValueError(f"region mask has shape {regions.shape}; expected ({adata.n_obs},)")
            mask &= regions
        else:
            from napari_squint.io.geojson import cells_in_regions, read_polygons

            regs = read_polygons(regions) if isinstance(regions, (str, bytes)) or hasattr(regions, "__fspath__") \
                else list(regions)
            mask &= cells_in_regions(adata, regs, section_key=section_key, spatial_key=spatial_key)
    if cell_type is not None:
        if cell_type_key not in adata.obs:
            raise KeyError(f"cell-type key {cell_type_key!r} not found in adata.obs "
                           f"(columns: {list(adata.obs.columns)})")
        wanted = [cell_type] if isinstance(cell_type, str) else list(cell_type)
        ct = adata.obs[cell_type_key].astype(str)
        unknown = [c for c in wanted if c not in set(ct)]
        if unknown:
            raise ValueError(f"cell type(s) {unknown} not found in adata.obs[{cell_type_key!r}] "
                             f"(values: {sorted(pd.unique(ct))[:20]})")
        mask &= ct.isin(wanted).to_numpy()
    return mask


def _as_mask(names: pd.Index, cells, what: str) -> np.ndarray:
    """(n,) bool mask from a bool mask, cell names or integer positions."""
    arr = np.asarray(cells)
    if arr.dtype == bool:
        if arr.shape != (names.size,):
            raise ValueError(f"{what} mask has shape {arr.shape}; expected ({names.size},)")
        return arr.copy()
    mask = np.zeros(names.size, dtype=bool)
    if arr.size == 0:
        return mask
    if arr.dtype.kind in "iu":
        if arr.min() < 0 or arr.max() >= names.size:
            raise IndexError(f"{what}: cell positions must lie in [0, {names.size})")
        mask[arr.astype(np.int64)] = True
        return mask
    idx = names.get_indexer([str(c) for c in arr.ravel()])
    if (idx < 0).any():
        bad = [c for c, i in zip(arr.ravel(), idx) if i < 0][:5]
        raise KeyError(f"{what}: cell name(s) not in adata.obs_names, e.g. {bad}")
    mask[idx] = True
    return mask


def prototype_profile(data, prototype, genes: list[str], n_replaced: int) -> np.ndarray:
    """(g,) or (m, g) prototype counts in model gene order.

    ``prototype`` is one of: a pandas Series indexed by gene (genes it lacks
    are 0); a numeric (g,) vector or (m, g) matrix (one row per replaced
    cell), in model gene order; otherwise a selection of cells (an (n,) bool
    mask, cell names, or a list of integer positions) whose mean counts are used.
    """
    if isinstance(prototype, pd.Series):
        known = set(genes)
        if not any(g in known for g in prototype.index):
            raise KeyError(f"no prototype gene is a model gene (e.g. {list(prototype.index[:5])})")
        return prototype.reindex(genes).fillna(0.0).to_numpy(dtype=np.float64)
    arr = np.asarray(prototype)
    numeric = arr.dtype != bool and arr.dtype.kind in "fiu"
    if numeric and (arr.ndim == 2 or (arr.ndim == 1 and arr.size == len(genes) and not isinstance(prototype, list))):
        if arr.shape[-1] != len(genes):
            raise ValueError(f"prototype has {arr.shape[-1]} genes; the model has {len(genes)}")
        if arr.ndim == 2 and arr.shape[0] != n_replaced:
            raise ValueError(f"prototype matrix has {arr.shape[0]} rows; expected one per replaced cell ({n_replaced})")
        if (arr < 0).any() or not np.isfinite(arr).all():
            raise ValueError("prototype has negative or non-finite values; give counts (or proportions)")
        return arr.astype(np.float64)
    mask = _as_mask(data.obs_names, prototype, "prototype")
    if not mask.any():
        raise ValueError("the prototype selects no cell")
    return np.asarray(data.counts[np.flatnonzero(mask)].mean(0)).ravel().astype(np.float64)


# --------------------------------------------------------------------------- tables
def transition_tables(before: np.ndarray, after: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(transitions, row-normalised proportions, token proportions) of one group of cells.

    Both transition tables exclude the diagonal (cells keeping their token)
    and only list tokens involved in at least one change; they are empty when
    nothing changed.
    """
    before, after = np.asarray(before), np.asarray(after)
    moved = before != after
    if moved.any():
        tab = pd.crosstab(pd.Series(before[moved], name="before"), pd.Series(after[moved], name="after"))
        tab = tab.astype(np.int64)
        props = tab.div(tab.sum(1), axis=0)
    else:
        tab = pd.DataFrame(np.zeros((0, 0), dtype=np.int64), index=pd.Index([], name="before"),
                           columns=pd.Index([], name="after"))
        props = tab.astype(float)
    nb = pd.Series(before).value_counts()
    na = pd.Series(after).value_counts()
    idx = nb.index.union(na.index)
    n = max(before.size, 1)
    tp = pd.DataFrame({"n_before": nb.reindex(idx, fill_value=0), "n_after": na.reindex(idx, fill_value=0)})
    tp["before"] = tp["n_before"] / n
    tp["after"] = tp["n_after"] / n
    tp.index.name = "token"
    tp = tp.sort_values(["n_before", "n_after"], ascending=False)
    return tab, props, tp


# --------------------------------------------------------------------------- perturb
def perturb(
    model,
    adata: AnnData,
    *,
    cells,
    prototype,
    responders=None,
    require_perturbed_neighbour: bool = True,
    scale: str = "library",
    sample: bool = False,
    seed: int = 0,
    align: bool = False,
    write: bool = False,
    copy: bool = False,
    key_before: str = K.TOKEN_BEFORE_KEY,
    key_after: str = K.TOKEN_AFTER_KEY,
    key_perturbed: str = K.PERTURBED_KEY,
) -> PerturbResult:
    """Replace the expression of ``cells`` by ``prototype`` and compare tokens before and after.

    Parameters
    ----------
    model
        A trained :class:`~napari_squint.api.squint.Squint`.
    adata
        The slide (raw counts); never modified unless ``write=True`` and ``copy=False``.
    cells
        Cells to perturb: (n,) bool mask, cell names or integer positions
        (see :func:`select_cells` for region / cell-type masks).
    prototype
        Replacement profile, see :func:`prototype_profile` (cells whose mean
        is taken, a per-gene Series, a (g,) vector or an (m, g) matrix).
    responders
        Cells whose transitions are tabulated (mask / names / positions),
        e.g. macrophages; with ``require_perturbed_neighbour`` (default) only
        those with at least one perturbed neighbour and not perturbed
        themselves are kept.
    scale, sample, seed
        How the prototype becomes counts (module docstring); ``seed`` drives
        the Poisson draw, so results are reproducible.
    align
        Fill genes the slide lacks with zeros (``Squint.prepare(align=True)``).
    write, copy
        Write ``obs`` columns (before / after tokens of every cell, the
        perturbed mask) into ``adata`` (or a copy with ``copy=True``, returned
        as ``result.adata``).

    Returns
    -------
    PerturbResult
    """
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r}; choose one of {SCALES}")
    data = model.prepare(adata, align=align)
    pert = _as_mask(data.obs_names, cells, "cells")
    if not pert.any():
        raise ValueError("no cell to perturb: the selection (region / cell type) is empty")
    idx = np.flatnonzero(pert)
    proto = prototype_profile(data, prototype, list(model.genes), idx.size)
    base = np.broadcast_to(proto, (idx.size, proto.shape[-1])).astype(np.float64)
    if scale == "library":
        lib = data.library()[idx].astype(np.float64)
        tot = base.sum(1, keepdims=True)
        if (tot <= 0).any():
            raise ValueError("prototype has no counts: its proportions are undefined")
        base = base / tot * lib[:, None]
    if sample:
        rng = np.random.default_rng(seed)
        new = rng.poisson(base).astype(np.float32)
    else:
        new = base.astype(np.float32)
    pdata = data.replace_counts(idx, sp.csr_matrix(new))

    nbr = data.nbr
    has_pert_nbr = np.where(nbr >= 0, pert[np.maximum(nbr, 0)], False).any(1)
    affected = np.flatnonzero(pert | has_pert_nbr)
    before = model.encode(data, cells=affected)["tokens"]
    after = model.encode(pdata, cells=affected)["tokens"]

    resp = None
    if responders is not None:
        resp = _as_mask(data.obs_names, responders, "responders")
        if require_perturbed_neighbour:
            resp &= has_pert_nbr & ~pert
    pos = np.full(data.n_cells, -1, dtype=np.int64)
    pos[affected] = np.arange(affected.size)
    if resp is not None:
        r_idx = np.flatnonzero(resp)
        if r_idx.size and (pos[r_idx] < 0).any():  # responders that cannot change keep their token
            outside = r_idx[pos[r_idx] < 0]
            tok_out = model.encode(data, cells=outside)["tokens"]
            rb = np.empty(r_idx.size, dtype=before.dtype)
            ra = np.empty(r_idx.size, dtype=before.dtype)
            inside = pos[r_idx] >= 0
            rb[inside], ra[inside] = before[pos[r_idx[inside]]], after[pos[r_idx[inside]]]
            rb[~inside] = ra[~inside] = tok_out
        else:
            rb, ra = before[pos[r_idx]], after[pos[r_idx]]
    else:
        rb, ra = before, after
    trans, props, tprops = transition_tables(rb, ra)

    moved = before != after
    changed = pd.DataFrame({"cell": data.obs_names[affected[moved]], "index": affected[moved],
                            "before": before[moved], "after": after[moved], "perturbed": pert[affected[moved]],
                            "responder": resp[affected[moved]] if resp is not None else False})
    params = {"n_perturbed": int(pert.sum()), "n_affected": int(affected.size),
              "n_responders": int(resp.sum()) if resp is not None else 0, "scale": scale, "sample": bool(sample),
              "seed": int(seed), "require_perturbed_neighbour": bool(require_perturbed_neighbour),
              "n_changed": int(moved.sum()), "n_changed_responders": int((rb != ra).sum())}
    result = PerturbResult(affected=affected, obs_names=data.obs_names[affected], before=before, after=after,
                           perturbed=pert, responders=resp, transitions=trans, transition_proportions=props,
                           token_proportions=tprops, changed=changed, params=params)
    if write:
        target = adata.copy() if copy else adata
        all_tok = (target.obs[K.TOKEN_KEY].to_numpy().astype(np.int64) if K.TOKEN_KEY in target.obs
                   and target.obs[K.TOKEN_KEY].notna().all() else model.encode(data)["tokens"])
        tb = np.asarray(all_tok).copy()
        tb[affected] = before
        ta = tb.copy()
        ta[affected] = after
        cats = np.union1d(tb, ta)
        target.obs[key_before] = pd.Categorical(tb, categories=cats)
        target.obs[key_after] = pd.Categorical(ta, categories=cats)
        target.obs[key_perturbed] = pert
        t_store = trans.copy()
        t_store.index = t_store.index.astype(str)
        t_store.columns = t_store.columns.astype(str)
        t_store.index.name = t_store.columns.name = None
        record_uns(target, "perturb", {**params, "key_before": key_before, "key_after": key_after,
                                       "key_perturbed": key_perturbed},
                   transitions=t_store, token_proportions=_h5ad_frame(tprops))
        result.adata = target
    return result
