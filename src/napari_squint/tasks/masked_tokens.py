"""Masked-token accuracy of a SQuINT model on held-out cells, beside the nearest-observed-cells baseline.

The reference token of a held-out cell is the one the trained model assigns it
when its counts are shown (every cell of the slide observed, the slide's own
graph). The prediction is what in-painting starts from: the cell masked (the
learned mask token as its input), its ``k`` nearest *observed* cells of its
section as its graph neighbours (the ``context`` method, the default), the
masked-code head's ranking of the tokens training cells use
(:meth:`~napari_squint.api.squint.Squint.code_mixture`). The baseline ranks the
tokens of those same ``k`` observed cells by votes
(:func:`~napari_squint.metrics.tokens.neighbour_token_ranking`); observed cells'
tokens are computed with the held-out cells masked, so nothing reads a held-out
count.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial import cKDTree

from napari_squint.metrics.tokens import neighbour_token_ranking, token_accuracy

__all__ = ["masked_token_scores"]

#: rows of the masked-token table
MODEL_ROW = "SQuINT masked-code head (context)"
BASELINE_ROW = "most common token of the k nearest observed cells"


def _context_graph(data, held: np.ndarray, test: np.ndarray, sections: np.ndarray | None, k: int) -> np.ndarray:
    """The slide's neighbour table with each test cell's row replaced by its k nearest observed cells."""
    nbr = data.nbr.copy()
    width = nbr.shape[1]
    kk = min(k, width)
    labels = np.zeros(held.size, dtype=np.int64) if sections is None else np.asarray(sections)
    for s in np.unique(labels[test]):
        rows = test[labels[test] == s]
        pool = np.flatnonzero(~held & (labels == s))
        m = min(kk, pool.size)
        _, nn = cKDTree(data.coords[pool]).query(data.coords[rows], k=m)
        nbr[rows] = -1
        nbr[rows, :m] = pool[np.asarray(nn).reshape(rows.size, m)]
    return nbr


def masked_token_scores(model, data, held: np.ndarray, test: np.ndarray, *, sections=None, k: int | None = None,
                        top: int = 5) -> dict[str, dict[str, float]]:
    """Top-1 / top-``top`` accuracy of the model's masked-token prediction and of the neighbour baseline.

    Parameters
    ----------
    model
        A trained :class:`~napari_squint.api.squint.Squint` (trained without the held-out cells).
    data
        ``model.prepare(adata)`` of the whole slide (held-out cells included, in the order of ``held``).
    held
        ``(n,)`` bool, the held-out cells.
    test
        ``(m,)`` indices of the cells scored (held-out).
    sections
        ``(n,)`` section labels (neighbours stay in their section).
    k
        Neighbours (default: the model graph's ``k``).

    Returns
    -------
    ``{row: {"top1": ..., "top5": ..., "code_top1": ...}}`` for :data:`MODEL_ROW` and :data:`BASELINE_ROW`
    (``code_top1``: the fraction of (cell, codebook head) pairs whose predicted code is the observed one)
    (empty when the model has no masked-code head: its prediction is then the nearest code of the
    latent, reported under the same row).
    """
    held = np.asarray(held, dtype=bool)
    test = np.asarray(test, dtype=np.int64)
    k = int(k or model.config.graph.k)
    seen = model.encode(data, cells=test)
    truth, truth_codes = seen["tokens"], seen["codes"]
    observed = np.flatnonzero(~held)
    tokens = np.full(held.size, -1, dtype=np.int64)
    codes = np.full((held.size, truth_codes.shape[1]), -1, dtype=np.int64)
    obs_enc = model.encode(data, masked=held, cells=observed)
    tokens[observed], codes[observed] = obs_enc["tokens"], obs_enc["codes"]
    ctx = dataclasses.replace(data, nbr=_context_graph(data, held, test, sections, k))
    if model.has_code_head:
        pred = model.code_mixture(ctx, held, test, top=top)
        ranked, pred_codes = pred["candidates"], pred["codes"]
    else:
        pred = model.encode(ctx, masked=held, cells=test)
        ranked, pred_codes = pred["tokens"][:, None], pred["codes"]
    base = neighbour_token_ranking(data.coords, tokens, ~held, test, k=k, section=sections, top=top)
    ks = (1, top)
    out = {MODEL_ROW: token_accuracy(truth, ranked, top=ks), BASELINE_ROW: token_accuracy(truth, base, top=ks)}
    # per codebook head: a token of H heads is H codes; with many heads whole tokens are nearly unique per cell,
    # so the share of heads whose code is right says more (top-1 code of the predicted token / the neighbours' mode)
    base_codes = np.stack([neighbour_token_ranking(data.coords, codes[:, h], ~held, test, k=k, section=sections,
                                                   top=1)[:, 0] for h in range(codes.shape[1])], axis=1)
    out[MODEL_ROW]["code_top1"] = float((np.asarray(pred_codes) == truth_codes).mean())
    out[BASELINE_ROW]["code_top1"] = float((base_codes == truth_codes).mean())
    return out
