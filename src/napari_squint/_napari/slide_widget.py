"""Dock widget 1, "Slide & model": open a slide, show its cells, train / load / save a model, save results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from napari_squint import _constants as K
from napari_squint._napari.dock import SquintDock, set_combo, show_cells
from napari_squint._napari.workers import GUI_RESERVE, format_seconds
from napari_squint.config import SQUINT_EPOCHS, ModelConfig

NO_SECTION = "(none: one section)"
COUNTS_X = "X"
LAYOUT_LABELS = {"side by side": "side", "one at a time": "single"}
#: the form's model choices: the models' ``label`` (the classes are imported when used: widgets do not import torch)
MODEL_LABELS = ("SQuINT", "CIFM")
#: what a CIFM model gives instead of tokens
CIFM_NO_TOKENS = (f"CIFM has no tokens: its microenvironment embedding is in obsm['{K.CIFM_EMB_KEY}'] "
                  f"(cell embedding: obsm['{K.CIFM_CELL_EMB_KEY}'])")


def list_tables(path: str | Path) -> list[str]:
    """Table names of a SpatialData ``.zarr`` (without reading it); ``[]`` for other files."""
    path = Path(path)
    tables = path / "tables"
    if path.suffix == ".h5ad" or not tables.is_dir():
        return []
    return sorted(p.name for p in tables.iterdir() if p.is_dir() and not p.name.startswith("."))


def parse_genes(text: str):
    """``"all"``, a number of highly variable genes, or a comma/space-separated list."""
    text = text.strip()
    if not text or text.lower() == "all":
        return "all"
    if text.isdigit():
        return int(text)
    return [g for g in text.replace(",", " ").split() if g]


def _row(*widgets) -> QWidget:
    w = QWidget()
    lay = QHBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 0)
    for x in widgets:
        lay.addWidget(x)
    return w


class SlideModelWidget(SquintDock):
    """Open a slide, pick how it is read, show the cells, train or load a model."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        # --- slide
        form = self.group("Slide")
        self.path_label = QLabel("no slide")
        self.path_label.setWordWrap(True)
        self.open_button = self.button("Open slide…", self._ask_open, tip=".h5ad or SpatialData .zarr")
        form.addRow(self.open_button, self.path_label)
        self.table_combo = QComboBox()
        self.table_combo.setToolTip("SpatialData table holding the cells")
        form.addRow("table", self.table_combo)
        self.section_combo = QComboBox()
        self.section_combo.setToolTip("obs column naming sections; each gets its own layer and graph")
        form.addRow("section key", self.section_combo)
        self.counts_combo = QComboBox()
        self.counts_combo.setToolTip("where the raw counts are: X or a layer")
        form.addRow("counts", self.counts_combo)
        self.genes_edit = QLineEdit("all")
        self.genes_edit.setToolTip("'all', a number of highly variable genes, or gene names")
        form.addRow("genes", self.genes_edit)
        self.layout_combo = QComboBox()
        self.layout_combo.addItems(list(LAYOUT_LABELS))
        self.show_combo = QComboBox()
        self.show_combo.setToolTip("section shown in the 'one at a time' layout")
        form.addRow("layout", _row(self.layout_combo, self.show_combo))
        self.show_button = self.button("Show cells", self.show_cells)
        self.info_label = QLabel("")
        self.info_label.setWordWrap(True)
        form.addRow(self.show_button, self.info_label)
        self.section_combo.currentTextChanged.connect(self._section_key_changed)
        self.layout_combo.currentTextChanged.connect(lambda *_: self.show_cells())
        self.show_combo.currentTextChanged.connect(self._show_section)
        # --- model
        form = self.group("Model")
        mc = ModelConfig()
        self.model_combo = QComboBox()
        self.model_combo.addItems(list(MODEL_LABELS))
        self.model_combo.setToolTip("SQuINT: discrete niche tokens (codebook); CIFM: continuous microenvironment "
                                    "embeddings, imputation and simulated injection, no tokens")
        self.model_combo.currentTextChanged.connect(self._model_choice_changed)
        form.addRow("model", self.model_combo)
        self.epochs_spin = QSpinBox(minimum=1, maximum=1000, value=SQUINT_EPOCHS)
        self.codebook_spin = QSpinBox(minimum=2, maximum=512, value=mc.codebook_size)
        self.heads_spin = QSpinBox(minimum=1, maximum=4, value=mc.heads)
        form.addRow("epochs", self.epochs_spin)
        self.codebook_spin.setToolTip("codebook size: how many tokens each head can use")
        form.addRow("codebook", _row(self.codebook_spin, QLabel("heads"), self.heads_spin))
        self.device_combo = QComboBox()
        self.device_combo.addItems(_devices())
        form.addRow("device", self.device_combo)
        self.train_button = self.button("Train", self.train)
        self.cancel_button = self.button("Cancel", self.cancel, busy=False)
        self.cancel_button.setEnabled(False)
        form.addRow(_row(self.train_button, self.cancel_button))
        self.load_button = self.button("Load model…", self._ask_load)
        self.save_model_button = self.button("Save model…", self._ask_save_model)
        form.addRow(_row(self.load_button, self.save_model_button))
        self.model_label = QLabel("no model")
        self.model_label.setWordWrap(True)
        form.addRow(self.model_label)
        # --- colours
        from napari_squint._napari.colour_panel import ColourPanel

        self.colour_panel = ColourPanel(self)
        self.body.addWidget(self.colour_panel)
        # --- results
        form = self.group("Results")
        self.save_button = self.button("Save results…", self._ask_save_results,
                                       tip="new tables and shapes in the slide's SpatialData store; originals untouched")
        self.dirty_label = QLabel("")
        form.addRow(self.save_button, self.dirty_label)
        self.finish_layout()

    def model_choice(self) -> type:
        """The model class the form trains (:class:`~napari_squint.api.squint.Squint` or
        :class:`~napari_squint.api.cifm.Cifm`). Imports the engine (torch): call it on a worker thread."""
        from napari_squint.api.load import model_classes

        return {cls.label: cls for cls in model_classes().values()}[self.model_combo.currentText()]

    def model_config(self) -> type:
        """The config class of the chosen model, without importing the engine (torch) on the GUI thread."""
        import napari_squint.config as C

        return {"SQuINT": C.SquintConfig, "CIFM": C.CifmConfig}[self.model_combo.currentText()]

    def _model_choice_changed(self, *_) -> None:
        config = self.model_config()
        codebook = "codebook_size" in config.option_names()
        self.codebook_spin.setEnabled(codebook)
        self.heads_spin.setEnabled(codebook)
        self.epochs_spin.setValue(config().epochs)  # one default per model, as in the API and the CLI

    # ----------------------------------------------------------- session
    def refresh(self, what: str) -> None:
        s = self.session
        if what in ("init", "slide") and s.adata is not None:
            a = s.adata
            cols = [c for c in a.obs.columns if a.obs[c].nunique() <= max(200, a.n_obs // 20)]
            set_combo(self.section_combo, [NO_SECTION, *cols], current=s.section_key or NO_SECTION, keep=False)
            set_combo(self.counts_combo, [COUNTS_X, *a.layers.keys()], current=s.layer or COUNTS_X, keep=False)
            set_combo(self.show_combo, s.sections(), keep=True)
            src = s.source or {}
            full = str(src.get("path", "in memory"))
            self.path_label.setText(Path(full).name if src.get("path") else full)  # the name; the path on hover
            self.path_label.setToolTip(full)
            tables = list_tables(src["path"]) if src.get("format") == "spatialdata" else []
            set_combo(self.table_combo, tables, current=src.get("table"), keep=False)
            self.table_combo.setEnabled(len(tables) > 1)
            self.layout_combo.blockSignals(True)
            self.layout_combo.setCurrentText({v: k for k, v in LAYOUT_LABELS.items()}[s.layout])
            self.layout_combo.blockSignals(False)
            self._update_info()
        if s.model is not None:
            m = s.model
            hist = m.history[-1] if m.history else {}
            loss = f", last loss {hist['loss']:.3f}" if "loss" in hist else ""
            where = f" from {s.model_dir}" if s.model_dir else ""
            self.model_label.setText(f"{m.summary()}, {len(m.history)} epochs{loss}{where}"
                                     + ("" if m.has_tokens else " (no tokens)"))
        else:
            self.model_label.setText("no model")
        self.dirty_label.setText("unsaved changes" if s.dirty else ("saved" if s.source.get("saved_to") else ""))
        self.show_combo.setEnabled(s.layout == "single")
        self.colour_panel.refresh(what)

    def _update_info(self) -> None:
        s = self.session
        layers = self.cell_layers()
        raster = any(layer.metadata[K.CELLS_LAYER_META].get("raster") for layer in layers)
        note = (" — drawn as image rasters (one pixel per cell) because the slide is too large for markers"
                if raster else "")
        n_sec = len(s.sections())
        self.info_label.setText(f"{s.adata.n_obs:,} cells × {s.adata.n_vars:,} genes · {n_sec} "
                                f"section{'s' if n_sec != 1 else ''}{note}")

    # ------------------------------------------------------------- slide
    def _ask_open(self) -> None:
        name, _ = QFileDialog.getOpenFileName(
            self, "Open a slide (.h5ad, or zarr.json / .zgroup inside a SpatialData .zarr)", "",
            "Slides (*.h5ad zarr.json .zgroup);;All files (*)")
        if name:
            path = Path(name)
            self.open_slide(path.parent if path.name in ("zarr.json", ".zgroup") else path)

    def open_slide(self, path: str | Path, *, table: str | None = None, section_key: str | None = "auto",
                   layer: str | None = None):
        """Read a slide (in a worker) and show its cells.

        ``section_key="auto"`` takes ``section`` when present (else the
        SpatialData region key); ``None`` treats the slide as one section.
        ``layer`` names the counts layer (default ``X``).
        """
        path = Path(path)
        everything = list_tables(path)
        tables = [t for t in everything if not t.startswith("squint")]
        if table is None and len(everything) > 1 and tables:  # the slide's own table, not a squint result
            table = tables[0]

        def work():
            from napari_squint.io.read import read_slide

            return read_slide(path, table_key=table, section_key=None if section_key == "auto" else section_key)

        def done(adata):
            src = dict(adata.uns.get("squint_source", {}))
            if layer is not None and layer not in adata.layers:
                raise KeyError(f"counts layer {layer!r} not in {path.name} (layers: {list(adata.layers)})")
            self.session.set_slide(adata, source=src, section_key=section_key, layer=layer)
            from napari_squint._napari.persist import restore_results

            restored = restore_results(self.session)
            self.show_cells()
            self.set_status(f"read {path.name}: {adata.n_obs:,} cells"
                            + (f"; saved results restored ({', '.join(restored)})" if restored else ""))
            if restored:
                self.session.notify("tokens" if K.TOKEN_KEY in restored else "slide")

        return self.run_job(work, desc=f"reading {path.name}", on_done=done)

    def _section_key_changed(self, text: str) -> None:
        s = self.session
        if s.adata is None:
            return
        key = None if text == NO_SECTION else text
        if key == s.section_key:
            return
        s.section_key = key
        s._prepared = None
        set_combo(self.show_combo, s.sections(), keep=False)
        self.show_cells()

    def _show_section(self, name: str) -> None:
        if self.session.layout != "single":
            return
        layers = self.cell_layers()
        for layer in layers:
            layer.visible = layer.metadata[K.CELLS_LAYER_META]["section"] == name
        from napari_squint._napari.dock import TITLES_META, remove_layers, section_titles

        remove_layers(self.viewer, [lyr for lyr in self.viewer.layers if TITLES_META in lyr.metadata])
        titles = section_titles(layers)  # the shown section's name only
        if titles is not None:
            self.viewer.add_layer(titles)
            self.viewer.layers.selection.active = next(lyr for lyr in layers if lyr.visible)

    def show_cells(self) -> list:
        """(Re)draw the slide's cells with the chosen layout."""
        if self.session.adata is None:
            return []
        layout = LAYOUT_LABELS[self.layout_combo.currentText()]
        layers = show_cells(self.viewer, self.session, layout=layout,
                            show_section=self.show_combo.currentText() or None)
        self.show_combo.setEnabled(layout == "single")
        self._update_info()
        return layers

    # ------------------------------------------------------------- model
    def options(self) -> dict:
        """Training options from the form (the same names as the Python API and the CLI).

        The codebook options are SQuINT's only: a CIFM model gets ``epochs`` and ``device``.
        """
        opts = {"epochs": self.epochs_spin.value(), "device": self.device_combo.currentText()}
        if "codebook_size" in self.model_config().option_names():
            opts.update(codebook_size=self.codebook_spin.value(), heads=self.heads_spin.value())
        return opts

    def _read_settings(self) -> dict:
        s = self.session
        layer = self.counts_combo.currentText()
        s.layer = None if layer in ("", COUNTS_X) else layer
        s.genes = parse_genes(self.genes_edit.text())
        s.train_options = self.options()
        return {"section_key": s.section_key, "spatial_key": s.spatial_key, "layer": s.layer, "genes": s.genes}

    def train(self, **overrides):
        """Train a new model on the slide (in a worker, with progress and cancel).

        The model is the form's choice (``model_combo``): SQuINT, after which
        tokens are assigned, or CIFM, after which the microenvironment and cell
        embeddings are written to ``obsm`` (CIFM has no tokens). ``overrides``
        are further options of the model's config (``hidden=``, ``latent=``...).
        """
        if not self.require_slide():
            return None
        settings = self._read_settings()
        opts = {**self.session.train_options, **overrides}
        adata = self.session.adata
        label = self.model_combo.currentText()
        choose = self.model_choice  # resolved on the worker: importing the engine (torch) would stall the GUI

        def work():
            from napari_squint.train.events import ProgressEvent

            yield ProgressEvent("prepare", message="building the cell graph")
            model = choose()(adata, **settings, **opts)
            from napari_squint.train.threads import training_threads

            # the engine's thread policy, opened on this worker thread (torch's thread count is per thread)
            with training_threads(opts.get("num_threads"), reserve=GUI_RESERVE, device=str(model.device)):
                yield from model.iter_train()
            return (model, *(yield from _annotate(model, adata)))

        def done(result):
            model, tokens, embedding = result
            what = self._write(tokens, embedding)
            self.session.set_model(model)
            if what is not None:
                self.session.mark_changed(what)
            last = model.history[-1] if model.history else {}
            self.set_status(f"trained {len(model.history)} epochs in {format_seconds(self.job.elapsed())}"
                            + (f", loss {last['loss']:.3f}" if "loss" in last else "")
                            + (f". {CIFM_NO_TOKENS}" if what == "embedding" else ""))

        return self.run_job(work, desc=f"training {label}", on_done=done, cancel_button=self.cancel_button)

    def _write(self, tokens, embedding) -> str | None:
        """Copy the tokens (SQuINT) or the embeddings (CIFM) into the slide; returns the session event to send."""
        if tokens is not None:
            self._adopt_tokens(tokens)
            return "tokens"
        if embedding is not None:
            self._adopt_embedding(embedding)
            return "embedding"
        return None

    def _adopt_embedding(self, embedded) -> None:
        a = self.session.adata
        for key in (K.CIFM_EMB_KEY, K.CIFM_CELL_EMB_KEY):
            if key in embedded.obsm:
                a.obsm[key] = np.asarray(embedded.obsm[key])
        a.uns.setdefault(K.UNS_KEY, {})[K.CIFM_EMBED_UNS] = embedded.uns.get(K.UNS_KEY, {}).get(K.CIFM_EMBED_UNS, {})

    def _adopt_tokens(self, tokens) -> None:
        a = self.session.adata
        a.obs[K.TOKEN_KEY] = tokens.obs[K.TOKEN_KEY].to_numpy()
        a.obs[K.TOKEN_KEY] = a.obs[K.TOKEN_KEY].astype(tokens.obs[K.TOKEN_KEY].dtype)
        for key in (K.LATENT_KEY, K.CODES_KEY):
            if key in tokens.obsm:
                a.obsm[key] = tokens.obsm[key]
        a.uns.setdefault(K.UNS_KEY, {})["tokens"] = tokens.uns.get(K.UNS_KEY, {}).get("tokens", {})

    def _ask_load(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Load a SQuINT or CIFM model folder")
        if path:
            self.load_model(path)

    def load_model(self, path: str | Path):
        """Load a saved SQuINT or CIFM model (in a worker).

        With a slide open, a SQuINT model assigns tokens and a CIFM model
        writes its embeddings to ``obsm`` (CIFM has no tokens).
        """
        path = Path(path)
        adata = self.session.adata
        device = self.device_combo.currentText()

        def work():
            from napari_squint.api.load import load_any

            model = load_any(path, device=None if device == "auto" else device)
            if adata is None:
                return model, None, None
            return (model, *(yield from _annotate(model, adata)))

        def done(result):
            model, tokens, embedding = result
            self.session.set_model(model, model_dir=path, dirty=False)
            self.model_combo.setCurrentText(model.label)
            what = self._write(tokens, embedding)
            if what is not None:
                self.session.mark_changed(what)
            self.set_status(f"loaded {model.label} model {path.name}" + ("" if model.has_tokens else f". {CIFM_NO_TOKENS}"))

        return self.run_job(work, desc=f"loading {path.name}", on_done=done)

    def _ask_save_model(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Save the model into a folder")
        if path:
            self.save_model(path)

    def save_model(self, path: str | Path) -> Path | None:
        if self.session.model is None:
            self.error(RuntimeError("no model to save: train or load one first"))
            return None
        try:  # the chosen folder is replaced only when napari-squint wrote it (io.outputs); else a message
            out = self.session.model.save(path, overwrite=True)
        except (OSError, ValueError) as err:
            self.error(err)
            return None
        self.session.model_dir = Path(out)
        self.set_status(f"model saved to {out}")
        self.refresh("model")
        return Path(out)

    # ----------------------------------------------------------- results
    def _ask_save_results(self) -> None:
        from napari_squint._napari.persist import default_target

        target = default_target(self.session)
        if target is None:
            name, _ = QFileDialog.getSaveFileName(self, "Save squint results", "results.zarr",
                                                  "SpatialData (*.zarr);;AnnData (*.h5ad)")
            if not name:
                return
            target = name
        self.save_results(target)

    def save_results(self, path: str | Path | None = None) -> Path | None:
        """Write the results into the slide's SpatialData store (or ``path``); see :mod:`persist`."""
        from napari_squint._napari.persist import save_results

        if not self.require_slide():
            return None
        try:
            out = save_results(self.session, path)
        except Exception as err:
            self.error(err)
            return None
        self.set_status(f"results saved to {out}")
        return out


def _annotate(model, adata):
    """Generator (ProgressEvents) returning ``(tokens, embedding)`` copies of ``adata``: one of them is None.

    SQuINT assigns tokens; CIFM has none and writes its embeddings instead.
    """
    from napari_squint.train.events import ProgressEvent

    if not model.has_tokens:
        yield ProgressEvent("embed", message="computing the microenvironment embedding (CIFM has no tokens)")
        return None, model.embed(adata, copy=True)
    yield ProgressEvent("tokens", message="assigning tokens")
    return model.tokens(adata, copy=True), None


def _devices() -> list[str]:
    """Device choices without importing torch: CUDA is offered when a driver is visible."""
    import os
    import shutil

    out = ["auto", "cpu"]
    if shutil.which("nvidia-smi") or os.path.exists("/proc/driver/nvidia/version"):
        out.append("cuda")
    return out
