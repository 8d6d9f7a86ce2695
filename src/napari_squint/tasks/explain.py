"""What a token means: composition, marker genes, gene programmes, co-occurrence.

Every function reads the tokens from ``adata.obs[token_key]`` (written by
:meth:`napari_squint.api.squint.Squint.tokens`) and works on raw counts, which
it log-normalises itself (scanpy ``normalize_total`` to 10^4, then ``log1p``)
on a throw-away copy: the user's AnnData only gains ``uns`` entries.

>>> model.tokens(adata)
>>> summary = explain_tokens(adata, cell_type_key="cell_type", condition_key="condition")
>>> dots = programme_table(adata, ["Cd68", "Apoe", "C1qa"])
>>> cooc = token_cooccurrence(adata, level_key="z", top_n=50)      # paper Fig. 3b

Keys written
------------
``uns['squint']['explain']``: ``params`` and the per-token ``summary`` table.
``uns['squint']['programme']``: ``params`` and the dot-plot ``table``.
``uns['squint']['cooccurrence']``: ``params``, ``usage`` (levels x tokens),
``correlation`` (tokens x tokens) and the dendrogram ``order``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from napari_squint import _constants as K

__all__ = [
    "TokenSummary",
    "Cooccurrence",
    "explain_tokens",
    "programme_table",
    "token_cooccurrence",
    "token_labels",
    "record_uns",
]


# --------------------------------------------------------------------------- helpers
def _uns_safe(value):
    """A value h5ad can store: ``None`` becomes ``"None"``, tuples become lists, numpy scalars Python."""
    if value is None:
        return "None"
    if isinstance(value, dict):
        return {str(k): _uns_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        vals = [_uns_safe(v) for v in value]
        return [str(v) for v in vals] if any(isinstance(v, str) for v in vals) else vals
    if isinstance(value, np.generic):
        return value.item()
    return value


def record_uns(adata: AnnData, name: str, params: dict, **results) -> dict:
    """Store ``params`` and ``results`` in ``adata.uns['squint'][name]`` (h5ad-safe); return the entry."""
    entry = {"params": _uns_safe(params)}
    for key, value in results.items():
        if value is None:
            continue
        entry[key] = value if isinstance(value, (pd.DataFrame, np.ndarray)) else _uns_safe(value)
    adata.uns.setdefault(K.UNS_KEY, {})[name] = entry
    return entry


def token_labels(adata: AnnData, token_key: str = K.TOKEN_KEY) -> np.ndarray:
    """(n,) token of every cell: ints when the labels are integers, strings otherwise.

    Raises
    ------
    KeyError
        When ``adata.obs[token_key]`` is missing (run ``Squint.tokens`` first).
    """
    if token_key not in adata.obs:
        raise KeyError(f"token key {token_key!r} not found in adata.obs; run Squint.tokens(adata) first "
                       f"(columns: {list(adata.obs.columns)})")
    col = adata.obs[token_key]
    if col.isna().any():
        raise ValueError(f"adata.obs[{token_key!r}] has {int(col.isna().sum())} cells without a token")
    values = col.to_numpy()
    try:
        as_int = values.astype(np.int64)
        if np.all(as_int.astype(str) == values.astype(str)) or np.issubdtype(values.dtype, np.integer):
            return as_int
    except (TypeError, ValueError):
        pass
    return values.astype(str)


def counts_matrix(adata: AnnData, layer: str | None = None, genes: Sequence[str] | None = None):
    """(n, g) raw counts (sparse CSR or dense float) of ``genes`` (default all) from ``X`` or ``layer``."""
    X = adata.X if layer is None else adata.layers[layer] if layer in adata.layers else None
    if X is None:
        raise KeyError(f"layer {layer!r} not found in adata.layers (available: {list(adata.layers)})")
    if genes is not None:
        missing = [g for g in genes if g not in adata.var_names]
        if missing:
            raise KeyError(f"{len(missing)} gene(s) not in adata.var_names: {missing[:10]}")
        X = X[:, adata.var_names.get_indexer(list(genes))]
    return sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, dtype=np.float32)


def log_normalised(adata: AnnData, *, layer: str | None = None, obs: pd.DataFrame | None = None) -> AnnData:
    """A new AnnData whose ``X`` is log1p(counts normalised to 10^4) (scanpy); ``adata`` is untouched."""
    import scanpy as sc

    X = counts_matrix(adata, layer)
    X = X.copy()
    tmp = AnnData(X=X, obs=(obs if obs is not None else pd.DataFrame(index=adata.obs_names.copy())),
                  var=pd.DataFrame(index=adata.var_names.copy()))
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    return tmp


def _sorted_levels(values: pd.Series) -> list:
    """Unique values of a column in natural order (numeric when possible)."""
    uniq = pd.unique(values.dropna())
    try:
        return sorted(uniq, key=float)
    except (TypeError, ValueError):
        return sorted(uniq, key=str)


# --------------------------------------------------------------------------- explain
@dataclass
class TokenSummary:
    """Per-token tables returned by :func:`explain_tokens`.

    Attributes
    ----------
    summary
        Index token (most used first); columns ``n_cells``, ``fraction``,
        ``n_sections`` (sections holding it), ``top_section``, and, where
        labels exist, ``top_cell_type``, ``top_cell_type_fraction``,
        ``top_condition``, ``top_condition_fraction``; ``markers`` (the top
        marker genes joined by commas).
    sections, conditions, cell_types
        (tokens, categories) cell counts; ``None`` where the column is absent.
    mean_expression
        (tokens, genes) mean log-normalised expression.
    markers
        Long table: ``token``, ``rank``, ``gene``, ``score``,
        ``logfoldchange``, ``pval``, ``pval_adj`` (scanpy ``rank_genes_groups``,
        token vs all other cells, Benjamini-Hochberg).
    too_small
        Tokens with fewer than ``min_cells`` cells (no marker test).
    """

    summary: pd.DataFrame
    sections: pd.DataFrame | None
    conditions: pd.DataFrame | None
    cell_types: pd.DataFrame | None
    mean_expression: pd.DataFrame
    markers: pd.DataFrame
    too_small: list = field(default_factory=list)

    def composition(self, which: str = "cell_types", *, normalise: bool = True) -> pd.DataFrame:
        """Row-normalised (fraction of each token's cells) composition table."""
        tab = getattr(self, which)
        if tab is None:
            raise KeyError(f"no {which} table (the column was not given or is absent)")
        return tab.div(tab.sum(1).replace(0, 1), axis=0) if normalise else tab


def _crosstab(tokens: np.ndarray, adata: AnnData, key: str | None, order) -> pd.DataFrame | None:
    if not key or key not in adata.obs:
        return None
    tab = pd.crosstab(pd.Series(tokens, name="token"), pd.Series(adata.obs[key].astype(str).to_numpy(), name=key))
    return tab.reindex(order).fillna(0).astype(np.int64)


def explain_tokens(
    adata: AnnData,
    *,
    token_key: str = K.TOKEN_KEY,
    section_key: str | None = K.SECTION_KEY,
    condition_key: str | None = None,
    cell_type_key: str | None = K.CELL_TYPE_KEY,
    layer: str | None = None,
    n_markers: int = 10,
    min_cells: int = 2,
    method: str = "wilcoxon",
    key_added: str = "explain",
    copy: bool = False,
) -> TokenSummary:
    """Describe every token: size, composition, mean expression and marker genes.

    Parameters
    ----------
    adata
        Cells with raw counts in ``X`` (or ``layer``) and tokens in ``obs[token_key]``.
    token_key, section_key, condition_key, cell_type_key
        obs columns; the last three are optional (``None`` or absent: skipped).
    n_markers
        Marker genes kept per token.
    min_cells
        Tokens with fewer cells get no marker test (a Wilcoxon test needs at
        least 2 cells); they are listed in ``too_small``.
    method
        scanpy ``rank_genes_groups`` method (``"wilcoxon"``, ``"t-test"``...).
    key_added
        Entry of ``uns['squint']`` receiving the parameters and the summary.
    copy
        Leave ``adata`` untouched (the parameters are recorded in a throw-away
        copy); the tables are returned either way.

    Returns
    -------
    TokenSummary
    """
    import scanpy as sc

    if min_cells < 2:
        raise ValueError(f"min_cells={min_cells}: a marker test needs at least 2 cells per token")
    tokens = token_labels(adata, token_key)
    vc = pd.Series(tokens).value_counts()
    order = vc.index.tolist()
    target = adata.copy() if copy else adata

    sections = _crosstab(tokens, adata, section_key, order)
    conditions = _crosstab(tokens, adata, condition_key, order)
    cell_types = _crosstab(tokens, adata, cell_type_key, order)

    # mean log-normalised expression per token (sparse group-mean: indicator^T @ X)
    norm = log_normalised(adata, layer=layer)
    codes = pd.Categorical(tokens, categories=order).codes
    ind = sp.csr_matrix((np.ones(tokens.size, dtype=np.float32), (codes, np.arange(tokens.size))),
                        shape=(len(order), tokens.size))
    sums = ind @ norm.X
    sums = sums.toarray() if sp.issparse(sums) else np.asarray(sums)
    mean_expr = pd.DataFrame(sums / vc.to_numpy()[:, None], index=pd.Index(order, name="token"),
                             columns=adata.var_names.copy())

    # marker genes: each token with >= min_cells cells against all other cells
    big = [t for t in order if vc[t] >= min_cells]
    too_small = [t for t in order if vc[t] < min_cells]
    rows = []
    if len(big) >= 1 and len(order) >= 2:
        labels = np.where(np.isin(tokens, big), tokens.astype(str), "_small")
        norm.obs["token"] = pd.Categorical(labels)
        groups = [str(t) for t in big]
        with warnings.catch_warnings():  # scanpy fills its result frame column by column
            warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
            sc.tl.rank_genes_groups(norm, "token", groups=groups, reference="rest", method=method,
                                    corr_method="benjamini-hochberg", n_genes=min(n_markers, adata.n_vars),
                                    use_raw=False, key_added="_markers")
        for t in big:
            df = sc.get.rank_genes_groups_df(norm, group=str(t), key="_markers")
            df = df.head(n_markers)
            rows.append(pd.DataFrame({"token": t, "rank": np.arange(1, len(df) + 1), "gene": df["names"].to_numpy(),
                                      "score": df["scores"].to_numpy(),
                                      "logfoldchange": df.get("logfoldchanges", pd.Series(np.nan, index=df.index)).to_numpy(),
                                      "pval": df["pvals"].to_numpy(), "pval_adj": df["pvals_adj"].to_numpy()}))
    markers = (pd.concat(rows, ignore_index=True) if rows else
               pd.DataFrame(columns=["token", "rank", "gene", "score", "logfoldchange", "pval", "pval_adj"]))

    summary = pd.DataFrame({"n_cells": vc.to_numpy(), "fraction": vc.to_numpy() / tokens.size},
                           index=pd.Index(order, name="token"))
    if sections is not None:
        summary["n_sections"] = (sections > 0).sum(1)
        summary["top_section"] = sections.idxmax(1)
    for name, tab in (("cell_type", cell_types), ("condition", conditions)):
        if tab is not None:
            summary[f"top_{name}"] = tab.idxmax(1)
            summary[f"top_{name}_fraction"] = tab.max(1) / tab.sum(1)
    if len(markers):
        up = markers[markers["logfoldchange"].fillna(0) > 0]
        joined = up.groupby("token")["gene"].apply(lambda s: ",".join(s.head(5)))
        summary["markers"] = joined.reindex(summary.index).fillna("")
    else:
        summary["markers"] = ""

    record_uns(target, key_added, {"token_key": token_key, "section_key": section_key,
                                   "condition_key": condition_key, "cell_type_key": cell_type_key,
                                   "layer": layer, "n_markers": n_markers, "min_cells": min_cells,
                                   "method": method},
               summary=_h5ad_frame(summary), n_tokens=len(order), too_small=[str(t) for t in too_small])
    return TokenSummary(summary=summary, sections=sections, conditions=conditions, cell_types=cell_types,
                        mean_expression=mean_expr, markers=markers, too_small=too_small)


def _h5ad_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with a string index and plain column types, which h5ad stores without fuss."""
    out = df.copy()
    out.index = out.index.astype(str)
    out.index.name = None
    for c in out.columns:
        if out[c].dtype == object or isinstance(out[c].dtype, pd.CategoricalDtype):
            out[c] = out[c].astype(str)
    return out


# --------------------------------------------------------------------------- dot plot table
def programme_table(
    adata: AnnData,
    genes: Sequence[str],
    *,
    token_key: str = K.TOKEN_KEY,
    cells: np.ndarray | None = None,
    tokens: Sequence | None = None,
    layer: str | None = None,
    min_cells: int = 1,
    key_added: str = "programme",
    copy: bool = False,
) -> pd.DataFrame:
    """Dot-plot table of a gene programme across tokens (paper Fig. 5c).

    For every token and gene: ``fraction`` of the token's cells with a count
    above zero (dot size) and ``mean`` log-normalised expression over all the
    token's cells, expressing or not (dot colour; scanpy's dot-plot default).

    Parameters
    ----------
    genes
        The programme, e.g. ``["Cd68", "Apoe", "C1qa"]``; every gene must be in ``adata``.
    cells
        (n,) bool mask restricting the cells (e.g. macrophages in an ROI).
    tokens
        Tokens to show (default: every token with ``>= min_cells`` cells, most used first).

    Returns
    -------
    pandas.DataFrame
        Long table with columns ``token``, ``gene``, ``fraction``, ``mean``,
        ``n_cells``; tokens in order of use, genes in the given order. Also
        stored in ``uns['squint'][key_added]['table']``.
    """
    genes = list(genes)
    if not genes:
        raise ValueError("genes is empty: give at least one gene of the programme")
    missing = [g for g in genes if g not in adata.var_names]
    if missing:
        raise KeyError(f"programme gene(s) not in adata.var_names: {missing}")
    tok = token_labels(adata, token_key)
    sel = np.ones(adata.n_obs, dtype=bool) if cells is None else np.asarray(cells, dtype=bool)
    if sel.shape != (adata.n_obs,):
        raise ValueError(f"cells mask has shape {sel.shape}; expected ({adata.n_obs},)")
    if not sel.any():
        raise ValueError("the cells mask selects no cell")
    norm = log_normalised(adata, layer=layer)
    gidx = adata.var_names.get_indexer(genes)
    raw = counts_matrix(adata, layer)[:, gidx][sel]
    raw = raw.toarray() if sp.issparse(raw) else raw
    val = norm.X[:, gidx][sel]
    val = val.toarray() if sp.issparse(val) else np.asarray(val)
    tok = tok[sel]
    vc = pd.Series(tok).value_counts()
    if tokens is None:
        tokens = [t for t in vc.index if vc[t] >= min_cells]
    rows = []
    for t in tokens:
        m = tok == t
        n = int(m.sum())
        if n == 0:
            frac = np.full(len(genes), np.nan)
            mean = np.full(len(genes), np.nan)
        else:
            frac = (raw[m] > 0).mean(0)
            mean = val[m].mean(0)
        rows.append(pd.DataFrame({"token": t, "gene": genes, "fraction": frac, "mean": mean, "n_cells": n}))
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["token", "gene", "fraction", "mean", "n_cells"])
    target = adata.copy() if copy else adata
    stored = table.copy()
    stored["token"] = stored["token"].astype(str)
    record_uns(target, key_added, {"genes": genes, "token_key": token_key, "layer": layer,
                                   "n_cells_selected": int(sel.sum()), "min_cells": min_cells}, table=stored)
    return table


# --------------------------------------------------------------------------- co-occurrence
@dataclass
class Cooccurrence:
    """Token co-occurrence across levels (sections or z-levels), paper Fig. 3b.

    Attributes
    ----------
    usage
        (levels, tokens) fraction of each level's cells holding each of the
        top-N tokens (levels in natural order).
    correlation
        (tokens, tokens) Pearson correlation of the usage profiles across
        levels; tokens whose usage is constant get 0 off the diagonal.
    linkage
        scipy hierarchical-clustering linkage of ``1 - correlation``.
    order
        Tokens in dendrogram leaf order.
    """

    usage: pd.DataFrame
    correlation: pd.DataFrame
    linkage: np.ndarray
    order: list
    method: str = "average"


def token_cooccurrence(
    adata: AnnData,
    *,
    level_key: str = K.Z_KEY,
    token_key: str = K.TOKEN_KEY,
    top_n: int = 50,
    method: str = "average",
    key_added: str = "cooccurrence",
    copy: bool = False,
) -> Cooccurrence:
    """Per-level token-usage profiles of the ``top_n`` most used tokens, their correlation and clustering.

    Parameters
    ----------
    level_key
        obs column of the level (z position or section name).
    top_n
        Most frequently used tokens kept (over all cells).
    method
        scipy ``linkage`` method on the distance ``1 - r``.

    Raises
    ------
    ValueError
        With fewer than 2 levels or fewer than 2 tokens.
    """
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    if level_key not in adata.obs:
        raise KeyError(f"level key {level_key!r} not found in adata.obs (columns: {list(adata.obs.columns)})")
    tok = token_labels(adata, token_key)
    lev = adata.obs[level_key]
    levels = _sorted_levels(lev)
    if len(levels) < 2:
        raise ValueError(f"adata.obs[{level_key!r}] has {len(levels)} level(s); co-occurrence needs at least 2")
    top = pd.Series(tok).value_counts().index[: int(top_n)].tolist()
    if len(top) < 2:
        raise ValueError(f"only {len(top)} token(s) in adata.obs[{token_key!r}]; co-occurrence needs at least 2")
    tab = pd.crosstab(pd.Series(lev.to_numpy(), name=level_key), pd.Series(tok, name="token"))
    tab = tab.reindex(index=levels, columns=top).fillna(0)
    n_level = pd.Series(lev.to_numpy()).value_counts().reindex(levels).to_numpy().astype(float)
    usage = tab.div(n_level, axis=0)
    u = usage.to_numpy()
    uc = u - u.mean(0)
    norms = np.sqrt((uc**2).sum(0))
    ok = norms > 0
    corr = np.zeros((len(top), len(top)))
    z = np.zeros_like(uc)
    z[:, ok] = uc[:, ok] / norms[ok]
    corr = np.clip(z.T @ z, -1.0, 1.0)
    np.fill_diagonal(corr, 1.0)
    dist = squareform(np.clip(1.0 - corr, 0.0, 2.0), checks=False)
    link = linkage(dist, method=method)
    order = [top[i] for i in leaves_list(link)]
    corr_df = pd.DataFrame(corr, index=pd.Index(top, name="token"), columns=pd.Index(top, name="token"))
    target = adata.copy() if copy else adata
    u_store = usage.copy()
    u_store.index = u_store.index.astype(str)
    u_store.columns = u_store.columns.astype(str)
    c_store = corr_df.copy()
    c_store.index = c_store.index.astype(str)
    c_store.columns = c_store.columns.astype(str)
    u_store.index.name = c_store.index.name = c_store.columns.name = u_store.columns.name = None
    record_uns(target, key_added, {"level_key": level_key, "token_key": token_key, "top_n": int(top_n),
                                   "method": method},
               usage=u_store, correlation=c_store, order=[str(t) for t in order])
    return Cooccurrence(usage=usage, correlation=corr_df, linkage=link, order=order, method=method)
