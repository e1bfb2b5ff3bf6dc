"""Job kind -> handler. A handler takes a `JobContext` and returns the job's result dict.

Every handler is imported here, so a missing or broken feature area stops the worker at start with its import
error instead of failing its jobs later. The character and export areas keep their own signature
`(services, job, report_progress, should_cancel)`; the adapters below hand them the context's parts.
"""

from __future__ import annotations

from collections.abc import Callable

from studio.characters.training import run_train_adapter
from studio.export.jobs import run_export_job
from studio.worker.context import JobContext
from studio.worker.generation import run_generate_scene, run_regenerate_shot

Handler = Callable[[JobContext], dict]


def train_adapter(ctx: JobContext) -> dict:
    # Training reuses the worker's warm base model when it can.
    result = run_train_adapter(ctx.services, ctx.job, ctx.report_progress, ctx.should_cancel, pipelines=ctx.pipelines)
    return result or {}


def export_film(ctx: JobContext) -> dict:
    return run_export_job(ctx.services, ctx.job, ctx.report_progress, ctx.should_cancel) or {}


HANDLERS: dict[str, Handler] = {
    "generate_scene": run_generate_scene,
    "regenerate_shot": run_regenerate_shot,
    "train_adapter": train_adapter,
    "export_film": export_film,
}


def default_handlers() -> dict[str, Handler]:
    """A fresh copy of `HANDLERS` (a worker may replace some of its entries)."""
    return dict(HANDLERS)
