"""Spatial tiles in a plane and in a volume."""

import numpy as np
import pytest

from napari_squint.data.tiles import grid_tiles, validation_tiles


def test_volume_tiles_are_the_octants_of_a_cube():
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 1, size=(800, 3))
    xyz[:8] = np.array(np.meshgrid([0, 1], [0, 1], [0, 1])).reshape(3, -1).T  # pin the bounding box to the cube
    t = grid_tiles(xyz, tile_cells=100)  # 8 tiles over a cube: 2 x 2 x 2
    octant = (xyz[:, 0] >= 0.5) * 4 + (xyz[:, 1] >= 0.5) * 2 + (xyz[:, 2] >= 0.5)
    assert np.unique(t).size == 8
    # one tile per octant, the same partition
    assert all(np.unique(octant[t == i]).size == 1 for i in range(8))


def test_volume_cuts_follow_the_axes_spans():
    rng = np.random.default_rng(1)
    xyz = rng.uniform(0, 1, size=(4000, 3)) * np.array([40.0, 10.0, 10.0])
    t = grid_tiles(xyz, tile_cells=250)  # about 16 tiles; each axis is cut in proportion to its span (6 x 2 x 2)
    extents = np.array([np.ptp(xyz[t == i], axis=0) for i in np.unique(t)])
    assert np.unique(t).size == 24
    ratio = extents.max(1) / extents.min(1)
    assert np.median(ratio) < 2.5  # about cubic, not 40-long rods or slabs


def test_constant_third_column_is_the_plane():
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 100, size=(500, 2))
    flat = np.c_[xy, np.full(500, 7.0)]
    np.testing.assert_array_equal(grid_tiles(flat, 16), grid_tiles(xy, 16))


def test_depth_makes_different_tiles_than_the_projection():
    rng = np.random.default_rng(3)
    xyz = rng.uniform(0, 20, size=(1000, 3))
    t3, t2 = grid_tiles(xyz, 50), grid_tiles(xyz[:, :2], 50)
    # a plane's tile is a column through all depths; a volume's tile is a box holding part of the depth
    assert np.ptp(xyz[t2 == 0, 2]) > 15
    assert max(np.ptp(xyz[t3 == i, 2]) for i in np.unique(t3)) < 15


def test_validation_tiles_are_whole_tiles_near_the_share_asked():
    tile = np.repeat(np.arange(12), 290)  # 12 tiles of 290 cells
    cells = np.arange(tile.size)
    val = validation_tiles(tile, cells, 0.1, np.random.default_rng(0))
    # one tile (290 cells, 8 %) is closer to 10 % (348) than two (580, 17 %)
    assert val.size == 290 and np.unique(tile[val]).size == 1
    chosen = np.unique(tile[val])
    assert np.isin(cells[np.isin(tile, chosen)], val).all()  # whole tiles
    big = validation_tiles(tile, cells, 0.3, np.random.default_rng(1))
    assert np.unique(tile[big]).size == 4  # 1,160 cells for 1,044 asked: closer than 870
    # the same generator state gives the same cells; never every tile
    np.testing.assert_array_equal(val, validation_tiles(tile, cells, 0.1, np.random.default_rng(0)))
    assert np.unique(tile[validation_tiles(tile, cells, 0.99, np.random.default_rng(2))]).size == 11
    # only the cells given are chosen from
    sub = validation_tiles(tile, cells[::2], 0.1, np.random.default_rng(0))
    assert np.isin(sub, cells[::2]).all()


def test_validation_cells_of_a_single_tile_are_a_random_share():
    val = validation_tiles(np.zeros(200, np.int64), np.arange(200), 0.1, np.random.default_rng(0))
    assert val.size == 20 and np.unique(val).size == 20
    with pytest.raises(ValueError, match="at least 2 cells"):
        validation_tiles(np.zeros(1, np.int64), np.arange(1), 0.1, np.random.default_rng(0))
