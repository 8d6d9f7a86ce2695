"""Device choice, in one place: CUDA when present, CPU otherwise, overridable."""

from __future__ import annotations

import torch


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:1"`` into a torch device.

    Raises
    ------
    ValueError
        When CUDA is asked for but not available, or the spec is not understood.
    """
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={spec!r} requested but CUDA is not available on this machine")
        return torch.device(spec)
    if spec == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device={spec!r} not understood: use 'auto', 'cpu' or 'cuda[:N]'")
