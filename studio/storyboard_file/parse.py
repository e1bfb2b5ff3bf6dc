"""The storyboard file (docs/ARCHITECTURE.md, "Storyboard file"): parse, import into a project, export from a project.

Parsing checks everything it can without a database (fields, types, the preset's frame range and resolution
multiple, characters named in shots) and every error names the line and the field, e.g.
`lighthouse.yaml line 17, scenes[0].shots[1].frames: frames must be 4n+1 ...`.

Import is idempotent: the project is found by title (or an explicit name), every row is compared with the file and
only what differs is written, so importing the same file twice changes nothing (not even updated_at). A shot keeps
its identity across imports by its `id:` (written by the exporter); without one, by an unchanged caption in its
scene, and else by its position among the scene's remaining shots. A changed caption updates that shot and keeps
its takes; shots missing from the file go to the bin (their takes stay there).
Reference images are added when their content is new to the character; an import never removes characters or
references (they may have been added in the UI). A reference is a path or `{path: ..., caption: ...}`: the caption
says what the picture shows, naming the character by its trigger (`close-up shot, <kai> stays still`), and is what
its adapter trains that picture on. A caption in the file replaces the reference's caption (`caption: ''` clears
it); a plain path leaves the caption as it is (so captions written in the UI survive an old file's re-import), and
the exporter writes the mapping only for captioned references, so files without captions round-trip unchanged.
A shot's characters are kept in the order the file declares them.
An import is all or nothing: it runs as one unit of work, so an error on any item leaves the project (or its
absence), its rows and the asset store exactly as they were. It is linear in the shots and keeps the write
transaction short: parsing, checking every field, reading, hashing and checking the reference pictures happen
before it; inside it, the project's scenes and shots are read in a few queries, matched in memory and written with
one `StoryboardService.apply_plan` (a fixed number of statements whatever the number of shots). Files are bounded
by `StoryboardLimits` (the settings max_shots_per_project, caption_max_chars, storyboard_max_depth).
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from yaml.composer import Composer as _Composer
from yaml.constructor import SafeConstructor as _SafeConstructor
from yaml.cyaml import CParser as _CParser
from yaml.resolver import Resolver as _Resolver

from pipelines.registry import PRESETS, ModelPreset
from studio.services import validation as check
from studio.services.assets import read_capped, sanitize_filename
from studio.services.characters import WANTED_ADAPTER_KINDS, check_trigger, default_trigger
from studio.services.errors import NotFoundError, ServiceError
from studio.services.storyboard import (
    CAMERA_MOVES,
    SHOT_SIZES,
    PlanError,
    PlanResult,
    ScenePlan,
    ShotPlan,
    check_choice,
    check_transition,
)

_LINES = "__lines__"
_LINE = "__line__"


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


# Parsing ---------------------------------------------------------------------------------------------------------


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


class _LineLoader(_Composer, _CParser, _SafeConstructor, _Resolver):
    """Safe YAML loader that records, for every mapping, its own line and the line of each value (1-based).

    libyaml reads the text into events; the nodes are composed here, in Python, so the nesting depth is counted as
    it grows (a file nested deeper than `max_depth` is refused with its line, never a RecursionError), and a list or
    mapping used as a key is refused with its line (it could not be a field name)."""

    max_depth = StoryboardLimits.max_depth

    def __init__(self, stream) -> None:
        _CParser.__init__(self, stream)
        _Composer.__init__(self)
        _SafeConstructor.__init__(self)
        _Resolver.__init__(self)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > self.max_depth and self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"lists and mappings nested deeper than {self.max_depth} levels (setting storyboard_max_depth); "
                    "a storyboard needs 6",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "list" if isinstance(key_node, yaml.SequenceNode) else "mapping"
                raise yaml.constructor.ConstructorError(
                    None, None, f"a {kind} cannot be a key; a key is a field name such as caption", key_node.start_mark
                )
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        mapping = super().construct_mapping(node, deep=True)
        mapping[_LINES] = {self.construct_object(k, deep=True): v.start_mark.line + 1 for k, v in node.value}
        mapping[_LINE] = node.start_mark.line + 1
        return mapping


_LineLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, lambda loader, node: loader.construct_mapping(node)
)

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


class _Reader:
    """Walks the loaded mapping, turning every problem into a StoryboardError with line and field path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, message: str, mapping: dict | None, key: str | None, path: str) -> StoryboardError:
        line = None
        if mapping is not None:
            line = mapping.get(_LINES, {}).get(key) if key is not None else None
            line = line or mapping.get(_LINE)
        return StoryboardError(message, self.source, line, f"{path}.{key}" if key and path else (key or path or None))

    def mapping(self, value: Any, path: str, parent: dict | None, key: str | None, allowed: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            line = (parent or {}).get(_LINES, {}).get(key) or (parent or {}).get(_LINE)
            raise StoryboardError(f"expected a mapping of {', '.join(allowed)}", self.source, line, path or None)
        unknown = [k for k in value if k not in (_LINES, _LINE) and k not in allowed]
        if unknown:
            raise self.error(f"unknown field (known: {', '.join(allowed)})", value, unknown[0], path)
        return value

    def list(self, mapping: dict, key: str, path: str) -> list:
        value = mapping.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error("expected a list", mapping, key, path)
        return value

    def text(self, mapping: dict, key: str, path: str, required: bool = False, default: str = "") -> str:
        value = mapping.get(key)
        if value is None:
            if required:
                raise self.error("is missing", mapping, key, path)
            return default
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error("expected text", mapping, key, path)
        return str(value)

    def check(self, function, mapping: dict, key: str, path: str, *args):
        try:
            return function(*args)
        except ServiceError as error:
            raise self.error(str(error), mapping, key, path) from None


def _parse_speed(reader: _Reader, top: dict) -> dict:
    """`speed:` (optional): the project's speed settings, checked as the project service checks them."""
    if top.get("speed") is None:
        return {}
    mapping = reader.mapping(top["speed"], "speed", top, "speed", SPEED_FIELDS)
    values = {k: v for k, v in mapping.items() if k not in (_LINES, _LINE)}
    return reader.check(check.acceleration, mapping, next(iter(values), None), "speed", values)


def parse_storyboard(text: str, source: str = "storyboard", limits: StoryboardLimits | None = None) -> StoryboardDoc:
    """Parse and validate a storyboard file's text within `limits` (default: the settings' defaults). Raises
    StoryboardError naming the line and the field."""
    limits = limits or StoryboardLimits()
    try:
        loader = _LineLoader(text)
        loader.max_depth = limits.max_depth
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or str(error)
        raise StoryboardError(f"not valid YAML: {problem}", source, mark.line + 1 if mark else None) from None
    except yaml.YAMLError as error:
        raise StoryboardError(f"not valid YAML: {error}", source) from None
    reader = _Reader(source)
    if not isinstance(data, dict):
        raise StoryboardError("expected a mapping with title, model, characters and scenes", source, 1)
    top = reader.mapping(data, "", None, None, TOP_FIELDS)

    title = reader.check(check.name, top, "title", "", reader.text(top, "title", "", required=True), "title", 200)
    model = reader.text(top, "model", "", default="demo")
    if model not in PRESETS:
        raise reader.error(f"unknown model preset {model!r}; use one of: {', '.join(PRESETS)}", top, "model", "")
    preset = PRESETS[model]
    width = reader.check(check.side, top, "width", "", top.get("width", preset.width), "width", preset)
    height = reader.check(check.side, top, "height", "", top.get("height", preset.height), "height", preset)
    fps = reader.check(check.integer, top, "fps", "", top.get("fps", preset.fps), "fps", 1, 120)
    steps = reader.check(
        check.integer, top, "steps", "", top.get("steps", preset.num_inference_steps), "steps", 1, 1000
    )
    guidance = reader.check(
        check.number, top, "guidance", "", top.get("guidance", preset.guidance_scale), "guidance", 0.0, 50.0
    )
    negative = reader.check(
        check.caption,
        top,
        "negative_prompt",
        "",
        reader.text(top, "negative_prompt", "", default=preset.default_negative_prompt),
        "negative prompt",
        True,
    )
    speed = _parse_speed(reader, top)

    characters = []
    names: dict[str, int] = {}
    for index, raw in enumerate(reader.list(top, "characters", "")):
        path = f"characters[{index}]"
        item = reader.mapping(raw, path, top, "characters", CHARACTER_FIELDS)
        name = reader.check(
            check.name, item, "name", path, reader.text(item, "name", path, required=True), "character name"
        )
        if name.lower() in names:
            raise reader.error(
                f"duplicate character name {name!r} (also on line {names[name.lower()]})", item, "name", path
            )
        names[name.lower()] = item[_LINES]["name"]
        trigger = item.get("trigger")
        if trigger is not None:
            reader.check(check_trigger, item, "trigger", path, str(trigger))
        token = str(trigger) if trigger is not None else default_trigger(name)
        references, captions = [], []
        for ref_index, ref in enumerate(reader.list(item, "references", path)):
            ref_path, caption = _parse_reference(reader, item, ref, path, ref_index, name, token)
            references.append(ref_path)
            captions.append(caption)
        adapter = reader.text(item, "adapter", path, default="none").strip().lower()
        if adapter not in WANTED_ADAPTER_KINDS:
            raise reader.error(f"adapter must be one of {', '.join(WANTED_ADAPTER_KINDS)}", item, "adapter", path)
        description = reader.check(
            check.caption, item, "description", path, reader.text(item, "description", path), "description", True
        )
        adapter_weights = reader.text(item, "adapter_weights", path).strip() or None
        if adapter_weights is not None and adapter != "lora":
            raise reader.error(
                "adapter_weights is a LoRA file: it needs `adapter: lora`", item, "adapter_weights", path
            )
        characters.append(
            StoryboardCharacter(
                name=name,
                references=tuple(references),
                description=description,
                trigger=str(trigger) if trigger is not None else None,
                adapter=adapter,
                reference_captions=tuple(captions),
                adapter_weights=adapter_weights,
                line=item[_LINE],
                lines=dict(item[_LINES]),
            )
        )
    triggers: dict[str, str] = {}
    for character, raw in zip(characters, reader.list(top, "characters", ""), strict=True):
        token = character.trigger or default_trigger(character.name)
        if token in triggers:
            raise reader.error(
                f"trigger {token} is also {triggers[token]}'s; give one of them another trigger",
                raw,
                "trigger" if character.trigger else "name",
                f"characters[{characters.index(character)}]",
            )
        triggers[token] = character.name

    scenes = []
    seen_ids: dict[tuple[str, int], int] = {}
    declared = {c.name.lower(): c.name for c in characters}
    shot_count = 0
    for scene_index, raw_scene in enumerate(reader.list(top, "scenes", "")):
        scene_path = f"scenes[{scene_index}]"
        scene_map = reader.mapping(raw_scene, scene_path, top, "scenes", SCENE_FIELDS)
        scene_caption = reader.check(
            check.caption,
            scene_map,
            "caption",
            scene_path,
            reader.text(scene_map, "caption", scene_path),
            "scene caption",
            True,
            limits.max_caption_chars,
        )
        scene_id = _optional_id(reader, scene_map, scene_path, seen_ids, "scene")
        shots = []
        for shot_index, raw_shot in enumerate(reader.list(scene_map, "shots", scene_path)):
            shot_path = f"{scene_path}.shots[{shot_index}]"
            shot_map = reader.mapping(raw_shot, shot_path, scene_map, "shots", SHOT_FIELDS)
            shot_count += 1
            if shot_count > limits.max_shots:
                raise StoryboardError(
                    f"more than {limits.max_shots} shots, the most a project may hold (setting "
                    "max_shots_per_project); split the film into several storyboards",
                    source,
                    shot_map[_LINE],
                    shot_path,
                )
            shots.append(
                _parse_shot(
                    reader,
                    shot_map,
                    shot_path,
                    preset,
                    fps,
                    names,
                    seen_ids,
                    declared,
                    limits.max_caption_chars,
                )
            )
        scenes.append(
            StoryboardScene(
                caption=scene_caption,
                shots=tuple(shots),
                id=scene_id,
                line=scene_map[_LINE],
                lines=dict(scene_map[_LINES]),
            )
        )
    return StoryboardDoc(
        title=title,
        model=model,
        width=width,
        height=height,
        fps=fps,
        steps=steps,
        guidance=guidance,
        negative_prompt=negative,
        characters=tuple(characters),
        scenes=tuple(scenes),
        speed=speed,
        source=source,
        lines=dict(top[_LINES]),
    )


def _parse_reference(
    reader: _Reader, item: dict, ref: Any, path: str, index: int, name: str, trigger: str
) -> tuple[str, str | None]:
    """One entry of a character's references (`item` is the character at `path`): a file path, or
    `{path: ..., caption: ...}` whose caption names the character by its trigger. Returns (path, caption or None)."""
    if isinstance(ref, str) and ref.strip():
        return ref.strip(), None
    if not isinstance(ref, dict):
        raise reader.error(
            f"references[{index}] must be a file path or {{path: ..., caption: ...}}", item, "references", path
        )
    entry_path = f"{path}.references[{index}]"
    entry = reader.mapping(ref, entry_path, item, "references", REFERENCE_FIELDS)
    value = entry.get("path")
    if not isinstance(value, str) or not value.strip():
        raise reader.error("must be a file path", entry, "path", entry_path)
    if "caption" not in entry:
        return value.strip(), None
    if not isinstance(entry["caption"], str):
        raise reader.error("expected text (use '' for no caption)", entry, "caption", entry_path)
    caption = reader.check(check.reference_caption, entry, "caption", entry_path, entry["caption"], name, trigger)
    return value.strip(), caption


def _optional_id(reader: _Reader, mapping: dict, path: str, seen: dict, kind: str) -> int | None:
    value = mapping.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise reader.error(
            "id must be a positive whole number (the exporter writes it; you may remove it)", mapping, "id", path
        )
    if (kind, value) in seen:
        raise reader.error(
            f"{kind} id {value} is used twice (also on line {seen[(kind, value)]})", mapping, "id", path
        )
    seen[(kind, value)] = mapping[_LINES]["id"]
    return value


def _seconds_to_frames(seconds: float, fps: int, preset: ModelPreset) -> int:
    wanted = seconds * fps
    candidates = range(preset.min_frames, preset.max_frames + 1, 4)
    return min(candidates, key=lambda n: (abs(n - wanted), n))


def _parse_shot(
    reader: _Reader,
    shot: dict,
    path: str,
    preset: ModelPreset,
    fps: int,
    names: dict[str, int],
    seen_ids: dict,
    declared: dict[str, str],
    max_caption_chars: int = check.MAX_CAPTION_CHARS,
) -> StoryboardShot:
    caption = reader.check(
        check.caption,
        shot,
        "caption",
        path,
        reader.text(shot, "caption", path, required=True),
        "shot caption",
        False,
        max_caption_chars,
    )
    if "frames" in shot and "seconds" in shot:
        raise reader.error("give frames or seconds, not both", shot, "seconds", path)
    if "seconds" in shot:
        seconds = reader.check(check.number, shot, "seconds", path, shot["seconds"], "seconds", 0.01, 3600.0)
        max_seconds = preset.max_frames / fps
        if seconds > max_seconds + 1e-9:
            raise reader.error(
                f"{seconds} s is longer than the {max_seconds:.2f} s ({preset.max_frames} frames at {fps} fps) "
                f"preset {preset.name} can make in one shot; split the shot",
                shot,
                "seconds",
                path,
            )
        frames = _seconds_to_frames(seconds, fps, preset)
    else:
        frames = reader.check(check.frames, shot, "frames", path, shot.get("frames", preset.default_frames), preset)
    characters = []
    for name in reader.list(shot, "characters", path):
        if not isinstance(name, str) or name.strip().lower() not in names:
            known = ", ".join(sorted(names)) or "none"
            raise reader.error(
                f"unknown character {name!r}; add it under characters (known: {known})", shot, "characters", path
            )
        characters.append(name.strip().lower())
    # Declared spelling, declaration order, once each: the order the studio keeps (and the exporter writes).
    order = {key: index for index, key in enumerate(names)}
    characters = [declared[key] for key in sorted(set(characters), key=order.__getitem__)]
    shot_size = reader.check(check_choice, shot, "size", path, shot.get("size"), SHOT_SIZES, "shot size")
    camera = reader.check(check_choice, shot, "camera", path, shot.get("camera"), CAMERA_MOVES, "camera move")
    transition = shot.get("transition")
    if transition is None:
        kind, seconds = "cut", 0.0
    elif isinstance(transition, str):
        kind, seconds = reader.check(
            check_transition, shot, "transition", path, transition, 0.5 if transition != "cut" else 0.0
        )
    elif isinstance(transition, dict):
        reader.mapping(transition, f"{path}.transition", shot, "transition", ("type", "seconds"))
        kind, seconds = reader.check(
            check_transition,
            shot,
            "transition",
            path,
            transition.get("type", "cut"),
            transition.get("seconds", 0.5 if transition.get("type", "cut") != "cut" else 0.0),
        )
    else:
        raise reader.error("expected cut | dissolve | fade or {type: ..., seconds: ...}", shot, "transition", path)
    seed = reader.check(check.seed, shot, "seed", path, shot.get("seed"))
    trim_in = reader.check(check.integer, shot, "trim_in", path, shot.get("trim_in", 0), "trim_in", 0, frames - 1)
    trim_out = reader.check(check.integer, shot, "trim_out", path, shot.get("trim_out", 0), "trim_out", 0, frames - 1)
    if trim_in + trim_out >= frames:
        raise reader.error(
            f"trim_in + trim_out must leave at least one of the {frames} frames", shot, "trim_out", path
        )
    return StoryboardShot(
        caption=caption,
        frames=frames,
        characters=tuple(characters),
        shot_size=shot_size,
        camera_move=camera,
        transition=kind,
        transition_seconds=seconds,
        seed=seed,
        trim_in=trim_in,
        trim_out=trim_out,
        id=_optional_id(reader, shot, path, seen_ids, "shot"),
        line=shot[_LINE],
        lines=dict(shot[_LINES]),
    )


def load_storyboard(path: str | Path, limits: StoryboardLimits | None = None) -> StoryboardDoc:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StoryboardError("file not found", str(file)) from None
    except UnicodeDecodeError:
        raise StoryboardError("not a UTF-8 text file", str(file)) from None
    return parse_storyboard(text, source=str(file), limits=limits)


# Import ----------------------------------------------------------------------------------------------------------


@dataclass
class ImportReport:
    project_id: int
    project_name: str
    project_created: bool = False
    project_updated: bool = False
    characters_created: int = 0
    characters_updated: int = 0
    references_added: int = 0
    reference_captions_updated: int = 0
    scenes_created: int = 0
    scenes_updated: int = 0
    scenes_binned: int = 0
    shots_created: int = 0
    shots_updated: int = 0
    shots_moved: int = 0
    shots_binned: int = 0
    reordered: int = 0
    adapters_attached: int = 0  # shipped LoRAs (adapter_weights) registered as their characters' trained LoRA
    film_shot_ids: list[int] = field(default_factory=list)  # live shots in film order after the import
    notes: list[str] = field(default_factory=list)  # what the film-maker should know (e.g. a stale shipped LoRA)

    @property
    def changed(self) -> bool:
        return any(
            getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("project_id", "project_name", "film_shot_ids", "notes")
        )

    def summary(self) -> str:
        notes = "".join(f"\nnote: {note}" for note in self.notes)
        if not self.changed:
            return f"project {self.project_name!r}: already up to date, nothing changed" + notes
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("project_id", "project_name", "film_shot_ids", "notes") or not value:
                continue
            parts.append(f.name.replace("_", " ") if value is True else f"{f.name.replace('_', ' ')}: {value}")
        return f"project {self.project_name!r}: " + ", ".join(parts) + notes

    def __str__(self) -> str:
        return self.summary()


@dataclass(frozen=True)
class _Reference:
    path: str
    data: bytes
    sha256: str
    line: int | None
    caption: str | None = None  # None: the file gives a plain path (the caption stays as it is)


def _resolve_reference(doc: StoryboardDoc, character: StoryboardCharacter, ref: str, base_dir: Path) -> Path:
    line = character.lines.get("references", character.line)
    field_path = f"characters[{doc.characters.index(character)}].references"
    relative = PurePosixPath(ref.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or (relative.parts and ":" in relative.parts[0]):
        raise StoryboardError(
            f"{ref!r}: reference paths must be relative to the storyboard file, without '..'",
            doc.source,
            line,
            field_path,
        )
    path = base_dir / Path(*relative.parts)
    if not path.is_file():
        raise StoryboardError(f"{ref!r}: file not found in {base_dir}", doc.source, line, field_path)
    return path


def _read_references(services, doc: StoryboardDoc, base_dir: Path) -> dict[str, list[_Reference]]:
    """Read and validate every reference image before anything is written."""
    result: dict[str, list[_Reference]] = {}
    for index, character in enumerate(doc.characters):
        items = []
        for ref, caption in zip(character.references, character.reference_captions, strict=True):
            path = _resolve_reference(doc, character, ref, base_dir)
            try:
                # Counted while reading: a file past the upload cap is refused without being read whole.
                data = read_capped(path, services.assets.upload_max_bytes, path.name, "(setting upload_max_bytes)")
                services.assets.validate_image(data, path.name)
            except ServiceError as error:
                raise StoryboardError(
                    str(error), doc.source, character.lines.get("references"), f"characters[{index}].references"
                ) from None
            items.append(
                _Reference(ref, data, hashlib.sha256(data).hexdigest(), character.lines.get("references"), caption)
            )
        result[character.name] = items
    return result


def _wrap(doc: StoryboardDoc, line: int | None, field_path: str):
    """Context manager turning a service refusal during import into a StoryboardError at the item's line."""

    class _Wrap:
        def __enter__(self):
            return self

        def __exit__(self, kind, error, traceback):
            if error is not None and isinstance(error, ServiceError):
                raise StoryboardError(str(error), doc.source, line, field_path) from error
            return False

    return _Wrap()


def import_storyboard(
    services,
    doc: StoryboardDoc,
    base_dir: str | Path,
    project: str | int | None = None,
    attach_adapters: bool = True,
) -> ImportReport:
    """Bring a project in line with the document (creating it if needed); see the module docstring.

    All or nothing: every service call joins one unit of work, so an error on any item (raised as a
    StoryboardError naming its line) leaves the database and the asset store exactly as they were. The files are
    read and checked before that unit of work starts, so other writers wait only for its writes."""
    base = Path(base_dir)
    references = _read_references(services, doc, base)
    with services.db.unit_of_work():
        project_view, created = _find_or_create_project(services, doc, project)
        report = ImportReport(project_id=project_view.id, project_name=project_view.name, project_created=created)
        if not created:
            _sync_project(services, doc, project_view, report)
        characters = _sync_characters(services, doc, project_view.id, references, report)
        if attach_adapters:
            _attach_shipped_adapters(services, doc, base, characters, report)
        _sync_scenes(services, doc, project_view.id, characters, report)
    return report


def _attach_shipped_adapters(services, doc: StoryboardDoc, base: Path, character_ids, report: ImportReport) -> None:
    """Each `adapter_weights:` LoRA becomes its character's trained LoRA while its recipe is current (else a note)."""
    from studio.faces.shipped import attach_shipped_lora

    for index, spec in enumerate(doc.characters):
        if spec.adapter_weights is None:
            continue
        line, field_path = spec.lines.get("adapter_weights", spec.line), f"characters[{index}].adapter_weights"
        relative = PurePosixPath(spec.adapter_weights.replace("\\", "/"))
        file = base / Path(*relative.parts)
        if relative.is_absolute() or ".." in relative.parts or (relative.parts and ":" in relative.parts[0]):
            raise StoryboardError(
                f"{spec.adapter_weights!r}: the LoRA's path must be relative to the storyboard file, without '..'",
                doc.source,
                line,
                field_path,
            )
        if not file.is_file():  # e.g. a page import, where only the pictures are uploaded: training makes one
            report.notes.append(
                f"{spec.name}: the shipped LoRA {spec.adapter_weights} is not beside the storyboard, so it is not "
                "used: a new one is trained before the first render"
            )
            continue
        with _wrap(doc, line, field_path):
            outcome = attach_shipped_lora(services, character_ids[spec.name.lower()], file)
        report.adapters_attached += int(outcome.attached)
        if outcome.note:
            report.notes.append(outcome.note)


def _find_or_create_project(services, doc: StoryboardDoc, project: str | int | None):
    name = project if project is not None else doc.title
    try:
        return services.projects.find(name), False
    except NotFoundError:
        if project is not None and isinstance(project, int):
            raise
    with _wrap(doc, doc.lines.get("title"), "title"):
        created = services.projects.create(
            str(name),
            preset=doc.model,
            width=doc.width,
            height=doc.height,
            fps=doc.fps,
            steps=doc.steps,
            guidance=doc.guidance,
            negative_prompt=doc.negative_prompt,
            acceleration=doc.speed,
        )
    return created, True


def _sync_project(services, doc: StoryboardDoc, project_view, report: ImportReport) -> None:
    wanted = {
        "preset": doc.model,
        "width": doc.width,
        "height": doc.height,
        "fps": doc.fps,
        "steps": doc.steps,
        "guidance": doc.guidance,
        "negative_prompt": doc.negative_prompt,
        "acceleration": doc.speed,
    }
    changes = {key: value for key, value in wanted.items() if getattr(project_view, key) != value}
    if changes:
        with _wrap(doc, doc.lines.get(next(iter(changes)).replace("preset", "model")), "model"):
            services.projects.update_settings(project_view.id, **changes)
        report.project_updated = True
    if project_view.in_bin:
        services.projects.restore(project_view.id)
        report.project_updated = True


def _sync_characters(services, doc, project_id: int, references, report: ImportReport) -> dict[str, int]:
    existing = {c.name.lower(): c for c in services.characters.list(project_id)}
    ids: dict[str, int] = {}
    for index, spec in enumerate(doc.characters):
        path = f"characters[{index}]"
        current = existing.get(spec.name.lower())
        with _wrap(doc, spec.line, path):
            if current is None:
                current = services.characters.create(
                    project_id, spec.name, spec.description, spec.trigger, adapter_kind=spec.adapter
                )
                report.characters_created += 1
            else:
                changes: dict[str, Any] = {}
                if current.name != spec.name:
                    changes["name"] = spec.name
                if current.description != spec.description:
                    changes["description"] = spec.description
                trigger = spec.trigger or default_trigger(spec.name)
                if current.trigger != trigger:
                    changes["trigger"] = trigger
                if current.adapter_kind != spec.adapter:
                    changes["adapter_kind"] = spec.adapter
                if changes:
                    current = services.characters.update(current.id, **changes)
                    report.characters_updated += 1
        ids[spec.name.lower()] = current.id
        known = {services.assets.get(r.asset_id).sha256: r for r in services.characters.list_references(current.id)}
        seen: set[str] = set()  # the same picture twice in the file: its first entry says what it is
        for reference in references.get(spec.name, []):
            if reference.sha256 in seen:
                continue
            seen.add(reference.sha256)
            present = known.get(reference.sha256)
            with _wrap(doc, reference.line, f"{path}.references"):
                if present is None:
                    known[reference.sha256] = services.characters.add_reference(
                        current.id, reference.path, reference.data, caption=reference.caption or ""
                    )
                    report.references_added += 1
                elif reference.caption is not None and present.caption != reference.caption:
                    known[reference.sha256] = services.characters.set_reference_caption(present.id, reference.caption)
                    report.reference_captions_updated += 1
    return ids


def _shot_fields(spec: StoryboardShot, character_ids: dict[str, int]) -> dict[str, Any]:
    return {
        "caption": spec.caption,
        "num_frames": spec.frames,
        "characters": sorted(character_ids[name.lower()] for name in spec.characters),
        "shot_size": spec.shot_size,
        "camera_move": spec.camera_move,
        "transition": spec.transition,
        "transition_seconds": spec.transition_seconds,
        "seed": spec.seed,
        "trim_in": spec.trim_in,
        "trim_out": spec.trim_out,
    }


def _sync_scenes(services, doc: StoryboardDoc, project_id: int, character_ids: dict[str, int], report) -> None:
    """Match the file's scenes and shots with the project's, then write every change with one `apply_plan`.

    Scenes match by id first, then by position among the unclaimed. Shots match by id anywhere in the project, then
    (without an id) by an unchanged caption in the matched scene, then by position among what is left: a shot
    inserted above does not shift the others onto the wrong takes. Linear in the shots (dictionaries and queues, no
    search per shot)."""
    live_scenes = services.storyboard.outline(project_id)  # [(scene id, caption, [(shot id, caption)])]
    live_by_id = {scene[0]: scene for scene in live_scenes}
    all_live_shots = {shot_id for _, _, shots in live_scenes for shot_id, _ in shots}

    matched: list[Any] = [live_by_id.get(spec.id) if spec.id is not None else None for spec in doc.scenes]
    claimed = {m[0] for m in matched if m is not None}
    free = deque(s for s in live_scenes if s[0] not in claimed)
    for index in range(len(doc.scenes)):
        if matched[index] is None and free:
            matched[index] = free.popleft()

    claimed_shots = {
        spec.id for scene in doc.scenes for spec in scene.shots if spec.id is not None and spec.id in all_live_shots
    }
    plans: list[ScenePlan] = []
    for scene_spec, current in zip(doc.scenes, matched, strict=True):
        free_shots = [s for s in (current[2] if current is not None else ()) if s[0] not in claimed_shots]
        by_caption: dict[str, deque] = {}
        for shot_id, caption in free_shots:
            by_caption.setdefault(caption, deque()).append(shot_id)
        taken: set[int] = set()
        assigned: list[int | None] = [None] * len(scene_spec.shots)
        for shot_index, spec in enumerate(scene_spec.shots):
            if spec.id is not None and spec.id in all_live_shots:
                assigned[shot_index] = spec.id
                continue
            same = by_caption.get(spec.caption)
            if same:
                assigned[shot_index] = same.popleft()
                taken.add(assigned[shot_index])
        remaining = deque(shot_id for shot_id, _ in free_shots if shot_id not in taken)
        for shot_index in range(len(scene_spec.shots)):
            if assigned[shot_index] is None and remaining:
                assigned[shot_index] = remaining.popleft()
        shots = tuple(
            ShotPlan(shot_id, _shot_fields(spec, character_ids))
            for shot_id, spec in zip(assigned, scene_spec.shots, strict=True)
        )
        plans.append(ScenePlan(current[0] if current is not None else None, scene_spec.caption, shots))
    try:
        result = services.storyboard.apply_plan(project_id, plans)
    except PlanError as error:
        scene = doc.scenes[error.scene_index]
        if error.shot_index is None:
            raise StoryboardError(str(error), doc.source, scene.line, f"scenes[{error.scene_index}]") from error
        shot = scene.shots[error.shot_index]
        raise StoryboardError(
            str(error), doc.source, shot.line, f"scenes[{error.scene_index}].shots[{error.shot_index}]"
        ) from error
    for counter in fields(PlanResult):  # the plan's counters add to the report's of the same name
        if counter.name != "film_shot_ids":
            setattr(report, counter.name, getattr(report, counter.name) + getattr(result, counter.name))
    report.film_shot_ids = result.film_shot_ids


# Export ----------------------------------------------------------------------------------------------------------


def _reference_path(original_name: str, fallback: str) -> str:
    relative = PurePosixPath((original_name or "").replace("\\", "/"))
    if original_name and not relative.is_absolute() and ".." not in relative.parts and ":" not in original_name:
        return str(relative)
    return f"refs/{sanitize_filename(fallback, 'reference.png')}"


def _reference_file_path(reference: Any, asset: Any, used_paths: dict[str, str]) -> str:
    """The path a storyboard file names `reference` by: the name it was imported or uploaded with; a second picture
    under a name already used (`used_paths`: path -> sha256, filled in film order) gets its hash added."""
    path = _reference_path(reference.original_name, reference.original_name or f"{asset.sha256[:12]}.png")
    if used_paths.get(path, asset.sha256) != asset.sha256:  # same name, other picture: keep both
        stem, dot, ext = path.rpartition(".")
        path = f"{stem}-{asset.sha256[:8]}.{ext}" if dot else f"{path}-{asset.sha256[:8]}"
    used_paths[path] = asset.sha256
    return path


def held_reference_images(services, doc: StoryboardDoc) -> dict[str, bytes]:
    """The pictures a storyboard names that its project (the one named by its title) already holds, by the path the
    file names them with, as `export_storyboard` wrote it. A page that re-imports a file it exported cannot read
    the file's folder; with these it need not ask for every picture to be uploaded again. Empty for a new project.
    """
    try:
        project = services.projects.get_by_name(doc.title)
    except NotFoundError:
        return {}
    wanted = {character.name: set(character.references) for character in doc.characters}
    held: dict[str, bytes] = {}
    used_paths: dict[str, str] = {}
    for character in services.characters.list(project.id):
        for reference in services.characters.list_references(character.id):
            asset = services.assets.get(reference.asset_id)
            path = _reference_file_path(reference, asset, used_paths)
            if path in wanted.get(character.name, ()):
                held[path] = services.assets.read_bytes(asset.id)
    return held


def export_storyboard(services, project_id: int, base_dir: str | Path | None = None) -> str:
    """The project's storyboard file as YAML text (with `id:` on scenes and shots for later re-imports).

    Reference paths are the ones the images were imported or uploaded with (uploads go under refs/). With
    `base_dir`, the reference images are also written there, so the file and its references travel together.
    """
    project = services.projects.get(project_id)
    document: dict[str, Any] = {
        "title": project.name,
        "model": project.preset,
        "width": project.width,
        "height": project.height,
        "fps": project.fps,
        "steps": project.steps,
        "guidance": project.guidance,
    }
    if project.negative_prompt:
        document["negative_prompt"] = project.negative_prompt
    speed = {k: v for k, v in project.acceleration.items() if k in SPEED_FIELDS}
    if speed:
        document["speed"] = speed
    characters = []
    used_paths: dict[str, str] = {}
    for character in services.characters.list(project_id):
        entry: dict[str, Any] = {"name": character.name}
        paths: list[Any] = []
        for reference in services.characters.list_references(character.id):
            asset = services.assets.get(reference.asset_id)
            path = _reference_file_path(reference, asset, used_paths)
            paths.append({"path": path, "caption": reference.caption} if reference.caption else path)
            if base_dir is not None:
                target = Path(base_dir) / Path(*PurePosixPath(path).parts)
                data = services.assets.read_bytes(asset.id)
                if not target.exists() or target.read_bytes() != data:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
        if paths:
            entry["references"] = paths
        if character.description:
            entry["description"] = character.description
        if character.trigger != default_trigger(character.name):
            entry["trigger"] = character.trigger
        if character.adapter_kind != "none":
            entry["adapter"] = character.adapter_kind
        characters.append(entry)
    if characters:
        document["characters"] = characters
    scenes = []
    for scene in services.storyboard.list_scenes(project_id):
        scene_entry: dict[str, Any] = {"id": scene.id, "caption": scene.caption}
        shots = []
        for shot in scene.shots:
            shot_entry: dict[str, Any] = {"id": shot.id, "caption": shot.caption, "frames": shot.num_frames}
            if shot.character_names:
                shot_entry["characters"] = list(shot.character_names)
            if shot.shot_size:
                shot_entry["size"] = shot.shot_size
            if shot.camera_move:
                shot_entry["camera"] = shot.camera_move
            if shot.transition_type != "cut":
                shot_entry["transition"] = {"type": shot.transition_type, "seconds": shot.transition_seconds}
            if shot.seed is not None:
                shot_entry["seed"] = shot.seed
            if shot.trim_in:
                shot_entry["trim_in"] = shot.trim_in
            if shot.trim_out:
                shot_entry["trim_out"] = shot.trim_out
            shots.append(shot_entry)
        scene_entry["shots"] = shots
        scenes.append(scene_entry)
    document["scenes"] = scenes
    header = "# Shotline storyboard. `id:` fields tie scenes and shots to the project; remove them to import afresh.\n"
    return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=119, default_flow_style=None)
