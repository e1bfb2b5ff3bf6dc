"""Scene moves from the timeline, the queue's elapsed time and idle-poll digest, without a browser."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

import pytest

from studio.services.errors import ConflictError
from studio.ui.panels import jobs_html, jobs_signature
from studio.ui.storyboard import apply_edit
from studio.ui.timeline import structure_version


def test_move_scene_edit_reorders_the_film_and_refuses_a_stale_page(services):
    project = services.projects.create("Scenes", preset="tiny")
    scenes = [services.storyboard.add_scene(project.id, caption) for caption in ("dawn", "noon", "night")]
    shots = [services.storyboard.add_shot(scene.id, f"shot of {scene.caption}").id for scene in scenes]
    version = structure_version(services.storyboard.list_scenes(project.id))
    move = {"op": "move_scene", "project_id": project.id, "scene_id": scenes[2].id, "position": 0}
    message, _ = apply_edit(services, project.id, {**move, "version": version})
    assert message == "moved scene to position 1"
    assert [s.id for s in services.storyboard.list_scenes(project.id)] == [scenes[2].id, scenes[0].id, scenes[1].id]
    assert [s.id for s in services.storyboard.film_shots(project.id)] == [shots[2], shots[0], shots[1]]
    with pytest.raises(ConflictError, match="changed since the page drew it"):
        apply_edit(services, project.id, {**move, "version": version, "position": 2})
    version = structure_version(services.storyboard.list_scenes(project.id))
    assert apply_edit(services, project.id, {**move, "version": version, "position": -1})[0] == "already there"
    apply_edit(services, project.id, {**move, "version": version, "position": 9})  # clamped to the end
    assert [s.position for s in services.storyboard.list_scenes(project.id)] == [0, 1, 2]
    assert services.storyboard.list_scenes(project.id)[-1].id == scenes[2].id


def _job(status, **fields):
    base = dict(id=7, kind="generate_scene", status=status, progress=0.25, message="step 1/4", error=None, step=1)
    base.update(cancel_requested=False, eta_s=None, preview_asset_id=None, is_finished=status == "done")
    return SimpleNamespace(**{**base, **fields})


def test_queue_shows_elapsed_time_of_queued_and_running_jobs():
    now = datetime(2026, 1, 1, 12, 0, 0)
    running = _job("running", started_at=datetime(2026, 1, 1, 11, 58, 55), created_at=datetime(2026, 1, 1, 11, 0))
    queued = _job("queued", id=8, started_at=None, created_at=datetime(2026, 1, 1, 11, 59, 50))
    done = _job("done", id=9, started_at=now, created_at=now)
    html = jobs_html([running, queued, done], now=now)
    assert "running 1:05" in html and "waiting 0:10" in html and html.count("sl-elapsed") == 2


def test_job_signature_changes_with_what_the_queue_shows():
    job = _job("running", started_at=None, created_at=None)
    same = jobs_signature([job])
    assert jobs_signature([_job("running", started_at=None, created_at=None)]) == same
    assert jobs_signature([_job("running", progress=0.5)]) != same
    assert jobs_signature([_job("done")]) != same
    assert jobs_signature([]) != same
