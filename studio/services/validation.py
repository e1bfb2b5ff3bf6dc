"""Rules shared by the services. Each check raises ValidationError with a message that says what to change."""

from __future__ import annotations

import math
import re

from pipelines.registry import ModelPreset, get_preset, is_valid_frame_count
from studio.services.errors import ValidationError

MAX_CAPTION_CHARS = 2000
MAX_NAME_CHARS = 100
MAX_PROJECT_NAME_CHARS = 200
MAX_SEED = 2**63 - 1
MAX_STEPS = 1000  # denoising steps a project or a generation may ask for
MAX_ID = 2**63 - 1  # the largest row id (a 64-bit key)
MAX_SIDE = 4096


def preset_of(name: str) -> ModelPreset:
    try:
        return get_preset(name)
    except ValueError as error:
        raise ValidationError(str(error)) from None


def caption(value: object, what: str = "caption", allow_empty: bool = False, limit: int = MAX_CAPTION_CHARS) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"the {what} must be text")
    text = value.strip()
    if not text and not allow_empty:
        raise ValidationError(f"the {what} is empty; describe what the camera sees")
    if len(text) > limit:
        raise ValidationError(f"the {what} has {len(text)} characters; shorten it to {limit} or fewer")
    return text


def reference_caption(value: object, character: str, trigger: str) -> str:
    """A reference picture's caption: optional, and when given it names the character by its trigger, the way
    storyboard captions do, so an adapter learns the character in that place."""
    text = caption(value if value is not None else "", "reference caption", allow_empty=True)
    if text and trigger not in text:
        raise ValidationError(
            f"the reference caption must name {character} by the trigger {trigger}, "
            f"e.g. 'close-up shot, {trigger} stays still, camera is static'"
        )
    return text


def name(value: object, what: str, limit: int = MAX_NAME_CHARS) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"the {what} is empty; give it a name")
    text = " ".join(value.split())
    if len(text) > limit:
        raise ValidationError(f"the {what} has {len(text)} characters; shorten it to {limit} or fewer")
    return text


def integer(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{what} must be a whole number between {low} and {high}, got {value!r}")
    if not low <= value <= high:
        raise ValidationError(f"{what} must be between {low} and {high}, got {value}")
    return value


def number(value: object, what: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValidationError(f"{what} must be a number between {low} and {high}, got {value!r}")
    if not low <= value <= high:
        raise ValidationError(f"{what} must be between {low} and {high}, got {value}")
    return float(value)


def frames(value: object, preset: ModelPreset) -> int:
    """4n+1 frames within the preset's range (Wan's causal VAE: first frame alone, then 4 frames per latent)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (preset.min_frames <= value <= preset.max_frames and is_valid_frame_count(value))
    ):
        hint = ""
        if isinstance(value, int) and not isinstance(value, bool):
            nearest = min(range(preset.min_frames, preset.max_frames + 1, 4), key=lambda n: abs(n - value))
            hint = f" (nearest: {nearest})"
        raise ValidationError(
            f"frames must be 4n+1 between {preset.min_frames} and {preset.max_frames} for preset {preset.name}, "
            f"got {value!r}{hint}"
        )
    return value


def side(value: object, what: str, preset: ModelPreset) -> int:
    multiple = preset.resolution_multiple
    size = integer(value, what, multiple, MAX_SIDE)
    if size % multiple:
        low = size - size % multiple
        raise ValidationError(
            f"{what} must be a multiple of {multiple} for preset {preset.name} (e.g. {max(low, multiple)} or "
            f"{low + multiple}), got {size}"
        )
    return size


def seed(value: object) -> int | None:
    if value is None:
        return None
    return integer(value, "seed", 0, MAX_SEED)


def acceleration(value: object) -> dict:
    """A project's speed settings (`pipelines.acceleration.Acceleration` fields, any subset, plus `accelerator`: the
    name of a step-distillation LoRA in `<models>/accelerators/`, or None), checked and without the keys left at
    their defaults. What this machine can run is checked
    when a job runs, by the worker that runs it."""
    from pipelines.acceleration import Acceleration

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"speed settings must be a mapping, got {type(value).__name__}")
    values = dict(value)
    accelerator = values.pop("accelerator", None)
    if accelerator == "":
        accelerator = None
    if accelerator is not None and (
        not isinstance(accelerator, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", accelerator)
    ):
        raise ValidationError(
            f"accelerator must be the name of a LoRA file in the models folder's accelerators/ (without "
            f".safetensors, letters, digits, '.', '_', '-'), got {accelerator!r}"
        )
    try:
        settings = Acceleration.from_dict(values)
    except ValueError as error:
        raise ValidationError(str(error)) from None
    defaults = Acceleration().to_dict()
    out = {key: v for key, v in settings.to_dict().items() if v != defaults[key]}
    if accelerator is not None:
        out["accelerator"] = accelerator
    return out
