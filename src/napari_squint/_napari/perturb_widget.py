"""Dock widget 5, "Perturb": replace a cell type's expression in a painted region, see tokens move (paper 5.4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtWidgets import QComboBox, QLabel

from napari_squint import _constants as K
from napari_squint._napari.colours import DIM
from napari_squint._napari.dock import RegionPicker, SquintDock, region_mask, set_combo
from napari_squint._napari.figure import FigurePanel

ALL_NEIGHBOURS = "(every neighbour)"
#: colours of the result on the tissue
PERTURBED_COLOUR = np.array([0.2, 0.55, 1.0, 1.0], dtype=np.float32)
CHANGED_COLOUR = np.array([1.0, 0.35, 0.1, 1.0], dtype=np.float32)
UNCHANGED_AFFECTED = np.array([0.95, 0.9, 0.6, 0.9], dtype=np.float32)


def _perturb():
    try:
        from napari_squint.tasks import perturb
    except ImportError:
        return None
    return perturb


def label_columns(adata, *, max_levels: int = 500) -> list[str]:
    out = []
    for c in adata.obs.columns:
        if c.startswith("squint"):
            continue
        col = adata.obs[c]
        if (isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object) and 2 <= col.nunique() <= max_levels:
            out.append(c)
    return out


class PerturbWidget(SquintDock):
    """Paint a region, pick the cells to replace and a prototype, run, and read the token transitions."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(napari_viewer, parent)
        form = self.group("Where and what")
        self.region = RegionPicker(napari_viewer, default_name="perturb region")
        form.addRow("region", self.region)
        self.key_combo = QComboBox()
        self.key_combo.setToolTip("obs column with cell types")
        self.key_combo.currentTextChanged.connect(self._fill_types)
        form.addRow("cell types", self.key_combo)
        self.replace_combo = QComboBox()
        self.replace_combo.setToolTip("cells of this type inside the region get the prototype's expression")
        form.addRow("replace", self.replace_combo)
        self.proto_key_combo = QComboBox()
        self.proto_key_combo.currentTextChanged.connect(self._fill_proto)
        self.proto_combo = QComboBox()
        self.proto_combo.setToolTip("the prototype is the mean profile of these cells (another cell type, a group)")
        form.addRow("prototype from", self.proto_key_combo)
        form.addRow("prototype", self.proto_combo)
        self.resp_combo = QComboBox()
        self.resp_combo.setToolTip("responder cells whose token transitions are tabulated (with a perturbed neighbour)")
        form.addRow("responders", self.resp_combo)
        self.run_button = self.button("Run perturbation", self.run)
        form.addRow(self.run_button)
        form = self.group("Token transitions of the responders")
        self.summary_label = QLabel("")
        self.summary_label.setWordWrap(True)
        form.addRow(self.summary_label)
        self.transitions_panel = FigurePanel(width=4.2, height=3.4)
        self.proportions_panel = FigurePanel(width=4.2, height=2.6)
        form.addRow(self.transitions_panel)
        form.addRow(self.proportions_panel)
        self.result = None
        self.finish_layout()

    def refresh(self, what: str) -> None:
        a = self.session.adata
        if what in ("init", "slide") and a is not None:
            cols = label_columns(a)
            pref = next((c for c in (K.CELL_TYPE_KEY, "cell_type_coarse") if c in cols), None)
            set_combo(self.key_combo, cols, current=pref, keep=what != "slide")
            set_combo(self.proto_key_combo, cols, current=pref, keep=what != "slide")
            self._fill_types(self.key_combo.currentText())
            self._fill_proto(self.proto_key_combo.currentText())

    def _values(self, column: str) -> list[str]:
        a = self.session.adata
        if a is None or column not in a.obs:
            return []
        return list(a.obs[column].astype(str).value_counts().index)

    def _fill_types(self, column: str) -> None:
        types = self._values(column)
        set_combo(self.replace_combo, types, keep=True)
        set_combo(self.resp_combo, [ALL_NEIGHBOURS, *types], keep=True)

    def _fill_proto(self, column: str) -> None:
        values = self._values(column)
        set_combo(self.proto_combo, values, current=values[1] if len(values) > 1 else None, keep=True)

    def run(self):
        """Perturb (worker), then show the transition heat map, the proportions and the changed cells."""
        if not self.require_model():
            return None
        perturb = _perturb()
        if perturb is None:
            self.error(RuntimeError("perturbation needs napari_squint.tasks.perturb, which is not installed"))
            return None
        s = self.session
        adata, model = s.adata, s.model
        key, replace = self.key_combo.currentText(), self.replace_combo.currentText()
        pkey, pvalue = self.proto_key_combo.currentText(), self.proto_combo.currentText()
        resp = self.resp_combo.currentText()
        try:
            in_region, regions = region_mask(s, self.viewer, self.region.layer())
        except Exception as err:
            self.error(err)
            return None
        cells = in_region & (adata.obs[key].astype(str).to_numpy() == replace)
        if not cells.any():
            self.error(ValueError(f"no {replace!r} cell ({key}) inside the region: paint over some, or pick another type"))
            return None
        proto = adata.obs[pkey].astype(str).to_numpy() == pvalue
        responders = None if resp == ALL_NEIGHBOURS else adata.obs[key].astype(str).to_numpy() == resp

        def work():
            return perturb.perturb(model, adata, cells=cells, prototype=proto, responders=responders,
                                   write=True, copy=True)

        def done(result):
            self.result = result
            a = s.adata
            for col in (K.TOKEN_BEFORE_KEY, K.TOKEN_AFTER_KEY, K.PERTURBED_KEY):
                a.obs[col] = result.adata.obs[col].to_numpy()
            a.uns.setdefault(K.UNS_KEY, {})["perturb"] = result.adata.uns.get(K.UNS_KEY, {}).get("perturb", {})
            s.results["perturb"] = result
            if regions:
                s.regions = [r for r in s.regions if not r.name.startswith("perturb")] + [
                    type(r)(r.section, r.polygon, f"perturb_{i}") for i, r in enumerate(regions)]
            self._show(result, replace=replace, proto=f"{pkey} = {pvalue}", resp=resp)
            s.mark_changed("perturb")

        return self.run_job(work, desc=f"perturbing {int(cells.sum())} {replace} cells", on_done=done)

    # ------------------------------------------------------------- display
    def _show(self, result, *, replace: str, proto: str, resp: str) -> None:
        n = self.session.adata.n_obs
        rgba = np.broadcast_to(DIM, (n, 4)).copy()
        rgba[result.affected] = UNCHANGED_AFFECTED
        changed = result.changed["index"].to_numpy().astype(int)
        rgba[changed] = CHANGED_COLOUR
        rgba[result.perturbed] = PERTURBED_COLOUR
        self.colour_cells(rgba)
        p = result.params
        who = "responders" if result.responders is not None else "affected cells"
        self.summary_label.setText(
            f"{p['n_perturbed']:,} {replace} cells given the profile of {proto}; "
            f"{p['n_affected']:,} cells could change token, {p['n_changed']:,} did. "
            f"{who.capitalize()} ({resp}): {p['n_responders'] if result.responders is not None else p['n_affected']:,}, "
            f"{p['n_changed_responders']:,} changed token.<br>"
            "<span style='color:#3c8cff'>■</span> perturbed &nbsp; <span style='color:#ff5a1a'>■</span> changed token"
            " &nbsp; <span style='color:#f2e69a'>■</span> could change, did not")
        self._draw(result)
        self.set_status("tokens before/after written to obs "
                        f"['{K.TOKEN_BEFORE_KEY}', '{K.TOKEN_AFTER_KEY}', '{K.PERTURBED_KEY}']")

    def _draw(self, result) -> None:
        from napari_squint.plot.perturb import plot_token_proportions, plot_transitions

        self.transitions_panel.set_figure(plot_transitions(result, max_tokens=15))
        if not result.token_proportions.empty:
            self.proportions_panel.set_figure(plot_token_proportions(result, top=15))
