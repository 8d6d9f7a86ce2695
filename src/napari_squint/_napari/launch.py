"""Open napari with the squint docks (and optionally a slide and a model): ``squint view``."""

from __future__ import annotations

from pathlib import Path

#: dock widgets in the order they are added: (name, module, class)
DOCKS = (
    ("Slide & model", "napari_squint._napari.slide_widget", "SlideModelWidget"),
    ("Tokens", "napari_squint._napari.tokens_widget", "TokensWidget"),
    ("In-paint", "napari_squint._napari.inpaint_widget", "InpaintWidget"),
    ("Activation score", "napari_squint._napari.activation_widget", "ActivationWidget"),
    ("Perturb", "napari_squint._napari.perturb_widget", "PerturbWidget"),
)


def add_docks(viewer) -> dict:
    """Add every squint dock to ``viewer`` (tabbed on the right); returns them by name."""
    import importlib

    docks = {}
    for i, (name, module, cls) in enumerate(DOCKS):
        widget = getattr(importlib.import_module(module), cls)(viewer)
        viewer.window.add_dock_widget(widget, name=name, area="right", tabify=i > 0)
        docks[name] = widget
    docks["Slide & model"].bring_forward()  # the first step is the front tab
    return docks


def open_viewer(path: str | Path | None = None, *, model_dir: str | Path | None = None, table: str | None = None,
                section_key: str | None = "auto", layer: str | None = None, layout: str = "side",
                show: bool = True):
    """A napari viewer with the docks, the slide shown and the model loaded (if given).

    ``section_key="auto"`` uses ``section`` when present (else the SpatialData
    region key); ``None`` treats the slide as one section.

    Returns
    -------
    (viewer, docks)
    """
    import napari

    viewer = napari.Viewer(title="napari-squint", show=show)
    docks = add_docks(viewer)
    slide = docks["Slide & model"]
    slide.layout_combo.setCurrentText("side by side" if layout == "side" else "one at a time")
    if path is not None:
        slide.open_slide(path, table=table, section_key=section_key, layer=layer)
    if model_dir is not None:
        if slide.job is not None and slide.job.running:  # reading on a thread: load once it is done
            slide.job.worker.finished.connect(lambda: slide.load_model(model_dir))
        else:
            slide.load_model(model_dir)
    return viewer, docks


def run_viewer(path: str | Path | None = None, **kwargs) -> None:
    """:func:`open_viewer`, then napari's event loop until the window closes."""
    import napari

    open_viewer(path, **kwargs)
    napari.run()
