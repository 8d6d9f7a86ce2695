"""``squint benchmark impute DATA [--section S] [--patches 3] [--seeds 3] [--sites patches|random] [--no-cifm]``."""

from __future__ import annotations

from napari_squint.cli import common


def add_parser(sub) -> None:
    p = sub.add_parser("benchmark", help="reproducible benchmarks")
    bsub = p.add_subparsers(dest="benchmark", required=True)
    b = bsub.add_parser("impute", help="the paper's Table 2 protocol on any slide with a section key: train SQuINT "
                                       "and CIFM without held-out patches, impute them, score against the "
                                       "baselines (neighbourhood average, ring average, training mean) and report "
                                       "masked-token accuracy; write JSON + a Markdown table")
    b.add_argument("data", help=".h5ad or SpatialData .zarr")
    b.add_argument("--section", default=None, help="section holding the held-out sites (default: the largest)")
    b.add_argument("--sites", choices=["patches", "random"], default="patches",
                   help="contiguous patches (Table 2) or random cells (appendix C.4)")
    b.add_argument("--patches", type=common.positive_int, default=3, help="number of patches (default 3)")
    b.add_argument("--fraction", type=float, default=0.03, help="cells per patch, fraction of the section (0.03)")
    b.add_argument("--seeds", type=common.positive_int, default=3, help="number of seeds (default 3): FIRST..FIRST+N-1")
    b.add_argument("--first-seed", type=int, default=0, metavar="FIRST", help="first seed (default 0)")
    b.add_argument("--epochs", type=common.positive_int, default=None, help="SQuINT epochs (default: the model's)")
    b.add_argument("--train-sections", default=None,
                   help="comma-separated sections to train and evaluate on (default: all)")
    b.add_argument("--variants", default="all", help="SQuINT variants: 'all', 'none' or a comma-separated subset "
                                                       "of: squint, no-c, zero-mask")
    b.add_argument("--methods", default="context,infill,oneshot",
                   help="imputation methods scored (default context,infill,oneshot; the first also gets the "
                        "generated-counts rows)")
    b.add_argument("--no-sample", action="store_true",
                   help="skip the drawn rows: SQuINT's generated counts and CIFM's donor draws ('... sample')")
    b.add_argument("--threads", type=common.positive_int, default=None, help="torch CPU threads")
    b.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra SQuINT option for every variant, e.g. --option heads=8 (repeatable)")
    b.add_argument("--cifm", action="store_true",
                   help="train CIFM on the same held-out sites and score it in the same run (a 'CIFM' row; the "
                        "default, kept for older command lines)")
    b.add_argument("--no-cifm", action="store_true", help="skip CIFM (SQuINT and the baselines only)")
    b.add_argument("--cifm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="CIFM option, e.g. --cifm-option epochs=30 --cifm-option mask_ratio=0.2 (repeatable)")
    b.add_argument("--out", default="benchmark_impute", help="output folder (default ./benchmark_impute)")
    common.add_slide_options(b)
    b.set_defaults(run=run)


_VARIANTS = {"squint": "SQuINT", "no-c": "SQuINT w/o C", "zero-mask": "SQuINT zero mask"}


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _options(items, flag: str) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = _value(value.strip())
    return out


def run(args) -> int:
    from pathlib import Path

    from napari_squint.cli.progress import TerminalProgress
    from napari_squint.io.outputs import check_not_input, check_output, record_files
    from napari_squint.tasks.benchmark_impute import MODEL_VARIANTS, benchmark_impute, results_markdown, write_results

    # --out is a results folder runs add files to: only this run's two files must be free (or the tool's own)
    check_not_input(args.out, common.inputs(args))
    stem = f"impute_{args.sites}"
    for suffix in (".json", ".md"):
        check_output(Path(args.out) / f"{stem}{suffix}", inputs=common.inputs(args), overwrite=args.overwrite)

    if args.variants == "all":
        variants = dict(MODEL_VARIANTS)
    elif args.variants == "none":
        variants = {}
    else:
        names = [v.strip() for v in args.variants.split(",") if v.strip()]
        bad = [v for v in names if v not in _VARIANTS]
        if bad:
            raise ValueError(f"--variants: unknown {bad}; choose from {sorted(_VARIANTS)}")
        variants = {_VARIANTS[v]: MODEL_VARIANTS[_VARIANTS[v]] for v in names}
    options = _options(args.option, "--option")
    extra = {}
    if args.cifm and args.no_cifm:
        raise ValueError("--cifm and --no-cifm: choose one")
    if not args.no_cifm:
        from napari_squint.api.cifm import make_benchmark_method

        extra["CIFM"] = make_benchmark_method(section_key=common.section_key(args), spatial_key=args.spatial_key,
                                              draws=("mean",) if args.no_sample else ("mean", "sample"),
                                              **_options(args.cifm_option, "--cifm-option"))
    elif args.cifm_option:
        raise ValueError("--cifm-option needs CIFM: drop --no-cifm")
    if args.threads:
        options["num_threads"] = args.threads
    adata = common.read(args, args.data)
    sections = [s.strip() for s in args.train_sections.split(",")] if args.train_sections else None
    results = benchmark_impute(
        adata, section=args.section, sites=args.sites, n_patches=args.patches, fraction=args.fraction,
        seeds=list(range(args.first_seed, args.first_seed + args.seeds)), sections=sections, epochs=args.epochs, variants=variants,
        impute_methods=[m.strip() for m in args.methods.split(",") if m.strip()], sampled=not args.no_sample,
        extra_methods=extra,
        section_key=common.section_key(args), spatial_key=args.spatial_key, options=options,
        callback=TerminalProgress())
    js, md = write_results(results, args.out, stem=stem)
    record_files([js, md])  # so a later --overwrite recognises them as the tool's own
    print(results_markdown(results))
    print(f"wrote {js} and {md}")
    return 0
