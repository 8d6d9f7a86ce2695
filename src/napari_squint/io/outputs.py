"""Output safety: nothing the tool did not write is ever replaced, and every write is atomic.

The rules, shared by the CLI, the Python API (``save`` / ``write_*``) and the napari docks:

* **Never onto an input.** An output path equal to an input, an output folder that holds an input, or an
  output inside an input *folder* (a model folder, a ``.zarr`` store) is refused; the message names both paths.
* **Never over what is not ours.** An existing output is refused unless ``overwrite=True`` (CLI
  ``--overwrite``), and even then only what the tool recognises as its own output is replaced:

  - a *folder* carrying the marker file ``.squint-output.json`` (written into every folder the tool creates),
    or a model folder written before the marker existed (exactly the checkpoint files, nothing else);
    an existing *empty* folder counts as free;
  - a *single file* listed in the manifest ``.squint-output.json`` of its own folder, which records every file
    the tool writes outside a folder of its own (name, size and modification time); a file changed since the
    tool wrote it (other size or time) is no longer the tool's and is refused.

* **Atomic.** Files are written to a hidden temporary sibling and renamed into place (``os.replace``); folders
  are built in a hidden temporary sibling folder and swapped in only when complete; a failure removes the
  temporary files, so a failed command leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: marker file of a folder the tool created, and manifest of the single files it wrote into a folder
MARKER = ".squint-output.json"
#: files of a model folder (a folder holding exactly these, from before the marker, is recognised as ours)
_MODEL_FILES = {"model.safetensors", "config.json", "genes.txt", "meta.json"}

__all__ = ["MARKER", "OutputError", "OutputFiles", "atomic_path", "check_output", "check_not_input",
           "is_own_file", "is_own_folder", "output_folder", "record_files", "swap_folder", "write_json",
           "write_text"]


class OutputError(ValueError):
    """An output path that would overwrite an input or a file the tool did not write."""


def _resolve(p: str | Path) -> Path:
    return Path(p).expanduser().resolve()


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def check_not_input(out: str | Path, inputs: Iterable[str | Path | None] = ()) -> None:
    """Refuse an output that is an input, holds an input, or lies inside an input folder.

    Raises
    ------
    OutputError
        Naming both paths.
    """
    o = _resolve(out)
    for inp in inputs:
        if inp is None:
            continue
        i = _resolve(inp)
        if o == i:
            raise OutputError(f"output {out} is the input {inp}; choose another output path (inputs are never "
                              "overwritten)")
        if _inside(i, o):
            raise OutputError(f"output {out} holds the input {inp}; writing there would replace it: choose another "
                              "output path")
        if i.is_dir() and _inside(o, i):
            raise OutputError(f"output {out} lies inside the input folder {inp}; choose a path outside it")


def _manifest_path(path: Path) -> Path:
    return path.parent / MARKER


def _read_manifest(folder_marker: Path) -> dict:
    try:
        doc = json.loads(folder_marker.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def is_own_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder the tool wrote (marker present, or an old model folder)."""
    path = Path(path)
    if not path.is_dir():
        return False
    marker = path / MARKER
    if marker.is_file() and _read_manifest(marker).get("kind") == "folder":
        return True
    names = {p.name for p in path.iterdir()}
    return names == _MODEL_FILES  # a model folder saved before the marker existed


def is_own_file(path: str | Path) -> bool:
    """True when ``path`` is a file the tool wrote and nobody changed since (see the module doc)."""
    path = Path(path)
    if not path.is_file():
        return False
    if (path.parent / MARKER).is_file() and _read_manifest(path.parent / MARKER).get("kind") == "folder":
        return True  # inside a folder of the tool's own
    entry = _read_manifest(_manifest_path(path)).get("files", {}).get(path.name)
    if not isinstance(entry, dict):
        return False
    st = path.stat()
    return entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns


def check_output(out: str | Path, *, inputs: Iterable[str | Path | None] = (), overwrite: bool = False,
                 folder: bool = False) -> Path:
    """Check, before any work, that ``out`` may be written; returns it as a Path.

    Parameters
    ----------
    out
        The file or folder to write.
    inputs
        Every input path of the command (files or folders); ``None`` entries are ignored.
    overwrite
        Allow replacing an existing output, but only one the tool wrote.
    folder
        ``out`` is a folder the tool creates as a whole (a model, a report).

    Raises
    ------
    OutputError
        ``out`` is or holds an input, exists without ``overwrite``, or exists but was not written by the tool.
    """
    out = Path(out)
    check_not_input(out, inputs)
    if not out.exists() and not out.is_symlink():
        return out
    if out.is_symlink():
        raise OutputError(f"output {out} is a symbolic link; choose a plain path")
    if folder:
        if not out.is_dir():
            raise OutputError(f"output folder {out} exists and is a file; choose another path")
        if not any(out.iterdir()):
            return out  # an empty folder: nothing to lose
        if not overwrite:
            raise OutputError(f"output folder {out} exists; pass --overwrite (Python: overwrite=True) to replace it")
        if not is_own_folder(out):
            raise OutputError(f"output folder {out} exists and was not written by napari-squint (no {MARKER}); "
                              "it is never replaced: choose another path")
        return out
    if out.is_dir():
        raise OutputError(f"output {out} is an existing folder; give a file path")
    if not overwrite:
        raise OutputError(f"output file {out} exists; pass --overwrite (Python: overwrite=True) to replace it")
    if not is_own_file(out):
        raise OutputError(f"output file {out} exists and was not written by napari-squint (or was changed since); "
                          "it is never replaced: choose another path")
    return out


def current_umask() -> int:
    """The process's file-creation mask, read without changing it (``os.umask`` would, for every thread)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _record(paths: list[Path]) -> None:
    """Add files to the manifest of their folder (skipped inside a folder of the tool's own)."""
    by_dir: dict[Path, list[Path]] = {}
    for p in paths:
        by_dir.setdefault(p.parent, []).append(p)
    for d, ps in by_dir.items():
        marker = d / MARKER
        doc = _read_manifest(marker) if marker.is_file() else {}
        if doc.get("kind") == "folder":
            continue
        files = doc.get("files") if isinstance(doc.get("files"), dict) else {}
        for p in ps:
            st = p.stat()
            files[p.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        doc = {"written_by": "napari-squint", "kind": "files", "files": files}
        _publish_text(marker, json.dumps(doc, indent=1))


def record_files(paths: Iterable[str | Path]) -> None:
    """Record files the tool wrote by other means (see the module doc), so ``overwrite`` may replace them."""
    _record([Path(p) for p in paths])


def _publish_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: str | Path, *, record: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it is renamed onto ``path``.

    No ownership checks here (call :func:`check_output` first). ``record`` adds the file to its folder's
    manifest so a later ``overwrite`` recognises it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if record:
        _record([path])


def write_text(path: str | Path, text: str, *, record: bool = True) -> Path:
    """Write a text file atomically."""
    with atomic_path(path, record=record) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj, *, record: bool = True, **kw) -> Path:
    """Write a JSON file atomically (``kw`` go to :func:`json.dumps`, default ``indent=1``)."""
    kw.setdefault("indent", 1)
    return write_text(path, json.dumps(obj, **kw), record=record)


def _mark(folder: Path, command: str | None) -> None:
    doc = {"written_by": "napari-squint", "kind": "folder", "command": command,
           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (folder / MARKER).write_text(json.dumps(doc, indent=1))


@contextmanager
def output_folder(out: str | Path, *, inputs: Iterable[str | Path | None] = (), overwrite: bool = False,
                  command: str | None = None, checked: bool = False) -> Iterator[Path]:
    """Build an output folder in a temporary sibling and swap it into place when the block succeeds.

    Yields the staging folder to write into. On success the marker is written and the folder replaces
    ``out`` (an old output of the tool is removed only after the new one is in place); on failure the staging
    folder is removed and ``out`` is untouched.
    """
    out = Path(out)
    if not checked:
        check_output(out, inputs=inputs, overwrite=overwrite, folder=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        _mark(tmp, command)
        os.chmod(tmp, 0o777 & ~current_umask())
        swap_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def swap_folder(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` onto ``out`` (an existing ``out`` was checked by the caller)."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rmdir(old)
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


class OutputFiles:
    """Several single files written as one: checked up front, staged, published together.

    >>> files = OutputFiles(inputs=[data], overwrite=False)
    >>> h5 = files.add("out.h5ad")           # checks; returns the temporary path to write
    >>> ...write h5...
    >>> files.commit()                       # rename every staged file into place (or abort() on failure)
    """

    def __init__(self, *, inputs: Iterable[str | Path | None] = (), overwrite: bool = False):
        self.inputs = list(inputs)
        self.overwrite = overwrite
        self._staged: list[tuple[Path, Path]] = []

    def check(self, path: str | Path) -> Path:
        return check_output(path, inputs=self.inputs, overwrite=self.overwrite)

    def add(self, path: str | Path) -> Path:
        """Check ``path`` and return a temporary sibling to write it to."""
        path = self.check(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
        self._staged.append((Path(tmp), path))
        return Path(tmp)

    def commit(self) -> list[Path]:
        done = []
        try:
            for tmp, path in self._staged:
                os.chmod(tmp, 0o666 & ~current_umask())
                os.replace(tmp, path)
                done.append(path)
        except BaseException:
            self.abort()
            raise
        self._staged = []
        _record(done)
        return done

    def abort(self) -> None:
        for tmp, _ in self._staged:
            tmp.unlink(missing_ok=True)
        self._staged = []

    def __enter__(self) -> OutputFiles:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
