"""Stable colours for cells: categorical (tokens, cell types) and continuous (scores).

A token keeps its colour across runs, sessions and slides: the colour is a
function of the token id alone, never of its rank or of which tokens are
present. Non-integer categories are hashed with CRC-32 (Python's ``hash`` of a
string changes between processes). Everything here is numpy; no Qt.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

#: colour of cells outside a selection (RGBA in [0, 1])
DIM = np.array([0.32, 0.32, 0.32, 0.35], dtype=np.float32)
#: colour of cells with no value (NaN score, missing category)
MISSING = np.array([0.35, 0.35, 0.35, 1.0], dtype=np.float32)

_GOLDEN = 0.6180339887498949
_SAT = np.array([0.85, 0.6], dtype=np.float32)
_VAL = np.array([0.95, 0.75, 0.58], dtype=np.float32)


def category_id(value) -> int:
    """Integer id that decides a category's colour (ints as themselves, strings by CRC-32)."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    s = str(value)
    if s.lstrip("-").isdigit():
        return int(s)
    return zlib.crc32(s.encode("utf-8"))


def id_colours(ids) -> np.ndarray:
    """RGBA colour of each integer id.

    Parameters
    ----------
    ids
        (n,) integers (token ids, or :func:`category_id` of any label).

    Returns
    -------
    (n, 4) float32 RGBA in [0, 1]. Consecutive ids get hues a golden-ratio
    step apart, with alternating saturation and brightness, so neighbouring
    ids never look alike.
    """
    from matplotlib.colors import hsv_to_rgb

    ids = np.asarray(ids, dtype=np.int64)
    h = np.mod((ids + 1) * _GOLDEN, 1.0)
    s = _SAT[(ids // 3) % 2]
    v = _VAL[ids % 3]
    rgb = hsv_to_rgb(np.stack([h, s, v], axis=-1).astype(np.float64))
    out = np.ones((ids.size, 4), dtype=np.float32)
    out[:, :3] = rgb
    return out


def colour_categories(values) -> tuple[np.ndarray, list, np.ndarray]:
    """Colour cells by a categorical value.

    Parameters
    ----------
    values
        (n,) labels (a pandas Series, categorical or not, or an array).

    Returns
    -------
    rgba
        (n, 4) float32 colours; missing values get :data:`MISSING`.
    categories
        the categories present, in the order of ``lut``.
    lut
        (k, 4) colour of each category.
    """
    ser = pd.Series(values)
    cat = ser.astype("category") if not isinstance(ser.dtype, pd.CategoricalDtype) else ser
    categories = list(cat.cat.categories)
    lut = id_colours([category_id(c) for c in categories]) if categories else np.zeros((0, 4), np.float32)
    codes = cat.cat.codes.to_numpy()
    rgba = np.empty((codes.size, 4), dtype=np.float32)
    ok = codes >= 0
    rgba[ok] = lut[codes[ok]]
    rgba[~ok] = MISSING
    return rgba, categories, lut


def colour_continuous(values, *, cmap: str = "viridis", vmin: float | None = None,
                      vmax: float | None = None) -> tuple[np.ndarray, tuple[float, float]]:
    """Colour cells by a number through a 256-entry colour map look-up.

    Returns
    -------
    rgba
        (n, 4) float32; NaN values get :data:`MISSING`.
    limits
        (vmin, vmax) used (the data's range by default).
    """
    import matplotlib

    x = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(x)
    lo = float(np.min(x[finite])) if vmin is None and finite.any() else float(vmin or 0.0)
    hi = float(np.max(x[finite])) if vmax is None and finite.any() else float(1.0 if vmax is None else vmax)
    if hi <= lo:
        hi = lo + 1.0
    lut = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256)).astype(np.float32)
    idx = np.clip(((np.where(finite, x, lo) - lo) / (hi - lo) * 255.0).round(), 0, 255).astype(np.int64)
    rgba = lut[idx]
    rgba[~finite] = MISSING
    return rgba, (lo, hi)


def highlight(rgba: np.ndarray, mask: np.ndarray, *, dim: np.ndarray = DIM) -> np.ndarray:
    """Copy of ``rgba`` (n, 4) where cells outside ``mask`` (n,) are greyed out."""
    out = np.array(rgba, dtype=np.float32, copy=True)
    out[~np.asarray(mask, dtype=bool)] = dim
    return out
