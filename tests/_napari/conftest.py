"""Fixtures for the napari plugin tests (pytest-qt under Xvfb).

Jobs run synchronously (``NAPARI_SQUINT_SYNC=1``) unless a test switches the
variable off to exercise the real thread; unsaved work is discarded on close
(``NAPARI_SQUINT_ON_CLOSE=discard``) so the viewer fixture can tear down.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("NAPARI_SQUINT_SYNC", "1")
os.environ.setdefault("NAPARI_SQUINT_ON_CLOSE", "discard")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from napari_squint import _constants as K  # noqa: E402

MERFISH = Path(__file__).resolve().parents[3] / "shared" / "data" / "merfish_hypothalamus_moffitt2018_9sections.h5ad"

#: a small, fast model for tests
TINY = {"epochs": 1, "codebook_size": 6, "heads": 2, "hidden": 32, "latent": 16, "device": "cpu", "batch_size": 256,
        "num_threads": 1}


@pytest.fixture
def merfish_path():
    """The real MERFISH file (tests using it are skipped when ../shared/data is absent)."""
    if not MERFISH.exists():
        pytest.skip("needs ../shared/data (real MERFISH file)")
    return MERFISH


@pytest.fixture
def tiny():
    """Options of a small, fast model."""
    return dict(TINY)


@pytest.fixture(scope="session")
def tissue_proto():
    from napari_squint.data.synthetic import make_tissue

    return make_tissue(n_cells=900, n_genes=40, n_sections=2, seed=0)


@pytest.fixture
def tissue(tissue_proto):
    return tissue_proto.copy()


@pytest.fixture(scope="session")
def tiny_model(tissue_proto):
    """A SQuINT model trained for 2 epochs on the tiny tissue (shared: treat as read-only)."""
    import torch

    from napari_squint.api.squint import Squint

    torch.set_num_threads(1)
    model = Squint(tissue_proto, **{**TINY, "epochs": 2})
    model.train()
    return model


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def slide_widget(viewer, tissue):
    """The Slide & model dock with the tiny tissue shown."""
    from napari_squint._napari.slide_widget import SlideModelWidget

    w = SlideModelWidget(viewer)
    viewer.window.add_dock_widget(w, name="Slide & model")
    w.session.set_slide(tissue, source={"format": "synthetic"})
    w.show_cells()
    return w


@pytest.fixture
def trained(slide_widget, tiny_model):
    """The slide widget with the shared tiny model loaded and tokens assigned."""
    session = slide_widget.session
    session.set_model(tiny_model)
    tiny_model.tokens(session.adata)
    session.mark_changed("tokens")
    return slide_widget


def _box(viewer, section: int, frac=(0.2, 0.7)):
    """A rectangle over the middle of a section: world vertices and slide bounds (xa, ya, xb, yb)."""
    from napari_squint._napari.layers import cell_layers

    info = cell_layers(viewer)[section].metadata[K.CELLS_LAYER_META]
    x0, y0, x1, y1 = info["bounds"]
    dy, dx = info["offset"]
    a, b = frac
    xa, xb = x0 + a * (x1 - x0), x0 + b * (x1 - x0)
    ya, yb = y0 + a * (y1 - y0), y0 + b * (y1 - y0)
    world = np.array([[ya + dy, xa + dx], [ya + dy, xb + dx], [yb + dy, xb + dx], [yb + dy, xa + dx]])
    return world, (xa, ya, xb, yb)


def _in_box(adata, section: str, bounds) -> np.ndarray:
    """Cells of ``section`` strictly inside slide bounds (xa, ya, xb, yb)."""
    x, y = np.asarray(adata.obsm["spatial"])[:, :2].T
    xa, ya, xb, yb = bounds
    return (adata.obs["section"].to_numpy() == section) & (x > xa) & (x < xb) & (y > ya) & (y < yb)


@pytest.fixture
def box():
    """``box(viewer, section, frac=(0.2, 0.7))``: a rectangle over a section (world vertices, slide bounds)."""
    return _box


@pytest.fixture
def in_box():
    """``in_box(adata, section, bounds)``: the cells of a section inside slide bounds."""
    return _in_box

