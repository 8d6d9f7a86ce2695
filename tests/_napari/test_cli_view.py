"""``squint view``: napari opens with the docks, the slide shown and the model loaded."""

from __future__ import annotations

import numpy as np

from napari_squint import _constants as K
from napari_squint._napari.launch import DOCKS, open_viewer
from napari_squint._napari.layers import cell_layers


def test_open_viewer_with_slide_and_model(tissue, tiny_model, tmp_path):
    path = tmp_path / "t.h5ad"
    tissue.write_h5ad(path)
    model_dir = tiny_model.save(tmp_path / "model")
    viewer, docks = open_viewer(path, model_dir=model_dir, show=False)
    try:
        assert list(docks) == [name for name, _, _ in DOCKS]
        assert set(docks) <= set(viewer.window.dock_widgets)
        assert len(cell_layers(viewer)) == 2
        s = docks["Slide & model"].session
        assert s.model is not None and s.model_dir == model_dir
        assert np.array_equal(s.adata.obs[K.TOKEN_KEY].astype(int), tiny_model.tokens(tissue, copy=True).obs[K.TOKEN_KEY].astype(int))
        assert docks["Tokens"].legend.count() > 1  # coloured by token on load
        assert all(d.session is s for d in docks.values())
        from qtpy.QtWidgets import QApplication, QTabBar

        from napari_squint._napari.hooks import main_window_of

        QApplication.processEvents()
        bars = [b for b in main_window_of(docks["Tokens"]).findChildren(QTabBar) if b.count() == len(DOCKS)]
        assert len(bars) == 1  # one tab group
        assert bars[0].tabText(bars[0].currentIndex()) == "Slide && model"  # front, "&" escaped for the tab bar
    finally:
        s.dirty = False
        viewer.close()


def test_squint_view_command(tissue, tmp_path, monkeypatch):
    import napari

    from napari_squint.cli.main import build_parser, main

    args = build_parser().parse_args(["view", "x.h5ad", "--model", "m", "--layout", "single", "--section-key", "none"])
    assert (args.data, args.model, args.layout, args.section_key) == ("x.h5ad", "m", "single", "none")
    path = tmp_path / "t.h5ad"
    tissue.write_h5ad(path)
    ran = []
    monkeypatch.setattr(napari, "run", lambda *a, **k: ran.append(True))
    assert main(["view", str(path), "--section-key", "none", "--layout", "single"]) == 0
    viewer = napari.current_viewer()
    try:
        assert ran == [True]
        layers = cell_layers(viewer)
        assert len(layers) == 1 and len(layers[0].data) == tissue.n_obs  # --section-key none: one section
    finally:
        viewer.close()
