"""The whole plugin on the real MERFISH slide: open, train, colour by token, in-paint, perturb, save."""

from __future__ import annotations

import numpy as np
import pytest

from napari_squint import _constants as K
from napari_squint._napari.launch import add_docks
from napari_squint._napari.layers import cell_layers


@pytest.mark.real_data
@pytest.mark.slow
def test_merfish_end_to_end(merfish_path, viewer, tiny, tmp_path):
    docks = add_docks(viewer)
    slide = docks["Slide & model"]
    slide.open_slide(merfish_path)
    assert slide.last_error is None, slide.last_error
    layers = cell_layers(viewer)
    assert len(layers) == 9 and sum(len(lyr.data) for lyr in layers) == 49_468
    # train a small model for one epoch
    slide.epochs_spin.setValue(1)
    slide.codebook_spin.setValue(tiny["codebook_size"])
    slide.train(**{k: v for k, v in tiny.items() if k not in ("epochs", "codebook_size")})
    assert slide.last_error is None, slide.last_error
    s = slide.session
    assert s.adata.obs[K.TOKEN_KEY].notna().all()
    tokens = docks["Tokens"]
    assert tokens.legend.count() == s.adata.obs[K.TOKEN_KEY].nunique()
    # in-paint a square in the middle of the first section
    info = layers[0].metadata[K.CELLS_LAYER_META]
    x0, y0, x1, y1 = info["bounds"]
    dy, dx = info["offset"]
    cx, cy, h = (x0 + x1) / 2, (y0 + y1) / 2, 0.06 * (x1 - x0)
    square = np.array([[cy - h + dy, cx - h + dx], [cy - h + dy, cx + h + dx], [cy + h + dy, cx + h + dx],
                       [cy + h + dy, cx - h + dx]])
    inpaint = docks["In-paint"]
    inpaint.region.new_layer().add_polygons([square])
    inpaint.impute()
    assert inpaint.last_error is None, inpaint.last_error
    out = inpaint.output
    assert 50 < out.n_obs < 1000 and out.layers[K.IMPUTED_LAYER].shape[1] == 135
    assert np.isfinite(inpaint.metrics["SQuINT"]["pc_cell"])
    # perturb: inhibitory neurons in the same square take the mean astrocyte profile; microglia respond
    perturb = docks["Perturb"]
    perturb.region.combo.setCurrentText("impute regions")
    perturb.key_combo.setCurrentText("cell_type_coarse")
    types = [perturb.replace_combo.itemText(i) for i in range(perturb.replace_combo.count())]
    inh = next(t for t in types if t.startswith("Inhibitory"))
    perturb.replace_combo.setCurrentText(inh)
    perturb.proto_key_combo.setCurrentText("cell_type_coarse")
    perturb.proto_combo.setCurrentText(next(t for t in types if t.startswith("Astrocyte")))
    perturb.run()
    assert perturb.last_error is None, perturb.last_error
    assert s.adata.obs[K.PERTURBED_KEY].sum() > 0
    # save everything beside the input (never into it)
    out_path = slide.save_results(tmp_path / "merfish.squint.zarr")
    assert out_path is not None and (out_path / "tables" / "squint_imputed").is_dir()
