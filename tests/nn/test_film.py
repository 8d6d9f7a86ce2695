import torch

from napari_squint.nn.film import FiLM


def test_identity_at_init_and_learns():
    film = FiLM(3, 5)
    h, c = torch.randn(4, 5), torch.randn(4, 3)
    torch.testing.assert_close(film(h, c), h)
    film.proj.weight.data.normal_()
    assert not torch.allclose(film(h, c), h)
    assert "cond_dim=3" in repr(film)
