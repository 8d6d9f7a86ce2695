"""Output rules through the Python API: never onto an input, never over what the tool did not write, atomic."""

from __future__ import annotations

import json

import pytest

from napari_squint.io.outputs import (
    MARKER,
    OutputError,
    OutputFiles,
    atomic_path,
    check_output,
    is_own_folder,
    output_folder,
)
from napari_squint.io.write import write_h5ad


def test_output_equal_to_or_around_an_input_is_refused(tmp_path):
    data = tmp_path / "d" / "slide.h5ad"
    data.parent.mkdir()
    data.write_bytes(b"x")
    with pytest.raises(OutputError, match=f"{data}.*{data}"):
        check_output(data, inputs=[data], overwrite=True)
    with pytest.raises(OutputError, match="holds the input"):
        check_output(data.parent, inputs=[data], overwrite=True, folder=True)
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(OutputError, match="inside the input folder"):
        check_output(model / "t.h5ad", inputs=[model])


def test_existing_outputs_need_overwrite_and_must_be_ours(tmp_path, tissue):
    user = tmp_path / "user.h5ad"
    user.write_bytes(b"mine")
    with pytest.raises(OutputError, match="exists"):
        write_h5ad(tissue, user)
    with pytest.raises(OutputError, match="not written by napari-squint"):
        write_h5ad(tissue, user, overwrite=True)
    assert user.read_bytes() == b"mine"
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    with pytest.raises(OutputError, match="not written by napari-squint"):
        check_output(folder, overwrite=True, folder=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_output(empty, folder=True) == empty  # nothing to lose


def test_output_folder_is_atomic_and_marked(tmp_path):
    out = tmp_path / "report"
    with pytest.raises(RuntimeError):
        with output_folder(out) as stage:
            (stage / "figures").mkdir()
            raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no empty figures/, no staging folder
    with output_folder(out) as stage:
        (stage / "a.csv").write_text("1")
    assert is_own_folder(out) and json.loads((out / MARKER).read_text())["kind"] == "folder"
    with output_folder(out, overwrite=True) as stage:
        (stage / "b.csv").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "b.csv"]


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path):
    p = tmp_path / "summary.json"
    with atomic_path(p) as tmp:
        tmp.write_text("old")
    with pytest.raises(ValueError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise ValueError("failed mid-write")
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == [MARKER, "summary.json"]


def test_output_files_publish_together_or_not_at_all(tmp_path):
    files = OutputFiles()
    with pytest.raises(KeyError):
        with files:
            files.add(tmp_path / "a.csv").write_text("a")
            raise KeyError("late failure")
    assert list(tmp_path.iterdir()) == []
    with OutputFiles() as files:
        files.add(tmp_path / "a.csv").write_text("a")
        files.add(tmp_path / "b.png").write_bytes(b"b")
    assert sorted(x.name for x in tmp_path.iterdir()) == [MARKER, "a.csv", "b.png"]
    with OutputFiles(overwrite=True) as files:  # the tool's own files: replaceable
        files.add(tmp_path / "a.csv").write_text("A")
    assert (tmp_path / "a.csv").read_text() == "A"


def test_model_save_follows_the_same_rules(tmp_path, trained_tiny):
    user = tmp_path / "my_folder"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    with pytest.raises(OutputError, match="exists"):
        trained_tiny.save(user)
    with pytest.raises(OutputError, match="not written by napari-squint"):
        trained_tiny.save(user, overwrite=True)
    assert (user / "notes.txt").read_text() == "keep" and len(list(user.iterdir())) == 1
    m = trained_tiny.save(tmp_path / "m")
    trained_tiny.save(m, overwrite=True)
    # a model folder written before the marker existed is still recognised as the tool's own
    (m / MARKER).unlink()
    assert is_own_folder(m)
    trained_tiny.save(m, overwrite=True)


def test_write_polygons_refuses_a_foreign_file(tmp_path):
    from shapely.geometry import box

    from napari_squint.io.geojson import Region, write_polygons

    p = tmp_path / "r.geojson"
    p.write_text("{}")
    with pytest.raises(OutputError):
        write_polygons([Region("s", box(0, 0, 1, 1), "r")], p, overwrite=True)
    assert p.read_text() == "{}"
