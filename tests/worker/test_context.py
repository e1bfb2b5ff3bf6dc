"""JobContext: progress is monotone, clamped, throttled to the interval (first step and the end always written),
carries an ETA, and cancel is read from the job row on every check."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from studio.worker.context import JobCancelled, JobContext, WorkerStopping


class RecordingJobs:
    def __init__(self):
        self.rows = []
        self.cancel = False
        self.cancel_reads = 0

    def report_progress(self, job_id, fraction, message="", step=None, total=None, eta_s=None, preview_asset_id=None):
        self.rows.append((fraction, message, step, total, eta_s, preview_asset_id))

    def is_cancel_requested(self, job_id):
        self.cancel_reads += 1
        return self.cancel


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class RecordingAssets:
    def __init__(self):
        self.stored = []

    def put_bytes(self, data, kind, mime, filename=None):
        self.stored.append((data, kind, mime))
        return SimpleNamespace(id=len(self.stored))


def make_context(interval=0.5):
    jobs, clock = RecordingJobs(), FakeClock()
    services = SimpleNamespace(jobs=jobs, assets=RecordingAssets(), settings=None)
    ctx = JobContext(
        services=services, job=SimpleNamespace(id=7), worker_id="w", progress_interval_s=interval, clock=clock
    )
    return ctx, jobs, clock


def test_progress_is_throttled_monotone_and_reaches_one():
    ctx, jobs, clock = make_context(interval=0.5)
    for step in range(1, 21):  # 20 steps, 0.1 s apart: 2 s in all
        clock.now += 0.1
        ctx.report_progress(step / 20, f"step {step}", step=step, total=20)
    ctx.report_progress(0.3, "late, lower report")  # must not move the bar back
    ctx.report_progress(1.0, "done")

    fractions = [row[0] for row in jobs.rows]
    assert fractions[0] == pytest.approx(0.05)  # the first step is written at once
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    # 2 s at most one write per 0.5 s, plus the first and the final write.
    assert len(jobs.rows) <= 2 / 0.5 + 2
    assert ctx.state.fraction == 1.0


def test_eta_follows_the_rate_after_the_first_step_and_fraction_is_clamped():
    ctx, jobs, clock = make_context(interval=0.0)
    clock.now += 60.0  # loading the model: no progress yet, and it must not count in the rate
    ctx.report_progress(0.0, "loading model")
    clock.now += 5.0
    ctx.report_progress(0.2, step=1, total=5)
    assert jobs.rows[-1][4] is None  # one point gives no rate
    clock.now += 30.0  # the first step carries the warm-up: it must not count either
    ctx.report_progress(0.4, step=2, total=5)
    assert jobs.rows[-1][4] is None
    clock.now += 10.0
    ctx.report_progress(0.6, step=3, total=5)
    assert jobs.rows[-1][4] == pytest.approx(20.0)  # a fifth per 10 s: two fifths to go
    clock.now += 10.0
    ctx.report_progress(2.0)
    assert jobs.rows[-1][0] == 1.0 and jobs.rows[-1][4] == pytest.approx(0.0)


def test_a_training_s_first_eta_is_not_thrown_by_its_slow_first_step():
    """2,000 steps of 0.1 s after a first step of 12 s (references encoded, caches warmed): the first ETA shown
    is the time the steps left take, not 2,000 times the first step."""
    ctx, jobs, clock = make_context(interval=0.0)
    ctx.report_progress(0.05, "training Kai's lora", step=0, total=2000)
    clock.now += 12.0
    ctx.report_progress(0.05 + 0.9 / 2000, step=1, total=2000)
    assert jobs.rows[-1][4] is None
    for step in range(2, 6):
        clock.now += 0.1
        fraction = 0.05 + 0.9 * step / 2000
        ctx.report_progress(fraction, step=step, total=2000)
        # what is left at 0.1 s a step (the saving share at the same rate): about 3:31, not 3½ hours
        assert jobs.rows[-1][4] == pytest.approx(0.1 * (1 - fraction) / (0.9 / 2000))


def test_preview_is_stored_as_an_asset_and_always_written():
    ctx, jobs, clock = make_context(interval=100.0)
    ctx.report_progress(0.1)
    ctx.report_progress(0.2, preview=b"\x89PNG fake")
    assert len(jobs.rows) == 2  # the throttle does not hold a preview back
    assert jobs.rows[-1][5] == 1
    assert ctx.services.assets.stored[0][1:] == ("preview", "image/png")


def test_cancel_is_read_on_every_check_and_sticks():
    ctx, jobs, clock = make_context()
    assert ctx.should_cancel() is False and ctx.should_cancel() is False
    assert jobs.cancel_reads == 2
    jobs.cancel = True
    with pytest.raises(JobCancelled):
        ctx.check_cancelled()
    jobs.cancel = False
    assert ctx.should_cancel() is True  # once seen, a cancel is never forgotten


def test_worker_stop_interrupts_the_job():
    ctx, jobs, clock = make_context()
    stopping = False
    ctx.stop_requested = lambda: stopping
    assert ctx.should_cancel() is False
    stopping = True
    with pytest.raises(WorkerStopping):
        ctx.should_cancel()
