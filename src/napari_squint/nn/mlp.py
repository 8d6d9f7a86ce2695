"""Small MLP builder shared by the encoders and decoders."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mlp(sizes: list[int], *, norm: bool = True, last_activation: bool = False, dropout: float = 0.0) -> nn.Sequential:
    """Linear layers ``sizes[0] -> ... -> sizes[-1]`` with LayerNorm + GELU between them."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        last = i == len(sizes) - 2
        if not last or last_activation:
            if norm:
                layers.append(nn.LayerNorm(b))
            layers.append(nn.GELU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def mlp_masked_rows(net: nn.Sequential, x: torch.Tensor, masked: torch.Tensor, token: torch.Tensor,
                    noise: float = 0.0) -> torch.Tensor:
    """``net(x')`` where ``x'`` is ``x`` with its ``masked`` rows replaced by ``token + noise * N(0, 1)``
    (the masked-input rule of the SQuINT encoder), for an ``net`` whose first layer is a ``Linear``.

    Same values as building ``x'`` with the token's gradient attached, but the first layer gets no input
    gradient (a (U, g) x (g, h) product in every backward pass, the largest on wide panels): the inputs are data
    and only the token needs one, which is ``W^T`` times the sum of the masked rows' output gradients. A term
    whose value is exactly zero, ``masked * linear(token - token.detach(), W)``, carries it.
    """
    if not bool(masked.any()):
        return net(x)
    tok = token.to(x.dtype)
    m = tok.expand(int(masked.sum()), -1)
    if noise > 0:
        m = m + noise * torch.randn_like(m)
    xd = x.clone()
    xd[masked] = m.detach()
    first = net[0]
    y = first(xd)
    if tok.requires_grad and torch.is_grad_enabled():
        y = y + masked[:, None].to(y.dtype) * F.linear(tok - tok.detach(), first.weight.to(y.dtype))
    return net[1:](y)
