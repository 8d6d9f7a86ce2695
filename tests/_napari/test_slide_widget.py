"""The Slide & model dock driven as a user would: open, lay out, train, save, load, close."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest

from napari_squint import _constants as K
from napari_squint._napari.layers import cell_layers
from napari_squint._napari.slide_widget import SlideModelWidget, parse_genes


def _open(viewer, path):
    w = SlideModelWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.open_slide(path)
    assert w.last_error is None, w.last_error
    return w


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_parse_genes():
    assert parse_genes(" all ") == "all"
    assert parse_genes("50") == 50
    assert parse_genes("Gad1, Sst  Pvalb") == ["Gad1", "Sst", "Pvalb"]


def test_open_h5ad_shows_one_layer_per_section_side_by_side(viewer, tissue, tmp_path):
    path = tmp_path / "tissue.h5ad"
    tissue.write_h5ad(path)
    w = _open(viewer, path)
    layers = cell_layers(viewer)
    assert [lyr.name for lyr in layers] == ["cells · section_0", "cells · section_1"]
    assert sum(len(lyr.data) for lyr in layers) == tissue.n_obs
    # side by side: the drawn extents do not overlap
    (a0, a1), (b0, b1) = (lyr.extent.world[:, 1] for lyr in layers)
    assert a1 < b0 or b1 < a0
    assert w.session.adata.n_obs == tissue.n_obs
    assert w.session.source["path"] == str(path)
    assert "900 cells" in w.info_label.text()


def test_one_at_a_time_layout_switches_sections(slide_widget, viewer):
    w = slide_widget
    w.layout_combo.setCurrentText("one at a time")
    layers = cell_layers(viewer)
    assert [lyr.visible for lyr in layers] == [True, False]
    assert np.allclose(layers[0].translate, 0) and np.allclose(layers[1].translate, 0)
    w.show_combo.setCurrentText("section_1")
    assert [lyr.visible for lyr in cell_layers(viewer)] == [False, True]


def test_section_key_none_gives_one_layer(slide_widget, viewer):
    slide_widget.section_combo.setCurrentText("(none: one section)")
    layers = cell_layers(viewer)
    assert len(layers) == 1 and len(layers[0].data) == 900


def test_train_assigns_tokens_and_marks_unsaved(slide_widget, viewer):
    w = slide_widget
    w.epochs_spin.setValue(1)
    w.codebook_spin.setValue(6)
    job = w.train(hidden=32, latent=16, batch_size=256, device="cpu", num_threads=1)
    assert w.last_error is None, w.last_error
    s = w.session
    assert s.model is not None and len(s.model.history) == 1
    assert s.model.config.model.codebook_size == 6
    assert K.TOKEN_KEY in s.adata.obs and s.adata.obs[K.TOKEN_KEY].notna().all()
    assert s.adata.obsm[K.LATENT_KEY].shape[0] == 900
    assert s.dirty and "unsaved" in w.dirty_label.text()
    assert job.seconds > 0 and not job.running
    assert "trained 1 epochs" in w.status.text()


def test_train_without_slide_reports_an_error(viewer):
    w = SlideModelWidget(viewer)
    w.train()
    assert isinstance(w.last_error, RuntimeError) and "no slide" in str(w.last_error)


def test_save_model_then_load_it_in_a_fresh_viewer(trained, make_napari_viewer, tissue, tmp_path):
    out = trained.save_model(tmp_path / "model")
    assert (out / "config.json").exists()
    viewer2 = make_napari_viewer()
    w2 = SlideModelWidget(viewer2)
    w2.session.set_slide(tissue.copy(), source={"format": "synthetic"})
    w2.show_cells()
    w2.load_model(out)
    assert w2.last_error is None, w2.last_error
    tok1 = trained.session.adata.obs[K.TOKEN_KEY].to_numpy()
    tok2 = w2.session.adata.obs[K.TOKEN_KEY].to_numpy()
    assert np.array_equal(tok1.astype(int), tok2.astype(int))
    assert w2.session.model_dir == out


def test_save_results_adds_elements_and_leaves_originals_untouched(viewer, tissue, tmp_path, tiny_model):
    import spatialdata as sd

    from napari_squint.io.geojson import Region
    from napari_squint.io.write import to_spatialdata, write_spatialdata

    store = tmp_path / "slide.zarr"
    write_spatialdata(to_spatialdata(tissue), store)
    before = {name: _tree_digest(store / kind / name) for kind in ("shapes", "tables")
              for name in (p.name for p in (store / kind).iterdir() if p.is_dir())}
    w = _open(viewer, store)
    assert len(cell_layers(viewer)) == 2
    s = w.session
    s.set_model(tiny_model)
    tiny_model.tokens(s.adata)
    from shapely.geometry import box

    s.regions = [Region("section_1", box(100, 100, 160, 160), "r0")]
    s.mark_changed("tokens")
    out = w.save_results()
    assert out == store and not s.dirty
    after = sd.read_zarr(store)
    assert {"table", "squint_cells"} <= set(after.tables)
    assert "squint_regions_section_1" in after.shapes
    res = after.tables["squint_cells"]
    assert np.array_equal(res.obs[K.TOKEN_KEY].astype(int).to_numpy(), s.adata.obs[K.TOKEN_KEY].astype(int).to_numpy())
    assert res.uns["spatialdata_attrs"]["region_key"] == "region"
    assert K.TOKEN_KEY not in after.tables["table"].obs
    for name, digest in before.items():
        kind = "shapes" if name.startswith("cells") else "tables"
        assert _tree_digest(store / kind / name) == digest, f"{name} was modified"
    # saving twice overwrites only squint elements
    s.mark_changed("tokens")
    assert w.save_results() == store


def test_save_results_from_h5ad_goes_beside_it(viewer, tissue, tmp_path, tiny_model):
    import spatialdata as sd

    path = tmp_path / "t.h5ad"
    tissue.write_h5ad(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    w = _open(viewer, path)
    w.session.set_model(tiny_model)
    tiny_model.tokens(w.session.adata)
    w.session.mark_changed("tokens")
    out = w.save_results()
    assert out == tmp_path / "t.squint.zarr"
    sdata = sd.read_zarr(out)
    assert K.TOKEN_KEY not in sdata.tables["table"].obs  # the slide as read
    assert K.TOKEN_KEY in sdata.tables["squint_cells"].obs
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    # refusing to overwrite the input
    assert w.save_results(path) is None and "never overwritten" in str(w.last_error)


def test_closing_with_unsaved_work_asks_first(viewer, trained):
    s = trained.session
    asked = []
    s.ask_on_close = lambda sess: asked.append(sess) or "cancel"
    from napari_squint._napari.hooks import main_window_of

    window = main_window_of(trained)
    assert window.close() is False  # refused: the work is not lost
    assert asked == [s] and s.dirty
    s.ask_on_close = lambda sess: asked.append(sess) or "discard"
    assert window.close() is True
    assert len(asked) == 2
    s.dirty = False


def test_closing_with_save_writes_the_results(viewer, trained, tmp_path):
    s = trained.session
    s.source = {"format": "h5ad", "path": str(tmp_path / "in.h5ad")}
    s.ask_on_close = lambda sess: "save"
    from napari_squint._napari.hooks import main_window_of

    assert main_window_of(trained).close() is True
    assert (tmp_path / "in.squint.zarr" / "tables" / "squint_cells").is_dir()
    assert not s.dirty


def test_npe2_writer_writes_the_session(viewer, trained, tmp_path):
    from napari_squint._napari._writer import write_slide

    layers = cell_layers(viewer)
    out = write_slide(str(tmp_path / "out.h5ad"), [lyr.as_layer_data_tuple() for lyr in layers])
    import anndata as ad

    back = ad.read_h5ad(out[0])
    assert K.TOKEN_KEY in back.obs and back.n_obs == 900
    assert write_slide(str(tmp_path / "x.zarr"), [(np.zeros((2, 2)), {"metadata": {}}, "points")]) == []


def test_sample_data_synthetic():
    from napari_squint._napari._sample_data import synthetic_tissue

    tuples = synthetic_tissue(n_cells=600, n_genes=40)
    assert [t[2] for t in tuples] == ["points", "points"]
    assert sum(len(t[0]) for t in tuples) == 600


def test_reader_rejects_other_files(tmp_path):
    from napari_squint._napari._reader import napari_get_reader

    (tmp_path / "x.txt").write_text("no")
    assert napari_get_reader(str(tmp_path / "x.txt")) is None
    assert napari_get_reader([str(tmp_path / "a.h5ad"), str(tmp_path / "b.h5ad")]) is None


@pytest.mark.real_data
def test_merfish_opens_as_nine_sections_quickly(merfish_path, viewer):
    t0 = time.perf_counter()
    w = _open(viewer, merfish_path)
    seconds = time.perf_counter() - t0
    layers = cell_layers(viewer)
    assert len(layers) == 9
    assert sum(len(lyr.data) for lyr in layers) == 49_468
    assert all(lyr.name.startswith("cells · Animal") for lyr in layers)
    assert seconds < 15, f"opening MERFISH took {seconds:.1f} s"  # 5 s target measured in benchmarks/
    assert w.session.section_key == "section"


@pytest.mark.real_data
def test_sample_data_merfish(merfish_path, monkeypatch):
    from napari_squint._napari._sample_data import MERFISH_ENV, merfish_path as find, merfish_slide

    monkeypatch.setenv(MERFISH_ENV, str(merfish_path.parent))
    assert find() == merfish_path
    tuples = merfish_slide()
    assert len(tuples) == 9 and sum(len(t[0]) for t in tuples) == 49_468
    assert all(t[1]["name"].startswith("cells · Animal") for t in tuples)


def test_sample_data_merfish_missing_says_where_to_put_it(monkeypatch, tmp_path):
    import napari_squint._napari._sample_data as sd

    monkeypatch.setenv(sd.MERFISH_ENV, str(tmp_path / "nowhere.h5ad"))
    monkeypatch.setattr(sd, "merfish_path", lambda: None)
    with pytest.raises(FileNotFoundError, match=sd.MERFISH_ENV):
        sd.merfish_slide()


def test_file_open_and_save_through_napari(viewer, tissue, tmp_path, tiny_model):
    """File > Open (npe2 reader) on a SpatialData store, the widgets adopt it, File > Save (npe2 writer)."""
    import spatialdata as sd

    from napari_squint._napari.session import get_session
    from napari_squint._napari.tokens_widget import TokensWidget
    from napari_squint.io.write import to_spatialdata, write_spatialdata

    store = tmp_path / "slide.zarr"
    write_spatialdata(to_spatialdata(tissue), store)
    viewer.open(str(store), plugin="napari-squint")
    layers = cell_layers(viewer)
    assert [lyr.name for lyr in layers] == ["cells · section_0", "cells · section_1"]
    w = TokensWidget(viewer)  # opened after the file: adopts the slide from the layers
    s = get_session(viewer)
    assert w.session is s and s.adata is layers[0].metadata["squint_adata"]
    assert s.source["format"] == "spatialdata" and s.section_key == "section"
    s.set_model(tiny_model)
    w.assign_tokens()
    assert s.has_tokens
    out = tmp_path / "saved.zarr"
    viewer.layers.selection = set(layers)
    written = viewer.layers.save(str(out), selected=True, plugin="napari-squint")
    assert written == [str(out)]
    back = sd.read_zarr(out)
    assert K.TOKEN_KEY in back.tables["squint_cells"].obs
    s.dirty = False


def test_saving_results_is_quiet(viewer, tissue, tmp_path, tiny_model):
    import warnings

    path = tmp_path / "q.h5ad"
    tissue.write_h5ad(path)
    w = _open(viewer, path)
    w.session.set_model(tiny_model)
    tiny_model.tokens(w.session.adata)
    w.session.mark_changed("tokens")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert w.save_results() == tmp_path / "q.squint.zarr"
    assert not [x for x in caught if "autosharding" in str(x.message)]
