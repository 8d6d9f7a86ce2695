#!/usr/bin/env python
"""Training speed of SQuINT where users run it: quiet, beside a busy process, on a wide panel; Novae in the same run.

One command produces every figure of the training section of docs/benchmarks.md::

    .venv/bin/python benchmarks/train_speed.py --out .bench/train_speed.json            # everything, 30 epochs
    .venv/bin/python benchmarks/train_speed.py --epochs 3 --no-novae --out /tmp/t.json  # a quick look
    .venv/bin/python benchmarks/train_speed.py --cases wide --load --no-novae            # any case, loaded

Cases, each in its own subprocess (so peak RSS is per case), one after the other:

* ``merfish``: the 9-section MERFISH hypothalamus (49,468 cells x 135 genes, ../shared/data) through the public
  API, ``Squint(adata, section_key="section", genes="all", epochs=E).train()``;
* ``merfish_load``: the same beside one busy single-threaded process (``while True: pass``, started before the
  case and stopped after it): a viewer redrawing, a browser, a second job;
* ``wide``: a CosMx-like 1,000-gene panel from the synthetic generator, ``make_tissue(n_cells=50_000,
  n_genes=1000, n_sections=4, seed=0)``;
* ``synthetic`` (not in the default list; ``benchmarks/gpu_check.sh`` runs it): ``make_tissue(n_cells=1_000_000,
  n_genes=500)``, the scaling benchmark's largest slide;
* ``novae``: Novae trained from scratch for one epoch on the MERFISH file in its own venv
  (``bash benchmarks/novae_setup.sh`` makes it; ``--setup-novae`` runs it first), via ``benchmarks/novae_peer.py``.
  When the venv is missing or the setup fails, the JSON says why instead.
* ``--profile``: where one epoch's time goes (torch.profiler over the MERFISH training steps, grouped).

Reported per case: load/prepare/train/token seconds, per-epoch seconds and cells/s (the median epoch; the
first epoch is included in the list), process CPU seconds, the thread plan of every epoch
(``napari_squint.train.threads``), peak RSS, final losses, deviance explained of X_nbr and tokens used. The top of
the JSON records the machine: CPU model, cores, usable cores, load average and other processes' runnable threads
before each case, torch version and thread settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the shared data folder; SQUINT_DATA points elsewhere (benchmarks/gpu_check.sh on a machine without ../shared)
DATA = Path(os.environ.get("SQUINT_DATA", REPO.parent / "shared" / "data"))
MERFISH = DATA / "merfish_hypothalamus_moffitt2018_9sections.h5ad"
NOVAE_PY = REPO / ".bench" / "novae-venv" / "bin" / "python"


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_now() -> dict:
    from napari_squint.train.threads import other_load, usable_cores

    samples = []
    for _ in range(10):
        samples.append(other_load())
        time.sleep(0.05)
    return {"loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()], "other_runnable_threads": sum(samples) / 10,
            "usable_cores": usable_cores()}


def machine() -> dict:
    import torch

    return {"cpu_model": cpu_model(), "nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
            "torch_default_threads": torch.get_num_threads(),
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NAPARI_SQUINT_THREADS")},
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def read_case_data(case: str, n_wide: int, n_synthetic: int = 1_000_000):
    import anndata as ad

    from napari_squint.data.synthetic import make_tissue

    if case.startswith("merfish"):
        return ad.read_h5ad(MERFISH)
    if case == "wide":
        return make_tissue(n_cells=n_wide, n_genes=1000, n_sections=4, seed=0)
    if case == "synthetic":  # the scaling benchmark's slide (benchmarks/scale.py)
        return make_tissue(n_cells=n_synthetic, n_genes=500, n_sections=max(2, n_synthetic // 50_000), seed=0)
    raise SystemExit(f"unknown case {case!r}")


def run_case(case: str, epochs: int, threads: str | None, n_wide: int, device: str = "cpu",
             n_synthetic: int = 1_000_000) -> dict:
    from napari_squint.api.squint import Squint

    t0 = time.perf_counter()
    adata = read_case_data(case, n_wide, n_synthetic)
    load_s = time.perf_counter() - t0
    opts = {} if threads in (None, "auto") else {"num_threads": int(threads)}
    t0 = time.perf_counter()
    model = Squint(adata, section_key="section", genes="all", epochs=epochs, seed=0, device=device, **opts)
    prep_s = time.perf_counter() - t0
    cpu0, t0 = time.process_time(), time.perf_counter()
    hist = model.train()
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    t0 = time.perf_counter()
    model.tokens(adata)
    tokens_s = time.perf_counter() - t0
    stats = model.codebook_stats(adata.obs["squint_token"].to_numpy().astype(int))
    rec = model.reconstruction_report()
    epoch_s = [r["seconds"] for r in hist]
    med = statistics.median(epoch_s)
    last = hist[-1]
    return {
        "case": case, "device": str(model.device), "n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars), "epochs": epochs,
        "load_s": load_s, "prepare_s": prep_s, "train_s": train_s, "train_cpu_s": train_cpu, "tokens_s": tokens_s,
        "epoch_s": epoch_s, "epoch_s_median": med, "cells_per_s_per_epoch": adata.n_obs / med,
        "cells_per_s_whole_train": adata.n_obs * epochs / train_s,
        "threads_per_epoch": [r.get("threads") for r in hist],
        "prefetch_thread_per_epoch": [r.get("prefetch_thread") for r in hist],
        "thread_setting": threads or "auto",
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "final_nb_loss": last["nb_loss"], "final_nb_cell_loss": last.get("nb_cell_loss"),
        "final_adj_loss": last.get("adj_loss"), "final_commit_loss": last["commit_loss"],
        "utilisation": stats["utilisation"], "perplexity": stats["perplexity"], "tokens_used": stats["tokens_used"],
        "deviance_explained": rec["deviance_explained"], "recon": rec,
        "code_head": model.meta.get("code_head"),
    }


#: torch operator name -> part of the step, for --profile
PROFILE_GROUPS = [
    ("NB likelihood (lgamma, digamma)", ("lgamma", "digamma")),
    ("matrix products (linear layers)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::einsum")),
    ("GELU / LayerNorm", ("gelu", "layer_norm")),
    ("gathers / scatters (halo rows, SAGE, edges)", ("index", "scatter", "gather", "embedding")),
    ("random numbers (mask noise)", ("normal_", "randn", "uniform")),
    ("optimiser (AdamW, clipping)", ("adam", "Optimizer", "vector_norm", "_foreach", "lerp", "addcmul", "addcdiv")),
]


def profile_case(steps: int, threads: str | None = None) -> dict:
    import anndata as ad
    from torch.profiler import ProfilerActivity, profile

    from napari_squint.api.squint import Squint

    adata = ad.read_h5ad(MERFISH)
    opts = {} if threads in (None, "auto") else {"num_threads": int(threads)}
    model = Squint(adata, section_key="section", genes="all", epochs=1, seed=0, device="cpu", code_head_epochs=0,
                   **opts)
    gen = model.iter_train()
    n = 0
    for ev in gen:  # k-means and a few warm-up steps
        if ev.stage == "step":
            n += 1
            if n == 5:
                break
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for ev in gen:
            if ev.stage == "step":
                n += 1
                if n == 5 + steps:
                    break
    wall = time.perf_counter() - t0
    import torch

    used_threads = torch.get_num_threads()  # the training's, before closing restores the caller's
    gen.close()
    groups: dict[str, float] = {}
    total = 0.0
    for e in prof.key_averages():
        t = e.self_cpu_time_total / 1e6
        total += t
        for name, keys in PROFILE_GROUPS:
            if any(k in e.key for k in keys):
                groups[name] = groups.get(name, 0.0) + t
                break
        else:
            groups["other (elementwise, autograd, Python)"] = groups.get("other (elementwise, autograd, Python)", 0) + t
    top = sorted(((e.key, e.self_cpu_time_total / 1e6) for e in prof.key_averages()), key=lambda x: -x[1])[:15]
    return {"steps": steps, "torch_threads": used_threads, "wall_s": wall, "ms_per_step": 1000 * wall / steps, "self_cpu_s": total,
            "share": {k: v / total for k, v in sorted(groups.items(), key=lambda x: -x[1])},
            "top_ops_s": dict(top)}


def run_novae(setup: bool) -> dict:
    if setup and not NOVAE_PY.exists():
        r = subprocess.run(["bash", str(REPO / "benchmarks" / "novae_setup.sh")], capture_output=True, text=True)
        if r.returncode != 0:
            return {"skipped": "benchmarks/novae_setup.sh failed (needs the package index for novae and its "
                               f"dependencies): {r.stderr.strip()[-500:]}"}
    if not NOVAE_PY.exists():
        return {"skipped": f"no Novae venv at {NOVAE_PY}: run `bash benchmarks/novae_setup.sh` (installs novae and "
                           "its dependencies from the package index) or pass --setup-novae"}
    res = REPO / ".bench" / "novae_in_run.json"
    r = subprocess.run([str(NOVAE_PY), str(REPO / "benchmarks" / "novae_peer.py"), str(MERFISH), "--out", str(res),
                        "--epochs", "1"], capture_output=True, text=True)
    if r.returncode != 0:
        return {"skipped": f"novae_peer.py failed: {r.stderr.strip()[-800:]}"}
    return json.loads(res.read_text())


def sub(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"case {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", choices=["merfish", "merfish_load", "wide", "synthetic"],
                   help="run one case in this process")
    p.add_argument("--cases", default="merfish,merfish_load,wide", help="comma-separated cases of the full run")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--threads", default=None, help="torch threads: a number, or auto (default: the policy)")
    p.add_argument("--wide-cells", type=int, default=50_000)
    p.add_argument("--synthetic-cells", type=int, default=1_000_000, help="cells of the 'synthetic' case (500 genes)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (benchmarks/gpu_check.sh uses cuda)")
    p.add_argument("--load", action="store_true",
                   help="run every case of --cases beside one busy process (merfish_load is merfish with --load)")
    p.add_argument("--no-novae", action="store_true")
    p.add_argument("--setup-novae", action="store_true", help="run benchmarks/novae_setup.sh when the venv is missing")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="also profile STEPS training steps on MERFISH (torch.profiler)")
    p.add_argument("--profile-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(REPO / ".bench" / "train_speed.json"))
    a = p.parse_args()
    if a.profile_only:
        print(json.dumps(profile_case(a.profile, a.threads), default=float))
        return
    if a.case:
        print(json.dumps(run_case(a.case, a.epochs, a.threads, a.wide_cells, a.device, a.synthetic_cells),
                         default=float))
        return
    results = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]), "cases": {}}
    out_path = Path(a.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save():
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2, default=float))
        tmp.replace(out_path)

    for case in [c for c in a.cases.split(",") if c]:
        if case.startswith("merfish") and not MERFISH.exists():
            results["cases"][case] = {"skipped": f"{MERFISH} is absent"}
            print(case, "skipped:", MERFISH, "is absent", flush=True)
            continue
        args = ["--case", case, "--epochs", str(a.epochs), "--wide-cells", str(a.wide_cells), "--device", a.device,
                "--synthetic-cells", str(a.synthetic_cells)]
        if a.threads:
            args += ["--threads", a.threads]
        before = load_now()
        busy = None
        if case == "merfish_load" or a.load:  # one busy single-threaded process beside the run
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1.0)
        try:
            res = sub(args)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        res["load_before"] = before
        res["busy_process_beside"] = busy is not None
        results["cases"][case] = res
        print(case, json.dumps({k: res[k] for k in ("epoch_s_median", "cells_per_s_per_epoch", "train_s",
                                                    "threads_per_epoch", "deviance_explained", "tokens_used")},
                               default=float), flush=True)
        save()
    cs = results["cases"]
    if "epoch_s_median" in cs.get("merfish", {}) and "epoch_s_median" in cs.get("merfish_load", {}):
        results["loaded_over_quiet_epoch"] = cs["merfish_load"]["epoch_s_median"] / cs["merfish"]["epoch_s_median"]
        results["loaded_over_quiet_train"] = cs["merfish_load"]["train_s"] / cs["merfish"]["train_s"]
        print("loaded / quiet (median epoch):", round(results["loaded_over_quiet_epoch"], 2), flush=True)
    if a.profile:
        results["profile"] = sub(["--profile-only", "--profile", str(a.profile)] + (["--threads", a.threads] if a.threads else []))
        results["profile"]["load_before"] = load_now()
        print("profile", json.dumps(results["profile"]["share"], default=float), flush=True)
        save()
    if not a.no_novae:
        results["load_before_novae"] = load_now()
        nov = run_novae(a.setup_novae)
        cs["novae"] = nov
        if "cells_per_s" in nov and "cells_per_s_per_epoch" in cs.get("merfish", {}):
            results["ratio_squint_over_novae_cells_per_s"] = cs["merfish"]["cells_per_s_per_epoch"] / nov["cells_per_s"]
            print("novae", nov["cells_per_s"], "ratio", results["ratio_squint_over_novae_cells_per_s"], flush=True)
        else:
            print("novae:", nov.get("skipped"), flush=True)
        save()
    save()


if __name__ == "__main__":
    main()
