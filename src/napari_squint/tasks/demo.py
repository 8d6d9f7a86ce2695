"""The main job: train on a slide, assign tokens, in-paint one held-out patch, write a report folder.

By default the slide is the small real MERFISH hypothalamus shipped inside the
package (:func:`napari_squint.datasets.merfish_hypothalamus`); ``synthetic=True``
uses the synthetic generator instead (tests), and ``adata=`` any slide.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from napari_squint import _constants as K
from napari_squint.train.events import ProgressEvent

#: epochs of the demo's training (the demo must finish in 90 s on 2 CPU cores; on the shipped slide the deviance
#: of X_nbr explained is already ~0.35 after 4 epochs)
DEMO_EPOCHS = 12
#: cells the reconstruction report scores (its 150-step fit of the baseline dispersions took ~55 s of the demo on 5,000
#: cells, on contended cores; 2,000 cells give the same figure to about 0.01)
_RECON_CELLS = 2000


def _held_patch(adata, *, section_key, spatial_key, seed: int) -> np.ndarray:
    """One contiguous patch of 3% of the largest section's cells, held out of training (bool mask)."""
    from napari_squint.tasks.holdout import choose_patches

    labels = choose_patches(adata, n_patches=1, fraction=0.03, seed=seed, section_key=section_key,
                            spatial_key=spatial_key)
    return labels >= 0


def _patch_report(model, adata, held: np.ndarray, *, section_key, spatial_key, seed: int):
    """In-paint the held-out patch with SQuINT (defaults) and with the neighbourhood average; scores + figure."""
    import scipy.sparse as sp

    from napari_squint import metrics as M
    from napari_squint.data.validate import check_coordinates
    from napari_squint.plot.demo import plot_patch
    from napari_squint.tasks.impute import Imputer

    genes = list(model.genes)
    sub = adata[:, genes]
    counts = sp.csr_matrix(sub.X) if sp.issparse(sub.X) else sp.csr_matrix(np.asarray(sub.X))
    test = np.flatnonzero(held)
    out = Imputer(model, adata).impute(mask=held)
    order = pd.Index(out.obs_names).get_indexer(adata.obs_names[test])
    squint = np.asarray(out[:, genes].layers[K.IMPUTED_LAYER])[order].astype(np.float64)
    coords = check_coordinates(adata, spatial_key)  # x, y and z where the slide has one, as the model reads them
    sections = adata.obs[section_key].astype(str).to_numpy() if section_key else None
    navg = M.neighbourhood_average(coords, counts, ~held, test, k=model.graph_config().k, section=sections)
    truth = counts[test].toarray()
    pca = M.reference_pca(counts[~held], seed=seed)
    scores = {name: M.evaluate_imputation(truth, est, pca=pca, seed=seed)
              for name, est in (("SQuINT (defaults)", squint), ("neighbourhood average", navg))}
    # the figure: the patch and a ring of observed cells around it, three most variable genes of the patch
    centre = coords[test].mean(0)
    radius = np.linalg.norm(coords[test] - centre, axis=1).max()
    same = np.ones(adata.n_obs, dtype=bool) if sections is None else sections == sections[test[0]]
    near = same & (np.linalg.norm(coords - centre, axis=1) <= 2.2 * radius)
    context = near & ~held
    shown = near | held
    ln_shown = M.log_normalise(counts[shown].toarray())
    patch_in_shown = held[shown]
    gene_idx = list(np.argsort(-ln_shown[patch_in_shown].var(0))[:3])
    fig = plot_patch(coords[shown], ln_shown, {"SQuINT in-painted": M.log_normalise(squint),
                                               "neighbourhood average": M.log_normalise(navg)},
                     patch_in_shown, [genes[j] for j in gene_idx], gene_idx, context=context[shown],
                     title=f"held-out patch: {test.size} cells never seen in training "
                           f"(section {sections[test[0]] if sections is not None else 'slide'}); "
                           "faded dots: measured cells around it")
    return scores, fig, int(test.size)


def run_demo(out: str | Path, *, adata=None, synthetic: bool = False, section_key: str | None = K.SECTION_KEY,
             spatial_key: str = K.SPATIAL_KEY, cell_type_key: str | None = K.CELL_TYPE_KEY,
             epochs: int = DEMO_EPOCHS, seed: int = 0, device: str = "auto", n_cells: int = 12000,
             n_genes: int = 200, holdout_patch: bool = True):
    """Train SQuINT, assign tokens, in-paint one held-out patch and write ``out/`` (generator of progress events).

    Data: ``adata`` when given, else the synthetic generator when ``synthetic``, else the real MERFISH slide
    shipped in the package. Writes ``report.md``, ``metrics.json`` (``source``, ``reconstruction`` with
    ``deviance_explained``, ``codebook``, ``patch`` scores...), ``figures/*.png``, the trained model in ``model/``,
    ``slide.zarr`` (SpatialData) and ``tokens.h5ad``. The return value is the dict written to ``metrics.json``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from napari_squint.api.squint import Squint
    from napari_squint.io.write import to_spatialdata, write_h5ad, write_spatialdata
    from napari_squint.plot.demo import plot_token_cell_types, plot_tokens_on_tissue, token_cell_type_table
    from napari_squint.plot.training import plot_history

    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if adata is None and synthetic:
        from napari_squint.data.synthetic import make_tissue

        yield ProgressEvent("prepare", message=f"generating a synthetic tissue ({n_cells} cells x {n_genes} genes)")
        adata = make_tissue(n_cells=n_cells, n_genes=n_genes, seed=seed)
        source = "synthetic (napari_squint.data.synthetic.make_tissue)"
    elif adata is None:
        from napari_squint.datasets import merfish_hypothalamus

        yield ProgressEvent("prepare", message="loading the shipped MERFISH hypothalamus slide")
        adata = merfish_hypothalamus()
        source = (f"{adata.uns['squint_source']['path']}: MERFISH mouse hypothalamus, Moffitt et al. 2018 "
                  "(Dryad doi:10.5061/dryad.8t8s248, CC0)")
    else:
        source = str(adata.uns.get("squint_source", {}).get("path", "user data"))
    if section_key is not None and section_key not in adata.obs:
        section_key = None
    held = _held_patch(adata, section_key=section_key, spatial_key=spatial_key, seed=seed) if holdout_patch \
        else None
    model = Squint(adata, section_key=section_key, spatial_key=spatial_key, epochs=epochs, seed=seed, device=device,
                   holdout=held)
    history = yield from model.iter_train()
    t_train = time.perf_counter() - t0
    model.save(out / "model")
    yield ProgressEvent("tokens", message="assigning tokens")
    model.tokens(adata)
    tokens = adata.obs[K.TOKEN_KEY].to_numpy().astype(int)
    stats = model.codebook_stats(tokens)
    recon = model.reconstruction_report(max_cells=_RECON_CELLS, seed=seed)
    figs = {}

    def save(fig, name):
        fig.savefig(out / "figures" / f"{name}.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        figs[name] = f"figures/{name}.png"

    save(plot_tokens_on_tissue(adata, K.TOKEN_KEY, section_key=section_key, spatial_key=spatial_key,
                               title="SQuINT tokens (19 most used coloured)"), "tokens")
    save(plot_history(history), "training")
    purity, table_md = None, []
    if cell_type_key and cell_type_key in adata.obs:
        types = adata.obs[cell_type_key].astype(str).to_numpy()
        save(plot_token_cell_types(tokens, types), "token_cell_types")
        tab = token_cell_type_table(tokens, types, top=15)
        purity = float(pd.crosstab(tokens, types).max(1).sum() / tokens.size)
        cols = [c for c in tab.columns if c not in ("cells", "majority", "purity")]
        table_md = ["| token | cells | " + " | ".join(cols) + " | majority | purity |",
                    "|---|---|" + "---|" * len(cols) + "---|---|"]
        table_md += [f"| {t} | {r['cells']} | " + " | ".join(str(r[c]) for c in cols)
                     + f" | {r['majority']} | {r['purity']:.2f} |" for t, r in tab.iterrows()]
    patch = None
    if held is not None:
        yield ProgressEvent("impute", message="in-painting the held-out patch")
        scores, fig, n_patch = _patch_report(model, adata, held, section_key=section_key, spatial_key=spatial_key,
                                             seed=seed)
        save(fig, "patch")
        patch = {"cells": n_patch, "scores": scores}
    yield ProgressEvent("write", message="writing slide.zarr")
    write_spatialdata(to_spatialdata(adata, section_key=section_key, spatial_key=spatial_key), out / "slide.zarr")
    write_h5ad(adata, out / "tokens.h5ad")
    summary = {
        "source": source, "n_cells": int(adata.n_obs), "n_genes": len(model.genes),
        "sections": len(model.sections), "epochs": epochs, "train_seconds": t_train,
        "seconds": time.perf_counter() - t0, "final": history[-1] if history else {}, "codebook": stats,
        "reconstruction": recon, "token_cell_type_purity": purity, "patch": patch, "figures": figs,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    (out / "report.md").write_text(_report(summary, model, table_md, cell_type_key) + "\n")
    yield ProgressEvent("done", message="report written (report.md)")
    return summary


def _report(summary: dict, model, table_md: list[str], cell_type_key) -> str:
    stats, recon, figs, patch = summary["codebook"], summary["reconstruction"], summary["figures"], summary["patch"]
    lines = [
        "# napari-squint demo report", "",
        f"Data: {summary['source']}: {summary['n_cells']} cells x {summary['n_genes']} genes, "
        f"{summary['sections']} section(s).",
        f"Trained SQuINT for {summary['epochs']} epochs in {summary['train_seconds']:.1f} s on {model.device} "
        f"({summary['seconds']:.1f} s for the whole demo).", "",
        "| figure | value |", "|---|---|",
        f"| tokens used | {stats['tokens_used']} of {model.module.codebook.vocabulary_size} |",
        f"| codebook utilisation (per head) | {stats['utilisation']:.2f} |",
        f"| codebook perplexity (per head) | {stats['perplexity']:.1f} |",
        f"| deviance of X_nbr explained (vs the mean profile) | {recon['deviance_explained']:.3f} |",
        f"| NB NLL of X_nbr, model / mean-profile baseline | {recon['model_nb_nll']:.4f} / "
        f"{recon['mean_profile_nb_nll']:.4f} |",
    ]
    if summary["token_cell_type_purity"] is not None:
        lines.append(f"| token cell-type purity (cells in their token's majority type) | "
                     f"{summary['token_cell_type_purity']:.3f} |")
    lines += ["", "## Tokens on the tissue", "", f"![tokens]({figs['tokens']})", ""]
    if table_md:
        lines += [f"## Tokens x cell types (`obs['{cell_type_key}']`, 15 most used tokens, cells)", "", *table_md, "",
                  f"![token x cell type]({figs['token_cell_types']})", ""]
    if patch is not None:
        a, b = patch["scores"]["SQuINT (defaults)"], patch["scores"]["neighbourhood average"]
        lines += [
            "## One held-out patch, in-painted", "",
            f"{patch['cells']} contiguous cells (3% of a section) were left out of training; SQuINT in-paints them "
            "with its defaults (`Imputer.impute`), beside the average of each cell's 8 nearest measured cells. "
            "Scores on log1p(counts per 10k) of the cells (MMD and energy in a 50-PC projection of training cells):",
            "", "| method | PC cell ↑ | PC gene ↑ | MMD ↓ | energy ↓ |", "|---|---|---|---|---|",
            *[f"| {n} | {s['pc_cell']:.3f} | {s['pc_gene']:.3f} | {s['mmd']:.4f} | {s['energy']:.2f} |"
              for n, s in (("SQuINT", a), ("neighbourhood average", b))],
            "", f"![patch]({figs['patch']})", ""]
    lines += [f"![training]({figs['training']})", "",
              "Files: `model/` (load with `Squint.load`), `slide.zarr` (SpatialData; open with `napari slide.zarr` "
              "or `squint view`), `tokens.h5ad`, `metrics.json`."]
    return "\n".join(lines)
