"""One configuration shape for both models: defaults defined once, validation naming the option and the value."""

from __future__ import annotations

import pytest

from napari_squint.config import CIFM_EPOCHS, SQUINT_EPOCHS, CifmConfig, SquintConfig


def test_config_validation_and_roundtrip():
    cfg = CifmConfig(radius=20.0, epochs=3)
    assert CifmConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.receptive_hops == 2 * cfg.layers
    for bad in (dict(radius=-1.0), dict(hidden=0), dict(mask_ratio=0.0), dict(halo_hops=-1), dict(lr=0)):
        with pytest.raises(ValueError):
            CifmConfig(**bad)
    with pytest.raises(ValueError, match="unknown CIFM option"):
        CifmConfig.from_dict({"bogus": 1})


@pytest.mark.parametrize("cls", [SquintConfig, CifmConfig])
def test_both_configs_offer_the_same_shape(cls):
    cfg = cls()
    assert cls.from_dict(cfg.to_dict()) == cfg
    assert "epochs" in cls.option_names() and "seed" in cls.option_names()
    assert cfg.update(epochs=3).epochs == 3
    with pytest.raises(ValueError, match="unknown .* option 'bogus'"):
        cfg.update(bogus=1)


@pytest.mark.parametrize("cls, option, value", [
    (SquintConfig, "epochs", -1), (SquintConfig, "k", 0), (SquintConfig, "lr", 0.0), (SquintConfig, "heads", 1.5),
    (SquintConfig, "mask_end", 1.5), (SquintConfig, "theta_init", "zeros"), (SquintConfig, "use_covariates", "no"),
    (CifmConfig, "mask_ratio", 1.0), (CifmConfig, "hidden", 0), (CifmConfig, "lr_schedule", "step"),
])
def test_a_bad_value_is_refused_naming_the_option_and_value(cls, option, value):
    with pytest.raises(ValueError, match=rf"option {option} must be .*got {value!r}"):
        cls().update(**{option: value})


def test_squint_options_are_not_cifm_options():
    """No model knows the other's option names: a SQuINT-only option is an unknown CIFM option."""
    with pytest.raises(ValueError, match="unknown CIFM option 'codebook_size'"):
        CifmConfig().update(codebook_size=16)


def test_one_default_epoch_count_per_model():
    assert SquintConfig().epochs == SQUINT_EPOCHS
    assert CifmConfig().epochs == CIFM_EPOCHS
