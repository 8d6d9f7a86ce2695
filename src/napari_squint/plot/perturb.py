"""Perturbation figures: token-transition heat map, before/after proportions, the perturbed region."""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_squint import _constants as K

__all__ = ["plot_transitions", "plot_token_proportions", "plot_perturbation_map"]


def plot_transitions(result, *, title: str | None = None, cmap: str = "Purples", max_tokens: int = 30):
    """Row-normalised token transitions of the responders, diagonal excluded (paper Fig. 5e).

    Cell colour: the share of a before-token's changed cells that went to each
    after-token; the number is the cell count. With no change, the figure says so.
    """
    import matplotlib.pyplot as plt

    counts = result.transitions
    props = result.transition_proportions
    if counts.size == 0:
        fig, ax = plt.subplots(figsize=(4.5, 2.0))
        ax.text(0.5, 0.5, "no responder changed token", ha="center", va="center")
        ax.set_axis_off()
        ax.set_title(title or "token transitions of responders", fontsize=10)
        return fig
    rows = counts.sum(1).sort_values(ascending=False).index[:max_tokens]
    cols = counts.sum(0).sort_values(ascending=False).index[:max_tokens]
    c = counts.loc[rows, cols]
    p = props.loc[rows, cols]
    fig, ax = plt.subplots(figsize=(1.8 + 0.38 * len(cols), 1.6 + 0.34 * len(rows)))
    im = ax.imshow(p.to_numpy(), cmap=cmap, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = int(c.iat[i, j])
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="w" if p.iat[i, j] > 0.55 else "k")
    ax.set_xticks(range(len(cols)), [str(t) for t in cols], rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), [str(t) for t in rows], fontsize=7)
    ax.set_xlabel("token after")
    ax.set_ylabel("token before")
    fig.colorbar(im, ax=ax, fraction=0.05, label="row proportion (changed cells)")
    n_ch, n_r = result.n_changed_responders, result.n_responders
    ax.set_title(title or f"responder token transitions ({n_ch} of {n_r} changed)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_token_proportions(result, *, top: int = 15, title: str | None = None):
    """Responders' token proportions before and after the perturbation (paper Fig. 5d)."""
    import matplotlib.pyplot as plt

    tp = result.token_proportions
    if tp.empty:
        raise ValueError("no responder: nothing to plot")
    tp = tp.assign(m=tp[["before", "after"]].max(1)).sort_values("m", ascending=False).head(top)
    x = np.arange(len(tp))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.42 * len(tp) + 1.8), 3.6))
    ax.bar(x - 0.2, tp["before"], width=0.4, color="0.6", label="before")
    ax.bar(x + 0.2, tp["after"], width=0.4, color="#c44e52", label="after")
    ax.set_xticks(x, [str(t) for t in tp.index], rotation=90, fontsize=8)
    ax.set_xlabel("token")
    ax.set_ylabel("fraction of responders")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(title or f"responder tokens before / after (n={result.n_responders})", fontsize=10)
    fig.tight_layout()
    return fig


def plot_perturbation_map(adata, result, *, section: str | None = None, section_key: str | None = K.SECTION_KEY,
                          spatial_key: str = K.SPATIAL_KEY, region=None, title: str | None = None,
                          zoom: float = 0.35):
    """The perturbed cells, the responders and the responders that changed token, on one section.

    ``section`` defaults to the section holding most perturbed cells; ``region``
    (a list of :class:`~napari_squint.io.geojson.Region`) is outlined;
    ``zoom`` adds this fraction of the region's size around the perturbed cells.
    """
    import matplotlib.pyplot as plt

    coords = np.asarray(adata.obsm[spatial_key])[:, :2]
    sec = (adata.obs[section_key].astype(str).to_numpy() if section_key and section_key in adata.obs
           else np.full(adata.n_obs, "slide", dtype=object))
    pert = result.perturbed
    if section is None:
        section = pd.Series(sec[pert]).value_counts().index[0]
    on = sec == str(section)
    resp = result.responders if result.responders is not None else np.zeros(adata.n_obs, bool)
    changed = np.zeros(adata.n_obs, bool)
    changed[result.changed["index"].to_numpy(dtype=np.int64)] = True
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.8))
    for ax, zoomed in zip(axes, (False, True)):
        ax.scatter(*coords[on].T, s=1.5, c="0.85", linewidths=0, rasterized=True)
        ax.scatter(*coords[on & pert].T, s=8, c="#c44e52", linewidths=0, label=f"perturbed (n={int(pert.sum())})")
        ax.scatter(*coords[on & resp & ~changed].T, s=8, c="#4c72b0", linewidths=0,
                   label=f"responders, same token (n={int((resp & ~changed).sum())})")
        ax.scatter(*coords[on & resp & changed].T, s=16, c="#f0c419", edgecolors="k", linewidths=0.5,
                   label=f"responders, new token (n={int((resp & changed).sum())})")
        if region:
            for r in region:
                if r.section is None or str(r.section) == str(section):
                    x, y = r.polygon.exterior.xy
                    ax.plot(x, y, color="k", lw=0.8)
        if zoomed and (on & pert).any():
            xy = coords[on & pert]
            lo, hi = xy.min(0), xy.max(0)
            pad = zoom * (hi - lo).max() + 1e-9
            ax.set_xlim(lo[0] - pad, hi[0] + pad)
            ax.set_ylim(lo[1] - pad, hi[1] + pad)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.suptitle(title or f"perturbation on {section}", fontsize=10)
    fig.tight_layout()
    return fig
