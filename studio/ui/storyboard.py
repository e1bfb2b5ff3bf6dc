"""Storyboard edits from the timeline, applied as one small service command each (no Gradio in here).

The page sends what the user did with ids and the structure version it saw (`timeline.structure_version`); a move
made against a stale version is refused with ConflictError, and the caller redraws the timeline from the services.
Edits of one project run one at a time (a lock per project), so two quick actions never edit copies of each other.
"""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from typing import Any

from studio.services.errors import ConflictError, NotFoundError, ValidationError
from studio.ui.timeline import structure_version

NEW_SHOT_CAPTION = "new shot"
MAX_SEED = 2**31 - 1

_project_locks: defaultdict[int, threading.Lock] = defaultdict(threading.Lock)


def project_lock(project_id: int) -> threading.Lock:
    return _project_locks[int(project_id)]


def new_seed() -> int:
    return random.SystemRandom().randrange(0, MAX_SEED)


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
                "generation", [enqueue_generate_scene(services, project_id, _int(payload, "scene_id"))], services
            ), None
        if op == "regenerate":
            return queued_message(
                "regeneration", [enqueue_regenerate(services, project_id, _int(payload, "shot_id"))], services
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


def refuse_uncaptioned(scenes: list[Any], shot_ids: set[int]) -> None:
    """A shot still captioned `NEW_SHOT_CAPTION` (what a card starts with) would be generated from those two words;
    refuse, naming the shots as the cards number them."""
    film = [shot for scene in scenes for shot in scene.shots]
    blank = [f"#{n}" for n, shot in enumerate(film, 1) if shot.id in shot_ids and shot.caption == NEW_SHOT_CAPTION]
    if blank:
        raise ValidationError(
            f"shot{'s' if len(blank) > 1 else ''} {', '.join(blank)} still "
            f"{'have' if len(blank) > 1 else 'has'} the caption “{NEW_SHOT_CAPTION}” a new card starts with; "
            "write what the camera sees first"
        )


def queued_message(what: str, queued: list[tuple[Any, bool]], services: Any = None) -> str:
    """ "generation queued (job 7)", or "already queued for those shots (job 7): not queued twice" for a request
    that joined a pending job; with `services`, how long the trainings they wait for will take."""
    new = [job for job, joined in queued if not joined]
    old = [job for job, joined in queued if joined]
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
    long each training will take (`studio.faces.service.training_estimate`), said before it starts."""
    waiting = sorted({i for job in jobs for i in (job.payload or {}).get("after_jobs") or []})
    if not waiting:
        return ""
    ids = ", ".join(map(str, waiting))
    text = f", after the adapter training it needs (job{'s' if len(waiting) > 1 else ''} {ids})"
    if services is not None:
        from studio.characters.adapters import training_estimate

        text += ": " + "; ".join(training_estimate(services, services.jobs.get(i)).sentence() for i in waiting)
    return text


def queue_wanted_adapters(services: Any, project_id: int, shots: list[Any]) -> list[int]:
    """On-demand adapters, as `python -m studio render` trains them: the characters of `shots` whose wanted adapter
    (LoRA or embedding) is missing or stale get its training queued, ahead of the generation (higher priority); the
    ids of those jobs, for the generation's `after_jobs`."""
    from studio.characters.adapters import ensure_adapters

    character_ids = {c for shot in shots for c in shot.character_ids}
    return [job.id for job in ensure_adapters(services, project_id, character_ids)] if character_ids else []


def enqueue_generate_scene(
    services: Any, project_id: int, scene_id: int, shot_ids: list[int] | None = None
) -> tuple[Any, bool]:
    """The generation job of a scene (of `shot_ids` only, when given) and whether it was already queued or running
    for those shots (joined, not queued twice: `JobService.enqueue_generation`)."""
    scenes = services.storyboard.list_scenes(project_id)
    scene = next((s for s in scenes if s.id == scene_id), None)
    if scene is None:
        raise NotFoundError("that scene is not in the open project")
    if not scene.shots:
        raise ValidationError("the scene has no shots; add a shot before generating")
    # the shots generated; the others join as context with their takes, whatever their captions say
    targets = set(shot_ids) if shot_ids else {shot.id for shot in scene.shots}
    refuse_uncaptioned(scenes, targets)
    payload: dict[str, Any] = {"project_id": project_id, "scene_id": scene_id}
    if shot_ids:
        payload["shot_ids"] = [int(i) for i in shot_ids]
    training = queue_wanted_adapters(services, project_id, [shot for shot in scene.shots if shot.id in targets])
    if training:
        payload["after_jobs"] = training
    return services.jobs.enqueue_generation("generate_scene", payload, sorted(targets), project_id)


def enqueue_generate_selected(services: Any, project_id: int, shot_ids: list[int]) -> list[tuple[Any, bool]]:
    """One job per scene that holds selected shots; shots of one scene are generated together (each with whether it
    joined a pending one)."""
    if not shot_ids:
        raise ValidationError("select shots first (the checkbox on each card)")
    wanted = set(int(i) for i in shot_ids)
    jobs = []
    for scene in services.storyboard.list_scenes(project_id):
        chosen = [shot.id for shot in scene.shots if shot.id in wanted]
        if chosen:
            jobs.append(enqueue_generate_scene(services, project_id, scene.id, chosen))
    if not jobs:
        raise NotFoundError("the selected shots are gone; select again")
    return jobs


def enqueue_regenerate(
    services: Any, project_id: int, shot_id: int, seed: int | None = None, caption: str | None = None
) -> tuple[Any, bool]:
    """A new take of one shot; its neighbours keep their takes. A new caption is saved on the shot first. Returns the
    job and whether it was already queued or running for this shot (joined)."""
    _shot_in_project(services, project_id, shot_id)
    if caption is not None:
        # a regeneration refused (its shot is being generated) must not have changed the caption meanwhile
        services.jobs.pending_generation("regenerate_shot", [shot_id], project_id)
        services.storyboard.update_shot(shot_id, caption=caption)
    scenes = services.storyboard.list_scenes(project_id)
    refuse_uncaptioned(scenes, {shot_id})
    payload = {"project_id": project_id, "shot_id": shot_id, "seed": new_seed() if seed is None else int(seed)}
    shot = [x for scene in scenes for x in scene.shots if x.id == shot_id]
    training = queue_wanted_adapters(services, project_id, shot)
    if training:
        payload["after_jobs"] = training
    return services.jobs.enqueue_generation("regenerate_shot", payload, [shot_id], project_id)
