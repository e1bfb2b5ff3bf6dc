"""Generation requests: what the page's Generate and Regenerate buttons and `python -m studio render` ask for.

Each function checks the request against the storyboard, queues the trainings of the adapters its shots want and
lack (on demand: missing or stale, ahead of the generation), and queues the generation behind them
(`after_jobs`) through `JobService.enqueue`. A request that matches a pending generation joins it (the answer's
`joined` is set); one that overlaps a pending generation of other shots is refused (ConflictError).
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from studio.services.errors import NotFoundError, ValidationError
from studio.services.job_specs import MAX_GENERATION_SEED, GenerateScene, RegenerateShot
from studio.services.views import JobView

NEW_SHOT_CAPTION = "new shot"  # what a new card is captioned until the film-maker writes what the camera sees


def new_seed() -> int:
    return random.SystemRandom().randrange(0, MAX_GENERATION_SEED)


def refuse_uncaptioned(scenes: list[Any], shot_ids: set[int]) -> None:
    """A shot still captioned `NEW_SHOT_CAPTION` would be generated from those two words; refuse, naming the shots
    as the cards number them."""
    film = [shot for scene in scenes for shot in scene.shots]
    blank = [f"#{n}" for n, shot in enumerate(film, 1) if shot.id in shot_ids and shot.caption == NEW_SHOT_CAPTION]
    if blank:
        raise ValidationError(
            f"shot{'s' if len(blank) > 1 else ''} {', '.join(blank)} still "
            f"{'have' if len(blank) > 1 else 'has'} the caption “{NEW_SHOT_CAPTION}” a new card starts with; "
            "write what the camera sees first"
        )


def train_missing_adapters(services: Any, project_id: int, shots: list[Any] | None = None) -> list[JobView]:
    """The trainings (queued now or already pending) of the adapters the characters of `shots` (every character of
    the project when None) want and lack, missing or stale; characters without references are left out (they
    render by name)."""
    from studio.characters.adapters import ensure_adapters

    if shots is None:
        return ensure_adapters(services, project_id)
    character_ids = {c for shot in shots for c in shot.character_ids}
    return ensure_adapters(services, project_id, character_ids) if character_ids else []


def generate_scene(
    services: Any,
    project_id: int,
    scene_id: int,
    shot_ids: list[int] | None = None,
    only_missing: bool = False,
    priority: int = 0,
    train_adapters: bool = True,
) -> JobView:
    """Takes for a scene: of `shot_ids` only when given, of the shots without a take with `only_missing`, else of
    every shot. The scene's other shots join as context with their takes, whatever their captions say. A caller
    that trained the project's missing adapters already (`render`, a stage before) passes `train_adapters=False`."""
    scenes = services.storyboard.list_scenes(project_id)
    return _generate_scene(services, project_id, scenes, scene_id, shot_ids, only_missing, priority, train_adapters)


def _generate_scene(
    services: Any,
    project_id: int,
    scenes: list[Any],
    scene_id: int,
    shot_ids: list[int] | None,
    only_missing: bool,
    priority: int,
    train_adapters: bool,
) -> JobView:
    """`generate_scene` on the project's scenes as the caller read them (one read for a whole selection)."""
    scene = next((s for s in scenes if s.id == scene_id), None)
    if scene is None:
        raise NotFoundError("that scene is not in the open project")
    if not scene.shots:
        raise ValidationError("the scene has no shots; add a shot before generating")
    if shot_ids:
        targets = {int(i) for i in shot_ids}
    elif only_missing:
        targets = {shot.id for shot in scene.shots if shot.chosen_take_id is None}
    else:
        targets = {shot.id for shot in scene.shots}
    refuse_uncaptioned(scenes, targets)
    shots = [shot for shot in scene.shots if shot.id in targets]
    training = train_missing_adapters(services, project_id, shots) if train_adapters else []
    spec = GenerateScene(
        scene_id=scene_id,
        shot_ids=sorted(targets) if shot_ids else None,
        only_missing=only_missing,
        after_jobs=[job.id for job in training],
    )
    return services.jobs.enqueue(spec, project_id, priority=priority)


def generate_selected(services: Any, project_id: int, shot_ids: list[int]) -> list[JobView]:
    """One generation per scene that holds selected shots; the shots of one scene are generated together."""
    if not shot_ids:
        raise ValidationError("select shots first (the checkbox on each card)")
    wanted = {int(i) for i in shot_ids}
    jobs = []
    scenes = services.storyboard.list_scenes(project_id)
    for scene in scenes:
        chosen = [shot.id for shot in scene.shots if shot.id in wanted]
        if chosen:
            jobs.append(_generate_scene(services, project_id, scenes, scene.id, chosen, False, 0, True))
    if not jobs:
        raise NotFoundError("the selected shots are gone; select again")
    return jobs


def regenerate_shot(
    services: Any,
    project_id: int,
    shot_id: int,
    seed: int | None = None,
    caption: str | None = None,
    priority: int = 0,
) -> JobView:
    """A new take of one shot (a new seed unless one is given); its neighbours keep theirs. A new `caption` is
    saved on the shot first, unless the request would be refused (the shot is being generated): then the caption
    stays as it was."""
    spec = RegenerateShot(shot_id=shot_id, seed=new_seed() if seed is None else int(seed))
    if caption is not None:
        services.jobs.pending_generation(spec, project_id)  # raises ConflictError before the caption changes
        services.storyboard.update_shot(shot_id, caption=caption)
    scenes = services.storyboard.list_scenes(project_id)
    shots = [x for scene in scenes for x in scene.shots if x.id == shot_id]
    if not shots:
        raise NotFoundError(
            f"shot {shot_id} is no longer in this project's storyboard; the page shows the current one"
        )
    refuse_uncaptioned(scenes, {shot_id})
    training = train_missing_adapters(services, project_id, shots)
    return services.jobs.enqueue(replace(spec, after_jobs=[job.id for job in training]), project_id, priority)
