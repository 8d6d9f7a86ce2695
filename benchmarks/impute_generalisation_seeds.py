"""The issue's goal checks for SQuINT over every seed run, pooled across results folders.

The goal is judged on the mean over seeds 0-2. Three seeds of three patches each are few: this script pools every
seed found for a dataset under the folders given (e.g. ``docs/results/generalisation`` for seeds 0-2 and a folder of
SQuINT-only runs of seeds 3-9), and prints, per dataset, the means of SQuINT's default row and of the baselines over
all those seeds, and in how many seeds each check holds. Runs made with other SQuINT options than the protocol's
are refused (the pooled rows must be one method). ::

    OUT_ROOT=docs/results/generalisation_seeds3-9 EXTRA="--no-cifm" bash benchmarks/impute_generalisation.sh 3 7 \\
        osmfish merfish_animal7 lung mpfc starmap3d
    .venv/bin/python benchmarks/impute_generalisation_seeds.py docs/results/generalisation \\
        docs/results/generalisation_seeds3-9
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SQ, NAVG, RING = "SQuINT (context) logmean", "neighbourhood average", "ring infill"
#: (label, method, metric, baseline, True when higher is better)
CHECKS = [("PC vs nbr avg", "pc_gene", NAVG, True), ("MMD vs nbr avg", "mmd", NAVG, False),
          ("energy vs nbr avg", "energy", NAVG, False), ("PC vs ring avg", "pc_gene", RING, True)]


def _runs(roots: list[Path]) -> dict[str, dict[int, dict]]:
    """dataset -> seed -> X_nbr scores, from every ``<root>/<dataset>/seeds*/impute_patches.json``."""
    out: dict[str, dict[int, dict]] = {}
    ref: dict[str, dict] = {}
    for root in roots:
        for f in sorted(root.glob("*/seeds*/impute_patches.json")):
            res = json.loads(f.read_text())
            name = f.parent.parent.name
            opts = {k: res["config"].get(k) for k in ("options", "epochs", "section", "sections", "n_cells", "graph")}
            if ref.setdefault(name, opts) != opts:
                raise SystemExit(f"{f}: other SQuINT settings than {name}'s first run; not pooled")
            for r in res["runs"]:
                seed = int(r["seed"])
                if seed in out.setdefault(name, {}):
                    raise SystemExit(f"{f}: seed {seed} of {name} found twice")
                out[name][seed] = r["scores"]["X_nbr"]
    return out


def main(roots: list[Path]) -> int:
    print("| dataset | seeds | SQuINT PC / nbr avg / ring avg | SQuINT MMD / nbr avg | SQuINT energy / nbr avg | "
          + " | ".join(f"{label}: seeds won" for label, *_ in CHECKS) + " | checks met by the means |")
    print("|---|---|---|---|---|" + "---|" * len(CHECKS) + "---|")
    for name, seeds in sorted(_runs(roots).items()):
        order = sorted(seeds)
        get = {(m, k): np.array([seeds[s][m][k] for s in order]) for m in (SQ, NAVG, RING)
               for k in ("pc_gene", "mmd", "energy")}
        won, met = [], 0
        for _, metric, base, higher in CHECKS:
            a, b = get[(SQ, metric)], get[(base, metric)]
            wins = (a > b) if higher else (a < b)
            won.append(f"{int(wins.sum())} of {len(order)}")
            met += bool(a.mean() > b.mean()) if higher else bool(a.mean() < b.mean())
        m = {key: v.mean() for key, v in get.items()}
        span = f"{order[0]}-{order[-1]}" if order == list(range(order[0], order[-1] + 1)) else ",".join(map(str, order))
        print(f"| {name} | {span} | {m[(SQ, 'pc_gene')]:.3f} / {m[(NAVG, 'pc_gene')]:.3f} / {m[(RING, 'pc_gene')]:.3f} | "
              f"{m[(SQ, 'mmd')]:.4f} / {m[(NAVG, 'mmd')]:.4f} | {m[(SQ, 'energy')]:.3f} / {m[(NAVG, 'energy')]:.3f} | "
              + " | ".join(won) + f" | {met} of 4 |")
    return 0


if __name__ == "__main__":
    if not sys.argv[1:] or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0)
    sys.exit(main([Path(p) for p in sys.argv[1:]]))
