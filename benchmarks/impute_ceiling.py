"""How far can token-based in-painting go? Oracles and point-versus-draw on held-out MERFISH patches.

The patch benchmark (``squint benchmark impute``) asks SQuINT to beat the
neighbourhood average on per-gene PC, MMD and energy distance at once. This
script separates the two things that decide it, on the same held-out cells
and with the same trained model:

* how well a held-out cell's *token* is guessed from its surroundings, and
* whether the profile reported is an expectation (``mean``) or generated
  counts (``sample``: negative-binomial draws with the model's dispersions).

Rows (X = the cell's profile, Xn = its microenvironment: measured counts of
observed members + estimates of held-out ones):

``neighbourhood average``
    the baseline the issue names.
``SQuINT context|infill mean|logmean|sample``
    the model's in-painting, ``method="context"`` or ``"infill"``, ``draw="mean"`` / ``"logmean"`` / ``"sample"``.
``oracle token mean`` / ``oracle token sample``
    each held-out cell decoded from the token it gets when its own counts are
    shown to the model: what a perfect token guess would give (an upper bound
    that uses the truth; not a method); ``oracle token logmean`` reports it as
    the default ``draw="logmean"`` does.
``neighbour token mean`` / ``sample``
    the tokens of the k nearest observed cells, decoded with the held-out
    cell's covariates (mean of the k decodings / one of them at random).
``neighbour cell sample``
    the measured counts of one of the k nearest observed cells (a real cell
    copied: a distribution-matching reference).

    python benchmarks/impute_ceiling.py DATA --section S --train-sections A,B,C [--seeds 3] [--epochs 20]
        [--option heads=8 --option lambda_cell=2.0] [--json out.json]

Prints a markdown table of mean +- sd over seeds for both targets.
"""

from __future__ import annotations

import argparse
import json
import platform

import numpy as np


def _options(pairs):
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def one_seed(adata, *, section, seed, epochs, options, k):
    import torch
    from scipy.spatial import cKDTree

    from napari_squint import metrics as M
    from napari_squint.data.batch import make_batch
    from napari_squint.data.prepare import prepare_slide
    from napari_squint.nn.log_estimate import log_space_counts
    from napari_squint.nn.nb import sample_nb
    from napari_squint.tasks.holdout import choose_sites, train_heldout
    from napari_squint.tasks.impute import Imputer
    from napari_squint.config import SquintConfig

    graph = SquintConfig().update(**{k_: v for k_, v in options.items() if k_ in ("k", "max_degree")}).graph
    genes = list(adata.var_names)
    full = prepare_slide(adata, genes, section_key="section", spatial_key="spatial", graph=graph)
    counts = full.counts
    sec = adata.obs["section"].astype(str).to_numpy()
    labels = choose_sites(adata, sites="patches", section=section, n_patches=3, fraction=0.03, seed=seed,
                          section_key="section", spatial_key="spatial")
    held = labels >= 0
    test = np.flatnonzero(held)
    nb = full.nbr
    clean = ~held & ~((nb >= 0) & held[np.maximum(nb, 0)]).any(1)
    pca_x, pca_n = M.reference_pca(counts[~held], seed=seed), M.reference_pca(full.x_nbr[clean], seed=seed)
    truth, truth_n = counts[test].toarray(), full.x_nbr[test].toarray()
    rows = {}

    def score(name, x, xn=None):
        xn = M.nbr_profile(counts, x, held, nb, test) if xn is None else xn
        rows[name] = {"X": M.evaluate_imputation(truth, x, pca=pca_x, seed=seed),
                      "X_nbr": M.evaluate_imputation(truth_n, xn, pca=pca_n, seed=seed)}

    score("neighbourhood average", M.neighbourhood_average(full.coords, counts, ~held, test, k=graph.k, section=sec))
    model = train_heldout(adata, held, section_key="section", spatial_key="spatial", genes=genes, epochs=epochs,
                          seed=seed, **options)
    imp = Imputer(model, adata)
    for meth in ("context", "infill"):
        score(f"SQuINT {meth} mean", imp.impute_targets(test, method=meth, draw="mean")["imputed"])
        res_l = imp.impute_targets(test, method=meth, draw="logmean")
        score(f"SQuINT {meth} logmean", res_l["imputed"], res_l["imputed_nbr"])
        score(f"SQuINT {meth} sample", imp.impute_targets(test, method=meth, draw="sample", seed=seed)["imputed"])

    data = model.prepare(adata)
    observed_codes = model.encode(data)["codes"]  # every cell shown to the model: the oracle's tokens
    lib = data.library().astype(float)
    depth = float(np.median(lib[~held & (sec == section)]))
    rng = np.random.default_rng(seed)
    theta = model.module.log_theta_cell.detach().cpu().exp().numpy().astype(float)

    def nb_draw(mu):
        return sample_nb(mu, theta, rng)

    @torch.no_grad()
    def decode(codes, nbr=False):
        m = model.module
        b = make_batch(data, test, masked=None, targets=False).to(model.device)
        _, c = m.encode(b)
        pn, pc = m.both_probs(m.codebook.lookup(torch.as_tensor(codes, device=model.device)), c)
        return pn.float().cpu().numpy() if nbr else pc.float().cpu().numpy() * depth

    own = decode(observed_codes[test])
    score("oracle token mean", own)
    # the same oracle, reported as SQuINT's default output (draw="logmean"): X from the token's NB, X_nbr as the
    # measured members plus the token's microenvironment NB for the held-out members
    theta_n = model.module.log_theta.detach().cpu().exp().numpy().astype(float)
    members = np.concatenate([test[:, None], nb[test]], axis=1)
    valid = members >= 0
    is_held = valid & held[np.maximum(members, 0)]
    depth_held = depth * is_held.sum(1)
    slot = np.broadcast_to(np.arange(test.size)[:, None], members.shape)
    meas = valid & ~is_held
    import scipy.sparse as sp

    a_meas = sp.csr_matrix((np.ones(int(meas.sum())), (slot[meas], members[meas])), shape=(test.size, held.size))
    offset = (a_meas @ counts).toarray().astype(float)
    own_n = decode(observed_codes[test], nbr=True) * depth_held[:, None]
    score("oracle token logmean", log_space_counts(own, theta, np.full(test.size, depth)),
          log_space_counts(own_n, theta_n, offset.sum(1) + depth_held, offset))
    score("oracle token sample", nb_draw(own))
    pool = np.flatnonzero(~held & (sec == section))
    _, near = cKDTree(full.coords[pool]).query(full.coords[test], k=k)
    near = pool[near]
    decoded = np.stack([decode(observed_codes[near[:, j]]) for j in range(k)])
    pick = rng.integers(0, k, test.size)
    score("neighbour token mean", decoded.mean(0))
    score("neighbour token sample", nb_draw(decoded[pick, np.arange(test.size)]))
    score("neighbour cell sample", counts[near[np.arange(test.size), pick]].toarray().astype(float))
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--section", required=True)
    p.add_argument("--train-sections", required=True)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--option", action="append", default=[])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import anndata as ad
    import torch

    from napari_squint.metrics import summarise, to_markdown
    from napari_squint.tasks.benchmark_impute import _subset_sections

    torch.set_num_threads(args.threads)
    adata = _subset_sections(ad.read_h5ad(args.data), args.train_sections.split(","), "section", args.section)
    options = _options(args.option)
    runs = [one_seed(adata, section=args.section, seed=s, epochs=args.epochs, options=options, k=8)
            for s in range(args.seeds)]
    summary = {t: {name: summarise([r[name][t] for r in runs]) for name in runs[0]} for t in ("X", "X_nbr")}
    for t in ("X", "X_nbr"):
        print(f"\n### {t}\n\n{to_markdown(summary[t])}")
    record = {"data": args.data, "section": args.section, "train_sections": args.train_sections,
              "seeds": args.seeds, "epochs": args.epochs, "options": options, "machine": platform.platform(),
              "runs": runs, "summary": summary}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=1, default=float)
    return record


if __name__ == "__main__":
    main()
