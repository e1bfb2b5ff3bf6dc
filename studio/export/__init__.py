"""Film export and interchange: MP4 (film.py), OpenTimelineIO (timeline.py), project bundles (bundle.py).

`run_export_job` is the worker's `export_film` handler; it is imported lazily so `import studio.export` stays light.
"""

from __future__ import annotations


def run_export_job(services, job, report_progress, should_cancel) -> dict:
    from studio.export.jobs import run_export_job as run

    return run(services, job, report_progress, should_cancel)
