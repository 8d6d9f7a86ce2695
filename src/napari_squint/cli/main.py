"""The ``squint`` command line: the same functions as the Python API."""

from __future__ import annotations

import argparse
import importlib
import sys

#: command modules, each with ``add_parser(subparsers)``; missing ones are skipped
COMMANDS = ["train", "tokens", "demo", "impute", "benchmark", "explain", "stratify", "perturb", "stack", "view"]


def build_parser() -> argparse.ArgumentParser:
    from napari_squint import __version__

    parser = argparse.ArgumentParser(prog="squint", description="Discrete cell tokens for spatial transcriptomics.")
    parser.add_argument("--version", action="version", version=f"napari-squint {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"napari_squint.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"napari_squint.cli.{name}":
                continue
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from napari_squint.data.validate import SlideError

    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (SlideError, FileNotFoundError, FileExistsError, ValueError, NotImplementedError) as err:
        # NotImplementedError: an operation the chosen model does not offer (e.g. tokens of a CIFM model)
        print(f"squint {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"squint {args.command}: interrupted", file=sys.stderr)
        return 130
if __name__ == "__main__":
    raise SystemExit(main())
