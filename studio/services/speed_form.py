"""The project's speed settings as the settings panel shows them, and back (plain values, for the UI; no gradio)."""

from __future__ import annotations

import math
from typing import Any

from pipelines.acceleration import ATTENTION_BACKENDS, STEP_CACHES, VRAM_PROFILES, Acceleration

STEP_CACHE_CHOICES = list(STEP_CACHES)
ATTENTION_CHOICES = list(ATTENTION_BACKENDS)
VRAM_CHOICES = list(VRAM_PROFILES)
SPEED_HELP = (
    "Step cache reuses the model's work between steps (first-block / magcache: a threshold, higher is faster; "
    "taylorseer: a full pass every N steps). Attention backends other than native, compile, group offload and "
    "fp8 need a CUDA GPU with the package installed; a job the worker cannot run fails with what to install. "
    "Accelerator: a step-distillation LoRA (lightx2v, CausVid) by file name in the models folder's accelerators/, "
    "applied to every shot; setting it sets 4 steps at guidance 1."
)


def form_values(acceleration: dict[str, Any]) -> tuple:
    """(step cache, threshold, interval, attention backend, VRAM profile, compile, accelerator) of stored settings."""
    settings = Acceleration().merged({k: v for k, v in (acceleration or {}).items() if k != "accelerator"})
    return (
        settings.step_cache,
        settings.cache_threshold,
        settings.cache_interval,
        settings.attention_backend,
        settings.vram_profile,
        settings.compile,
        (acceleration or {}).get("accelerator") or "",
    )


def _blank(value) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def settings_from_form(
    step_cache, threshold, interval, backend, vram_profile, compile_blocks, accelerator="", keep=None
) -> dict:
    """What `projects.update_settings(acceleration=...)` takes; blank numbers mean the cache's defaults; keys of
    `keep` the form does not show are kept."""
    values = {
        "step_cache": step_cache or "off",
        "cache_threshold": None if _blank(threshold) else float(threshold),
        "cache_interval": None if _blank(interval) else int(interval),
        "attention_backend": backend or "native",
        "vram_profile": vram_profile or "default",
        "compile": bool(compile_blocks),
        "accelerator": (accelerator or "").strip() or None,
    }
    kept = {k: v for k, v in (keep or {}).items() if k not in values}
    return {**kept, **values}
