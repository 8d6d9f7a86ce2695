"""Screenshots of every squint dock widget on the real MERFISH slide, for docs/user_guide.md.

Run under Xvfb (napari draws a blank canvas with ``QT_QPA_PLATFORM=offscreen``)::

    squint train ../shared/data/merfish_hypothalamus_moffitt2018_9sections.h5ad --out out/merfish_default_model
    xvfb-run -a -s "-screen 0 1920x1200x24" .venv/bin/python scripts/screenshots.py [--model DIR]

The docks are opened the way napari's Plugins menu opens them
(``viewer.window.add_plugin_dock_widget``) and driven as a user would (open
the file, load the model, colour, draw a polygon, click Impute ...), with jobs
run synchronously so each screenshot is taken when its result is on screen.
The model is the one trained with the default number of epochs on the whole
MERFISH slide (``--model``, default ``out/merfish_default_model``; without it the
dock trains one with its default epochs and caches it there). PNGs go to
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


def zoom_to(viewer, layer_info: dict, *, pad: float = 0.15) -> None:
    """Centre the camera on one section (from the fit of the whole slide: no private canvas size)."""
    x0, y0, x1, y1 = layer_info["bounds"]
    dy, dx = layer_info["offset"]
    viewer.reset_view()
    extent = np.asarray(viewer.layers.extent.world)[:, -2:]
    full = extent[1] - extent[0]
    camera = viewer.camera
    camera.center = ((y0 + y1) / 2 + dy, (x0 + x1) / 2 + dx)
    camera.zoom = camera.zoom * min(full[0] / ((y1 - y0) * (1 + pad)), full[1] / ((x1 - x0) * (1 + pad)))


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
    from napari_squint._napari.layers import cell_layers
    from napari_squint._napari.session import CELLS_META

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="MERFISH .h5ad (default: ../shared/data or $NAPARI_SQUINT_MERFISH)")
    p.add_argument("--model", default=str(ROOT / "out" / "merfish_default_model"),
                   help="a model trained with the default epochs on the slide (trained and saved here when absent)")
    args = p.parse_args(argv)
    data = Path(args.data) if args.data else merfish_path()
    if data is None:
        raise SystemExit("the MERFISH file is needed: pass --data or set NAPARI_SQUINT_MERFISH")

    viewer = napari.Viewer(title="napari-squint", show=True)
    app = QApplication.instance()
    viewer.window.resize(1600, 1000)
    docks = {}
    for name in ("Slide & model", "In-paint", "Tokens", "Activation score", "Perturb"):  # the Plugins menu route
        docks[name] = viewer.window.add_plugin_dock_widget("napari-squint", name)[1]
        settle(app, 1)
    slide = docks["Slide & model"]
    from qtpy.QtCore import Qt

    from napari_squint._napari.hooks import main_window_of

    settle(app, 2)  # the docks join one tab group; then widen it as a user drags its edge
    main_window_of(slide).resizeDocks([slide.dock_widget()], [560], Qt.Orientation.Horizontal)
    slide.bring_forward()
    slide.open_slide(data)
    first = cell_layers(viewer)[0].metadata[CELLS_META]

    # 1. Slide & model: the model (default epochs), cells coloured by cell type with the legend
    model_dir = Path(args.model)
    if (model_dir / "config.json").exists():
        slide.load_model(model_dir)
    else:
        slide.train(device="cpu")
        slide.save_model(model_dir)
    assert slide.last_error is None, slide.last_error
    slide.colour_panel.colour("cell_type")
    viewer.reset_view()
    save(viewer, app, "slide_model")

    # 2. Colour by a gene (measured), with its colour bar and the canvas caption
    slide.colour_panel.colour("gene", "Gad1")
    save(viewer, app, "colour_gene")

    # 3. Tokens: the overview of every token, one selected
    tokens = docks["Tokens"]
    tokens.bring_forward()
    tokens.colour_by_token()
    tokens.describe_tokens()
    assert tokens.last_error is None, tokens.last_error
    tokens._overview_clicked(3)
    tokens.scroll.ensureWidgetVisible(tokens.overview)
    save(viewer, app, "tokens")
    tokens.programme_edit.setText(", ".join(PROGRAMME))
    tokens.n_tokens_spin.setValue(14)
    tokens.rank_combo.setCurrentText("highest programme expression")
    tokens.dot_plot()
    settle(app, 2)
    bar = tokens.scroll.verticalScrollBar()
    bar.setValue(bar.maximum())  # the dot plot is the last panel: show it whole
    save(viewer, app, "tokens_dotplot")

    # 4. In-paint: a square in the first section, imputed; Gad1 on every cell, imputed inside
    inpaint = docks["In-paint"]
    inpaint.bring_forward()
    tokens.clear_selection()
    shapes = inpaint.region.new_layer()
    shapes.add_polygons([square(first, centre=(0.45, 0.55))])
    shapes.mode = "pan_zoom"
    t0 = time.perf_counter()
    inpaint.impute()
    assert inpaint.last_error is None, inpaint.last_error
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    inpaint.impute()  # the same polygon again: the prepared slide is reused
    assert inpaint.last_error is None, inpaint.last_error
    print(f"impute {inpaint.output.n_obs} cells on {slide.session.adata.n_obs:,}: first {first_s:.1f} s, "
          f"again {time.perf_counter() - t0:.1f} s ({inpaint.status.text()})", flush=True)
    inpaint.show_gene("Gad1")
    zoom_to(viewer, first)
    inpaint.scroll.ensureWidgetVisible(inpaint.metrics_label)
    save(viewer, app, "inpaint")

    # 5. Activation score: animal 7 against the others
    act = docks["Activation score"]
    act.bring_forward()
    shapes.visible = False
    act.condition_combo.setCurrentText("animal_id")
    act._fill_groups("animal_id")
    act.group_combo.setCurrentText("7")
    act.method_combo.setCurrentText("most enriched vs other groups")
    act.compute()
    assert act.last_error is None, act.last_error
    viewer.reset_view()
    save(viewer, app, "activation")

    # 6. Perturb: inhibitory neurons in the square get the mean excitatory profile; astrocytes respond
    pert = docks["Perturb"]
    pert.bring_forward()
    shapes.visible = True
    pert.region.choose(shapes)
    pert.key_combo.setCurrentText("cell_type_coarse")
    pert.replace_combo.setCurrentText("Inhibitory")
    pert.proto_key_combo.setCurrentText("cell_type_coarse")
    pert.proto_combo.setCurrentText("Excitatory")
    pert.resp_combo.setCurrentText("Astrocyte")
    pert.run()
    assert pert.last_error is None, pert.last_error
    zoom_to(viewer, first)
    pert.scroll.ensureWidgetVisible(pert.key_panel)
    save(viewer, app, "perturb")

    for w in docks.values():
        w.session.dirty = False
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
