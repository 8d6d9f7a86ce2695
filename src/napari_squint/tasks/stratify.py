"""Stratification by token activation (paper section 5.3).

Given a condition column (patient, animal, treatment...) and a target group:

1. choose the top-k tokens of the group, either the most frequently assigned
   in it (``method="frequency"``, the paper) or the most enriched relative to
   the other groups (``method="enrichment"``, beyond the paper: Fisher's exact
   test per token, Benjamini-Hochberg, log2 odds ratio);
2. give every cell an **activation score**: the number of times the cell or
   its 1-hop neighbours hold one of those tokens, divided by the number of
   neighbours + 1 (the cell itself), so the score lies in [0, 1]; 1 means the
   cell and all its neighbours hold top tokens. The graph is the model's kNN
   graph (symmetrised, ``k`` from the model's config; identical to
   ``model.prepare(adata).nbr``), or a graph with the given ``k``;
3. compare cells with low (< 0.25) and high (> 0.75) scores: cell-type
   proportions (Fisher's exact test per type) and differentially expressed
   genes within one cell type (scanpy Wilcoxon, BH-adjusted p-values).

>>> res = stratify(adata, condition_key="patient", group="high_risk", model=model,
...                cell_type_key="cell_type", de_cell_type="Tumour")
>>> adata.obs["squint_activation"]       # (n,) in [0, 1]
>>> res.top_tokens, res.enrichment, res.composition, res.de

Keys written
------------
``obs[key_added]`` (default ``squint_activation``): float32 activation score.
``uns['squint']['stratify']``: ``params``, ``top_tokens``, ``enrichment``,
``composition`` and ``de`` tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from napari_squint import _constants as K
from napari_squint.tasks.explain import _h5ad_frame, log_normalised, record_uns, token_labels

__all__ = [
    "StratifyResult",
    "stratify",
    "token_enrichment",
    "select_tokens",
    "neighbour_table",
    "activation_score",
    "compare_activation",
]

METHODS = ("frequency", "enrichment")


@dataclass
class StratifyResult:
    """Everything :func:`stratify` computed.

    Attributes
    ----------
    top_tokens
        The tokens whose presence defines activation.
    method
        ``"frequency"`` or ``"enrichment"``.
    enrichment
        Per token (index): ``n_group``, ``n_other``, ``frac_group``,
        ``frac_other``, ``log2_odds_ratio`` (Haldane-corrected), ``pval``
        (two-sided Fisher exact), ``qval`` (BH), ``rank_frequency`` (1 = most
        used in the group); sorted by the selection criterion.
    activation
        (n,) float32 activation scores in [0, 1].
    composition
        Per cell type: ``n_low``, ``n_high``, ``frac_low``, ``frac_high``,
        ``log2_ratio`` (high vs low fraction, +0.5 pseudo-count), ``pval``,
        ``qval``; ``None`` without cell types.
    de
        Genes of ``de_cell_type``, high vs low: ``gene``, ``score``,
        ``logfoldchange``, ``pval``, ``pval_adj``, ``mean_low``,
        ``mean_high``; ``None`` when not requested.
    adata
        The AnnData written to (the input, or its copy when ``copy=True``).
    """

    top_tokens: list
    method: str
    enrichment: pd.DataFrame
    activation: np.ndarray
    composition: pd.DataFrame | None
    de: pd.DataFrame | None
    adata: AnnData
    params: dict


# --------------------------------------------------------------------------- token choice
def token_enrichment(adata: AnnData, *, condition_key: str, group, token_key: str = K.TOKEN_KEY) -> pd.DataFrame:
    """Per-token counts in ``group`` vs the other groups, Fisher's exact test and BH q-values.

    Returns
    -------
    pandas.DataFrame
        Index token; columns described in :class:`StratifyResult` ``enrichment``,
        sorted by frequency in the group (most used first).
    """
    from scipy.stats import false_discovery_control, fisher_exact

    in_group = _group_mask(adata, condition_key, group)
    if in_group.all():
        raise ValueError(f"every cell is in group {group!r} of {condition_key!r}: nothing to compare against")
    tok = token_labels(adata, token_key)
    g = pd.Series(tok[in_group]).value_counts()
    o = pd.Series(tok[~in_group]).value_counts()
    idx = g.index.union(o.index)
    g = g.reindex(idx, fill_value=0)
    o = o.reindex(idx, fill_value=0)
    ng, no = int(in_group.sum()), int((~in_group).sum())
    a, b = g.to_numpy().astype(float), o.to_numpy().astype(float)
    lor = np.log2(((a + 0.5) * (no - b + 0.5)) / ((ng - a + 0.5) * (b + 0.5)))
    pvals = np.array([fisher_exact([[int(x), ng - int(x)], [int(y), no - int(y)]])[1] for x, y in zip(a, b)])
    df = pd.DataFrame({"n_group": a.astype(np.int64), "n_other": b.astype(np.int64), "frac_group": a / ng,
                       "frac_other": b / no, "log2_odds_ratio": lor, "pval": pvals,
                       "qval": false_discovery_control(np.clip(pvals, 0, 1), method="bh")},
                      index=pd.Index(idx, name="token"))
    df = df.sort_values(["n_group", "log2_odds_ratio"], ascending=[False, False])
    df["rank_frequency"] = np.arange(1, len(df) + 1)
    return df


def select_tokens(enrichment: pd.DataFrame, *, top_k: int = 5, method: str = "frequency", alpha: float = 0.05,
                  min_cells: int = 10, min_log2_odds: float = 1.0) -> list:
    """The top-k tokens of the group.

    ``"frequency"``: the ``top_k`` most frequently assigned tokens in the
    group (the paper). ``"enrichment"``: tokens with ``log2_odds_ratio >=
    min_log2_odds`` (default 1: odds at least doubled), ``qval < alpha`` and
    at least ``min_cells`` cells in the group, by decreasing log2 odds ratio
    (then q-value). Tokens used everywhere but slightly more in the group
    (common in large data, where tiny shifts are significant) are left out.

    Raises
    ------
    ValueError
        For an unknown method, or when no token passes the enrichment filter.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}; choose one of {METHODS}")
    if top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1")
    if method == "frequency":
        df = enrichment[enrichment["n_group"] > 0].sort_values("rank_frequency")
        return df.index[:top_k].tolist()
    ok = enrichment[(enrichment["log2_odds_ratio"] >= max(min_log2_odds, 0.0)) & (enrichment["qval"] < alpha)
                    & (enrichment["n_group"] >= min_cells)]
    if ok.empty:
        raise ValueError(f"no token is enriched in the group (q < {alpha}, log2 odds ratio >= {min_log2_odds}, "
                         f">= {min_cells} cells); lower min_cells or min_log2_odds, raise alpha, "
                         "or use method='frequency'")
    ok = ok.sort_values(["log2_odds_ratio", "qval"], ascending=[False, True])
    return ok.index[:top_k].tolist()


def _group_mask(adata: AnnData, condition_key: str, group) -> np.ndarray:
    if condition_key not in adata.obs:
        raise KeyError(f"condition key {condition_key!r} not found in adata.obs (columns: {list(adata.obs.columns)})")
    col = adata.obs[condition_key].astype(str).to_numpy()
    mask = col == str(group)
    if not mask.any():
        raise ValueError(f"group {group!r} not found in adata.obs[{condition_key!r}] "
                         f"(values: {sorted(pd.unique(col))[:20]})")
    return mask


# --------------------------------------------------------------------------- graph and score
def neighbour_table(adata: AnnData, *, model=None, k: int | None = None, max_degree: int | None = None,
                    section_key: str | None = K.SECTION_KEY, spatial_key: str | None = None) -> np.ndarray:
    """(n, m) padded neighbour table (``-1`` padding, global indices), one kNN graph per section.

    With ``model``, its graph settings (``k``, ``max_degree``) and keys are used,
    giving the same table as ``model.prepare(adata).nbr``; ``k`` / ``max_degree``
    override them.
    """
    from napari_squint.data.graph import knn_graph
    from napari_squint.data.validate import check_coordinates

    if model is not None:
        gcfg = model.config.graph
        k = gcfg.k if k is None else k
        max_degree = gcfg.max_degree if max_degree is None else max_degree
        spatial_key = spatial_key or model.spatial_key
        if section_key == K.SECTION_KEY and model.section_key:
            section_key = model.section_key
    k = 8 if k is None else int(k)
    max_degree = 2 * k if max_degree is None else int(max_degree)
    coords = check_coordinates(adata, spatial_key or K.SPATIAL_KEY)
    if section_key is not None and section_key in adata.obs:
        sec = adata.obs[section_key].astype(str).to_numpy()
    else:
        sec = np.zeros(adata.n_obs, dtype=object)
    nbr = np.full((adata.n_obs, max_degree), -1, dtype=np.int64)
    for s in pd.unique(sec):
        idx = np.flatnonzero(sec == s)
        if idx.size < k + 1:
            raise ValueError(f"section {s!r} has {idx.size} cells; k={k} needs at least {k + 1}")
        local, _, _ = knn_graph(coords[idx], k, max_degree=max_degree)
        nbr[idx] = np.where(local >= 0, idx[np.maximum(local, 0)], -1)
    return nbr


def activation_score(tokens: np.ndarray, nbr: np.ndarray, top_tokens) -> np.ndarray:
    """(n,) share of the cell and its 1-hop neighbours holding a top token.

    ``score_i = ([t_i in S] + sum_{j in N(i)} [t_j in S]) / (|N(i)| + 1)``,
    in [0, 1]; ``nbr`` is a ``-1`` padded (n, m) neighbour table.
    """
    hit = np.isin(np.asarray(tokens), np.asarray(list(top_tokens), dtype=np.asarray(tokens).dtype))
    valid = nbr >= 0
    nb_hit = np.where(valid, hit[np.maximum(nbr, 0)], False).sum(1)
    return ((hit + nb_hit) / (valid.sum(1) + 1)).astype(np.float32)


# --------------------------------------------------------------------------- low vs high
def compare_activation(
    adata: AnnData,
    *,
    activation_key: str = K.ACTIVATION_KEY,
    cell_type_key: str | None = K.CELL_TYPE_KEY,
    low: float = 0.25,
    high: float = 0.75,
    de_cell_type: str | None = None,
    layer: str | None = None,
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Cell-type proportions and DE genes between low- and high-activation cells.

    Returns
    -------
    composition, de
        See :class:`StratifyResult`. ``de`` is ``None`` unless ``de_cell_type`` is given.

    Raises
    ------
    ValueError
        When ``low >= high``, or ``de_cell_type`` has fewer than 2 cells in
        either group (the message gives both counts).
    """
    import scanpy as sc
    from scipy.stats import false_discovery_control, fisher_exact

    if not 0 <= low < high <= 1:
        raise ValueError(f"need 0 <= low < high <= 1, got low={low}, high={high}")
    if activation_key not in adata.obs:
        raise KeyError(f"activation key {activation_key!r} not found in adata.obs")
    score = adata.obs[activation_key].to_numpy().astype(float)
    lo, hi = score < low, score > high
    composition = de = None
    if cell_type_key and cell_type_key in adata.obs:
        ct = adata.obs[cell_type_key].astype(str).to_numpy()
        types = pd.Series(ct).value_counts().index
        n_lo = pd.Series(ct[lo]).value_counts().reindex(types, fill_value=0)
        n_hi = pd.Series(ct[hi]).value_counts().reindex(types, fill_value=0)
        tl, th = max(int(lo.sum()), 1), max(int(hi.sum()), 1)
        pv = np.array([fisher_exact([[int(h), th - int(h)], [int(lw), tl - int(lw)]])[1]
                       for h, lw in zip(n_hi, n_lo)])
        composition = pd.DataFrame({
            "n_low": n_lo.to_numpy(), "n_high": n_hi.to_numpy(), "frac_low": n_lo.to_numpy() / tl,
            "frac_high": n_hi.to_numpy() / th,
            "log2_ratio": np.log2(((n_hi.to_numpy() + 0.5) / (th + 0.5)) / ((n_lo.to_numpy() + 0.5) / (tl + 0.5))),
            "pval": pv, "qval": false_discovery_control(np.clip(pv, 0, 1), method="bh")},
            index=pd.Index(types, name=cell_type_key))
        composition = composition.sort_values("log2_ratio", ascending=False)
    elif de_cell_type is not None:
        raise KeyError(f"de_cell_type={de_cell_type!r} needs cell types, but cell_type_key={cell_type_key!r} "
                       "is not in adata.obs")
    if de_cell_type is not None:
        ct = adata.obs[cell_type_key].astype(str).to_numpy()
        if de_cell_type not in set(ct):
            raise ValueError(f"de_cell_type {de_cell_type!r} not found in adata.obs[{cell_type_key!r}]")
        sel = (ct == de_cell_type) & (lo | hi)
        n_l, n_h = int((sel & lo).sum()), int((sel & hi).sum())
        if n_l < 2 or n_h < 2:
            raise ValueError(f"{de_cell_type!r} has {n_h} high-activation (> {high}) and {n_l} low-activation "
                             f"(< {low}) cells; the Wilcoxon test needs at least 2 in each")
        sub = adata[sel]
        labels = np.where(hi[sel], "high", "low")
        norm = log_normalised(sub, layer=layer,
                              obs=pd.DataFrame({"group": pd.Categorical(labels, categories=["low", "high"])},
                                               index=sub.obs_names.copy()))
        sc.tl.rank_genes_groups(norm, "group", groups=["high"], reference="low", method="wilcoxon",
                                corr_method="benjamini-hochberg", use_raw=False, n_genes=adata.n_vars,
                                key_added="_de")
        df = sc.get.rank_genes_groups_df(norm, group="high", key="_de")
        X = norm.X.toarray() if hasattr(norm.X, "toarray") else np.asarray(norm.X)
        gi = norm.var_names.get_indexer(df["names"])
        de = pd.DataFrame({"gene": df["names"].to_numpy(), "score": df["scores"].to_numpy(),
                           "logfoldchange": df["logfoldchanges"].to_numpy(), "pval": df["pvals"].to_numpy(),
                           "pval_adj": df["pvals_adj"].to_numpy(),
                           "mean_low": X[labels == "low"][:, gi].mean(0), "mean_high": X[labels == "high"][:, gi].mean(0)})
        de.attrs.update(cell_type=de_cell_type, n_low=n_l, n_high=n_h)
    return composition, de


# --------------------------------------------------------------------------- all in one
def stratify(
    adata: AnnData,
    *,
    condition_key: str,
    group,
    model=None,
    token_key: str = K.TOKEN_KEY,
    top_k: int = 5,
    method: str = "frequency",
    alpha: float = 0.05,
    min_cells: int = 10,
    min_log2_odds: float = 1.0,
    k: int | None = None,
    section_key: str | None = None,
    spatial_key: str | None = None,
    cell_type_key: str | None = K.CELL_TYPE_KEY,
    de_cell_type: str | None = None,
    low: float = 0.25,
    high: float = 0.75,
    layer: str | None = None,
    key_added: str = K.ACTIVATION_KEY,
    copy: bool = False,
) -> StratifyResult:
    """Top tokens of a group, every cell's activation score, and low-vs-high comparisons.

    Parameters
    ----------
    adata
        Cells with raw counts; tokens in ``obs[token_key]`` (computed with
        ``model`` when absent).
    condition_key, group
        obs column and the value of the target group (compared as strings).
    model
        A trained :class:`~napari_squint.api.squint.Squint`: gives the tokens
        when missing and the graph (its ``k``, section and spatial keys).
    top_k, method, alpha, min_cells, min_log2_odds
        See :func:`select_tokens`.
    k
        Neighbours of the graph (default: the model's ``k``, else 8).
    section_key, spatial_key
        Default: the model's keys, else ``"section"`` / ``"spatial"``.
    cell_type_key, de_cell_type, low, high
        See :func:`compare_activation`; skipped when the column is absent.
    key_added
        obs column receiving the score.
    copy
        Write into a copy (``result.adata``) and leave ``adata`` untouched.

    Returns
    -------
    StratifyResult
    """
    if condition_key not in adata.obs:
        from napari_squint.data.validate import SlideError

        raise SlideError(f"condition column {condition_key!r} not found in adata.obs "
                         f"(available: {list(map(str, adata.obs.columns))})")
    target = adata.copy() if copy else adata
    if token_key not in target.obs:
        if model is None:
            raise KeyError(f"token key {token_key!r} not in adata.obs and no model was given to compute it")
        model.tokens(target, key_added=token_key)
    if section_key is None:
        section_key = (model.section_key if model is not None else None) or K.SECTION_KEY
    if spatial_key is None:
        spatial_key = model.spatial_key if model is not None else K.SPATIAL_KEY
    enrichment = token_enrichment(target, condition_key=condition_key, group=group, token_key=token_key)
    top = select_tokens(enrichment, top_k=top_k, method=method, alpha=alpha, min_cells=min_cells,
                        min_log2_odds=min_log2_odds)
    if method == "enrichment":
        enrichment = enrichment.sort_values(["log2_odds_ratio", "qval"], ascending=[False, True])
    nbr = neighbour_table(target, model=model, k=k, section_key=section_key, spatial_key=spatial_key)
    tokens = token_labels(target, token_key)
    score = activation_score(tokens, nbr, top)
    target.obs[key_added] = score
    composition, de = compare_activation(target, activation_key=key_added, cell_type_key=cell_type_key, low=low,
                                         high=high, de_cell_type=de_cell_type, layer=layer)
    k_used = int(((nbr >= 0).sum(1)).mean())
    params = {"condition_key": condition_key, "group": str(group), "token_key": token_key, "top_k": top_k,
              "method": method, "alpha": alpha, "min_cells": min_cells, "min_log2_odds": min_log2_odds, "k": k if k is not None else
              (model.config.graph.k if model is not None else 8), "section_key": section_key,
              "spatial_key": spatial_key, "cell_type_key": cell_type_key, "de_cell_type": de_cell_type,
              "low": low, "high": high, "layer": layer, "key_added": key_added}
    record_uns(target, "stratify", params, top_tokens=[str(t) for t in top],
               enrichment=_h5ad_frame(enrichment.head(200)),
               composition=_h5ad_frame(composition) if composition is not None else None,
               de=_h5ad_frame(de) if de is not None else None,
               n_low=int((score < low).sum()), n_high=int((score > high).sum()), mean_degree=k_used)
    return StratifyResult(top_tokens=top, method=method, enrichment=enrichment, activation=score,
                          composition=composition, de=de, adata=target, params=params)
