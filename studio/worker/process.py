"""The worker: one process that owns the device, claims queued jobs and runs them one at a time.

`python app.py` starts one with `start_local_worker(settings)`; `python -m studio.worker --db URL --data-dir DIR`
starts more. Every claim is atomic in the database (services.jobs.claim_next_job), so any number of workers, on any
number of machines sharing the database and the asset store, never run the same job twice.

While a job runs, a thread heartbeats its row every `heartbeat_s`. A worker that dies leaves a running job whose
heartbeat stops. It is recovered (re-queued, or failed after too many attempts) at once by the next start of a
worker with the same id, or by any worker on the same host once the owner's process is gone (ids carry the pid);
any other worker recovers it when its heartbeat is older than `heartbeat_timeout_s` (checked while idle).
SIGTERM/SIGINT stop the worker at the next step and put its running job back in the queue.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from studio.worker.context import JobCancelled, JobContext, JobLost, PrerequisiteFailed, WorkerStopping
from studio.worker.retry import is_transient, retry_db

logger = logging.getLogger("studio.worker")

OFFLOAD_NEXT = {"none": "model", "model": "sequential"}


def default_worker_id(slot: str | None = None) -> str:
    """`host:pid` (or `host:slot`, stable across restarts for the app's own worker, so it recovers its jobs)."""
    return f"{socket.gethostname()}:{slot if slot is not None else os.getpid()}"


def local_worker_pid(worker_id: str | None) -> int | None:
    """The pid in a worker id of this host (`host:1234`, `host:render-1234`), else None."""
    host, _, slot = (worker_id or "").rpartition(":")
    match = re.search(r"(?:^|-)(\d+)$", slot)
    return int(match[1]) if host == socket.gethostname() and match else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists here (a recycled pid errs on the side of 'alive': the heartbeat
    timeout recovers the job then)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def out_of_memory_message(error: BaseException, offload: str, vae_tiling: bool) -> str:
    advice = []
    if offload in OFFLOAD_NEXT:
        advice.append(f"--offload {OFFLOAD_NEXT[offload]} (STUDIO_OFFLOAD={OFFLOAD_NEXT[offload]})")
    if not vae_tiling:
        advice.append("--vae-tiling (STUDIO_VAE_TILING=true)")
    advice.append("fewer frames per shot or a lower resolution")
    return (
        f"out of device memory with offload profile '{offload}': restart the worker with "
        f"{' or '.join(advice)}. ({str(error).splitlines()[0][:200]})"
    )


@dataclass
class WorkerStats:
    claimed: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    requeued: int = 0
    recovered: list = field(default_factory=list)


class Worker:
    """Runs jobs from the queue in this process. `run()` loops until `stop()`; `run_once()` runs one job."""

    def __init__(
        self,
        services,
        worker_id: str | None = None,
        kinds: tuple[str, ...] | None = None,
        handlers: dict[str, Callable[[JobContext], dict]] | None = None,
        pipelines=None,
        poll_interval_s: float = 0.5,
        progress_interval_s: float = 0.5,
        parent_pid: int | None = None,
    ):
        from studio.worker.handlers import default_handlers

        self.services = services
        self.settings = services.settings
        self.worker_id = worker_id or default_worker_id()
        self.handlers = handlers if handlers is not None else default_handlers()
        self.kinds = tuple(kinds) if kinds else None
        self.poll_interval_s = poll_interval_s
        self.progress_interval_s = progress_interval_s
        self._pipelines = pipelines
        self._stop = threading.Event()
        self.stats = WorkerStats()
        self.current_job_id = None
        self.parent_pid = parent_pid  # the app that started this worker: when it is gone, so is the worker

    def orphaned(self) -> bool:
        """True once the app that started this worker died (the child was re-parented); stops the worker."""
        if self.parent_pid is None or os.getppid() == self.parent_pid:
            return False
        if not self._stop.is_set():
            logger.warning(
                "the studio that started worker %s (pid %s) is gone: stopping", self.worker_id, self.parent_pid
            )
            self._stop.set()
        return True

    @property
    def pipelines(self):
        """The pipeline cache, created on first use so that a worker serving only exports never touches torch."""
        if self._pipelines is None:
            from studio.worker.cache import PipelineCache
            from studio.worker.device import select_device_and_dtype

            device, dtype = select_device_and_dtype(self.settings.device, self.settings.dtype)
            self._pipelines = PipelineCache(
                device,
                dtype,
                offload=self.settings.offload,
                vae_tiling=self.settings.vae_tiling,
                model_root=self.settings.resolved_model_dir,
            )
        return self._pipelines

    def preload(self, preset: str) -> None:
        """Import the model libraries and, unless `preset` is "imports", load the preset into the cache."""
        started = time.perf_counter()
        try:
            import imageio_ffmpeg  # noqa: F401 - and what writing a take uses
            import PIL.Image  # noqa: F401
            import safetensors.torch  # noqa: F401

            import pipelines.pipeline_multishot  # noqa: F401 - diffusers and transformers: most of a cold start

            if preset != "imports":
                self.pipelines.get(preset)
        except Exception as error:  # noqa: BLE001 - e.g. weights not installed: jobs will say so with the fix
            logger.warning("preload of %s failed: %s", preset, error)
            return
        logger.info("preloaded %s in %.1f s", preset, time.perf_counter() - started)

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def recover(self) -> list:
        """Fail or re-queue jobs left running by dead workers.

        At once: this worker id's jobs (a restart with the same id) and jobs of workers on this host whose process
        is gone (ids `host:...<pid>`). Others: once their heartbeat is older than `heartbeat_timeout_s`.
        """
        timeout_s = self.settings.heartbeat_timeout_s
        recovered = retry_db(self.services.jobs.recover_stale_jobs, timeout_s, worker_id=self.worker_id)
        for owner in self._dead_local_owners():
            recovered += retry_db(self.services.jobs.recover_stale_jobs, timeout_s, worker_id=owner)
        for job in recovered:
            logger.warning("recovered job %s (%s): now %s", job.id, job.kind, job.status)
        self.stats.recovered.extend(recovered)
        return recovered

    def _dead_local_owners(self) -> set[str]:
        owners = set()
        for job in retry_db(self.services.jobs.list_jobs, status="running"):
            pid = local_worker_pid(job.worker_id)
            if pid is not None and job.worker_id != self.worker_id and not pid_alive(pid):
                owners.add(job.worker_id)
        return owners

    def run(self, max_jobs: int | None = None, exit_when_idle: bool = False) -> WorkerStats:
        self.recover()
        last_recover = time.monotonic()
        while not self._stop.is_set():
            try:
                job = self.run_once()
            except Exception as error:  # noqa: BLE001 - the database hiccuped: wait and poll again
                if not is_transient(error):
                    logger.exception("polling the queue failed")
                self._stop.wait(max(self.poll_interval_s, 1.0))
                continue
            if max_jobs is not None and self.stats.claimed >= max_jobs:
                break
            if job is None:
                if exit_when_idle or self.orphaned():
                    break
                if time.monotonic() - last_recover >= max(1.0, self.settings.heartbeat_timeout_s / 2):
                    self.recover()
                    last_recover = time.monotonic()
                self._stop.wait(self.poll_interval_s)
        return self.stats

    def run_once(self):
        """Claim and run one job; returns its final view, or None when the queue had nothing for this worker."""
        if not self._queue_has_work():
            return None
        job = retry_db(self.services.jobs.claim_next_job, self.worker_id, kinds=self.kinds)
        if job is None:
            return None
        self.stats.claimed += 1
        return self.run_job(job)

    def _queue_has_work(self) -> bool:
        """A read-only look before the claim: the claim takes SQLite's write lock (BEGIN IMMEDIATE), and taking it
        on every idle poll would collide with every other writer (the UI's enqueues, other workers' progress)."""
        queued = retry_db(self.services.jobs.list_jobs, status="queued")
        return any(self.kinds is None or job.kind in self.kinds for job in queued)

    def run_job(self, job):
        jobs = self.services.jobs
        self.current_job_id = job.id
        logger.info("job %s (%s) started on %s", job.id, job.kind, self.worker_id)
        lost = threading.Event()
        ctx = JobContext(
            services=self.services,
            job=job,
            worker_id=self.worker_id,
            pipelines=_LazyPipelines(self),
            progress_interval_s=self.progress_interval_s,
            stop_requested=self._stop.is_set,
            lost=lost.is_set,
        )
        heartbeat_stop = threading.Event()
        heartbeat = threading.Thread(
            target=self._heartbeat_loop, args=(job.id, heartbeat_stop, lost), daemon=True, name=f"heartbeat-{job.id}"
        )
        heartbeat.start()
        try:
            handler = self.handlers.get(job.kind)
            if handler is None:
                raise ValueError(f"this worker has no handler for job kind {job.kind!r}")
            result = handler(ctx)
            if not self._still_mine(job.id):
                raise JobLost(f"job {job.id} was taken from this worker before it finished")
            if ctx.cancel_requested():
                retry_db(jobs.mark_cancelled, job.id)
                self.stats.cancelled += 1
            else:
                if ctx.state.fraction < 1.0:
                    ctx.report_progress(1.0, "done")
                retry_db(jobs.finish, job.id, result or {})
                self.stats.done += 1
        except JobCancelled:
            if self._still_mine(job.id):
                ctx.flush()  # the step it stopped at, for the UI and for `jobs`
            retry_db(jobs.mark_cancelled, job.id)
            self.stats.cancelled += 1
        except JobLost as error:
            # Another worker owns the job now: leave its row alone.
            logger.warning("%s", error)
        except WorkerStopping:
            # Handlers write results only at their end, so the job can run again from the start: queue it again.
            retry_db(jobs.recover_stale_jobs, self.settings.heartbeat_timeout_s, worker_id=self.worker_id)
            self.stats.requeued += 1
        except BaseException as error:  # noqa: BLE001 - one job's failure must never stop the worker
            if isinstance(error, KeyboardInterrupt | SystemExit):
                jobs.recover_stale_jobs(self.settings.heartbeat_timeout_s, worker_id=self.worker_id)
                raise
            from studio.worker.device import free_device_memory, is_out_of_memory

            if is_out_of_memory(error):
                if self._pipelines is not None:
                    self._pipelines.clear()
                free_device_memory()
                message = out_of_memory_message(error, self.settings.offload, self.settings.vae_tiling)
            elif isinstance(error, PrerequisiteFailed):  # says what to do; no trace to read
                message = str(error)
            else:
                message = f"{type(error).__name__}: {error}"
                traceback.print_exc()
            logger.error("job %s (%s) failed: %s", job.id, job.kind, message)
            if self._still_mine(job.id):
                retry_db(jobs.fail, job.id, message)
                self.stats.failed += 1
        finally:
            heartbeat_stop.set()
            heartbeat.join(timeout=5)
            self.current_job_id = None
            if self._pipelines is not None and self._pipelines.device.type in ("cuda", "mps"):
                from studio.worker.device import free_device_memory

                # The warm pipeline stays; what a stopped or failed run left in the allocator goes back to the device
                # (a full gc costs ~0.1 s with a model loaded: only worth it where there is device memory to free).
                free_device_memory(self._pipelines.device)
        return retry_db(jobs.get, job.id)

    def _still_mine(self, job_id) -> bool:
        job = retry_db(self.services.jobs.get, job_id)
        return job.status == "running" and job.worker_id == self.worker_id

    def _heartbeat_loop(self, job_id, stop: threading.Event, lost: threading.Event) -> None:
        from studio.services.errors import ConflictError

        while not stop.wait(self.settings.heartbeat_s):
            if self.orphaned():
                return  # the job stops at its next step and goes back to the queue
            try:
                self.services.jobs.heartbeat(job_id, self.worker_id)
            except ConflictError:
                # Recovered by another worker after our beats stopped (a long stall), or finished meanwhile.
                if not stop.is_set():
                    lost.set()
                return
            except Exception:  # noqa: BLE001 - a missed beat is retried; the job itself reports real errors
                logger.exception("heartbeat of job %s failed", job_id)


class _LazyPipelines:
    """Forwards to the worker's pipeline cache, creating it (and importing torch models) only when a job asks."""

    def __init__(self, worker: Worker):
        self._worker = worker

    def __getattr__(self, name):
        return getattr(self._worker.pipelines, name)


def install_signal_handlers(worker: Worker) -> None:
    """SIGTERM/SIGINT: stop at the next step (the running job goes back to the queue); a second one exits now."""

    def handle(signum, frame):
        if worker.stopping:
            os._exit(128 + signum)
        worker.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


# ---------------------------------------------------------------------------------------------------------------------
# The app's local worker: a child process, restarted if it dies.


def worker_command(settings, worker_id: str | None = None, extra_args: tuple[str, ...] = ()) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "studio.worker",
        "--db",
        settings.resolved_database_url,
        "--data-dir",
        str(settings.data_dir),
    ]
    if worker_id:
        command += ["--worker-id", worker_id]
    return command + list(extra_args)


def settings_environment(settings) -> dict[str, str]:
    """The settings as STUDIO_* variables, so the child sees exactly what the app was started with."""
    import json

    env = dict(os.environ)
    # The child runs `python -m studio.worker`: make the checkout importable whatever folder the app started in.
    repo_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH", "")) if p)
    for name, value in settings.model_dump().items():
        if value is None:
            env.pop(f"STUDIO_{name.upper()}", None)
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, dict | list | tuple):
            text = json.dumps(value)
        elif hasattr(value, "get_secret_value"):
            text = value.get_secret_value()
        else:
            text = str(value)
        env[f"STUDIO_{name.upper()}"] = text
    return env


class LocalWorkerProcess:
    """A worker child process watched by a thread that restarts it (with back-off) when it exits unasked."""

    def __init__(
        self,
        settings,
        worker_id: str | None = None,
        extra_args: tuple[str, ...] = (),
        restart_delay_s: float = 1.0,
        max_restart_delay_s: float = 30.0,
        output=None,
    ):
        self.settings = settings
        self.output = output  # file for the child's log (default: this process's stdout/stderr)
        self.worker_id = worker_id or default_worker_id("local")
        self.extra_args = tuple(extra_args)
        self.restart_delay_s = restart_delay_s
        self.max_restart_delay_s = max_restart_delay_s
        self.restarts = 0
        self.process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> LocalWorkerProcess:
        self._spawn()
        self._monitor = threading.Thread(target=self._watch, daemon=True, name="worker-monitor")
        self._monitor.start()
        return self

    def _spawn(self) -> None:
        extra_args = (*self.extra_args, "--parent-pid", str(os.getpid()))
        command = worker_command(self.settings, self.worker_id, extra_args)
        out = self.output
        self.process = subprocess.Popen(
            command, env=settings_environment(self.settings), stdout=out, stderr=subprocess.STDOUT if out else None
        )
        logger.info("started worker %s (pid %s)", self.worker_id, self.process.pid)

    def _watch(self) -> None:
        delay = self.restart_delay_s
        while not self._stopping.is_set():
            started = time.monotonic()
            code = self.process.wait()
            if self._stopping.is_set():
                return
            logger.error("worker %s exited with %s; restarting in %.0f s", self.worker_id, code, delay)
            if self._stopping.wait(delay):
                return
            # A worker that ran a while before dying is restarted quickly again; one that dies at once backs off.
            delay = (
                self.restart_delay_s if time.monotonic() - started > 60 else min(delay * 2, self.max_restart_delay_s)
            )
            self.restarts += 1
            self._spawn()

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Ask the worker to stop (its running job goes back to the queue), kill it if it does not in time."""
        self._stopping.set()
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(timeout=timeout_s)
        return self.process.returncode


def start_local_worker(settings, worker_id: str | None = None, preload: str | None = "default") -> LocalWorkerProcess:
    """Start the app's worker child process and its watchdog; call `.stop()` on shutdown (also done at exit).

    The worker preloads the studio's default model preset (`preload="default"`), so the first Generate after
    opening the studio does not wait for the model to load; `preload=None` starts it cold.
    """
    import atexit

    preset = settings.model_preset if preload == "default" else preload
    extra_args = ("--preload", preset) if preset else ()
    worker = LocalWorkerProcess(settings, worker_id=worker_id, extra_args=extra_args).start()
    atexit.register(worker.stop)
    return worker
