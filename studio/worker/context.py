"""What a job handler sees while it runs: the services, its job, progress reporting and the cancel flag.

Progress goes to the job row, throttled: a denoising step on a real model takes seconds, on the tiny test model
milliseconds, and the UI polls the row (one indexed primary-key read) instead of a side channel. Writing the row at
most every `progress_interval_s` (0.5 s by default) keeps the database traffic of one job bounded at 2 small
UPDATEs a second whatever the step rate, while the first step, every preview and the end are always written, so a
poller never misses the start or the finish. The row is the only place another machine's UI can read progress from
when workers run elsewhere, which a per-job file under the data dir would not give without a shared filesystem.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from studio.services.job_specs import spec_of


class JobCancelled(Exception):
    """Raised inside a handler (typically from a pipeline step callback) when the job's cancel was requested."""


class WorkerStopping(Exception):
    """Raised inside a running job when its worker was asked to stop; the job goes back to the queue."""


class PrerequisiteFailed(Exception):
    """Raised inside a job whose prerequisite (a job it waited for, `after_jobs`) failed or was cancelled: the job
    fails with this message as the film-maker reads it, instead of running without what it waited for."""


class JobLost(Exception):
    """Raised inside a running job that is no longer this worker's (recovered by another after missed beats)."""


@dataclass
class ProgressState:
    """The last progress the context accepted; fraction never goes down."""

    fraction: float = 0.0
    message: str = ""
    step: int | None = None
    total: int | None = None
    eta_s: float | None = None
    preview_asset_id: int | str | None = None


@dataclass
class JobContext:
    """Handed to every job handler.

    `report_progress(fraction, message, step, total, preview=None)` records progress (monotone, clamped to
    [0, 1], ETA from the rate since the first progress); `preview` is PNG bytes, stored as an asset and linked to
    the job (the job's previous preview is dropped).
    `should_cancel()` reads the job's cancel flag from the database on every call, so a handler that calls it once
    per step stops within one step of the request; `check_cancelled()` raises `JobCancelled` instead.
    """

    services: Any
    job: Any
    worker_id: str
    pipelines: Any = None  # studio.worker.cache.PipelineCache, shared by the jobs of one worker
    stop_requested: Callable[[], bool] | None = None  # the worker's shutdown flag
    lost: Callable[[], bool] | None = None  # set by the heartbeat thread when the job was taken from this worker
    progress_interval_s: float = 0.5
    clock: Callable[[], float] = time.monotonic
    state: ProgressState = field(default_factory=ProgressState)
    started_at: float | None = None
    _last_write_at: float | None = None
    _cancelled: bool = False
    _rate_origin: tuple[float, float] | None = None  # (time, fraction) the ETA's rate is measured from
    _rate_settled: bool = False  # the origin moved past the first step (its warm-up): the rate is the loop's
    writes: int = 0  # progress rows written, for the benchmark and tests

    def __post_init__(self) -> None:
        if self.started_at is None:
            self.started_at = self.clock()

    @property
    def spec(self) -> Any:
        """What the job asks for: its `studio.services.job_specs` spec, read from the payload (a payload that no spec
        reads fails the job with the spec's message)."""
        return spec_of(self.job)

    @property
    def job_id(self):
        return self.job.id

    @property
    def settings(self):
        return self.services.settings

    def report_progress(
        self,
        fraction: float,
        message: str = "",
        step: int | None = None,
        total: int | None = None,
        preview: bytes | None = None,
    ) -> None:
        reached_end = fraction >= 1.0 and self.state.fraction < 1.0
        fraction = min(1.0, max(self.state.fraction, float(fraction)))
        now = self.clock()
        # ETA from the average rate since the second progress point: a model load before the first would skew it,
        # and so would the first step, which carries the loop's warm-up (a training's first step also encodes its
        # references: 12 s against 0.1 s a step, read as hours left). Later per-step rates are nearly constant.
        if fraction > 0 and self._rate_origin is None:
            self._rate_origin = (now, fraction)
        elif fraction > 0 and not self._rate_settled and fraction > self._rate_origin[1]:
            self._rate_origin, self._rate_settled = (now, fraction), True
        eta_s = None
        if self._rate_settled and fraction > self._rate_origin[1]:
            origin_time, origin_fraction = self._rate_origin
            eta_s = (now - origin_time) * (1.0 - fraction) / (fraction - origin_fraction)
        preview_asset_id = None
        if preview is not None:
            asset = self.services.assets.put_bytes(
                preview, kind="preview", mime="image/png", filename=f"job-{self.job_id}-preview.png"
            )
            preview_asset_id = asset.id
        replaced_preview = self.state.preview_asset_id if preview_asset_id is not None else None
        self.state = ProgressState(
            fraction=fraction,
            message=message or self.state.message,
            step=step,
            total=total,
            eta_s=eta_s,
            preview_asset_id=preview_asset_id if preview_asset_id is not None else self.state.preview_asset_id,
        )
        first = self._last_write_at is None
        due = first or now - self._last_write_at >= self.progress_interval_s
        if due or reached_end or preview_asset_id is not None:
            self.flush()
        if replaced_preview is not None and replaced_preview != preview_asset_id:
            self._drop_preview(replaced_preview)

    def flush(self) -> None:
        """Write the latest accepted progress to the job row now."""
        from studio.worker.retry import retry_db

        s = self.state
        retry_db(
            self.services.jobs.report_progress,
            self.job_id,
            s.fraction,
            message=s.message,
            step=s.step,
            total=s.total,
            eta_s=s.eta_s,
            preview_asset_id=s.preview_asset_id,
        )
        self._last_write_at = self.clock()
        self.writes += 1

    def _drop_preview(self, asset_id) -> None:
        """A job keeps only its latest preview frame: the older one is no longer referenced by anything."""
        try:
            with self.services.db.unit_of_work() as session:
                self.services.assets.delete_unreferenced(session, {asset_id})
        except Exception:  # noqa: BLE001 - a leftover preview costs a few KB; never fail the job for it
            pass

    def should_cancel(self) -> bool:
        """True once the job's cancel was requested. Raises WorkerStopping / JobLost when the worker must let go."""
        if self.lost is not None and self.lost():
            raise JobLost(f"job {self.job_id} was recovered by another worker after missed heartbeats")
        if self.stop_requested is not None and self.stop_requested():
            raise WorkerStopping(f"worker stopped while job {self.job_id} was running")
        return self.cancel_requested()

    def cancel_requested(self) -> bool:
        """The cancel flag only (no stop or loss check): for the stretch where results are being written."""
        if not self._cancelled:
            self._cancelled = bool(self.services.jobs.is_cancel_requested(self.job_id))
        return self._cancelled

    def check_cancelled(self) -> None:
        if self.should_cancel():
            raise JobCancelled(f"job {self.job_id} was cancelled")
