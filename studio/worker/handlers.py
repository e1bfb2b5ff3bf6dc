"""Job kind -> handler. A handler takes a `JobContext` and returns the job's result dict.

Handlers of other feature areas keep their own signature `(services, job, report_progress, should_cancel)`;
they are imported lazily so a worker that never sees an export job never imports moviepy, and a missing area
fails only the jobs of its kind, with a message, instead of the whole worker.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from studio.worker.context import JobContext

Handler = Callable[[JobContext], dict]


def _generate_scene(ctx: JobContext) -> dict:
    from studio.generation import run_generate_scene

    return run_generate_scene(ctx)


def _regenerate_shot(ctx: JobContext) -> dict:
    from studio.generation import run_regenerate_shot

    return run_regenerate_shot(ctx)


def _area_handler(module_names: tuple[str, ...], function_name: str) -> Handler:
    """Adapt an area's `(services, job, report_progress, should_cancel)` function to a context handler."""

    def handler(ctx: JobContext) -> dict:
        function = None
        for module_name in module_names:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as error:
                if error.name and module_name.startswith(error.name):
                    continue
                raise
            function = getattr(module, function_name, None)
            if function is not None:
                break
        if function is None:
            raise RuntimeError(
                f"no handler {function_name} in {' or '.join(module_names)}; this install cannot run "
                f"{ctx.job.kind} jobs"
            )
        kwargs = {}
        if "pipelines" in inspect.signature(function).parameters:
            kwargs["pipelines"] = ctx.pipelines  # training reuses the worker's warm base model when it can
        result = function(ctx.services, ctx.job, ctx.report_progress, ctx.should_cancel, **kwargs)
        return result or {}

    return handler


def default_handlers() -> dict[str, Handler]:
    return {
        "generate_scene": _generate_scene,
        "regenerate_shot": _regenerate_shot,
        "train_adapter": _area_handler(("studio.characters_jobs",), "run_train_adapter"),
        "export_film": _area_handler(("studio.export",), "run_export_job"),
    }
