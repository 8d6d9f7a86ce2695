"""Figures of the demo report: tokens on the tissue, tokens x cell types, one in-painted patch."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["dot_size", "plot_patch", "plot_token_cell_types", "plot_tokens_on_tissue", "token_cell_type_table"]


def dot_size(coords: np.ndarray, ax_width_in: float, *, fill: float = 0.9) -> float:
    """Marker area (points^2) for which a dot's diameter is ``fill`` x the median nearest-cell distance.

    Unit-free: the scale comes from the coordinates' own extent and the axes width.
    """
    from scipy.spatial import cKDTree

    coords = np.asarray(coords, dtype=np.float64)[:, :2]
    if coords.shape[0] < 2:
        return 20.0
    d, _ = cKDTree(coords).query(coords, k=2)
    nn = float(np.median(d[:, 1]))
    extent = float(np.ptp(coords, axis=0).max()) or 1.0
    diameter_pt = fill * nn / extent * ax_width_in * 72.0
    return float(np.clip(diameter_pt, 1.0, 30.0) ** 2)


def _top_colours(values: pd.Series, n: int = 19) -> tuple[dict, list]:
    import matplotlib

    counts = values.value_counts()
    top = list(counts.index[:n])
    cmap = matplotlib.colormaps["tab20"]
    return {t: cmap(i % 20) for i, t in enumerate(top)}, top


def plot_tokens_on_tissue(adata, key: str, *, section_key: str | None, spatial_key: str, title: str,
                          n_colours: int = 19, width: float = 5.5):
    """Cells of each section at a visible dot size, the ``n_colours`` most used tokens coloured, the rest grey."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    coords = np.asarray(adata.obsm[spatial_key])[:, :2]
    sec = (adata.obs[section_key].astype(str) if section_key and section_key in adata.obs
           else pd.Series(["slide"] * adata.n_obs, index=adata.obs_names))
    vals = adata.obs[key].astype(str)
    colours, top = _top_colours(vals, n_colours)
    names = list(pd.unique(sec))[:4]
    fig, axes = plt.subplots(1, len(names), figsize=(width * len(names) + 2.2, width), squeeze=False)
    grey = (0.82, 0.82, 0.82, 1.0)
    for ax, name in zip(axes[0], names):
        sel = (sec == name).to_numpy()
        xy = coords[sel]
        c = [colours.get(v, grey) for v in vals[sel]]
        ax.scatter(xy[:, 0], xy[:, 1], c=c, s=dot_size(xy, width), linewidths=0)
        ax.set_title(f"{name} ({sel.sum()} cells)", fontsize=10)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], marker="o", ls="", color=colours[t], label=f"token {t}") for t in top]
    handles.append(Line2D([], [], marker="o", ls="", color=grey, label="other tokens"))
    axes[0, -1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def token_cell_type_table(tokens, cell_types, *, top: int = 15) -> pd.DataFrame:
    """Cells per (token, cell type) for the ``top`` most used tokens, with each token's majority type and purity."""
    tab = pd.crosstab(pd.Series(np.asarray(tokens), name="token"), pd.Series(np.asarray(cell_types), name="cell type"))
    order = tab.sum(1).sort_values(ascending=False).index[:top]
    tab = tab.loc[order]
    out = tab.copy()
    out["cells"] = tab.sum(1)
    out["majority"] = tab.idxmax(1)
    out["purity"] = (tab.max(1) / tab.sum(1)).round(3)
    return out


def plot_token_cell_types(tokens, cell_types, *, top: int = 30):
    """Heatmap: fraction of each of the ``top`` most used tokens' cells in each cell type."""
    import matplotlib.pyplot as plt

    tab = pd.crosstab(np.asarray(tokens), np.asarray(cell_types))
    order = tab.sum(1).sort_values(ascending=False).index[:top]
    frac = tab.loc[order].div(tab.loc[order].sum(1), axis=0)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * frac.shape[1] + 3), 0.25 * len(order) + 2))
    im = ax.imshow(frac.to_numpy(), aspect="auto", cmap="magma", vmin=0, vmax=1)
    ax.set_yticks(range(len(order)), [f"{t} ({tab.loc[t].sum()})" for t in order], fontsize=7)
    ax.set_xticks(range(frac.shape[1]), frac.columns, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(f"token (cells), {len(order)} most used")
    fig.colorbar(im, ax=ax, label="fraction of the token's cells")
    fig.tight_layout()
    return fig


def plot_patch(coords, lognorm_truth, panels: dict, patch: np.ndarray, genes: list[str], gene_idx: list[int], *,
               context: np.ndarray, title: str):
    """One held-out patch: rows = genes, columns = measured and each method (log1p counts per 10k).

    ``coords`` (n, 2) of the cells drawn (the patch and the observed ``context`` around it);
    ``lognorm_truth`` (n, g) measured log-normalised values of those cells; ``panels`` maps a column title to the
    (n_patch, g) log-normalised estimate of the patch cells (``patch`` (n,) bool marks them). Context cells show
    their measured values in every column; the patch outline is drawn.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    cols = {"measured (held out)": lognorm_truth[patch], **panels}
    fig, axes = plt.subplots(len(gene_idx), len(cols), figsize=(3.3 * len(cols) + 0.8, 3.1 * len(gene_idx)),
                             squeeze=False)
    xy = np.asarray(coords)[:, :2]
    centre = xy[patch].mean(0)
    radius = float(np.linalg.norm(xy[patch] - centre, axis=1).max())
    s = dot_size(xy, 3.0, fill=0.95)
    for r, (gname, j) in enumerate(zip(genes, gene_idx)):
        vmax = float(np.quantile(lognorm_truth[:, j], 0.99)) or 1.0
        for c, (name, est) in enumerate(cols.items()):
            ax = axes[r, c]
            ax.scatter(xy[context, 0], xy[context, 1], c=lognorm_truth[context, j], s=s, cmap="viridis", vmin=0,
                       vmax=vmax, linewidths=0, alpha=0.45)
            sc = ax.scatter(xy[patch, 0], xy[patch, 1], c=est[:, j], s=s, cmap="viridis", vmin=0, vmax=vmax,
                            linewidths=0)
            ax.add_patch(Circle(centre, radius * 1.04, fill=False, ec="white", lw=1.2, ls="--"))
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel(gname, fontsize=10)
        fig.colorbar(sc, ax=axes[r, -1], fraction=0.05, label="log1p(counts per 10k)")
    fig.suptitle(title, fontsize=10)
    return fig
