"""Screenshots of every squint dock widget on the real MERFISH slide, for docs/user_guide.md.

Run under Xvfb (napari draws a blank canvas with ``QT_QPA_PLATFORM=offscreen``)::

    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshots.py [--model DIR] [--epochs 8]

The widgets are driven exactly as a user would (open the file, train, draw a
polygon, click Impute ...), with jobs run synchronously so each screenshot is
taken when its result is on screen. The trained model is cached in
``out/screenshot_model`` (``--model`` reuses any saved model). PNGs go to
``docs/screenshots/`` as 256-colour images (each well under 400 KB).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("NAPARI_SQUINT_SYNC", "1")
os.environ.setdefault("NAPARI_SQUINT_ON_CLOSE", "discard")

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
PROGRAMME = ["Aqp4", "Aldh1l1", "Mlc1", "Selplg", "Slc15a3", "Ermn", "Opalin", "Pdgfra", "Gad1", "Slc17a6", "Rgs5"]


def settle(app, n: int = 5) -> None:
    for _ in range(n):
        app.processEvents()
        time.sleep(0.05)


def save(viewer, app, name: str, *, width: int = 1360) -> Path:
    """Grab the whole window, shrink it to ``width`` and store it as a 256-colour PNG."""
    from PIL import Image

    settle(app)
    img = viewer.screenshot(canvas_only=False, flash=False)
    im = Image.fromarray(np.asarray(img)).convert("RGB")
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
    im = im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.png"
    im.save(path, optimize=True)
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} KB", flush=True)
    return path


def show_dock(viewer, name: str) -> None:
    """Bring one dock to the front (they are tabbed on the right)."""
    from qtpy.QtWidgets import QDockWidget

    w = viewer.window.dock_widgets[name]
    while w is not None and not isinstance(w, QDockWidget):
        w = w.parent()
    if w is not None:
        w.show()
        w.raise_()


def zoom_to(viewer, layer_info: dict, *, pad: float = 0.05) -> None:
    """Centre the camera on one section."""
    x0, y0, x1, y1 = layer_info["bounds"]
    dy, dx = layer_info["offset"]
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = ((y0 + y1) / 2 + dy, (x0 + x1) / 2 + dx)
    h, w = viewer.window._qt_viewer.canvas.size
    camera.zoom = min(h / ((y1 - y0) * (1 + pad)), w / ((x1 - x0) * (1 + pad)))


def square(info: dict, centre=(0.5, 0.5), half: float = 0.08) -> np.ndarray:
    x0, y0, x1, y1 = info["bounds"]
    dy, dx = info["offset"]
    cx, cy, h = x0 + centre[0] * (x1 - x0), y0 + centre[1] * (y1 - y0), half * (x1 - x0)
    return np.array([[cy - h + dy, cx - h + dx], [cy - h + dy, cx + h + dx], [cy + h + dy, cx + h + dx],
                     [cy + h + dy, cx - h + dx]])


def main(argv=None) -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_squint._napari._sample_data import merfish_path
    from napari_squint._napari.launch import add_docks
    from napari_squint._napari.layers import cell_layers
    from napari_squint._napari.tokens_widget import TOKEN_ROLE

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="MERFISH .h5ad (default: ../shared/data or $NAPARI_SQUINT_MERFISH)")
    p.add_argument("--model", default=None, help="a saved model folder to load instead of training")
    p.add_argument("--epochs", type=int, default=8)
    args = p.parse_args(argv)
    data = Path(args.data) if args.data else merfish_path()
    if data is None:
        raise SystemExit("the MERFISH file is needed: pass --data or set NAPARI_SQUINT_MERFISH")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    viewer = napari.Viewer(title="napari-squint", show=True)
    app = QApplication.instance()
    viewer.window._qt_window.resize(1600, 1000)
    docks = add_docks(viewer)
    for w in docks.values():
        w.setMinimumWidth(430)
    slide = docks["Slide & model"]
    slide.open_slide(data)
    layers = cell_layers(viewer)
    first = layers[0].metadata["squint_cells"]

    # 1. Slide & model: train (or load), cells coloured by token
    cached = ROOT / "out" / "screenshot_model"
    model_dir = Path(args.model) if args.model else (cached if (cached / "config.json").exists() else None)
    if model_dir is not None:
        slide.load_model(model_dir)
    else:
        slide.epochs_spin.setValue(args.epochs)
        slide.train(device="cpu")
        slide.save_model(cached)
    assert slide.last_error is None, slide.last_error
    viewer.reset_view()
    show_dock(viewer, "Slide & model")
    save(viewer, app, "slide_model")

    # 2. Tokens: a token highlighted, its top genes, a dot plot of a glial programme
    tokens = docks["Tokens"]
    show_dock(viewer, "Tokens")
    tokens.colour_by_token()
    tokens.programme_edit.setText(", ".join(PROGRAMME))
    tokens.n_tokens_spin.setValue(14)
    tokens.rank_combo.setCurrentText("highest programme expression")
    tokens.dot_plot()
    tokens.select_token(tokens.legend.item(3).data(TOKEN_ROLE))
    save(viewer, app, "tokens")

    # 3. In-paint: a square in the first section, imputed with the model
    inpaint = docks["In-paint"]
    show_dock(viewer, "In-paint")
    tokens.clear_selection()
    shapes = inpaint.region.new_layer()
    shapes.add_polygons([square(first, centre=(0.45, 0.55))])
    shapes.mode = "pan_zoom"
    inpaint.gene_combo.setCurrentText("Gad1")
    inpaint.impute()
    assert inpaint.last_error is None, inpaint.last_error
    inpaint.gene_combo.setCurrentText("Gad1")
    zoom_to(viewer, first)
    save(viewer, app, "inpaint")

    # 4. Activation score: animal 7 against animal 1
    act = docks["Activation score"]
    show_dock(viewer, "Activation score")
    for layer in [lyr for lyr in viewer.layers if lyr.name.startswith(("imputed", "measured"))]:
        layer.visible = False
    shapes.visible = False
    act.condition_combo.setCurrentText("animal_id")
    act.group_combo.setCurrentText("7")
    act.method_combo.setCurrentText("most enriched vs other groups")
    act.compute()
    assert act.last_error is None, act.last_error
    viewer.reset_view()
    save(viewer, app, "activation")

    # 5. Perturb: inhibitory neurons in the square get the mean excitatory profile; astrocytes respond
    pert = docks["Perturb"]
    show_dock(viewer, "Perturb")
    shapes.visible = True
    pert.region.combo.setCurrentText(shapes.name)
    pert.key_combo.setCurrentText("cell_type_coarse")
    pert.replace_combo.setCurrentText("Inhibitory")
    pert.proto_key_combo.setCurrentText("cell_type_coarse")
    pert.proto_combo.setCurrentText("Excitatory")
    pert.resp_combo.setCurrentText("Astrocyte")
    pert.run()
    assert pert.last_error is None, pert.last_error
    zoom_to(viewer, first)
    save(viewer, app, "perturb")

    for w in docks.values():
        w.session.dirty = False
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
