"""`python -m studio.worker --db URL --data-dir DIR`: run one worker until stopped (SIGTERM/SIGINT)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from studio.config import add_settings_arguments, settings_overrides_from_args

# The settings a worker uses (the web UI's host, port and auth are not among them).
WORKER_SETTINGS = (
    "data_dir",
    "database_url",
    "model_preset",
    "device",
    "dtype",
    "offload",
    "vae_tiling",
    "preview_every",
    "heartbeat_s",
    "heartbeat_timeout_s",
    "face_model_dir",
    "model_dir",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m studio.worker",
        description="Run a Shotline worker: claims queued jobs from the database and runs them on this device.",
    )
    add_settings_arguments(parser, only=WORKER_SETTINGS)
    parser.add_argument(
        "--worker-id",
        help="stable id of this worker (default host:pid); a restart with the same id "
        "recovers the jobs it left running at once",
    )
    parser.add_argument("--kinds", help="comma-separated job kinds this worker takes (default: all)")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="seconds between queue polls when idle")
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=0.5,
        help="least seconds between two progress writes of a job (first step and end always written)",
    )
    parser.add_argument("--max-jobs", type=int, help="exit after this many jobs")
    parser.add_argument(
        "--exit-when-idle", action="store_true", help="exit when the queue has nothing for this worker"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--parent-pid", type=int, help="stop (putting the running job back in the queue) when this process is gone"
    )
    parser.add_argument(
        "--preload",
        metavar="PRESET",
        help="load this model preset before taking jobs, so the first one starts warm ('imports' only imports the "
        "model libraries); a failure is logged and the worker goes on",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from studio.config import load_settings

    try:
        settings = load_settings(None, **settings_overrides_from_args(args))
    except Exception as error:  # noqa: BLE001 - a bad value must end in one clear line, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if args.threads:
        # Read by torch when it is first imported (by the first job that needs it), so idle workers stay light.
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    from studio.startup import one_line_errors

    try:
        with one_line_errors(settings.resolved_database_url):
            return _run(args, settings)
    except SystemExit as stop:
        return int(stop.code or 0)


def _run(args, settings) -> int:
    from studio.services import build_services
    from studio.worker.process import Worker, install_signal_handlers

    services = build_services(settings)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip()) if args.kinds else None
    worker = Worker(
        services,
        worker_id=args.worker_id,
        kinds=kinds,
        poll_interval_s=args.poll_interval,
        progress_interval_s=args.progress_interval,
        parent_pid=args.parent_pid,
    )
    install_signal_handlers(worker)
    import studio.worker.generation  # noqa: F401 - light (no torch): the first job should not pay for its imports

    if args.preload:
        worker.preload(args.preload)
    logging.getLogger("studio.worker").info("worker %s ready, kinds=%s", worker.worker_id, kinds or "all")
    worker.run(max_jobs=args.max_jobs, exit_when_idle=args.exit_when_idle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
