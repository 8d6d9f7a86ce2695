import json

import numpy as np
import pytest
from shapely.geometry import Polygon

from napari_squint.data.validate import SlideError
from napari_squint.io.geojson import Region, cells_in_regions, read_polygons, write_polygons


def test_roundtrip_and_membership(tmp_path, tissue):
    sec = tissue.obs["section"].cat.categories[0]
    xy = tissue.obsm["spatial"][(tissue.obs["section"] == sec).to_numpy()]
    cx, cy = np.median(xy, 0)
    poly = Polygon([(cx - 30, cy - 30), (cx + 30, cy - 30), (cx + 30, cy + 30), (cx - 30, cy + 30)])
    p = write_polygons([Region(section=sec, polygon=poly, name="patch")], tmp_path / "p.geojson")
    regs = read_polygons(p)
    assert regs[0].section == sec and regs[0].name == "patch"
    assert regs[0].polygon.equals(poly)
    inside = cells_in_regions(tissue, regs, section_key="section")
    all_xy = tissue.obsm["spatial"]
    brute = ((tissue.obs["section"] == sec).to_numpy() & (np.abs(all_xy[:, 0] - cx) < 30)
             & (np.abs(all_xy[:, 1] - cy) < 30))
    assert inside.sum() > 0 and (inside == brute).all()


def _write(tmp_path, coords, section="s"):
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"section": section}, "geometry": {"type": "Polygon", "coordinates": [coords]}}]}
    p = tmp_path / "p.geojson"
    p.write_text(json.dumps(doc))
    return p


def test_self_intersecting_polygon_rejected(tmp_path):
    p = _write(tmp_path, [[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]])
    with pytest.raises(SlideError, match="self-intersecting"):
        read_polygons(p)


def test_unknown_section_and_far_polygon(tmp_path, tissue):
    p = _write(tmp_path, [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]], section="nowhere")
    with pytest.raises(SlideError, match="'nowhere'"):
        cells_in_regions(tissue, read_polygons(p), section_key="section")
    sec = tissue.obs["section"].cat.categories[0]
    p = _write(tmp_path, [[1e7, 1e7], [1e7 + 10, 1e7], [1e7 + 10, 1e7 + 10], [1e7, 1e7 + 10], [1e7, 1e7]], section=sec)
    with pytest.raises(SlideError, match="far outside"):
        cells_in_regions(tissue, read_polygons(p), section_key="section")


# ----------------------------------------------------------------- issue 13: every problem names file and feature
_BAD_DOCS = {
    "top level is a list": ([{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}],
                            "top level is a JSON list"),
    "geometry null": ({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": None}]},
                      "feature 0: geometry is null"),
    "2-point polygon": ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]},
                        "feature 0: outer ring has fewer than 3 distinct vertices"),
    "3-point closed ring": ({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [2, 0], [0, 0]]]}},
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}}]},
        "feature 1: outer ring has fewer than 3 distinct vertices"),
    "NaN coordinate": ({"type": "Polygon", "coordinates": [[[0, 0], [float("nan"), 1], [1, 1], [0, 0]]]}, "NaN"),
    "string coordinate": ({"type": "Polygon", "coordinates": [[[0, 0], ["a", 1], [1, 1], [0, 0]]]}, "position 1"),
    "features not a list": ({"type": "FeatureCollection", "features": 3}, "'features' must be a list"),
    "feature not an object": ({"type": "FeatureCollection", "features": [7]}, "feature 0: expected a GeoJSON object"),
}


@pytest.mark.parametrize("case", list(_BAD_DOCS))
def test_bad_geojson_names_file_and_feature(case, tmp_path):
    doc, message = _BAD_DOCS[case]
    p = tmp_path / "regions.geojson"
    p.write_text(json.dumps(doc))
    before = p.read_bytes()
    with pytest.raises(SlideError) as err:
        read_polygons(p)
    assert "regions.geojson" in str(err.value) and message in str(err.value), str(err.value)
    assert "self-intersecting" not in str(err.value)
    assert p.read_bytes() == before
