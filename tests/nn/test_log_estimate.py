"""Log-space point estimates under a negative binomial, against scipy's pmf summed by brute force."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from napari_squint.nn.log_estimate import (
    expected_log1p,
    log_space_counts,
    moment_matched_theta,
)


def _reference(mu, theta, scale, offset):
    k = np.arange(20000)
    p = stats.nbinom.pmf(k, theta, theta / (theta + mu))
    return float((p * np.log1p(scale * (offset + k))).sum())


@pytest.mark.parametrize("mu,theta,scale,offset", [
    (0.3, 0.7, 38.6, 0.0), (2.0, 2.5, 10.0, 3.0), (15.0, 0.5, 5.0, 0.0), (39.0, 3.0, 1.0, 7.0),
    (120.0, 4.0, 0.5, 0.0), (0.01, 50.0, 100.0, 1.0),
])
def test_matches_the_brute_force_sum(mu, theta, scale, offset):
    got = expected_log1p(np.array([[mu]]), np.array([theta]), np.array([[scale]]), np.array([[offset]]))[0, 0]
    assert got == pytest.approx(_reference(mu, theta, scale, offset), abs=2e-3)


def test_zero_mean_is_exact_and_jensen_holds():
    rng = np.random.default_rng(0)
    mu = rng.gamma(0.5, 4.0, size=(30, 20))
    mu[:, 0] = 0.0
    theta = rng.uniform(0.3, 5.0, size=20)
    scale = 1e4 / rng.uniform(100, 400, size=(30, 1))
    off = rng.poisson(1.0, size=(30, 20)).astype(float)
    y = expected_log1p(mu, theta, scale, off)
    np.testing.assert_allclose(y[:, 0], np.log1p(scale[:, 0] * off[:, 0]))
    assert np.all(y <= np.log1p(scale * (off + mu)) + 1e-12)  # E[log1p] <= log1p(E)
    assert np.all(y >= np.log1p(scale * off) - 1e-12)  # Y >= 0
    assert np.all(y[:, 1:][mu[:, 1:] > 0.05] < np.log1p(scale * (off + mu))[:, 1:][mu[:, 1:] > 0.05])


def test_log_space_counts_log_normalise_back_to_the_expectation():
    mu = np.array([[0.3, 5.0, 60.0], [0.0, 1.0, 2.0]])
    theta = np.array([0.8, 2.0, 3.0])
    lib = np.array([260.0, 120.0])
    x = log_space_counts(mu, theta, lib)
    np.testing.assert_allclose(np.log1p(x * 1e4 / lib[:, None]), expected_log1p(mu, theta, 1e4 / lib[:, None]))
    assert np.all(x <= mu + 1e-12) and x[1, 0] == 0.0
    assert x[0, 0] < 0.3 * mu[0, 0]  # a lowly expressed gene shrinks a lot (zero three times in four)
    with pytest.raises(ValueError, match="library"):
        log_space_counts(mu, theta, np.array([260.0, 0.0]))


def test_moment_matching():
    th = moment_matched_theta(np.array([2.0, 2.0, 0.0]), np.array([5.5, 1.0, 0.0]))
    assert th[0] == pytest.approx(4.0 / 3.5)
    assert th[1] == 1e6 and th[2] == 1e6  # no over-dispersion: practically Poisson


def test_log_space_counts_shift_moves_the_log_normalised_value():
    mu = np.array([[0.3, 5.0, 60.0], [0.5, 1.0, 2.0]])
    theta = np.array([0.8, 2.0, 3.0])
    lib = np.array([260.0, 120.0])
    s = 1e4 / lib[:, None]
    np.testing.assert_allclose(log_space_counts(mu, theta, lib, shift=np.zeros_like(mu)), log_space_counts(mu, theta, lib))
    shift = np.array([[0.5, -0.2, np.log(2.0)], [-50.0, 0.0, 1.0]])
    x = log_space_counts(mu, theta, lib, shift=shift)
    y = expected_log1p(mu, theta, s) + shift
    np.testing.assert_allclose(np.log1p(x[0] * s[0]), y[0])
    assert x[1, 0] == 0.0  # far below zero on the log scale: zero counts, never negative
    # with known counts (offset) the result never falls below them
    off = np.array([[1.0, 2.0, 3.0], [4.0, 0.0, 1.0]])
    xo = log_space_counts(mu, theta, lib, off, shift=-5.0 * np.ones_like(mu))
    np.testing.assert_array_equal(xo, off)
