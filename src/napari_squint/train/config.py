"""The configuration dataclasses, defined in :mod:`napari_squint.config` (a layer below models and train).

Kept so that ``from napari_squint.train.config import SquintConfig`` keeps working.
"""

from __future__ import annotations

from napari_squint.config import GraphConfig, ModelConfig, SquintConfig, TrainConfig

__all__ = ["GraphConfig", "ModelConfig", "SquintConfig", "TrainConfig"]
