import torch

from napari_squint.nn.centre import SyncCentre


def test_standardises_in_training_and_uses_running_stats_in_eval():
    c = SyncCentre(3, momentum=1.0)
    h = torch.randn(200, 3) * torch.tensor([1.0, 5.0, 0.1]) + torch.tensor([10.0, -3.0, 2.0])
    out = c.train()(h)
    torch.testing.assert_close(out.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(0, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    # momentum 1: running stats are the last batch's, so eval reproduces training output
    torch.testing.assert_close(c.eval()(h), out, atol=1e-4, rtol=0)


def test_no_gradient_through_statistics():
    c = SyncCentre(2)
    h = torch.randn(10, 2, requires_grad=True)
    c.train()(h).sum().backward()
    var = h.detach().var(0, unbiased=False)
    torch.testing.assert_close(h.grad, (1 / torch.sqrt(var + 1e-5)).expand(10, 2))
