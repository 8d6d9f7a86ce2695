"""One plain-Python session per viewer, shared by every squint dock widget.

The session holds what the user is working on: the slide (AnnData), where it
came from, the model, the drawn regions, the results of each task and whether
anything is unsaved. Widgets read and write it and listen to its changes;
nothing here imports Qt, so it can be tested and scripted without a GUI.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from napari_squint import _constants as K

#: layer.metadata key holding the AnnData a layer was built from
ADATA_META = "squint_adata"
#: layer.metadata key holding the layer's cells and section (see ``layers.py``)
CELLS_META = K.CELLS_LAYER_META
#: layer.metadata key holding the source description of the slide
SOURCE_META = "squint_source"
#: layer.metadata key holding the id of the session a layer belongs to
SESSION_META = "squint_session"


@dataclass(eq=False)
class Session:
    """State shared by the squint widgets of one viewer.

    Attributes
    ----------
    adata
        The slide; results are written into it as new obs/obsm columns.
    source
        ``{"path", "format", "table", ...}`` (``uns['squint_source']``) or ``{}``.
    section_key, spatial_key, layer, genes
        How the slide is read by the engine.
    model
        A trained or loaded :class:`~napari_squint.api.squint.Squint` or
        :class:`~napari_squint.api.cifm.Cifm`, or None (see :attr:`model_lacks_tokens`).
    regions
        Polygons drawn for the last imputation / perturbation
        (:class:`~napari_squint.io.geojson.Region`).
    results
        Task outputs by name (``"impute"`` -> AnnData, ``"perturb"`` -> dict ...).
    dirty
        True when something computed here has not been saved.
    """

    adata: Any = None
    source: dict = field(default_factory=dict)
    section_key: str | None = K.SECTION_KEY
    spatial_key: str = K.SPATIAL_KEY
    layer: str | None = None
    genes: Any = "all"
    model: Any = None
    model_dir: Path | None = None
    regions: list = field(default_factory=list)
    results: dict = field(default_factory=dict)
    dirty: bool = False
    layout: str = "side"
    train_options: dict = field(default_factory=dict)
    original_obs: list = field(default_factory=list)
    original_obsm: list = field(default_factory=list)
    ask_on_close: Callable[[Session], str] | None = None
    picked: int | None = None
    colours: Any = None
    #: what the colours mean (:class:`~napari_squint._napari.colouring.Legend`), and the per-cell values shown
    legend: Any = None
    colour_values: Any = None
    _close_guard: Any = None
    cache: dict = field(default_factory=dict)
    _prepared: Any = None
    _listeners: list = field(default_factory=list)

    # --------------------------------------------------------------- events
    def subscribe(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(what)`` on every change (``"slide"``, ``"model"``, ``"tokens"``, ...)."""
        if callback not in self._listeners:
            self._listeners.append(callback)

    def unsubscribe(self, callback: Callable[[str], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def notify(self, what: str) -> None:
        for cb in list(self._listeners):
            cb(what)

    # ---------------------------------------------------------------- slide
    def set_slide(self, adata, *, source: dict | None = None, section_key: str | None = "auto",
                  spatial_key: str | None = None, layer: str | None = None, genes="all") -> None:
        """Adopt a slide; the model is kept only if it knows the slide's genes.

        ``section_key="auto"`` picks ``section`` when present (else the
        SpatialData region key); ``None`` makes the slide one section.
        """
        self.adata = adata
        self.source = dict(source if source is not None else adata.uns.get("squint_source", {}))
        self.spatial_key = spatial_key or K.SPATIAL_KEY
        if section_key == "auto":
            section_key = default_section_key(adata, self.source)
        elif section_key is not None and section_key not in adata.obs:
            raise KeyError(f"section key {section_key!r} not in obs (columns: {list(adata.obs.columns)})")
        self.section_key = section_key
        self.layer, self.genes = layer, genes
        self.regions, self.results, self.cache = [], {}, {}
        self.colours = self.legend = self.colour_values = None
        self.original_obs = list(adata.obs.columns)
        self.original_obsm = list(adata.obsm.keys())
        self._prepared = None
        self.dirty = False
        if self.model is not None and not set(self.model.genes) <= set(map(str, adata.var_names)):
            self.model = None
        self.notify("slide")

    def sections(self) -> list[str]:
        """Section names in slide order (one ``"slide"`` when there is no section key)."""
        if self.adata is None:
            return []
        return list(pd.unique(self.section_labels()))

    def section_labels(self) -> np.ndarray:
        """(n,) section name of every cell, as strings."""
        return section_labels(self.adata, self.section_key)

    def coords(self) -> np.ndarray:
        """(n, 2) slide coordinates (x, y) of every cell."""
        return np.asarray(self.adata.obsm[self.spatial_key], dtype=np.float64)[:, :2]

    # ---------------------------------------------------------------- model
    def set_model(self, model, *, model_dir: Path | None = None, dirty: bool = True) -> None:
        self.model = model
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self._prepared = None
        self.cache = {}
        if dirty:
            self.dirty = True
        self.notify("model")

    def prepared(self):
        """The slide prepared for the model (cached until the slide or model changes)."""
        if self.model is None:
            raise RuntimeError("no model: train or load one in the 'Slide & model' widget first")
        if self._prepared is None:
            self._prepared = self.model.prepare(self.adata)
        return self._prepared

    @property
    def model_lacks_tokens(self) -> bool:
        """A model is loaded and it has no tokens (``model.has_tokens``; e.g. CIFM: embeddings in obsm)."""
        return self.model is not None and not self.model.has_tokens

    @property
    def has_tokens(self) -> bool:
        return self.adata is not None and K.TOKEN_KEY in self.adata.obs

    def mark_changed(self, what: str) -> None:
        """Record unsaved work and tell the widgets."""
        self.dirty = True
        self.notify(what)


def default_section_key(adata, source: dict | None = None) -> str | None:
    """``section`` when present, else the SpatialData region key when it splits the table, else None."""
    if K.SECTION_KEY in adata.obs:
        return K.SECTION_KEY
    sk = (source or {}).get("section_key")
    if sk and sk in adata.obs:
        return sk
    return None


def section_labels(adata, section_key: str | None) -> np.ndarray:
    if section_key is not None and section_key in adata.obs:
        return adata.obs[section_key].astype(str).to_numpy()
    return np.full(adata.n_obs, "slide", dtype=object)


# ------------------------------------------------------------- registry
_SESSIONS: dict[int, tuple[weakref.ref, Session]] = {}


def get_session(viewer) -> Session:
    """The session of ``viewer`` (created on first use, dropped with the viewer)."""
    key = id(viewer)
    entry = _SESSIONS.get(key)
    if entry is not None and entry[0]() is viewer:
        return entry[1]
    session = Session()
    try:
        ref = weakref.ref(viewer, lambda _r, k=key: _SESSIONS.pop(k, None))
    except TypeError:  # objects without weak references (tests may pass a stub)
        ref = (lambda v=viewer: v)
    _SESSIONS[key] = (ref, session)
    return session


def session_id(session: Session) -> int:
    return id(session)


def find_session(sid: int) -> Session | None:
    """The live session with id ``sid`` (used by the writer, which gets no viewer)."""
    for _, s in _SESSIONS.values():
        if id(s) == sid:
            return s
    return None
