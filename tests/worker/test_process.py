"""Real worker subprocesses on the tiny preset: claim races, progress, cancel, failures, kill -9 and restart."""

from __future__ import annotations

import numpy as np
import pytest

from studio.services.job_specs import ExportFilm, GenerateScene, RegenerateShot, TrainAdapter
from studio.worker.generation import encode_latents, encode_mp4, encode_png
from studio.worker.retry import retry_db
from tests.worker.helpers import (
    claims_in_log,
    fast_settings,
    kill_hard,
    spawn_worker,
    stop_worker,
    tiny_project,
    wait_for,
    wait_for_log,
)


def give_every_shot_a_take(services, shot_ids):
    import torch

    frames = np.zeros((5, 32, 32, 3), dtype=np.uint8)
    for shot_id in shot_ids:
        services.takes.add_take(
            shot_id,
            None,
            video=encode_mp4(frames, 8),
            thumbnail=encode_png(frames[0]),
            latents=encode_latents(torch.zeros(1, 16, 2, 4, 4)),
            seed=1,
            params={"model": "tiny", "width": 32, "height": 32},
        )


def test_two_workers_racing_never_claim_the_same_job(settings, tmp_path):
    """Both workers poll every 50 ms while 40 jobs arrive; every job runs exactly once, on one of them."""
    from studio.services import build_services

    settings = fast_settings(settings, heartbeat_s=2.0, heartbeat_timeout_s=30.0)
    services = build_services(settings)
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    workers = []
    try:
        project, scene_id, shot_ids = tiny_project(services)
        # 40 scenes (one generation each: a request for a scene already queued would join that job), every shot with
        # a take: the jobs find nothing missing, so they test the queue, not a model
        scene_ids = [scene_id] + [services.storyboard.add_scene(project.id).id for _ in range(39)]
        shot_ids += [services.storyboard.add_shot(scene, "a gull", num_frames=5).id for scene in scene_ids[1:]]
        give_every_shot_a_take(services, shot_ids)
        workers = [spawn_worker(settings, f"racer-{i}", log) for i, log in enumerate(logs)]
        for worker, log in zip(workers, logs, strict=True):
            wait_for_log(log, "ready", worker)
        # retry_db: as the UI would, ride out a transient lock while two workers commit (studio/worker/retry.py).
        jobs = [
            retry_db(
                services.jobs.enqueue,
                GenerateScene(scene_id=scene, only_missing=True),
                project.id,
            )
            for scene in scene_ids
        ]
        wait_for(lambda: all(services.jobs.get(j.id).is_finished for j in jobs), 120, what="all jobs finished")

        claims = claims_in_log(logs[0]) + claims_in_log(logs[1])
        claimed_ids = sorted(job_id for job_id, _, _ in claims)
        assert claimed_ids == sorted(j.id for j in jobs)  # each job exactly once across both workers
        for job_id, _kind, worker_id in claims:
            view = services.jobs.get(job_id)
            assert (view.status, view.worker_id, view.attempts) == ("done", worker_id, 1)
            assert view.result["takes"] == []
        assert {worker_id for _, _, worker_id in claims} == {"racer-0", "racer-1"}  # both really raced
    finally:
        for worker in workers:
            stop_worker(worker)
        services.close()


def test_worker_process_progress_cancel_failure_and_kill(sqlite_settings, tmp_path):
    """One worker subprocess through its life: a failing job, a real generation, a cancel, then kill -9."""
    from studio.services import build_services

    settings = fast_settings(sqlite_settings)
    services = build_services(settings)
    jobs = services.jobs
    log = tmp_path / "worker.log"
    worker = None
    try:
        project, scene_id, (first_shot, second_shot) = tiny_project(services)
        gone = services.storyboard.add_scene(project.id)
        services.storyboard.add_shot(gone.id, "a boat", num_frames=5)
        broken = jobs.enqueue(GenerateScene(scene_id=gone.id), project.id)
        services.storyboard.delete_scene(gone.id)  # in the bin before a worker takes the job
        scene = jobs.enqueue(GenerateScene(scene_id=scene_id, steps=12), project.id)
        worker = spawn_worker(settings, "lifecycle", log, "--progress-interval", "0")

        # 1. The broken job fails with its reason and the worker goes on with the next one.
        seen = []

        def scene_done():
            view = jobs.get(scene.id)
            if view.status == "running":
                seen.append((view.progress, view.step))
            return view.is_finished

        wait_for(scene_done, 180, interval_s=0.02, what="the scene job")
        failed = jobs.get(broken.id)
        assert failed.status == "failed" and f"scene {gone.id} is not a live scene" in failed.error
        done = jobs.get(scene.id)
        assert done.status == "done" and done.progress == 1.0

        # 2. Progress was monotone and reached 1.0; takes were written for both shots.
        fractions = [fraction for fraction, _ in seen] + [done.progress]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
        assert len(seen) >= 2  # it was observed while running, not only at the end
        assert [len(services.takes.list_takes(s)) for s in (first_shot, second_shot)] == [1, 1]

        # 3. Cancel: the job stops within one step of the request and writes no take.
        long = retry_db(jobs.enqueue, RegenerateShot(shot_id=second_shot, steps=1000), project.id)
        wait_for(lambda: (jobs.get(long.id).step or 0) >= 3, 120, interval_s=0.02, what="3 steps of the long job")
        retry_db(jobs.request_cancel, long.id)
        step_at_request = jobs.get(long.id).step
        wait_for(lambda: jobs.get(long.id).is_finished, 60, what="the cancelled job to stop")
        cancelled = jobs.get(long.id)
        assert cancelled.status == "cancelled"
        assert cancelled.step <= step_at_request + 1
        assert len(services.takes.list_takes(second_shot)) == 1

        # 4. kill -9 mid-job: nothing marks the job, nothing half-written stays; the restart recovers it at once.
        doomed = retry_db(jobs.enqueue, RegenerateShot(shot_id=first_shot, steps=1000), project.id)
        wait_for(lambda: (jobs.get(doomed.id).step or 0) >= 2, 120, interval_s=0.02, what="the doomed job to run")
        kill_hard(worker)
        assert jobs.get(doomed.id).status == "running"  # the dead worker's job, until someone recovers it
        restarted = spawn_worker(settings, "lifecycle", log, "--kinds", "export_film", "--exit-when-idle")
        assert restarted.wait(timeout=120) == 0
        recovered = jobs.get(doomed.id)
        assert (recovered.status, recovered.worker_id, recovered.attempts) == ("queued", None, 1)
        assert "requeued" in recovered.message
        assert len(services.takes.list_takes(first_shot)) == 1
        assert services.assets.sweep_orphans(grace_s=0) == (0, 0)  # no file without a row, no row without a file
        assert jobs.list_jobs(status="running") == []
    finally:
        if worker is not None:
            stop_worker(worker)
        services.close()


@pytest.mark.parametrize("status", [None, "failed"])
def test_jobs_command_lists_and_cancels(sqlite_services, capsys, status):
    from argparse import Namespace

    from studio.worker.commands import cancel_job, list_jobs

    jobs = sqlite_services.jobs
    queued = jobs.enqueue(ExportFilm())
    failed = jobs.enqueue(TrainAdapter(character_id=1))
    jobs.claim_next_job("w", kinds=("train_adapter",))
    jobs.fail(failed.id, "no references")

    assert list_jobs(Namespace(status=status, project=None), sqlite_services) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["id", "kind", "status", "progress", "message"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert str(failed.id) in rows and "no references" in rows[str(failed.id)]
    assert (str(queued.id) in rows) == (status is None)

    assert cancel_job(Namespace(job_id=str(queued.id)), sqlite_services) == 0
    assert jobs.get(queued.id).status == "cancelled"
    assert cancel_job(Namespace(job_id=str(failed.id)), sqlite_services) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_the_apps_local_worker_is_restarted_after_a_crash_and_stops_cleanly(sqlite_settings, tmp_path):
    import os
    import signal

    from studio.services import build_services
    from studio.worker.process import LocalWorkerProcess

    settings = fast_settings(sqlite_settings)
    build_services(settings).close()  # the app migrates before it starts the worker
    log_path = tmp_path / "local.log"
    with open(log_path, "ab") as log:
        worker = LocalWorkerProcess(settings, worker_id="local-test", restart_delay_s=0.1, output=log).start()
        try:
            wait_for_log(log_path, "worker local-test ready", worker.process)
            first_pid = worker.pid
            os.kill(first_pid, signal.SIGKILL)
            wait_for(lambda: worker.restarts == 1 and worker.pid != first_pid, 60, what="the restart")
            wait_for(lambda: log_path.read_text().count("worker local-test ready") == 2, 60, what="ready again")
        finally:
            code = worker.stop()
    assert code == 0  # SIGTERM: the worker finished its loop and exited on its own
    assert worker.restarts == 1 and not worker.is_alive()


def test_a_worker_stops_when_the_studio_that_started_it_is_killed(sqlite_settings, tmp_path):
    """kill -9 of the app must not leave a worker holding the device: the orphaned child notices and exits."""
    import json
    import os
    import signal
    import subprocess
    import sys

    from studio.services import build_services
    from studio.worker.process import settings_environment, worker_command

    settings = fast_settings(sqlite_settings)
    build_services(settings).close()
    log_path = tmp_path / "orphan.log"
    command = worker_command(settings, "orphan", ("--poll-interval", "0.05"))
    app = (  # a stand-in for app.py: starts the worker as its child, says its pid, then waits to be killed
        "import json, os, subprocess, sys, time\n"
        f"child = subprocess.Popen({command!r} + ['--parent-pid', str(os.getpid())], "
        f"stdout=open({str(log_path)!r}, 'ab'), stderr=subprocess.STDOUT)\n"
        "print(json.dumps(child.pid), flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", app], stdout=subprocess.PIPE, env=settings_environment(settings), text=True
    )
    worker_pid = json.loads(parent.stdout.readline())
    try:
        wait_for_log(log_path, "worker orphan ready")
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        wait_for_log(log_path, "is gone: stopping", timeout_s=60)
        wait_for(lambda: not os.path.exists(f"/proc/{worker_pid}") or _is_zombie(worker_pid), 60, what="exit")
    finally:
        try:
            os.kill(worker_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True
