"""Negative-binomial log-likelihood (mean / inverse-dispersion parameterisation)."""

from __future__ import annotations

import numpy as np
import torch


def nb_log_likelihood(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    r"""Element-wise :math:`\log \mathrm{NB}(x; \mu, \theta)`.

    .. math::
        \log\Gamma(x+\theta) - \log\Gamma(\theta) - \log\Gamma(x+1)
        + \theta \log\frac{\theta}{\theta+\mu} + x \log\frac{\mu}{\theta+\mu}

    Parameters
    ----------
    x
        (B, g) observed counts.
    mu
        (B, g) positive means.
    theta
        (g,) or (B, g) positive inverse dispersions.
    """
    log_theta_mu = torch.log(theta + mu + eps)
    return (
        theta * (torch.log(theta + eps) - log_theta_mu)
        + x * (torch.log(mu + eps) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )


def nb_nll_mean(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, log_x_factorial: torch.Tensor,
                eps: float = 1e-8) -> torch.Tensor:
    r"""Mean negative log-likelihood ``-nb_log_likelihood(x, mu, theta).mean()`` with the data's constant
    :math:`\sum_g \log\Gamma(x_{bg}+1)` given per row (``log_x_factorial``, (B,)), computed once per slide
    (:class:`napari_squint.data.batch.SlideTensors`) instead of a (B, g) ``lgamma`` at every step. Same value
    up to float rounding and the same gradients (the constant has none).
    """
    log_theta_mu = torch.log(theta + mu + eps)
    ll = (theta * (torch.log(theta + eps) - log_theta_mu) + x * (torch.log(mu + eps) - log_theta_mu)
          + torch.lgamma(x + theta) - torch.lgamma(theta))
    return -(ll.sum() - log_x_factorial.sum()) / x.numel()


def log_factorial_rows(X) -> np.ndarray:
    r"""Per-row sums of :math:`\log\Gamma(x + 1)` of a sparse (CSR) or dense count matrix: (n,) float64."""
    import scipy.sparse as sp
    from scipy.special import gammaln

    if sp.issparse(X):
        X = sp.csr_matrix(X)
        vals = gammaln(X.data.astype(np.float64) + 1.0)
        return np.add.reduceat(np.append(vals, 0.0), X.indptr[:-1])[: X.shape[0]] * (np.diff(X.indptr) > 0)
    return gammaln(np.asarray(X, dtype=np.float64) + 1.0).sum(1)


def sample_nb(mean, theta, rng: np.random.Generator) -> np.ndarray:
    """Negative-binomial counts (float64) with means ``mean`` (m, g) and inverse dispersions ``theta`` (g,)
    or (m, g): generated counts for imputation."""
    theta = np.asarray(theta, dtype=np.float64)
    return rng.negative_binomial(theta, theta / (theta + np.maximum(mean, 1e-8))).astype(np.float64)
