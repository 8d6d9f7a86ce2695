"""Checkpoints: a folder with config, genes, metadata and safetensors weights.

Loading never unpickles: weights are safetensors, everything else is JSON or
plain text. Folders are written to a temporary sibling and renamed into place,
so an interrupted save never leaves a half-written model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from napari_squint import _constants as K


def save_checkpoint(path: str | Path, *, state_dict: dict, config: dict, genes: list[str], meta: dict) -> Path:
    """Write a checkpoint folder atomically (replacing an existing one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / K.CKPT_WEIGHTS))
        (tmp / K.CKPT_CONFIG).write_text(json.dumps(config, indent=2))
        (tmp / K.CKPT_GENES).write_text("\n".join(genes) + "\n")
        (tmp / K.CKPT_META).write_text(json.dumps(meta, indent=2, default=float))
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_checkpoint(path: str | Path, *, device: torch.device | str = "cpu"):
    """Read a checkpoint folder; returns ``(state_dict, config, genes, meta)``."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    for name in (K.CKPT_WEIGHTS, K.CKPT_CONFIG, K.CKPT_GENES, K.CKPT_META):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path} is not a napari-squint model: {name} is missing")
    state = load_file(str(path / K.CKPT_WEIGHTS), device=str(device))
    config = json.loads((path / K.CKPT_CONFIG).read_text())
    genes = [g for g in (path / K.CKPT_GENES).read_text().splitlines() if g]
    meta = json.loads((path / K.CKPT_META).read_text())
    return state, config, genes, meta
