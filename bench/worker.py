"""Worker overhead benchmark: queue latency (enqueue -> start, result -> visible) and cold vs warm pipeline start.

    .venv/bin/python bench/worker.py [--jobs 20] [--db postgresql+psycopg://postgres@127.0.0.1:5432/test]

Runs real `python -m studio.worker` subprocesses against a throw-away data dir (SQLite unless --db is given; a
PostgreSQL database given here is used as is, so point it at a scratch database).

Table 1 uses jobs that find nothing to generate (every shot already has a take), so it measures the queue and
nothing else: enqueue -> start is the claim latency (half the poll interval on average, plus the claim
transaction); result -> visible is the time from the worker's finish() commit until a UI-like poller (every
`--ui-poll` seconds) sees `done`. Table 2 runs the tiny preset (2 shots x 5 frames, 32x32, 2 steps): the first job
of a fresh worker pays the imports and the pipeline build (cold), the next ones reuse the warm pipeline.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from studio.services.job_specs import job_spec  # noqa: E402
from studio.worker.retry import retry_db  # noqa: E402
from tests.worker.helpers import spawn_worker, stop_worker, tiny_project, wait_for_log  # noqa: E402


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fill_takes(services, shot_ids) -> None:
    import numpy as np
    import torch

    from studio.worker.generation import encode_latents, encode_mp4, encode_png

    frames = np.zeros((5, 32, 32, 3), dtype=np.uint8)
    for shot_id in shot_ids:
        services.takes.add_take(
            shot_id, None, video=encode_mp4(frames, 8), thumbnail=encode_png(frames[0]),
            latents=encode_latents(torch.zeros(1, 16, 2, 4, 4)), seed=1,
            params={"model": "tiny", "width": 32, "height": 32},
        )  # fmt: skip


def run_job(services, payload, project_id, ui_poll_s):
    """Enqueue, poll like the UI, return (job view, seen_done_at)."""
    job = retry_db(services.jobs.enqueue, job_spec("generate_scene", payload), project_id)
    while True:
        view = services.jobs.get(job.id)
        if view.is_finished:
            return view, utcnow()
        time.sleep(ui_poll_s)


def queue_overhead(settings, services, scene_id, project_id, poll_s, jobs, ui_poll_s, log):
    worker = spawn_worker(settings, f"bench-poll-{poll_s}", log, "--poll-interval", str(poll_s))
    try:
        wait_for_log(log, "ready", worker)
        start_ms, visible_ms, run_ms = [], [], []
        for _ in range(jobs):
            view, seen = run_job(services, {"scene_id": scene_id, "only_missing": True}, project_id, ui_poll_s)
            assert view.status == "done", view.error
            start_ms.append((view.started_at - view.created_at).total_seconds() * 1000)
            run_ms.append((view.finished_at - view.started_at).total_seconds() * 1000)
            visible_ms.append((seen - view.finished_at).total_seconds() * 1000)
        return start_ms, run_ms, visible_ms
    finally:
        stop_worker(worker)


def cold_warm(settings, services, scene_id, project_id, runs, ui_poll_s, log, preload=None):
    """Start a fresh worker (optionally preloading the preset), then time `runs` scene jobs one after another."""
    started = time.perf_counter()
    extra = ("--poll-interval", "0.05") + (("--preload", preload) if preload else ())
    worker = spawn_worker(settings, f"bench-tiny-{preload or 'cold'}", log, *extra)
    try:
        wait_for_log(log, "ready", worker)
        if preload:
            wait_for_log(log, f"preloaded {preload}", worker)
        ready_s = time.perf_counter() - started
        rows = []
        for index in range(runs):
            enqueued = time.perf_counter()
            view, _ = run_job(services, {"scene_id": scene_id}, project_id, ui_poll_s)
            assert view.status == "done", view.error
            kind = ("preloaded" if preload else "cold") if index == 0 else "warm"
            rows.append((kind, time.perf_counter() - enqueued, view.result["timings"]))
        return ready_s, rows
    finally:
        stop_worker(worker)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20, help="no-op jobs per poll interval")
    parser.add_argument("--polls", default="0.05,0.5", help="worker poll intervals to compare (seconds)")
    parser.add_argument("--ui-poll", type=float, default=0.01, help="how often the benchmark (the 'UI') polls")
    parser.add_argument("--runs", type=int, default=4, help="tiny generation jobs on one worker (1 cold + warm)")
    parser.add_argument("--db", help="database URL (default: SQLite in a temp dir)")
    parser.add_argument("--queue-only", action="store_true", help="skip the tiny-preset generation table")
    args = parser.parse_args()

    from studio.config import load_settings
    from studio.services import build_services

    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        tmp_path = Path(tmp)
        settings = load_settings(data_dir=tmp_path / "data", database_url=args.db)
        services = build_services(settings)
        noop_project, noop_scene, noop_shots = tiny_project(services, name="bench-noop")
        fill_takes(services, noop_shots)
        project, scene_id, _ = tiny_project(services, name="bench-tiny")
        dialect = settings.resolved_database_url.split(":", 1)[0]

        print(
            f"\nQueue overhead ({dialect}, {args.jobs} no-op jobs each, UI polls every {args.ui_poll * 1000:.0f} ms)"
        )
        print(f"{'worker poll':>12} | {'enqueue->start ms (median / p95)':>34} | {'job run ms':>10} | "
              f"{'result->visible ms (median / p95)':>34}")  # fmt: skip
        for poll in (float(p) for p in args.polls.split(",")):
            start_ms, run_ms, visible_ms = queue_overhead(
                settings, services, noop_scene, noop_project.id, poll, args.jobs, args.ui_poll, tmp_path / "q.log"
            )
            print(
                f"{poll:>10.2f} s | {statistics.median(start_ms):>15.1f} / {percentile(start_ms, 0.95):>16.1f} | "
                f"{statistics.median(run_ms):>10.1f} | "
                f"{statistics.median(visible_ms):>15.1f} / {percentile(visible_ms, 0.95):>16.1f}"
            )

        if args.queue_only:
            services.close()
            return
        print("\nTiny preset scene (2 shots x 5 frames, 32x32, 2 steps), one fresh worker per block")
        print(
            f"{'run':>9} | {'worker start->ready s':>21} | {'enqueue->done s':>15} | {'pipeline get s':>14} | "
            f"{'generate s':>10} | {'write takes s':>13}"
        )
        for preload, runs in ((None, args.runs), ("tiny", 1)):
            ready_s, rows = cold_warm(
                settings, services, scene_id, project.id, runs, args.ui_poll, tmp_path / "g.log", preload
            )
            for kind, total, timings in rows:
                print(
                    f"{kind:>9} | {ready_s if kind != 'warm' else 0:>21.2f} | {total:>15.3f} | "
                    f"{timings['pipeline_s']:>14.3f} | {timings['generate_s']:>10.3f} | {timings['write_s']:>13.3f}"
                )
        services.close()


if __name__ == "__main__":
    main()
