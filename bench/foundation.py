"""Benchmarks of the studio core (database, asset store, job queue, storyboard file); prints a table per backend.

    .venv/bin/python bench/foundation.py [--postgres] [--shots 200]

Numbers are medians of a few repeats on whatever machine runs this; docs/PERFORMANCE.md records them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studio.config import load_settings  # noqa: E402
from studio.services import build_services  # noqa: E402
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
    for n in range(jobs):
        services.jobs.enqueue("generate_scene", {"n": n})
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
            elapsed = timed(lambda: [services.jobs.enqueue("export_film", {"n": 1}) for _ in range(count)], 1)
            rows.append(("enqueue a job", f"{elapsed / count * 1e3:.2f} ms"))
            for job in services.jobs.list_jobs(status="queued"):
                services.jobs.request_cancel(job.id)
            rows.append(("claim, 1 process (jobs/s)", f"{claim_rate(services, 1, 300):.0f}"))
            rows.append(("claim, 2 processes at once (jobs/s, total)", f"{claim_rate(services, 2, 300):.0f}"))
            job = services.jobs.enqueue("generate_scene", {})
            services.jobs.claim_next_job("bench")
            elapsed = timed(lambda: [services.jobs.report_progress(job.id, 0.5, "step") for _ in range(100)], 1)
            rows.append(("report_progress", f"{elapsed / 100 * 1e3:.2f} ms"))

            for size_mb in (1, 16):
                payloads = [os.urandom(size_mb * 1024 * 1024) for _ in range(3)]
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
            rows.append(
                (f"parse a {doc.shot_count}-shot storyboard", f"{timed(lambda: parse_storyboard(text)) * 1e3:.0f} ms")
            )
            t0 = time.perf_counter()
            report = import_storyboard(services, doc, Path(tmp))
            rows.append((f"first import, {doc.shot_count} shots", f"{(time.perf_counter() - t0) * 1e3:.0f} ms"))
            rows.append(
                (
                    f"re-import unchanged, {doc.shot_count} shots",
                    f"{timed(lambda: import_storyboard(services, doc, Path(tmp))) * 1e3:.0f} ms",
                )
            )
            rows.append(
                (
                    f"list_scenes, {doc.shot_count} shots",
                    f"{timed(lambda: services.storyboard.list_scenes(report.project_id), 5) * 1e3:.1f} ms",
                )
            )
            rows.append(
                (
                    f"export storyboard, {doc.shot_count} shots",
                    f"{timed(lambda: export_storyboard(services, report.project_id)) * 1e3:.0f} ms",
                )
            )
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
    parser.add_argument("--shots", type=int, default=200, help="shots in the big storyboard")
    args = parser.parse_args()
    rows = bench(None, "SQLite", args.shots)
    if args.postgres and (url := _postgres_url()):
        try:
            rows += bench(url, "PostgreSQL", args.shots)
        finally:
            _drop(url)
    width = max(len(name) for name, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"| {'-' * width} | ----- |")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
