"""`python -m studio render`: import, generate what has no take, export; re-runs and kills redo no take."""

from __future__ import annotations

import socket
import subprocess
import sys

import imageio_ffmpeg
import pytest
import torch

from studio.render import render_storyboard
from studio.services.job_specs import GenerateScene
from studio.worker.process import Worker

STORYBOARD = """\
title: Render Test
model: tiny
width: 32
height: 32
fps: 8
steps: {steps}
scenes:
  - caption: a lighthouse at night
    shots:
      - caption: wide shot, a man walks
        frames: 5
      - caption: close up, a red lamp
        frames: 5
        transition: {{type: dissolve, seconds: 0.25}}
  - caption: the sea
    shots:
      - caption: a dog runs
        frames: 9
"""


def write_storyboard(tmp_path, steps=2):
    path = tmp_path / "story.yaml"
    path.write_text(STORYBOARD.format(steps=steps))
    return path


def film_shots(services, project_id):
    return [shot.id for shot in services.storyboard.film_shots(project_id)]


def takes_by_shot(services, shot_ids):
    return {shot_id: [t.id for t in services.takes.list_takes(shot_id)] for shot_id in shot_ids}


def jobs_of(services, kind):
    return [job for job in services.jobs.list_jobs() if job.kind == kind]


def frame_count(path):
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return meta["fps"], sum(1 for _ in reader)


def test_render_then_rerun_then_regenerate_one_shot(sqlite_services, tmp_path):
    torch.set_num_threads(1)
    services, story, film = sqlite_services, write_storyboard(tmp_path), tmp_path / "out" / "film.mp4"

    assert render_storyboard(services, story, film, log=lambda line: None) == film.resolve()
    project = services.projects.get_by_name("Render Test")
    shots = film_shots(services, project.id)
    first = takes_by_shot(services, shots)
    assert [len(t) for t in first.values()] == [1, 1, 1]
    assert len(jobs_of(services, "generate_scene")) == 2  # one job per scene
    assert frame_count(film) == (8.0, 5 + 5 + 9 - 2)  # the 0.25 s dissolve overlaps 2 frames
    assert film.with_suffix(".otio").is_file()

    # Run again: nothing to generate, the same takes, a new export.
    film.unlink()
    render_storyboard(services, story, film, log=lambda line: None)
    assert takes_by_shot(services, shots) == first
    assert len(jobs_of(services, "generate_scene")) == 2 and len(jobs_of(services, "export_film")) == 2
    assert film.is_file()

    # --regenerate 2 (the film's second shot): a new take, chosen, and only for that shot.
    render_storyboard(services, story, film, regenerate="2", log=lambda line: None)
    after = takes_by_shot(services, shots)
    assert after[shots[0]] == first[shots[0]] and after[shots[2]] == first[shots[2]]
    assert after[shots[1]][0] == first[shots[1]][0] and len(after[shots[1]]) == 2
    assert services.takes.chosen_take(shots[1]).id == after[shots[1]][1]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_rerun_after_a_killed_render_finishes_without_redoing_takes(sqlite_services, tmp_path):
    """The state a render killed mid-job leaves: scene 1 done, scene 2's job running under a dead process."""
    from studio.storyboard_file import import_storyboard, load_storyboard

    torch.set_num_threads(1)
    services, story, film = sqlite_services, write_storyboard(tmp_path), tmp_path / "film.mp4"
    project_id = import_storyboard(services, load_storyboard(story), tmp_path).project_id
    first_scene, second_scene = services.storyboard.list_scenes(project_id)
    services.jobs.enqueue(GenerateScene(scene_id=first_scene.id, only_missing=True), project_id)
    Worker(services, worker_id="earlier-render").run(max_jobs=1)
    before = takes_by_shot(services, [shot.id for shot in first_scene.shots])
    killed = services.jobs.enqueue(GenerateScene(scene_id=second_scene.id, only_missing=True), project_id)
    dead_owner = f"{socket.gethostname()}:render-{dead_pid()}"
    assert services.jobs.claim_next_job(dead_owner).id == killed.id  # then kill -9: it stays `running`

    render_storyboard(services, story, film, log=lambda line: None)

    assert takes_by_shot(services, [shot.id for shot in first_scene.shots]) == before  # not redone
    assert [len(services.takes.list_takes(shot.id)) for shot in second_scene.shots] == [1]
    view = services.jobs.get(killed.id)
    assert (view.status, view.attempts) == ("done", 2)  # recovered at once (its process is gone) and reused
    assert len(jobs_of(services, "generate_scene")) == 2
    assert film.is_file()


@pytest.mark.slow
def test_killed_render_command_finishes_on_rerun_without_redoing_takes(sqlite_settings, tmp_path):
    """The real CLI, killed with SIGKILL while the second scene generates, then run again to the end."""
    import os
    import signal

    from studio.services import build_services
    from tests.worker.helpers import REPO, wait_for

    story = write_storyboard(tmp_path, steps=300)
    film = tmp_path / "film.mp4"
    command = [sys.executable, "-m", "studio", "--data-dir", str(sqlite_settings.data_dir), "--db",
               sqlite_settings.resolved_database_url, "render", str(story), "--out", str(film)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    services = build_services(sqlite_settings)
    try:
        first = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.DEVNULL)

        def second_scene_running():
            jobs = [j for j in services.jobs.list_jobs(status="running") if j.kind == "generate_scene"]
            done = [j for j in services.jobs.list_jobs(status="done") if j.kind == "generate_scene"]
            return done and jobs and (jobs[0].step or 0) >= 2

        wait_for(second_scene_running, 600, interval_s=0.05, what="the second scene to be generating")
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        project = services.projects.get_by_name("Render Test")
        shots = film_shots(services, project.id)
        before = {shot: ids for shot, ids in takes_by_shot(services, shots).items() if ids}
        assert len(before) == 2 and not film.exists()  # scene 1 done, scene 2 interrupted

        assert subprocess.run(command, cwd=REPO, env=env, stderr=subprocess.DEVNULL).returncode == 0

        after = takes_by_shot(services, shots)
        assert {shot: after[shot] for shot in before} == before  # the takes that existed were not redone
        assert [len(ids) for ids in after.values()] == [1, 1, 1]
        assert len(jobs_of(services, "generate_scene")) == 2  # the interrupted job was recovered and reused
        assert frame_count(film)[1] == 5 + 5 + 9 - 2
    finally:
        services.close()
