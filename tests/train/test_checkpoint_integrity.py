"""Model folders are checked before use: checksum, finite weights, config types and sizes, config/genes/meta vs
weights; every failure is a CheckpointError naming the file (the Python API side of issue 13)."""

from __future__ import annotations

import json
import shutil

import pytest

from napari_squint.train.checkpoint import CHECKSUM_KEY, CheckpointError, sha256_file


@pytest.fixture(scope="module")
def saved(tmp_path_factory, trained_tiny):
    return trained_tiny.save(tmp_path_factory.mktemp("ckpt") / "model")


def _edit_json(path, fn):
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def _flip(m):
    f = m / "model.safetensors"
    b = bytearray(f.read_bytes())
    b[-50] ^= 0xFF
    f.write_bytes(bytes(b))


def _truncate_old(m):
    f = m / "model.safetensors"
    f.write_bytes(f.read_bytes()[:64])
    _edit_json(m / "meta.json", lambda d: d.pop(CHECKSUM_KEY))


def _nan_old(m):
    import torch
    from safetensors.torch import load_file, save_file

    f = m / "model.safetensors"
    state = load_file(str(f))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key][0] = float("nan")
    save_file(state, str(f))
    _edit_json(m / "meta.json", lambda d: d.pop(CHECKSUM_KEY))
    assert torch.isnan(load_file(str(f))[key]).any()


CASES = {
    "flipped bytes": (_flip, "model.safetensors", "SHA-256"),
    "truncated, no checksum": (_truncate_old, "model.safetensors", "unreadable safetensors"),
    "NaN weights, no checksum": (_nan_old, "model.safetensors", "NaN"),
    "config hidden a string": (lambda m: _edit_json(m / "config.json", lambda d: d["model"].update(hidden="x")),
                               "config.json", "model.hidden"),
    "config hidden=1e9": (lambda m: _edit_json(m / "config.json", lambda d: d["model"].update(hidden=10**9)),
                          "config.json", "out of range"),
    "config not JSON": (lambda m: (m / "config.json").write_text("{"), "config.json", "not valid JSON"),
    "config k=100000": (lambda m: _edit_json(m / "config.json", lambda d: d["graph"].update(k=100000)),
                        "config.json", "k=100000"),
    "config disagrees": (lambda m: _edit_json(m / "config.json", lambda d: d["model"].update(hidden=40)),
                         "config.json", "shape"),
    "config value out of its range": (lambda m: _edit_json(m / "config.json",
                                                           lambda d: d["train"].update(mask_start=-3.0)),
                                      "config.json", "mask_start"),
    "genes.txt short": (lambda m: (m / "genes.txt").write_text("g1\ng2\n"), "genes.txt", "model.safetensors"),
    "meta.json sections": (lambda m: _edit_json(m / "meta.json", lambda d: d.update(sections=["a"] * 9)),
                           "meta.json", "model.safetensors"),
    "meta.json no sections": (lambda m: _edit_json(m / "meta.json", lambda d: d.pop("sections")),
                              "meta.json", "sections"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_model_folder_is_refused_naming_the_file(case, saved, tmp_path):
    from napari_squint.api.squint import Squint

    m = tmp_path / "m"
    shutil.copytree(saved, m)
    damage, file, what = CASES[case]
    damage(m)
    with pytest.warns(UserWarning) if "no checksum" in case else _nullcontext():
        with pytest.raises(CheckpointError) as err:
            Squint.load(m)
    assert file in str(err.value) and what in str(err.value), str(err.value)


def test_saved_folder_records_the_weights_checksum(saved):
    meta = json.loads((saved / "meta.json").read_text())
    assert meta[CHECKSUM_KEY] == sha256_file(saved / "model.safetensors")


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()
