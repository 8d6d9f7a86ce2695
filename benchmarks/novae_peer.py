#!/usr/bin/env python
"""Peer benchmark: train Novae (PyPI ``novae``) from scratch for one epoch on CPU.

Run INSIDE the Novae virtual environment made by ``benchmarks/novae_setup.sh``
(never in the project's own .venv: Novae pins its own dependency set)::

    bash benchmarks/novae_setup.sh
    .bench/novae-venv/bin/python benchmarks/novae_peer.py DATA.h5ad --out result.json [--epochs 1] [--max-cells N]

What it does, in order, each step timed:

1. ``load``: ``anndata.read_h5ad`` (and the optional ``--max-cells`` subset).
2. ``preprocess``: Novae's own documented pipeline:
   * ``novae.spatial_neighbors(adata, radius=R, slide_key=section)``: a
     Delaunay graph per section, with edges longer than ``R`` micrometres
     removed. ``R = 80`` um is the value used throughout Novae's tutorials for
     single-cell data in micrometres. The per-section split matters here: the
     file's sections are each centred on their own midpoint, so they overlap in
     coordinate space.
   * ``novae.Novae(adata, ...)``: the constructor runs Novae's preprocessing.
     It sees integer counts in ``X``, keeps them in ``layers['counts']``, and
     runs ``sc.pp.normalize_total`` + ``sc.pp.log1p``. Above 100 genes it also
     selects highly variable genes (``novae_use_gene``). It builds the gene
     embedding, initialised with PCA, and the SwAV prototypes (random init, no
     pretrained weights: we never call ``from_pretrained``).
3. ``fit``: ``model.fit(max_epochs=E, accelerator="cpu", num_workers=0)``. A
   Lightning callback times each training epoch on its own, from
   ``on_train_epoch_start`` to ``on_train_epoch_end``. The headline
   ``cells_per_s`` is ``n_cells / train_epoch_s`` (the first epoch).
   ``fit_setup_s`` is the time from entering ``fit`` to the start of the first
   epoch. It covers building Novae's n-hop adjacency matrices and the trainer.
   It is reported separately and is not part of the cells/s figure.

Novae quirk worth knowing when reading the numbers: an epoch does NOT visit
exactly ``n_cells`` anchors. In multi-slide mode each slide contributes
``floor(n_valid/batch_size)`` full batches, and with ``drop_last`` the
remainder is dropped. The length is also capped at
``max(50_000, 2% of n_cells)``. Each anchor yields two subgraphs (``main`` +
``view``). ``samples_per_epoch`` and ``samples_per_s`` report what was actually
processed.

Long runs on a shared machine: every 5 batches a heartbeat
``<out stem>.partial.json`` is written, holding the same fields plus
``progress`` (batches done, wall/CPU seconds so far). It is also written when
the run is interrupted, e.g. on SIGTERM, which Lightning turns into an
exception. It is removed once the final ``--out`` JSON is written.
``epochs[i].cpu_s`` is this process's CPU time for the epoch. Compare it with
``wall_s`` to see how much of the 2 cores the run actually got.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import logging
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path


def _peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


class _Capture(logging.Handler):
    """Keeps WARNING+ records from novae / lightning for the JSON report."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = f"{record.name}: {record.getMessage()}"
        if msg not in self.messages:
            self.messages.append(msg)


def _subset(adata, max_cells: int | None, section_key: str, sections: list[str] | None):
    """Whole sections in file order until max_cells is reached. The last one is
    cropped spatially: it keeps the cells nearest its centre, so local cell
    density and the graph statistics stay realistic. Random thinning would
    inflate neighbour distances."""
    import numpy as np

    if sections:
        keep = adata.obs[section_key].astype(str).isin(sections).to_numpy()
        missing = set(sections) - set(adata.obs[section_key].astype(str).unique())
        if missing:
            raise SystemExit(f"unknown sections: {sorted(missing)}")
        adata = adata[keep].copy()
    if max_cells is None or adata.n_obs <= max_cells:
        return adata
    sec = adata.obs[section_key].astype(str).to_numpy()
    order = list(dict.fromkeys(sec))  # file order
    xy = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    chosen: list[np.ndarray] = []
    budget = max_cells
    for s in order:
        idx = np.flatnonzero(sec == s)
        if len(idx) <= budget:
            chosen.append(idx)
            budget -= len(idx)
        else:
            c = np.median(xy[idx], axis=0)
            d = np.linalg.norm(xy[idx] - c, axis=1)
            chosen.append(idx[np.argsort(d, kind="stable")[:budget]])
            budget = 0
        if budget == 0:
            break
    sel = np.sort(np.concatenate(chosen))
    return adata[sel].copy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path, help="AnnData .h5ad with raw counts in X and obsm['spatial'] in um")
    p.add_argument("--out", type=Path, required=True, help="JSON result path")
    p.add_argument("--epochs", type=int, default=1, help="training epochs (default 1)")
    p.add_argument("--max-cells", type=int, default=None, help="keep at most N cells (whole sections, last one cropped)")
    p.add_argument("--sections", nargs="+", default=None, help="restrict to these section ids first")
    p.add_argument("--section-key", default="section", help="obs column with the slide/section id")
    p.add_argument("--radius", type=float, default=80.0, help="max Delaunay edge length in um (Novae tutorials: 80)")
    p.add_argument("--num-prototypes", type=int, default=512, help="SwAV prototypes K (Novae default 512)")
    p.add_argument("--batch-size", type=int, default=256, help="Novae default 256")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own choice)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    capture = _Capture()
    logging.getLogger().addHandler(capture)
    warnings.simplefilter("default")
    logging.captureWarnings(True)  # python warnings -> logger 'py.warnings' -> capture

    t_import = time.perf_counter()
    import anndata as ad
    import lightning as L
    import numpy as np
    import torch
    from lightning.pytorch.callbacks import Callback

    import novae

    import_s = time.perf_counter() - t_import

    if args.threads:
        torch.set_num_threads(args.threads)
    L.seed_everything(args.seed, workers=True)
    loadavg_start = os.getloadavg()

    # ---------------------------------------------------------------- load
    t0 = time.perf_counter()
    adata = ad.read_h5ad(args.data)
    n_file = adata.n_obs
    if args.section_key not in adata.obs:
        raise SystemExit(f"{args.data}: obs['{args.section_key}'] missing (use --section-key)")
    adata = _subset(adata, args.max_cells, args.section_key, args.sections)
    load_s = time.perf_counter() - t0
    adata.obs[args.section_key] = adata.obs[args.section_key].astype(str).astype("category")
    n_cells, n_genes = adata.n_obs, adata.n_vars
    sections = list(adata.obs[args.section_key].cat.categories)
    print(f"[novae_peer] {n_cells:,} cells x {n_genes} genes, {len(sections)} sections "
          f"(file: {n_file:,} cells); load {load_s:.1f}s", flush=True)

    # ---------------------------------------------------------- preprocess
    t0 = time.perf_counter()
    novae.spatial_neighbors(adata, radius=args.radius, slide_key=args.section_key)
    neighbors_s = time.perf_counter() - t0
    dst = adata.obsp["spatial_distances"]
    conn = adata.obsp["spatial_connectivities"]
    graph = {
        "n_edges_directed": int(conn.nnz),
        "mean_degree": float(conn.nnz / n_cells),
        "median_edge_um": float(np.median(dst.data[dst.data > 0])) if dst.nnz else None,
        "isolated_cells": int((np.asarray(conn.sum(1)).ravel() == 0).sum()),
    }

    model_kwargs = dict(
        num_prototypes=args.num_prototypes,
        batch_size=args.batch_size,
        # the rest are Novae 1.x defaults, spelt out so the JSON documents them
        embedding_size=100,
        output_size=64,
        hidden_size=128,
        num_layers=10,
        heads=8,
        n_hops_local=2,
        n_hops_view=2,
        temperature=0.1,
        min_prototypes_ratio=0.3,
        panel_subset_size=0.8,
        background_noise_lambda=8.0,
        sensitivity_noise_std=0.05,
        dropout_rate=0.0,
    )
    t1 = time.perf_counter()
    model = novae.Novae(adata, **model_kwargs)  # from scratch; also normalize_total+log1p, HVG, PCA init
    model_init_s = time.perf_counter() - t1
    preprocess_s = time.perf_counter() - t0
    n_genes_used = int(adata.var["novae_use_gene"].sum()) if "novae_use_gene" in adata.var else n_genes
    n_params = int(sum(p.numel() for p in model.parameters()))
    rss_after_preprocess = _peak_rss_mb()
    print(f"[novae_peer] preprocess {preprocess_s:.1f}s (neighbours {neighbors_s:.1f}s, model init "
          f"{model_init_s:.1f}s); genes used {n_genes_used}/{n_genes}; params {n_params:,}", flush=True)

    # ---------------------------------------------------------------- fit
    def build_result(status: str) -> dict:
        first = timer.epochs[0] if timer.epochs else None
        train_epoch_s = first["wall_s"] if first else None
        progress = timer.progress()
        return {
            "status": status,
            "tool": "novae",
            "novae_version": novae.__version__,
            "torch_version": torch.__version__,
            "lightning_version": _version("lightning"),
            "torch_geometric_version": _version("torch-geometric"),
            "anndata_version": _version("anndata"),
            "scanpy_version": _version("scanpy"),
            "python": platform.python_version(),
            "data": str(args.data),
            "n_cells": n_cells,
            "n_genes": n_genes,
            "n_genes_used_by_novae": n_genes_used,
            "n_sections": len(sections),
            "sections": sections,
            "n_cells_in_file": n_file,
            "graph": graph,
            "n_parameters": n_params,
            "import_s": import_s,
            "load_s": load_s,
            "preprocessing_s": preprocess_s,
            "preprocessing_breakdown_s": {"spatial_neighbors": neighbors_s,
                                          "model_init_normalize_log1p_hvg_pca": model_init_s},
            "fit_setup_s": (timer.first_epoch_start - fit_t0) if timer.first_epoch_start else None,
            "training_s": train_epoch_s,  # first epoch only
            "cells_per_s": (n_cells / train_epoch_s) if train_epoch_s else None,
            "samples_per_epoch": first["samples"] if first else None,
            "samples_per_s": (first["samples"] / train_epoch_s) if first else None,
            "epochs": timer.epochs,
            "progress": progress,  # live view of the running epoch (useful if the run is cut short)
            "fit_total_s": time.perf_counter() - fit_t0,
            "peak_rss_mb": _peak_rss_mb(),
            "peak_rss_mb_after_preprocessing": rss_after_preprocess,
            "settings": {
                "radius_um": args.radius,
                "slide_key": args.section_key,
                "max_cells": args.max_cells,
                "sections_filter": args.sections,
                "seed": args.seed,
                "model": model_kwargs,
                "fit": {**fit_kwargs, "use_scheduler": True,
                        "warmup_epochs_prototypes_frozen": novae.settings.warmup_epochs},
                "auto_preprocessing": novae.settings.auto_preprocessing,
                "pretrained": False,
            },
            "host": {
                "cpu_count": os.cpu_count(),
                "torch_num_threads": torch.get_num_threads(),
                "loadavg_start": loadavg_start,
                "loadavg_now": os.getloadavg(),
                "platform": platform.platform(),
            },
            "warnings": capture.messages,
            "argv": sys.argv,
        }

    def write(path: Path, status: str) -> dict:
        res = build_result(status)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(res, indent=2) + "\n")
        os.replace(tmp, path)
        return res

    partial_path = args.out.with_name(args.out.stem + ".partial.json")

    class EpochTimer(Callback):
        """Times each epoch (wall + process CPU) and writes a heartbeat JSON every few batches."""

        def __init__(self, every: int = 5) -> None:
            self.every = every
            self.epochs: list[dict] = []
            self.first_epoch_start = None
            self._t = self._c = None
            self._batches = 0
            self._total = None
            self._epoch = None

        def progress(self) -> dict | None:
            if self._t is None:
                return None
            wall = time.perf_counter() - self._t
            return {"epoch": self._epoch, "batches_done": self._batches, "batches_total": self._total,
                    "wall_s": wall, "cpu_s": _cpu_s() - self._c,
                    "samples_per_s_so_far": (self._batches * args.batch_size / wall) if wall > 0 else None}

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._t = time.perf_counter()
            self._c = _cpu_s()
            self._batches = 0
            self._epoch = trainer.current_epoch
            self._total = int(trainer.num_training_batches)
            if self.first_epoch_start is None:
                self.first_epoch_start = self._t

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self._batches += 1
            if self._batches % self.every == 0:
                write(partial_path, "running")
                pr = self.progress()
                print(f"[novae_peer] epoch {self._epoch} batch {self._batches}/{self._total}: "
                      f"{pr['wall_s']:.0f}s wall, {pr['cpu_s']:.0f}s cpu", flush=True)

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            wall = time.perf_counter() - self._t
            cpu = _cpu_s() - self._c
            n_batches = int(trainer.num_training_batches)
            loss = trainer.callback_metrics.get("train/loss_epoch")
            self.epochs.append({
                "epoch": trainer.current_epoch,
                "wall_s": wall,
                "cpu_s": cpu,
                "cpu_util_cores": cpu / wall if wall > 0 else None,
                "batches": n_batches,
                "samples": n_batches * args.batch_size,
                "loss_epoch": float(loss) if loss is not None else None,
            })
            print(f"[novae_peer] epoch {trainer.current_epoch}: {wall:.1f}s wall, {cpu:.1f}s cpu, "
                  f"{n_batches} batches, loss {self.epochs[-1]['loss_epoch']}", flush=True)

    timer = EpochTimer()
    fit_kwargs = dict(max_epochs=args.epochs, accelerator="cpu", num_workers=0, lr=5e-4)
    fit_t0 = time.perf_counter()
    try:
        model.fit(callbacks=[timer], enable_progress_bar=False, **fit_kwargs)
    except BaseException as exc:  # SIGTERM (Lightning raises), Ctrl-C, errors: keep what was measured
        write(partial_path, f"interrupted: {type(exc).__name__}: {exc}")
        print(f"[novae_peer] interrupted; partial figures in {partial_path}", file=sys.stderr, flush=True)
        raise

    if not timer.epochs:
        write(partial_path, "no epoch completed")
        raise SystemExit("no training epoch completed")
    result = write(args.out, "ok")
    partial_path.unlink(missing_ok=True)
    print(f"[novae_peer] epoch {result['training_s']:.1f}s -> {result['cells_per_s']:.1f} cells/s "
          f"({result['samples_per_s']:.1f} samples/s); peak RSS {result['peak_rss_mb']:.0f} MB; "
          f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
