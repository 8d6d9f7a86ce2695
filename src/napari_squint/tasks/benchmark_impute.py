"""The paper's Table 2 protocol: in-painting held-out patches, scored against baselines.

For every seed:

1. choose the held-out sites in one section (:func:`~napari_squint.tasks.holdout.choose_sites`:
   three contiguous patches of ~3% of the section's cells each, or as many
   random cells);
2. train SQuINT, SQuINT w/o C (``use_covariates=False``) and the zero-mask
   ablation (``learnable_mask=False``) on every other cell
   (:func:`~napari_squint.tasks.holdout.train_heldout`: held-out cells never
   enter an input, a graph or a loss);
3. impute the held-out cells (infill and one-shot, :mod:`~napari_squint.tasks.impute`);
4. compute the baselines on the same cells (:mod:`napari_squint.metrics`):
   the training mean profile, the neighbourhood average and the ring infill;
5. score every method on the cell profile ``X`` and on the microenvironment
   ``X_nbr`` with :func:`~napari_squint.metrics.evaluate_imputation`
   (pc_cell, pc_gene, mmd, energy), in one PCA per target fitted on training
   cells only;
6. score the first variant's masked-token accuracy (top-1 / top-5 of the
   masked-code head's prediction against the token the cell gets when
   observed) beside the nearest-observed-cells baseline
   (:mod:`napari_squint.tasks.masked_tokens`): target ``"tokens"``.

Microenvironments use the model's graph (symmetrised kNN, the same
:class:`~napari_squint.data.prepare.GraphConfig`) built on all cells of the
slide: the measured ``X_nbr`` of a held-out cell sums its own and its
neighbours' counts. A per-cell method's ``X_nbr`` sums the *measured* counts
of its observed members and the *estimates* of its held-out members
(:func:`~napari_squint.metrics.nbr_profile`); SQuINT's is reported both from
its decoder (the paper's X_nbr head) and as that sum. The X_nbr PCA is fitted
on microenvironments of training cells that contain no held-out cell.

Rows of the tables: the three baselines of the protocol, and the
neighbourhood average taken in log space (``space="log"``, the fair
comparison for log-space estimates); ``SQuINT (context)``, ``(infill)`` and
``(oneshot)`` (X from the cell head, X_nbr from the decoder head, expected
counts) and their ``Σ`` rows (X_nbr as the sum above); their ``logmean``
rows (``draw="logmean"``, the default output: counts whose log-normalisation is the model's
expected log-normalised expression; X_nbr as measured members plus the
log-space estimate of the held-out members, see
:meth:`~napari_squint.tasks.impute.Imputer.impute_targets`, then the local
residual correction of :mod:`napari_squint.tasks.residual`) and, for the
first variant, the same without that correction (``logmean w/o residual``,
the model alone);
``SQuINT (context) sample`` and its ``Σ`` row (generated counts,
``draw="sample"``: a token drawn from the masked-code head, then
negative-binomial counts with the learned dispersions); the
``SQuINT-guided neighbour average`` (:func:`guided_average`, a hybrid); and
the ablations ``SQuINT w/o C`` and ``SQuINT zero mask`` (first method only).

Extra methods (e.g. CIFM) plug in through ``extra_methods``: a dict
``name -> callable(adata, holdout_mask, test_idx, seed) -> (imputed, imputed_nbr)``
(``seed``: the run's seed, so a trained method varies from seed to seed as SQuINT does)
with ``(n_test, n_genes)`` counts in the benchmark's gene order
(``imputed_nbr`` may be None: it is then the sum above), or a dict ``suffix -> (imputed, imputed_nbr)``
giving several rows of one trained method, named ``name + suffix`` (CIFM's ``""`` and ``" sample"``). A callable's
``settings`` dict, if it has one, is recorded in ``config["extra_settings"]``.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from anndata import AnnData

from napari_squint import _constants as K
from napari_squint.data.validate import SlideError
from napari_squint.io.write import json_default, publish
from napari_squint.train.events import ProgressEvent, drive

__all__ = ["MODEL_VARIANTS", "benchmark_impute", "guided_average", "iter_benchmark_impute", "merge_results",
           "results_markdown", "write_results"]

#: SQuINT variants trained per seed: name -> config overrides
MODEL_VARIANTS: dict[str, dict] = {
    "SQuINT": {},
    "SQuINT w/o C": {"use_covariates": False},
    "SQuINT zero mask": {"learnable_mask": False},
}

#: ``fn(adata, holdout_mask, test_idx, seed) -> imputed`` or ``(imputed, imputed_nbr)``
ExtraMethod = Callable[[AnnData, np.ndarray, np.ndarray, int], tuple]


def _subset_sections(adata: AnnData, sections: Sequence[str] | None, section_key: str | None,
                     patch_section: str | None) -> AnnData:
    if sections is None or section_key is None:
        return adata
    sections = [str(s) for s in sections]
    labels = adata.obs[section_key].astype(str)
    unknown = sorted(set(sections) - set(labels.unique()))
    if unknown:
        raise SlideError(f"train sections {unknown} are not in adata.obs[{section_key!r}]")
    if patch_section is not None and str(patch_section) not in sections:
        sections = sections + [str(patch_section)]
    sub = adata[labels.isin(sections).to_numpy()].copy()
    sub.obs[section_key] = sub.obs[section_key].astype(str).astype("category")
    return sub


def guided_average(coords, counts, observed, test, imputed, *, section=None, candidates: int = 16,
                   k: int = 8) -> np.ndarray:
    """A hybrid: average the ``k`` nearby observed cells most like the model's guess.

    For each test cell, the ``candidates`` nearest observed cells of its
    section are ranked by the Pearson correlation of their log-normalised
    profile with the model's imputed profile, and the ``k`` best are
    averaged. The model chooses *which* real neighbours to copy; the profile
    is made of measured cells, so it keeps their spread (which the
    distribution metrics reward) instead of a decoder mean.

    Returns
    -------
    (n_test, n_genes) float64 estimated counts.
    """
    import scipy.sparse as sp

    from napari_squint.data.graph import nearest_sources
    from napari_squint.metrics import log_normalise

    coords = np.asarray(coords, dtype=np.float64)
    counts = sp.csr_matrix(counts)
    pred = log_normalise(imputed)
    pred = pred - pred.mean(1, keepdims=True)
    pred /= np.linalg.norm(pred, axis=1, keepdims=True) + 1e-12
    out = np.zeros((test.size, counts.shape[1]))
    for pos, cand in nearest_sources(coords, observed, test, candidates, section=section):
        nc = cand.shape[1]
        uniq, inv = np.unique(cand, return_inverse=True)
        lx = log_normalise(counts[uniq])
        lx = lx - lx.mean(1, keepdims=True)
        lx /= np.linalg.norm(lx, axis=1, keepdims=True) + 1e-12
        r = np.einsum("tcg,tg->tc", lx[inv.reshape(cand.shape)], pred[pos])
        best = np.take_along_axis(cand, np.argsort(-r, axis=1)[:, : min(k, nc)], axis=1)
        x = counts[best.ravel()].toarray().reshape(best.shape + (counts.shape[1],))
        out[pos] = x.mean(1)
    return out


def iter_benchmark_impute(
    adata: AnnData,
    *,
    section: str | None = None,
    sites: str = "patches",
    n_patches: int = 3,
    fraction: float = 0.03,
    seeds: Sequence[int] = (0, 1, 2),
    sections: Sequence[str] | None = None,
    epochs: int | None = None,
    variants: Mapping[str, dict] | None = None,
    impute_methods: Sequence[str] = ("context", "infill", "oneshot"),
    sampled: bool = True,
    logmean: bool = True,
    guided: bool = True,
    extra_methods: Mapping[str, ExtraMethod] | None = None,
    section_key: str | None = K.SECTION_KEY,
    spatial_key: str = K.SPATIAL_KEY,
    genes="all",
    options: Mapping | None = None,
    max_n: int = 2000,
):
    """Run the protocol; a generator of :class:`ProgressEvent` whose value is the results dict.

    Parameters
    ----------
    adata
        Slide(s) with raw counts (never modified).
    section
        Section holding the held-out sites (default: the largest).
    sites
        ``"patches"`` (Table 2) or ``"random"`` (appendix C.4).
    n_patches, fraction
        Number of patches and cells per patch as a fraction of the section.
        ``"random"`` holds out ``n_patches * fraction`` of the section.
    seeds
        One run per seed (site choice, training and scoring subsamples).
    sections
        Sections to use (training and evaluation); default all. The site
        section is always included.
    epochs
        Training epochs of every SQuINT variant (None: SQuINT's default, ``Squint.default_epochs()``).
    variants
        ``name -> config overrides`` of the SQuINT models to train
        (default :data:`MODEL_VARIANTS`); an empty dict trains none.
    impute_methods
        Imputation methods scored for the first variant (the others use the
        first method only).
    logmean
        Also score ``draw="logmean"`` (X_nbr as its Σ estimate) for every
        variant and method scored, and the log-space neighbourhood average.
    sampled
        Also score SQuINT's generated counts (``draw="sample"``: a token drawn
        from the masked-code head, then negative-binomial counts), for the
        first variant and method.
    guided
        Also score :func:`guided_average` (a hybrid: the model picks which
        nearby measured cells to average), for the first variant and method.
    extra_methods
        ``name -> callable(adata, holdout_mask, test_idx, seed) -> (imputed, imputed_nbr)``; ``seed`` is the
        run's seed. A ``last_training`` dict attribute, set by the call, is kept in the run's ``training``.
    options
        Extra :class:`~napari_squint.config.SquintConfig` options for
        every variant (``hidden=``, ``heads=``, ``batch_size=``, ``num_threads=``...).
    max_n
        Cells per set in MMD and energy distance.

    Returns
    -------
    dict
        ``config``, ``runs`` (per seed: n_test, scores ``{target: {method: metrics}}``,
        seconds) and ``summary`` ``{target: {method: {metric: {mean, sd, n}}}}``
        for targets ``"X"`` and ``"X_nbr"``.
    """
    from napari_squint import metrics as M
    from napari_squint.data.genes import select_genes
    from napari_squint.data.prepare import prepare_slide
    from napari_squint.tasks.holdout import choose_sites, train_heldout
    from napari_squint.tasks.impute import METHODS, Imputer
    from napari_squint.tasks.masked_tokens import masked_token_scores
    from napari_squint.config import SquintConfig

    variants = dict(MODEL_VARIANTS if variants is None else variants)
    extra_methods = dict(extra_methods or {})
    options = dict(options or {})
    if sites not in ("patches", "random"):
        raise SlideError(f"sites={sites!r}: expected 'patches' or 'random'")
    for m in impute_methods:
        if m not in METHODS:
            raise SlideError(f"impute method {m!r}: expected one of {METHODS}")
    t_start = time.perf_counter()
    data_all = _subset_sections(adata, sections, section_key, section)
    gene_list = select_genes(data_all, genes)
    graph_opts = {k: v for k, v in options.items() if k in ("k", "max_degree", "n_rbf", "rbf_max", "tile_cells")}
    graph = SquintConfig().update(**graph_opts).graph
    yield ProgressEvent("prepare", message=f"preparing {data_all.n_obs} cells x {len(gene_list)} genes")
    full = prepare_slide(data_all, gene_list, section_key=section_key, spatial_key=spatial_key, graph=graph)
    counts = full.counts
    sec_labels = data_all.obs[section_key].astype(str).to_numpy() if section_key else None
    runs = []
    n_steps = len(seeds) * (len(variants) + 1)
    step = 0
    for seed in seeds:
        t_seed = time.perf_counter()
        calibration: dict = {}
        labels = choose_sites(data_all, sites=sites, section=section, n_patches=n_patches, fraction=fraction,
                              seed=seed, section_key=section_key, spatial_key=spatial_key)
        held = labels >= 0
        test = np.flatnonzero(held)
        nb = full.nbr
        touches = ((nb >= 0) & held[np.maximum(nb, 0)]).any(1)
        clean = ~held & ~touches
        pca_x = M.reference_pca(counts[~held], seed=seed)
        pca_n = M.reference_pca(full.x_nbr[clean], seed=seed)
        truth = counts[test].toarray()
        truth_n = full.x_nbr[test].toarray()
        scores: dict[str, dict] = {"X": {}, "X_nbr": {}, "tokens": {}}
        seconds: dict[str, float] = {}

        def score(name, x, xn=None, *, cell=True):
            if xn is None:
                xn = M.nbr_profile(counts, x, held, nb, test)
            if cell:
                scores["X"][name] = M.evaluate_imputation(truth, x, pca=pca_x, seed=seed, max_n=max_n)
            scores["X_nbr"][name] = M.evaluate_imputation(truth_n, xn, pca=pca_n, seed=seed, max_n=max_n)

        # ---- baselines ----
        step += 1
        yield ProgressEvent("baselines", step=step, total=n_steps, message=f"seed {seed}: baselines")
        t0 = time.perf_counter()
        score("mean profile", M.mean_profile(counts[~held], test.size))
        score("neighbourhood average", M.neighbourhood_average(full.coords, counts, ~held, test,
                                                               k=graph.k, section=sec_labels))
        score("ring infill", M.ring_infill(full.coords, counts, ~held, test, k=graph.k, section=sec_labels))
        if logmean:
            score("neighbourhood average (log space)", M.neighbourhood_average(
                full.coords, counts, ~held, test, k=graph.k, section=sec_labels, space="log"))
        seconds["baselines"] = time.perf_counter() - t0
        # ---- SQuINT variants ----
        for vi, (vname, over) in enumerate(variants.items()):
            step += 1
            yield ProgressEvent("train", step=step, total=n_steps, message=f"seed {seed}: training {vname}")
            t0 = time.perf_counter()
            model = train_heldout(data_all, held, section_key=section_key, spatial_key=spatial_key,
                                  genes=gene_list, **{"epochs": epochs or SquintConfig().epochs, "seed": seed, **options, **over})
            seconds[f"train {vname}"] = time.perf_counter() - t0
            if vi == 0 and "impute_calibration" in model.meta:  # calibrate_output: what the training cells chose
                calibration = dict(model.meta["impute_calibration"]["chosen"])
            imputer = Imputer(model, data_all)
            if vi == 0:
                t0 = time.perf_counter()
                scores["tokens"] = masked_token_scores(model, imputer.data, held, test, sections=sec_labels,
                                                       k=graph.k)
                seconds[f"masked tokens {vname}"] = time.perf_counter() - t0
            methods = list(impute_methods) if vi == 0 else list(impute_methods[:1])
            first = None
            for meth in methods:
                t0 = time.perf_counter()
                res = imputer.impute_targets(test, method=meth, nbr_mode="decoder", draw="mean")
                seconds[f"impute {vname} {meth}"] = time.perf_counter() - t0
                label = f"{vname} ({meth})"
                score(label, res["imputed"], res["imputed_nbr"])
                score(f"{label} Σ", res["imputed"], cell=False)
                first = first or (label, res)
                if logmean:
                    t0 = time.perf_counter()
                    res_l = imputer.impute_targets(test, method=meth, draw="logmean", nbr_mode="sum")
                    seconds[f"impute {vname} {meth} logmean"] = time.perf_counter() - t0
                    score(f"{label} logmean", res_l["imputed"], res_l["imputed_nbr"])
                    if vi == 0:  # the model alone, without the local residual correction
                        res_r = imputer.impute_targets(test, method=meth, draw="logmean", nbr_mode="sum",
                                                       residual=False)
                        score(f"{label} logmean w/o residual", res_r["imputed"], res_r["imputed_nbr"])
            if vi == 0 and first is not None:
                label, res = first
                if sampled:
                    t0 = time.perf_counter()
                    res_s = imputer.impute_targets(test, method=label.split("(")[1].rstrip(")"), draw="sample",
                                                   nbr_mode="decoder", seed=seed)
                    seconds[f"impute {vname} sample"] = time.perf_counter() - t0
                    score(f"{label} sample", res_s["imputed"], res_s["imputed_nbr"])
                    score(f"{label} sample Σ", res_s["imputed"], cell=False)
                if guided:
                    score(f"{vname}-guided neighbour average", guided_average(
                        full.coords, counts, ~held, test, res["imputed"], section=sec_labels, k=graph.k))
        # ---- extra methods ----
        training: dict[str, dict] = {}
        for name, fn in extra_methods.items():
            t0 = time.perf_counter()
            out = fn(data_all, held.copy(), test.copy(), int(seed))
            rows = out if isinstance(out, Mapping) else {"": out}  # several rows of one trained method
            for suffix, got in rows.items():
                x, xn = got if isinstance(got, tuple) else (got, None)
                x = np.asarray(x, dtype=np.float64)
                if x.shape != truth.shape:
                    raise SlideError(f"extra method {name + suffix!r} returned shape {x.shape}; "
                                     f"expected {truth.shape}")
                score(name + suffix, x, None if xn is None else np.asarray(xn, dtype=np.float64))
            seconds[name] = time.perf_counter() - t0
            if isinstance(getattr(fn, "last_training", None), dict):  # what the method says of its last training
                training[name] = dict(fn.last_training)
        seconds["seed total"] = time.perf_counter() - t_seed
        runs.append({"seed": int(seed), "n_test": int(test.size), "n_train": int((~held).sum()),
                     "sites": {"n": int(labels.max() + 1), "cells": np.bincount(labels[held]).tolist()},
                     "scores": scores, "seconds": seconds, **({"calibration": calibration} if calibration else {}),
                     **({"training": training} if training else {})})
        yield ProgressEvent("seed", step=step, total=n_steps,
                            message=f"seed {seed} done in {seconds['seed total']:.0f}s",
                            metrics={f"{m} pc_gene": v["pc_gene"] for m, v in scores["X"].items()})
    summary = {}
    for target in ("X", "X_nbr", "tokens"):
        names = list(runs[0]["scores"][target]) if runs else []
        summary[target] = {n: M.summarise([r["scores"][target][n] for r in runs]) for n in names}
    config = {
        "section": _site_section(section, sec_labels, held if runs else None),
        "sites": sites, "n_patches": n_patches, "fraction": fraction, "seeds": [int(s) for s in seeds],
        "sections": sorted(set(map(str, sec_labels))) if sec_labels is not None else None,
        "n_cells": int(data_all.n_obs), "n_genes": len(gene_list), "epochs": epochs or SquintConfig().epochs,
        "variants": {k: dict(v) for k, v in variants.items()}, "impute_methods": list(impute_methods),
        "options": dict(options), "extra_methods": list(extra_methods), "max_n": max_n,
        # an extra method's resolved settings, where it states them (a ``settings`` dict attribute: CIFM's config)
        "extra_settings": {k: dict(fn.settings) for k, fn in extra_methods.items() if hasattr(fn, "settings")},
        "graph": {"k": graph.k, "max_degree": graph.max_degree},
        # which columns were read: a 3D slide read through a 2-column key is another protocol (docs/imputation.md)
        "keys": {"section": section_key, "spatial": spatial_key, "spatial_dims": int(full.coords.shape[1])},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": _cpu_count()},
        "seconds": time.perf_counter() - t_start,
    }
    return {"config": config, "runs": runs, "summary": summary}


def _site_section(section, sec_labels, held) -> str | None:
    if section is not None:
        return str(section)
    if held is None or sec_labels is None or not held.any():
        return None
    return str(sec_labels[np.flatnonzero(held)[0]])


def _cpu_count() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def benchmark_impute(adata: AnnData, *, callback: Callable[[ProgressEvent], None] | None = None, **kwargs) -> dict:
    """Run :func:`iter_benchmark_impute` to the end and return its results dict."""
    result, cancelled = drive(iter_benchmark_impute(adata, **kwargs), callback=callback)
    if cancelled:
        raise KeyboardInterrupt("benchmark cancelled")
    return result


def merge_results(parts: Sequence[Mapping]) -> dict:
    """One results dict from runs of the same protocol over different seeds (e.g. seed 0, then seeds 1-2).

    The configurations must agree except for ``seeds`` and ``seconds`` (which add up); the summary is
    recomputed over every run, for the methods every run scored.
    """
    from napari_squint.metrics import summarise

    if not parts:
        raise ValueError("merge_results: nothing to merge")
    skip = ("seeds", "seconds", "machine")
    ref = {k: v for k, v in parts[0]["config"].items() if k not in skip}
    for p in parts[1:]:
        other = {k: v for k, v in p["config"].items() if k not in skip}
        diff = sorted(k for k in set(ref) | set(other) if ref.get(k) != other.get(k))
        if diff:
            raise ValueError(f"merge_results: the runs differ in {diff}")
    runs = [r for p in parts for r in p["runs"]]
    seeds = [int(r["seed"]) for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"merge_results: seed(s) repeated: {seeds}")
    summary = {}
    for target in ("X", "X_nbr", "tokens"):
        names = [n for n in runs[0]["scores"].get(target, {}) if all(n in r["scores"].get(target, {}) for r in runs)]
        summary[target] = {n: summarise([r["scores"][target][n] for r in runs]) for n in names}
    config = dict(parts[0]["config"], seeds=seeds, seconds=float(sum(p["config"]["seconds"] for p in parts)))
    return {"config": config, "runs": runs, "summary": summary}


def results_markdown(results: Mapping) -> str:
    """Markdown report: the configuration and one mean ± sd table per target (X, X_nbr)."""
    from napari_squint.metrics import to_markdown

    cfg = results["config"]
    lines = [
        f"Sites: {cfg['sites']} in section `{cfg['section']}` ({cfg['n_patches']} x {cfg['fraction']:.0%} of the "
        f"section's cells{'' if cfg['sites'] == 'patches' else ', drawn at random'}); seeds {cfg['seeds']}; "
        f"{cfg['n_cells']} cells x {cfg['n_genes']} genes in {len(cfg['sections'] or [])} section(s); "
        f"{cfg['epochs']} epochs; {cfg['seconds']:.0f} s in all.",
        "",
    ]
    for target, title in (("X", "Cell profile X"), ("X_nbr", "Microenvironment X_nbr")):
        lines += [f"### {title}", "", to_markdown(results["summary"][target]), ""]
    if results["summary"].get("tokens"):
        lines += ["### Masked-token accuracy", "",
                  "Held-out cells' predicted token against the token the same model gives them when observed "
                  "(first SQuINT variant; CIFM has no tokens).", "",
                  to_markdown(results["summary"]["tokens"]), ""]
    return "\n".join(lines)


def write_results(results: Mapping, out_dir: str | Path, *, stem: str = "impute_benchmark") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out_dir`` (atomically); return both paths."""
    import os
    import tempfile

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, text in ((".json", json.dumps(results, indent=1, default=json_default)),
                         (".md", results_markdown(results))):
        path = out_dir / f"{stem}{suffix}"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=out_dir)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        publish(tmp, path)
        paths.append(path)
    return paths[0], paths[1]
