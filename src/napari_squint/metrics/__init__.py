"""Imputation metrics and baselines shared by the benchmark, the CLI and the plugin.

* :mod:`~napari_squint.metrics.normalise` - the comparison scale (log1p of
  counts per 10,000).
* :mod:`~napari_squint.metrics.correlation` - point-wise Pearson correlation,
  per cell (the paper's PC) and per gene.
* :mod:`~napari_squint.metrics.distribution` - MMD and energy distance in a
  PCA of training cells.
* :mod:`~napari_squint.metrics.baselines` - mean profile, neighbourhood
  average, ring infill, and microenvironment (``X_nbr``) helpers.
* :mod:`~napari_squint.metrics.tokens` - masked-token accuracy (top-k) and
  its nearest-observed-cells baseline.
* :mod:`~napari_squint.metrics.evaluate` - one call that scores a method,
  plus summaries over seeds and Markdown tables.

See ``docs/metrics.md`` for the reasoning behind every choice. Importing this
package is cheap: scanpy and scikit-learn are imported when first used.
"""

from __future__ import annotations

from napari_squint.metrics.baselines import (
    knn_index,
    mean_profile,
    microenvironment,
    nbr_profile,
    neighbourhood_average,
    ring_infill,
)
from napari_squint.metrics.correlation import pearson_per_cell, pearson_per_gene
from napari_squint.metrics.distribution import (
    DEFAULT_BANDWIDTH_MULTIPLES,
    energy_distance,
    fit_pca,
    median_bandwidths,
    mmd,
    subsample,
)
from napari_squint.metrics.evaluate import (
    METRICS,
    evaluate_imputation,
    reference_pca,
    summarise,
    to_markdown,
)
from napari_squint.metrics.normalise import log_normalise
from napari_squint.metrics.tokens import neighbour_token_ranking, token_accuracy

__all__ = [
    "DEFAULT_BANDWIDTH_MULTIPLES",
    "METRICS",
    "energy_distance",
    "evaluate_imputation",
    "fit_pca",
    "knn_index",
    "log_normalise",
    "mean_profile",
    "median_bandwidths",
    "microenvironment",
    "mmd",
    "nbr_profile",
    "neighbour_token_ranking",
    "neighbourhood_average",
    "pearson_per_cell",
    "pearson_per_gene",
    "reference_pca",
    "ring_infill",
    "subsample",
    "summarise",
    "to_markdown",
    "token_accuracy",
]
