"""The CUDA path: runs when a GPU is present, skipped otherwise."""

import numpy as np
import pytest
import torch

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.cuda
def test_train_and_tokens_on_cuda_match_cpu_quality(tissue):
    from napari_squint.api.squint import Squint

    opts = dict(epochs=3, batch_size=256, codebook_size=8, heads=2, latent=16, hidden=32, seed=0)
    gpu = Squint(tissue, device="cuda", **opts)
    gpu.train()
    assert next(gpu.module.parameters()).is_cuda
    a = tissue.copy()
    gpu.tokens(a)
    assert a.obs["squint_token"].nunique() > 4
    cpu = Squint(tissue, device="cpu", **opts)
    cpu.train()
    g, c = gpu.reconstruction_report(), cpu.reconstruction_report()
    assert abs(g["model_nb_nll"] - c["model_nb_nll"]) / c["model_nb_nll"] < 0.05  # bf16 does not hurt


@cuda
@pytest.mark.cuda
def test_checkpoint_from_cuda_loads_on_cpu(tmp_path, tissue):
    from napari_squint.api.squint import Squint

    m = Squint(tissue, device="cuda", epochs=1, batch_size=256, codebook_size=8, latent=16, hidden=32)
    m.train()
    loaded = Squint.load(m.save(tmp_path / "m"), device="cpu")
    assert next(loaded.module.parameters()).device.type == "cpu"


def test_device_resolution():
    from napari_squint.train.device import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="not understood"):
        resolve_device("tpu")
