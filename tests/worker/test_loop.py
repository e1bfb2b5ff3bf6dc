"""The worker loop in-process with stand-in handlers: order, failures, cancel, OOM advice, stop and loss."""

from __future__ import annotations

import threading

import pytest
import torch

from studio.services.job_specs import ExportFilm, TrainAdapter
from studio.worker.cache import PipelineCache
from studio.worker.context import JobCancelled
from studio.worker.process import Worker


def make_worker(services, handlers, **kwargs):
    return Worker(services, worker_id="test-worker", handlers=handlers, poll_interval_s=0.01, **kwargs)


def test_jobs_run_by_priority_then_fifo_and_a_failure_does_not_stop_the_next(sqlite_services):
    jobs = sqlite_services.jobs
    order = []

    def handler(ctx):
        name = ctx.spec.out_path.removesuffix(".mp4")
        order.append(name)
        if name == "boom":
            raise RuntimeError("the handler broke")
        for step in range(1, 4):
            ctx.report_progress(step / 3, f"step {step}", step=step, total=3)
        return {"name": name}

    first = jobs.enqueue(ExportFilm(out_path="first.mp4"))
    boom = jobs.enqueue(ExportFilm(out_path="boom.mp4"))
    urgent = jobs.enqueue(ExportFilm(out_path="urgent.mp4"), priority=5)
    last = jobs.enqueue(ExportFilm(out_path="last.mp4"))

    stats = make_worker(sqlite_services, {"export_film": handler}).run(exit_when_idle=True)

    assert order == ["urgent", "first", "boom", "last"]
    assert (stats.done, stats.failed) == (3, 1)
    assert jobs.get(boom.id).status == "failed"
    assert jobs.get(boom.id).error == "RuntimeError: the handler broke"
    for job in (first, urgent, last):
        view = jobs.get(job.id)
        assert (view.status, view.progress, view.result) == ("done", 1.0, {"name": job.payload["out_path"][:-4]})


def test_cancel_requested_mid_job_ends_cancelled_and_a_late_result_is_ignored(sqlite_services):
    jobs = sqlite_services.jobs
    seen_steps = []

    def handler(ctx):
        for step in range(1, 100):
            seen_steps.append(step)
            ctx.report_progress(step / 100, step=step, total=100)
            if step == 5:
                jobs.request_cancel(ctx.job_id)  # the user presses cancel during step 5
            ctx.check_cancelled()
        return {"never": True}

    def late_result_handler(ctx):
        jobs.request_cancel(ctx.job_id)
        return {"late": True}  # the handler did not look at the flag: the result must not win

    cancelled = jobs.enqueue(ExportFilm())
    late = jobs.enqueue(TrainAdapter(character_id=1))
    make_worker(sqlite_services, {"export_film": handler, "train_adapter": late_result_handler}).run(
        exit_when_idle=True
    )

    assert seen_steps[-1] == 5  # stopped at the step the request landed in
    assert jobs.get(cancelled.id).status == "cancelled"
    assert jobs.get(cancelled.id).step == 5
    assert jobs.get(late.id).status == "cancelled" and jobs.get(late.id).result is None


def test_out_of_memory_fails_with_the_offload_profile_to_try_and_frees_the_cache(sqlite_services):
    jobs = sqlite_services.jobs
    loads = []

    def loader(preset, device, dtype, offload, vae_tiling, model_root):
        loads.append(preset)
        return torch.nn.Linear(1, 1)

    cache = PipelineCache(torch.device("cpu"), torch.float32, loader=loader)

    def handler(ctx):
        ctx.pipelines.get("tiny")
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    job = jobs.enqueue(ExportFilm())
    make_worker(sqlite_services, {"export_film": handler}, pipelines=cache).run(exit_when_idle=True)

    view = jobs.get(job.id)
    assert view.status == "failed"
    assert "offload profile 'none'" in view.error and "--offload model" in view.error
    assert cache.key is None  # the pipeline was dropped so the next job starts from a clean device


def test_stopping_the_worker_requeues_the_running_job(sqlite_services):
    jobs = sqlite_services.jobs
    worker = None

    def handler(ctx):
        for step in range(1, 1000):
            ctx.report_progress(step / 1000, step=step, total=1000)
            if step == 3:
                worker.stop()  # what SIGTERM does
            if ctx.should_cancel():
                raise JobCancelled("unexpected")
        return {}

    job = jobs.enqueue(ExportFilm())
    worker = make_worker(sqlite_services, {"export_film": handler})
    stats = worker.run()
    view = jobs.get(job.id)
    assert stats.requeued == 1
    assert (view.status, view.worker_id, view.attempts) == ("queued", None, 1)


def test_a_job_taken_over_by_another_worker_is_left_alone(sqlite_services):
    jobs = sqlite_services.jobs

    def handler(ctx):
        # Another worker decided this one was dead (no beat for too long) and recovered the job meanwhile.
        jobs.recover_stale_jobs(0.0)
        assert jobs.claim_next_job("other-worker") is not None
        return {"stale": True}

    job = jobs.enqueue(ExportFilm())
    worker = make_worker(sqlite_services, {"export_film": handler})
    worker.run(max_jobs=1)
    view = jobs.get(job.id)
    assert (view.status, view.worker_id, view.result) == ("running", "other-worker", None)


def test_heartbeats_run_while_a_job_works(sqlite_settings):
    from studio.services import build_services

    services = build_services(sqlite_settings.model_copy(update={"heartbeat_s": 0.05}))
    try:
        jobs = services.jobs
        beats = []
        release = threading.Event()

        def handler(ctx):
            first = jobs.get(ctx.job_id).heartbeat_at
            release.wait(0.5)
            beats.append((first, jobs.get(ctx.job_id).heartbeat_at))
            return {}

        jobs.enqueue(ExportFilm())
        make_worker(services, {"export_film": handler}).run(exit_when_idle=True)
        first, later = beats[0]
        assert later > first
    finally:
        services.close()


@pytest.mark.parametrize("error", [RuntimeError("MPS backend out of memory (MPS allocated: 8 GB)")])
def test_out_of_memory_is_recognised_from_text(error):
    from studio.worker.device import is_out_of_memory

    assert is_out_of_memory(error)
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_a_job_of_a_silent_worker_elsewhere_is_taken_over_after_the_heartbeat_timeout(sqlite_settings):
    import time

    from studio.services import build_services

    services = build_services(sqlite_settings.model_copy(update={"heartbeat_s": 0.1, "heartbeat_timeout_s": 0.5}))
    try:
        jobs = services.jobs
        job = jobs.enqueue(ExportFilm())
        jobs.claim_next_job("other-machine:4242")  # then that machine loses power: no more beats
        worker = make_worker(services, {"export_film": lambda ctx: {"ran_on": ctx.worker_id}})
        assert worker.recover() == []  # its heartbeat is fresh: it may still be working
        time.sleep(0.6)
        worker.run(exit_when_idle=True)
        view = jobs.get(job.id)
        assert (view.status, view.result, view.attempts) == ("done", {"ran_on": "test-worker"}, 2)
    finally:
        services.close()
