"""Checkpoints: a folder with config, genes, metadata and safetensors weights.

Loading never unpickles: weights are safetensors, everything else is JSON or
plain text. Folders are built in a temporary sibling and renamed into place, so
an interrupted save never leaves a half-written model, and an existing folder is
replaced only when asked (``overwrite=True``) and only when this package wrote
it (:mod:`napari_squint.io.outputs`).

Integrity: ``meta.json`` records the SHA-256 of ``model.safetensors``
(``weights_sha256``); loading recomputes it and refuses a mismatch. Every
floating-point tensor is checked finite after loading; folders saved before the
checksum existed are loaded with the finite check alone (a warning says so).
:func:`check_config_values` and :func:`check_architecture` let a model's
``load`` refuse a configuration whose types or sizes are wrong, or that does
not agree with ``genes.txt`` / ``meta.json`` and the weights, before anything
is allocated. Every failure is a :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from napari_squint import _constants as K

#: largest integer accepted for any configuration value (sizes beyond it are refused before allocating)
MAX_CONFIG_INT = 10_000_000
#: metadata key of the weights' checksum
CHECKSUM_KEY = "weights_sha256"


class CheckpointError(ValueError):
    """A model folder that cannot be used: a damaged, truncated or inconsistent file (named in the message)."""


def sha256_file(path: str | Path, *, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: str | Path, *, state_dict: dict, config: dict, genes: list[str], meta: dict,
                    overwrite: bool = False, inputs=()) -> Path:
    """Write a checkpoint folder atomically.

    An existing folder is replaced only with ``overwrite=True`` and only when this package wrote it;
    ``inputs`` (the paths the model was trained from) are never written over or into.
    """
    from napari_squint.io.outputs import output_folder

    path = Path(path)
    with output_folder(path, inputs=inputs, overwrite=overwrite, command="save model") as tmp:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / K.CKPT_WEIGHTS))
        meta = {**meta, CHECKSUM_KEY: sha256_file(tmp / K.CKPT_WEIGHTS)}
        (tmp / K.CKPT_CONFIG).write_text(json.dumps(config, indent=2))
        (tmp / K.CKPT_GENES).write_text("\n".join(genes) + "\n")
        (tmp / K.CKPT_META).write_text(json.dumps(meta, indent=2, default=float))
    return path


def _read_json(file: Path) -> dict:
    from napari_squint.io.jsonfile import read_json

    doc = read_json(file, CheckpointError)
    if not isinstance(doc, dict):
        raise CheckpointError(f"{file}: expected a JSON object, found {type(doc).__name__}")
    return doc


def _read_genes(file: Path) -> list[str]:
    try:
        genes = [g.strip() for g in file.read_text(encoding="utf-8").splitlines() if g.strip()]
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{file}: not a text file ({err.reason} at byte {err.start})") from None
    if not genes:
        raise CheckpointError(f"{file}: no gene names")
    dup = sorted({g for g in genes if genes.count(g) > 1})[:3] if len(set(genes)) != len(genes) else []
    if dup:
        raise CheckpointError(f"{file}: duplicate gene names, e.g. {dup}")
    return genes


def load_checkpoint(path: str | Path, *, device: torch.device | str = "cpu"):
    """Read and check a checkpoint folder; returns ``(state_dict, config, genes, meta)``.

    Raises
    ------
    FileNotFoundError
        The folder or one of its files is missing.
    CheckpointError
        A file is unreadable, truncated or damaged (checksum mismatch, non-finite weights); the message
        names the file.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    for name in (K.CKPT_WEIGHTS, K.CKPT_CONFIG, K.CKPT_GENES, K.CKPT_META):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path} is not a napari-squint model: {name} is missing")
    config = _read_json(path / K.CKPT_CONFIG)
    meta = _read_json(path / K.CKPT_META)
    genes = _read_genes(path / K.CKPT_GENES)
    if not isinstance(meta.get("sections"), list) or not meta["sections"]:
        raise CheckpointError(f"{path / K.CKPT_META}: 'sections' must be a non-empty list of section names, "
                              f"found {meta.get('sections')!r:.60}")
    weights = path / K.CKPT_WEIGHTS
    expected = meta.get(CHECKSUM_KEY)
    if expected is not None:
        actual = sha256_file(weights)
        if actual != expected:
            raise CheckpointError(f"{weights} is damaged: its SHA-256 ({actual[:12]}...) differs from the one "
                                  f"recorded in {K.CKPT_META} ({str(expected)[:12]}...)")
    else:
        warnings.warn(f"{path} was saved without a weights checksum (an older version): its weights are checked "
                      "for non-finite values only", UserWarning, stacklevel=2)
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({err})") from None
    if not state:
        raise CheckpointError(f"{weights}: holds no tensors")
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{weights}: tensor {name!r} holds NaN or infinite values (a damaged file)")
    return state, config, genes, meta


def check_config_values(config: dict, defaults: dict, path: str | Path, *, meta: dict | None = None,
                        build: Callable[[dict], object] | None = None):
    """Check ``config.json`` against a default configuration of the same shape, before building anything.

    Every key must be known, every value of the default's type (an int where an int is expected; a number
    where a float is; JSON ``null`` only where the default is null or for optional numbers), numbers finite,
    integers within ``[0, MAX_CONFIG_INT]`` (``seed`` excepted), and a graph ``k`` smaller than the number of
    cells the model was trained on (``meta.json``'s ``n_train_cells``).

    ``build`` (e.g. ``SquintConfig.from_dict``) then makes the configuration object, whose own range checks
    are reported against ``config.json`` too; its result is returned (None without ``build``).

    Raises
    ------
    CheckpointError
        Naming ``config.json``, the key and the value.
    """
    file = Path(path) / K.CKPT_CONFIG

    def walk(values, ref, prefix):
        if not isinstance(values, dict):
            raise CheckpointError(f"{file}: {prefix.rstrip('.') or 'the top level'} must be an object, "
                                  f"found {values!r:.60}")
        for key, v in values.items():
            name = f"{prefix}{key}"
            if key not in ref:
                raise CheckpointError(f"{file}: unknown option {name!r}")
            d = ref[key]
            if isinstance(d, dict):
                walk(v, d, name + ".")
                continue
            if v is None:
                if d is None or _optional(key):
                    continue
                raise CheckpointError(f"{file}: {name} is null; expected {type(d).__name__} like {d!r}")
            if isinstance(d, bool):
                if not isinstance(v, bool):
                    raise CheckpointError(f"{file}: {name}={v!r} must be true or false")
            elif isinstance(d, int) or (d is None and isinstance(v, int) and not isinstance(v, bool)):
                if isinstance(v, bool) or not isinstance(v, int):
                    raise CheckpointError(f"{file}: {name}={v!r} must be an integer")
                if key != "seed" and not 0 <= v <= MAX_CONFIG_INT:
                    raise CheckpointError(f"{file}: {name}={v} is out of range (0 to {MAX_CONFIG_INT:,})")
            elif isinstance(d, float) or d is None and isinstance(v, float):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise CheckpointError(f"{file}: {name}={v!r} must be a finite number")
            elif isinstance(d, str):
                if not isinstance(v, str):
                    raise CheckpointError(f"{file}: {name}={v!r} must be a string")
            elif d is None and not isinstance(v, (str, int, float)):
                raise CheckpointError(f"{file}: {name}={v!r:.60} has an unexpected type {type(v).__name__}")

    walk(config, defaults, "")
    n_cells = (meta or {}).get("n_train_cells")
    ks = [v for k, v in _flat(config) if k.split(".")[-1] == "k"]
    for k in ks:
        if isinstance(n_cells, int) and k >= n_cells:
            raise CheckpointError(f"{file}: k={k} neighbours, but the model was trained on {n_cells} cells "
                                  f"({K.CKPT_META}); the configuration is wrong, not the slide")
        if k < 1:
            raise CheckpointError(f"{file}: k={k} must be at least 1")
    if build is None:
        return None
    try:
        return build(config)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{file}: {' '.join(str(err).split())}") from None


def _optional(key: str) -> bool:
    return key in ("num_threads", "radius", "max_neighbours", "halo_hops")


def _flat(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def check_architecture(build: Callable[[], torch.nn.Module], state: dict, path: str | Path, *,
                       variable: tuple[str, ...] = ()) -> None:
    """Check that the weights have the tensors and shapes the configuration, genes and sections imply.

    ``build`` constructs the module from the loaded configuration; it runs on PyTorch's ``meta`` device, so
    nothing is allocated even when a size is absurd. ``variable`` names tensors whose length depends on the
    training data (skipped).

    Raises
    ------
    CheckpointError
        Naming ``model.safetensors``, the tensor and both shapes.
    """
    path = Path(path)
    weights = path / K.CKPT_WEIGHTS
    try:
        with torch.device("meta"):
            module = build()
    except (ValueError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{path / K.CKPT_CONFIG}: the configuration does not build a model ({err})") from None
    want = {k: tuple(v.shape) for k, v in module.state_dict().items() if k not in variable}
    have = {k: tuple(v.shape) for k, v in state.items() if k not in variable}
    agree = f"{K.CKPT_CONFIG}, {K.CKPT_GENES} and {K.CKPT_META} do not agree with {weights}"
    missing = sorted(set(want) - set(have))
    if missing:
        raise CheckpointError(f"{agree}: tensor {missing[0]!r} is missing from the weights"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    extra = sorted(set(have) - set(want))
    if extra:
        raise CheckpointError(f"{agree}: the weights hold tensor {extra[0]!r} the configuration has no place for"
                              + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    for k in sorted(want):
        if want[k] != have[k]:
            raise CheckpointError(f"{agree}: tensor {k!r} has shape {list(have[k])} in the weights, the "
                                  f"configuration implies {list(want[k])}")
