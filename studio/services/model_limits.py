"""What the project's model cannot do that a shot's caption asks for: notes shown beside the shot (never refusals).

    notes = shot_notes(services, project_id)      # {shot_id: ["the demo model ...", ...]} for shots with a note
    lines = describe_shot_notes(services, project_id)   # "shot 3.1 (camera pans left): note: ..." for the CLI

The facts come from the model's own folder: the `limits` entry of its `training.json` (the demo model's in
`assets/demo/training.json`, measured as docs/QUALITY.md says). A model whose folder records no limits (a real Wan
model, the tiny test preset built in code) gets no notes. Two limits are understood:

- `camera_moves`: `drawn` lists the camera moves the model follows; a shot whose camera field or caption asks for a
  move with one of `move_words` that is not drawn gets the limit's note;
- `unnamed_character`: a shot whose caption names no character (none of the project's characters by name or
  trigger, none of the model's own `known_names`) gets its note: such a model draws a character only where a
  caption names it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


def model_folder(preset_name: str, model_dir: str | Path | None = None) -> Path | None:
    """The folder a preset's weights load from, when it is a folder on this machine (None for presets built in code
    and for real models not installed)."""
    from pipelines import get_preset
    from pipelines.loading import DEMO_MODEL_DIR

    preset = get_preset(preset_name)
    if preset.source == "code":
        return None
    if preset.source == "bundled":
        return DEMO_MODEL_DIR
    if model_dir is not None:
        for folder in (Path(model_dir) / preset.name, Path(model_dir)):
            if (folder / "model_index.json").is_file():
                return folder
    return None


@lru_cache(maxsize=16)
def _read_record(path: str, mtime_ns: int) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def model_record(preset_name: str, model_dir: str | Path | None = None) -> dict:
    """The model folder's `training.json` ({} when there is none): how the model was trained and measured."""
    folder = model_folder(preset_name, model_dir)
    record = folder / "training.json" if folder is not None else None
    if record is None or not record.is_file():
        return {}
    return _read_record(str(record), record.stat().st_mtime_ns)


def model_limits(preset_name: str, model_dir: str | Path | None = None) -> dict:
    limits = model_record(preset_name, model_dir).get("limits")
    return limits if isinstance(limits, dict) else {}


def _words(text: str) -> list[str]:
    return re.findall(r"<[^<>\s]+>|[\w']+", text.lower())


def caption_notes(limits: dict, caption: str, camera_move: str | None, character_words: set[str]) -> list[str]:
    """The notes for one shot: its caption, its camera field, and the words that name a project character."""
    notes = []
    words = _words(caption)
    camera = limits.get("camera_moves")
    if isinstance(camera, dict):
        drawn = {str(move).lower() for move in camera.get("drawn", [])}
        move_words = {str(word).lower() for word in camera.get("move_words", [])}
        field_asks = (
            camera_move is not None and camera_move.lower() not in drawn and set(_words(camera_move)) & move_words
        )
        if field_asks or move_words & set(words):
            notes.append(str(camera.get("note", "this model does not draw camera moves")))
    unnamed = limits.get("unnamed_character")
    if isinstance(unnamed, dict):
        names = {str(name).lower() for name in unnamed.get("known_names", [])} | character_words
        if not names & set(words):
            notes.append(str(unnamed.get("note", "this model draws a character only where the caption names it")))
    return notes


@dataclass(frozen=True)
class ShotNote:
    shot_id: int
    scene_number: int  # 1-based, as the page and the CLI count
    shot_number: int
    caption: str
    notes: tuple[str, ...]


def project_shot_notes(services, project_id: int, scenes: list | None = None) -> list[ShotNote]:
    """The live shots of a project that get a note, in film order (`scenes`: a `list_scenes` result at hand)."""
    project = services.projects.get(project_id)
    limits = model_limits(project.preset, services.settings.resolved_model_dir)
    if not limits:
        return []
    character_words = set()
    for character in services.characters.list(project_id):
        character_words |= set(_words(character.name)) | {character.trigger.lower()}
    found = []
    scenes = services.storyboard.list_scenes(project_id) if scenes is None else scenes
    for scene_number, scene in enumerate(scenes, start=1):
        for shot_number, shot in enumerate(scene.shots, start=1):
            notes = caption_notes(limits, shot.caption, shot.camera_move, character_words)
            if notes:
                found.append(ShotNote(shot.id, scene_number, shot_number, shot.caption, tuple(notes)))
    return found


def shot_notes(services, project_id: int, scenes: list | None = None) -> dict[int, list[str]]:
    return {note.shot_id: list(note.notes) for note in project_shot_notes(services, project_id, scenes)}


def describe_shot_notes(services, project_id: int) -> list[str]:
    """One line per note, for the CLI: `shot 3.1 "wide shot, tom moves up, camera pans left": note: ...`."""
    return [
        f'shot {note.scene_number}.{note.shot_number} "{note.caption}": note: {text}'
        for note in project_shot_notes(services, project_id)
        for text in note.notes
    ]
