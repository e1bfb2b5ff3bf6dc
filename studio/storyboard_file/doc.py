"""The storyboard document: what a parsed file holds, its field names, its bounds and its error.

`StoryboardDoc` and its parts are what `parse` makes and `importing` writes into a project; `StoryboardError` names
the file, line and field of a problem (parse and import raise it). `relative_path` is the one rule for the paths a
file names beside itself (reference pictures, shipped LoRAs): import reads them by it and export writes by it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from studio.services import validation as check


class StoryboardError(ValueError):
    """A storyboard file that cannot be used; `line` and `field` say where (both may be None for a whole file)."""

    def __init__(self, message: str, source: str = "storyboard", line: int | None = None, field: str | None = None):
        self.reason = message
        self.source = source
        self.line = line
        self.field = field
        where = source
        if line is not None:
            where += f" line {line}"
        if field:
            where += f", {field}"
        super().__init__(f"{where}: {message}")


# The document ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoryboardCharacter:
    name: str
    references: tuple[str, ...] = ()
    description: str = ""
    trigger: str | None = None  # None: the default <name-lowercased>
    adapter: str = "none"  # none | lora | embedding
    # One per reference: its caption, or None where the file gives a plain path (the caption is left as it is).
    reference_captions: tuple[str | None, ...] = ()
    # A LoRA trained by the studio shipped beside the file (relative path): used while its recorded recipe is current.
    adapter_weights: str | None = None
    line: int | None = field(default=None, compare=False)
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        captions = tuple(self.reference_captions)[: len(self.references)]
        object.__setattr__(self, "reference_captions", captions + (None,) * (len(self.references) - len(captions)))


@dataclass(frozen=True)
class StoryboardShot:
    caption: str
    frames: int
    characters: tuple[str, ...] = ()
    shot_size: str | None = None
    camera_move: str | None = None
    transition: str = "cut"
    transition_seconds: float = 0.0
    seed: int | None = None
    trim_in: int = 0
    trim_out: int = 0
    id: int | None = field(default=None, compare=False)  # the studio's shot id, written by the exporter
    line: int | None = field(default=None, compare=False)
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class StoryboardScene:
    caption: str = ""
    shots: tuple[StoryboardShot, ...] = ()
    id: int | None = field(default=None, compare=False)
    line: int | None = field(default=None, compare=False)
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class StoryboardDoc:
    title: str
    model: str
    width: int
    height: int
    fps: int
    steps: int
    guidance: float
    negative_prompt: str
    characters: tuple[StoryboardCharacter, ...] = ()
    scenes: tuple[StoryboardScene, ...] = ()
    speed: dict = field(default_factory=dict)  # speed settings over the preset's (step cache, attention, ...)
    source: str = field(default="storyboard", compare=False)
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def shot_count(self) -> int:
        return sum(len(scene.shots) for scene in self.scenes)


@dataclass(frozen=True)
class StoryboardLimits:
    """Bounds a storyboard file must keep (the settings max_shots_per_project, caption_max_chars and
    storyboard_max_depth); the defaults are the settings' defaults."""

    max_shots: int = 10_000
    max_caption_chars: int = check.MAX_CAPTION_CHARS
    max_depth: int = 16

    @classmethod
    def from_settings(cls, settings: Any) -> StoryboardLimits:
        return cls(settings.max_shots_per_project, settings.caption_max_chars, settings.storyboard_max_depth)


# The file's fields, in the order the exporter writes them --------------------------------------------------------

TOP_FIELDS = (
    "title",
    "model",
    "width",
    "height",
    "fps",
    "steps",
    "guidance",
    "negative_prompt",
    "speed",
    "characters",
    "scenes",
)
SPEED_FIELDS = (
    "step_cache",
    "cache_threshold",
    "cache_interval",
    "attention_backend",
    "compile",
    "vram_profile",
    "accelerator",
)
CHARACTER_FIELDS = ("name", "references", "description", "trigger", "adapter", "adapter_weights")
REFERENCE_FIELDS = ("path", "caption")
SCENE_FIELDS = ("id", "caption", "shots")
SHOT_FIELDS = (
    "id",
    "caption",
    "frames",
    "seconds",
    "characters",
    "size",
    "camera",
    "transition",
    "seed",
    "trim_in",
    "trim_out",
)


def relative_path(text: str) -> PurePosixPath | None:
    """`text` (either slash) as a path relative to the storyboard file's folder, or None where it could leave that
    folder: absolute, with '..', or starting with a drive (`C:`)."""
    relative = PurePosixPath(text.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or (relative.parts and ":" in relative.parts[0]):
        return None
    return relative


def file_under(base_dir: str | Path, relative: PurePosixPath) -> Path:
    """The local file a storyboard in `base_dir` names by `relative`."""
    return Path(base_dir) / Path(*relative.parts)
