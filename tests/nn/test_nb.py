import numpy as np
import torch
from scipy import stats

from napari_squint.nn.nb import nb_log_likelihood


def test_matches_scipy_nbinom():
    x = torch.tensor([0.0, 1, 3, 10, 50])
    mu = torch.tensor([0.5, 2.0, 3.0, 8.0, 40.0])
    theta = torch.tensor([1.0, 2.0, 5.0, 0.7, 10.0])
    ours = nb_log_likelihood(x, mu, theta).double().numpy()
    p = (theta / (theta + mu)).numpy()
    ref = stats.nbinom.logpmf(x.numpy(), theta.numpy(), p)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_large_theta_tends_to_poisson():
    x = torch.tensor([0.0, 2, 7], dtype=torch.float64)
    mu = torch.tensor([1.0, 2.5, 6.0], dtype=torch.float64)
    ours = nb_log_likelihood(x, mu, torch.tensor(1e5, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ours, stats.poisson.logpmf(x.numpy(), mu.numpy()), atol=1e-3)
