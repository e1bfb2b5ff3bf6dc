"""Generation on diffusers: the multi-shot MM-RoPE pipeline, its attention and layout, and the model registry.

The registry is imported eagerly (plain data, no torch); everything else loads on first use, so code that only
validates projects against presets does not pay for importing torch and diffusers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .registry import PRESETS, ModelPreset, get_preset, is_valid_frame_count

_LAZY = {
    "MultiShotAttentionState": ".attention",
    "MultiShotCrossAttnProcessor": ".attention",
    "MultiShotRotaryPosEmbed": ".attention",
    "MultiShotSelfAttnProcessor": ".attention",
    "multishot_attention": ".attention",
    "ShotLayout": ".layout",
    "HoloCinePipeline": ".holocine",
    "ModelWeightsMissingError": ".loading",
    "find_model": ".loading",
    "load_pipeline": ".loading",
    "select_device_and_dtype": ".loading",
    "MultiShotOutput": ".pipeline_multishot",
    "MultiShotPipeline": ".pipeline_multishot",
    "ShotSpec": ".pipeline_multishot",
}

if TYPE_CHECKING:
    from .attention import (
        MultiShotAttentionState,
        MultiShotCrossAttnProcessor,
        MultiShotRotaryPosEmbed,
        MultiShotSelfAttnProcessor,
        multishot_attention,
    )
    from .holocine import HoloCinePipeline
    from .layout import ShotLayout
    from .loading import ModelWeightsMissingError, find_model, load_pipeline, select_device_and_dtype
    from .pipeline_multishot import MultiShotOutput, MultiShotPipeline, ShotSpec


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "PRESETS",
    "HoloCinePipeline",
    "ModelPreset",
    "ModelWeightsMissingError",
    "MultiShotAttentionState",
    "MultiShotCrossAttnProcessor",
    "MultiShotOutput",
    "MultiShotPipeline",
    "MultiShotRotaryPosEmbed",
    "MultiShotSelfAttnProcessor",
    "ShotLayout",
    "ShotSpec",
    "find_model",
    "get_preset",
    "is_valid_frame_count",
    "load_pipeline",
    "multishot_attention",
    "select_device_and_dtype",
]
