import numpy as np

from napari_squint.data.covariates import rbf_covariates
from napari_squint.data.graph import knn, median_nn_distance


def test_covariates_are_unit_invariant():
    rng = np.random.default_rng(0)
    xy = rng.random((300, 2)) * 50
    c = []
    for scale in (1.0, 0.108, 1000.0):  # micrometres, pixels, anything
        p = xy * scale
        _, d = knn(p, 8)
        c.append(rbf_covariates(d, median_nn_distance(p)))
    np.testing.assert_allclose(c[0], c[1], atol=1e-5)
    np.testing.assert_allclose(c[0], c[2], atol=1e-5)


def test_covariates_distinguish_density():
    rng = np.random.default_rng(0)
    dense = rng.random((200, 2)) * 10
    sparse_ = rng.random((200, 2)) * 10 + np.array([50, 0])
    sparse_ = (sparse_ - sparse_.mean(0)) * 3 + np.array([80, 0])
    xy = np.r_[dense, sparse_]
    _, d = knn(xy, 8)
    c = rbf_covariates(d, median_nn_distance(xy), n_rbf=8)
    assert c.shape == (400, 8)
    # sparse cells weight far centres more than dense cells
    assert c[200:, -4:].sum(1).mean() > c[:200, -4:].sum(1).mean()
