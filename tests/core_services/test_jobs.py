"""Job queue: lifecycle, ordering, cancel rules, stale recovery, and two processes claiming at once."""

from __future__ import annotations

import multiprocessing
from datetime import timedelta

import pytest

from studio.db import models
from studio.db.models import utcnow
from studio.services.errors import ConflictError, NotFoundError, ValidationError
from studio.services.job_specs import ExportFilm, GenerateScene, RegenerateShot, TrainAdapter, job_spec
from studio.services.jobs import MAX_ATTEMPTS


def _scene_of_two_shots(services, name: str = "jobs") -> tuple[int, int, list[int]]:
    project = services.projects.create(name, preset="tiny")
    scene = services.storyboard.add_scene(project.id, caption="")
    return project.id, scene.id, [services.storyboard.add_shot(scene.id, f"shot {i}").id for i in range(2)]


def test_lifecycle_enqueue_claim_progress_finish(services):
    project_id, scene_id, shots = _scene_of_two_shots(services)
    job = services.jobs.enqueue(GenerateScene(scene_id=scene_id, shot_ids=shots), project_id)
    assert job.payload == GenerateScene(scene_id=scene_id, shot_ids=shots, target_shot_ids=shots).to_payload()
    assert (job.status, job.progress, job.attempts, job.worker_id) == ("queued", 0.0, 0, None)
    claimed = services.jobs.claim_next_job("worker-a")
    assert claimed.id == job.id
    assert (claimed.status, claimed.worker_id, claimed.attempts) == ("running", "worker-a", 1)
    assert claimed.started_at is not None and claimed.heartbeat_at is not None
    assert services.jobs.claim_next_job("worker-b") is None

    progressed = services.jobs.report_progress(job.id, 0.25, "step 5/20", step=5, total=20, eta_s=12.5)
    assert (progressed.progress, progressed.step, progressed.total_steps, progressed.eta_s) == (0.25, 5, 20, 12.5)
    assert progressed.message == "step 5/20"
    done = services.jobs.finish(job.id, {"take_ids": [3, 4]})
    assert (done.status, done.progress, done.result) == ("done", 1.0, {"take_ids": [3, 4]})
    assert done.finished_at is not None and done.is_finished
    with pytest.raises(ConflictError, match="not running"):
        services.jobs.report_progress(job.id, 0.5)
    with pytest.raises(ConflictError, match="already finished"):
        services.jobs.request_cancel(job.id)


def test_claim_order_is_priority_then_fifo_and_filters_kinds(services):
    project_id, scene_id, (a, b) = _scene_of_two_shots(services)
    low = services.jobs.enqueue(ExportFilm(), priority=0)
    high = services.jobs.enqueue(RegenerateShot(shot_id=a), project_id, priority=5)
    low2 = services.jobs.enqueue(GenerateScene(scene_id=scene_id, shot_ids=[b]), project_id, priority=0)
    train = services.jobs.enqueue(TrainAdapter(character_id=1), priority=9)
    assert services.jobs.claim_next_job("w", kinds=["generate_scene", "regenerate_shot", "export_film"]).id == high.id
    assert services.jobs.claim_next_job("w").id == train.id
    assert services.jobs.claim_next_job("w").id == low.id
    assert services.jobs.claim_next_job("w").id == low2.id
    assert services.jobs.claim_next_job("w") is None


def test_cancel_queued_is_immediate_and_running_is_cooperative(services):
    queued = services.jobs.enqueue(ExportFilm())
    cancelled = services.jobs.request_cancel(queued.id)
    assert cancelled.status == "cancelled" and cancelled.cancel_requested
    assert services.jobs.claim_next_job("w") is None

    running = services.jobs.enqueue(ExportFilm())
    services.jobs.claim_next_job("w")
    assert not services.jobs.is_cancel_requested(running.id)
    assert services.jobs.request_cancel(running.id).status == "running"
    assert services.jobs.is_cancel_requested(running.id)
    # The worker may race to finish: a cancelled job stays cancelled.
    assert services.jobs.mark_cancelled(running.id).status == "cancelled"
    finished = services.jobs.finish(running.id, {"late": True})
    assert finished.status == "cancelled" and finished.result is None
    assert services.jobs.fail(running.id, "late failure").status == "cancelled"


def test_fail_records_the_message(services):
    job = services.jobs.enqueue(TrainAdapter(character_id=1))
    services.jobs.claim_next_job("w")
    failed = services.jobs.fail(job.id, "out of memory: lower the resolution")
    assert (failed.status, failed.error) == ("failed", "out of memory: lower the resolution")
    with pytest.raises(ConflictError):
        services.jobs.finish(job.id, {})


def test_heartbeat_refused_for_another_worker(services):
    job = services.jobs.enqueue(ExportFilm())
    services.jobs.claim_next_job("w1")
    assert services.jobs.heartbeat(job.id, "w1").heartbeat_at is not None
    with pytest.raises(ConflictError, match="belongs to worker 'w1'"):
        services.jobs.heartbeat(job.id, "w2")


def test_bad_requests_are_refused(services):
    with pytest.raises(ValidationError, match="unknown job kind 'paint'"):
        services.jobs.enqueue(job_spec("paint", {}))
    with pytest.raises(ValidationError, match="enqueue takes a job spec"):
        services.jobs.enqueue("export_film", {})
    with pytest.raises(ValidationError, match="JSON"):
        services.jobs.enqueue(TrainAdapter(character_id=1, hyperparameters={"x": object()}))
    with pytest.raises(NotFoundError, match="project 999"):
        services.jobs.enqueue(ExportFilm(), project_id=999)
    with pytest.raises(ValidationError, match="needs its project_id"):
        services.jobs.enqueue(GenerateScene(scene_id=1))
    project_id, scene_id, (a, _) = _scene_of_two_shots(services)
    with pytest.raises(NotFoundError, match="shot 999 is not a live shot"):
        services.jobs.enqueue(RegenerateShot(shot_id=999), project_id)
    _, other_scene, (other_shot, _) = _scene_of_two_shots(services, "other")
    with pytest.raises(NotFoundError, match=f"shot {other_shot} is not a live shot of scene {scene_id}"):
        services.jobs.enqueue(GenerateScene(scene_id=scene_id, shot_ids=[other_shot]), project_id)
    with pytest.raises(NotFoundError, match=f"scene {other_scene} is not a live scene of project {project_id}"):
        services.jobs.enqueue(GenerateScene(scene_id=other_scene), project_id)
    services.storyboard.delete_shot(a)  # in the bin: not generated
    with pytest.raises(NotFoundError, match=f"shot {a} is not a live shot"):
        services.jobs.enqueue(GenerateScene(scene_id=scene_id, shot_ids=[a]), project_id)
    assert services.jobs.list_jobs() == []
    with pytest.raises(NotFoundError, match="job 42"):
        services.jobs.get(42)
    job = services.jobs.enqueue(ExportFilm())
    services.jobs.claim_next_job("w")
    with pytest.raises(ValidationError, match="between 0 and 1"):
        services.jobs.report_progress(job.id, 1.5)
    with pytest.raises(ValidationError, match="unknown job status"):
        services.jobs.list_jobs(status="sleeping")


def _age_heartbeat(services, job_id: int, seconds: float) -> None:
    with services.db.unit_of_work() as session:
        session.get(models.Job, job_id).heartbeat_at = utcnow() - timedelta(seconds=seconds)


def test_stale_jobs_are_requeued_then_failed_after_max_attempts(services):
    job = services.jobs.enqueue(ExportFilm())
    for attempt in range(1, MAX_ATTEMPTS + 1):
        claimed = services.jobs.claim_next_job(f"w{attempt}")
        assert claimed.attempts == attempt
        assert services.jobs.recover_stale_jobs(60) == []  # fresh heartbeat: left alone
        _age_heartbeat(services, job.id, 120)
        [recovered] = services.jobs.recover_stale_jobs(60)
        expected = "queued" if attempt < MAX_ATTEMPTS else "failed"
        assert recovered.status == expected
    assert "stopped 3 times" in services.jobs.get(job.id).error


def test_restarting_worker_recovers_its_own_jobs_at_once(services):
    mine = services.jobs.enqueue(ExportFilm())
    other = services.jobs.enqueue(ExportFilm())
    services.jobs.claim_next_job("local")
    services.jobs.claim_next_job("remote")
    recovered = services.jobs.recover_stale_jobs(60, worker_id="local")
    assert [j.id for j in recovered] == [mine.id]
    assert services.jobs.get(other.id).status == "running"
    # A job whose cancel was asked while its worker died ends cancelled, not requeued.
    again = services.jobs.claim_next_job("local")
    assert again.id == mine.id and again.attempts == 2
    services.jobs.request_cancel(mine.id)
    [recovered] = services.jobs.recover_stale_jobs(60, worker_id="local")
    assert (recovered.id, recovered.status) == (mine.id, "cancelled")


def test_list_jobs_newest_first_with_filters(services):
    project = services.projects.create("Jobs")
    a = services.jobs.enqueue(ExportFilm(), project_id=project.id)
    b = services.jobs.enqueue(ExportFilm())
    services.jobs.request_cancel(b.id)
    assert [j.id for j in services.jobs.list_jobs()] == [b.id, a.id]
    assert [j.id for j in services.jobs.list_jobs(status="queued")] == [a.id]
    assert [j.id for j in services.jobs.list_jobs(project_id=project.id)] == [a.id]


def _claim_all(url: str, worker_id: str, start, results) -> None:
    from studio.db.engine import Database
    from studio.services.jobs import JobService

    db = Database(url)
    jobs = JobService(db)
    claimed = []
    start.wait()
    while (job := jobs.claim_next_job(worker_id)) is not None:
        claimed.append(job.id)
    db.dispose()
    results.put((worker_id, claimed))


def test_two_processes_never_claim_the_same_job(services):
    total = 60
    ids = {services.jobs.enqueue(ExportFilm()).id for _ in range(total)}
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()
    workers = [context.Process(target=_claim_all, args=(services.db.url, f"p{n}", start, results)) for n in range(2)]
    for process in workers:
        process.start()
    start.set()
    claimed = dict(results.get(timeout=120) for _ in workers)
    for process in workers:
        process.join(timeout=30)
    first, second = claimed["p0"], claimed["p1"]
    assert set(first).isdisjoint(second)
    assert set(first) | set(second) == ids
    assert len(first) + len(second) == total
    assert {j.worker_id for j in services.jobs.list_jobs(status="running")} <= {"p0", "p1"}


def test_partial_result_is_readable_while_running_and_replaced_when_done(services):
    job = services.jobs.enqueue(TrainAdapter(character_id=1), project_id=None)
    with pytest.raises(ConflictError, match="not running"):
        services.jobs.report_partial_result(job.id, {"loss_curve": [[1, 0.5]]})
    services.jobs.claim_next_job("w1")
    with pytest.raises(ValidationError):
        services.jobs.report_partial_result(job.id, {"loss": float("nan")})
    running = services.jobs.report_partial_result(job.id, {"loss_curve": [[1, 0.5], [2, 0.4]]})
    assert running.result == {"loss_curve": [[1, 0.5], [2, 0.4]], "partial": True}
    assert services.jobs.list_jobs()[0].result["loss_curve"][-1] == [2, 0.4]
    assert services.jobs.finish(job.id, {"steps": 2}).result == {"steps": 2}


def test_a_new_attempt_starts_without_the_last_attempts_partial_result(services):
    job = services.jobs.enqueue(TrainAdapter(character_id=1))
    services.jobs.claim_next_job("w1")
    services.jobs.report_partial_result(job.id, {"loss_curve": [[1, 0.5]]})
    with services.db.unit_of_work() as session:
        row = session.get(models.Job, job.id)
        row.status, row.worker_id = "queued", None  # as recovery requeues a job whose worker died
    assert services.jobs.claim_next_job("w2").result is None


def test_a_generation_already_pending_for_the_same_shots_is_joined_and_an_overlap_refused(services):
    project_id, scene_id, (a, b) = _scene_of_two_shots(services, "joined")
    first = services.jobs.enqueue(GenerateScene(scene_id=scene_id), project_id)
    assert not first.joined and first.payload["target_shot_ids"] == sorted([a, b])
    again = services.jobs.enqueue(GenerateScene(scene_id=scene_id, shot_ids=[b, a], seed=5), project_id)
    assert again.joined and again.id == first.id
    with pytest.raises(ConflictError, match=f"already being generated by job {first.id} \\(queued\\)"):
        services.jobs.enqueue(RegenerateShot(shot_id=a), project_id)
    with pytest.raises(ConflictError, match=f"by job {first.id}"):  # asked without queueing: the same answer
        services.jobs.pending_generation(RegenerateShot(shot_id=a), project_id)
    assert services.jobs.pending_generation(GenerateScene(scene_id=scene_id), project_id).id == first.id
    # "only the shots without a take" is another request over the same shots: refused, not joined
    with pytest.raises(ConflictError, match=f"by job {first.id}"):
        services.jobs.enqueue(GenerateScene(scene_id=scene_id, only_missing=True), project_id)
    services.jobs.request_cancel(first.id)
    cli = services.jobs.enqueue(GenerateScene(scene_id=scene_id, only_missing=True), project_id)
    assert services.jobs.enqueue(GenerateScene(scene_id=scene_id, only_missing=True), project_id).id == cli.id
    services.jobs.claim_next_job("w")
    with pytest.raises(ConflictError, match=f"job {cli.id} \\(running\\)"):
        services.jobs.enqueue(RegenerateShot(shot_id=b), project_id)
    services.jobs.finish(cli.id, {})
    later = services.jobs.enqueue(RegenerateShot(shot_id=b), project_id)
    assert not later.joined and later.id not in (first.id, cli.id)
    assert len(services.jobs.list_jobs(project_id=project_id)) == 3


def test_a_pending_generation_stored_without_its_targets_holds_its_scenes_live_shots(services):
    project_id, scene_id, (_, b) = _scene_of_two_shots(services)
    job = services.jobs.enqueue(GenerateScene(scene_id=scene_id, only_missing=True), project_id)
    with services.db.unit_of_work() as session:  # as a queue written without target_shot_ids holds it
        session.get(models.Job, job.id).payload = {"scene_id": scene_id, "only_missing": True}
    with pytest.raises(ConflictError, match=f"by job {job.id}"):
        services.jobs.enqueue(RegenerateShot(shot_id=b), project_id)
    with services.db.unit_of_work() as session:  # a payload no spec reads holds no shots (it fails when run)
        session.get(models.Job, job.id).payload = {"scene": scene_id}
    assert not services.jobs.enqueue(RegenerateShot(shot_id=b), project_id).joined
