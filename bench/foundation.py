"""Benchmarks of the studio core (database, asset store, job queue, storyboard file); prints a table per backend.

    .venv/bin/python bench/foundation.py [--postgres] [--shots 200] [--storyboard-sizes 100 1000 10000]

Numbers are medians of a few repeats on whatever machine runs this; docs/PERFORMANCE.md records them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studio.config import load_settings  # noqa: E402
from studio.services import build_services  # noqa: E402
from studio.services.job_specs import ExportFilm, GenerateScene  # noqa: E402
from studio.storyboard_file import export_storyboard, import_storyboard, parse_storyboard  # noqa: E402


def timed(function, repeats: int = 3) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def big_storyboard(scenes: int, shots_per_scene: int) -> str:
    lines = ["title: Bench", "model: demo", "characters:", "  - name: Mara", "  - name: Tom", "scenes:"]
    for s in range(scenes):
        lines += [f"  - caption: scene {s} on a stormy coast", "    shots:"]
        for k in range(shots_per_scene):
            lines += [f"      - caption: shot {k} of scene {s}, Mara by the lamp", "        frames: 17"]
            lines += ["        characters: [Mara, Tom]" if k % 2 else "        characters: [Mara]"]
    return "\n".join(lines) + "\n"


def _claimer(url: str, worker_id: str, start, results) -> None:
    from studio.db.engine import Database
    from studio.services.jobs import JobService

    db = Database(url)
    jobs = JobService(db)
    start.wait()
    count = 0
    while jobs.claim_next_job(worker_id) is not None:
        count += 1
    db.dispose()
    results.put(count)


def claim_rate(services, processes: int, jobs: int) -> float:
    for _ in range(jobs):
        services.jobs.enqueue(ExportFilm())
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    workers = [
        context.Process(target=_claimer, args=(services.db.url, f"w{i}", start, results)) for i in range(processes)
    ]
    for worker in workers:
        worker.start()
    time.sleep(3)  # let the children import before the clock starts
    started = time.perf_counter()
    start.set()
    claimed = sum(results.get(timeout=300) for _ in workers)
    elapsed = time.perf_counter() - started
    for worker in workers:
        worker.join()
    assert claimed == jobs, (claimed, jobs)
    return jobs / elapsed


def generation_enqueue_rows(services, count: int = 50) -> list[tuple[str, str]]:
    """A scene generation of 10 shots as the page queues it: its shots checked and pending generations compared
    under the write lock, then queued (a new request) or answered with the pending job (a double click)."""
    project = services.projects.create("enqueue bench", preset="tiny")
    scene = services.storyboard.add_scene(project.id)
    for n in range(10):
        services.storyboard.add_shot(scene.id, f"shot {n}")
    spec = GenerateScene(scene_id=scene.id)
    new = []
    for _ in range(count):
        started = time.perf_counter()
        job = services.jobs.enqueue(spec, project.id)
        new.append(time.perf_counter() - started)
        services.jobs.request_cancel(job.id)  # no longer pending: the next request is queued anew
    services.jobs.enqueue(spec, project.id)
    joined = timed(lambda: [services.jobs.enqueue(spec, project.id) for _ in range(count)], 1)
    for job in services.jobs.list_jobs(status="queued", project_id=project.id):
        services.jobs.request_cancel(job.id)
    return [
        ("queue a 10-shot scene generation (checked, under the write lock)", f"{statistics.median(new) * 1e3:.2f} ms"),
        ("the same request again (joins the pending job)", f"{joined / count * 1e3:.2f} ms"),
    ]


def bench(url: str | None, label: str, shots: int) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        services = build_services(load_settings(data_dir=Path(tmp) / "data", database_url=url))
        rows.append(
            ("start on an empty database (migrate + sweep)", f"{(time.perf_counter() - started) * 1e3:.0f} ms")
        )
        try:
            count = 200
            elapsed = timed(lambda: [services.jobs.enqueue(ExportFilm()) for _ in range(count)], 1)
            rows.append(("enqueue a job", f"{elapsed / count * 1e3:.2f} ms"))
            for job in services.jobs.list_jobs(status="queued"):
                services.jobs.request_cancel(job.id)
            rows += generation_enqueue_rows(services)
            rows.append(("claim, 1 process (jobs/s)", f"{claim_rate(services, 1, 300):.0f}"))
            rows.append(("claim, 2 processes at once (jobs/s, total)", f"{claim_rate(services, 2, 300):.0f}"))
            job = services.jobs.enqueue(ExportFilm())
            services.jobs.claim_next_job("bench")
            elapsed = timed(lambda: [services.jobs.report_progress(job.id, 0.5, "step") for _ in range(100)], 1)
            rows.append(("report_progress", f"{elapsed / 100 * 1e3:.2f} ms"))

            for size_mb in (1, 16):
                # a first byte that is no "<": random bytes that start like markup are refused by the asset gate
                payloads = [b"\xff" + os.urandom(size_mb * 1024 * 1024 - 1) for _ in range(3)]
                samples = []
                for data in payloads:
                    t0 = time.perf_counter()
                    services.assets.put_bytes(data, "bench", "application/json")
                    samples.append(time.perf_counter() - t0)
                rows.append(
                    (
                        f"asset put_bytes {size_mb} MB (hash + fsync + rename + row)",
                        f"{statistics.median(samples) * 1e3:.1f} ms",
                    )
                )

            per_scene = 10
            text = big_storyboard(max(1, shots // per_scene), per_scene)
            doc = parse_storyboard(text, "bench.yaml")
            report = import_storyboard(services, doc, Path(tmp))
            scene = services.storyboard.list_scenes(report.project_id)[0]
            ids = [s.id for s in scene.shots][::-1]
            rows.append(
                (
                    "reorder 10 shots",
                    f"{timed(lambda: services.storyboard.reorder_shots(scene.id, ids), 5) * 1e3:.1f} ms",
                )
            )

            def update_caption() -> None:
                services.storyboard.update_shot(ids[0], caption=uuid.uuid4().hex)

            rows.append(("update one shot caption", f"{timed(update_caption, 5) * 1e3:.1f} ms"))
            rows.append(("orphan sweep (nothing to remove)", f"{timed(services.assets.sweep_orphans) * 1e3:.1f} ms"))
        finally:
            services.close()
    return [(f"{label}: {name}", value) for name, value in rows]


class WriterProbe:
    """Another writer during an import: a thread that enqueues a job every 20 ms and records how long each waited
    (what the import's write transaction makes other writers wait)."""

    def __init__(self, services) -> None:
        self.services = services
        self.waits: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            job = self.services.jobs.enqueue(ExportFilm())
            self.waits.append(time.perf_counter() - started)
            self.services.jobs.request_cancel(job.id)
            self._stop.wait(0.02)

    def __enter__(self) -> WriterProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def storyboard_scaling(url: str | None, sizes: list[int]) -> list[tuple]:
    """Parse, first import (with another writer's longest wait), unchanged re-import, list and export, per size."""
    rows = []
    for shots in sizes:
        if url:
            _clear(url)  # every size starts from an empty studio
        with tempfile.TemporaryDirectory() as tmp:
            services = build_services(load_settings(data_dir=Path(tmp) / "data", database_url=url))
            try:
                text = big_storyboard(max(1, shots // 10), min(10, shots))
                t0 = time.perf_counter()
                doc = parse_storyboard(text, "bench.yaml")
                parse_s = time.perf_counter() - t0
                with WriterProbe(services) as probe:
                    t0 = time.perf_counter()
                    report = import_storyboard(services, doc, Path(tmp))
                    import_s = time.perf_counter() - t0
                assert report.shots_created == doc.shot_count, report
                t0 = time.perf_counter()
                again = import_storyboard(services, doc, Path(tmp))
                reimport_s = time.perf_counter() - t0
                assert not again.changed, again.summary()
                t0 = time.perf_counter()
                services.storyboard.list_scenes(report.project_id)
                list_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                export_storyboard(services, report.project_id)
                export_s = time.perf_counter() - t0
                rows.append(
                    (
                        doc.shot_count,
                        parse_s,
                        import_s,
                        max(probe.waits),
                        len(probe.waits),
                        reimport_s,
                        list_s,
                        export_s,
                    )
                )
            finally:
                services.close()
    return rows


def _clear(url: str) -> None:
    """Empty a bench PostgreSQL database between sizes (each size starts from an empty studio)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def _postgres_url() -> str | None:
    try:
        import psycopg

        name = f"shotline_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="test", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    except Exception as error:  # noqa: BLE001
        print(f"PostgreSQL skipped: {error}")
        return None


def _drop(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="test", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", action="store_true", help="also run against 127.0.0.1:5432")
    parser.add_argument("--shots", type=int, default=200, help="shots in the storyboard of the edit rows")
    parser.add_argument(
        "--storyboard-sizes", type=int, nargs="*", default=[100, 1000, 10_000], help="shots of the import table"
    )
    args = parser.parse_args()
    rows = bench(None, "SQLite", args.shots)
    scaling = [("SQLite", row) for row in storyboard_scaling(None, args.storyboard_sizes)]
    if args.postgres and (url := _postgres_url()):
        try:
            rows += bench(url, "PostgreSQL", args.shots)
            scaling += [("PostgreSQL", row) for row in storyboard_scaling(url, args.storyboard_sizes)]
        finally:
            _drop(url)
    width = max(len(name) for name, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"| {'-' * width} | ----- |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")
    print()
    print(
        "| database | shots | parse s | first import s | other writer's longest wait ms (probes) "
        "| re-import unchanged s | list_scenes s | export s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for database, (count, parse_s, import_s, wait, probes, reimport_s, list_s, export_s) in scaling:
        print(
            f"| {database} | {count} | {parse_s:.2f} | {import_s:.2f} | {wait * 1e3:.0f} ({probes}) "
            f"| {reimport_s:.2f} | {list_s:.2f} | {export_s:.2f} |"
        )


if __name__ == "__main__":
    main()
