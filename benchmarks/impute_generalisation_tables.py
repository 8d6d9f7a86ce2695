"""Per-dataset tables of the generalisation runs (``benchmarks/impute_generalisation.sh``).

Reads every ``docs/results/generalisation/<dataset>/seeds*/impute_patches.json``, merges the seed runs of a
dataset (:func:`napari_squint.tasks.benchmark_impute.merge_results`), writes the merged JSON next to them
(``<dataset>/impute_patches_merged.json``) and prints one Markdown table per dataset plus the goal check::

    .venv/bin/python benchmarks/impute_generalisation_tables.py > docs/results/generalisation/tables.md

An optional argument names another results folder of the same layout (``OUT_ROOT`` of
``benchmarks/impute_generalisation.sh``), e.g. ``docs/results/generalisation_calibrated``. ``--compare ROOT ...``
prints one table of SQuINT's default output row across several such folders (run after each folder's tables, which
write the merged JSON it reads); ``--compare-cifm ROOT ...`` the same for CIFM's rows (decoded mean, donor draw)::

    .venv/bin/python benchmarks/impute_generalisation_tables.py --compare docs/results/generalisation \
        docs/results/generalisation_calibrated docs/results/generalisation_model_options
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from napari_squint.tasks.benchmark_impute import merge_results

ROOT = Path(__file__).resolve().parents[1] / "docs" / "results" / "generalisation"
ROWS = [
    ("mean profile", "training mean"),
    ("neighbourhood average", "neighbourhood average"),
    ("ring infill", "ring average"),
    ("SQuINT (context) logmean", "**SQuINT (defaults)**"),
    ("SQuINT (context) logmean w/o residual", "SQuINT alone (no residual correction)"),
    ("SQuINT (context) sample", "SQuINT generated counts (sample)"),
    ("CIFM", "**CIFM (defaults)**"),
    ("CIFM sample", "CIFM donor draw (sample)"),
]
DEFAULT, NAVG, RING = "SQuINT (context) logmean", "neighbourhood average", "ring infill"
#: where the defaults were chosen: its rows are training figures and are labelled so
CHOSEN_ON = "merfish_animal1"
#: the protocol's SQuINT options (benchmarks/impute_generalisation.sh); others name a run's variant
PROTOCOL = {"heads": 8, "lambda_cell": 2.0}
#: CIFM options added after some runs were made, with the value those runs used
LEGACY_CIFM = {"val_frac": 0.0}
#: how the runs were made (benchmarks/impute_generalisation.sh, docs/imputation.md)
RUN_NOTE = ("2 AMD EPYC cores, one torch thread per run, shared by two to five benchmark runs at once: "
            "seconds indicate cost only")


def _label(name: str) -> str:
    return f"{name} (defaults chosen here: training figures)" if name == CHOSEN_ON else name


def _fmt(s: dict | None, metric: str, digits: int) -> str:
    if s is None or metric not in s:
        return "–"
    m, sd = s[metric]["mean"], s[metric]["sd"]
    return f"{m:.{digits}f}" if sd != sd else f"{m:.{digits}f} ± {sd:.{digits}f}"


def table(res: dict) -> list[str]:
    sm = res["summary"]
    lines = ["| method | X PC gene ↑ | X MMD ↓ | X energy ↓ | X_nbr PC gene ↑ | X_nbr MMD ↓ | X_nbr energy ↓ |",
             "|---|---|---|---|---|---|---|"]
    cifm = _cifm_options(res)
    for key, label in ROWS:
        if key not in sm["X_nbr"]:
            continue
        if key == "CIFM" and cifm != "defaults":  # a run made with other CIFM options than today's defaults
            label = f"CIFM ({cifm})"
        x, n = sm["X"].get(key), sm["X_nbr"][key]
        lines.append(f"| {label} | {_fmt(x, 'pc_gene', 3)} | {_fmt(x, 'mmd', 3)} | {_fmt(x, 'energy', 2)} | "
                     f"{_fmt(n, 'pc_gene', 3)} | {_fmt(n, 'mmd', 4)} | {_fmt(n, 'energy', 3)} |")
    tok = sm.get("tokens") or {}
    if tok:
        lines += ["", "| masked-token prediction | token top-1 ↑ | token top-5 ↑ | code top-1 (per head) ↑ |",
                  "|---|---|---|---|"]
        for name, s in tok.items():
            lines.append(f"| {name} | {_fmt(s, 'top1', 3)} | {_fmt(s, 'top5', 3)} | {_fmt(s, 'code_top1', 3)} |")
    return lines


def _checks(n: dict) -> list[tuple[str, bool]]:
    """The goal's four checks of SQuINT's default X_nbr row (means over seeds)."""
    d, a, r = n[DEFAULT], n[NAVG], n[RING]
    return [("PC > nbr avg", d["pc_gene"]["mean"] > a["pc_gene"]["mean"]),
            ("MMD < nbr avg", d["mmd"]["mean"] < a["mmd"]["mean"]),
            ("energy < nbr avg", d["energy"]["mean"] < a["energy"]["mean"]),
            ("PC > ring avg", d["pc_gene"]["mean"] > r["pc_gene"]["mean"])]


def _variant(res: dict) -> dict:
    """The run's SQuINT options beyond the protocol's (what an OUT_ROOT run changed)."""
    return {k: v for k, v in res["config"].get("options", {}).items()
            if k != "num_threads" and PROTOCOL.get(k, None) != v}


def goal(res: dict) -> str:
    n = res["summary"]["X_nbr"]
    if DEFAULT not in n:
        return "goal: SQuINT default row missing"
    a = n[NAVG]
    checks = _checks(n)
    text = ", ".join(f"{name}: {'yes' if ok else '**no**'}" for name, ok in checks)
    for row in ("CIFM", "CIFM sample"):
        if row in n:
            c = n[row]
            text += (f"; {row} PC > nbr avg: {'yes' if c['pc_gene']['mean'] > a['pc_gene']['mean'] else '**no**'}, "
                     f"{row} MMD within 2x: {'yes' if c['mmd']['mean'] <= 2 * a['mmd']['mean'] else '**no**'}")
    return f"Goal on X_nbr (means over seeds {res['config']['seeds']}): {text}."


def figure(merged: dict[str, dict], path: Path) -> None:
    """X_nbr per-gene PC, MMD and energy per dataset: SQuINT's default, CIFM and the baselines (mean ± sd)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(merged)
    extra = _variant(merged[names[0]])
    squint = "SQuINT (" + (", ".join(f"{k}={v}" for k, v in extra.items()) if extra else "defaults") + ")"
    rows = [(key, label) for key, label in [("neighbourhood average", "neighbourhood average"),
                                            ("ring infill", "ring average"), (DEFAULT, squint),
                                            ("CIFM", "CIFM (defaults)"),
                                            ("CIFM sample", "CIFM donor draw")]
            if any(key in merged[d]["summary"]["X_nbr"] for d in names)]
    metrics = [("pc_gene", "X_nbr per-gene PC ↑"), ("mmd", "X_nbr MMD ↓"), ("energy", "X_nbr energy ↓")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    w = 0.8 / len(rows)
    for ax, (metric, title) in zip(axes, metrics):
        for i, (key, label) in enumerate(rows):
            m = [merged[d]["summary"]["X_nbr"].get(key, {}).get(metric, {}).get("mean", np.nan) for d in names]
            sd = [merged[d]["summary"]["X_nbr"].get(key, {}).get(metric, {}).get("sd", np.nan) for d in names]
            ax.bar(np.arange(len(names)) + (i - (len(rows) - 1) / 2) * w, m, w, yerr=np.nan_to_num(sd), label=label,
                   capsize=2)
        older = {d for d in names if "CIFM" in merged[d]["summary"]["X_nbr"] and _cifm_options(merged[d]) != "defaults"}
        ax.set_xticks(range(len(names)), [f"{d}{' *' if d == CHOSEN_ON else ''}{' †' if d in older else ''}"
                                          f"\n(n={len(merged[d]['runs'])})" for d in names], rotation=30,
                      ha="right", fontsize=8)
        ax.set_title(title)
        if metric != "pc_gene":
            ax.set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(rows), fontsize=9, frameon=False)
    what = f"MERFISH Animal 1's settings + {squint[8:-1]}" if extra else "settings chosen on MERFISH Animal 1"
    older = sorted({_cifm_options(merged[d]) for d in names
                    if "CIFM" in merged[d]["summary"]["X_nbr"] and _cifm_options(merged[d]) != "defaults"})
    note = f"; † CIFM run with {' / '.join(older)}" if older else ""
    fig.suptitle(f"Table 2 protocol, {what} (* training figures{note}), unchanged elsewhere "
                 "(mean ± sd over seeds n)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(root: Path = ROOT) -> int:
    merged = {}
    for ds in sorted(p for p in root.iterdir() if p.is_dir()):
        parts = [json.loads(f.read_text()) for f in sorted(ds.glob("seeds*/impute_patches.json"))]
        if not parts:
            continue
        res = merge_results(parts)
        merged[ds.name] = res
        (ds / "impute_patches_merged.json").write_text(json.dumps(res, indent=1))
        cfg = res["config"]
        secs = sum(sum(r["seconds"].get("seed total", 0) for r in p["runs"]) for p in parts)
        print(f"### {_label(ds.name)}\n")
        print(f"{cfg['n_cells']} cells x {cfg['n_genes']} genes, {len(cfg['sections'] or [])} section(s); patches "
              f"in `{cfg['section']}` ({res['runs'][0]['n_test']} test cells per seed); seeds {cfg['seeds']}; "
              f"{secs:.0f} s of runs ({RUN_NOTE}).\n")
        print("\n".join(table(res)))
        print(f"\n{goal(res)}\n")
    if merged:
        print("### The goal, per dataset (X_nbr, means over seeds)\n")
        print("| dataset | seeds | SQuINT PC vs nbr avg | SQuINT MMD vs nbr avg | SQuINT energy vs nbr avg | "
              "SQuINT PC vs ring avg | CIFM PC vs nbr avg | CIFM MMD / nbr avg MMD | CIFM sample PC vs nbr avg | "
              "CIFM sample MMD / nbr avg MMD |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name, res in merged.items():
            n = res["summary"]["X_nbr"]
            d, a, r, c, cs = n[DEFAULT], n[NAVG], n[RING], n.get("CIFM"), n.get("CIFM sample")

            def cmp(x, y, metric, higher, digits=3):
                ok = x[metric]["mean"] > y[metric]["mean"] if higher else x[metric]["mean"] < y[metric]["mean"]
                txt = f"{x[metric]['mean']:.{digits}f} vs {y[metric]['mean']:.{digits}f}"
                return f"**{txt}**" if ok else f"{txt} (loses)"

            cifm = ("–", "–") if c is None else (cmp(c, a, "pc_gene", True),
                                                 f"{c['mmd']['mean'] / a['mmd']['mean']:.1f}x")
            if c is not None and _cifm_options(res) != "defaults":
                cifm = (f"{cifm[0]} ({_cifm_options(res)})", cifm[1])
            drawn = ("–", "–") if cs is None else (cmp(cs, a, "pc_gene", True),
                                                   f"{cs['mmd']['mean'] / a['mmd']['mean']:.1f}x")
            print(f"| {_label(name)} | {len(res['runs'])} | {cmp(d, a, 'pc_gene', True)} | {cmp(d, a, 'mmd', False, 4)} | "
                  f"{cmp(d, a, 'energy', False)} | {cmp(d, r, 'pc_gene', True)} | {cifm[0]} | {cifm[1]} | "
                  f"{drawn[0]} | {drawn[1]} |")
        print()
        figure(merged, root / "summary.png")
        print("![X_nbr per dataset](summary.png)\n")
    return 0


def _merged(roots: list[Path]):
    """``(dataset, merged results)`` for every dataset of every folder, datasets in name order, folders in the
    order given (each folder's merged JSON, written by its tables run)."""
    names = sorted({p.name for r in roots for p in r.iterdir() if (p / "impute_patches_merged.json").exists()})
    for name in names:
        for root in roots:
            f = root / name / "impute_patches_merged.json"
            if f.exists():
                yield name, json.loads(f.read_text())


def compare(roots: list[Path]) -> int:
    """SQuINT's default row (X_nbr) and the goal's four checks, per dataset, for each results folder."""
    print("| dataset | SQuINT options | X_nbr PC gene ↑ | X_nbr MMD ↓ | X_nbr energy ↓ | code top-1 ↑ | goal checks met |")
    print("|---|---|---|---|---|---|---|")
    for name, res in _merged(roots):
        n = res["summary"]["X_nbr"]
        d = n[DEFAULT]
        met = [ok for _, ok in _checks(n)]
        tok = (res["summary"].get("tokens") or {}).get("SQuINT masked-code head (context)")
        run = ", ".join(f"{k}={v}" for k, v in _variant(res).items()) or "defaults"
        print(f"| {_label(name)} | {run} | {_fmt(d, 'pc_gene', 3)} | {_fmt(d, 'mmd', 4)} | "
              f"{_fmt(d, 'energy', 3)} | {_fmt(tok, 'code_top1', 3)} | {sum(met)} of 4 |")
    return 0


def _cifm_options(res: dict) -> str:
    """CIFM's options that differ from :class:`~napari_squint.config.CifmConfig`'s defaults in a run."""
    from napari_squint.config import CifmConfig

    ref = CifmConfig().to_dict()
    # options added since a run was made had, in that run, the value that gave the earlier behaviour
    got = {**LEGACY_CIFM, **((res["config"].get("extra_settings") or {}).get("CIFM") or {})}
    diff = {k: v for k, v in got.items() if k in ref and k not in ("seed", "device", "num_threads") and v != ref[k]}
    return ", ".join(f"{k}={v}" for k, v in diff.items()) or "defaults"


def compare_cifm(roots: list[Path]) -> int:
    """CIFM's rows (X and X_nbr; the decoded mean and, where run, the donor draw) and their two checks, per dataset,
    for each results folder."""
    print("| dataset | CIFM options | draw | X PC gene ↑ | X MMD ↓ | X_nbr PC gene ↑ | X_nbr MMD ↓ | "
          "X_nbr energy ↓ | PC vs nbr avg | MMD / nbr avg's | CIFM s per seed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, res in _merged(roots):
        n, a = res["summary"]["X_nbr"], res["summary"]["X_nbr"][NAVG]
        for row, draw in (("CIFM", "mean"), ("CIFM sample", "sample")):
            x, c = res["summary"]["X"].get(row), n.get(row)
            if c is None:
                continue
            wins = c["pc_gene"]["mean"] > a["pc_gene"]["mean"]
            secs = [r["seconds"].get("CIFM", float("nan")) for r in res["runs"]]
            eps = [r["training"]["CIFM"]["epochs"] for r in res["runs"] if "CIFM" in r.get("training", {})]
            trained = f" ({'/'.join(map(str, eps))} epochs)" if eps else ""
            print(f"| {_label(name)} | {_cifm_options(res)} | {draw} | {_fmt(x, 'pc_gene', 3)} | {_fmt(x, 'mmd', 3)} | "
                  f"{_fmt(c, 'pc_gene', 3)} | {_fmt(c, 'mmd', 3)} | {_fmt(c, 'energy', 2)} | "
                  f"{c['pc_gene']['mean']:.3f} vs {a['pc_gene']['mean']:.3f}{'' if wins else ' (loses)'} | "
                  f"{c['mmd']['mean'] / a['mmd']['mean']:.1f}x | {sum(secs) / len(secs):.0f}{trained} |")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--compare"]:
        sys.exit(compare([Path(p) for p in sys.argv[2:]]))
    if sys.argv[1:2] == ["--compare-cifm"]:
        sys.exit(compare_cifm([Path(p) for p in sys.argv[2:]]))
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(__doc__)
        sys.exit(0)
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT))
