"""Cell layers: layout, slide <-> world coordinates, the raster representation for large slides, labels."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import box

from napari_squint import _constants as K
from napari_squint._napari.colours import colour_categories, colour_continuous, highlight
from napari_squint._napari.layers import (
    POINTS_LIMIT_ENV,
    apply_colours,
    cell_layer_data,
    cell_layers,
    pick_cell,
    region_world_vertices,
    section_geometry,
    shapes_to_regions,
)
from napari_squint.io.geojson import Region, cells_in_regions


def test_side_by_side_layout_has_no_overlap_and_keeps_slide_coordinates(tissue):
    geoms = section_geometry(tissue, section_key="section", layout="side")
    assert [g.name for g in geoms] == ["section_0", "section_1"]
    (a, b) = geoms
    ax1 = a.bounds[2] + a.offset[1]
    bx0 = b.bounds[0] + b.offset[1]
    assert ax1 < bx0
    tuples = cell_layer_data(tissue, section_key="section")
    data, kw, kind = tuples[1]
    xy = np.asarray(tissue.obsm["spatial"])[kw["metadata"][K.CELLS_LAYER_META]["cells"]]
    assert kind == "points" and np.allclose(data, xy[:, ::-1])  # (row, col) = (y, x)
    assert kw["translate"] == b.offset
    single = section_geometry(tissue, section_key="section", layout="single")
    assert all(g.offset == (0.0, 0.0) for g in single)
    with pytest.raises(ValueError, match="layout"):
        section_geometry(tissue, section_key="section", layout="diagonal")


def test_shapes_round_trip_to_regions(viewer, tissue):
    from napari.layers import Layer

    for d, k, t in cell_layer_data(tissue, section_key="section"):
        viewer.add_layer(Layer.create(d, k, t))
    layers = cell_layers(viewer)
    x0, y0, x1, y1 = layers[1].metadata[K.CELLS_LAYER_META]["bounds"]
    poly = box(x0 + 30, y0 + 30, x0 + 90, y0 + 80)
    region = Region("section_1", poly, "r")
    world = region_world_vertices(region, layers)
    shapes = viewer.add_shapes([world], shape_type="polygon")
    back = shapes_to_regions(shapes, layers)
    assert len(back) == 1 and back[0].section == "section_1"
    assert back[0].polygon.symmetric_difference(poly).area < 1e-5 * poly.area  # napari stores float32
    mask = cells_in_regions(tissue, back, section_key="section")
    x, y = np.asarray(tissue.obsm["spatial"]).T
    expected = (tissue.obs["section"] == "section_1").to_numpy() & (x > x0 + 30) & (x < x0 + 90) & (y > y0 + 30) & (y < y0 + 80)
    assert np.array_equal(mask, expected)
    # a self-intersecting "bow tie" is refused with the layer named
    bow = np.array([[0, 0], [10, 10], [0, 10], [10, 0]], dtype=float) + world[0]
    bad = viewer.add_shapes([bow], shape_type="polygon", name="bad")
    with pytest.raises(Exception, match="bad"):
        shapes_to_regions(bad, layers)


def test_raster_representation_above_the_limit(viewer, tissue, monkeypatch):
    from napari_squint._napari.slide_widget import SlideModelWidget

    monkeypatch.setenv(POINTS_LIMIT_ENV, "500")
    w = SlideModelWidget(viewer)
    w.session.set_slide(tissue, source={})
    w.show_cells()
    layers = cell_layers(viewer)
    assert all(lyr._type_string == "image" and lyr.name.endswith("(raster)") for lyr in layers)
    assert "image rasters" in w.info_label.text()
    # one pixel per cell: every cell is in the index raster
    info = layers[0].metadata[K.CELLS_LAYER_META]
    assert (info["index"] >= 0).sum() == info["cells"].size
    # recolouring rewrites the raster; picking finds the clicked cell
    rgba, _, _ = colour_categories(tissue.obs["cell_type"])
    apply_colours(layers, rgba)
    r, c = info["rows"][5], info["cols"][5]
    assert np.allclose(layers[0].data[r, c] / 255.0, rgba[info["cells"][5]], atol=1 / 255)
    world = np.asarray(layers[0].data_to_world((r, c)))
    assert pick_cell(layers[0], world) == info["cells"][5]


def test_colour_helpers():
    rgba, cats, lut = colour_categories(["b", "a", None, "b"])
    assert cats == ["a", "b"] and np.allclose(rgba[0], rgba[3]) and not np.allclose(rgba[0], rgba[1])
    assert np.allclose(rgba[2, :3], 0.35)
    cont, (lo, hi) = colour_continuous([0.0, 0.5, np.nan, 1.0], cmap="magma")
    assert (lo, hi) == (0.0, 1.0) and np.allclose(cont[2, :3], 0.35)
    dim = highlight(rgba, np.array([True, False, False, True]))
    assert np.allclose(dim[0], rgba[0]) and dim[1, 3] < 0.5
