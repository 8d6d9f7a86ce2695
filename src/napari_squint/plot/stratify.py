"""Stratification figures: activation on the tissue, composition bars, volcano, token enrichment."""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_squint import _constants as K

__all__ = ["plot_activation", "plot_composition", "plot_volcano", "plot_enrichment"]


def plot_activation(adata, *, key: str = K.ACTIVATION_KEY, section_key: str | None = K.SECTION_KEY,
                    spatial_key: str = K.SPATIAL_KEY, group_key: str | None = None, max_sections: int = 9,
                    cmap: str = "viridis", title: str | None = None, s: float | None = None):
    """Activation score on the tissue, one panel per section, fixed 0-1 colour scale (paper Fig. 4b).

    ``group_key`` (e.g. the condition) is added to each panel's title.
    """
    import matplotlib.pyplot as plt

    if key not in adata.obs:
        raise KeyError(f"activation key {key!r} not found in adata.obs; run stratify() first")
    coords = np.asarray(adata.obsm[spatial_key])[:, :2]
    sec = (adata.obs[section_key].astype(str).to_numpy() if section_key and section_key in adata.obs
           else np.full(adata.n_obs, "slide", dtype=object))
    names = list(pd.unique(sec))[:max_sections]
    ncol = min(3, len(names))
    nrow = int(np.ceil(len(names) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.8 * ncol + 0.8, 3.6 * nrow), squeeze=False)
    vals = adata.obs[key].to_numpy().astype(float)
    sc = None
    for ax, name in zip(axes.ravel(), names):
        sel = sec == name
        order = np.flatnonzero(sel)[np.argsort(vals[sel], kind="stable")]  # high scores drawn on top
        size = s or float(np.clip(4000 / max(sel.sum(), 1), 0.6, 20))
        sc = ax.scatter(coords[order, 0], coords[order, 1], c=vals[order], s=size, cmap=cmap, vmin=0, vmax=1,
                        linewidths=0, rasterized=True)
        label = str(name)
        if group_key and group_key in adata.obs:
            label += f"\n{group_key}: {adata.obs[group_key].astype(str).to_numpy()[sel][0]}"
        ax.set_title(label, fontsize=8)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.subplots_adjust(left=0.02, right=0.88, bottom=0.02, top=0.9, wspace=0.05, hspace=0.2)
    cax = fig.add_axes([0.9, 0.3, 0.015, 0.4])
    fig.colorbar(sc, cax=cax, label="activation score")
    fig.suptitle(title or "SQuINT activation score", fontsize=10, y=0.98)
    return fig


def plot_composition(composition: pd.DataFrame, *, low: float = 0.25, high: float = 0.75, alpha: float = 0.05,
                     title: str | None = None):
    """Cell-type proportions of low- vs high-activation cells (paper Fig. 4c); * marks q < ``alpha``."""
    import matplotlib.pyplot as plt

    if composition is None or composition.empty:
        raise ValueError("empty composition table (no cell types?)")
    comp = composition.sort_values("frac_high", ascending=True)
    y = np.arange(len(comp))
    fig, ax = plt.subplots(figsize=(6.0, 1.2 + 0.32 * len(comp)))
    ax.barh(y - 0.2, comp["frac_low"], height=0.4, color="#4c72b0",
            label=f"low (< {low}), n={int(comp['n_low'].sum())}")
    ax.barh(y + 0.2, comp["frac_high"], height=0.4, color="#dd8452",
            label=f"high (> {high}), n={int(comp['n_high'].sum())}")
    for yi, (_, row) in zip(y, comp.iterrows()):
        if row.get("qval", 1.0) < alpha:
            ax.text(max(row["frac_low"], row["frac_high"]) + 0.01, yi, "*", va="center", fontsize=10)
    ax.set_yticks(y, [str(i) for i in comp.index], fontsize=8)
    ax.set_xlabel("fraction of cells")
    ax.legend(fontsize=8, loc="lower right", frameon=False)
    ax.set_title(title or "cell types of low- vs high-activation cells", fontsize=10)
    fig.tight_layout()
    return fig


def plot_volcano(de: pd.DataFrame, *, alpha: float = 0.05, min_lfc: float = 0.5, n_label: int = 12,
                 title: str | None = None):
    """Volcano plot of high- vs low-activation DE genes (log2 fold change vs -log10 adjusted p)."""
    import matplotlib.pyplot as plt

    if de is None or de.empty:
        raise ValueError("empty DE table")
    lfc = de["logfoldchange"].to_numpy(dtype=float)
    q = np.clip(de["pval_adj"].to_numpy(dtype=float), 1e-300, 1)
    y = -np.log10(q)
    sig = (q < alpha) & (np.abs(lfc) >= min_lfc)
    colour = np.where(sig & (lfc > 0), "#c44e52", np.where(sig & (lfc < 0), "#4c72b0", "0.7"))
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    ax.scatter(lfc, y, c=colour, s=12, linewidths=0)
    ax.axhline(-np.log10(alpha), color="0.5", lw=0.7, ls="--")
    for v in (-min_lfc, min_lfc):
        ax.axvline(v, color="0.5", lw=0.7, ls="--")
    order = np.argsort(-(y * (np.abs(lfc) + 0.1)))
    for i in [i for i in order if sig[i]][:n_label]:
        ax.annotate(str(de["gene"].iloc[i]), (lfc[i], y[i]), fontsize=7, xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("log2 fold change (high vs low activation)")
    ax.set_ylabel("-log10 adjusted p (Wilcoxon, BH)")
    ct = de.attrs.get("cell_type")
    sub = f" within {ct} (high n={de.attrs.get('n_high')}, low n={de.attrs.get('n_low')})" if ct else ""
    ax.set_title(title or f"DE genes{sub}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_enrichment(enrichment: pd.DataFrame, top_tokens, *, n: int = 20, title: str | None = None):
    """Token frequencies in the group vs the other groups, for the ``n`` most used tokens of the group.

    The selected top tokens are drawn with a dark edge.
    """
    import matplotlib.pyplot as plt

    df = enrichment.sort_values("rank_frequency").head(n)
    extra = enrichment.loc[[t for t in top_tokens if t in enrichment.index and t not in df.index]]
    df = pd.concat([df, extra])
    x = np.arange(len(df))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.32 * len(df) + 2.0), 3.6))
    top = set(top_tokens)
    edge = ["k" if t in top else "none" for t in df.index]
    ax.bar(x - 0.2, df["frac_group"], width=0.4, color="#dd8452", edgecolor=edge, label="group")
    ax.bar(x + 0.2, df["frac_other"], width=0.4, color="#4c72b0", label="other groups")
    ax.set_xticks(x, [f"{t}{'*' if t in top else ''}" for t in df.index], rotation=90, fontsize=7)
    ax.set_ylabel("fraction of each side's cells")
    ax.set_xlabel("token (* = selected top token)")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(title or "token usage in the group vs the rest", fontsize=10)
    fig.tight_layout()
    return fig
