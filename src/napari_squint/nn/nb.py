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


def sample_nb(mean, theta, rng: np.random.Generator) -> np.ndarray:
    """Negative-binomial counts (float64) with means ``mean`` (m, g) and inverse dispersions ``theta`` (g,)
    or (m, g): generated counts for imputation."""
    theta = np.asarray(theta, dtype=np.float64)
    return rng.negative_binomial(theta, theta / (theta + np.maximum(mean, 1e-8))).astype(np.float64)
