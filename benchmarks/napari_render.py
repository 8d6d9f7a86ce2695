"""How fast the napari plugin shows and recolours cells.

Run under Xvfb (napari draws nothing with ``QT_QPA_PLATFORM=offscreen``)::

    xvfb-run -a .venv/bin/python benchmarks/napari_render.py [--merfish PATH] [--million] [--json OUT.json]

Measured, in one process and one viewer:

1. *Load and show*: reading the slide, building one layer per section and the
   first frame drawn (``viewer.screenshot`` forces a full draw and read-back),
   through the "Slide & model" widget exactly as a user opens a file.
2. *Recolour by token / by score*: our part (the per-cell RGBA from the token
   ids or the scores) against napari's own cost for the same layers: the
   ``face_color`` assignment (napari validates and stores the colours) and the
   redraw; and napari's native path for the same colouring (a feature column
   with a categorical colour cycle / a continuous colour map) for reference.
3. *One million cells* (``--million``): a single-section synthetic slide
   (``make_tissue(n_cells=1_000_000)``), drawn as markers and as the image
   raster the plugin switches to above ``POINTS_LIMIT`` cells.

Token ids are random (200 tokens of a 1,024 vocabulary): the cost depends
only on the number of cells and tokens, not on the model. Results go to
``docs/benchmarks_napari.md`` by hand, with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from napari_squint import _constants as K

os.environ.setdefault("NAPARI_SQUINT_SYNC", "1")
os.environ.setdefault("NAPARI_SQUINT_ON_CLOSE", "discard")


def _t(fn, *a, **k):
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0


def frame(viewer) -> float:
    """Seconds to draw one frame and read it back."""
    _, dt = _t(viewer.screenshot, canvas_only=True)
    return dt


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def load_and_show(viewer, path, *, repeat: int = 2) -> dict:
    """Open the slide through the widget ``repeat`` times; the first pays the one-time imports."""
    from qtpy.QtWidgets import QApplication

    from napari_squint._napari.layers import cell_layers
    from napari_squint._napari.slide_widget import SlideModelWidget

    w = SlideModelWidget(viewer)
    runs = []
    for i in range(repeat):
        c0 = time.process_time()
        t0 = time.perf_counter()
        if i == 0:
            import anndata  # noqa: F401  (timed: a fresh napari has not imported it yet)

            import napari_squint.io.read  # noqa: F401
        t_import = time.perf_counter() - t0
        w.open_slide(path)
        QApplication.processEvents()
        t_layers = time.perf_counter() - t0 - t_import
        t_frame = frame(viewer)
        runs.append({"imports_s": t_import, "read_and_layers_s": t_layers, "first_frame_s": t_frame,
                     "total_s": t_import + t_layers + t_frame, "total_cpu_s": time.process_time() - c0})
    layers = cell_layers(viewer)
    return {"cells": int(sum(len(lyr.data) for lyr in layers)), "layers": len(layers), "first_open": runs[0],
            "later_opens": runs[1:], "widget": w}


def read_only(path, repeat: int = 3) -> float:
    """Seconds to read the slide alone (best of ``repeat``)."""
    from napari_squint.io.read import read_slide

    return min(_t(read_slide, path)[1] for _ in range(repeat))


def recolour(viewer, layers, n: int, seed: int = 0) -> dict:
    """Our colour computation vs napari's cost for the same layers (assignment, redraw, native path)."""
    import pandas as pd

    from napari_squint._napari.colours import colour_categories, colour_continuous
    from napari_squint._napari.layers import apply_colours

    rng = np.random.default_rng(seed)
    vocab = rng.choice(1024, size=200, replace=False)
    tokens = pd.Series(pd.Categorical(rng.choice(vocab, size=n)))
    score = rng.uniform(size=n).astype(np.float32)
    out = {}
    frame(viewer)  # settle
    # --- tokens: ours
    (rgba, cats, lut), ours = _t(colour_categories, tokens)
    _, assign = _t(apply_colours, layers, rgba)
    draw = frame(viewer)
    out["token"] = {"ours_compute_s": ours, "napari_assign_s": assign, "napari_draw_s": draw}
    # --- tokens: napari's native feature path
    t0 = time.perf_counter()
    cycle = {c: lut[i] for i, c in enumerate(cats)}
    for lyr in layers:
        cells = lyr.metadata[K.CELLS_LAYER_META]["cells"]
        lyr.features = pd.DataFrame({"token": pd.Categorical(np.asarray(tokens)[cells], categories=cats)})
        lyr.face_color_cycle = [cycle[c] for c in cats]
        lyr.face_color = "token"
    native = time.perf_counter() - t0
    out["token"].update(napari_native_s=native, napari_native_draw_s=frame(viewer))
    # --- score: ours
    (rgba, _), ours = _t(colour_continuous, score, cmap="magma", vmin=0, vmax=1)
    _, assign = _t(apply_colours, layers, rgba)
    draw = frame(viewer)
    out["score"] = {"ours_compute_s": ours, "napari_assign_s": assign, "napari_draw_s": draw}
    t0 = time.perf_counter()
    for lyr in layers:
        cells = lyr.metadata[K.CELLS_LAYER_META]["cells"]
        lyr.features = pd.DataFrame({"score": score[cells]})
        lyr.face_colormap = "magma"
        lyr.face_contrast_limits = (0.0, 1.0)
        lyr.face_color = "score"
    native = time.perf_counter() - t0
    out["score"].update(napari_native_s=native, napari_native_draw_s=frame(viewer))
    return out


def million(viewer) -> dict:
    from napari.layers import Layer

    from napari_squint._napari.colours import colour_categories
    from napari_squint._napari.layers import apply_colours, cell_layer_data
    from napari_squint.data.synthetic import make_tissue

    adata, t_make = _t(make_tissue, n_cells=1_000_000, n_genes=30, n_sections=1, planted_niche=False)
    rng = np.random.default_rng(0)
    rgba, _, _ = colour_categories(rng.choice(1024, size=adata.n_obs))
    res = {"cells": adata.n_obs, "make_tissue_s": t_make}
    for kind, raster in (("raster", True), ("points", False)):
        t0 = time.perf_counter()
        tuples = cell_layer_data(adata, section_key="section", layout="side", raster=raster)
        layers = [Layer.create(d, k, t) for d, k, t in tuples]
        for lyr in layers:
            viewer.add_layer(lyr)
        viewer.reset_view()
        build = time.perf_counter() - t0
        f1 = frame(viewer)
        print(f"{kind}: build {build:.1f} s, first frame {f1:.1f} s", flush=True)
        _, recol = _t(apply_colours, layers, rgba)
        f2 = frame(viewer)
        res[kind] = {"build_s": build, "first_frame_s": f1, "recolour_assign_s": recol, "frame_after_recolour_s": f2}
        for lyr in layers:
            viewer.layers.remove(lyr)
    return res


def main(argv=None) -> int:
    import napari

    from napari_squint._napari._sample_data import merfish_path
    from napari_squint._napari.layers import cell_layers

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--merfish", default=None, help="MERFISH .h5ad (default: ../shared/data or $NAPARI_SQUINT_MERFISH)")
    p.add_argument("--million", action="store_true", help="also measure 1,000,000 cells")
    p.add_argument("--json", default=None, help="write the numbers here")
    args = p.parse_args(argv)

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    warm = viewer.add_points(np.zeros((3, 2)), size=1)  # compile shaders before timing
    frame(viewer)
    viewer.layers.remove(warm)
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                                f"{platform.python_version()}, napari {napari.__version__}",
                     "load_average_at_start": load_average()}
    path = Path(args.merfish) if args.merfish else merfish_path()
    if path is not None:
        r = load_and_show(viewer, path)
        w = r.pop("widget")
        r["read_slide_only_s"] = read_only(path)
        results["merfish_load_show"] = r
        results["merfish_recolour_first"] = recolour(viewer, cell_layers(viewer), r["cells"])
        results["merfish_recolour"] = recolour(viewer, cell_layers(viewer), r["cells"], seed=1)
        w.session.dirty = False
        for lyr in cell_layers(viewer):
            viewer.layers.remove(lyr)
    if args.million:
        results["million"] = million(viewer)
    results["load_average_at_end"] = load_average()
    viewer.close()
    print(json.dumps(results, indent=1, default=float))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
