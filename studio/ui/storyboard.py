"""Storyboard edits from the timeline, applied as one small service command each (no Gradio in here).

The page sends what the user did with ids and the structure version it saw (`timeline.structure_version`); a move
made against a stale version is refused with ConflictError, and the caller redraws the timeline from the services.
Edits of one project run one at a time (a lock per project), so two quick actions never edit copies of each other.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

from studio.services import generations
from studio.services.errors import ConflictError, NotFoundError, ValidationError
from studio.services.generations import NEW_SHOT_CAPTION
from studio.services.job_specs import spec_of
from studio.ui.timeline import structure_version

_project_locks: defaultdict[int, threading.Lock] = defaultdict(threading.Lock)


def project_lock(project_id: int) -> threading.Lock:
    return _project_locks[int(project_id)]


def _int(payload: dict[str, Any], key: str) -> int:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValidationError(f"the page sent no {key}; reload the page")
    try:
        return int(value)
    except ValueError:
        raise ValidationError(f"the page sent a bad {key} ({value!r}); reload the page") from None


def _shot_in_project(services: Any, project_id: int, shot_id: int) -> Any:
    for scene in services.storyboard.list_scenes(project_id):
        for shot in scene.shots:
            if shot.id == shot_id:
                return scene, shot
    raise NotFoundError(f"shot {shot_id} is no longer in this project's storyboard; the page shows the current one")


def move_shot(
    services: Any, project_id: int, shot_id: int, to_scene_id: int, position: int, version: str
) -> tuple[str, list[Any] | None]:
    """Put `shot_id` at `position` (0-based, among the other shots) of scene `to_scene_id`.

    Returns the message and None (the caller reads the scenes after the move).
    """
    scenes = services.storyboard.list_scenes(project_id)
    if version != structure_version(scenes):
        raise ConflictError("the storyboard changed since the page drew it (another tab or action); move it again")
    source = next((scene for scene in scenes if any(shot.id == shot_id for shot in scene.shots)), None)
    target = next((scene for scene in scenes if scene.id == to_scene_id), None)
    if source is None or target is None:
        raise NotFoundError("that shot or scene is gone; the page now shows the current storyboard")
    if source.id == target.id:
        order = [shot.id for shot in source.shots if shot.id != shot_id]
        position = max(0, min(position, len(order)))
        order.insert(position, shot_id)
        if order == [shot.id for shot in source.shots]:
            return "already there", scenes
        # One move, not a reorder of the whole scene: the service renumbers in one pass (~10 ms at 60 shots,
        # where reorder_shots with the full id list took ~60 ms).
        services.storyboard.move_shot(shot_id, source.id, position)
        return f"moved shot to position {position + 1}", None
    position = max(0, min(position, len(target.shots)))
    services.storyboard.move_shot(shot_id, target.id, position)
    return f"moved shot to scene {target.position + 1}, position {position + 1}", None


def move_scene(services: Any, project_id: int, scene_id: int, position: int, version: str) -> tuple[str, None]:
    """Put scene `scene_id` at `position` (0-based, among the other live scenes) of the film; its shots and their
    takes go with it. A move against a stale structure version is refused like a shot move."""
    scenes = services.storyboard.list_scenes(project_id)
    if version != structure_version(scenes):
        raise ConflictError("the storyboard changed since the page drew it (another tab or action); move it again")
    current = [scene.id for scene in scenes]
    if scene_id not in current:
        raise NotFoundError("that scene is gone; the page now shows the current storyboard")
    order = [i for i in current if i != scene_id]
    position = max(0, min(position, len(order)))
    order.insert(position, scene_id)
    if order == current:
        return "already there", None
    services.storyboard.reorder_scenes(project_id, order)
    return f"moved scene to position {position + 1}", None


def apply_edit(services: Any, project_id: int | None, payload: dict[str, Any]) -> tuple[str, list[Any] | None]:
    """Apply one timeline action. Returns a short message for the status line and, when the action already loaded
    them, the project's scenes as they are now (else None). Raises ServiceError on refusal."""
    message, scenes = _apply_edit(services, project_id, payload)
    return message, scenes


def _apply_edit(services: Any, project_id: int | None, payload: dict[str, Any]) -> tuple[str, list[Any] | None]:
    if project_id is None:
        raise ValidationError("open a project first")
    if payload.get("project_id") not in (None, project_id):
        raise ConflictError("this page shows another project than the one open; the page now shows the open one")
    op = payload.get("op")
    with project_lock(project_id):
        if op == "caption":
            shot_id, caption = _int(payload, "shot_id"), str(payload.get("caption", ""))
            refuse_caption_clash(services, shot_id, caption, payload.get("was"))
            services.storyboard.update_shot(shot_id, caption=caption)
            return "caption saved", None
        if op == "scene_caption":
            services.storyboard.update_scene(_int(payload, "scene_id"), caption=str(payload.get("caption", "")))
            return "scene caption saved", None
        if op == "move":
            return move_shot(
                services,
                project_id,
                _int(payload, "shot_id"),
                _int(payload, "to_scene_id"),
                _int(payload, "position"),
                str(payload.get("version", "")),
            )
        if op == "move_scene":
            return move_scene(
                services,
                project_id,
                _int(payload, "scene_id"),
                _int(payload, "position"),
                str(payload.get("version", "")),
            )
        if op == "add_shot":
            services.storyboard.add_shot(_int(payload, "scene_id"), NEW_SHOT_CAPTION)
            return "shot added", None
        if op == "insert":
            scene, shot = _shot_in_project(services, project_id, _int(payload, "shot_id"))
            services.storyboard.add_shot(scene.id, NEW_SHOT_CAPTION, position=shot.position + 1)
            return "shot inserted", None
        if op == "duplicate":
            _shot_in_project(services, project_id, _int(payload, "shot_id"))
            services.storyboard.duplicate_shot(_int(payload, "shot_id"))
            return "shot duplicated", None
        if op == "delete":
            _shot_in_project(services, project_id, _int(payload, "shot_id"))
            services.storyboard.delete_shot(_int(payload, "shot_id"))
            return "shot moved to the bin (Restore puts it back)", None
        if op == "restore":
            services.storyboard.restore_shot(_int(payload, "shot_id"))
            return "shot restored", None
        if op == "restore_scene":
            services.storyboard.restore_scene(_int(payload, "scene_id"))
            return "scene restored", None
        if op == "empty_bin":
            services.storyboard.empty_bin(project_id)
            return "bin emptied", None
        if op == "delete_scene":
            services.storyboard.delete_scene(_int(payload, "scene_id"))
            return "scene moved to the bin", None
        if op == "generate_scene":
            return queued_message(
                "generation", [generations.generate_scene(services, project_id, _int(payload, "scene_id"))], services
            ), None
        if op == "regenerate":
            return queued_message(
                "regeneration", [generations.regenerate_shot(services, project_id, _int(payload, "shot_id"))], services
            ), None
    raise ValidationError(f"unknown timeline action {op!r}; reload the page")


def refuse_caption_clash(services: Any, shot_id: int, caption: str, was: Any) -> None:
    """A card's caption edit made against a caption another tab (or the shot panel) has changed since the card showed
    it is refused, quoting the caption as it now is; the card keeps the text typed there, and committing it again
    (its `was` now the current caption) saves it over the other."""
    if not isinstance(was, str):
        return
    current = services.storyboard.get_shot(shot_id).caption
    if current not in (was, caption):
        raise ConflictError(
            f"not saved: the caption changed elsewhere (another tab or the shot panel) since this card showed it; it "
            f"now reads “{current}”. Your text is still on the card: press Enter to save it over that one, or "
            "Escape to keep that one"
        )


def queued_message(what: str, queued: list[Any], services: Any = None) -> str:
    """ "generation queued (job 7)", or "already queued for those shots (job 7): not queued twice" for a request
    that joined a pending job (`JobView.joined`); with `services`, how long the trainings they wait for will
    take."""
    new = [job for job in queued if not job.joined]
    old = [job for job in queued if job.joined]
    parts = []
    if new:
        parts.append(
            f"{what} queued (job {', '.join(str(job.id) for job in new)}){after_training(*new, services=services)}"
        )
    if old:
        ids = ", ".join(str(job.id) for job in old)
        parts.append(f"already queued for those shots (job {ids}): not queued twice")
    return "; ".join(parts)


def after_training(*jobs: Any, services: Any = None) -> str:
    """What a queued-generation message adds when the jobs wait for adapter trainings; with `services`, also how
    long each training will take (`studio.characters.adapters.training_estimate`), said before it starts."""
    waiting = sorted({i for job in jobs for i in spec_of(job).after_jobs})
    if not waiting:
        return ""
    ids = ", ".join(map(str, waiting))
    text = f", after the adapter training it needs (job{'s' if len(waiting) > 1 else ''} {ids})"
    if services is not None:
        from studio.characters.adapters import training_estimate

        text += ": " + "; ".join(training_estimate(services, services.jobs.get(i)).sentence() for i in waiting)
    return text
