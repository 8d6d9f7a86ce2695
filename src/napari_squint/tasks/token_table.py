"""One row per token for an overview: size, top cell types, top marker genes, sections (no Qt).

Built from :func:`napari_squint.tasks.explain.explain_tokens`' result; the
Tokens dock shows it as a table that selects a token on click, and exports it.
"""

from __future__ import annotations

import pandas as pd


def _top(tab: pd.DataFrame | None, token, n: int) -> str:
    if tab is None or token not in tab.index:
        return ""
    row = tab.loc[token]
    total = float(row.sum())
    if total <= 0:
        return ""
    top = row[row > 0].sort_values(ascending=False).head(n)
    return ", ".join(f"{name} {100 * v / total:.0f}%" for name, v in top.items())


def token_overview(summary, *, n_types: int = 2, n_genes: int = 5, n_sections: int = 2) -> pd.DataFrame:
    """Every token with ``cells``, ``percent``, ``top cell types``, ``top genes`` and ``sections``.

    Parameters
    ----------
    summary
        A :class:`~napari_squint.tasks.explain.TokenSummary`.

    Returns
    -------
    DataFrame indexed like ``summary.summary`` (most used token first).
    """
    s = summary.summary
    markers = summary.markers
    up = markers[markers["logfoldchange"].fillna(0) > 0] if len(markers) else markers
    genes = {}
    for t, df in (up.groupby("token", sort=False) if len(up) else []):
        genes[t] = ", ".join(df.sort_values("rank")["gene"].head(n_genes).astype(str))
    n_sec = summary.sections.shape[1] if summary.sections is not None else 0
    rows = []
    for t in s.index:
        sec = _top(summary.sections, t, n_sections)
        if summary.sections is not None and t in summary.sections.index:
            sec = f"{int((summary.sections.loc[t] > 0).sum())} of {n_sec}: {sec}"
        rows.append({"token": t, "cells": int(s.loc[t, "n_cells"]), "percent": round(100 * float(s.loc[t, "fraction"]), 2),
                     "top cell types": _top(summary.cell_types, t, n_types),
                     "top genes": genes.get(t, genes.get(str(t), "")), "sections": sec})
    return pd.DataFrame(rows, index=s.index)
