"""Cells on the tissue, coloured by a categorical or continuous value."""

from __future__ import annotations

import numpy as np
import pandas as pd


def categorical_colours(categories, *, cmap: str = "tab20") -> dict:
    """Stable colour per category: the colour depends on the category's value, not its rank."""
    import matplotlib

    base = matplotlib.colormaps[cmap]
    extra = matplotlib.colormaps["tab20b"]
    out = {}
    for c in categories:
        try:
            i = int(c)
        except (TypeError, ValueError):
            i = abs(hash(str(c))) % 1000
        out[c] = base(i % 20) if (i // 20) % 2 == 0 else extra(i % 20)
    return out


def plot_sections(adata, key: str, *, section_key: str | None = "section", spatial_key: str = "spatial",
                  max_sections: int = 9, s: float | None = None, cmap: str = "viridis", title: str | None = None,
                  legend: bool = True):
    """Scatter every section's cells coloured by ``obs[key]``; returns the figure."""
    import matplotlib.pyplot as plt

    coords = np.asarray(adata.obsm[spatial_key])[:, :2]
    sec = adata.obs[section_key].astype(str) if section_key and section_key in adata.obs else pd.Series(["slide"] * adata.n_obs)
    names = list(pd.unique(sec))[:max_sections]
    ncol = min(3, len(names))
    nrow = int(np.ceil(len(names) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 4.0 * nrow), squeeze=False)
    vals = adata.obs[key]
    is_cat = isinstance(vals.dtype, pd.CategoricalDtype) or vals.dtype == object
    colours = categorical_colours(pd.unique(vals)) if is_cat else None
    for ax, name in zip(axes.ravel(), names):
        sel = (sec == name).to_numpy()
        size = s or max(0.5, 2000 / max(sel.sum(), 1))
        if is_cat:
            c = [colours[v] for v in vals[sel]]
            ax.scatter(coords[sel, 0], coords[sel, 1], c=c, s=size, linewidths=0)
        else:
            sc = ax.scatter(coords[sel, 0], coords[sel, 1], c=vals[sel].to_numpy(), s=size, cmap=cmap, linewidths=0,
                            vmin=np.nanmin(vals), vmax=np.nanmax(vals))
            fig.colorbar(sc, ax=ax, fraction=0.04)
        ax.set_title(str(name), fontsize=9)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    if is_cat and legend:
        top = vals.value_counts().index[:20]
        handles = [plt.Line2D([], [], marker="o", ls="", color=colours[t], label=str(t)) for t in top]
        fig.legend(handles=handles, loc="center right", title=f"{key} (top 20)", fontsize=7)
        fig.subplots_adjust(right=0.85)
    fig.suptitle(title or key)
    return fig
