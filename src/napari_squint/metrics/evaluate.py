"""Score an imputation against held-out truth, and tabulate scores over seeds.

One entry point for the benchmark, the CLI and the napari plugin, so every
number the project reports is computed the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from napari_squint.metrics.correlation import pearson_per_cell, pearson_per_gene
from napari_squint.metrics.distribution import (
    energy_distance,
    fit_pca,
    median_bandwidths,
    mmd,
    subsample,
)
from napari_squint.metrics.normalise import log_normalise

__all__ = ["METRICS", "evaluate_imputation", "reference_pca", "summarise", "to_markdown"]

#: Metric keys returned by :func:`evaluate_imputation`, in table order.
METRICS: tuple[str, ...] = ("pc_cell", "pc_gene", "mmd", "energy")

_LABELS = {"pc_cell": "PC cell ↑", "pc_gene": "PC gene ↑", "mmd": "MMD ↓", "energy": "E ↓"}


def reference_pca(
    train_counts, *, n_components: int = 50, seed: int = 0, max_n: int | None = 50_000
):
    """Fit, once, the PCA in which every method's MMD and energy are measured.

    Parameters
    ----------
    train_counts
        ``(n_train, n_genes)`` counts of the training cells (dense or
        sparse). A seeded subsample of at most ``max_n`` rows is drawn
        *before* normalising (normalisation is per row, so this changes
        nothing but the cost) and log-normalised.
    n_components, seed
        Passed to :func:`~napari_squint.metrics.fit_pca`.
    max_n
        Largest number of training rows used; ``None`` uses all.

    Returns
    -------
    sklearn.decomposition.PCA
        Pass it as ``pca=`` to :func:`evaluate_imputation` for every method.
    """
    x = log_normalise(subsample(train_counts, max_n, seed))
    return fit_pca(x, n_components=n_components, seed=seed, max_n=None)


def evaluate_imputation(
    true_counts,
    pred_counts,
    *,
    train_counts=None,
    pca=None,
    seed: int = 0,
    max_n: int | None = 2000,
) -> dict[str, float]:
    """Compare imputed with measured profiles of the held-out cells.

    Both inputs are log-normalised (:func:`~napari_squint.metrics.log_normalise`,
    10,000 per row); rows may be cells (``X``) or microenvironments
    (``X_nbr``).

    Parameters
    ----------
    true_counts
        ``(n_test, n_genes)`` measured counts of the held-out cells.
    pred_counts
        ``(n_test, n_genes)`` imputed counts, same rows and genes.
    train_counts
        ``(n_train, n_genes)`` training counts, used to fit the PCA when
        ``pca`` is not given (see :func:`reference_pca`).
    pca
        A PCA fitted by :func:`reference_pca`. Fit it once and pass it for
        every method and seed so all are measured in the same space.
    seed
        Seed of the subsampling inside MMD and energy distance (and of the
        PCA fit when ``pca`` is None).
    max_n
        Largest number of cells per set used by MMD and energy distance.

    Returns
    -------
    dict
        ``pc_cell`` (:func:`~napari_squint.metrics.pearson_per_cell`, the
        paper's PC), ``pc_gene``
        (:func:`~napari_squint.metrics.pearson_per_gene`), ``mmd``
        (:func:`~napari_squint.metrics.mmd`) and ``energy``
        (:func:`~napari_squint.metrics.energy_distance`), all floats.

    Raises
    ------
    ValueError
        If shapes disagree, or neither ``train_counts`` nor ``pca`` is given.

    Notes
    -----
    MMD bandwidths are the default multiples of the median pairwise distance
    of the *measured* cells in PCA space, not of the pooled sample: the
    kernels then depend only on the truth and the seed, so every method is
    scored with the same kernels. The prediction is the first argument of
    the distances and the truth the second.
    """
    true_l = log_normalise(true_counts)
    pred_l = log_normalise(pred_counts)
    if true_l.shape != pred_l.shape:
        raise ValueError(
            f"true_counts and pred_counts differ in shape: {true_l.shape} vs {pred_l.shape}"
        )
    if pca is None:
        if train_counts is None:
            raise ValueError("pass train_counts (to fit the PCA) or a fitted pca")
        pca = reference_pca(train_counts, seed=seed)
    if getattr(pca, "n_features_in_", true_l.shape[1]) != true_l.shape[1]:
        raise ValueError(
            f"pca was fitted on {pca.n_features_in_} genes, the profiles have {true_l.shape[1]}"
        )
    z_true = pca.transform(true_l)
    z_pred = pca.transform(pred_l)
    bandwidths = median_bandwidths(z_true, seed=seed, max_n=max_n)
    return {
        "pc_cell": pearson_per_cell(true_l, pred_l),
        "pc_gene": pearson_per_gene(true_l, pred_l),
        "mmd": mmd(z_pred, z_true, bandwidths=bandwidths, seed=seed, max_n=max_n),
        "energy": energy_distance(z_pred, z_true, seed=seed, max_n=max_n),
    }


def summarise(results: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of each metric over repeated runs (seeds).

    Parameters
    ----------
    results
        One :func:`evaluate_imputation` dict per seed.

    Returns
    -------
    dict
        ``{metric: {"mean": ..., "sd": ..., "n": ...}}`` for every metric
        found in any run (runs lacking it are skipped for that metric). ``sd``
        is the sample standard deviation (``ddof=1``), NaN for a single run;
        a NaN score in any run (a metric that does not apply) makes the mean
        NaN, so it shows as "NA" rather than being averaged away.
    """
    keys: list[str] = []
    for run in results:
        keys += [key for key in run if key not in keys]
    out = {}
    for key in keys:
        try:
            values = np.array([float(run[key]) for run in results if key in run])
        except (TypeError, ValueError) as err:
            raise ValueError(f"metric {key!r} holds a non-numeric value") from err
        sd = float(values.std(ddof=1)) if values.size > 1 else float("nan")
        out[key] = {"mean": float(values.mean()), "sd": sd, "n": int(values.size)}
    return out


def _cell(value, digits: int) -> str:
    if isinstance(value, Mapping):
        mean, sd = float(value.get("mean", float("nan"))), float(value.get("sd", float("nan")))
    else:
        mean, sd = float(value), float("nan")
    if math.isnan(mean):
        return "NA"
    return f"{mean:.{digits}f}" if math.isnan(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def to_markdown(table: Mapping[str, Mapping], *, digits: int = 3) -> str:
    """A methods x metrics Markdown table of ``mean ± sd``.

    Parameters
    ----------
    table
        ``{method: summary}`` where ``summary`` is a :func:`summarise` result
        (``{metric: {"mean", "sd"}}``) or a plain ``{metric: value}`` dict.
    digits
        Decimals shown.

    Returns
    -------
    str
        GitHub-flavoured Markdown. Known metrics come first in
        :data:`METRICS` order with arrows for the better direction; a NaN
        mean, or a metric a method lacks, shows as "NA" (as in the paper); a
        NaN sd (single run) shows the mean alone.
    """
    seen: list[str] = []
    for summary in table.values():
        seen += [key for key in summary if key not in seen]
    cols = [m for m in METRICS if m in seen] + [m for m in seen if m not in METRICS]
    lines = [
        "| method | " + " | ".join(_LABELS.get(c, c) for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for method, summary in table.items():
        cells = [_cell(summary[c], digits) if c in summary else "NA" for c in cols]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
