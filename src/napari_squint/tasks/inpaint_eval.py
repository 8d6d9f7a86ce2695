"""One in-painting run as the napari dock asks for it: impute regions, optionally retrain without them, score.

The dock builds an :class:`InpaintRequest` and drives :func:`iter_inpaint` on a
worker thread; everything else happens here, without Qt:

* the slide is prepared for the model once (:class:`~napari_squint.tasks.impute.Imputer`)
  and the same Imputer is handed back for the next request on that slide and
  model (:func:`reuse_imputer`), so a polygon of a few hundred cells is imputed
  in well under the time the first call takes;
* ``holdout=True`` trains a new model of the same class and config that never
  sees the cells inside the regions, then imputes with it (an honest score);
* :func:`score` compares the imputed measured cells with their measurements
  (:func:`napari_squint.metrics.evaluate_imputation`) beside the neighbourhood
  average baseline, on a PCA fitted to measured cells outside the regions.

:data:`METRICS` names and explains the four numbers the dock shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from napari_squint import _constants as K

#: metric key -> (column title, explanation shown as tooltip and help)
METRICS = {
    "pc_cell": ("PC cell ↑", "Pearson correlation between each imputed cell's profile and its measured profile "
                             "in PCA space, averaged over cells (1 is perfect)"),
    "pc_gene": ("PC gene ↑", "Pearson correlation of each gene (PCA component) across the imputed cells, "
                             "imputed against measured, averaged (1 is perfect)"),
    "mmd": ("MMD ↓", "maximum mean discrepancy between the imputed and measured cells as two populations "
                     "(0: indistinguishable)"),
    "energy": ("E ↓", "energy distance between the imputed and measured populations (0: same distribution)"),
}
#: one line of help under the metrics table
METRICS_HELP = ("↑ higher is better, ↓ lower is better; computed on log-normalised profiles in a PCA fitted to "
                "measured cells outside the regions; the baseline ('neighbourhood average') is the mean of the "
                "nearest measured cells.")


@dataclass
class InpaintRequest:
    """What to impute and how (see :meth:`napari_squint.tasks.impute.Imputer.impute`).

    ``regions`` (polygons) or ``mask`` (n,) bool selects the cells; ``holdout``
    retrains for ``epochs`` with ``train_options`` first; ``score`` compares
    the result with the measurements.
    """

    regions: list | None = None
    mask: np.ndarray | None = None
    method: str | None = None
    draw: str | None = None
    residual: bool | None = None
    fill_empty: bool = True
    holdout: bool = False
    epochs: int | None = None  #: None: the model's default (model.default_epochs(), as everywhere)
    train_options: dict = field(default_factory=dict)
    score: bool = True
    seed: int = 0


@dataclass
class InpaintRun:
    """The output AnnData, the metrics by method, the Imputer used and the timings (seconds by stage)."""

    output: object
    metrics: dict
    imputer: object
    model: object
    holdout: bool
    seconds: dict


def reuse_imputer(imputer, model, adata):
    """``imputer`` when it was prepared for this model and slide, else None."""
    if imputer is not None and imputer.model is model and imputer.adata is adata:
        return imputer
    return None


def retrain_options(model, options: dict) -> dict:
    """The training options that apply to ``model``'s config, without ``epochs``."""
    names = model.config_class.option_names()
    return {k: v for k, v in options.items() if k != "epochs" and k in names}


def iter_inpaint(model, adata, request: InpaintRequest, *, imputer=None):
    """Generator of :class:`~napari_squint.train.events.ProgressEvent`; returns an :class:`InpaintRun`."""
    from napari_squint.tasks.impute import Imputer
    from napari_squint.train.events import ProgressEvent

    seconds = {}
    mask = None if request.mask is None else np.asarray(request.mask, dtype=bool)
    located = None
    if request.regions:  # polygons checked and their cells found once, here (the Imputer reuses them)
        from napari_squint.tasks.regions import locate_regions

        sk = model.section_key if (model.section_key and model.section_key in adata.obs) else None
        located = locate_regions(adata, request.regions, section_key=sk, spatial_key=model.spatial_key)
        mask = located.mask
    if request.holdout:
        if mask is None:
            raise ValueError("holding out needs the cells inside the regions (mask)")
        t0 = time.perf_counter()
        yield ProgressEvent("prepare", message=f"training without the {int(mask.sum())} cells inside the regions")
        config = model.config_class.from_dict(model.config.to_dict())
        m = type(model)(adata, section_key=model.section_key, spatial_key=model.spatial_key, layer=model.layer,
                        genes=list(model.genes), holdout=mask, config=config,
                        **{**retrain_options(model, request.train_options),
                           "epochs": request.epochs or model.default_epochs()})
        yield from m.iter_train()
        seconds["retrain"] = time.perf_counter() - t0
        imputer = None
    else:
        m = model
        imputer = reuse_imputer(imputer, model, adata)
    if imputer is None:
        t0 = time.perf_counter()
        yield ProgressEvent("prepare", message="preparing the slide for the model (once per slide and model)")
        imputer = Imputer(m, adata)
        seconds["prepare"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    yield ProgressEvent("impute", message="imputing the cells inside the regions")
    out = imputer.impute(located=located, mask=None if located is not None else mask,
                         method=request.method, fill_empty=request.fill_empty, draw=request.draw,
                         residual=request.residual)
    seconds["impute"] = time.perf_counter() - t0
    metrics = {}
    if request.score:
        t0 = time.perf_counter()
        yield ProgressEvent("metrics", message="scoring against the measured cells")
        metrics = score(adata, out, genes=list(m.genes), layer=m.layer, section_key=m.section_key,
                        spatial_key=m.spatial_key, seed=request.seed, name=type(m).label or "model")
        seconds["score"] = time.perf_counter() - t0
    return InpaintRun(out, metrics, imputer, m, request.holdout, seconds)


def _counts(adata, genes, layer):
    import scipy.sparse as sp

    x = adata.layers[layer] if layer else adata.X
    x = x[:, adata.var_names.get_indexer(list(genes))]
    return x.tocsr() if sp.issparse(x) else np.asarray(x)


def score(adata, out, *, genes, layer, section_key, spatial_key, seed: int = 0, name: str = "model",
          max_reference: int = 5000) -> dict[str, dict]:
    """Metrics of the imputed measured cells against their measurements, with the neighbourhood average beside.

    Returns ``{name: {metric: value}, "neighbourhood average": {...}}``; empty
    when fewer than 3 measured cells were imputed (only new cells).
    """
    from napari_squint.data.validate import check_coordinates
    from napari_squint.metrics import evaluate_imputation, neighbourhood_average, reference_pca

    measured = ~out.obs[K.CREATED_KEY].to_numpy() if K.CREATED_KEY in out.obs else np.ones(out.n_obs, bool)
    if measured.sum() < 3:
        return {}
    targets = adata.obs_names.get_indexer(out.obs_names[measured])
    counts = _counts(adata, genes, layer)
    observed = np.ones(adata.n_obs, dtype=bool)
    observed[targets] = False
    rng = np.random.default_rng(seed)
    ref_rows = np.flatnonzero(observed)
    ref_rows = np.sort(rng.choice(ref_rows, size=min(max_reference, ref_rows.size), replace=False))
    pca = reference_pca(counts[ref_rows], n_components=min(50, len(genes) - 1), seed=seed)
    true = counts[targets]
    pred = np.asarray(out.layers[K.IMPUTED_LAYER])[measured]
    section = adata.obs[section_key].astype(str).to_numpy() if section_key and section_key in adata.obs else None
    base = neighbourhood_average(check_coordinates(adata, spatial_key), counts, observed, targets,
                                 section=section)
    return {name: evaluate_imputation(true, pred, pca=pca, seed=seed),
            "neighbourhood average": evaluate_imputation(true, base, pca=pca, seed=seed)}


def metrics_table(metrics: dict):
    """The metrics as a table (one row per method; CSV export)."""
    import pandas as pd

    rows = [{"method": name, **{k: vals.get(k) for k in METRICS}} for name, vals in metrics.items()]
    return pd.DataFrame(rows, columns=["method", *METRICS])
