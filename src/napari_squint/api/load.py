"""Load a saved model folder of either kind (SQuINT or CIFM), for the CLI and the napari plugin.

>>> from napari_squint.api.load import load_any, model_kind
>>> model = load_any("my_model")        # a Squint or a Cifm, whichever the folder holds
>>> model_kind(model)                   # "squint" or "cifm"
"""

from __future__ import annotations

import json
from pathlib import Path

from napari_squint import _constants as K

__all__ = ["MODEL_KINDS", "folder_kind", "load_any", "model_kind"]

#: model families a folder can hold (``meta.json``'s ``"model"``; SQuINT folders written before CIFM lack it)
MODEL_KINDS = ("squint", "cifm")


class NotAModelError(FileNotFoundError):
    """The folder is not a saved SQuINT or CIFM model."""


def folder_kind(path: str | Path) -> str:
    """``"squint"`` or ``"cifm"``: the kind of model saved in ``path``.

    Parameters
    ----------
    path
        A model folder written by ``Squint.save`` / ``Cifm.save`` (``squint train``).

    Raises
    ------
    NotAModelError
        ``path`` does not exist, is not a folder, or lacks the checkpoint files
        (the message names the path and the missing file).
    ValueError
        ``meta.json`` cannot be read or names an unknown model kind.
    """
    path = Path(path)
    if not path.exists():
        raise NotAModelError(f"model folder not found: {path}")
    if not path.is_dir():
        raise NotAModelError(f"{path} is a file, not a model folder (expected a folder written by `squint train`)")
    missing = [name for name in (K.CKPT_META, K.CKPT_CONFIG, K.CKPT_GENES) if not (path / name).exists()]
    if not ((path / K.CKPT_WEIGHTS).exists() or (path / K.CKPT_WEIGHTS_PT).exists()):
        missing.append(K.CKPT_WEIGHTS)
    if missing:
        raise NotAModelError(f"{path} is neither a SQuINT nor a CIFM model folder: {', '.join(missing)} "
                             f"missing (expected a folder written by `squint train` or Model.save)")
    try:
        meta = json.loads((path / K.CKPT_META).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path / K.CKPT_META}: unreadable model metadata ({err})") from err
    kind = str(meta.get("model", "squint")).lower() if isinstance(meta, dict) else None
    if kind not in MODEL_KINDS:
        raise ValueError(f"{path / K.CKPT_META}: unknown model kind {kind!r} (expected one of {MODEL_KINDS})")
    return kind


def load_any(path: str | Path, device: str | None = None):
    """Load a SQuINT or a CIFM model folder, whichever it holds.

    Parameters
    ----------
    path
        Model folder.
    device
        ``"cpu"``, ``"cuda"``... (default: the device saved in the config,
        resolved on this machine).

    Returns
    -------
    :class:`~napari_squint.api.squint.Squint` or :class:`~napari_squint.api.cifm.Cifm`

    Raises
    ------
    NotAModelError
        The folder is neither kind of model (the message names the path).
    """
    kind = folder_kind(path)
    if kind == "cifm":
        from napari_squint.api.cifm import Cifm

        return Cifm.load(path, device=device)
    from napari_squint.api.squint import Squint

    return Squint.load(path, device=device)


def model_kind(model) -> str | None:
    """``"squint"``, ``"cifm"`` or None (no model): the family of a model object."""
    if model is None:
        return None
    return str(getattr(model, "kind", "squint"))
