"""Centre and scale latents with batch statistics synchronised across ranks."""

from __future__ import annotations

import torch
from torch import nn


class SyncCentre(nn.Module):
    """Standardise features with (detached) batch mean and variance, tracked as running averages.

    Cosine codebooks assign by direction; a direction shared by every cell makes
    all latents similar and collapses the codebook. Removing the batch mean
    fixes that. Statistics are summed over data-parallel ranks (works with gloo
    on CPU and NCCL on GPU), so every rank applies and stores the same values and
    training matches one process with the whole batch. No gradient flows
    through the statistics.

    Shapes
    ------
    (B, dim) -> (B, dim)
    """

    def __init__(self, dim: int, *, momentum: float = 0.05, eps: float = 1e-5):
        super().__init__()
        self.dim, self.momentum, self.eps = dim, momentum, eps
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long))

    @torch.no_grad()
    def _stats(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch.distributed as dist

        s = torch.cat([h.sum(0), (h * h).sum(0), h.new_tensor([h.shape[0]])])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(s)
        n = s[-1].clamp(min=1)
        mean = s[: self.dim] / n
        var = (s[self.dim: 2 * self.dim] / n - mean**2).clamp(min=0)
        return mean, var

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean, var = self._stats(h)
            with torch.no_grad():
                # cumulative average for the first 1/momentum steps, then exponential
                self.steps += 1
                w = max(self.momentum, 1.0 / float(self.steps))
                self.running_mean.lerp_(mean, w)
                self.running_var.lerp_(var, w)
        else:
            mean, var = self.running_mean, self.running_var
        return (h - mean) / torch.sqrt(var + self.eps)

    @torch.no_grad()
    def calibrate(self, h: torch.Tensor) -> None:
        """Set the running statistics from latents ``h`` (N, dim) of the final model."""
        mean, var = self._stats(h)
        self.running_mean.copy_(mean)
        self.running_var.copy_(var)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.dim}, momentum={self.momentum})"
