"""Two gloo processes on CPU, launched by torchrun as users would."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

TORCHRUN = Path(sys.executable).with_name("torchrun")

WORKER = r'''
import json, os, sys, torch
torch.set_num_threads(1)
from safetensors.torch import save_file
from napari_squint.data.synthetic import make_tissue
from napari_squint.api.squint import Squint
from napari_squint.train import distributed as D
out = sys.argv[1]
rank, world, device = D.init()
adata = make_tissue(n_cells=2400, n_genes=40, n_sections=2, seed=1)
m = Squint(adata, epochs=2, batch_size=128, codebook_size=8, heads=2, latent=16, hidden=32, seed=0, device="cpu")
hist = D.train_ddp(m)
save_file({k: v.contiguous() for k, v in m.module.state_dict().items()}, f"{out}/rank{rank}.safetensors")
json.dump({"history": hist, "recon": m.reconstruction_report()}, open(f"{out}/rank{rank}.json", "w"), default=float)
torch.distributed.destroy_process_group()
'''


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args, tmp_path, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(TORCHRUN), "--nnodes=1", "--nproc_per_node=2", f"--master_port={_port()}", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_two_gloo_ranks_stay_identical_and_match_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    _torchrun([str(script), str(tmp_path)], tmp_path)
    a, b = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=f"{k} differs between ranks")
    assert "codebook.embed" in a and "codebook.cluster_size" in a

    # single-process training on the same data and settings
    from napari_squint.api.squint import Squint
    from napari_squint.data.synthetic import make_tissue

    adata = make_tissue(n_cells=2400, n_genes=40, n_sections=2, seed=1)
    # two ranks of 128 seed cells make one optimiser step over 256 cells: the single process gets the same
    # effective batch, hence the same number of steps per epoch
    m = Squint(adata, epochs=2, batch_size=256, codebook_size=8, heads=2, latent=16, hidden=32, seed=0, device="cpu")
    m.train()
    single = m.reconstruction_report()
    dist_rec = json.loads((tmp_path / "rank0.json").read_text())["recon"]
    # same model quality within tolerance: NB NLL of X_nbr within 5% of single-process training
    assert abs(dist_rec["model_nb_nll"] - single["model_nb_nll"]) / single["model_nb_nll"] < 0.05


@pytest.mark.slow
def test_cli_distributed_writes_checkpoint_once(tmp_path, tissue):
    from napari_squint.io.write import write_h5ad

    data = write_h5ad(tissue, tmp_path / "slide.h5ad")
    # the README's spelling: torchrun ... -m napari_squint train ... --distributed
    r = _torchrun(["-m", "napari_squint", "train", str(data), "--out", str(tmp_path / "model"), "--epochs", "1",
                   "--codebook-size", "8", "--batch-size", "256", "--distributed", "--device", "cpu"], tmp_path)
    assert r.stdout.count("rank 0 wrote") == 1
    assert (tmp_path / "model" / "model.safetensors").exists()
    meta = json.loads((tmp_path / "model" / "meta.json").read_text())
    assert meta["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]


def test_shards_are_disjoint_and_cover():
    from napari_squint.train.distributed import shard_cells

    tile = np.repeat(np.arange(10), 7)
    s0, s1, s2 = (shard_cells(tile, r, 3, seed=4) for r in range(3))
    allc = np.concatenate([s0, s1, s2])
    assert np.array_equal(np.sort(allc), np.arange(70))
    assert not set(s0) & set(s1)
    # whole tiles per rank
    for s in (s0, s1, s2):
        assert all((np.isin(np.flatnonzero(tile == t), s)).all() for t in np.unique(tile[s]))


def test_python_m_napari_squint_is_the_cli():
    r = subprocess.run([sys.executable, "-m", "napari_squint", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "train" in r.stdout and "impute" in r.stdout


def test_distributed_takes_plain_options_and_not_the_cli():
    code = ("import sys, napari_squint.train.distributed as D; "
            "print(sorted(m for m in sys.modules if m.startswith('napari_squint.cli'))); "
            "print(D.DistributedRun(out='m', options={'epochs': 2}).options)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["[]", "{'epochs': 2}"]


def test_without_torchrun_the_error_says_so(monkeypatch):
    from napari_squint.train import distributed as D

    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RuntimeError, match="needs torchrun"):
        D.init()
