"""Small MLP builder shared by the encoders and decoders."""

from __future__ import annotations

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
