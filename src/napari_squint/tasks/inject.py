"""Simulated injection of cells with CIFM (section 5 of the CIFM paper).

``N`` cells of a chosen type are placed at random (seeded) positions in a
region of one section; their expression is the mean normalised log profile of
that type. The expression of the surrounding cells is then updated
autoregressively for ``steps`` steps. At step ``t`` the *targets* are the
measured cells adjacent (radius graph) to an injected cell or to a cell
updated before; they are split into ``ceil(1 / mask_ratio)`` random groups,
each group is masked in turn and reconstructed by CIFM from its current
microenvironment, and all targets take their new expression at once at the end
of the step (a synchronous update, so the order of the groups does not
matter). The influence therefore spreads by one ring of cells per step.

Because CIFM's reconstruction of a cell differs from its measurement even
without any perturbation, the same steps (same targets, same groups) are
replayed on the section *without* the injected cells: the **control**. The
effect of the injection is ``after - control``.

Cell types before and after are assigned by a classifier trained on measured,
labelled cells (:class:`~napari_squint.tasks.cifm_eval.TypingClassifier`);
the result reports the cell-type composition of the updated cells and the
transition matrix of their types, as counts and as row-normalised proportions
with the diagonal excluded, with the field names and tables of the SQuINT
perturbation (:class:`~napari_squint.tasks.perturb.PerturbResult`,
:func:`~napari_squint.tasks.perturb.transition_tables`), so both show in the
same widget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from anndata import AnnData

from napari_squint import _constants as K
from napari_squint.data.validate import section_rows
from napari_squint.tasks.cifm_eval import TypingClassifier
from napari_squint.tasks.perturb import transition_tables
from napari_squint.data.cifm_graph import build_graph
from napari_squint.models.cifm_infer import reconstruct_tiled
from napari_squint.train.events import ProgressEvent, drive

__all__ = ["InjectionResult", "iter_inject", "simulate_injection", "transition_matrix"]

#: obs columns written by :meth:`InjectionResult.annotate` (prefix ``cifm_inject``).
INJECT_PREFIX = K.INJECT_PREFIX


def transition_matrix(before, after, *, categories: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cell-type transitions between two labelings of the same cells.

    Parameters
    ----------
    before, after
        ``(m,)`` labels of the same cells.
    categories
        Row/column order (default: sorted union of the labels).

    Returns
    -------
    counts : pandas.DataFrame
        ``(types, types)`` number of cells going from the row type to the
        column type (diagonal: unchanged cells).
    proportions : pandas.DataFrame
        ``counts`` with the diagonal set to 0 and each row divided by its
        off-diagonal sum: where the cells of a type that changed went. Rows
        with no change are all 0.
    """
    b = np.asarray(before, dtype=object).astype(str)
    a = np.asarray(after, dtype=object).astype(str)
    if b.shape != a.shape:
        raise ValueError(f"before and after differ in shape: {b.shape} vs {a.shape}")
    cats = list(categories) if categories is not None else sorted(set(b) | set(a))
    counts = pd.crosstab(pd.Categorical(b, categories=cats), pd.Categorical(a, categories=cats),
                         dropna=False).reindex(index=cats, columns=cats, fill_value=0)
    counts.index.name, counts.columns.name = "before", "after"
    off = counts.to_numpy(dtype=np.float64).copy()
    np.fill_diagonal(off, 0.0)
    tot = off.sum(1, keepdims=True)
    prop = np.divide(off, tot, out=np.zeros_like(off), where=tot > 0)
    return counts, pd.DataFrame(prop, index=counts.index, columns=counts.columns)


@dataclass
class InjectionResult:
    """Outcome of :func:`simulate_injection`; fields named as in
    :class:`~napari_squint.tasks.perturb.PerturbResult` where they mean the same.

    Attributes
    ----------
    affected
        ``(m,)`` rows of the input AnnData updated by the simulation, ascending.
    obs_names
        ``(m,)`` their names.
    before, after, control
        ``(m,)`` their cell types: of the measured expression, after the
        injection run, after the control run (no injected cells).
    step_of
        ``(m,)`` the step that first updated each cell (1 = neighbours of
        injected cells).
    x_after, x_control
        ``(m, g)`` simulated normalised log expression (injection / control).
    transitions, transition_proportions, token_proportions
        As returned by :func:`napari_squint.tasks.perturb.transition_tables`
        for ``before -> after``: off-diagonal counts (types involved in a
        change), the same row-normalised, and per-type proportions before and
        after.
    transition_counts, control_counts
        Full ``types x types`` counts with the diagonal (:func:`transition_matrix`)
        for ``before -> after`` and ``before -> control``.
    composition
        Per type, counts among the updated cells: ``before``, ``control``,
        ``after``, ``change = after - control`` (the effect of the injection)
        and ``change_pct`` (percent of the updated cells); and the soft
        composition, the classifier's mean probability of the type:
        ``p_before``, ``p_control``, ``p_after``, ``p_change = p_after - p_control``
        (reconstructions are smooth, so their argmax type often stays put
        while the probabilities move).
    shift
        Per step (ring): ``n`` cells, ``rms`` root-mean-square of
        ``x_after - x_control`` (log expression), ``alignment`` the cosine
        between the mean shift and ``profile - mean control profile`` of
        those cells (1: the neighbours move toward the injected type).
    gene_shift
        Mean ``x_after - x_control`` per gene over the updated cells, sorted.
    changed
        One row per updated cell whose type changed: ``cell``, ``index``,
        ``before``, ``after``, ``control``, ``step``.
    section_cells, section_before, coords
        Every cell of the section (rows of the AnnData), its measured type
        and its coordinates, for plots.
    injected_coords
        ``(N, 2)`` positions of the injected cells.
    steps
        Per step: ``step``, ``targets`` (cells updated), ``new`` (first update).
    params
        The call's parameters.
    """

    section: str | None
    cell_type: str
    affected: np.ndarray
    obs_names: pd.Index
    before: np.ndarray
    after: np.ndarray
    control: np.ndarray
    step_of: np.ndarray
    x_after: np.ndarray
    x_control: np.ndarray
    transitions: pd.DataFrame
    transition_proportions: pd.DataFrame
    token_proportions: pd.DataFrame
    transition_counts: pd.DataFrame
    control_counts: pd.DataFrame
    composition: pd.DataFrame
    changed: pd.DataFrame
    shift: pd.DataFrame
    gene_shift: pd.Series
    section_cells: np.ndarray
    section_before: np.ndarray
    coords: np.ndarray
    injected_coords: np.ndarray
    steps: list[dict] = field(default_factory=list)
    params: dict = field(default_factory=dict)

    @property
    def n_changed(self) -> int:
        """Updated cells whose type changed."""
        return int((self.before != self.after).sum())

    def annotate(self, adata: AnnData, *, prefix: str = INJECT_PREFIX) -> None:
        """Write the result into ``adata`` (the AnnData that was simulated on).

        ``obs[prefix + '_before' | '_after' | '_control']`` (categorical types
        of the updated cells, NaN elsewhere), ``obs[prefix + '_step']`` (step
        that updated the cell, -1 elsewhere) and ``uns['squint']['cifm_inject']``
        (parameters, injected positions, composition).
        """
        cats = list(self.composition.index)
        for name, lab in (("before", self.before), ("after", self.after), ("control", self.control)):
            col = np.full(adata.n_obs, None, dtype=object)
            col[self.affected] = lab
            adata.obs[f"{prefix}_{name}"] = pd.Categorical(col, categories=cats)
        step = np.full(adata.n_obs, -1, dtype=np.int64)
        step[self.affected] = self.step_of
        adata.obs[f"{prefix}_step"] = step
        adata.uns.setdefault(K.UNS_KEY, {})[K.CIFM_INJECT_UNS] = {
            "params": self.params, "injected_coords": np.asarray(self.injected_coords).tolist(),
            "composition": {c: self.composition[c].tolist() for c in self.composition.columns},
            "cell_types": cats}


def _mean_profile(model, adata: AnnData, cell_type: str, cell_type_key: str) -> np.ndarray:
    if cell_type_key not in adata.obs:
        raise KeyError(f"cell type key {cell_type_key!r} not in adata.obs")
    sel = (adata.obs[cell_type_key].astype(str) == str(cell_type)).to_numpy()
    if not sel.any():
        known = sorted(adata.obs[cell_type_key].astype(str).unique())[:20]
        raise ValueError(f"no cell of type {cell_type!r} in obs[{cell_type_key!r}] (types: {known})")
    data = model.prepare(adata[sel])
    return np.asarray(data.x_in.mean(0)).ravel()


def _positions(rng, n: int, coords: np.ndarray, in_region: np.ndarray, polygons, jitter: float) -> np.ndarray:
    if polygons:
        from shapely.geometry import Point

        lo = np.min([p.bounds[:2] for p in polygons], axis=0)
        hi = np.max([p.bounds[2:] for p in polygons], axis=0)
        out = []
        for _ in range(1000):
            cand = rng.uniform(lo, hi, size=(4 * n, 2))
            for c in cand:
                if any(p.contains(Point(*c)) for p in polygons):
                    out.append(c)
                    if len(out) == n:
                        return np.asarray(out)
        raise ValueError("could not place cells inside the region polygon(s)")
    idx = np.flatnonzero(in_region)
    if idx.size == 0:
        raise ValueError("the region holds no cell of the section")
    pick = rng.choice(idx, size=n, replace=idx.size < n)
    ang = rng.uniform(0, 2 * np.pi, n)
    rad = jitter * np.sqrt(rng.uniform(0, 1, n))
    return coords[pick] + np.stack([np.cos(ang), np.sin(ang)], 1) * rad[:, None]


def iter_inject(
    model,
    adata: AnnData,
    *,
    cell_type: str,
    n_cells: int = 20,
    region=None,
    section: str | None = None,
    steps: int = 3,
    cell_type_key: str = K.CELL_TYPE_KEY,
    classifier: TypingClassifier | None = None,
    seed: int = 0,
    jitter: float = 0.5,
):
    """Simulate an injection; a generator of :class:`ProgressEvent` returning an :class:`InjectionResult`.

    Parameters
    ----------
    model
        A trained :class:`~napari_squint.api.cifm.Cifm`.
    adata
        The slide (counts, coordinates, ``obs[cell_type_key]`` for the mean
        profile and the classifier). Never modified.
    cell_type
        Type of the injected cells (a value of ``obs[cell_type_key]``).
    n_cells
        Number of injected cells ``N``.
    region
        Where to inject: ``None`` (anywhere in ``section``), an ``(n,)`` bool
        mask of cells of one section (cells are placed at random region cells,
        jittered by up to ``jitter`` median nearest-neighbour distances), or a
        :class:`~napari_squint.io.geojson.Region` / list of them / shapely
        polygon (uniform random points inside).
    section
        The section (needed when ``region`` does not determine it).
    steps
        Autoregressive steps (rings of cells updated).
    classifier
        Cell typer (default: :class:`TypingClassifier` fitted on every
        labelled cell of ``adata``).
    seed
        Seed of the positions and of the mask groups.
    jitter
        Jitter radius in median nearest-neighbour distances (mask regions).
    """
    if isinstance(n_cells, bool) or int(n_cells) < 1:
        raise ValueError(f"n_cells must be a positive integer, got {n_cells!r}")
    if isinstance(steps, bool) or int(steps) < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    rng = np.random.default_rng(seed)
    sk = model.section_key if (model.section_key and model.section_key in adata.obs) else None
    sec_labels = adata.obs[sk].astype(str).to_numpy() if sk else np.full(adata.n_obs, "all", dtype=object)
    polygons = []
    region_mask = None
    if region is not None:
        regions = region if isinstance(region, (list, tuple)) else [region]
        if isinstance(region, np.ndarray) or (regions and isinstance(regions[0], (bool, np.bool_))):
            region_mask = np.asarray(region, dtype=bool)
            if region_mask.shape != (adata.n_obs,):
                raise ValueError(f"region mask has shape {region_mask.shape}; expected ({adata.n_obs},)")
            secs = np.unique(sec_labels[region_mask])
            if secs.size != 1:
                raise ValueError(f"region must lie in one section; it covers {secs.size}: {list(secs)[:5]}")
            section = section or secs[0]
        else:
            for r in regions:
                poly = getattr(r, "polygon", r)
                polygons.append(poly)
                rsec = getattr(r, "section", None)
                if rsec is not None:
                    if section is not None and str(rsec) != str(section):
                        raise ValueError(f"region section {rsec!r} differs from section={section!r}")
                    section = str(rsec)
    section, cells = section_rows(sec_labels, section, sk)
    yield ProgressEvent("inject", message=f"injecting {n_cells} {cell_type} cells into {section}")

    sub = adata[cells]
    data = model.prepare(sub)
    x_sec = data.x_in.toarray().astype(np.float32)
    coords = np.asarray(data.coords, dtype=np.float64)
    scale = float(next(iter(data.scales.values())))
    in_region = np.ones(cells.size, bool) if region_mask is None else region_mask[cells]
    inj_xy = _positions(rng, int(n_cells), coords, in_region, polygons, jitter * scale)
    profile = _mean_profile(model, adata, cell_type, cell_type_key).astype(np.float32)

    n_sec, n_inj = cells.size, int(n_cells)
    x_aug = np.vstack([x_sec, np.tile(profile, (n_inj, 1))])
    xy_aug = np.vstack([coords, inj_xy])
    cfg = model.config
    g_inj = build_graph(x_aug, xy_aug, np.zeros(n_sec + n_inj, np.int64), cfg, scales={0: scale})
    g_ctl = build_graph(x_sec, coords, np.zeros(n_sec, np.int64), cfg, scales={0: scale})

    if classifier is None:
        labelled = adata.obs[cell_type_key].notna().to_numpy() if cell_type_key in adata.obs else None
        if labelled is None or not labelled.any():
            raise ValueError(f"no labelled cells in obs[{cell_type_key!r}] to train the cell typer")
        lab_data = model.prepare(adata[labelled])
        classifier = TypingClassifier(lab_data.x_in, adata.obs[cell_type_key].to_numpy()[labelled], seed=seed)

    injected = np.zeros(n_sec + n_inj, bool)
    injected[n_sec:] = True
    state = x_aug.copy()
    ctl = x_sec.copy()
    step_of = np.full(n_sec, -1, dtype=np.int64)
    adj = g_inj.adj
    history = []
    n_groups = int(np.ceil(1.0 / cfg.mask_ratio))
    for t in range(int(steps)):
        source = injected.copy()
        source[:n_sec] |= step_of >= 0
        near = np.asarray(adj[np.flatnonzero(source)].sum(0)).ravel() > 0
        targets = np.flatnonzero(near[:n_sec] | (step_of >= 0))
        if targets.size == 0:
            break
        perm = rng.permutation(targets)
        groups = [np.sort(gr) for gr in np.array_split(perm, min(n_groups, targets.size)) if gr.size]
        new = np.empty((targets.size, state.shape[1]), np.float32)
        new_c = np.empty_like(new)
        pos = np.searchsorted(targets, np.arange(n_sec + n_inj))
        for gr in groups:
            m = np.zeros(n_sec + n_inj, bool)
            m[gr] = True
            new[pos[gr]] = reconstruct_tiled(model.module, g_inj, m, gr, cfg, model.device, x_override=state)
            new_c[pos[gr]] = reconstruct_tiled(model.module, g_ctl, m[:n_sec], gr, cfg, model.device,
                                               x_override=ctl)
        state[targets] = new
        ctl[targets] = new_c
        fresh = step_of[targets] < 0
        step_of[targets[fresh]] = t + 1
        rec = {"step": t + 1, "targets": int(targets.size), "new": int(fresh.sum())}
        history.append(rec)
        yield ProgressEvent("inject", step=t + 1, total=int(steps), metrics=rec,
                            message=f"step {t + 1}: {targets.size} cells updated")

    updated = step_of >= 0
    before_all = classifier.predict(x_sec)
    up = np.flatnonzero(updated)
    before = before_all[up]
    after = classifier.predict(state[up]) if up.size else before.copy()
    control = classifier.predict(ctl[up]) if up.size else before.copy()
    cats = list(classifier.classes_)
    comp = pd.DataFrame({
        "before": pd.Series(before).value_counts().reindex(cats, fill_value=0),
        "control": pd.Series(control).value_counts().reindex(cats, fill_value=0),
        "after": pd.Series(after).value_counts().reindex(cats, fill_value=0),
    })
    comp["change"] = comp["after"] - comp["control"]
    comp["change_pct"] = 100.0 * comp["change"] / max(up.size, 1)
    for name, xs in (("p_before", x_sec[up]), ("p_control", ctl[up]), ("p_after", state[up])):
        comp[name] = classifier.predict_proba(xs).mean(0) if up.size else 0.0
    comp["p_change"] = comp["p_after"] - comp["p_control"]
    comp.index.name = "cell_type"
    diff = (state[up] - ctl[up]).astype(np.float64)
    rows = []
    for t in range(1, len(history) + 1):
        sel = step_of[up] == t
        if not sel.any():
            continue
        d = diff[sel].mean(0)
        direction = profile - ctl[up][sel].mean(0)
        den = np.linalg.norm(d) * np.linalg.norm(direction)
        rows.append({"step": t, "n": int(sel.sum()), "rms": float(np.sqrt((diff[sel] ** 2).mean())),
                     "alignment": float(d @ direction / den) if den > 0 else float("nan")})
    shift = pd.DataFrame(rows, columns=["step", "n", "rms", "alignment"]).set_index("step")
    gene_shift = pd.Series(diff.mean(0) if up.size else np.zeros(len(model.genes)), index=list(model.genes),
                           name="mean_shift").sort_values(ascending=False)
    trans, props, tprops = transition_tables(before, after)
    tprops.index.name = "cell_type"
    counts, _ = transition_matrix(before, after, categories=cats)
    ctl_counts, _ = transition_matrix(before, control, categories=cats)
    affected = cells[up]
    moved = before != after
    changed = pd.DataFrame({"cell": sub.obs_names[up][moved], "index": affected[moved], "before": before[moved],
                            "after": after[moved], "control": control[moved], "step": step_of[up][moved]})
    params = {"cell_type": str(cell_type), "n_cells": n_inj, "section": str(section), "steps": int(steps),
              "seed": int(seed), "cell_type_key": cell_type_key, "jitter": jitter,
              "region": "polygon" if polygons else ("mask" if region_mask is not None else "section")}
    return InjectionResult(
        section=str(section), cell_type=str(cell_type), affected=affected, obs_names=sub.obs_names[up],
        before=before, after=after, control=control, step_of=step_of[up], x_after=state[up], x_control=ctl[up],
        transitions=trans, transition_proportions=props, token_proportions=tprops, transition_counts=counts,
        control_counts=ctl_counts, composition=comp, changed=changed, shift=shift, gene_shift=gene_shift,
        section_cells=cells,
        section_before=before_all, coords=coords, injected_coords=inj_xy, steps=history, params=params)


def simulate_injection(model, adata: AnnData, *, callback: Callable[[ProgressEvent], None] | None = None,
                       should_stop: Callable[[], bool] | None = None, **kwargs) -> InjectionResult | None:
    """Run :func:`iter_inject` to the end (None when cancelled); same keywords."""
    result, _ = drive(iter_inject(model, adata, **kwargs), callback=callback, should_stop=should_stop)
    return result
