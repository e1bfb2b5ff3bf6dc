"""Parsing a storyboard file: YAML text -> `StoryboardDoc`, checked against everything known without a database.

It checks the fields, their types, the preset's frame range and resolution multiple, and the characters named in
shots; every error names the line and the field, e.g.
`lighthouse.yaml line 17, scenes[0].shots[1].frames: frames must be 4n+1 ...`. Files are bounded by
`StoryboardLimits` (the settings max_shots_per_project, caption_max_chars, storyboard_max_depth).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.registry import PRESETS, ModelPreset
from studio.characters.records import WANTED_ADAPTER_KINDS, check_trigger, default_trigger
from studio.services import validation as check
from studio.services.errors import ServiceError
from studio.services.storyboard import CAMERA_MOVES, SHOT_SIZES, check_choice, check_transition
from studio.storyboard_file.doc import (
    CHARACTER_FIELDS,
    REFERENCE_FIELDS,
    SCENE_FIELDS,
    SHOT_FIELDS,
    SPEED_FIELDS,
    TOP_FIELDS,
    StoryboardCharacter,
    StoryboardDoc,
    StoryboardError,
    StoryboardLimits,
    StoryboardScene,
    StoryboardShot,
)
from studio.storyboard_file.yaml_lines import LINE, LINES, load_with_lines


class _Reader:
    """Walks the loaded mapping, turning every problem into a StoryboardError with line and field path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, message: str, mapping: dict | None, key: str | None, path: str) -> StoryboardError:
        line = None
        if mapping is not None:
            line = mapping.get(LINES, {}).get(key) if key is not None else None
            line = line or mapping.get(LINE)
        return StoryboardError(message, self.source, line, f"{path}.{key}" if key and path else (key or path or None))

    def mapping(self, value: Any, path: str, parent: dict | None, key: str | None, allowed: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            line = (parent or {}).get(LINES, {}).get(key) or (parent or {}).get(LINE)
            raise StoryboardError(f"expected a mapping of {', '.join(allowed)}", self.source, line, path or None)
        unknown = [k for k in value if k not in (LINES, LINE) and k not in allowed]
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
    values = {k: v for k, v in mapping.items() if k not in (LINES, LINE)}
    return reader.check(check.acceleration, mapping, next(iter(values), None), "speed", values)


def parse_storyboard(text: str, source: str = "storyboard", limits: StoryboardLimits | None = None) -> StoryboardDoc:
    """Parse and validate a storyboard file's text within `limits` (default: the settings' defaults). Raises
    StoryboardError naming the line and the field."""
    limits = limits or StoryboardLimits()
    data = load_with_lines(text, source, limits.max_depth)
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

    characters, names = _parse_characters(reader, top)

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
                    shot_map[LINE],
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
                line=scene_map[LINE],
                lines=dict(scene_map[LINES]),
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
        lines=dict(top[LINES]),
    )


def _parse_characters(reader: _Reader, top: dict) -> tuple[list[StoryboardCharacter], dict[str, int]]:
    """`characters:`, each name and trigger once; returns them and {lowercased name: its line} in file order."""
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
        names[name.lower()] = item[LINES]["name"]
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
                line=item[LINE],
                lines=dict(item[LINES]),
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
    return characters, names


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
    seen[(kind, value)] = mapping[LINES]["id"]
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
        line=shot[LINE],
        lines=dict(shot[LINES]),
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
