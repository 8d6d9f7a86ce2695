"""Feature-wise linear modulation (FiLM) with zero initialisation."""

from __future__ import annotations

import torch
from torch import nn


class FiLM(nn.Module):
    r"""Condition features on a covariate vector: :math:`h' = h + \gamma(c) \odot h + \beta(c)`.

    The projection producing :math:`(\gamma, \beta)` is zero-initialised, so at
    the start of training the layer is the identity (a residual connection
    around the modulation), as in the SQuINT encoder.

    Parameters
    ----------
    cond_dim
        Width of the conditioning vector ``c``.
    dim
        Width of the modulated features ``h``.

    Shapes
    ------
    ``h``: (B, dim), ``c``: (B, cond_dim) -> (B, dim).
    """

    def __init__(self, cond_dim: int, dim: int):
        super().__init__()
        self.cond_dim = cond_dim
        self.dim = dim
        self.proj = nn.Linear(cond_dim, 2 * dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.proj(c).chunk(2, dim=-1)
        return h + gamma * h + beta

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(cond_dim={self.cond_dim}, dim={self.dim})"
