"""Point estimates of imputed counts in the space every analysis uses: log-normalised expression.

An imputation model gives, for each cell and gene, a *distribution* of counts
(SQuINT: a mixture over tokens of negative binomials). Its mean, the expected
count, is the natural estimate in count space, but analyses (scanpy's
``normalize_total`` + ``log1p``, and every imputation metric of this package)
read ``y = log1p(10,000 * count / library)``. By Jensen's inequality
``log1p(E[count]) > E[log1p(count)]``, and with shallow panels the gap is
large: a gene with mean 0.3 counts in a 260-count MERFISH cell has expected
counts that log-normalise to 2.5, while the measured cells it stands for read 0
(three times in four) or 3.7. Expected counts are therefore biased upwards
for every lowly expressed gene once log-normalised.

:func:`expected_log1p` computes ``E[log1p(scale * (offset + Y))]`` for negative
binomial ``Y`` (exactly, by summing the probability mass function, for small
means; by a second-order expansion for large ones), and
:func:`log_space_counts` turns it back into counts: ``expm1(E[y]) / scale``,
the counts whose log-normalised value is the model's expected log-normalised
expression (the Bayes estimate under squared error on that scale). A mixture
is first matched to one negative binomial by its mean and variance
(:func:`moment_matched_theta`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["expected_log1p", "log_space_counts", "log_space_counts_from_moments", "moment_matched_theta"]

#: means above this use the second-order expansion (the log is nearly linear over the distribution there)
_EXACT_MAX_MEAN = 400.0
#: largest count summed exactly (the tail beyond it, when any, is taken at the mean)
_MAX_COUNT = 4000


def moment_matched_theta(mean: np.ndarray, var: np.ndarray, *, max_theta: float = 1e6) -> np.ndarray:
    """Inverse dispersion of the negative binomial with the given mean and variance.

    ``var <= mean`` (no over-dispersion) gives ``max_theta`` (practically Poisson).
    """
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    excess = var - mean
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = np.where(excess > 1e-9 * np.maximum(mean, 1.0), mean * mean / excess, max_theta)
    return np.clip(theta, 1e-6, max_theta)


def expected_log1p(mean, theta, scale, offset=0.0, *, tol: float = 1e-2) -> np.ndarray:
    """``E[log1p(scale * (offset + Y))]`` for ``Y ~ NB(mean, theta)``, elementwise.

    Parameters
    ----------
    mean
        Means of ``Y`` (>= 0), any shape.
    theta
        Inverse dispersions, broadcastable to ``mean`` (``(g,)`` for ``(m, g)``).
    scale
        Broadcastable to ``mean``: usually ``10,000 / library`` as ``(m, 1)``.
    offset
        Broadcastable to ``mean``: a known part added to ``Y`` (measured
        counts of the observed members of a microenvironment).
    tol
        Probability mass left unsummed; it is placed at the tail's own mean.

    Returns
    -------
    float64 array of ``mean``'s shape.

    Notes
    -----
    For ``mean <= 400`` the expectation is a sum over counts ``k = 0, 1, ...``
    with the probabilities from the recursion
    ``p(k + 1) = p(k) (k + theta) / (k + 1) * mean / (mean + theta)``, until
    the mass left is below ``tol`` or ``k`` passes the mean plus eight
    standard deviations (at most 4,000); mass left over is taken at the
    tail's mean (exact first moment). Beyond 16 counts the terms are grouped
    in blocks of ``1 + k // 8`` counts, each evaluated at its mean count (the
    log barely bends over a block there; error below 1e-3 in tests). Above,
    the second-order expansion ``log1p(a) - s^2 var / (2 (1 + a)^2)`` with
    ``a = scale * (offset + mean)`` is used. ``mean = 0`` gives
    ``log1p(scale * offset)`` exactly. The loop is compiled with numba (a
    dependency of scanpy): a 5,000 x 135 table takes tens of milliseconds.
    """
    mean = np.maximum(np.asarray(mean, dtype=np.float64), 0.0)
    shape = mean.shape
    m2 = mean.reshape(1, -1) if mean.ndim != 2 else mean
    rows, cols = m2.shape
    theta = np.ascontiguousarray(np.broadcast_to(np.asarray(theta, dtype=np.float64), shape).reshape(rows, cols))
    scale_full = np.broadcast_to(np.asarray(scale, dtype=np.float64), shape).reshape(rows, cols)
    offset = np.ascontiguousarray(np.broadcast_to(np.asarray(offset, dtype=np.float64), shape).reshape(rows, cols))
    if cols and not np.all(scale_full == scale_full[:, :1]):  # one scale per element: one row per element
        out = _expected_log1p_rows(np.ascontiguousarray(m2).reshape(-1, 1), theta.reshape(-1, 1),
                                   np.ascontiguousarray(scale_full).reshape(-1), offset.reshape(-1, 1),
                                   _EXACT_MAX_MEAN, _MAX_COUNT, tol)
    else:
        row_scale = np.ascontiguousarray(scale_full[:, 0]) if cols else np.zeros(rows)
        out = _expected_log1p_rows(np.ascontiguousarray(m2), theta, row_scale, offset,
                                   _EXACT_MAX_MEAN, _MAX_COUNT, tol)
    return out.reshape(shape)


#: counts summed one by one before blocks start (their logs come from a per-row table when offsets are whole)
_EXACT_COUNTS = 16


def _expected_log1p_rows_py(mu, th, sc, off, exact_max, max_count, tol):  # pragma: no cover - compiled below
    rows, cols = mu.shape
    out = np.empty((rows, cols))
    for r in prange(rows):
        s = sc[r]
        top = 0.0
        for g in range(cols):
            if off[r, g] > top:
                top = off[r, g]
        table = np.empty(int(min(top, 100000.0)) + _EXACT_COUNTS + 1)
        for j in range(table.size):
            table[j] = np.log1p(s * j)
        for g in range(cols):
            m, t, o = mu[r, g], th[r, g], off[r, g]
            whole = o == np.floor(o) and o + _EXACT_COUNTS < table.size
            oi = int(o) if whole else 0
            var = m + m * m / t
            if m > exact_max:
                a = s * (o + m)
                out[r, g] = np.log1p(a) - s * s * var / (2.0 * (1.0 + a) ** 2)
                continue
            kmax = min(int(np.ceil(m + 8.0 * np.sqrt(var))) + 5, max_count)
            ratio = m / (m + t)
            p = np.exp(t * (np.log(t) - np.log(t + m)))
            acc = p * (table[oi] if whole else np.log1p(s * o))
            mass = p
            first = 0.0
            k = 0
            block_p = 0.0  # beyond _EXACT_COUNTS the counts are summed in blocks of 1 + k // 8, each at its mean
            block_k = 0.0  # count: the log is flat enough there, and it is evaluated once a block
            width = 0
            while k < kmax and 1.0 - mass - block_p > tol:
                p = p * ((k + t) / (k + 1.0)) * ratio
                k += 1
                if k <= _EXACT_COUNTS:
                    acc += p * (table[oi + k] if whole else np.log1p(s * (o + k)))
                    mass += p
                    first += p * k
                else:
                    block_p += p
                    block_k += p * k
                    width += 1
                    if width >= 1 + k // 8:
                        acc += block_p * np.log1p(s * (o + block_k / block_p))
                        mass += block_p
                        first += block_k
                        block_p, block_k, width = 0.0, 0.0, 0
            if block_p > 0.0:
                acc += block_p * np.log1p(s * (o + block_k / block_p))
                mass += block_p
                first += block_k
            rest = 1.0 - mass
            if rest > 0.0:  # the tail beyond k, at its own mean (the log is nearly flat out there)
                tail_mean = max((m - first) / rest, k + 1.0)
                acc += rest * np.log1p(s * (o + tail_mean))
            out[r, g] = acc
    return out


try:  # numba comes with scanpy; without it the same loop runs in Python (slow, but right)
    from numba import njit, prange

    _expected_log1p_rows = njit(cache=True, nogil=True, parallel=True)(_expected_log1p_rows_py)
except ImportError:  # pragma: no cover
    prange = range
    _expected_log1p_rows = _expected_log1p_rows_py


def log_space_counts(mean, theta, library, offset=0.0, *, shift=None, target_sum: float = 1e4) -> np.ndarray:
    """Counts whose log-normalised value is the expected log-normalised value of ``offset + Y``.

    Parameters
    ----------
    mean, theta
        Negative binomial of the unknown part ``Y`` (see :func:`expected_log1p`).
    library
        ``(m,)`` total counts the row is normalised by (the estimated library
        of the cell or microenvironment).
    offset
        ``(m, g)`` known counts (default 0).
    shift
        Optional ``(m, g)`` (or broadcastable) amount added to the expected
        log-normalised value before it is turned back into counts (a
        correction on that scale, e.g. :mod:`napari_squint.tasks.residual`);
        the result never falls below ``offset``.
    target_sum
        The normalisation total (10,000, as everywhere in this package).

    Returns
    -------
    ``(m, g)`` non-negative float64 counts ``expm1(E[log1p(s (offset + Y))] + shift) / s``
    with ``s = target_sum / library``.
    """
    library = np.asarray(library, dtype=np.float64).reshape(-1, 1)
    if np.any(~(library > 0)):
        bad = np.flatnonzero(~(library.ravel() > 0))
        raise ValueError(f"library must be positive for every row: {bad.size} rows are not (row {int(bad[0])}: "
                         f"{library.ravel()[bad[0]]:g})")
    s = target_sum / library
    y = expected_log1p(mean, theta, s, offset)
    if shift is not None:
        y += shift
    np.expm1(y, out=y)
    y /= s
    return np.maximum(y, offset)


def log_space_counts_from_moments(mean, var, library, *, shift=None) -> np.ndarray:
    """:func:`log_space_counts` for a count distribution known by its mean and variance (``(m, g)`` each): a
    token mixture of negative binomials, matched to one negative binomial per gene
    (:func:`moment_matched_theta`)."""
    return log_space_counts(mean, moment_matched_theta(mean, var), library, shift=shift)
