"""The local GPU backend: worker processes that claim queued jobs and run them on this machine's device.

    from studio.worker import start_local_worker, Worker, JobContext
    worker = start_local_worker(settings)      # what `python app.py` does; worker.stop() on shutdown
    Worker(services).run()                    # what `python -m studio.worker --db URL --data-dir DIR` does

Modules: `process` (Worker loop, heartbeats, recovery, the app's restarted child process), `context` (what a job
handler sees: its job's spec, progress, cancel), `handlers` (job kind -> handler), `generation` (the generation
handlers: storyboard shots -> takes), `cache` (warm pipelines), `device`, `retry`, `commands` (`python -m studio
jobs`). The headless render command is `studio.render`.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Worker": "studio.worker.process",
    "LocalWorkerProcess": "studio.worker.process",
    "start_local_worker": "studio.worker.process",
    "JobContext": "studio.worker.context",
    "JobCancelled": "studio.worker.context",
    "PipelineCache": "studio.worker.cache",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'studio.worker' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = list(_LAZY)
