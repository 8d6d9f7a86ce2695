"""Dock widget 5, "Perturb": replace a cell type's expression in a painted region, see tokens move (paper 5.4).

With a CIFM model the dock's second mode, "inject cells (CIFM)", places new
cells of a chosen type in the painted region and lets CIFM update their
neighbours step by step (:func:`napari_squint.tasks.inject.iter_inject`); the
cell-type transitions and the composition change show in the same panels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from qtpy.QtWidgets import QComboBox, QLabel, QSpinBox

from napari_squint import _constants as K
from napari_squint._napari.colouring import Legend, draw_legend
from napari_squint._napari.colours import DIM
from napari_squint._napari.dock import RegionPicker, SquintDock, region_mask, set_combo
from napari_squint._napari.figure import FigurePanel

ALL_NEIGHBOURS = "(every neighbour)"  #: the responders choice meaning "no filter"
#: colours of the result on the tissue
PERTURBED_COLOUR = np.array([0.2, 0.55, 1.0, 1.0], dtype=np.float32)
CHANGED_COLOUR = np.array([1.0, 0.35, 0.1, 1.0], dtype=np.float32)
UNCHANGED_AFFECTED = np.array([0.95, 0.9, 0.6, 0.9], dtype=np.float32)
#: mode label -> mode; "inject" needs a CIFM model, "replace" a SQuINT model (tokens)
MODES = {"replace cells (SQuINT)": "replace", "inject cells (CIFM)": "inject"}
#: layer.metadata key of the injected-cells overlay (replaced on every injection)
INJECTED_META = "squint_injected_cells"
#: colour of the injected cells (an overlay: they are not cells of the slide)
INJECTED_COLOUR = PERTURBED_COLOUR
TITLES = {"replace": "Token transitions of the responders", "inject": "Cell-type transitions of the updated cells"}


def _inject():
    """The injection engine, imported when used (it imports torch; the widget does not)."""
    from napari_squint.tasks import inject

    return inject


def _perturb():
    """The perturbation engine, imported when used."""
    from napari_squint.tasks import perturb

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
        self._form = form
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(list(MODES))
        self.mode_combo.setToolTip("replace: SQuINT, give cells of a type another profile and read token changes; "
                                   "inject: CIFM, add new cells of a type and let their neighbours respond")
        self.mode_combo.currentTextChanged.connect(lambda *_: self._mode_changed())
        form.addRow("mode", self.mode_combo)
        self.region = RegionPicker(self.viewer, default_name="perturb region")
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
        self.inject_combo = QComboBox()
        self.inject_combo.setToolTip("type of the injected cells: their expression is the type's mean profile")
        form.addRow("inject", self.inject_combo)
        self.n_inject_spin = QSpinBox(minimum=1, maximum=10000, value=20)
        self.n_inject_spin.setToolTip("number of cells placed at random inside the region")
        form.addRow("cells", self.n_inject_spin)
        self.steps_spin = QSpinBox(minimum=1, maximum=20, value=3)
        self.steps_spin.setToolTip("autoregressive steps: each updates one more ring of neighbours")
        form.addRow("steps", self.steps_spin)
        self.run_button = self.button("Run perturbation", self.run)
        form.addRow(self.run_button)
        form = self.group(TITLES["replace"])
        self._result_box = form.parentWidget()
        self.summary_label = QLabel("")
        self.summary_label.setWordWrap(True)
        form.addRow(self.summary_label)
        self.key_panel = FigurePanel(width=3.6, height=0.9)
        self.key_panel.setToolTip("what the colours on the canvas mean")
        form.addRow(self.key_panel)
        self.key = None
        self.transitions_panel = FigurePanel(width=4.2, height=3.4)
        self.proportions_panel = FigurePanel(width=4.2, height=2.6)
        form.addRow(self.transitions_panel)
        form.addRow(self.transitions_panel.export_row(self, "transitions", table=self._transitions_table))
        form.addRow(self.proportions_panel)
        form.addRow(self.proportions_panel.export_row(self, "proportions", table=self._proportions_table))
        self.result = None
        self.finish_layout()
        self._mode_changed()

    def _transitions_table(self):
        r = self.result
        if r is None:
            return None
        tab = getattr(r, "transitions", None)
        if tab is None:
            tab = getattr(r, "transition_counts", None)
        return None if tab is None else tab.reset_index().rename(columns={tab.index.name or "index": "before"})

    def _proportions_table(self):
        r = self.result
        tab = getattr(r, "token_proportions", None) if r is not None else None
        if tab is None and r is not None:
            tab = getattr(r, "composition", None)
        return None if tab is None else tab.reset_index()

    def refresh(self, what: str) -> None:
        a = self.session.adata
        if what in ("init", "model", "slide"):
            self._enable_modes()
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
        set_combo(self.inject_combo, types, keep=True)

    # ---------------------------------------------------------------- modes
    def mode(self) -> str:
        """``"replace"`` (SQuINT perturbation) or ``"inject"`` (CIFM injection)."""
        return MODES[self.mode_combo.currentText()]

    def _enable_modes(self) -> None:
        """Offer the mode that fits the session's model (both while there is none)."""
        model = self.session.model
        want = None if model is None else model.perturbation
        items = self.mode_combo.model()
        for i, mode in enumerate(MODES.values()):
            ok = want is None or mode == want
            item = items.item(i) if hasattr(items, "item") else None
            if item is not None:
                item.setEnabled(ok)
        if want is not None:
            if self.mode() != want:
                self.mode_combo.setCurrentText({v: k for k, v in MODES.items()}[want])

    def _mode_changed(self) -> None:
        inject = self.mode() == "inject"
        for w in (self.replace_combo, self.proto_key_combo, self.proto_combo, self.resp_combo):
            self._row_visible(w, not inject)
        for w in (self.inject_combo, self.n_inject_spin, self.steps_spin):
            self._row_visible(w, inject)
        self.run_button.setText("Run injection" if inject else "Run perturbation")
        self._result_box.setTitle(TITLES[self.mode()])

    def _row_visible(self, field, visible: bool) -> None:
        field.setVisible(visible)
        label = self._form.labelForField(field)
        if label is not None:
            label.setVisible(visible)

    def _fill_proto(self, column: str) -> None:
        values = self._values(column)
        set_combo(self.proto_combo, values, current=values[1] if len(values) > 1 else None, keep=True)

    def run(self):
        """Run the chosen mode: the SQuINT perturbation, or the CIFM injection (:meth:`inject`)."""
        if self.mode() == "inject":
            return self.inject()
        if self.session.model is not None and self.session.model.perturbation != "replace":
            self.error(RuntimeError("replacing cells reads token transitions, and CIFM has no tokens: "
                                    "choose 'inject cells (CIFM)', or train a SQuINT model"))
            return None
        return self.perturb()

    def perturb(self):
        """Perturb (worker), then show the transition heat map, the proportions and the changed cells."""
        if not self.require_model():
            return None
        perturb = _perturb()
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

    # ------------------------------------------------------------ injection
    def inject(self):
        """Inject cells of a type into the painted region with CIFM (worker), then show what changed.

        The injected cells take the mean profile of the type chosen in
        ``inject`` (values of the ``cell types`` column); CIFM re-predicts
        their neighbours for ``steps`` steps, against a control run without
        them (:func:`napari_squint.tasks.inject.iter_inject`). The updated
        cells are coloured on the tissue (orange: type changed; yellow: updated,
        same type), the injected cells are drawn as an overlay, and the
        cell-type transition matrix and composition change fill the panels.
        Results go to ``obs['cifm_inject_*']`` and ``uns['squint']['cifm_inject']``.
        """
        if not self.require_model():
            return None
        s = self.session
        if s.model.perturbation != "inject":
            self.error(RuntimeError("injection needs a CIFM model: choose CIFM in the 'Slide & model' widget "
                                    "and train or load one"))
            return None
        inject = _inject()
        adata, model = s.adata, s.model
        key, cell_type = self.key_combo.currentText(), self.inject_combo.currentText()
        if not key or key not in adata.obs or not cell_type:
            self.error(ValueError("choose a cell-type column ('cell types') and the type to inject"))
            return None
        n_cells, steps = self.n_inject_spin.value(), self.steps_spin.value()
        try:
            in_region, regions = region_mask(s, self.viewer, self.region.layer())
        except Exception as err:
            self.error(err)
            return None
        if not regions and not in_region.any():
            self.error(ValueError("the painted region holds no cell: paint over the tissue"))
            return None
        region = regions if regions else in_region

        def work():
            return inject.iter_inject(model, adata, cell_type=cell_type, n_cells=n_cells, region=region,
                                      steps=steps, cell_type_key=key, seed=0)

        def event(ev):
            if ev.message:
                self.set_status(ev.message)

        def done(result):
            self.result = result
            result.annotate(s.adata)
            s.results["inject"] = result
            if regions:
                s.regions = [r for r in s.regions if not r.name.startswith("inject")] + [
                    type(r)(r.section, r.polygon, f"inject_{i}") for i, r in enumerate(regions)]
            self._show_injection(result, key=key)
            s.mark_changed("inject")

        return self.run_job(work, desc=f"injecting {n_cells} {cell_type} cells", on_done=done, on_event=event)

    def _show_injection(self, result, *, key: str) -> None:
        n = self.session.adata.n_obs
        rgba = np.broadcast_to(DIM, (n, 4)).copy()
        rgba[result.affected] = UNCHANGED_AFFECTED
        moved = result.before != result.after
        rgba[result.affected[moved]] = CHANGED_COLOUR
        n_moved = int(moved.sum())
        self.key = Legend("injection", labels=["injected (overlay)", "changed type", "updated, same type", "other"],
                          counts=[result.params["n_cells"], n_moved, result.affected.size - n_moved,
                                  n - result.affected.size],
                          colours=np.stack([INJECTED_COLOUR, CHANGED_COLOUR, UNCHANGED_AFFECTED, DIM]))
        self.colour_cells(rgba, legend=self.key)
        draw_legend(self.key_panel.figure, self.key)
        self.key_panel.draw()
        self._injected_overlay(result)
        p = result.params
        comp = result.composition
        top = comp["p_change"].abs().sort_values(ascending=False).index[:3]
        soft = ", ".join(f"{t} {comp.loc[t, 'p_change']:+.3f}" for t in top)
        n_ctl = int((result.before != result.control).sum())
        self.summary_label.setText(
            f"{p['n_cells']:,} {result.cell_type} cells ({key}) injected into {result.section}; "
            f"{result.affected.size:,} cells updated in {len(result.steps)} step(s), "
            f"{result.n_changed:,} changed type (control run without the injection: {n_ctl:,}). "
            f"Soft composition change (after − control): {soft}.")
        self.transitions_panel.set_figure(plot_type_transitions(result))
        self.proportions_panel.set_figure(plot_composition_change(result))
        self.set_status("cell types before/after written to obs ['cifm_inject_before', 'cifm_inject_after', "
                        "'cifm_inject_control', 'cifm_inject_step']")

    def _injected_overlay(self, result) -> None:
        """Draw the injected cells (not cells of the slide) as a Points layer over their section."""
        from napari_squint._napari.dock import remove_layers
        from napari_squint._napari.layers import cell_layers

        remove_layers(self.viewer, [lyr for lyr in self.viewer.layers if INJECTED_META in lyr.metadata])
        xy = np.asarray(result.injected_coords, dtype=np.float64)
        world = np.column_stack([xy[:, 1], xy[:, 0]])
        size = 1.0
        for layer in cell_layers(self.viewer, self.session.adata):
            info = layer.metadata[K.CELLS_LAYER_META]
            size = info["spacing"]
            if str(info["section"]) == str(result.section):
                world = world + np.asarray(info["offset"])
                break
        self.viewer.add_points(world, face_color=INJECTED_COLOUR, border_color="white", size=1.2 * size,
                               border_width=0.1, name=f"injected · {result.cell_type}",
                               metadata={INJECTED_META: True})

    # ------------------------------------------------------------- display
    def _show(self, result, *, replace: str, proto: str, resp: str) -> None:
        n = self.session.adata.n_obs
        rgba = np.broadcast_to(DIM, (n, 4)).copy()
        rgba[result.affected] = UNCHANGED_AFFECTED
        changed = result.changed["index"].to_numpy().astype(int)
        rgba[changed] = CHANGED_COLOUR
        rgba[result.perturbed] = PERTURBED_COLOUR
        p = result.params
        n_pert, n_aff, n_ch = p["n_perturbed"], p["n_affected"], p["n_changed"]
        n_ch_pert = int(result.perturbed[changed].sum())
        labels = ["perturbed", "neighbour, changed token", "could change, did not", "other cells"]
        counts = [n_pert, n_ch - n_ch_pert, n_aff - n_ch - (n_pert - n_ch_pert), n - n_aff]
        self.key = Legend("perturbation", labels=labels, counts=counts,
                          colours=np.stack([PERTURBED_COLOUR, CHANGED_COLOUR, UNCHANGED_AFFECTED, DIM]))
        state = np.full(n, labels[3], dtype=object)
        state[result.affected] = labels[2]
        state[changed] = labels[1]
        state[result.perturbed] = labels[0]
        self.colour_cells(rgba, legend=self.key, values=state)
        draw_legend(self.key_panel.figure, self.key)
        self.key_panel.draw()
        who = (f"{p['n_responders']:,} {resp} responders (next to a perturbed cell)" if result.responders is not None
               else f"all {n_aff:,} cells that could change (the perturbed cells and every neighbour)")
        self.summary_label.setText(
            f"{n_pert:,} {replace} cells given the profile of {proto}. {n_aff:,} cells could change token "
            f"(perturbed or next to one); {n_ch:,} did ({n_ch_pert:,} perturbed cells, {n_ch - n_ch_pert:,} "
            f"neighbours). Transitions below: {who}, "
            f"{p['n_changed_responders']:,} of them changed token.")
        self._draw(result)
        self.set_status("tokens before/after written to obs "
                        f"['{K.TOKEN_BEFORE_KEY}', '{K.TOKEN_AFTER_KEY}', '{K.PERTURBED_KEY}']")

    def _draw(self, result) -> None:
        from napari_squint.plot.perturb import plot_token_proportions, plot_transitions

        title = f"token transitions\n({result.n_changed_responders} of {result.n_responders} responders changed)"
        self.transitions_panel.set_figure(plot_transitions(result, max_tokens=15, title=title))
        if not result.token_proportions.empty:
            self.proportions_panel.set_figure(plot_token_proportions(result, top=15))


# ------------------------------------------------------------------ injection figures
def plot_type_transitions(result, *, max_types: int = 15):
    """Cell types of the updated cells before (rows) and after (columns) the injection, diagonal included.

    Colour: the share of a row type's cells that ended in each column type;
    the number is the cell count.
    """
    from matplotlib.figure import Figure

    counts = result.transition_counts
    fig = Figure(figsize=(4.6, 3.6))
    ax = fig.add_subplot()
    used = counts.index[(counts.sum(1) > 0).to_numpy() | (counts.sum(0) > 0).to_numpy()]
    if len(used) == 0:
        ax.text(0.5, 0.5, "no cell was updated", ha="center", va="center")
        ax.set_axis_off()
        return fig
    order = counts.loc[used, used].sum(1).add(counts.loc[used, used].sum(0)).sort_values(ascending=False)
    keep = list(order.index[:max_types])
    c = counts.loc[keep, keep]
    tot = c.sum(1).to_numpy(dtype=np.float64)[:, None]
    p = np.divide(c.to_numpy(dtype=np.float64), tot, out=np.zeros(c.shape), where=tot > 0)
    im = ax.imshow(p, cmap="Purples", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    for i in range(len(keep)):
        for j in range(len(keep)):
            v = int(c.iat[i, j])
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="w" if p[i, j] > 0.55 else "k")
    ax.set_xticks(range(len(keep)), [str(t) for t in keep], rotation=90, fontsize=7)
    ax.set_yticks(range(len(keep)), [str(t) for t in keep], fontsize=7)
    ax.set_xlabel("type after")
    ax.set_ylabel("type before")
    fig.colorbar(im, ax=ax, fraction=0.05, label="row proportion")
    ax.set_title(f"{result.cell_type} injection: {result.n_changed} of {result.affected.size} updated cells "
                 "changed type", fontsize=8)
    return fig


def plot_composition_change(result, *, top: int = 12):
    """Composition of the updated cells: counts before / control / after, and the soft change after − control."""
    from matplotlib.figure import Figure

    comp = result.composition
    rank = pd.DataFrame({"n": comp[["before", "control", "after"]].max(1), "p": comp["p_change"].abs()})
    comp = comp.loc[rank.sort_values(["n", "p"], ascending=False).index[:top]]
    x = np.arange(len(comp))
    fig = Figure(figsize=(4.6, 3.0))
    ax1, ax2 = fig.subplots(1, 2)
    for off, col, colour in ((-0.27, "before", "0.6"), (0.0, "control", "#8fb0d9"), (0.27, "after", "#c44e52")):
        ax1.bar(x + off, comp[col], width=0.27, color=colour, label=col)
    ax1.set_xticks(x, [str(t) for t in comp.index], rotation=90, fontsize=7)
    ax1.set_ylabel("updated cells")
    ax1.legend(fontsize=7, frameon=False)
    ax1.set_title("hard types", fontsize=8)
    ch = comp["p_change"].to_numpy(dtype=np.float64)
    ax2.bar(x, ch, color=np.where(ch >= 0, "#c44e52", "#4c72b0"))
    ax2.axhline(0, color="0.3", lw=0.6)
    ax2.set_xticks(x, [str(t) for t in comp.index], rotation=90, fontsize=7)
    ax2.set_title("mean probability, after − control", fontsize=8)
    return fig
