"""Every bad input of issue 13 through the CLI: exit code 2, one line naming the file/key/value, no traceback,
input bytes unchanged, and nothing left behind."""

from __future__ import annotations

import json

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp


ONE_EPOCH = ["--epochs", "1", "--codebook-size", "8", "--batch-size", "256"]


def _write_slide(adata, path):
    adata.write_h5ad(path)
    return path


# ----------------------------------------------------------------- case builders: (argv, needles)
def _train_into_input_folder(w):
    (w["root"] / "notes.txt").write_text("precious")
    return ["train", w["data"], "--out", w["root"], *ONE_EPOCH], [str(w["root"]), str(w["data"])]


def _train_out_is_input(w):
    return ["train", w["data"], "--out", w["data"], *ONE_EPOCH], [str(w["data"])]


def _impute_out_is_input(w):
    return (["impute", w["model"], w["data"], "--polygons", w["polygons"], "--out", w["data"]], [str(w["data"])])


def _tokens_out_is_input(w):
    return ["tokens", w["model"], w["data"], "--out", w["data"]], [str(w["data"])]


def _stratify_out_is_input(w):
    return (["stratify", w["model"], w["data"], "--condition", "condition", "--group", "a", "--out", w["data"]],
            [str(w["data"])])


def _tokens_out_inside_model(w):
    return ["tokens", w["model"], w["data"], "--out", w["model"] / "t.h5ad"], [str(w["model"])]


def _tokens_out_existing_folder(w):
    d = w["tmp"] / "existing"
    d.mkdir()
    return ["tokens", w["model"], w["data"], "--out", d], [str(d)]


def _tokens_out_foreign_file(w):
    f = w["tmp"] / "mine.h5ad"
    f.write_bytes(b"the user's own file")
    return ["tokens", w["model"], w["data"], "--out", f, "--overwrite"], [str(f), "not written by napari-squint"]


def _train_over_foreign_folder(w):
    d = w["tmp"] / "results"
    d.mkdir()
    (d / "keep.txt").write_text("keep")
    return ["train", w["data"], "--out", d, "--overwrite", *ONE_EPOCH], [str(d), "not written by napari-squint"]


def _bad_indices(w):
    a = w["adata"].copy()
    X = sp.csr_matrix(a.X)
    X.indices[5] = a.n_vars + 7  # anndata reads it without complaint
    p = w["root"] / "bad_indices.h5ad"
    a.X = X
    a.write_h5ad(p)
    return ["train", p, "--out", w["tmp"] / "m", *ONE_EPOCH], [str(p), "index", str(a.n_vars + 7)]


def _bad_indptr(w):
    p = w["root"] / "bad_indptr.h5ad"
    w["adata"].write_h5ad(p)
    with h5py.File(p, "r+") as f:
        ip = f["X/indptr"][:]
        ip[10] = ip[12] + 5
        f["X/indptr"][:] = ip
    return ["train", p, "--out", w["tmp"] / "m", *ONE_EPOCH], [str(p), "indptr"]


def _flipped_weights(w):
    f = w["model"] / "model.safetensors"
    b = bytearray(f.read_bytes())
    for i in range(len(b) - 400, len(b) - 300):
        b[i] ^= 0xFF
    f.write_bytes(bytes(b))
    return ["tokens", w["model"], w["data"], "--out", w["tmp"] / "t.h5ad"], [str(f), "SHA-256"]


def _geojson_top_list(w):
    p = w["root"] / "list.geojson"
    p.write_text(json.dumps([{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}]))
    return (["impute", w["model"], w["data"], "--polygons", p, "--out", w["tmp"] / "o.h5ad"],
            [str(p), "top level", "list"])


def _geojson_null_geometry(w):
    p = w["root"] / "null.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"section": "section_0"}, "geometry": None}]}))
    return (["impute", w["model"], w["data"], "--polygons", p, "--out", w["tmp"] / "o.h5ad"],
            ["null.geojson", "feature 0", "geometry is null"])


def _perturb_geojson_list(w):
    p = w["root"] / "list.geojson"
    p.write_text("[]")
    return (["perturb", w["model"], w["data"], "--region", p, "--replace", "t0", "--prototype", "t1",
             "--responders", "t2", "--out", w["tmp"] / "p"], [str(p), "list"])


def _perturb_geojson_null(w):
    p = w["root"] / "null.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": None}]}))
    return (["perturb", w["model"], w["data"], "--region", p, "--replace", "t0", "--prototype", "t1",
             "--responders", "t2", "--out", w["tmp"] / "p"], ["null.geojson", "feature 0", "null"])


def _two_point_polygon(w):
    p = w["root"] / "two.geojson"
    p.write_text(json.dumps({"type": "Feature", "properties": {"section": "section_0"},
                             "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}}))
    return (["impute", w["model"], w["data"], "--polygons", p, "--out", w["tmp"] / "o.h5ad"],
            ["two.geojson", "feature 0", "fewer than 3 distinct vertices"])


def _three_point_closed_ring(w):
    p = w["root"] / "three.geojson"
    p.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"section": "section_0"},
         "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}},
        {"type": "Feature", "properties": {"section": "section_0"},
         "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}}]}))
    return (["impute", w["model"], w["data"], "--polygons", p, "--out", w["tmp"] / "o.h5ad"],
            ["three.geojson", "feature 1", "fewer than 3 distinct vertices"])


def _truncated_h5ad(w):
    p = w["root"] / "truncated.h5ad"
    p.write_bytes(w["data"].read_bytes()[:3000])
    return ["train", p, "--out", w["tmp"] / "m", *ONE_EPOCH], [str(p)]


def _not_h5ad(w):
    p = w["root"] / "text.h5ad"
    p.write_text("not an hdf5 file")
    return ["tokens", w["model"], p, "--out", w["tmp"] / "t.h5ad"], [str(p)]


def _truncated_weights(w):
    f = w["model"] / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    meta = json.loads((w["model"] / "meta.json").read_text())
    meta.pop("weights_sha256")  # an old folder: no checksum to catch it first
    (w["model"] / "meta.json").write_text(json.dumps(meta))
    return ["tokens", w["model"], w["data"], "--out", w["tmp"] / "t.h5ad"], [str(f), "safetensors"]


def _empty_weights(w):
    f = w["model"] / "model.safetensors"
    f.write_bytes(b"")
    return ["tokens", w["model"], w["data"], "--out", w["tmp"] / "t.h5ad"], [str(f)]


def _edit_config(w, section, key, value):
    f = w["model"] / "config.json"
    cfg = json.loads(f.read_text())
    cfg[section][key] = value
    f.write_text(json.dumps(cfg))
    return f


def _config_wrong_type(w):
    f = _edit_config(w, "model", "hidden", "wide")
    return ["tokens", w["model"], w["data"], "--out", w["tmp"] / "t.h5ad"], [str(f), "model.hidden", "'wide'"]


def _config_absurd_size(w):
    f = _edit_config(w, "model", "hidden", 1_000_000_000)
    return ["tokens", w["model"], w["data"], "--out", w["tmp"] / "t.h5ad"], [str(f), "model.hidden", "1000000000"]


def _config_disagrees(w):
    _edit_config(w, "model", "hidden", 48)
    return ["tokens", w["model"], w["data"], "--out", w["tmp"] / "t.h5ad"], ["config.json", "model.safetensors", "shape"]


def _config_not_json(w):
    f = w["model"] / "config.json"
    f.write_text('{"graph": {"k": 8,}')
    return ["tokens", w["model"], w["data"], "--out", w["tmp"] / "t.h5ad"], [str(f), "not valid JSON"]


def _config_huge_k(w):
    f = _edit_config(w, "graph", "k", 100000)
    return ["tokens", w["model"], w["data"], "--out", w["tmp"] / "t.h5ad"], [str(f), "k=100000", "configuration"]


def _genes_disagree(w):
    f = w["model"] / "genes.txt"
    f.write_text("\n".join(f.read_text().split()[:-2]) + "\n")
    return ["tokens", w["model"], w["data"], "--out", w["tmp"] / "t.h5ad"], ["genes.txt", "model.safetensors"]


def _meta_disagrees(w):
    f = w["model"] / "meta.json"
    meta = json.loads(f.read_text())
    meta["sections"] = meta["sections"] + ["section_9", "section_10"]
    f.write_text(json.dumps(meta))
    return ["tokens", w["model"], w["data"], "--out", w["tmp"] / "t.h5ad"], ["meta.json", "model.safetensors"]


def _k_zero(w):
    return ["train", w["data"], "--out", w["tmp"] / "m", "--k", "0"], ["--k", "0"]


def _epochs_zero(w):
    return ["train", w["data"], "--out", w["tmp"] / "m", "--epochs", "0"], ["--epochs", "0"]


def _epochs_negative(w):
    return ["train", w["data"], "--out", w["tmp"] / "m", "--epochs", "-1"], ["--epochs", "-1"]


def _batch_size_zero(w):
    return ["train", w["data"], "--out", w["tmp"] / "m", "--batch-size", "0"], ["--batch-size", "0"]


def _genes_too_many(w):
    return ["train", w["data"], "--out", w["tmp"] / "m", "--genes", "100000", *ONE_EPOCH], ["100000", "30 genes"]


def _genes_names_unknown(w):
    return ["train", w["data"], "--out", w["tmp"] / "m", "--genes", "Foo,Bar", *ONE_EPOCH], ["Foo", "Bar"]


def _all_zero_slide(w):
    a = w["adata"].copy()
    a.X = sp.csr_matrix(a.shape, dtype=np.float32)
    p = _write_slide(a, w["root"] / "zeros.h5ad")
    return ["train", p, "--out", w["tmp"] / "m", *ONE_EPOCH], ["adata.X", "zero counts"]


def _stratify_no_column(w):
    return (["stratify", w["model"], w["data"], "--condition", "nosuchcol", "--group", "a", "--out",
             w["tmp"] / "s.h5ad"], ["nosuchcol", "condition", "section"])


def _zero_depth_section(w):
    a = w["adata"].copy()
    X = sp.csr_matrix(a.X, dtype=np.float32).tolil()
    sec0 = np.flatnonzero((a.obs["section"] == "section_0").to_numpy())
    for i in sec0[: int(0.8 * sec0.size)]:
        X[i, :] = 0
    a.X = X.tocsr()
    p = _write_slide(a, w["root"] / "sparse_section.h5ad")
    return (["impute", w["model"], p, "--polygons", w["polygons"], "--out", w["tmp"] / "o.h5ad"],
            ["section_0", "zero counts", "cells ["])


def _perturb_fails(w):
    return (["perturb", w["model"], w["data"], "--region", w["polygons"], "--replace", "no_such_type",
             "--prototype", "t1", "--responders", "t2", "--out", w["tmp"] / "p"], ["no_such_type"])


CASES = {
    "train --out the input's folder": _train_into_input_folder,
    "train --out the input file": _train_out_is_input,
    "impute --out the input": _impute_out_is_input,
    "tokens --out the input": _tokens_out_is_input,
    "stratify --out the input": _stratify_out_is_input,
    "tokens --out inside the model folder": _tokens_out_inside_model,
    "tokens --out an existing folder": _tokens_out_existing_folder,
    "--overwrite over a file the tool did not write": _tokens_out_foreign_file,
    "--overwrite over a folder the tool did not write": _train_over_foreign_folder,
    "sparse column index out of range": _bad_indices,
    "sparse indptr not monotone": _bad_indptr,
    "flipped bytes in model.safetensors": _flipped_weights,
    "impute: GeoJSON top level is a list": _geojson_top_list,
    "impute: geometry null": _geojson_null_geometry,
    "perturb: GeoJSON top level is a list": _perturb_geojson_list,
    "perturb: geometry null": _perturb_geojson_null,
    "2-point polygon": _two_point_polygon,
    "3-point closed ring": _three_point_closed_ring,
    "truncated .h5ad": _truncated_h5ad,
    "text file named .h5ad": _not_h5ad,
    "truncated safetensors (no checksum)": _truncated_weights,
    "empty safetensors": _empty_weights,
    "config.json value of the wrong type": _config_wrong_type,
    "config.json absurd size": _config_absurd_size,
    "config.json disagrees with the weights": _config_disagrees,
    "config.json not JSON": _config_not_json,
    "config.json k=100000": _config_huge_k,
    "genes.txt disagrees with the weights": _genes_disagree,
    "meta.json disagrees with the weights": _meta_disagrees,
    "--k 0": _k_zero,
    "--epochs 0": _epochs_zero,
    "--epochs -1": _epochs_negative,
    "--batch-size 0": _batch_size_zero,
    "--genes 100000": _genes_too_many,
    "--genes Foo,Bar": _genes_names_unknown,
    "all-zero slide": _all_zero_slide,
    "stratify --condition nosuchcol": _stratify_no_column,
    "median read depth 0 in a section": _zero_depth_section,
    "failed perturb": _perturb_fails,
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clean_line(case, work, h, capsys):
    argv, needles = CASES[case](work)
    out_i = argv.index("--out") + 1
    out = work["tmp"] / "nothing" if not str(argv[out_i]).startswith(str(work["tmp"])) else argv[out_i]
    existed = out.exists() if hasattr(out, "exists") else False
    before = h.snapshot(work["root"])
    before_out = h.snapshot(out) if existed else None
    try:
        res = h.run(argv)
    except SystemExit as exc:  # argparse range checks: exit 2 with usage + one error line
        res = type("R", (), {})()
        res.code, res.err = exc.code, capsys.readouterr().err
    if res.code == 2 and "usage:" in res.err:  # argparse's own message
        assert "Traceback" not in res.err
        line = [ln for ln in res.err.splitlines() if "error:" in ln]
        assert len(line) == 1 and all(n in line[0] for n in needles), res.err
    else:
        h.clean(res, *needles)
    assert h.snapshot(work["root"]) == before, "an input file changed"
    if existed:
        assert h.snapshot(out) == before_out, "an existing output changed"
    else:
        assert not out.exists(), f"a failed command left {out} behind"
    leftovers = [p.name for p in work["tmp"].iterdir() if p.name.startswith(".")]
    assert not leftovers, leftovers


def test_debug_shows_the_traceback(work, h):
    from napari_squint.io.outputs import OutputError

    with pytest.raises(OutputError):
        h.run(["train", work["data"], "--out", work["data"], "--debug"])


def test_fourth_coordinate_column_is_warned(work, h):
    a = work["adata"].copy()
    a.obsm["spatial"] = np.column_stack([a.obsm["spatial"], np.zeros(a.n_obs), np.arange(a.n_obs, dtype=float)])
    p = _write_slide(a, work["root"] / "xyzw.h5ad")
    res = h.run(["train", p, "--out", work["tmp"] / "m", *ONE_EPOCH])
    assert res.code == 0
    assert "warning: adata.obsm['spatial'] has 4 columns" in res.err and "ignored" in res.err


def test_overwrite_replaces_only_the_tools_own_outputs(work, h):
    m = work["tmp"] / "m"
    assert h.run(["train", work["data"], "--out", m, *ONE_EPOCH]).code == 0
    assert (m / ".squint-output.json").exists()
    res = h.run(["train", work["data"], "--out", m, *ONE_EPOCH])
    h.clean(res, str(m), "--overwrite")
    assert h.run(["train", work["data"], "--out", m, "--overwrite", *ONE_EPOCH]).code == 0
    t = work["tmp"] / "t.h5ad"
    assert h.run(["tokens", m, work["data"], "--out", t]).code == 0
    h.clean(h.run(["tokens", m, work["data"], "--out", t]), str(t), "exists")
    assert h.run(["tokens", m, work["data"], "--out", t, "--overwrite"]).code == 0
    assert "squint_token" in ad.read_h5ad(t).obs
    t.touch()  # a file changed since the tool wrote it is no longer the tool's
    import os

    st = t.stat()
    os.utime(t, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    h.clean(h.run(["tokens", m, work["data"], "--out", t, "--overwrite"]), str(t))


def test_successful_commands_leave_no_temporary_files(work, h):
    p = work["tmp"] / "p"
    res = h.run(["perturb", work["model"], work["data"], "--region", work["polygons"], "--replace", "t0",
                   "--prototype", "t1", "--responders", "t2", "--out", p, "--cell-type-key", "cell_type"])
    if res.code == 2:  # no such cell type inside the box on this tiny slide: nothing may be left
        assert not p.exists()
    s = work["tmp"] / "s.h5ad"
    res = h.run(["stratify", work["model"], work["data"], "--condition", "condition", "--group", "a",
                   "--out", s, "--dpi", "40"])
    assert res.code == 0, res.err
    summary = json.loads((work["tmp"] / "s_summary.json").read_text())
    assert summary["files"]["h5ad"] == str(s)  # final paths, not temporary ones
    assert not [q.name for q in work["tmp"].iterdir() if q.name.startswith(".") and q.name != ".squint-output.json"]
