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


def test_mean_nll_with_precomputed_log_factorials_matches_elementwise():
    import scipy.sparse as sp

    from napari_squint.nn.nb import log_factorial_rows, nb_nll_mean

    rng = np.random.default_rng(0)
    dense = rng.poisson(2.0, size=(40, 25)).astype(np.float32)
    dense[5] = 0  # an empty row
    lf = log_factorial_rows(sp.csr_matrix(dense))
    np.testing.assert_allclose(lf, log_factorial_rows(dense), rtol=1e-12)
    x = torch.from_numpy(dense)
    mu = (torch.rand(40, 25, generator=torch.Generator().manual_seed(1)) * 4 + 0.1).requires_grad_()
    theta = (torch.rand(25, generator=torch.Generator().manual_seed(2)) * 3 + 0.3).requires_grad_()
    ref = -nb_log_likelihood(x, mu, theta).mean()
    g_ref = torch.autograd.grad(ref, [mu, theta])
    got = nb_nll_mean(x, mu, theta, torch.from_numpy(lf).float())
    g_got = torch.autograd.grad(got, [mu, theta])
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
