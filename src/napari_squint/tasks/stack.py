"""3D stacks: train across the sections of a z-stack and impute held-out cells (paper section 5.2).

Every level (z position) is a section of its own, with its own kNN graph and
batch id. 10% of the cells of every level (random, seeded) are held out: they
are excluded from training (``Squint(adata, holdout=mask)``), then imputed
with the learned mask token in the presence of their observed neighbours
(:meth:`Squint.impute_cells`).

Report (paper Fig. 3a): genes are ranked by their per-gene Pearson
correlation between measured and imputed profiles over *all* held-out cells
(log-normalised, one ranking for X and one for X_nbr) and grouped into top-k
sets (e.g. top 10 / 20 / 50 / all); for every level, the mean per-gene Pearson
over that level's held-out cells is reported for each group, for the cell's
own profile (X) and its microenvironment (X_nbr).

Optional 3D neighbourhoods (``graphs=("section", "3d")``): a second model is
trained with the same held-out cells on a kNN graph of ``(x, y, z * z_scale)``
that links adjacent levels; ``z_scale`` defaults to the median in-plane
nearest-neighbour distance over the median gap between levels, so a cell
directly above or below is as near as an in-plane neighbour. Both reports are
returned. The X scores of the two graphs compare like with like; the X_nbr
scores each use their own graph's microenvironment as the truth.

>>> res = stack_imputation(adata, z_key="z", epochs=15)
>>> res.reports["section"].x          # levels x gene groups, mean per-gene PC
"""

from __future__ import annotations

import copy as _copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from anndata import AnnData

from napari_squint import _constants as K
from napari_squint.train.events import ProgressEvent, drive

__all__ = ["StackReport", "StackResult", "iter_stack_imputation", "stack_imputation", "z_levels",
           "holdout_per_level", "graph_3d", "group_labels"]

GRAPHS = ("section", "3d")
LEVEL_COL = "_squint_level"  #: obs column of the working copy naming each cell's level


@dataclass
class StackReport:
    """Imputation quality of held-out cells per level for one graph.

    Attributes
    ----------
    x, x_nbr
        (levels, gene groups) mean per-gene Pearson correlation of the
        held-out cells of each level (rows: z values in increasing order;
        columns: ``"top 10"``, ... ``"all 135"``).
    genes
        Global ranking (index gene): ``pc_x``, ``rank_x``, ``pc_nbr``,
        ``rank_nbr`` (rank 1 = best; genes whose correlation is undefined rank last).
    per_gene_x, per_gene_nbr
        (levels, genes) per-level per-gene correlations.
    n_heldout
        Held-out cells per level.
    graph
        ``"section"`` (one kNN graph per level) or ``"3d"``.
    graph_stats
        ``mean_degree``, ``cross_level_edges`` (fraction of edges joining two
        levels), ``z_scale`` (3D only), ``train_seconds``.
    tokens
        (n,) tokens of every cell (all observed) from this model.
    baseline_x, baseline_x_nbr
        The same tables for a k-nearest-observed-neighbours baseline (each
        held-out cell is the mean of its ``k`` nearest observed cells of the
        same level; its microenvironment sums that estimate and its
        neighbours' counts, held-out neighbours also estimated), with genes
        grouped by the model's ranking so that the two compare like with like.
    """

    x: pd.DataFrame
    x_nbr: pd.DataFrame
    genes: pd.DataFrame
    per_gene_x: pd.DataFrame
    per_gene_nbr: pd.DataFrame
    n_heldout: pd.Series
    graph: str
    graph_stats: dict
    tokens: np.ndarray
    model: object = None
    baseline_x: pd.DataFrame | None = None
    baseline_x_nbr: pd.DataFrame | None = None

    def summary(self) -> pd.DataFrame:
        """Long table: level, space (X / X_nbr), method (squint / knn_average), group, mean PC, graph."""
        out = []
        for space, tab, method in (("X", self.x, "squint"), ("X_nbr", self.x_nbr, "squint"),
                                   ("X", self.baseline_x, "knn_average"), ("X_nbr", self.baseline_x_nbr, "knn_average")):
            if tab is None:
                continue
            t = tab.reset_index().melt(id_vars="z", var_name="group", value_name="pc")
            t.insert(1, "space", space)
            t.insert(2, "method", method)
            out.append(t)
        df = pd.concat(out, ignore_index=True)
        df["graph"] = self.graph
        return df


@dataclass
class StackResult:
    """Reports per graph, the held-out mask and the levels."""

    reports: dict[str, StackReport]
    heldout: np.ndarray
    levels: list[float]
    params: dict = field(default_factory=dict)

    def comparison(self) -> pd.DataFrame:
        """Mean over levels of every group, one row per (graph, space)."""
        rows = []
        for g, rep in self.reports.items():
            for space, tab, base in (("X", rep.x, rep.baseline_x), ("X_nbr", rep.x_nbr, rep.baseline_x_nbr)):
                rows.append({"graph": g, "method": "squint", "space": space, **tab.mean(0).to_dict()})
                if base is not None:
                    rows.append({"graph": g, "method": "knn_average", "space": space, **base.mean(0).to_dict()})
        return pd.DataFrame(rows)


# --------------------------------------------------------------------------- helpers
def z_levels(adata: AnnData, z_key: str) -> np.ndarray:
    """(n,) z position of every cell: ``obs[z_key]``, or the last column of ``obsm[z_key]``."""
    if z_key in adata.obs:
        z = pd.to_numeric(adata.obs[z_key], errors="coerce").to_numpy(dtype=np.float64)
    elif z_key in adata.obsm:
        arr = adata.obsm[z_key]
        arr = arr.to_numpy() if isinstance(arr, pd.DataFrame) else np.asarray(arr)
        if arr.ndim != 2 or arr.shape[1] < 1:
            raise ValueError(f"adata.obsm[{z_key!r}] has shape {arr.shape}; expected (n, d) with z in the last column")
        z = arr[:, -1].astype(np.float64)
    else:
        raise KeyError(f"z key {z_key!r} is neither an obs column nor an obsm key "
                       f"(obs: {list(adata.obs.columns)}, obsm: {list(adata.obsm)})")
    if not np.isfinite(z).all():
        raise ValueError(f"z key {z_key!r} has {int((~np.isfinite(z)).sum())} missing or non-numeric values")
    return z


def holdout_per_level(z: np.ndarray, fraction: float = 0.1, *, seed: int = 0) -> np.ndarray:
    """(n,) bool: ``fraction`` of the cells of every level, drawn at random with ``seed``."""
    if not 0 < fraction < 1:
        raise ValueError(f"holdout fraction={fraction} must be in (0, 1)")
    rng = np.random.default_rng(seed)
    mask = np.zeros(z.size, dtype=bool)
    for lev in np.unique(z):
        idx = np.flatnonzero(z == lev)
        m = max(1, int(round(fraction * idx.size)))
        mask[rng.choice(idx, size=m, replace=False)] = True
    return mask


def group_labels(sizes: Sequence[int | None], n_genes: int) -> list[tuple[str, int]]:
    """``[(label, size)]`` of the top-k gene groups, clipped to ``n_genes`` and de-duplicated."""
    out, seen = [], set()
    for s in sizes:
        k = n_genes if s is None or s >= n_genes else int(s)
        if k < 1 or k in seen:
            continue
        seen.add(k)
        out.append((f"all {k}" if k == n_genes else f"top {k}", k))
    return out


def _auto_z_scale(coords2: np.ndarray, z: np.ndarray) -> float:
    from napari_squint.data.graph import median_nn_distance

    levels = np.unique(z)
    if levels.size < 2:
        return 1.0
    nn = np.median([median_nn_distance(coords2[z == lev]) for lev in levels if (z == lev).sum() > 1])
    gap = float(np.median(np.diff(levels)))
    return float(nn / gap) if gap > 0 else 1.0


def graph_3d(data, coords3: np.ndarray, graph_cfg):
    """A copy of a :class:`PreparedSlide` whose graph is a kNN of the 3D coordinates.

    ``nbr``, the distance covariates ``cond`` and ``x_nbr`` are rebuilt; counts,
    inputs, batch ids and tiles are kept.
    """
    from napari_squint.data.covariates import rbf_covariates
    from napari_squint.data.graph import knn_graph, median_nn_distance, neighbourhood_sum

    if coords3.shape != (data.n_cells, 3):
        raise ValueError(f"3D coordinates have shape {coords3.shape}; expected ({data.n_cells}, 3)")
    nbr, _, dist = knn_graph(coords3, graph_cfg.k, max_degree=graph_cfg.max_degree)
    scale = median_nn_distance(coords3)
    cond = rbf_covariates(dist, scale, n_rbf=graph_cfg.n_rbf, max_dist=graph_cfg.rbf_max)
    return dataclasses.replace(data, nbr=nbr, cond=cond.astype(np.float32),
                               x_nbr=neighbourhood_sum(data.counts, nbr), scales={"stack_3d": scale})


def _graph_stats(nbr: np.ndarray, z: np.ndarray) -> dict:
    valid = nbr >= 0
    rows = np.repeat(np.arange(nbr.shape[0]), nbr.shape[1])[valid.ravel()]
    cols = nbr.ravel()[valid.ravel()]
    return {"mean_degree": float(valid.sum(1).mean()),
            "cross_level_edges": float((z[rows] != z[cols]).mean()) if cols.size else 0.0}


def _per_gene(true, pred) -> np.ndarray:
    from napari_squint.metrics import log_normalise, pearson_per_gene

    _, r = pearson_per_gene(log_normalise(true), log_normalise(pred), return_per_gene=True)
    return r


def _rank(pc: np.ndarray) -> np.ndarray:
    """1 = best; NaN last (stable by gene order)."""
    key = np.where(np.isfinite(pc), -pc, np.inf)
    order = np.argsort(key, kind="stable")
    rank = np.empty(pc.size, dtype=np.int64)
    rank[order] = np.arange(1, pc.size + 1)
    return rank


def _group_table(pg: np.ndarray, rank: np.ndarray, groups, levels) -> pd.DataFrame:
    return pd.DataFrame({lab: np.nanmean(np.where(rank[None, :] <= k, pg, np.nan), axis=1) for lab, k in groups},
                        index=pd.Index(levels, name="z"))


def _baseline_tables(data, coords2, z, held, cells, lev_c, levels, rank_x, rank_n, groups, *, k: int):
    """Per-level group means of the k-nearest-observed-neighbours baseline (X and X_nbr)."""
    from napari_squint.metrics.baselines import neighbourhood_average

    est = neighbourhood_average(coords2, data.counts, ~held, cells, k=k, section=z)
    true_x = data.counts[cells]
    true_n = data.x_nbr[cells]
    est_n = data.replace_counts(cells, est).x_nbr[cells]
    pg_x = np.full((len(levels), data.n_genes), np.nan)
    pg_n = np.full_like(pg_x, np.nan)
    for li in range(len(levels)):
        sel = lev_c == li
        if sel.sum() < 3:
            continue
        pg_x[li] = _per_gene(true_x[sel], est[sel])
        pg_n[li] = _per_gene(true_n[sel], est_n[sel])
    return _group_table(pg_x, rank_x, groups, levels), _group_table(pg_n, rank_n, groups, levels)


# --------------------------------------------------------------------------- main
def iter_stack_imputation(
    adata: AnnData,
    *,
    z_key: str = K.Z_KEY,
    spatial_key: str = K.SPATIAL_KEY,
    layer: str | None = None,
    template=None,
    genes="all",
    config=None,
    holdout_fraction: float = 0.1,
    seed: int = 0,
    gene_groups: Sequence[int | None] = (10, 20, 50, None),
    graphs: Sequence[str] = ("section",),
    z_scale: float | None = None,
    baseline: bool = True,
    allow_non_counts: bool = False,
    **options,
):
    """Generator of :class:`ProgressEvent`; returns a :class:`StackResult`.

    Parameters
    ----------
    adata
        One z-stack: raw counts, 2D coordinates in ``obsm[spatial_key]`` and the
        z position in ``obs[z_key]`` (or the last column of ``obsm[z_key]``).
        Never modified.
    template
        A trained :class:`~napari_squint.api.squint.Squint` whose settings are
        reused: its config (architecture, graph ``k``, optimiser, epochs) and
        genes. Its weights are *not* reused: the held-out cells must not have
        been seen, so a new model is trained. ``options`` (e.g. ``epochs=``)
        override the config.
    genes, config
        Used when there is no template (defaults: all genes, default config).
    holdout_fraction, seed
        Cells held out per level, and the seed of the draw (the models are
        seeded by ``config.train.seed``).
    gene_groups
        Sizes of the top-k gene groups (``None``: all genes).
    graphs
        ``"section"`` (per-level graphs, the paper) and/or ``"3d"``.
    z_scale
        Factor on z for the 3D graph (default: automatic, module docstring).
    baseline
        Also score the k-nearest-observed-neighbours baseline (``StackReport.baseline_x`` ...).
    """
    from napari_squint.api.squint import Squint
    from napari_squint.tasks.explain import counts_matrix
    from napari_squint.config import SquintConfig

    graphs = list(graphs)
    bad = [g for g in graphs if g not in GRAPHS]
    if bad or not graphs:
        raise ValueError(f"graphs={graphs!r}; choose from {GRAPHS}")
    z = z_levels(adata, z_key)
    levels = sorted(np.unique(z).tolist())
    if len(levels) < 2:
        raise ValueError(f"adata.obs[{z_key!r}] has a single level ({levels}); a stack needs at least 2")
    if spatial_key not in adata.obsm:
        raise KeyError(f"coordinates key {spatial_key!r} not found in adata.obsm (available: {list(adata.obsm)})")
    coords2 = np.asarray(adata.obsm[spatial_key], dtype=np.float64)[:, :2]
    if template is not None:
        cfg = _copy.deepcopy(template.config)
        genes = list(template.genes)
    else:
        cfg = _copy.deepcopy(config) if config is not None else SquintConfig()
    cfg.update(**options)
    if template is not None and genes is not None:
        missing = [g for g in genes if g not in adata.var_names]
        if missing:
            raise KeyError(f"{len(missing)} of the template model's genes are missing from the stack, e.g. {missing[:5]}")
    labels = pd.Categorical([f"z={v:g}" for v in z], categories=[f"z={v:g}" for v in levels])
    work = AnnData(X=counts_matrix(adata, layer), obs=pd.DataFrame({LEVEL_COL: labels}, index=adata.obs_names.copy()),
                   var=pd.DataFrame(index=adata.var_names.copy()), obsm={K.SPATIAL_KEY: coords2})
    held = holdout_per_level(z, holdout_fraction, seed=seed)
    cells = np.flatnonzero(held)
    zs = _auto_z_scale(coords2, z) if z_scale is None else float(z_scale)
    coords3 = np.column_stack([coords2, z * zs])
    groups = None
    reports: dict[str, StackReport] = {}
    level_of = np.searchsorted(np.asarray(levels), z)
    for graph in graphs:
        yield ProgressEvent("prepare", message=f"stack: {len(levels)} levels, {int(held.sum())} held-out cells, "
                                               f"graph {graph!r}")
        model = Squint(work, section_key=LEVEL_COL, spatial_key=K.SPATIAL_KEY, genes=genes, holdout=held,
                       config=_copy.deepcopy(cfg), allow_non_counts=allow_non_counts)
        if graph == "3d":
            model.data = graph_3d(model.data, coords3[~held], model.config.graph)
        t0 = time.perf_counter()
        yield from model.iter_train()
        train_s = time.perf_counter() - t0
        yield ProgressEvent("impute", message=f"imputing held-out cells ({graph} graph)")
        data = model.prepare(work)
        if graph == "3d":
            data = graph_3d(data, coords3, model.config.graph)
        res = model.impute_cells(data, held)
        true_x = data.counts[cells]
        true_n = data.x_nbr[cells]
        g_names = list(model.genes)
        if groups is None:
            groups = group_labels(gene_groups, len(g_names))
        pc_x = _per_gene(true_x, res["imputed"])
        pc_n = _per_gene(true_n, res["imputed_nbr"])
        rank_x, rank_n = _rank(pc_x), _rank(pc_n)
        genes_df = pd.DataFrame({"pc_x": pc_x, "rank_x": rank_x, "pc_nbr": pc_n, "rank_nbr": rank_n},
                                index=pd.Index(g_names, name="gene"))
        lev_c = level_of[cells]
        pg_x = np.full((len(levels), len(g_names)), np.nan)
        pg_n = np.full_like(pg_x, np.nan)
        for li in range(len(levels)):
            sel = lev_c == li
            if sel.sum() < 3:
                continue
            pg_x[li] = _per_gene(true_x[sel], res["imputed"][sel])
            pg_n[li] = _per_gene(true_n[sel], res["imputed_nbr"][sel])
        idx_z = pd.Index(levels, name="z")
        tab_x = _group_table(pg_x, rank_x, groups, levels)
        tab_n = _group_table(pg_n, rank_n, groups, levels)
        base_tabs = (None, None)
        if baseline:
            base_tabs = _baseline_tables(data, coords2, z, held, cells, lev_c, levels, rank_x, rank_n, groups,
                                         k=model.config.graph.k)
        stats = {**_graph_stats(data.nbr, z), "train_seconds": train_s}
        if graph == "3d":
            stats["z_scale"] = zs
        tokens = model.encode(data)["tokens"]
        reports[graph] = StackReport(
            x=tab_x, x_nbr=tab_n, genes=genes_df,
            per_gene_x=pd.DataFrame(pg_x, index=idx_z, columns=g_names),
            per_gene_nbr=pd.DataFrame(pg_n, index=idx_z, columns=g_names),
            n_heldout=pd.Series(np.bincount(lev_c, minlength=len(levels)), index=idx_z, name="n_heldout"),
            graph=graph, graph_stats=stats, tokens=tokens, model=model,
            baseline_x=base_tabs[0], baseline_x_nbr=base_tabs[1])
    params = {"z_key": z_key, "holdout_fraction": holdout_fraction, "seed": seed, "graphs": graphs,
              "baseline": bool(baseline),
              "gene_groups": [lab for lab, _ in groups], "z_scale": zs, "n_levels": len(levels),
              "n_heldout": int(held.sum()), "config": cfg.to_dict()}
    yield ProgressEvent("done", message="stack report ready")
    return StackResult(reports=reports, heldout=held, levels=levels, params=params)


def stack_imputation(adata: AnnData, *, callback: Callable[[ProgressEvent], None] | None = None,
                     should_stop: Callable[[], bool] | None = None, **kwargs) -> StackResult | None:
    """Run :func:`iter_stack_imputation` to the end; ``None`` when cancelled."""
    result, _ = drive(iter_stack_imputation(adata, **kwargs), callback=callback, should_stop=should_stop)
    return result


def write_stack_result(adata: AnnData, result: StackResult, *, token_key: str = K.TOKEN_KEY,
                       copy: bool = False) -> AnnData:
    """Write ``obs['squint_heldout']``, the tokens of the first graph's model and ``uns['squint']['stack']``.

    Returns the AnnData written to (``adata``, or its copy with ``copy=True``).
    """
    from napari_squint.tasks.explain import record_uns

    target = adata.copy() if copy else adata
    first = next(iter(result.reports.values()))
    target.obs[K.HELDOUT_KEY] = result.heldout
    target.obs[token_key] = pd.Categorical(first.tokens, categories=np.unique(first.tokens))
    summary = pd.concat([rep.summary() for rep in result.reports.values()], ignore_index=True)
    stats = {g: rep.graph_stats for g, rep in result.reports.items()}
    record_uns(target, "stack", {k: v for k, v in result.params.items() if k != "config"},
               summary=summary.astype({"group": str, "space": str, "graph": str, "method": str}),
               graph_stats=stats)
    return target
