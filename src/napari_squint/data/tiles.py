"""Spatial tiles: the grid that splits a section into mini-batch units, and batches of whole tiles.

Both models use them: SQuINT's mini-batches (:func:`napari_squint.data.batch.epoch_batches`)
and CIFM's training and inference chunks (:mod:`napari_squint.data.cifm_batch`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["grid_tiles", "tile_batches", "validation_tiles"]


def grid_tiles(coords: np.ndarray, tile_cells: int) -> np.ndarray:
    """Grid tiles holding about ``tile_cells`` cells each.

    In a plane the bounding box is cut into ``nx x ny`` cells of the grid, with
    ``nx * ny`` about ``n / tile_cells`` and ``nx / ny`` following the box's
    aspect ratio. In a volume (three columns whose z varies) the box is cut into
    ``nx x ny x nz`` boxes the same way, each axis cut in proportion to its span,
    so tiles are about cubic; a constant third column is a plane (same tiles as
    the first two columns alone).

    Parameters
    ----------
    coords
        ``(n, 2)`` or ``(n, 3)`` coordinates of one section, any unit (one unit for all columns).
    tile_cells
        Target cells per tile.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` int64 tile ids ``0 .. T-1`` (only non-empty tiles get an id),
        in grid order.
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise ValueError(f"coords must have shape (n, 2) or (n, 3), got {coords.shape}")
    n = coords.shape[0]
    n_tiles = max(1, int(round(n / tile_cells)))
    lo, hi = coords.min(0), coords.max(0)
    if coords.shape[1] > 2:
        if np.all(hi[2:] == lo[2:]):
            return grid_tiles(coords[:, :2], tile_cells)
        return _box_tiles(coords, n_tiles, lo, hi)
    span = np.maximum(hi - lo, 1e-12)
    nx = max(1, int(round(np.sqrt(n_tiles * span[0] / span[1]))))
    ny = max(1, int(round(n_tiles / nx)))
    ix = np.minimum(((coords[:, 0] - lo[0]) / span[0] * nx).astype(np.int64), nx - 1)
    iy = np.minimum(((coords[:, 1] - lo[1]) / span[1] * ny).astype(np.int64), ny - 1)
    _, t = np.unique(ix * ny + iy, return_inverse=True)
    return t.astype(np.int64).ravel()


def _box_tiles(coords: np.ndarray, n_tiles: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Tiles of a d-dimensional grid of about ``n_tiles`` boxes, each axis cut in proportion to its span.

    An axis with no extent gets one cut; the others share ``n_tiles``.
    """
    span = hi - lo
    live = span > 0
    d = int(live.sum())
    per_unit = (n_tiles / np.prod(span[live])) ** (1.0 / max(d, 1)) if d else 0.0
    cuts = np.where(live, np.maximum(1, np.round(span * per_unit)), 1).astype(np.int64)
    safe = np.where(live, span, 1.0)
    idx = np.minimum(((coords - lo) / safe * cuts).astype(np.int64), cuts - 1)
    _, t = np.unique(np.ravel_multi_index(idx.T, tuple(cuts)), return_inverse=True)
    return t.astype(np.int64).ravel()


def tile_batches(tile: np.ndarray, cells: np.ndarray, batch_size: int,
                 rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
    """Group ``cells`` into batches of whole tiles of at least ``batch_size`` cells (the last may be smaller).

    Parameters
    ----------
    tile
        ``(n,)`` tile id of every cell.
    cells
        Global indices of the cells to batch.
    batch_size
        Cells per batch, at least.
    rng
        Tiles come in a random order drawn from ``rng`` when given, else in id order.

    Yields
    ------
    numpy.ndarray
        Global cell indices of one batch.
    """
    cells = np.asarray(cells, dtype=np.int64)
    if cells.size == 0:
        return
    t = tile[cells]
    order = np.argsort(t, kind="stable")
    cells, t = cells[order], t[order]
    groups = np.split(cells, np.flatnonzero(np.diff(t)) + 1)
    perm = rng.permutation(len(groups)) if rng is not None else np.arange(len(groups))
    current: list[np.ndarray] = []
    size = 0
    for gi in perm:
        current.append(groups[gi])
        size += groups[gi].size
        if size >= batch_size:
            yield np.concatenate(current)
            current, size = [], 0
    if current:
        yield np.concatenate(current)


def validation_tiles(tile: np.ndarray, cells: np.ndarray, frac: float, rng: np.random.Generator) -> np.ndarray:
    """Whole tiles of ``cells``, drawn at random, holding about ``frac`` of them: a validation set.

    Whole tiles keep the validation cells together, so checking them costs a forward pass over a few tiles
    rather than over the slide. Tiles are taken in a random order while they bring the set's size closer to
    ``frac`` of the cells; at least one is taken and one left out. With a single tile, a random ``frac`` of its
    cells is drawn instead.

    Parameters
    ----------
    tile
        ``(n,)`` tile id of every cell.
    cells
        Global indices of the cells to choose from.
    frac
        Share of ``cells`` to choose, in (0, 1).
    rng
        Random generator.

    Returns
    -------
    numpy.ndarray
        Sorted global indices of the chosen cells (at least one).
    """
    cells = np.asarray(cells, dtype=np.int64)
    if cells.size < 2:
        raise ValueError(f"a validation set needs at least 2 cells, got {cells.size}")
    want = max(1, int(np.ceil(frac * cells.size)))
    ids, counts = np.unique(tile[cells], return_counts=True)
    if ids.size < 2:
        return np.sort(rng.choice(cells, size=min(want, cells.size - 1), replace=False))
    chosen, size = [], 0
    for i in rng.permutation(ids.size)[:-1]:  # never every tile
        if chosen and abs(size + counts[i] - want) >= abs(size - want):
            continue  # a tile that would take the set further from ``want``
        chosen.append(ids[i])
        size += counts[i]
        if size >= want:
            break
    return np.sort(cells[np.isin(tile[cells], chosen)])
