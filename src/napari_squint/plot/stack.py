"""3D-stack figures: per-level heat maps of imputation quality by gene group (paper Fig. 3a)."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_stack_report"]


def plot_stack_report(result, *, title: str | None = None, cmap: str = "viridis", vmin: float | None = None,
                      vmax: float | None = None):
    """Heat maps of the mean per-gene Pearson of held-out cells: rows = z-levels, columns = gene groups.

    ``result`` is a :class:`~napari_squint.tasks.stack.StackResult` (one row of
    panels per graph) or a single :class:`~napari_squint.tasks.stack.StackReport`.
    Left: the cell's own profile (X); right: its microenvironment (X_nbr).
    All panels share one colour scale.
    """
    import matplotlib.pyplot as plt

    reports = list(result.reports.values()) if hasattr(result, "reports") else [result]
    tabs = [t for r in reports for t in (r.x, r.x_nbr)]
    allv = np.concatenate([t.to_numpy().ravel() for t in tabs])
    allv = allv[np.isfinite(allv)]
    lo = vmin if vmin is not None else (float(allv.min()) if allv.size else 0.0)
    hi = vmax if vmax is not None else (float(allv.max()) if allv.size else 1.0)
    n_levels, n_groups = reports[0].x.shape
    fig, axes = plt.subplots(len(reports), 2, figsize=(2.2 + 2.4 * n_groups * 0.55 * 2, 1.2 + 0.42 * n_levels * len(reports)),
                             squeeze=False)
    im = None
    for row, rep in zip(axes, reports):
        for ax, tab, name in zip(row, (rep.x, rep.x_nbr), ("X (cell)", "X_nbr (microenvironment)")):
            im = ax.imshow(tab.to_numpy(), cmap=cmap, vmin=lo, vmax=hi, aspect="auto", interpolation="nearest")
            for i in range(tab.shape[0]):
                for j in range(tab.shape[1]):
                    v = tab.iat[i, j]
                    if np.isfinite(v):
                        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                                color="w" if v < lo + 0.55 * (hi - lo) else "k")
            ax.set_xticks(range(tab.shape[1]), list(tab.columns), fontsize=8)
            ax.set_yticks(range(tab.shape[0]), [f"{z:g} (n={int(rep.n_heldout.iloc[i])})"
                                                for i, z in enumerate(tab.index)], fontsize=7)
            ax.set_title(f"{name}, {rep.graph} graph", fontsize=9)
            ax.set_xlabel("genes ranked by global PC")
        row[0].set_ylabel("z level (held-out cells)")
    fig.tight_layout(rect=(0, 0, 0.9, 0.95))
    cax = fig.add_axes([0.91, 0.2, 0.015, 0.6])
    fig.colorbar(im, cax=cax, label="mean per-gene Pearson")
    fig.suptitle(title or "imputation of held-out cells per z level", fontsize=10)
    return fig
