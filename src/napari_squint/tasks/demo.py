"""The main job: train on a slide, assign tokens, write a report folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from napari_squint import _constants as K
from napari_squint.train.events import ProgressEvent


def run_demo(out: str | Path, *, adata=None, section_key: str | None = K.SECTION_KEY, spatial_key: str = K.SPATIAL_KEY,
             cell_type_key: str | None = K.CELL_TYPE_KEY, epochs: int = 20, seed: int = 0, device: str = "auto",
             n_cells: int = 12000, n_genes: int = 200):
    """Train SQuINT, assign tokens and write ``out/`` (generator of progress events).

    Writes ``report.md``, ``metrics.json``, ``figures/*.png``, the trained model
    in ``model/``, and ``slide.zarr`` (SpatialData: the cells as circles per
    section and a table holding counts, tokens and latents). The return value
    is the dict of figures written to ``metrics.json``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from napari_squint.api.squint import Squint
    from napari_squint.io.write import to_spatialdata, write_h5ad, write_spatialdata
    from napari_squint.plot.tissue import plot_sections
    from napari_squint.plot.training import plot_history

    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if adata is None:
        from napari_squint.data.synthetic import make_tissue

        yield ProgressEvent("prepare", message=f"generating a synthetic tissue ({n_cells} cells x {n_genes} genes)")
        adata = make_tissue(n_cells=n_cells, n_genes=n_genes, seed=seed)
        source = "synthetic (napari_squint.data.synthetic.make_tissue)"
    else:
        source = str(adata.uns.get("squint_source", {}).get("path", "user data"))
    model = Squint(adata, section_key=section_key, spatial_key=spatial_key, epochs=epochs, seed=seed, device=device)
    history = yield from model.iter_train()
    model.save(out / "model")
    yield ProgressEvent("tokens", message="assigning tokens")
    model.tokens(adata)
    stats = model.codebook_stats(adata.obs[K.TOKEN_KEY].to_numpy().astype(int))
    recon = model.reconstruction_report()
    figs = {}
    fig = plot_sections(adata, K.TOKEN_KEY, section_key=section_key, spatial_key=spatial_key, title="SQuINT tokens")
    fig.savefig(out / "figures" / "tokens.png", dpi=110)
    figs["tokens"] = "figures/tokens.png"
    plt.close(fig)
    fig = plot_history(history)
    fig.savefig(out / "figures" / "training.png", dpi=110)
    figs["training"] = "figures/training.png"
    plt.close(fig)
    purity = None
    if cell_type_key and cell_type_key in adata.obs:
        tab = pd.crosstab(adata.obs[K.TOKEN_KEY], adata.obs[cell_type_key])
        top = tab.sum(1).sort_values(ascending=False).index[:30]
        frac = tab.loc[top].div(tab.loc[top].sum(1), axis=0)
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * frac.shape[1] + 2), 0.25 * len(top) + 2))
        im = ax.imshow(frac.to_numpy(), aspect="auto", cmap="magma")
        ax.set_yticks(range(len(top)), [str(t) for t in top], fontsize=7)
        ax.set_xticks(range(frac.shape[1]), frac.columns, rotation=90, fontsize=7)
        ax.set_ylabel("token (30 most used)")
        fig.colorbar(im, ax=ax, label="fraction of the token's cells")
        fig.tight_layout()
        fig.savefig(out / "figures" / "token_cell_types.png", dpi=110)
        plt.close(fig)
        figs["token_cell_types"] = "figures/token_cell_types.png"
        purity = float((tab.max(1).sum()) / tab.to_numpy().sum())
    yield ProgressEvent("write", message="writing slide.zarr")
    write_spatialdata(to_spatialdata(adata, section_key=section_key, spatial_key=spatial_key), out / "slide.zarr")
    write_h5ad(adata, out / "tokens.h5ad")
    summary = {
        "source": source, "n_cells": int(adata.n_obs), "n_genes": len(model.genes),
        "sections": len(model.sections), "epochs": epochs, "seconds": time.perf_counter() - t0,
        "final": history[-1] if history else {}, "codebook": stats, "reconstruction": recon,
        "token_cell_type_purity": purity, "figures": figs,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    lines = [
        "# napari-squint demo report", "",
        f"Data: {source}: {adata.n_obs} cells x {len(model.genes)} genes, {len(model.sections)} sections.",
        f"Trained SQuINT for {epochs} epochs in {summary['seconds']:.1f} s on {model.device}.", "",
        "| figure | value |", "|---|---|",
        f"| tokens used | {stats['tokens_used']} of {model.module.codebook.vocabulary_size} |",
        f"| codebook utilisation (per head) | {stats['utilisation']:.2f} |",
        f"| codebook perplexity (per head) | {stats['perplexity']:.1f} |",
        f"| NB NLL of X_nbr, model | {recon['model_nb_nll']:.4f} |",
        f"| NB NLL of X_nbr, mean-profile baseline | {recon['mean_profile_nb_nll']:.4f} |",
    ]
    if purity is not None:
        lines.append(f"| token cell-type purity | {purity:.3f} |")
    lines += ["", *[f"![{k}]({v})" for k, v in figs.items()], "",
              "Files: `model/` (load with `Squint.load`), `slide.zarr` (SpatialData; open with `napari slide.zarr` "
              "or `squint view`), `tokens.h5ad`, `metrics.json`."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    yield ProgressEvent("done", message=f"report written to {out}/report.md")
    return summary
