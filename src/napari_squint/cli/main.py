"""The ``squint`` command line: the same functions as the Python API.

:func:`main` turns every expected failure (a bad slide, model folder, polygon file or option; an output that
would overwrite an input or a file the tool did not write; a file that cannot be read) into one line
``squint CMD: error: ...`` on stderr and exit code 2, with no traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings

#: command modules, each with ``add_parser(subparsers)``
COMMANDS = ["train", "tokens", "demo", "impute", "benchmark", "explain", "stratify", "perturb", "stack", "view"]


def _leaves(parser: argparse.ArgumentParser):
    """The parsers that run a command (subparsers of subparsers included)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
        return
    for action in subs:
        for child in action.choices.values():
            yield from _leaves(child)


def _has_option(parser: argparse.ArgumentParser, flag: str) -> bool:
    return any(flag in a.option_strings for a in parser._actions)


def build_parser() -> argparse.ArgumentParser:
    from napari_squint import __version__

    parser = argparse.ArgumentParser(prog="squint", description="Discrete cell tokens for spatial transcriptomics.")
    parser.add_argument("--version", action="version", version=f"napari-squint {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"napari_squint.cli.{name}").add_parser(sub)
    for leaf in _leaves(parser):
        if leaf is parser:
            continue
        if _has_option(leaf, "--out") and not _has_option(leaf, "--overwrite"):
            leaf.add_argument("--overwrite", action="store_true",
                              help="replace an existing output, but only one napari-squint wrote itself "
                                   "(a folder with its .squint-output.json marker, or a file listed there)")
        if not _has_option(leaf, "--debug"):
            leaf.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input (reported in one line), not a bug in napari-squint."""
    errors: list[type[BaseException]] = [ValueError, OSError, NotImplementedError, KeyError, json.JSONDecodeError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def one_line(err: BaseException) -> str:
    """The error's message on one line (a KeyError's quotes dropped)."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(text.split())
    return text or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = f"squint {args.command}"
    debug = bool(getattr(args, "debug", False))

    def show(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        print(f"{prog}: warning: {text}" if not debug else
              warnings.formatwarning(message, category, filename, lineno, line), file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            return int(args.run(args) or 0)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return 130
        except user_errors() as err:
            if debug:
                raise
            print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
            return 2
        except Exception as err:  # a bug: still one line, the traceback on request
            if debug:
                raise
            print(f"{prog}: internal error: {type(err).__name__}: {one_line(err)} (run with --debug for the "
                  "traceback and please report it)", file=sys.stderr)
            return 1


if __name__ == "__main__":
    raise SystemExit(main())
