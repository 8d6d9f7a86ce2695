"""Tests for napari_squint.metrics.normalise."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from napari_squint.metrics import log_normalise


def test_hand_computed_value():
    # row total 4 -> target 4 leaves counts as they are: log1p([1, 3])
    out = log_normalise(np.array([[1.0, 3.0]]), target_sum=4.0)
    np.testing.assert_allclose(out, np.log1p([[1.0, 3.0]]))


def test_rows_sum_to_target_before_log():
    counts = np.array([[1, 2, 3, 4], [10, 0, 0, 30], [0, 0, 7, 0]])
    out = log_normalise(counts)
    np.testing.assert_allclose(np.expm1(out).sum(axis=1), 1e4)
    np.testing.assert_allclose(np.expm1(log_normalise(counts, target_sum=50)).sum(axis=1), 50)


def test_zero_rows_stay_zero_without_nan_or_warning():
    counts = np.array([[0, 0, 0], [1, 1, 2]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = log_normalise(counts)
    assert not np.isnan(out).any()
    np.testing.assert_array_equal(out[0], 0.0)


def test_sparse_equals_dense_and_input_untouched():
    counts = np.array([[1.0, 0.0, 3.0], [0.0, 0.0, 0.0], [2.0, 2.0, 0.0]])
    before = counts.copy()
    dense = log_normalise(counts)
    sparse_in = sp.csr_matrix(counts)
    out = log_normalise(sparse_in)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_allclose(out, dense)
    np.testing.assert_array_equal(counts, before)  # scanpy works in place: we must copy
    np.testing.assert_array_equal(sparse_in.toarray(), before)


@pytest.mark.parametrize(
    ("counts", "kwargs", "match"),
    [
        (np.ones(3), {}, "2-D"),
        (np.array([[1.0, -1.0]]), {}, "negative"),
        (np.array([[1.0, np.nan]]), {}, "NaN"),
        (np.ones((2, 2)), {"target_sum": 0}, "target_sum"),
    ],
)
def test_bad_input_raises(counts, kwargs, match):
    with pytest.raises(ValueError, match=match):
        log_normalise(counts, **kwargs)
