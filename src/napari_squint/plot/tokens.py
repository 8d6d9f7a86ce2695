"""Token interpretation figures: programme dot plot, co-occurrence clustermap, composition, markers.

Every function returns a matplotlib ``Figure`` and never calls ``show``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["plot_programme_dotplot", "plot_cooccurrence", "plot_token_composition", "plot_token_markers"]


def plot_programme_dotplot(table: pd.DataFrame, *, title: str | None = None, max_size: float = 220.0,
                           cmap: str = "Reds", tokens: Sequence | None = None):
    """Dot plot of a gene programme across tokens (paper Fig. 5c).

    Parameters
    ----------
    table
        :func:`~napari_squint.tasks.explain.programme_table` output: columns
        ``token``, ``gene``, ``fraction`` (dot size), ``mean`` (dot colour), ``n_cells``.
    tokens
        Tokens to show, top to bottom (default: the table's order).
    """
    import matplotlib.pyplot as plt

    if table.empty:
        raise ValueError("the programme table is empty: no token to plot")
    genes = list(pd.unique(table["gene"]))
    toks = list(pd.unique(table["token"])) if tokens is None else list(tokens)
    t = table[table["token"].isin(toks)]
    yi = {tk: i for i, tk in enumerate(toks)}
    xi = {g: i for i, g in enumerate(genes)}
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(genes) + 1.6, 1.0 + 0.3 * len(toks)))
    sc = ax.scatter([xi[g] for g in t["gene"]], [yi[tk] for tk in t["token"]], s=np.nan_to_num(t["fraction"]) * max_size,
                    c=t["mean"], cmap=cmap, vmin=0, edgecolors="0.3", linewidths=0.4)
    ax.set_xticks(range(len(genes)), genes, rotation=90, fontsize=8)
    n_cells = t.groupby("token")["n_cells"].first()
    ax.set_yticks(range(len(toks)), [f"{tk} (n={int(n_cells.get(tk, 0))})" for tk in toks], fontsize=8)
    ax.set_xlim(-0.6, len(genes) - 0.4)
    ax.set_ylim(len(toks) - 0.5, -0.5)
    ax.set_ylabel("token")
    ax.grid(True, color="0.92", zorder=0)
    ax.set_axisbelow(True)
    fig.colorbar(sc, ax=ax, fraction=0.05, pad=0.02, label="mean log-norm. expression")
    for frac in (0.25, 0.5, 1.0):
        ax.scatter([], [], s=frac * max_size, c="0.6", label=f"{int(frac * 100)}%")
    ax.legend(title="expressing", loc="upper left", bbox_to_anchor=(1.25, 1.0), fontsize=7, title_fontsize=7,
              frameon=False, labelspacing=1.2)
    ax.set_title(title or "gene programme across tokens", fontsize=10)
    fig.tight_layout()
    return fig


def plot_cooccurrence(cooc, *, title: str | None = None, cmap: str = "RdBu_r", annotate: bool | None = None):
    """Clustered heat map of token co-occurrence across levels, with dendrograms (paper Fig. 3b).

    Parameters
    ----------
    cooc
        :class:`~napari_squint.tasks.explain.Cooccurrence`.
    annotate
        Write the correlation in each cell (default: when <= 20 tokens).
    """
    import matplotlib.pyplot as plt
    from scipy.cluster.hierarchy import dendrogram

    corr = cooc.correlation.loc[cooc.order, cooc.order]
    n = corr.shape[0]
    annotate = n <= 20 if annotate is None else annotate
    size = min(11.0, 3.0 + 0.16 * n)
    fig = plt.figure(figsize=(size + 1.0, size))
    dend_w = 0.14
    ax_top = fig.add_axes([0.2 + dend_w, 0.8, 0.6 - dend_w, 0.12])
    ax_left = fig.add_axes([0.2, 0.12, dend_w, 0.68])
    ax = fig.add_axes([0.2 + dend_w, 0.12, 0.6 - dend_w, 0.68])
    cax = fig.add_axes([0.84, 0.12, 0.02, 0.3])
    kw = {"color_threshold": 0, "above_threshold_color": "0.3", "no_labels": True}
    dendrogram(cooc.linkage, ax=ax_top, **kw)
    dendrogram(cooc.linkage, ax=ax_left, orientation="left", **kw)
    ax_left.invert_yaxis()
    for a in (ax_top, ax_left):
        a.set_axis_off()
    im = ax.imshow(corr.to_numpy(), cmap=cmap, vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    labels = [str(t) for t in corr.index]
    fs = max(4, min(8, int(300 / max(n, 1))))
    ax.set_xticks(range(n), labels, rotation=90, fontsize=fs)
    ax.yaxis.tick_right()
    ax.set_yticks(range(n), labels, fontsize=fs)
    if annotate:
        for i in range(n):
            for j in range(n):
                v = corr.iat[i, j]
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=6, color="w" if abs(v) > 0.6 else "k")
    fig.colorbar(im, cax=cax, label="Pearson r of usage across levels")
    n_levels = cooc.usage.shape[0]
    fig.suptitle(title or f"token co-occurrence across {n_levels} levels (top {n} tokens)", fontsize=10, y=0.97)
    return fig


def plot_token_composition(tab: pd.DataFrame, *, top: int = 30, title: str | None = None, label: str = "cell type"):
    """Stacked bars: the composition (e.g. cell types) of the ``top`` most used tokens.

    ``tab`` is a (tokens, categories) count table (``TokenSummary.cell_types``,
    ``.sections`` or ``.conditions``), most used token first.
    """
    import matplotlib.pyplot as plt

    from napari_squint.plot.tissue import categorical_colours

    t = tab.loc[tab.sum(1).sort_values(ascending=False).index[:top]]
    frac = t.div(t.sum(1).replace(0, 1), axis=0)
    cats = list(frac.columns)
    colours = categorical_colours(cats)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.28 * len(t) + 3.0), 4.2))
    bottom = np.zeros(len(t))
    for c in cats:
        ax.bar(range(len(t)), frac[c].to_numpy(), bottom=bottom, color=colours[c], label=str(c), width=0.85)
        bottom += frac[c].to_numpy()
    ax.set_xticks(range(len(t)), [f"{i}" for i in t.index], rotation=90, fontsize=7)
    ax.set_xlabel(f"token (n cells: {int(t.sum(1).min())}-{int(t.sum(1).max())})")
    ax.set_ylabel("fraction of the token's cells")
    ax.set_ylim(0, 1)
    ax.legend(title=label, fontsize=7, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title(title or f"{label} composition of the {len(t)} most used tokens", fontsize=10)
    fig.tight_layout()
    return fig


def plot_token_markers(summary, *, top_tokens: int = 25, n_markers: int = 2, title: str | None = None,
                       cmap: str = "viridis"):
    """Heat map of the top markers' mean expression (z-scored per gene) across the most used tokens.

    ``summary`` is a :class:`~napari_squint.tasks.explain.TokenSummary`.
    """
    import matplotlib.pyplot as plt

    toks = list(summary.summary.index[:top_tokens])
    mk = summary.markers
    genes: list[str] = []
    for t in toks:
        sel = mk[(mk["token"] == t) & (mk["logfoldchange"].fillna(0) > 0)]["gene"].head(n_markers)
        genes += [g for g in sel if g not in genes]
    if not genes:
        raise ValueError("no marker genes to plot (too few cells per token?)")
    m = summary.mean_expression.loc[toks, genes]
    z = (m - m.mean(0)) / m.std(0).replace(0, 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.22 * len(genes) + 2.5), max(3.5, 0.24 * len(toks) + 1.8)))
    im = ax.imshow(z.to_numpy(), aspect="auto", cmap=cmap, vmin=-2.5, vmax=2.5, interpolation="nearest")
    ax.set_xticks(range(len(genes)), genes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(toks)), [f"{t} (n={int(summary.summary.loc[t, 'n_cells'])})" for t in toks], fontsize=7)
    ax.set_ylabel("token")
    fig.colorbar(im, ax=ax, fraction=0.04, label="mean expression (z-score across tokens)")
    ax.set_title(title or "marker genes of the most used tokens", fontsize=10)
    fig.tight_layout()
    return fig
