"""Load a saved model folder of any model class, for the CLI and the napari plugin.

>>> from napari_squint.api.load import load_any
>>> model = load_any("my_model")        # a Squint or a Cifm, whichever the folder holds
>>> model.has_tokens, model.impute_methods, model.default_method

The folder's ``meta.json`` names the model (its class's ``kind``); this is
the only place, with the models' own save/load, that reads it.
"""

from __future__ import annotations

import json
from pathlib import Path

from napari_squint import _constants as K

__all__ = ["NotAModelError", "folder_kind", "load_any", "model_classes"]


def model_classes() -> dict:
    """``{kind: class}`` of every model a folder can hold (a third model is added here)."""
    from napari_squint.api.cifm import Cifm
    from napari_squint.api.squint import Squint

    return {cls.kind: cls for cls in (Squint, Cifm)}


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
    # SQuINT folders written before CIFM existed name no model
    kind = str(meta.get("model", "squint")).lower() if isinstance(meta, dict) else None
    kinds = tuple(model_classes())
    if kind not in kinds:
        raise ValueError(f"{path / K.CKPT_META}: unknown model kind {kind!r} (expected one of {kinds})")
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
    return model_classes()[folder_kind(path)].load(path, device=device)
