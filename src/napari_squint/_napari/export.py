"""Save a dock's figure (PNG / SVG / PDF) and table (CSV): atomic, never over a file the tool did not write.

The rules are the package's (:mod:`napari_squint.io.outputs`): never onto an
input, a file is written to a temporary sibling and renamed into place, and an
existing file is replaced only when napari-squint wrote it (and it is unchanged
since). No Qt here.
"""

from __future__ import annotations

from pathlib import Path

FIGURE_FORMATS = (".png", ".svg", ".pdf")


def export_figure(figure, path: str | Path, *, inputs=(), dpi: int = 200) -> Path:
    """Write a matplotlib figure; the format is the suffix (``.png``, ``.svg``, ``.pdf``)."""
    from napari_squint.io.outputs import atomic_path, check_output

    path = Path(path)
    if path.suffix.lower() not in FIGURE_FORMATS:
        raise ValueError(f"figure file {path.name}: use one of {', '.join(FIGURE_FORMATS)}")
    check_output(path, inputs=inputs, overwrite=True)  # replaces only a file napari-squint wrote
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lower()[1:], dpi=dpi, bbox_inches="tight")
    return path


def export_table(table, path: str | Path, *, inputs=()) -> Path:
    """Write a pandas table as CSV."""
    from napari_squint.io.outputs import atomic_path, check_output

    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise ValueError(f"table file {path.name}: use a .csv name")
    if table is None or len(table) == 0:
        raise ValueError("nothing to export yet: the table is empty")
    check_output(path, inputs=inputs, overwrite=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return path
