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

__all__ = ["expected_log1p", "log_space_counts", "moment_matched_theta", "mixture_moments"]

#: means above this use the second-order expansion (the log is nearly linear over the distribution there)
_EXACT_MAX_MEAN = 400.0
#: largest count summed exactly (the tail beyond it, when any, is taken at the mean)
_MAX_COUNT = 4000


def mixture_moments(weights: np.ndarray, means: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of a mixture of negative binomials.

    Parameters
    ----------
    weights
        ``(m, k)`` mixture weights, rows summing to 1.
    means
        ``(m, k, g)`` component means.
    theta
        ``(g,)`` inverse dispersions (variance ``mu + mu^2 / theta``).

    Returns
    -------
    (mean, var), each ``(m, g)``.
    """
    w = np.asarray(weights, dtype=np.float64)[..., None]
    mu = np.asarray(means, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64)
    m1 = (w * mu).sum(1)
    m2 = (w * (mu + mu * mu / theta + mu * mu)).sum(1)
    return m1, np.maximum(m2 - m1 * m1, 0.0)


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


def expected_log1p(mean, theta, scale, offset=0.0) -> np.ndarray:
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

    Returns
    -------
    float64 array of ``mean``'s shape.

    Notes
    -----
    For ``mean <= 400`` the expectation is a sum over counts ``0..K``, with
    ``K`` the mean plus eight standard deviations (at most 4,000) for each
    element, the probabilities from the recursion
    ``p(k + 1) = p(k) (k + theta) / (k + 1) * mean / (mean + theta)``; mass
    beyond ``K`` is taken at the mean. Above, the second-order expansion
    ``log1p(a) - s^2 var / (2 (1 + a)^2)`` with ``a = scale * (offset + mean)``
    is used. ``mean = 0`` gives ``log1p(scale * offset)`` exactly.
    """
    mean = np.maximum(np.asarray(mean, dtype=np.float64), 0.0)
    shape = mean.shape
    theta = np.broadcast_to(np.asarray(theta, dtype=np.float64), shape)
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), shape)
    offset = np.broadcast_to(np.asarray(offset, dtype=np.float64), shape)
    var = mean + mean * mean / theta
    a = scale * (offset + mean)
    out = np.log1p(a) - scale * scale * var / (2.0 * (1.0 + a) ** 2)
    exact = np.flatnonzero((mean <= _EXACT_MAX_MEAN).ravel())
    if exact.size == 0:
        return out
    mu, th = mean.ravel()[exact], theta.ravel()[exact]
    sc, off = scale.ravel()[exact], offset.ravel()[exact]
    kmax = np.minimum(np.ceil(mu + 8.0 * np.sqrt(var.ravel()[exact])) + 5, _MAX_COUNT).astype(np.int64)
    order = np.argsort(-kmax, kind="stable")  # the elements still summed at count k form a prefix
    mu, th, sc, off, kmax = mu[order], th[order], sc[order], off[order], kmax[order]
    n_active = np.searchsorted(-kmax, -np.arange(int(kmax[0]) + 1), side="right")  # #elements with kmax >= k
    ratio = mu / (mu + th)
    p = np.exp(th * (np.log(th) - np.log(th + mu)))  # P(Y = 0)
    acc = p * np.log1p(sc * off)
    mass = p.copy()
    for k in range(int(kmax[0])):
        na = n_active[k + 1]
        if na == 0:
            break
        p = p[:na] * ((k + th[:na]) / (k + 1.0)) * ratio[:na]
        acc[:na] += p * np.log1p(sc[:na] * (off[:na] + k + 1.0))
        mass[:na] += p
    acc += np.clip(1.0 - mass, 0.0, None) * np.log1p(sc * (off + mu))
    flat = out.ravel()
    flat[exact[order]] = acc
    return flat.reshape(shape)


def log_space_counts(mean, theta, library, offset=0.0, *, target_sum: float = 1e4) -> np.ndarray:
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
    target_sum
        The normalisation total (10,000, as everywhere in this package).

    Returns
    -------
    ``(m, g)`` non-negative float64 counts ``expm1(E[log1p(s (offset + Y))]) / s``
    with ``s = target_sum / library``.
    """
    library = np.asarray(library, dtype=np.float64).reshape(-1, 1)
    if np.any(library <= 0):
        raise ValueError("library must be positive for every row")
    s = target_sum / library
    return np.maximum(np.expm1(expected_log1p(mean, theta, s, offset)) / s, 0.0)
