"""Validation inside the training cells: pseudo-patches carved out of observed training cells, imputed as
held-out patches are, scored against their measured microenvironments.

Nothing here reads a cell the model was not trained on: the slide is the model's own training data
(``model.data``), so cells held out of training (the benchmark's scored patches) are not in it at all.
A pseudo-patch is a disc of observed cells (the ``m`` nearest a random centre) treated as targets: their
inputs are masked, the ``context`` method reads their nearest observed cells outside the discs, and their
measured microenvironments (``X_nbr``) are the truth. The model has seen these cells' counts in training,
so the scores are optimistic about the masked-code head; they are used to *compare settings* of the
in-painting output on the same model, never to train it. With ``TrainConfig.calibrate_holdout`` the discs
are a validation split instead (:func:`validation_discs`): drawn among the training cells before training
and held out of it as well, then imputed on the slide without the model's other held-out cells (which stay
unread), so the model has not seen them.

:func:`calibrate_output` uses them to choose, per slide, how strongly the local residual correction applies
(``ModelConfig.residual_weight``) and how much the spread of the imputed cells is widened
(``ModelConfig.spread``). This is calibration of the output, not a better model; see its docstring for the
rule.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from napari_squint.api.impute_engine import TargetSet
from napari_squint.data.imputation import section_median_depth

__all__ = ["RESIDUAL_WEIGHTS", "SPREADS", "calibrate_output", "choose_setting", "discs", "pseudo_patches",
           "score_settings", "validation_discs"]


def discs(coords: np.ndarray, batch: np.ndarray, rng: np.random.Generator, *, n_patches: int = 3,
          fraction: float = 0.03, section: int | None = None) -> np.ndarray:
    """(n,) bool: ``n_patches`` discs of ``fraction`` of a section's cells each (the section with most cells
    unless ``section``, a batch id; cells with a negative batch are never chosen), around random centres, not
    overlapping."""
    batch = np.asarray(batch)
    if section is None:
        section = int(np.bincount(batch[batch >= 0]).argmax())
    pool = np.flatnonzero(batch == section)
    m = max(1, int(round(fraction * pool.size)))
    tree = cKDTree(coords[pool])
    out = np.zeros(batch.size, dtype=bool)
    for _ in range(50 * n_patches):
        if out[pool].sum() >= n_patches * m:
            break
        centre = coords[pool[int(rng.integers(pool.size))]]
        _, nn = tree.query(centre, k=min(m, pool.size))
        disc = pool[np.atleast_1d(nn)]
        if out[disc].any():
            continue
        out[disc] = True
    return out


def pseudo_patches(data, rng: np.random.Generator, *, n_patches: int = 3, fraction: float = 0.03,
                   section: int | None = None) -> np.ndarray:
    """:func:`discs` over a prepared slide's cells (``data.coords``, ``data.batch``)."""
    return discs(data.coords, data.batch, rng, n_patches=n_patches, fraction=fraction, section=section)


def validation_discs(adata, holdout: np.ndarray | None, *, section_key: str | None, spatial_key: str,
                     seed: int = 0, n_patches: int = 3, fraction: float = 0.03) -> np.ndarray:
    """(n,) bool over ``adata``: :func:`discs` among the cells outside ``holdout`` (of the section with most
    of them), to be held out of training as a validation split (``TrainConfig.calibrate_holdout``)."""
    import pandas as pd

    from napari_squint.data.validate import check_coordinates

    coords = check_coordinates(adata, spatial_key)
    keep = np.ones(adata.n_obs, dtype=bool) if holdout is None else ~np.asarray(holdout, dtype=bool)
    labels = (adata.obs[section_key].astype(str).to_numpy() if section_key and section_key in adata.obs
              else np.zeros(adata.n_obs, dtype=object))
    codes = pd.factorize(labels)[0]
    batch = np.where(keep, codes, -1)  # held-out cells are in no section's pool
    return discs(coords, batch, np.random.default_rng(seed + 23), n_patches=n_patches, fraction=fraction)


def _target_set(engine, targets_mask: np.ndarray) -> TargetSet:
    d = engine.data
    targets = np.flatnonzero(targets_mask)
    labels = engine.section_labels.astype(str)
    depth = section_median_depth(engine.library, labels, ~targets_mask, labels[targets], obs_names=d.obs_names)
    return TargetSet(targets=targets, cells=targets, nbr=d.nbr[targets], xy=d.coords[targets],
                     sections=labels[targets].astype(object), depth=depth, target_mask=targets_mask.copy())


def score_settings(model, settings: list[dict], *, repeats: int = 2, seed: int = 0, method: str = "context",
                   max_n: int = 2000, data=None, patches: list[np.ndarray] | None = None) -> list[dict]:
    """X_nbr per-gene PC, MMD and energy of ``draw="logmean"`` in-painting of pseudo-patches (means over
    ``repeats`` draws of 3 discs of 3% of the largest section), for each dict of ``ModelConfig`` options in
    ``settings`` (each applied in turn on the same model, then restored). ``data`` (a prepared slide; default
    the model's training data) and ``patches`` (bool masks over it, used instead of the draws) score given
    discs of another slide, e.g. a validation split held out of training.

    Returns ``{"settings": [setting + scores, ...], "baselines": {name: scores}}`` with the neighbourhood
    average (``k`` nearest observed cells) and the ring average on the same pseudo-patches."""
    from napari_squint import metrics as M

    d = model.data if data is None else data
    if patches is not None:
        repeats = len(patches)
    labels = np.asarray(d.sections, dtype=object)[np.asarray(d.batch)].astype(str)
    engine = model.imputation_engine(d, labels)
    cfg = model.config.model
    saved = {key: getattr(cfg, key) for s in settings for key in s}
    rng = np.random.default_rng(seed + 11)
    sums = [dict.fromkeys(("pc_gene", "mmd", "energy"), 0.0) for _ in settings]
    base = {name: dict.fromkeys(("pc_gene", "mmd", "energy"), 0.0) for name in ("neighbourhood average",
                                                                                  "ring average")}
    try:
        for rep in range(repeats):
            held = pseudo_patches(d, rng) if patches is None else np.asarray(patches[rep], dtype=bool)
            test = np.flatnonzero(held)
            touches = ((d.nbr >= 0) & held[np.maximum(d.nbr, 0)]).any(1)
            pca = M.reference_pca(d.x_nbr[~held & ~touches], seed=seed + rep)
            truth = d.x_nbr[test].toarray()
            ts = _target_set(engine, held)
            k = model.config.graph.k
            for name, fn in (("neighbourhood average", M.neighbourhood_average), ("ring average", M.ring_infill)):
                x = fn(d.coords, d.counts, ~held, test, k=k, section=labels)
                b = M.evaluate_imputation(truth, M.nbr_profile(d.counts, x, held, d.nbr, test), pca=pca,
                                          seed=seed + rep, max_n=max_n)
                for key in base[name]:
                    base[name][key] += b[key] / repeats
            for i, s in enumerate(settings):
                for key, v in s.items():
                    setattr(cfg, key, v)
                out = engine.impute(ts, method=method, draw="logmean", residual=True, nbr_mode="sum",
                                    substitute="mean", seed=seed)
                sc = M.evaluate_imputation(truth, out["imputed_nbr"], pca=pca, seed=seed + rep, max_n=max_n)
                for key in sums[i]:
                    sums[i][key] += sc[key] / repeats
    finally:
        for key, v in saved.items():
            setattr(cfg, key, v)
    return {"settings": [{**s, **sc} for s, sc in zip(settings, sums)], "baselines": base}


#: the settings :func:`calibrate_output` chooses among (residual_weight x spread)
RESIDUAL_WEIGHTS = (1.0, 0.75, 0.5, 0.25, 0.0)
SPREADS = (1.0, 1.15, 1.3)


def choose_setting(scored: dict) -> dict:
    """The rule of :func:`calibrate_output` on :func:`score_settings`' output: among the settings whose X_nbr
    MMD and energy distance are both below the neighbourhood average's, the one with the highest per-gene PC;
    when none is, the one with the lowest MMD. Returns that row."""
    rows = scored["settings"]
    base = scored["baselines"]["neighbourhood average"]
    ok = [r for r in rows if r["mmd"] < base["mmd"] and r["energy"] < base["energy"]]
    if ok:
        return max(ok, key=lambda r: r["pc_gene"])
    return min(rows, key=lambda r: r["mmd"])


def calibrate_output(model, *, repeats: int = 2, seed: int | None = None) -> dict:
    """Choose ``ModelConfig.residual_weight`` and ``ModelConfig.spread`` by validation inside the training cells,
    and set them on ``model``.

    Every pair of :data:`RESIDUAL_WEIGHTS` x :data:`SPREADS` is scored on pseudo-patches of the model's own
    training cells (:func:`score_settings`: ``repeats`` draws of 3 discs of 3% of the largest section), beside
    the neighbourhood and ring averages of the same discs; :func:`choose_setting` picks the pair: the highest
    X_nbr per-gene PC among those whose X_nbr MMD and energy beat the neighbourhood average's (the issue's
    goal asked of the training cells), else the lowest MMD. This calibrates the output per slide; it does not
    change the model. With ``TrainConfig.calibrate_holdout`` the discs are instead the model's validation
    split (:func:`validation_discs`, drawn once before training and held out of it), scored on the slide
    without the model's other held-out cells. Returns ``{"chosen": {...}, "settings": [...], "baselines":
    {...}}`` (also stored in ``model.meta["impute_calibration"]``).
    """
    if model.data is None:
        raise ValueError("calibrate_output needs the model's training data (a model straight after train())")
    seed = model.config.train.seed if seed is None else int(seed)
    grid = [{"residual_weight": a, "spread": s} for a in RESIDUAL_WEIGHTS for s in SPREADS]
    split = model._validation
    if split is not None:  # TrainConfig.calibrate_holdout: discs the model was not trained on
        slide, val = split
        scored = score_settings(model, grid, seed=seed, data=model.prepare(slide), patches=[val])
        scored["validation"] = {"held_out_of_training": True, "cells": int(val.sum())}
        model._validation = None  # the slide is not kept with the model
    else:
        scored = score_settings(model, grid, repeats=repeats, seed=seed)
    best = choose_setting(scored)
    chosen = {"residual_weight": float(best["residual_weight"]), "spread": float(best["spread"])}
    model.config.update(**chosen)
    out = {"chosen": chosen, **scored}
    model.meta["impute_calibration"] = out
    return out
