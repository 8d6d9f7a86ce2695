import torch
import torch.nn.functional as F

from napari_squint.nn.codebook import CosineCodebook, spherical_kmeans


def _clusters(k=4, d=8, n=100, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, d, generator=g), dim=-1)
    lab = torch.arange(k).repeat_interleave(n)
    x = F.normalize(centres[lab] + 0.05 * torch.randn(k * n, d, generator=g), dim=-1)
    return x, lab, centres


def test_shapes_and_token_radix():
    cb = CosineCodebook(16, 5, heads=2)
    q, codes, out = cb(torch.randn(7, 16), update=False)
    assert q.shape == (7, 16) and codes.shape == (7, 2)
    tok = cb.tokens(codes)
    assert torch.equal(tok, codes[:, 0] * 5 + codes[:, 1])
    assert torch.equal(cb.codes_from_tokens(tok), codes)
    assert cb.vocabulary_size == 25
    assert 0 < float(out["utilisation"]) <= 1


def test_kmeans_init_recovers_clusters():
    x, lab, centres = _clusters()
    cb = CosineCodebook(8, 4, heads=1)
    cb.init_kmeans(x, seed=0)
    codes = cb.assign(x)[:, 0]
    # each true cluster maps to exactly one code, and codes are distinct
    mapping = {int(c): set(codes[lab == c].tolist()) for c in range(4)}
    assert all(len(v) == 1 for v in mapping.values())
    assert len({next(iter(v)) for v in mapping.values()}) == 4
    sims = (cb.embed[0] @ centres.T).max(0).values
    assert torch.all(sims > 0.99)


def test_spherical_kmeans_unit_norm():
    x, _, _ = _clusters(k=3)
    c = spherical_kmeans(x, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(c.norm(dim=-1), torch.ones(3))


def test_ema_update_moves_code_towards_assigned_mean():
    cb = CosineCodebook(4, 2, heads=1, decay=0.8)
    cb.embed.copy_(torch.tensor([[[1.0, 0, 0, 0], [0, 1.0, 0, 0]]]))
    cb.embed_sum.copy_(cb.embed)
    target = F.normalize(torch.tensor([[1.0, 0.5, 0, 0]]), dim=-1).repeat(10, 1)
    before = float(cb.embed[0, 0] @ target[0])
    cb.train()
    cb(target)  # all assigned to code 0
    after = float(cb.embed[0, 0] @ target[0])
    assert after > before
    # code 1 untouched apart from renormalisation, and EMA usage follows decay
    torch.testing.assert_close(cb.embed[0, 1], torch.tensor([0.0, 1, 0, 0]))
    torch.testing.assert_close(cb.cluster_size[0], torch.tensor([0.8 + 0.2 * 10, 0.8]))


def test_straight_through_gradient_is_identity_on_normalised_latent():
    cb = CosineCodebook(6, 3, heads=1)
    h = torch.randn(5, 6, requires_grad=True)
    q, _, _ = cb(h, update=False)
    w = torch.randn(5, 6)
    (q * w).sum().backward()
    h2 = h.detach().clone().requires_grad_(True)
    (F.normalize(h2, dim=-1) * w).sum().backward()
    torch.testing.assert_close(h.grad, h2.grad)
    # the forward value is the code itself
    codes = cb.assign(h.detach())
    torch.testing.assert_close(q.detach(), cb.lookup(codes))


def test_dead_codes_are_reseeded():
    cb = CosineCodebook(4, 3, heads=1, dead_threshold=0.5)
    cb.cluster_size.copy_(torch.tensor([[5.0, 0.1, 5.0]]))
    hn = cb.split(torch.randn(8, 4))
    old = cb.embed.clone()
    assert cb.reseed_dead(hn, generator=torch.Generator().manual_seed(0)) == 1
    assert not torch.equal(cb.embed[0, 1], old[0, 1])
    torch.testing.assert_close(cb.embed[0, [0, 2]], old[0, [0, 2]])
    # the new code is one of the batch latents
    assert torch.isclose(hn[:, 0] @ cb.embed[0, 1], torch.tensor(1.0)).any()
