"""Masked-token accuracy: how often a masked cell's predicted token is the one it gets when observed.

A model that in-paints a held-out cell first predicts its token (SQuINT: the
masked-code head's ranking of the tokens training cells use). The reference
is the token the same model assigns the cell when its counts are shown. The
baseline ranks the tokens of the cell's ``k`` nearest *observed* cells of its
section by how many of them carry each (ties: the token of the nearer cell
first); a model that cannot beat it has learnt nothing beyond "cells look like
their neighbours".
"""

from __future__ import annotations

import numpy as np

__all__ = ["neighbour_token_ranking", "token_accuracy"]


def token_accuracy(true_tokens, ranked, *, top: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy of ranked token predictions.

    Parameters
    ----------
    true_tokens
        ``(m,)`` the token each cell gets when observed.
    ranked
        ``(m, r)`` predicted tokens, best first (``r`` may be smaller than a
        requested k: then only the ``r`` columns count). Entries ``< 0`` are
        "no prediction" and never match.
    top
        The k of each reported accuracy.

    Returns
    -------
    dict
        ``{"top1": ..., "top5": ...}`` (fractions in [0, 1]; NaN when ``m == 0``).
    """
    true_tokens = np.asarray(true_tokens).reshape(-1)
    ranked = np.asarray(ranked)
    if ranked.ndim == 1:
        ranked = ranked[:, None]
    if ranked.shape[0] != true_tokens.size:
        raise ValueError(f"ranked has {ranked.shape[0]} rows; expected {true_tokens.size} (one per cell)")
    out = {}
    for k in top:
        if k < 1:
            raise ValueError(f"top-k with k={k}: expected k >= 1")
        if true_tokens.size == 0:
            out[f"top{k}"] = float("nan")
            continue
        hit = (ranked[:, :k] == true_tokens[:, None]) & (ranked[:, :k] >= 0)
        out[f"top{k}"] = float(hit.any(1).mean())
    return out


def neighbour_token_ranking(coords, tokens, observed_mask, test_idx, *, k: int = 8, section=None,
                            top: int = 5) -> np.ndarray:
    """Baseline prediction: the most common tokens among each test cell's ``k`` nearest observed cells.

    Parameters
    ----------
    coords
        ``(n, d)`` coordinates of all cells (any unit).
    tokens
        ``(n,)`` non-negative integer tokens; only observed cells' entries are read.
    observed_mask
        ``(n,)`` bool, cells whose token is known.
    test_idx
        ``(m,)`` cells to predict.
    k
        Neighbours voting (only observed cells of the same section).
    section
        ``(n,)`` section labels, or None for one section.
    top
        Columns returned.

    Returns
    -------
    (m, top) int64 tokens ranked by votes, ties broken by the nearer cell;
    ``-1`` pads rows with fewer distinct tokens than ``top``.
    """
    from napari_squint.data.graph import nearest_sources

    coords = np.asarray(coords, dtype=np.float64)
    tokens = np.asarray(tokens).astype(np.int64)
    test_idx = np.asarray(test_idx, dtype=np.int64)
    out = np.full((test_idx.size, top), -1, dtype=np.int64)
    for pos, nn in nearest_sources(coords, observed_mask, test_idx, k, section=section):
        for row, members in zip(pos, tokens[nn]):
            uniq, first, votes = np.unique(members, return_index=True, return_counts=True)
            order = np.lexsort((first, -votes))[:top]  # most votes first, then the nearest occurrence
            out[row, : order.size] = uniq[order]
    return out
