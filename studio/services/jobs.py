"""The job queue in the database: enqueue, atomic claim, progress, heartbeat, cancel, finish, fail, recovery.

Claims are atomic across processes and machines: SQLite takes the write lock at BEGIN (BEGIN IMMEDIATE), so two
claimers are serialised; PostgreSQL locks the chosen row with SELECT ... FOR UPDATE SKIP LOCKED, so concurrent
claimers skip each other's rows instead of waiting. Order: priority (higher first), then first come first served.

Status moves: queued -> running -> done | failed | cancelled; queued -> cancelled. A cancel of a running job only
sets `cancel_requested`; the worker stops within a step and calls `mark_cancelled` (a late `finish` keeps it
cancelled). A worker that died is found by `recover_stale_jobs` (no heartbeat for too long): the job is queued
again until MAX_ATTEMPTS claims were used, then failed.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from studio.db import models
from studio.db.engine import Database
from studio.db.models import JOB_STATUSES, utcnow
from studio.services.convert import job_view
from studio.services.errors import ConflictError, NotFoundError, ValidationError, get_or_not_found
from studio.services.job_specs import GENERATION_SPECS, SPECS, GenerateScene, JobSpec, RegenerateShot, spec_of
from studio.services.views import JobView

MAX_ATTEMPTS = 3
FINISHED_STATUSES = ("done", "failed", "cancelled")
GENERATION_KINDS = tuple(spec.job_kind for spec in GENERATION_SPECS)


def _check_json(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValidationError(f"{what} must be JSON data (dicts, lists, strings, numbers): {error}") from None


def _live_shot_ids(session, project_id: int, scene_id: int | None, shot_ids: list[int] | None) -> set[int]:
    """The ids among the project's live shots (neither they nor their scene in the bin), of `scene_id` when given,
    among `shot_ids` when given."""
    query = (
        select(models.Shot.id)
        .join(models.Scene)
        .where(
            models.Scene.project_id == project_id,
            models.Scene.deleted_at.is_(None),
            models.Shot.deleted_at.is_(None),
        )
    )
    if scene_id is not None:
        query = query.where(models.Shot.scene_id == scene_id)
    if shot_ids is not None:
        query = query.where(models.Shot.id.in_(shot_ids))
    return set(session.scalars(query))


class JobService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def enqueue(self, spec: JobSpec, project_id: int | None = None, priority: int = 0) -> JobView:
        """Queue the job `spec` describes (`studio.services.job_specs`); its payload is `spec.to_payload()`.

        A generation needs its project and records the shots it makes takes of (`target_shot_ids`). The same request
        for the same shots (a double click, a second tab, the CLI) joins the pending job: the answer is that job,
        with `joined` set. A generation whose shots overlap a pending generation of other shots is refused
        (ConflictError naming the job): it would make a second take of those shots from the same storyboard. The
        check and the insert are one write-locked unit of work, so two requests at once cannot both pass it."""
        if not isinstance(spec, JobSpec):
            raise ValidationError(
                f"enqueue takes a job spec (studio.services.job_specs: {', '.join(SPECS)}), got {type(spec).__name__}"
            )
        if not isinstance(priority, int) or not -1000 <= priority <= 1000:
            raise ValidationError("priority must be an integer between -1000 and 1000")
        generation = isinstance(spec, GENERATION_SPECS)
        if generation and project_id is None:
            raise ValidationError(f"a {spec.job_kind} job needs its project_id")
        with self.db.unit_of_work(write_lock=generation) as session:
            if project_id is not None and session.get(models.Project, project_id) is None:
                raise NotFoundError(f"project {project_id} does not exist")
            if generation:
                spec = replace(spec, target_shot_ids=self._requested_targets(session, spec, project_id))
                joined = self._pending_generation(session, spec, project_id)
                if joined is not None:
                    return job_view(joined, joined=True)
            payload = spec.to_payload()
            _check_json(payload, "the job payload")
            job = models.Job(
                kind=spec.job_kind, payload=payload, project_id=project_id, priority=priority, status="queued"
            )
            session.add(job)
            session.flush()
            return job_view(job)

    def pending_generation(self, spec: GenerateScene | RegenerateShot, project_id: int) -> JobView | None:
        """What `enqueue` would do with this generation, without queueing: the pending job it would join (or
        None), or its ConflictError. A caller that changes the storyboard before queueing (a new caption) asks
        first."""
        with self.db.unit_of_work(read_only=True) as session:
            spec = replace(spec, target_shot_ids=self._requested_targets(session, spec, project_id))
            joined = self._pending_generation(session, spec, project_id)
            return None if joined is None else job_view(joined, joined=True)

    @staticmethod
    def _requested_targets(session, spec: GenerateScene | RegenerateShot, project_id: int) -> list[int]:
        """The shots a generation request makes takes of: its shot, its shot_ids, else every live shot of its scene;
        each must be a live shot of the project (of the scene, for a scene's) or a NotFoundError says which is not."""
        scene_id = spec.scene_id if isinstance(spec, GenerateScene) else None
        wanted = [spec.shot_id] if isinstance(spec, RegenerateShot) else spec.shot_ids
        live = _live_shot_ids(session, project_id, scene_id, wanted)
        if wanted is None:
            if not live:
                scene = session.get(models.Scene, scene_id)
                if scene is None or scene.project_id != project_id or scene.deleted_at is not None:
                    raise NotFoundError(f"scene {scene_id} is not a live scene of project {project_id}")
                raise ValidationError("the scene has no shots; add a shot before generating")
            return sorted(live)
        missing = [shot_id for shot_id in wanted if shot_id not in live]
        if missing:
            where = f"scene {scene_id}" if scene_id is not None else f"project {project_id}"
            raise NotFoundError(f"shot {missing[0]} is not a live shot of {where}")
        return sorted(live)

    def _pending_generation(self, session, spec: GenerateScene | RegenerateShot, project_id: int) -> models.Job | None:
        targets = set(spec.target_shot_ids or ())
        only_missing = getattr(spec, "only_missing", False)
        pending = session.scalars(
            select(models.Job)
            .where(
                models.Job.project_id == project_id,
                models.Job.kind.in_(GENERATION_KINDS),
                models.Job.status.in_(("queued", "running")),
            )
            .order_by(models.Job.id)
        ).all()
        for job in pending:
            theirs = self._generation_targets(session, job)
            same_request = job.kind == spec.job_kind and bool((job.payload or {}).get("only_missing")) == only_missing
            if same_request and theirs == targets and not job.cancel_requested:
                return job
            if theirs & targets:
                raise ConflictError(
                    f"{'that shot is' if len(targets) == 1 else 'some of those shots are'} already being "
                    f"generated by job {job.id} ({job.status}); wait for it to finish, or cancel it in the Jobs "
                    "panel first"
                )
        return None

    @staticmethod
    def _generation_targets(session, job: models.Job) -> set[int]:
        """The shots a pending generation makes takes of, as `enqueue` recorded them; for a job whose payload has
        none, read from its spec (a scene's live shots, or its shot_ids, or its one shot)."""
        try:
            spec = spec_of(job)
        except ValidationError:  # a payload no spec reads fails when a worker takes it; it holds no shots meanwhile
            return set()
        if spec.target_shot_ids:
            return set(spec.target_shot_ids)
        if isinstance(spec, RegenerateShot):
            return {spec.shot_id}
        return _live_shot_ids(session, job.project_id, spec.scene_id, spec.shot_ids)

    def claim_next_job(self, worker_id: str, kinds: tuple[str, ...] | list[str] | None = None) -> JobView | None:
        """Take the next queued job for `worker_id` (None when the queue is empty). Atomic across processes."""
        if not worker_id:
            raise ValidationError("a worker id is required to claim a job")
        with self.db.unit_of_work(write_lock=True) as session:
            query = select(models.Job).where(models.Job.status == "queued")
            if kinds:
                query = query.where(models.Job.kind.in_(list(kinds)))
            query = query.order_by(models.Job.priority.desc(), models.Job.id).limit(1)
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            job = session.scalars(query).first()
            if job is None:
                return None
            now = utcnow()
            job.status = "running"
            job.worker_id = worker_id
            job.started_at = now
            job.heartbeat_at = now
            job.attempts += 1
            job.progress = 0.0
            job.message = "started"
            job.error = None
            job.result = None  # a partial result of an earlier attempt is that attempt's
            session.flush()
            return job_view(job)

    def report_progress(
        self,
        job_id: int,
        fraction: float,
        message: str = "",
        step: int | None = None,
        total: int | None = None,
        eta_s: float | None = None,
        preview_asset_id: int | None = None,
    ) -> JobView:
        if not isinstance(fraction, int | float) or math.isnan(fraction) or not 0.0 <= fraction <= 1.0:
            raise ValidationError(f"progress must be a fraction between 0 and 1, got {fraction!r}")
        with self.db.unit_of_work() as session:
            job = self._running(session, job_id)
            job.progress = float(fraction)
            job.message = message
            if step is not None:
                job.step = step
            if total is not None:
                job.total_steps = total
            job.eta_s = eta_s
            if preview_asset_id is not None:
                job.preview_asset_id = preview_asset_id
            job.heartbeat_at = utcnow()
            session.flush()
            return job_view(job)

    def report_partial_result(self, job_id: int, data: dict) -> JobView:
        """What a running job has so far (e.g. a training's loss points), readable while it runs as its `result`
        with `"partial": True`; `finish` replaces it with the final result. Only a running job takes one."""
        if not isinstance(data, dict):
            raise ValidationError("a partial result must be a dict")
        _check_json(data, "the partial result")
        with self.db.unit_of_work() as session:
            job = self._running(session, job_id)
            job.result = {**data, "partial": True}
            job.heartbeat_at = utcnow()
            session.flush()
            return job_view(job)

    def heartbeat(self, job_id: int, worker_id: str) -> JobView:
        """Prove the worker is alive; refused (ConflictError) when the job is no longer this worker's."""
        with self.db.unit_of_work() as session:
            job = self._running(session, job_id)
            if job.worker_id != worker_id:
                raise ConflictError(f"job {job_id} belongs to worker {job.worker_id!r}, not {worker_id!r}; stop it")
            job.heartbeat_at = utcnow()
            session.flush()
            return job_view(job)

    def request_cancel(self, job_id: int) -> JobView:
        """Cancel a queued job now, or ask the worker to stop a running one (it stops within a step)."""
        with self.db.unit_of_work() as session:
            job = self._job(session, job_id)
            if job.status in ("done", "failed"):
                raise ConflictError(f"job {job_id} already {'finished' if job.status == 'done' else 'failed'}")
            if job.status == "queued":
                job.status = "cancelled"
                job.finished_at = utcnow()
                job.message = "cancelled before it started"
            job.cancel_requested = True
            session.flush()
            return job_view(job)

    def is_cancel_requested(self, job_id: int) -> bool:
        with self.db.unit_of_work(read_only=True) as session:
            return bool(self._job(session, job_id).cancel_requested)

    def finish(self, job_id: int, result: dict) -> JobView:
        if not isinstance(result, dict):
            raise ValidationError("a job result must be a dict")
        _check_json(result, "the job result")
        with self.db.unit_of_work() as session:
            job = self._job(session, job_id)
            if job.status == "cancelled":
                return job_view(job)
            if job.status != "running":
                raise ConflictError(f"job {job_id} is {job.status}, not running; it cannot finish")
            job.status = "done"
            job.result = result
            job.progress = 1.0
            job.message = "done"
            job.eta_s = 0.0
            job.finished_at = utcnow()
            session.flush()
            return job_view(job)

    def fail(self, job_id: int, message: str) -> JobView:
        with self.db.unit_of_work() as session:
            job = self._job(session, job_id)
            if job.status in ("cancelled", "failed"):
                return job_view(job)
            if job.status == "done":
                raise ConflictError(f"job {job_id} already finished; it cannot fail")
            job.status = "failed"
            job.error = message
            job.message = message
            job.finished_at = utcnow()
            session.flush()
            return job_view(job)

    def mark_cancelled(self, job_id: int) -> JobView:
        with self.db.unit_of_work() as session:
            job = self._job(session, job_id)
            if job.status == "cancelled":
                return job_view(job)
            if job.status in ("done", "failed"):
                raise ConflictError(f"job {job_id} is already {job.status}; it cannot be cancelled")
            job.status = "cancelled"
            job.cancel_requested = True
            job.message = "cancelled"
            job.finished_at = utcnow()
            session.flush()
            return job_view(job)

    def get(self, job_id: int) -> JobView:
        with self.db.unit_of_work(read_only=True) as session:
            return job_view(self._job(session, job_id))

    def list_jobs(self, status: str | None = None, project_id: int | None = None) -> list[JobView]:
        """Newest first."""
        if status is not None and status not in JOB_STATUSES:
            raise ValidationError(f"unknown job status {status!r}; use one of: {', '.join(JOB_STATUSES)}")
        with self.db.unit_of_work(read_only=True) as session:
            query = select(models.Job).order_by(models.Job.id.desc())
            if status is not None:
                query = query.where(models.Job.status == status)
            if project_id is not None:
                query = query.where(models.Job.project_id == project_id)
            return [job_view(j) for j in session.scalars(query)]

    def recover_stale_jobs(self, heartbeat_timeout_s: float, worker_id: str | None = None) -> list[JobView]:
        """Requeue (or fail, after MAX_ATTEMPTS) running jobs whose worker stopped heartbeating.

        With `worker_id`, every running job of that worker is recovered whatever its heartbeat: a worker calls
        this at start with its own id, since a job it held before a restart can no longer be running.
        """
        cutoff = utcnow() - timedelta(seconds=heartbeat_timeout_s)
        with self.db.unit_of_work(write_lock=True) as session:
            query = select(models.Job).where(models.Job.status == "running")
            if worker_id is not None:
                query = query.where(
                    (models.Job.worker_id == worker_id)
                    | (models.Job.heartbeat_at.is_(None))
                    | (models.Job.heartbeat_at < cutoff)
                )
            else:
                query = query.where((models.Job.heartbeat_at.is_(None)) | (models.Job.heartbeat_at < cutoff))
            recovered = []
            for job in session.scalars(query.order_by(models.Job.id)):
                previous_worker = job.worker_id
                if job.cancel_requested:
                    job.status = "cancelled"
                    job.message = "cancelled (its worker stopped)"
                    job.finished_at = utcnow()
                elif job.attempts >= MAX_ATTEMPTS:
                    job.status = "failed"
                    job.error = f"its worker stopped {job.attempts} times while running it"
                    job.message = job.error
                    job.finished_at = utcnow()
                else:
                    job.status = "queued"
                    job.message = f"requeued: worker {previous_worker} stopped responding"
                    job.worker_id = None
                    job.started_at = None
                    job.progress = 0.0
                    job.step = None
                    job.eta_s = None
                recovered.append(job)
            session.flush()
            return [job_view(j) for j in recovered]

    # Internals ---------------------------------------------------------------------------------------------------

    @staticmethod
    def _job(session, job_id: int) -> models.Job:
        return get_or_not_found(session, models.Job, job_id, "job")

    def _running(self, session, job_id: int) -> models.Job:
        job = self._job(session, job_id)
        if job.status != "running":
            raise ConflictError(f"job {job_id} is {job.status}, not running")
        return job
