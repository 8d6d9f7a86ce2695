"""Training in napari vs the CLI, same slide and settings, in one run; and in-painting latency in the GUI.

Run under Xvfb (napari draws nothing offscreen)::

    xvfb-run -a .venv/bin/python benchmarks/napari_train.py [--data PATH] [--sections 2] [--epochs 3] [--json OUT]

1. *CLI*: ``squint train SLIDE --out DIR --epochs E`` in a subprocess (the
   slide is the first ``--sections`` sections of the MERFISH file, written to a
   temporary ``.h5ad``); wall time of the command, and the per-epoch seconds
   the model records in its history (``meta.json``).
2. *GUI*: a shown viewer, the "Slide & model" dock opened through the Plugins
   route (``add_plugin_dock_widget``), the same file opened and trained with the
   same settings on the dock's worker thread while napari's event loop runs.
   Wall time from pressing Train to the tokens coloured, per-epoch seconds
   from the history, and the event loop's longest stall (a 20 ms timer).
3. *Impute latency* (``--impute``): the "In-paint" dock, a rectangle over a few
   hundred cells of the first section, Impute pressed twice; the first call
   prepares the slide for the model (once per slide and model), the second
   reuses it.

Results go to ``docs/benchmarks_napari.md`` by hand, with ``lscpu``'s model name.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_squint import _constants as K

os.environ.setdefault("NAPARI_SQUINT_ON_CLOSE", "discard")
ROOT = Path(__file__).resolve().parents[1]
MERFISH = ROOT.parent / "shared" / "data" / "merfish_hypothalamus_moffitt2018_9sections.h5ad"


def subset(path: Path, n_sections: int, out: Path) -> int:
    import anndata as ad
    import pandas as pd

    a = ad.read_h5ad(path)
    keep = list(pd.unique(a.obs["section"].astype(str)))[:n_sections]
    a = a[a.obs["section"].astype(str).isin(keep)].copy()
    a.write_h5ad(out)
    return a.n_obs


def cli_train(slide: Path, out: Path, epochs: int) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).with_name("squint")), "train", str(slide), "--out", str(out),
                           "--epochs", str(epochs), "--device", "cpu"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    hist = json.loads((out / "meta.json").read_text()).get("history", [])
    return {"wall_s": wall, "epoch_s": [h["seconds"] for h in hist]}


def gui_train(slide: Path, epochs: int, *, impute: bool) -> dict:
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    os.environ["NAPARI_SQUINT_SYNC"] = "0"
    viewer = napari.Viewer(show=True)
    _, w = viewer.window.add_plugin_dock_widget("napari-squint", "Slide & model")
    app = QApplication.instance()

    def wait(job, limit=3600):
        t = time.perf_counter()
        while job is not None and job.running and time.perf_counter() - t < limit:
            app.processEvents()
            time.sleep(0.005)

    wait(w.open_slide(slide))
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    w.epochs_spin.setValue(epochs)
    w.device_combo.setCurrentText("cpu")
    timer.start()
    t0 = time.perf_counter()
    job = w.train()
    wait(job)
    wall = time.perf_counter() - t0
    timer.stop()
    if w.last_error is not None:
        raise w.last_error
    gaps = np.diff([t0, *ticks, time.perf_counter()])
    out = {"wall_s": wall, "epoch_s": [h["seconds"] for h in w.session.model.history],
           "status": w.status.text(), "max_stall_s": float(gaps.max()), "timer_ticks": len(ticks)}
    if impute:
        out["impute"] = gui_impute(viewer, w, wait)
    w.session.dirty = False
    viewer.close()
    return out


def gui_impute(viewer, slide_widget, wait) -> dict:
    from napari_squint._napari.layers import cell_layers

    _, ip = viewer.window.add_plugin_dock_widget("napari-squint", "In-paint")
    info = cell_layers(viewer)[0].metadata[K.CELLS_LAYER_META]
    x0, y0, x1, y1 = info["bounds"]
    dy, dx = info["offset"]
    cx, cy, hw = (x0 + x1) / 2, (y0 + y1) / 2, 0.06 * (x1 - x0)
    rect = np.array([[cy - hw + dy, cx - hw + dx], [cy - hw + dy, cx + hw + dx], [cy + hw + dy, cx + hw + dx],
                     [cy + hw + dy, cx - hw + dx]])
    layer = ip.region.new_layer()
    layer.add_rectangles(rect)
    ip.fill_check.setChecked(False)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        wait(ip.impute())
        times.append(time.perf_counter() - t0)
        if ip.last_error is not None:
            raise ip.last_error
    n = int((~ip.output.obs["squint_created"]).sum()) if ip.output is not None else 0
    return {"cells": n, "first_s": times[0], "second_s": times[1], "status": ip.status.text()}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        line = next(x for x in out.splitlines() if x.startswith("Model name"))
        cores = next(x for x in out.splitlines() if x.startswith("CPU(s):"))
        return f"{line.split(':', 1)[1].strip()}, {cores.split(':', 1)[1].strip()} CPUs"
    except Exception:
        return "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=MERFISH)
    p.add_argument("--sections", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--impute", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        slide = Path(tmp) / "slide.h5ad"
        n = subset(args.data, args.sections, slide)
        res = {"cells": n, "sections": args.sections, "epochs": args.epochs, "cpu": cpu_model(),
               "load_1min": os.getloadavg()[0]}
        res["cli"] = cli_train(slide, Path(tmp) / "model", args.epochs)
        res["gui"] = gui_train(slide, args.epochs, impute=args.impute)
        res["load_1min_after"] = os.getloadavg()[0]
    res["gui_over_cli_epoch"] = float(np.mean(res["gui"]["epoch_s"]) / np.mean(res["cli"]["epoch_s"]))
    res["gui_over_cli_wall"] = res["gui"]["wall_s"] / res["cli"]["wall_s"]
    text = json.dumps(res, indent=1, default=float)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
