"""Tests for napari_squint.metrics.distribution."""

from __future__ import annotations

import numpy as np
import pytest

from napari_squint.metrics import energy_distance, fit_pca, median_bandwidths, mmd, subsample


@pytest.fixture
def cloud():
    return np.random.default_rng(0).normal(size=(120, 3))


def test_mmd_of_identical_sets_is_exactly_zero(cloud):
    assert mmd(cloud, cloud) == 0.0
    assert mmd(cloud, cloud.copy(), max_n=50) == 0.0  # subsampled identically
    assert mmd(cloud, cloud, bandwidths=[0.1, 10.0]) == 0.0


def test_mmd_hand_computed():
    # x = {0}, y = {1}, sigma = 1: k(x,x) = k(y,y) = 1, k(x,y) = exp(-1/2)
    assert mmd([0.0], [1.0], bandwidths=[1.0]) == pytest.approx(2 - 2 * np.exp(-0.5))
    # average over bandwidths 1 and 2: k(x,y) = exp(-1/2), exp(-1/8)
    expected = np.mean([2 - 2 * np.exp(-0.5), 2 - 2 * np.exp(-1 / 8)])
    assert mmd([0.0], [1.0], bandwidths=[1.0, 2.0]) == pytest.approx(expected)


@pytest.mark.parametrize("bandwidths", [None, [1.0, 2.0]])
def test_mmd_positive_and_grows_with_shift(cloud, bandwidths):
    values = [mmd(cloud, cloud + s, bandwidths=bandwidths) for s in (0.25, 0.5, 1.0, 2.0)]
    assert values[0] > 0
    assert np.all(np.diff(values) > 0)


def test_mmd_is_symmetric(cloud):
    other = cloud[:70] * 1.5
    assert mmd(cloud, other) == pytest.approx(mmd(other, cloud))


def test_subsampling_is_seeded(cloud):
    other = np.random.default_rng(1).normal(size=(150, 3)) + 0.3
    a = mmd(cloud, other, max_n=40, seed=3)
    assert a == mmd(cloud, other, max_n=40, seed=3)
    assert a != mmd(cloud, other, max_n=40, seed=4)
    e = energy_distance(cloud, other, max_n=40, seed=3)
    assert e == energy_distance(cloud, other, max_n=40, seed=3)
    assert e != energy_distance(cloud, other, max_n=40, seed=4)
    np.testing.assert_array_equal(subsample(cloud, 10, seed=5), subsample(cloud, 10, seed=5))
    assert subsample(cloud, None) is cloud


def test_energy_hand_computed_1d():
    # x = {0, 1}, y = {2}: E|X-Y| = (2 + 1) / 2 = 1.5,
    # E|X-X'| = (0 + 1 + 1 + 0) / 4 = 0.5, E|Y-Y'| = 0  ->  2 * 1.5 - 0.5 - 0 = 2.5
    assert energy_distance([0.0, 1.0], [2.0]) == pytest.approx(2.5)
    # x = {0, 2}, y = {1, 3}: E|X-Y| = (1 + 3 + 1 + 1) / 4 = 1.5, E|X-X'| = E|Y-Y'| = 1
    assert energy_distance([0.0, 2.0], [1.0, 3.0]) == pytest.approx(1.0)


def test_energy_symmetric_zero_on_identical_and_grows(cloud):
    other = cloud[:50] + 1.0
    assert energy_distance(cloud, other) == pytest.approx(energy_distance(other, cloud))
    assert energy_distance(cloud, cloud) == 0.0
    values = [energy_distance(cloud, cloud + s) for s in (0.5, 1.0, 2.0)]
    assert values[0] > 0 and np.all(np.diff(values) > 0)


def test_median_bandwidths():
    pts = np.array([[0.0], [1.0], [3.0]])  # pairwise distances 1, 2, 3 -> median 2
    np.testing.assert_allclose(median_bandwidths(pts, multiples=(0.5, 1.0)), [1.0, 2.0])
    np.testing.assert_allclose(median_bandwidths(np.zeros((4, 2)), multiples=(1.0,)), [1.0])


def test_fit_pca_clips_components_and_is_seeded():
    x = np.random.default_rng(0).random((6, 10))
    pca = fit_pca(x, n_components=50)
    assert pca.n_components_ == 6
    assert fit_pca(x, n_components=3).transform(x).shape == (6, 3)
    np.testing.assert_array_equal(fit_pca(x, 3, seed=1).components_, fit_pca(x, 3, seed=1).components_)
    assert fit_pca(x, 3, max_n=4).n_samples_ == 4
    with pytest.raises(ValueError, match="at least 2 rows"):
        fit_pca(x[:1])


def test_bad_input_raises(cloud):
    with pytest.raises(ValueError, match="same number of dims"):
        mmd(cloud, cloud[:, :2])
    with pytest.raises(ValueError, match="bandwidths"):
        mmd(cloud, cloud, bandwidths=[0.0])
    with pytest.raises(ValueError, match="empty"):
        energy_distance(cloud[:0], cloud)
