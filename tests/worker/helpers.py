"""Shared helpers of the worker tests: a tiny project, worker subprocesses, waiting, orphan checks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STARTED = re.compile(r"job (\d+) \((\w+)\) started on (\S+)")


def tiny_project(services, shots=((5, "a man walks"), (5, "a dog runs")), steps=2, name="film"):
    """A `tiny`-preset project at 32x32 with one scene; returns (project, scene_id, shot ids)."""
    project = services.projects.create(name, preset="tiny", width=32, height=32, fps=8, steps=steps)
    scene = services.storyboard.add_scene(project.id, caption="a lighthouse at night")
    shot_ids = [services.storyboard.add_shot(scene.id, caption, num_frames=n).id for n, caption in shots]
    return project, scene.id, shot_ids


def fast_settings(settings, **update):
    """Short heartbeats so recovery happens in test time."""
    return settings.model_copy(update={"heartbeat_s": 0.2, "heartbeat_timeout_s": 2.0, **update})


def spawn_worker(settings, worker_id: str, log_path: Path, *args: str) -> subprocess.Popen:
    from studio.worker.process import settings_environment, worker_command

    command = worker_command(settings, worker_id, ("--poll-interval", "0.05", "--threads", "1", *args))
    env = settings_environment(settings)
    env["PYTHONPATH"] = str(REPO)
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it for its lifetime
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for(predicate, timeout_s: float = 120.0, interval_s: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def wait_for_log(log_path: Path, text: str, process: subprocess.Popen | None = None, timeout_s: float = 120.0):
    def seen():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"worker exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        return log_path.exists() and text in log_path.read_text()

    return wait_for(seen, timeout_s, what=f"{text!r} in {log_path.name}")


def stop_worker(process: subprocess.Popen, timeout_s: float = 30.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def claims_in_log(log_path: Path) -> list[tuple[int, str, str]]:
    return [(int(m[1]), m[2], m[3]) for m in STARTED.finditer(log_path.read_text())]


def asset_files(settings) -> set[str]:
    """sha256 names of the files in the asset store (temp files included, so a half-written one shows)."""
    root = settings.assets_dir
    return {p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def python() -> str:
    return sys.executable


def kill_hard(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
