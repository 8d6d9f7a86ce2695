"""What cells are coloured by: a token, the activation score, any obs column or a gene (no Qt).

:func:`colour_by` turns a choice into per-cell colours and a :class:`Legend`
(categories with their colours and counts, or a colour map with its limits)
that the docks draw on the canvas and in the Slide & model dock. A gene is shown on
the scale the metrics use, log1p(counts per 10,000); after an in-painting run
the cells inside the polygons show the *imputed* value and every other cell its
measured value, on one shared scale (:func:`gene_values`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from napari_squint import _constants as K
from napari_squint._napari.colours import colour_categories, colour_continuous

#: choices offered before the obs columns
TOKEN = "token"
ACTIVATION = "activation score"
GENE = "gene"
#: colour maps: continuous values on napari's black canvas
CMAP = "viridis"
#: most categories listed in a legend (the rest are summarised as "… N more")
MAX_LEGEND = 40
#: obs columns with more distinct values than this are treated as numbers when numeric, else skipped
MAX_CATEGORIES = 500
#: what a gene's values are
GENE_UNIT = "log1p(counts/10k)"


def _qualitative() -> np.ndarray:
    import matplotlib

    tab = matplotlib.colormaps["tab20"](np.linspace(0, 1, 20))
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))  # the 10 strong colours first, then their light pairs
    return tab[order].astype(np.float32)


#: colours of an annotation's values, most frequent first
QUALITATIVE = _qualitative()
MISSING_RGBA = np.array([0.35, 0.35, 0.35, 1.0], dtype=np.float32)


@dataclass
class Legend:
    """What the colours mean: categories (``labels``, ``colours``, ``counts``) or a colour map (``limits``)."""

    title: str
    labels: list = field(default_factory=list)
    colours: np.ndarray | None = None
    counts: list = field(default_factory=list)
    limits: tuple[float, float] | None = None
    cmap: str = CMAP
    unit: str = ""
    note: str = ""

    @property
    def categorical(self) -> bool:
        return self.limits is None

    def caption(self) -> str:
        """One line for the canvas."""
        if self.categorical:
            return f"colour: {self.title} ({len(self.labels)} categories)"
        lo, hi = self.limits
        unit = f" {self.unit}" if self.unit else ""
        return f"colour: {self.title}{unit} {lo:.3g}–{hi:.3g}{self.note}"

    def lines(self, *, max_items: int = MAX_LEGEND) -> list[str]:
        """The legend as text, one entry a line: "name (cells)" per category, or title, min and max."""
        if self.categorical:
            n = min(len(self.labels), max_items)
            out = [f"{self.labels[i]} ({self.counts[i]:,})" for i in range(n)]
            return [self.title, *out] + ([f"… {len(self.labels) - n} more"] if len(self.labels) > n else [])
        lo, hi = self.limits
        return [self.title + (f" [{self.unit}]" if self.unit else ""), f"min {lo:.3g}", f"max {hi:.3g}"]

    def table(self) -> pd.DataFrame:
        """The legend as a table (for CSV export)."""
        if self.categorical:
            cols = self.colours if self.colours is not None else np.zeros((len(self.labels), 4))
            return pd.DataFrame({"category": [str(x) for x in self.labels], "cells": self.counts,
                                 "colour": [_hex(c) for c in cols]})
        lo, hi = self.limits
        return pd.DataFrame({"title": [self.title], "unit": [self.unit], "min": [lo], "max": [hi],
                             "colour_map": [self.cmap]})


def _hex(rgba) -> str:
    r, g, b = (np.clip(np.asarray(rgba)[:3], 0, 1) * 255).round().astype(int)
    return f"#{r:02x}{g:02x}{b:02x}"


def colour_choices(adata) -> list[str]:
    """What cells can be coloured by: token, activation score (when present), the obs columns, a gene."""
    if adata is None:
        return []
    out = []
    if K.TOKEN_KEY in adata.obs:
        out.append(TOKEN)
    if K.ACTIVATION_KEY in adata.obs:
        out.append(ACTIVATION)
    for c in adata.obs.columns:
        if c.startswith("squint"):
            continue
        col = adata.obs[c]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            out.append(c)
        elif col.nunique() <= MAX_CATEGORIES:
            out.append(c)
    out.append(GENE)
    return out


def gene_values(adata, gene: str, *, layer: str | None = None, imputed=None) -> tuple[np.ndarray, np.ndarray]:
    """(n,) log1p(counts per 10k) of ``gene`` in every cell, and (n,) bool: the value is imputed.

    ``imputed`` is an in-painting output (AnnData with ``layers['imputed']``):
    its measured cells (not ``squint_created``) take the imputed value.
    """
    from napari_squint.metrics import log_normalise

    if gene not in adata.var_names:
        raise KeyError(f"gene {gene!r} is not in the slide ({adata.n_vars} genes)")
    x = adata.layers[layer] if layer else adata.X
    gi = int(adata.var_names.get_loc(gene))
    # the one column, scaled as log_normalise scales every row (to 10,000 counts, then log1p): no full matrix
    lib = np.asarray(x.sum(1), dtype=np.float64).ravel()
    col = x[:, gi]
    col = np.asarray(col.toarray() if hasattr(col, "toarray") else col, dtype=np.float64).ravel()
    values = np.log1p(np.divide(col * 1e4, lib, out=np.zeros_like(col), where=lib > 0))
    is_imputed = np.zeros(adata.n_obs, dtype=bool)
    if imputed is not None and gene in imputed.var_names:
        measured = ~imputed.obs[K.CREATED_KEY].to_numpy() if K.CREATED_KEY in imputed.obs else np.ones(
            imputed.n_obs, bool)
        rows = adata.obs_names.get_indexer(imputed.obs_names[measured])
        ok = rows >= 0
        imp = log_normalise(np.asarray(imputed.layers[K.IMPUTED_LAYER]))
        imp = np.asarray(imp.toarray() if hasattr(imp, "toarray") else imp)[:, int(imputed.var_names.get_loc(gene))]
        values[rows[ok]] = imp[measured][ok]
        is_imputed[rows[ok]] = True
    return values, is_imputed


def colour_by(session, choice: str, *, gene: str | None = None) -> tuple[np.ndarray, Legend, np.ndarray]:
    """Per-cell RGBA (n, 4), the legend, and the per-cell values shown on hover (n,).

    ``choice`` is one of :func:`colour_choices`; ``gene`` names the gene when
    ``choice == "gene"`` (imputed inside the last in-painting's polygons).
    """
    a = session.adata
    if a is None:
        raise RuntimeError("no slide: open one in the 'Slide & model' widget")
    if choice == GENE:
        if not gene:
            raise ValueError("choose a gene to colour by")
        values, imp = gene_values(a, gene, layer=session.layer, imputed=session.results.get("impute"))
        hi = float(np.nanmax(values)) if values.size else 1.0
        rgba, lim = colour_continuous(values, cmap=CMAP, vmin=0.0, vmax=max(hi, 1e-6))
        note = f"; {int(imp.sum()):,} imputed (in polygons)" if imp.any() else ""
        return rgba, Legend(gene, limits=lim, unit=GENE_UNIT, note=note), values
    if choice == TOKEN:
        col = a.obs[K.TOKEN_KEY]
        title = "token"
    elif choice == ACTIVATION:
        col = a.obs[K.ACTIVATION_KEY]
        title = "activation score"
    elif choice in a.obs:
        col = a.obs[choice]
        title = choice
    else:
        raise KeyError(f"cannot colour by {choice!r}: not a token, score, obs column or gene")
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col) and choice != TOKEN:
        values = col.to_numpy(dtype=np.float64)
        lims = (0.0, 1.0) if choice == ACTIVATION else (None, None)
        rgba, lim = colour_continuous(values, cmap="plasma" if choice == ACTIVATION else CMAP, vmin=lims[0],
                                      vmax=lims[1])
        return rgba, Legend(title, limits=lim, cmap="plasma" if choice == ACTIVATION else CMAP), values
    rgba, cats, lut = colour_categories(col)
    counts = pd.Series(col).value_counts()
    if choice != TOKEN and 0 < len(counts) <= len(QUALITATIVE):
        # an annotation with few values: a qualitative palette by frequency tells them apart better than the
        # id-hashed colours (those stay for tokens, whose colour must not depend on what else is present)
        lut = np.asarray([QUALITATIVE[list(counts.index).index(c)] if c in counts.index else MISSING_RGBA
                          for c in cats], dtype=np.float32)
        codes = pd.Categorical(pd.Series(col).astype(object), categories=cats).codes
        rgba = np.where(codes[:, None] >= 0, lut[np.maximum(codes, 0)], MISSING_RGBA).astype(np.float32)
    order = [i for i in np.argsort([-int(counts.get(c, 0)) for c in cats], kind="stable")
             if counts.get(cats[i], 0) > 0]
    legend = Legend(title, labels=[cats[i] for i in order], colours=lut[order],
                    counts=[int(counts[cats[i]]) for i in order])
    return rgba, legend, col.astype(str).to_numpy()


def hover_features(session, cells: np.ndarray, *, value_name: str | None = None,
                   values: np.ndarray | None = None) -> pd.DataFrame:
    """The per-cell table napari shows on hover for a section layer: cell, section, token, cell type, value."""
    a = session.adata
    out = {"cell": a.obs_names[cells].astype(str)}
    out["section"] = session.section_labels()[cells]
    if K.TOKEN_KEY in a.obs:
        out["token"] = a.obs[K.TOKEN_KEY].astype(str).to_numpy()[cells]
    for key in (K.CELL_TYPE_KEY, "cell_type_coarse"):
        if key in a.obs:
            out[key.replace("_", " ")] = a.obs[key].astype(str).to_numpy()[cells]
            break
    if values is not None and value_name:
        v = np.asarray(values)[cells]
        out[value_name] = np.round(v.astype(np.float64), 3) if np.issubdtype(v.dtype, np.number) else v
    return pd.DataFrame(out)


def draw_legend(fig, legend: Legend, *, max_items: int = MAX_LEGEND, fg: str = "black") -> None:
    """Draw ``legend`` into a matplotlib figure: coloured squares, names and counts, or a colour bar.

    ``fg`` is the colour of the text (``"white"`` for the legend on napari's dark canvas).
    """
    import matplotlib as mpl

    muted = "0.4" if mpl.colors.to_rgb(fg)[0] < 0.5 else "0.75"
    fig.clear()
    fig.set_layout_engine("none")  # axes placed by hand
    if not legend.categorical:
        ax = fig.add_axes((0.07, 0.5, 0.86, 0.2))
        lo, hi = legend.limits
        bar = fig.colorbar(mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(lo, hi), cmap=legend.cmap), cax=ax,
                           orientation="horizontal")
        bar.set_ticks([lo, (lo + hi) / 2, hi], labels=[f"{v:.3g}" for v in (lo, (lo + hi) / 2, hi)])
        bar.outline.set_edgecolor(fg)
        ax.tick_params(labelsize=7, colors=fg)
        ax.set_title(f"{legend.title}" + (f"  [{legend.unit}]" if legend.unit else ""), fontsize=8, color=fg)
        if legend.note:
            fig.text(0.07, 0.04, legend.note.lstrip("; "), fontsize=7, color=muted, va="bottom")
        return
    n = min(len(legend.labels), max_items)
    ncol = 1 if n <= 12 else 2
    rows = int(np.ceil(n / ncol))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    ax.set_xlim(0, ncol)
    more = len(legend.labels) - n
    ax.set_ylim(rows + 0.8 + (1 if more > 0 else 0), -0.2)
    inch = ncol / fig.get_figwidth()  # one inch in column units: swatches keep their size at any width
    ax.text(0.05 * inch, -0.05, legend.title, fontsize=8, fontweight="bold", va="top", color=fg)
    for i in range(n):
        c, r = divmod(i, rows)
        ax.add_patch(mpl.patches.Rectangle((c + 0.05 * inch, r + 0.75), 0.11 * inch, 0.6, color=legend.colours[i]))
        ax.text(c + 0.22 * inch, r + 1.05, f"{short_label(legend.labels[i])} ({legend.counts[i]:,})", fontsize=7,
                va="center", color=fg)
    if more > 0:
        ax.text(0.05 * inch, rows + 1.05, f"… {more} more (see the CSV export)", fontsize=7, va="center",
                color=muted)


def short_label(label, *, most: int = 26) -> str:
    """A category's name as a legend writes it (cut to ``most`` characters)."""
    label = str(label)
    return label if len(label) <= most else label[:most - 1] + "…"


def legend_height(legend: Legend, *, max_items: int = MAX_LEGEND) -> float:
    """Inches a legend needs (for the dock's figure)."""
    if not legend.categorical:
        return 0.9
    n = min(len(legend.labels), max_items)
    rows = int(np.ceil(n / (1 if n <= 12 else 2))) + (1 if len(legend.labels) > n else 0)  # "… N more"
    return 0.35 + 0.17 * (rows + 1)
