"""The base class's shared behaviour, on both models: continuing training, save/load, capabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_squint.api.base import BaseModel
from napari_squint.api.cifm import Cifm, NoTokensError
from napari_squint.api.load import load_any
from napari_squint.api.squint import Squint
from napari_squint.config import CIFM_EPOCHS, SQUINT_EPOCHS

SMALL = {
    Squint: dict(batch_size=256, codebook_size=8, heads=2, latent=16, hidden=32, device="cpu", seed=0),
    Cifm: dict(hidden=16, latent=8, layers=1, batch_size=128, tile_cells=64, device="cpu", seed=0),
}
MODELS = [Squint, Cifm]


@pytest.fixture(params=MODELS, ids=lambda c: c.__name__)
def model(request, tissue):
    torch.set_num_threads(1)
    cls = request.param
    return cls(tissue, epochs=1, **SMALL[cls])


def _optimizer_steps(opt: torch.optim.Optimizer) -> int:
    return max(int(s["step"]) for s in opt.state.values())


def test_a_second_train_continues_the_epoch_count_and_the_optimiser(model):
    first = model.train()
    opt = model._optimizer
    steps = _optimizer_steps(opt)
    assert [h["epoch"] for h in first] == [1] and steps > 0
    second = model.train(epochs=2)
    assert [h["epoch"] for h in second] == [2, 3]
    assert [h["epoch"] for h in model.history] == [1, 2, 3]
    assert model._optimizer is opt  # the same optimiser, its moments kept
    assert _optimizer_steps(opt) > steps


def test_cancelling_keeps_finished_epochs_and_training_resumes_after_them(model):
    hist = model.train(epochs=2, should_stop=lambda: len(model.history) >= 1)
    assert len(hist) == 1 and model.meta["cancelled"] is True
    model.train(epochs=1)
    assert [h["epoch"] for h in model.history] == [1, 2] and model.meta["cancelled"] is False


def test_save_load_round_trip_gives_the_same_outputs(model, tissue, tmp_path):
    model.train()
    path = model.save(tmp_path / "m")
    back = type(model).load(path, device="cpu")
    same = load_any(path, device="cpu")
    assert type(same) is type(model)
    assert back.genes == model.genes and back.sections == model.sections
    assert [h["epoch"] for h in back.history] == [1]
    assert back.config.to_dict() == model.config.to_dict()
    data = model.prepare(tissue)
    masked = np.zeros(data.n_cells, dtype=bool)
    masked[::7] = True
    a = model.impute_cells(data, masked)
    b = back.impute_cells(back.prepare(tissue), masked)
    np.testing.assert_allclose(a["imputed"], b["imputed"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a["latent"], b["latent"], rtol=1e-5, atol=1e-6)


def test_loading_the_other_model_class_names_both(model, tmp_path):
    path = model.save(tmp_path / "m")
    other = Cifm if isinstance(model, Squint) else Squint
    with pytest.raises(Exception, match=f"holds a {model.kind!r} model, not {other.label}"):
        other.load(path)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_capabilities_are_consistent(cls):
    assert issubclass(cls, BaseModel)
    assert cls.default_method in cls.impute_methods
    assert cls.default_draw in cls.draws
    assert "sum" in cls.nbr_modes and "mean" in cls.substitutes
    assert cls.label and cls.kind
    assert cls.default_epochs() == {Squint: SQUINT_EPOCHS, Cifm: CIFM_EPOCHS}[cls]
    assert cls.supports_residual == ("logmean" in cls.draws)
    assert cls.perturbation in ("replace", "inject") and isinstance(cls.distributed_training, bool)


def test_has_tokens_says_whether_tokens_are_assigned(model, tissue):
    model.train()
    ad = tissue.copy()
    if model.has_tokens:
        model.tokens(ad)
        assert "squint_token" in ad.obs
    else:
        with pytest.raises(NoTokensError):
            model.tokens(ad)


def test_a_bad_option_is_refused_naming_it(tissue):
    for cls in MODELS:
        for epochs in (-2, 0):  # an untrained model is never saved as if trained
            with pytest.raises(ValueError, match=f"option epochs must be a positive integer, got {epochs}"):
                cls(tissue, epochs=epochs, **SMALL[cls])
