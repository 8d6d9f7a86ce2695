"""CIFM's own in-sample evaluation: regional split, baselines, cell-typing accuracy.

Appendix B.1 of the CIFM paper splits every slide into regions: with
``x_thr = x_min + 0.6 (x_max - x_min)`` and ``y_thr = y_min + 0.5 (y_max - y_min)``
a cell is *train* if ``x <= x_thr``, *validation* if ``x > x_thr`` and
``y >= y_thr``, *test* if ``x > x_thr`` and ``y < y_thr`` (about 3:1:1).

The model is trained on the train region only (the other cells are removed
from its graph). The test region is then treated as a new slide: its cells
are split into ``ceil(1 / mask_ratio)`` disjoint random groups, each group is
masked in turn (removed from the graph, padded with ``e``) and reconstructed
from the rest of the test region, so every test cell is predicted once, with
the same amount of context as in training. Every method is scored on the same
masks, on normalised log expression (log1p of counts per 10^4):

* ``CIFM`` -- the decoder output;
* ``neighbourhood average`` -- the mean counts of the ``k`` nearest unmasked
  cells (:func:`napari_squint.metrics.neighbourhood_average`), log-normalised;
* ``uniform`` -- per gene ``U(min_g, max_g)`` of the training cells' values;
* ``Bernoulli`` -- per gene ``B(p_g) * m_g`` with ``p_g`` the training
  fraction of cells expressing the gene and ``m_g`` its mean positive value;
* ``mean profile`` -- the training cells' mean (for reference).

Correlation is the per-cell and per-gene Pearson correlation
(:mod:`napari_squint.metrics`); mismatch error is the RMSE and the balanced
MSE (eq. 15). Cell typing accuracy (Figure 2D) uses a logistic-regression
classifier trained on the measured, labelled training cells: ``agree@k`` is
the fraction of test cells whose top-k predicted types from the reconstructed
and from the measured profile overlap (the paper's measure); ``label@k`` is
the fraction whose annotated type is among the top-k types of the
reconstruction.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from napari_squint import _constants as K
from napari_squint.metrics import log_normalise, neighbourhood_average, pearson_per_cell, pearson_per_gene
from napari_squint.models.cifm_loss import balanced_mse
from napari_squint.data.cifm_batch import disjoint_masks
from napari_squint.data.validate import check_coordinates
from napari_squint.models.cifm_infer import reconstruct_tiled
from napari_squint.train.events import ProgressEvent, drive

__all__ = [
    "RegionalResult",
    "TypingClassifier",
    "evaluate_region",
    "fit_random_baselines",
    "iter_train_with_validation",
    "regional_split",
    "reconstruction_metrics",
    "table_markdown",
    "topk_typing",
]

SPLIT_KEY = K.SPLIT_KEY  #: obs column written by :func:`regional_split` when given an AnnData
TRAIN, VAL, TEST = "train", "validation", "test"


def regional_split(
    coords_or_adata,
    section=None,
    *,
    x_frac: float = 0.6,
    y_frac: float = 0.5,
    spatial_key: str = K.SPATIAL_KEY,
    section_key: str | None = K.SECTION_KEY,
    key_added: str | None = None,
) -> np.ndarray:
    """Regional train / validation / test split of appendix B.1, per section.

    Parameters
    ----------
    coords_or_adata
        ``(n, 2)`` coordinates, or an AnnData (then ``spatial_key`` and
        ``section_key`` are read and, if ``key_added`` is given, the split is
        written to ``obs[key_added]`` as a categorical).
    section
        Optional ``(n,)`` section labels (thresholds are per section).
    x_frac, y_frac
        Threshold positions along each section's x and y range.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` object array of ``"train"``, ``"validation"`` or ``"test"``.
    """
    adata = coords_or_adata if isinstance(coords_or_adata, AnnData) else None
    if adata is not None:
        coords = check_coordinates(adata, spatial_key)  # x, y and z where the slide has one
        if section is None and section_key is not None:
            if section_key not in adata.obs:
                raise KeyError(f"section key {section_key!r} not in adata.obs")
            section = adata.obs[section_key].to_numpy()
    else:
        coords = np.asarray(coords_or_adata, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise ValueError(f"coords must have shape (n, 2), got {coords.shape}")
    for name, v in (("x_frac", x_frac), ("y_frac", y_frac)):
        if not 0.0 < float(v) < 1.0:
            raise ValueError(f"{name} must lie in (0, 1), got {v!r}")
    n = coords.shape[0]
    sec = np.zeros(n, dtype=np.int64) if section is None else pd.factorize(np.asarray(section))[0]
    if sec.shape != (n,):
        raise ValueError(f"section must have shape ({n},), got {sec.shape}")
    out = np.empty(n, dtype=object)
    for s in np.unique(sec):
        idx = np.flatnonzero(sec == s)
        x, y = coords[idx, 0], coords[idx, 1]
        x_thr = x.min() + (x.max() - x.min()) * x_frac
        y_thr = y.min() + (y.max() - y.min()) * y_frac
        right = x > x_thr
        out[idx] = np.where(~right, TRAIN, np.where(y >= y_thr, VAL, TEST))
    if adata is not None and key_added:
        adata.obs[key_added] = pd.Categorical(out, categories=[TRAIN, VAL, TEST])
        adata.uns.setdefault(K.UNS_KEY, {})["regional_split"] = {
            "params": {"x_frac": x_frac, "y_frac": y_frac, "section_key": section_key, "key_added": key_added}}
    return out


# ------------------------------------------------------------------ baselines
@dataclass
class RandomBaselines:
    """Gene-wise random expression models fitted on training cells (log scale)."""

    lo: np.ndarray  #: (g,) minimum
    hi: np.ndarray  #: (g,) maximum
    p: np.ndarray  #: (g,) fraction of cells with a positive value
    pos_mean: np.ndarray  #: (g,) mean positive value
    mean: np.ndarray  #: (g,) mean

    def uniform(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.lo, self.hi, size=(n, self.lo.size))

    def bernoulli(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return (rng.random((n, self.p.size)) < self.p) * self.pos_mean

    def mean_profile(self, n: int) -> np.ndarray:
        return np.tile(self.mean, (n, 1))


def fit_random_baselines(x_log) -> RandomBaselines:
    """Fit the uniform and Bernoulli baselines on ``(n, g)`` training log expression."""
    import scipy.sparse as sp

    x = x_log.toarray() if sp.issparse(x_log) else np.asarray(x_log, dtype=np.float64)
    pos = x > 0
    n_pos = pos.sum(0)
    pos_mean = np.divide((x * pos).sum(0), n_pos, out=np.zeros(x.shape[1]), where=n_pos > 0)
    return RandomBaselines(lo=x.min(0), hi=x.max(0), p=pos.mean(0), pos_mean=pos_mean, mean=x.mean(0))


def reconstruction_metrics(true_log: np.ndarray, pred_log: np.ndarray) -> dict[str, float]:
    """Correlation and mismatch error between measured and predicted log expression.

    Returns
    -------
    dict
        ``pc_cell`` and ``pc_gene`` (Pearson, higher is better), ``rmse`` and
        ``balanced_mse`` (eq. 15, lower is better).
    """
    t = np.asarray(true_log, dtype=np.float64)
    p = np.asarray(pred_log, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError(f"true and pred differ in shape: {t.shape} vs {p.shape}")
    return {
        "pc_cell": pearson_per_cell(t, p),
        "pc_gene": pearson_per_gene(t, p),
        "rmse": float(np.sqrt(np.mean((t - p) ** 2))),
        "balanced_mse": float(balanced_mse(torch.from_numpy(t), torch.from_numpy(p))),
    }


# ---------------------------------------------------------------- cell typing
class TypingClassifier:
    """Logistic-regression cell typer on log-normalised profiles (scikit-learn).

    Parameters
    ----------
    x_log
        ``(n, g)`` measured normalised log expression of labelled cells.
    labels
        ``(n,)`` cell-type labels; missing (NaN/None) labels are dropped.
    max_cells
        Fit on at most this many cells (a seeded random sample).
    seed
        Random seed.
    C, max_iter
        Inverse regularisation and iteration cap of the logistic regression
        (a not fully converged fit is fine for a typer; its accuracy on
        measured cells is reported as the ceiling).
    """

    def __init__(self, x_log, labels, *, max_cells: int = 10000, seed: int = 0, C: float = 1.0,
                 max_iter: int = 300):
        import scipy.sparse as sp
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        x = x_log.toarray() if sp.issparse(x_log) else np.asarray(x_log, dtype=np.float64)
        lab = pd.Series(np.asarray(labels, dtype=object))
        ok = lab.notna().to_numpy()
        self.n_fit = 0
        if ok.sum() < 2 or lab[ok].nunique() < 2:
            raise ValueError("TypingClassifier needs labelled cells of at least two types")
        idx = np.flatnonzero(ok)
        rng = np.random.default_rng(seed)
        if idx.size > max_cells:
            idx = np.sort(rng.choice(idx, size=max_cells, replace=False))
        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, tol=1e-3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.fit(x[idx], lab.to_numpy()[idx].astype(str))
        self.n_fit = int(idx.size)
        self.classes_ = np.asarray(self.model.classes_)

    def predict_proba(self, x_log) -> np.ndarray:
        """``(m, n_types)`` class probabilities, columns in ``classes_`` order."""
        return self.model.predict_proba(np.asarray(x_log, dtype=np.float64))

    def predict(self, x_log) -> np.ndarray:
        """``(m,)`` most likely type."""
        return self.classes_[self.predict_proba(x_log).argmax(1)]

    def topk(self, x_log, k: int) -> np.ndarray:
        """``(m, k)`` indices into ``classes_`` of the k most likely types."""
        proba = self.predict_proba(x_log)
        k = min(int(k), proba.shape[1])
        return np.argsort(-proba, axis=1, kind="stable")[:, :k]


def topk_typing(clf: TypingClassifier, true_log, pred_log, *, labels=None,
                ks: Sequence[int] = (1, 2, 3)) -> dict[str, float]:
    """Top-k cell-typing accuracy of reconstructed profiles (Figure 2D).

    Returns
    -------
    dict
        ``agree@k``: fraction of cells whose top-k types from ``pred_log`` and
        from ``true_log`` overlap; ``label@k`` (when ``labels`` is given):
        fraction whose label is among the top-k types of ``pred_log``
        (unlabelled cells and labels unknown to the classifier are skipped).
    """
    p_true = clf.predict_proba(true_log)
    p_pred = clf.predict_proba(pred_log)
    out: dict[str, float] = {}
    lab_idx = None
    if labels is not None:
        lab = np.asarray(labels, dtype=object)
        index = {c: i for i, c in enumerate(clf.classes_)}
        lab_idx = np.array([index.get(str(v), -1) if v is not None and v == v else -1 for v in lab])
    for k in ks:
        k = min(int(k), p_true.shape[1])
        tk = np.argsort(-p_true, axis=1, kind="stable")[:, :k]
        pk = np.argsort(-p_pred, axis=1, kind="stable")[:, :k]
        overlap = (tk[:, :, None] == pk[:, None, :]).any(axis=(1, 2))
        out[f"agree@{k}"] = float(overlap.mean()) if overlap.size else float("nan")
        if lab_idx is not None:
            ok = lab_idx >= 0
            hit = (pk[ok] == lab_idx[ok, None]).any(1)
            out[f"label@{k}"] = float(hit.mean()) if hit.size else float("nan")
    return out


# ----------------------------------------------------------------- evaluation
@dataclass
class RegionalResult:
    """Scores of every method on one region (see module docstring)."""

    table: pd.DataFrame  #: methods x metrics
    n_cells: int
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  #: method -> (m, g) log expression
    truth: np.ndarray | None = None  #: (m, g) measured log expression
    cells: np.ndarray | None = None  #: (m,) indices into the evaluated AnnData

    def to_markdown(self, digits: int = 3) -> str:
        """The table as Markdown (methods x metrics, ``NA`` for missing values)."""
        return table_markdown(self.table, digits=digits)


def table_markdown(table: pd.DataFrame, *, digits: int = 3) -> str:
    """A DataFrame as a Markdown table (no extra dependency); NaN prints as ``NA``."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "NA" if not np.isfinite(v) else f"{v:.{digits}f}"
        return str(v)

    head = "| " + " | ".join([str(table.index.name or "")] + [str(c) for c in table.columns]) + " |"
    sep = "|" + "---|" * (table.shape[1] + 1)
    rows = ["| " + " | ".join([str(i)] + [cell(v) for v in r]) + " |" for i, r in zip(table.index, table.to_numpy())]
    return "\n".join([head, sep, *rows])


def evaluate_region(
    model,
    adata: AnnData,
    *,
    train_adata: AnnData | None = None,
    cell_type_key: str | None = K.CELL_TYPE_KEY,
    classifier: TypingClassifier | None = None,
    ks: Sequence[int] = (1, 2, 3),
    k_nbr: int = 8,
    seed: int = 0,
    n_rounds: int | None = None,
    max_rounds: int | None = None,
    mask_ratio: float | None = None,
    keep_predictions: bool = False,
) -> RegionalResult:
    """Score CIFM and the baselines on every cell of ``adata`` (e.g. the test region).

    Parameters
    ----------
    model
        A trained :class:`~napari_squint.api.cifm.Cifm`.
    adata
        The evaluation region (its own graph; cells outside it are not used).
    train_adata
        The training region: fits the random baselines and the cell-type
        classifier (measured, labelled cells). Required unless ``classifier``
        and no random baselines are wanted... in practice always pass it.
    cell_type_key
        obs column of cell types for the typing accuracy (None to skip).
    classifier
        A fitted :class:`TypingClassifier` (default: fitted on ``train_adata``).
    ks
        The k of top-k typing accuracy.
    k_nbr
        Neighbours of the neighbourhood-average baseline.
    seed
        Seed of the masks and the random baselines.
    n_rounds
        Disjoint masks (default ``ceil(1 / mask_ratio)``: every cell once).
    mask_ratio
        Fraction of the region masked at a time (default: the model's
        training ``mask_ratio``); use the same value to compare models.
    max_rounds
        Evaluate only the first ``max_rounds`` masks (a faster estimate).
    keep_predictions
        Keep the per-method predictions in the result.

    Returns
    -------
    RegionalResult
    """
    if train_adata is None:
        raise ValueError("evaluate_region needs train_adata (fits the baselines and the cell typer)")
    data = model.prepare(adata)
    graph = model.graph_of(data)
    train = model.prepare(train_adata)
    rb = fit_random_baselines(train.x_in)
    ratio = model.config.mask_ratio if mask_ratio is None else float(mask_ratio)
    rounds = disjoint_masks(np.arange(data.n_cells), ratio, seed=seed, n_rounds=n_rounds)
    if max_rounds is not None:
        rounds = rounds[: int(max_rounds)]
    section = data.batch
    rng = np.random.default_rng(seed)
    preds: dict[str, list] = {m: [] for m in ("CIFM", "neighbourhood average", "uniform", "Bernoulli",
                                              "mean profile")}
    cells_all = []
    for group in rounds:
        masked = np.zeros(data.n_cells, dtype=bool)
        masked[group] = True
        preds["CIFM"].append(reconstruct_tiled(model.module, graph, masked, group, model.config, model.device))
        nb = neighbourhood_average(data.coords, data.counts, ~masked, group, k=k_nbr, section=section)
        preds["neighbourhood average"].append(log_normalise(nb))
        preds["uniform"].append(rb.uniform(group.size, rng))
        preds["Bernoulli"].append(rb.bernoulli(group.size, rng))
        preds["mean profile"].append(rb.mean_profile(group.size))
        cells_all.append(group)
    cells = np.concatenate(cells_all)
    truth = data.x_in[cells].toarray().astype(np.float64)
    stacked = {m: np.concatenate(v).astype(np.float64) for m, v in preds.items()}
    labels = None
    if cell_type_key is not None and cell_type_key in adata.obs:
        labels = adata.obs[cell_type_key].to_numpy()[cells]
        if classifier is None:
            classifier = TypingClassifier(train.x_in, train_adata.obs[cell_type_key].to_numpy(), seed=seed)
    rows = {}
    for name, p in stacked.items():
        rec = reconstruction_metrics(truth, p)
        if classifier is not None:
            rec.update(topk_typing(classifier, truth, p, labels=labels, ks=ks))
        rows[name] = rec
    if classifier is not None and labels is not None:  # the typer's own accuracy on measured cells
        rec = {f"label@{k}": topk_typing(classifier, truth, truth, labels=labels, ks=[k])[f"label@{k}"]
               for k in ks}
        rows["measured (typer ceiling)"] = rec
    table = pd.DataFrame(rows).T
    return RegionalResult(table=table, n_cells=int(cells.size),
                          predictions=stacked if keep_predictions else {},
                          truth=truth if keep_predictions else None, cells=cells)


def iter_train_with_validation(
    model,
    val_adata: AnnData,
    *,
    epochs: int,
    val_every: int = 1,
    max_rounds: int = 2,
    seed: int = 0,
    restore_best: bool = True,
):
    """Train ``model`` and track its masked-reconstruction loss on a validation region.

    A generator of :class:`ProgressEvent` (``"validation"`` events carry
    ``metrics={"val_loss": ...}``). The validation loss (balanced MSE under
    ``max_rounds`` of the disjoint masks, the same masks every time) is
    recorded in ``model.history`` as ``val_loss``; with ``restore_best`` the
    weights of the best epoch are put back at the end.

    Returns
    -------
    dict
        ``best_epoch``, ``best_val_loss``, ``val_losses``.
    """
    from napari_squint.models.cifm_infer import masked_loss

    val = model.prepare(val_adata)
    graph = model.graph_of(val)
    cells = np.arange(val.n_cells)

    def vloss() -> float:
        rounds = disjoint_masks(cells, model.config.mask_ratio, seed=seed)
        sub = np.concatenate(rounds[:max_rounds])
        return masked_loss(model.module, graph, sub, model.config, model.device, seed=seed,
                           n_rounds=min(max_rounds, len(rounds)))

    best = (np.inf, 0, None)
    losses = []
    n_done = 0
    for ev in model.iter_train(epochs=int(epochs)):
        yield ev
        if ev.stage != "epoch":
            continue
        n_done += 1
        if n_done % val_every == 0 or n_done == int(epochs):
            v = vloss()
            model.module.train()
            losses.append((len(model.history), v))
            model.history[-1]["val_loss"] = v
            yield ProgressEvent("validation", epoch=len(model.history), n_epochs=int(epochs),
                                metrics={"val_loss": v}, message=f"validation loss {v:.4f}")
            if v < best[0]:
                state = {k: t.detach().clone() for k, t in model.module.state_dict().items()}
                best = (v, len(model.history), state)
    if restore_best and best[2] is not None:
        model.module.load_state_dict(best[2])
    model.meta["best_epoch"] = best[1]
    model.meta["best_val_loss"] = best[0]
    return {"best_epoch": best[1], "best_val_loss": best[0], "val_losses": losses}


def train_with_validation(model, val_adata: AnnData, *, epochs: int,
                          callback: Callable[[ProgressEvent], None] | None = None, **kwargs) -> dict:
    """Drive :func:`iter_train_with_validation`; returns its summary (None if cancelled)."""
    result, _ = drive(iter_train_with_validation(model, val_adata, epochs=epochs, **kwargs), callback=callback)
    return result
