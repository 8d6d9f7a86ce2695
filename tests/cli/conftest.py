"""Bad-input fixtures: a tiny slide, a 1-epoch model and polygons on disk, and a runner that checks the rules
every failure must follow (exit code 2, one line naming the fault, no traceback, inputs unchanged)."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

TINY = dict(epochs=1, batch_size=256, codebook_size=8, heads=2, latent=16, hidden=32, seed=0, kmeans_cells=2000)


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (files or folders)."""
    out = {}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@dataclass
class Run:
    code: int
    out: str
    err: str


def run_cli(argv, capsys) -> Run:
    from napari_squint.cli.main import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return Run(code, cap.out, cap.err)


def assert_clean_error(res: Run, *needles: str) -> None:
    """Exit 2, one ``error:`` line naming every needle, no traceback."""
    assert res.code == 2, (res.code, res.err)
    assert "Traceback" not in res.err
    lines = [line for line in res.err.splitlines() if "error:" in line]
    assert len(lines) == 1, res.err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory):
    """``root/in``: slide.h5ad (2 sections), model/ (SQuINT, 1 epoch), patch.geojson (a box in section_0)."""
    from shapely.geometry import box

    from napari_squint.api.squint import Squint
    from napari_squint.data.synthetic import make_tissue
    from napari_squint.io.geojson import Region, write_polygons

    root = tmp_path_factory.mktemp("bad_inputs") / "in"
    root.mkdir()
    adata = make_tissue(n_cells=600, n_genes=30, n_sections=2, seed=5)
    adata.obs["condition"] = np.where(np.arange(adata.n_obs) % 2, "a", "b")
    data = root / "slide.h5ad"
    adata.write_h5ad(data)
    model = Squint(adata, **TINY)
    model.train()
    model.save(root / "model")
    xy = np.asarray(adata.obsm["spatial"])[(adata.obs["section"] == "section_0").to_numpy()]
    mid, w = np.median(xy, axis=0), 0.12 * (xy.max(0) - xy.min(0))
    poly = write_polygons([Region("section_0", box(*(mid - w), *(mid + w)), "roi")], root / "patch.geojson")
    return {"root": root, "data": data, "model": root / "model", "polygons": poly, "adata": adata}


@pytest.fixture
def work(tmp_path, bad_inputs):
    """A private copy of the inputs (tests may damage them) in ``tmp_path/in``."""
    dst = tmp_path / "in"
    shutil.copytree(bad_inputs["root"], dst)
    return {"root": dst, "data": dst / "slide.h5ad", "model": dst / "model", "polygons": dst / "patch.geojson",
            "adata": bad_inputs["adata"], "tmp": tmp_path}


@pytest.fixture
def h(capsys):
    """The helpers above, with the CLI runner bound to ``capsys``."""
    from types import SimpleNamespace

    return SimpleNamespace(run=lambda argv: run_cli(argv, capsys), clean=assert_clean_error, snapshot=snapshot)
