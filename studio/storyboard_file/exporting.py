"""Exporting a storyboard: a project as storyboard YAML (with `id:` on scenes and shots), and the pictures a file
names that its project already holds (`held_reference_images`, for a page that re-imports a file it exported)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from studio.characters.records import default_trigger
from studio.services.assets import sanitize_filename
from studio.services.errors import NotFoundError
from studio.storyboard_file.doc import SPEED_FIELDS, StoryboardDoc, file_under, relative_path


def _reference_path(original_name: str, fallback: str) -> str:
    """`original_name` where an import could read it back (relative, no colon at all), else `fallback` under refs/."""
    relative = relative_path(original_name) if original_name and ":" not in original_name else None
    if relative is not None:
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
                target = file_under(base_dir, PurePosixPath(path))
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
