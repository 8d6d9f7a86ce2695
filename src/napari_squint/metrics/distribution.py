"""Distribution-level distances between measured and imputed populations.

Pearson correlation scores each held-out cell against itself; the functions
here ask a different question: does the *population* of imputed profiles look
like the population of measured ones? Both distances are computed in a PCA
space fitted on training cells (:func:`fit_pca`), as in the SQuINT paper
(section 5.1), which follows the flow-matching baseline it compares with.

Both are V-statistics (every pair, including a point with itself), so the
distance between a set and itself is exactly 0 and never negative.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial.distance import cdist, pdist

__all__ = [
    "DEFAULT_BANDWIDTH_MULTIPLES",
    "energy_distance",
    "fit_pca",
    "median_bandwidths",
    "mmd",
    "subsample",
]

#: Multiples of the median pairwise distance used as Gaussian bandwidths: a
#: geometric grid spanning 16x, centred on the median heuristic, so the score
#: is sensitive both to local structure and to shifts of the whole population.
DEFAULT_BANDWIDTH_MULTIPLES: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)


def _as_points(name: str, value) -> np.ndarray:
    """Return ``value`` as a dense 2-D float64 ``(n_points, n_dims)`` array."""
    value = value.toarray() if sp.issparse(value) else np.asarray(value)
    value = value.astype(np.float64, copy=False)
    if value.ndim == 1:
        value = value[:, None]
    if value.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (points, dims) array, got shape {value.shape}")
    if value.shape[0] == 0:
        raise ValueError(f"{name} is empty; at least one point is needed")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return value


def _as_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_points("x", x), _as_points("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same number of dims, got {x.shape[1]} and {y.shape[1]}"
        )
    return x, y


def subsample(x, max_n: int | None, seed: int = 0):
    """Return at most ``max_n`` rows of ``x``, chosen without replacement.

    Parameters
    ----------
    x
        ``(n, d)`` array (dense or SciPy sparse).
    max_n
        Largest number of rows kept; ``None`` keeps every row.
    seed
        Seed of a fresh :func:`numpy.random.default_rng`. Each call starts
        its own generator, so two sets with the same number of rows get the
        *same* row indices: subsampling two identical sets keeps them
        identical, and subsampling a paired prediction and truth keeps the
        pairs together.

    Returns
    -------
    array
        ``x`` itself when it has at most ``max_n`` rows, otherwise the chosen
        rows in their original order.
    """
    if max_n is None or x.shape[0] <= max_n:
        return x
    if max_n < 1:
        raise ValueError(f"max_n must be at least 1, got {max_n!r}")
    idx = np.sort(np.random.default_rng(seed).choice(x.shape[0], size=max_n, replace=False))
    return x[idx]


def fit_pca(train_profiles, n_components: int = 50, seed: int = 0, *, max_n: int | None = 50_000):
    """Fit the PCA in which MMD and energy distance are measured.

    Parameters
    ----------
    train_profiles
        ``(n_train, n_genes)`` log-normalised profiles of *training* cells
        (:func:`~napari_squint.metrics.log_normalise`). Fitting on training
        cells only means held-out cells, and the method being scored, cannot
        shape the space they are compared in; fitting once lets every method
        be scored in the same space.
    n_components
        Requested dimensionality, 50 by default (the usual single-cell
        choice). Clipped to ``min(n_train, n_genes)``, the most the data
        allows.
    seed
        Seeds the row subsample (``max_n``) and the randomised SVD solver.
    max_n
        Fit on at most this many training rows (seeded subsample); ``None``
        uses all of them. 50,000 cells determine 50 components well and keep
        the fit to seconds on large slides.

    Returns
    -------
    sklearn.decomposition.PCA
        The fitted model; use ``pca.transform(profiles)``.

    Raises
    ------
    ValueError
        If fewer than two training rows are given or ``n_components < 1``.

    Notes
    -----
    Genes are centred (PCA does that) but not scaled to unit variance:
    ``log1p`` already tames the dynamic range, and unit scaling would give
    genes detected in a few cells the same weight as the main axes of
    variation.
    """
    from sklearn.decomposition import PCA

    if n_components < 1:
        raise ValueError(f"n_components must be at least 1, got {n_components!r}")
    x = subsample(train_profiles, max_n, seed)
    x = x.toarray() if sp.issparse(x) else np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(
            f"train_profiles must be a 2-D array with at least 2 rows, got shape {x.shape}"
        )
    k = int(min(n_components, x.shape[0], x.shape[1]))
    return PCA(n_components=k, random_state=seed).fit(x)


def median_bandwidths(
    points,
    *,
    multiples=DEFAULT_BANDWIDTH_MULTIPLES,
    seed: int = 0,
    max_n: int | None = 2000,
) -> np.ndarray:
    """Gaussian bandwidths as multiples of the median pairwise distance.

    Parameters
    ----------
    points
        ``(n, d)`` points whose scale sets the kernel (for :func:`mmd`'s
        default, the pooled sample).
    multiples
        Multiples of the median Euclidean distance between distinct points.
    seed, max_n
        Seeded subsample of ``points`` (see :func:`subsample`).

    Returns
    -------
    numpy.ndarray
        ``(len(multiples),)`` bandwidths ``sigma``. If the median distance is
        0 (all points identical, or fewer than two), it is replaced by 1: every
        kernel value is then 1 whatever ``sigma`` is, so the choice cannot
        change a result.
    """
    x = subsample(_as_points("points", points), max_n, seed)
    med = float(np.median(pdist(x))) if x.shape[0] > 1 else 0.0
    if not med > 0:
        med = 1.0
    return med * np.asarray(multiples, dtype=np.float64)


def mmd(x, y, *, bandwidths=None, seed: int = 0, max_n: int | None = 2000) -> float:
    """Squared maximum mean discrepancy, Gaussian kernel, averaged over bandwidths.

    ``MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y)`` with
    ``k(a, b) = exp(-||a - b||^2 / (2 sigma^2))``, averaged over ``sigma`` in
    ``bandwidths``.

    Parameters
    ----------
    x, y
        ``(n_x, d)`` and ``(n_y, d)`` samples (e.g. imputed and measured
        profiles in PCA space). A 1-D array is read as ``n`` points in 1-D.
    bandwidths
        Gaussian widths ``sigma`` in the units of ``x``. ``None`` (default):
        :data:`DEFAULT_BANDWIDTH_MULTIPLES` times the median pairwise distance
        of the pooled (subsampled) sample, which makes the score independent
        of the scale of the space. Pass fixed bandwidths to score several
        methods with the same kernels.
    seed
        Seed of the subsampling (see :func:`subsample`); the same seed gives
        the same value.
    max_n
        Each set is subsampled to at most this many points, which bounds the
        cost at ``O(max_n^2 d)`` time and three ``max_n x max_n`` matrices;
        ``None`` uses every point.

    Returns
    -------
    float
        Mean over bandwidths of the biased MMD^2, each clipped at 0; exactly
        0 for identical sets.

    Notes
    -----
    The biased V-statistic is used rather than the unbiased U-statistic: it
    is the squared RKHS distance between the two empirical mean embeddings,
    hence never negative and exactly 0 when the sets coincide (the
    U-statistic fluctuates around 0 and can be negative). Clipping only
    removes rounding below 0. This matches the multi-bandwidth Gaussian MMD
    of CellOT (Bunne et al., 2023), which the paper cites, except that the
    bandwidths follow the median heuristic instead of fixed values tied to
    one feature scale.
    """
    x, y = _as_pair(x, y)
    x, y = subsample(x, max_n, seed), subsample(y, max_n, seed)
    if bandwidths is None:
        bandwidths = median_bandwidths(np.vstack([x, y]), seed=seed, max_n=None)
    sigmas = np.atleast_1d(np.asarray(bandwidths, dtype=np.float64))
    if sigmas.size == 0 or not np.all(sigmas > 0) or not np.all(np.isfinite(sigmas)):
        raise ValueError(f"bandwidths must be positive finite numbers, got {bandwidths!r}")
    dxx = cdist(x, x, "sqeuclidean")
    dyy = cdist(y, y, "sqeuclidean")
    dxy = cdist(x, y, "sqeuclidean")
    values = []
    for sigma in sigmas:
        gamma = 1.0 / (2.0 * sigma**2)
        kxx = np.exp(-gamma * dxx).mean()
        kyy = np.exp(-gamma * dyy).mean()
        kxy = np.exp(-gamma * dxy).mean()
        values.append(max(kxx + kyy - 2.0 * kxy, 0.0))
    return float(np.mean(values))


def energy_distance(x, y, *, seed: int = 0, max_n: int | None = 2000) -> float:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|``.

    Parameters
    ----------
    x, y
        ``(n_x, d)`` and ``(n_y, d)`` samples. A 1-D array is read as ``n``
        points in 1-D.
    seed, max_n
        Seeded subsample of each set to at most ``max_n`` points, as in
        :func:`mmd`.

    Returns
    -------
    float
        The V-statistic (means over all pairs, a point with itself included),
        clipped at 0 against rounding: symmetric, exactly 0 for identical
        sets, and 0 only when the two empirical distributions are equal.

    Notes
    -----
    Distances are Euclidean, as in Székely and Rizzo's definition, which
    characterises equality of distributions. Some single-cell
    implementations (e.g. versions of pertpy's ``Edistance``, which the
    paper cites through Heumos et al., 2024) use *squared* Euclidean
    distances, which reduce the statistic to twice the squared distance
    between the two means. The result is in the units of ``x`` (not
    squared).
    """
    x, y = _as_pair(x, y)
    x, y = subsample(x, max_n, seed), subsample(y, max_n, seed)
    exy = cdist(x, y).mean()
    exx = cdist(x, x).mean()
    eyy = cdist(y, y).mean()
    return float(max(2.0 * exy - exx - eyy, 0.0))
