"""Property-based: damaged .h5ad files and GeoJSON documents never crash the CLI.

Every run ends in exit 0 or exit 2 with one ``error:`` line and no traceback, leaves its inputs byte-identical
and leaves no temporary file behind. The CLI runs in-process (``main()``) on the tiny slide and 1-epoch model
of ``bad_inputs``; examples are few and cheap.
"""

from __future__ import annotations

import json
import math
import shutil
import uuid

import h5py
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# ---------------------------------------------------------------- .h5ad mutations
_H5_TARGETS = ["X/data", "X/indices", "X/indptr", "obsm/spatial", "obs/section/codes", "var/_index"]
_VALUES = st.sampled_from([math.nan, math.inf, -1.0, -(2**40), 0.5, 2**31 + 5, 10**9, 0.0, 7.0])

h5_mutation = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(_H5_TARGETS), st.integers(0, 10_000), _VALUES),
    st.tuples(st.just("delete"), st.sampled_from(_H5_TARGETS + ["obsm", "X", "obs/section"])),
    st.tuples(st.just("truncate"), st.floats(0.0, 0.999)),
    st.tuples(st.just("flip"), st.floats(0.0, 0.999), st.integers(1, 64)),
    st.tuples(st.just("string"), st.sampled_from(["obsm/spatial", "X/data"])),
)


def _mutate_h5(path, mutation) -> None:
    kind = mutation[0]
    if kind == "truncate":
        raw = path.read_bytes()
        path.write_bytes(raw[: int(mutation[1] * len(raw))])
        return
    if kind == "flip":
        raw = bytearray(path.read_bytes())
        start = int(mutation[1] * len(raw))
        for i in range(start, min(len(raw), start + mutation[2])):
            raw[i] ^= 0xFF
        path.write_bytes(bytes(raw))
        return
    with h5py.File(path, "r+") as f:
        if kind == "delete":
            if mutation[1] in f:
                del f[mutation[1]]
        elif kind == "string":
            if mutation[1] in f:
                shape = f[mutation[1]].shape
                del f[mutation[1]]
                f.create_dataset(mutation[1], data=np.full(shape, b"x", dtype="S1"))
        else:
            _, key, idx, value = mutation
            if key not in f or not isinstance(f[key], h5py.Dataset) or f[key].size == 0:
                return
            ds = f[key]
            flat = np.asarray(ds[...]).reshape(-1)
            i = idx % flat.size
            if ds.dtype.kind in "iu":
                if not math.isfinite(value):
                    return
                info = np.iinfo(ds.dtype)
                flat[i] = int(np.clip(value, info.min, info.max))
            elif ds.dtype.kind == "f":
                flat[i] = value
            else:
                return
            ds[...] = flat.reshape(ds.shape)


def _check(res, inputs_before, snapshot, inputs, out_dir):
    assert res.code in (0, 2), (res.code, res.err)
    assert "Traceback" not in res.err
    if res.code == 2:
        assert len([ln for ln in res.err.splitlines() if "error:" in ln]) == 1, res.err
    assert snapshot(*inputs) == inputs_before, "an input changed"
    assert not [p.name for p in out_dir.iterdir() if p.name.startswith(".") and p.name != ".squint-output.json"]


@SETTINGS
@given(mutations=st.lists(h5_mutation, min_size=1, max_size=3))
def test_damaged_h5ad_never_crashes(mutations, bad_inputs, tmp_path, h):
    d = tmp_path / uuid.uuid4().hex
    d.mkdir()
    data = d / "slide.h5ad"
    shutil.copy(bad_inputs["data"], data)
    for m in mutations:
        try:
            _mutate_h5(data, m)
        except OSError:  # an earlier mutation already broke the file for h5py: run it as it is
            break
    before = h.snapshot(data, bad_inputs["model"])
    res = h.run(["tokens", bad_inputs["model"], data, "--out", d / "t.h5ad"])
    _check(res, before, h.snapshot, [data, bad_inputs["model"]], d)


# ---------------------------------------------------------------- GeoJSON documents
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
                       st.text(max_size=4))
_json_any = st.recursive(_json_leaf, lambda c: st.one_of(st.lists(c, max_size=4),
                                                        st.dictionaries(st.text(max_size=5), c, max_size=3)),
                         max_leaves=8)
_coord = st.one_of(st.floats(-1e3, 1e3), st.just(math.nan), st.none(), st.text(max_size=2), st.integers(-5, 5))
_position = st.one_of(st.lists(_coord, min_size=0, max_size=3), _json_leaf)
_ring = st.one_of(st.lists(_position, min_size=0, max_size=6), _json_leaf)
_geometry = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["Polygon", "MultiPolygon", "Point", "polygon"]),
                           "coordinates": st.one_of(st.lists(_ring, max_size=3), _json_any)}),
    st.none(), _json_any)
_feature = st.one_of(
    st.fixed_dictionaries({"type": st.just("Feature"), "geometry": _geometry,
                           "properties": st.one_of(st.none(), st.fixed_dictionaries(
                               {"section": st.one_of(st.sampled_from(["section_0", "section_1", "nope"]),
                                                     _json_leaf)}), _json_any)}),
    _json_any)
geojson_doc = st.one_of(
    st.fixed_dictionaries({"type": st.just("FeatureCollection"),
                           "features": st.one_of(st.lists(_feature, max_size=3), _json_any)}),
    _feature, _geometry, _json_any)


@SETTINGS
@given(doc=geojson_doc, cut=st.one_of(st.none(), st.floats(0.0, 1.0)))
def test_any_geojson_never_crashes(doc, cut, bad_inputs, tmp_path, h):
    d = tmp_path / uuid.uuid4().hex
    d.mkdir()
    poly = d / "regions.geojson"
    text = json.dumps(doc)
    if cut is not None:  # truncation
        text = text[: int(cut * len(text))]
    poly.write_text(text)
    inputs = [poly, bad_inputs["data"], bad_inputs["model"]]
    before = h.snapshot(*inputs)
    res = h.run(["impute", bad_inputs["model"], bad_inputs["data"], "--polygons", poly, "--out", d / "o.h5ad"])
    _check(res, before, h.snapshot, inputs, d)
