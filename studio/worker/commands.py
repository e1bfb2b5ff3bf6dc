"""CLI commands of the worker area: `python -m studio jobs [--status S]` and `python -m studio jobs cancel ID`."""

from __future__ import annotations

import sys

STATUSES = ("queued", "running", "done", "failed", "cancelled")


def register(subparsers) -> None:
    jobs = subparsers.add_parser("jobs", help="list jobs, or cancel one (jobs cancel ID)")
    jobs.add_argument("--status", choices=STATUSES, help="only jobs with this status")
    jobs.add_argument("--project", help="only jobs of this project (name or id)")
    jobs.set_defaults(func=list_jobs)
    actions = jobs.add_subparsers(dest="jobs_action")
    cancel = actions.add_parser("cancel", help="ask a queued or running job to stop")
    cancel.add_argument("job_id", help="id of the job (see `jobs`)")
    cancel.set_defaults(func=cancel_job)


def _project_id(services, ref: str | None):
    if ref is None:
        return None
    return services.projects.find(ref).id


def format_job_row(job) -> str:
    progress = f"{100 * (job.progress or 0.0):5.1f}%"
    step = getattr(job, "step", None)
    total = getattr(job, "total_steps", None)
    if step is not None and total:
        progress += f" {step}/{total}"
    eta_s = getattr(job, "eta_s", None)
    if job.status == "running" and eta_s is not None:
        minutes, seconds = divmod(round(eta_s), 60)
        progress += f" ~{minutes}m{seconds:02d}s"
    message = (job.message or "").replace("\n", " ")
    return f"{job.id!s:>6}  {job.kind:<16}{job.status:<10}{progress:<24}{message}"


def list_jobs(args, services) -> int:
    jobs = services.jobs.list_jobs(status=args.status, project_id=_project_id(services, args.project))
    print(f"{'id':>6}  {'kind':<16}{'status':<10}{'progress':<24}message")
    for job in jobs:
        print(format_job_row(job))
    return 0


def cancel_job(args, services) -> int:
    from studio.services.errors import ServiceError

    job_id = int(args.job_id) if args.job_id.isdigit() else args.job_id
    try:
        job = services.jobs.request_cancel(job_id)
    except ServiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    job = job or services.jobs.get(job_id)
    print(
        f"job {job.id}: {job.status}"
        + (" (cancel requested; it stops at its next step)" if job.status == "running" else "")
    )
    return 0
