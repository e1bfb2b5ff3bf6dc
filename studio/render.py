"""Headless rendering: `python -m studio render STORYBOARD.yaml --out film.mp4 [--regenerate SHOT]`.

The flow (docs/ARCHITECTURE.md, "Storyboard file"): import the storyboard into its project (or update the one it
made before), train missing adapters, generate what has no take, export the film. `--regenerate SHOT` (1-based over
the whole film, or `scene.shot`) makes one new take of that shot and re-exports.

The command is a worker of its own: it enqueues each stage's jobs and runs them in this process (any other worker
sharing the database may take some of them; the command then waits for those). Every result is written by the
jobs through the services, atomically, so killing the command at any point loses at most the job in flight.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from studio.storyboard_file import StoryboardDoc, StoryboardError, load_storyboard
from studio.worker.retry import retry_db


@dataclass(frozen=True)
class ShotRef:
    """A shot picked on the command line: (scene index, shot index within the scene), both 0-based."""

    scene_index: int
    shot_index: int


def parse_shot_ref(doc: StoryboardDoc, ref: str) -> ShotRef:
    """`7` = the 7th shot of the film; `2.3` = scene 2, shot 3 (1-based, as a film-maker counts)."""
    text = str(ref).strip()
    counts = [len(scene.shots) for scene in doc.scenes]
    total = sum(counts)
    try:
        if "." in text:
            scene_text, shot_text = text.split(".", 1)
            scene_number, shot_number = int(scene_text), int(shot_text)
            if not 1 <= scene_number <= len(counts) or not 1 <= shot_number <= counts[scene_number - 1]:
                raise IndexError
            return ShotRef(scene_number - 1, shot_number - 1)
        number = int(text)
        if not 1 <= number <= total:
            raise IndexError
    except ValueError:
        raise StoryboardError(
            f"--regenerate {ref!r}: give a shot number (1..{total}) or scene.shot (e.g. 1.2)", doc.source
        ) from None
    except IndexError:
        layout = ", ".join(f"scene {i + 1}: {n} shots" for i, n in enumerate(counts))
        raise StoryboardError(f"--regenerate {ref!r}: no such shot ({layout})", doc.source) from None
    for scene_index, count in enumerate(counts):
        if number <= count:
            return ShotRef(scene_index, number - 1)
        number -= count
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------------------------------
# Rendering: import -> train missing adapters -> generate what has no take -> export, one stage after the other.


class RenderError(RuntimeError):
    """A render stage failed; the message names the stage and the job's error (the CLI prints it as `error: ...`)."""


# The name the CLI catches: every render refusal is one.
BackendUnavailableError = RenderError

RENDER_SLOT = "render"  # worker id host:render-<pid>: a re-run sees the pid is gone and recovers its jobs at once


def _pending_jobs(services, project_id: int, kind: str) -> list:
    """Queued or running jobs of a kind for this project, oldest first (a killed render's jobs are reused)."""
    jobs = [
        job
        for status in ("queued", "running")
        for job in services.jobs.list_jobs(status=status, project_id=project_id)
        if job.kind == kind
    ]
    return sorted(jobs, key=lambda job: job.id)


def _scene_job(services, project_id: int, scene_id: int):
    """The pending only_missing generation of this scene, or a new one."""
    for job in _pending_jobs(services, project_id, "generate_scene"):
        if job.payload.get("scene_id") == scene_id and job.payload.get("only_missing"):
            return job
    return retry_db(services.jobs.enqueue, "generate_scene", {"scene_id": scene_id, "only_missing": True}, project_id)


def _regenerate_job(services, project_id: int, shot_id: int):
    for job in _pending_jobs(services, project_id, "regenerate_shot"):
        if job.payload.get("shot_id") == shot_id:
            return job
    return retry_db(services.jobs.enqueue, "regenerate_shot", {"shot_id": shot_id}, project_id, priority=1)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def describe_job(view) -> str:
    text = f"job {view.id} ({view.kind}) {view.status} {100 * view.progress:.0f}%"
    if view.step is not None and view.total_steps:
        text += f", step {view.step}/{view.total_steps}"
    if view.status == "running" and view.eta_s is not None:
        text += f", about {_duration(view.eta_s)} left"
    return text


def progress_bar(view, width: int = 24) -> str:
    """One job as a bar with its step and ETA (the job's own, as the page shows it):
    `[#########---------------]  38% step 760/2000, about 3m10s left (job 4 train_adapter)`."""
    fraction = min(1.0, max(0.0, float(view.progress)))
    filled = round(width * fraction)
    text = f"[{'#' * filled}{'-' * (width - filled)}] {100 * fraction:3.0f}%"
    if view.step is not None and view.total_steps:
        text += f" step {view.step}/{view.total_steps}"
    if view.status == "running" and view.eta_s is not None:
        text += f", about {_duration(view.eta_s)} left"
    elif view.status == "queued":
        text += ", queued"
    return f"{text} (job {view.id} {view.kind})"


class _ProgressPrinter(threading.Thread):
    """Shows the stage's unfinished jobs as progress bars while they run (in this process or elsewhere): redrawn in
    place twice a second on a terminal, else one line every few seconds when something changed (logs stay short)."""

    def __init__(self, services, job_ids: set, stage: str, log: Callable[[str], None], every_s: float, stream=None):
        super().__init__(daemon=True, name="render-progress")
        self.services, self.job_ids, self.stage, self.log, self.every_s = services, job_ids, stage, log, every_s
        self.stream = stream  # a terminal to redraw on, or None for log lines
        self.done = threading.Event()
        self.drawn = False

    def run(self) -> None:
        last = ""
        while not self.done.wait(0.5 if self.stream is not None else self.every_s):
            try:
                views = [self.services.jobs.get(job_id) for job_id in sorted(self.job_ids)]
            except Exception:  # noqa: BLE001 - a progress line is a nicety; the main loop sees real errors
                continue
            line = "; ".join(progress_bar(v) for v in views if not v.is_finished)
            if not line or line == last:
                continue
            last = line
            if self.stream is not None:
                self.stream.write(f"\r\033[K{self.stage}: {line}")
                self.stream.flush()
                self.drawn = True
            else:
                self.log(f"{self.stage}: {line}")

    def finish(self) -> None:
        self.done.set()
        self.join(timeout=5)
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def run_jobs(
    services,
    worker,
    jobs: list,
    stage: str,
    log: Callable[[str], None],
    poll_s: float = 0.5,
    progress_every_s: float = 5.0,
    stream=None,
) -> list:
    """Run (in this process) or wait for (another worker has them) `jobs` until all have finished.

    Progress shows as bars with each job's ETA: redrawn in place on `stream` (a terminal), else as `log` lines.

    Raises RenderError naming `stage` when one fails or is cancelled. The in-process worker claims in queue order,
    so it may also run a job someone else queued meanwhile: it is a worker like any other.
    """
    from studio.worker.retry import is_transient

    pending = {job.id for job in jobs}
    finished = []
    last_recover = time.monotonic()
    printer = _ProgressPrinter(services, set(pending), stage, log, progress_every_s, stream)
    printer.start()
    try:
        while pending:
            for job_id in sorted(pending):
                view = retry_db(services.jobs.get, job_id)
                if not view.is_finished:
                    continue
                pending.discard(job_id)
                finished.append(view)
                if view.status != "done":
                    reason = view.error or view.message or view.status
                    raise RenderError(f"{stage}: job {job_id} ({view.kind}) {view.status}: {reason}")
            if not pending:
                break
            try:
                ran = worker.run_once()
            except Exception as error:
                if not is_transient(error):
                    raise
                ran = None
            if ran is None:
                # Nothing we can claim: another worker runs our jobs; wait and look again (and recover dead ones).
                if time.monotonic() - last_recover > max(1.0, services.settings.heartbeat_timeout_s / 2):
                    worker.recover()
                    last_recover = time.monotonic()
                time.sleep(poll_s)
    finally:
        printer.finish()
    return finished


def render_storyboard(
    services,
    path: str | Path,
    out: str | Path,
    regenerate: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Render the storyboard at `path` to the film `out`; returns the film's path.

    Stages, each finished before the next starts (so another worker sharing the queue cannot export a film
    whose takes are still being made): import the file; train the adapters that are missing or stale; generate
    every shot that has no take (`generate_scene` with only_missing, one job per scene); with `regenerate`, make a
    new take of that shot and choose it; export. Killed and run again, it imports nothing new, recovers the job it
    left running, reuses the jobs still queued and regenerates no take that exists.
    Raises StoryboardError for a bad file or shot reference, RenderError when a stage fails.
    """
    from studio.storyboard_file import StoryboardLimits, import_storyboard
    from studio.worker.process import Worker, default_worker_id

    stream = None
    if log is None:
        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        stream = sys.stderr if sys.stderr.isatty() else None
    path, out = Path(path), Path(out).resolve()
    if out.suffix.lower() != ".mp4":
        raise RenderError(f"--out must name an .mp4 file, got {out}")
    doc = load_storyboard(path, StoryboardLimits.from_settings(services.settings))
    shot_ref = parse_shot_ref(doc, regenerate) if regenerate is not None else None
    report = import_storyboard(services, doc, path.parent)
    project_id = report.project_id
    log(report.summary())
    # References that arrived with the file are stored unanalysed; find their faces now so identity scores of the
    # takes below have something to compare with (no-op without the face models).
    from studio.characters.references import analyze_pending_references

    analyze_pending_references(services, project_id)

    worker = Worker(services, worker_id=default_worker_id(f"{RENDER_SLOT}-{os.getpid()}"), poll_interval_s=0.2)
    worker.recover()  # a killed render's running job goes back to the queue (or fails after too many tries)

    from studio.characters.adapters import ensure_adapters, training_estimate
    from studio.services.model_limits import describe_shot_notes

    for line in describe_shot_notes(services, project_id):
        log(line)
    training = ensure_adapters(services, project_id)
    if training:
        for job in training:  # how long the wait is, before it starts
            log(training_estimate(services, job).sentence())
        run_jobs(services, worker, training, "training adapters", log, stream=stream)

    scenes = services.storyboard.list_scenes(project_id)
    generation = []
    for scene in scenes:
        if any(services.takes.chosen_take(shot.id) is None for shot in scene.shots):
            generation.append(_scene_job(services, project_id, scene.id))
    if generation:
        log(f"generating {len(generation)} scene(s)")
        run_jobs(services, worker, generation, "generating", log, stream=stream)

    if shot_ref is not None:
        shot_id = scenes[shot_ref.scene_index].shots[shot_ref.shot_index].id
        log(f"regenerating shot {regenerate}")
        run_jobs(
            services, worker, [_regenerate_job(services, project_id, shot_id)], "regenerating", log, stream=stream
        )

    log("exporting")
    export = retry_db(services.jobs.enqueue, "export_film", {"out_path": str(out)}, project_id, priority=-1)
    run_jobs(services, worker, [export], "exporting", log, stream=stream)
    return out
