"""Load test: many clients on the studio page and the timeline API while generation jobs run.

    .venv/bin/python bench/load.py [--clients 50] [--seconds 20] [--shots 20]

Starts the real studio (`python app.py`, UI + its local worker, tiny preset) on 127.0.0.1 and a free port, over a
throw-away data folder, with one project of `--shots` shots. Then `--clients` threads, each with its own keep-alive
connection, loop for `--seconds`: load the page (`GET /`) and its config (`GET /config`, what the page fetches next),
and call the timeline API (`POST /gradio_api/component_server`, the timeline's server function, with a caption edit
that changes nothing: the services' write path and the storyboard read back). Meanwhile a generation job of the scene
is kept queued or running. Prints, per endpoint, requests, errors (status other than 200, or a transport error),
p50 / p95 / max latency, and how many jobs finished during the run. Loopback only and bounded: at most 200 clients,
600 seconds and 2,000 requests per client.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from studio.config import load_settings  # noqa: E402
from studio.services import build_services  # noqa: E402
from studio.services.job_specs import GenerateScene  # noqa: E402

HOST = "127.0.0.1"  # loopback only: this load never leaves the machine
MAX_CLIENTS, MAX_SECONDS, MAX_REQUESTS_PER_CLIENT = 200, 600, 2000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def start_studio(data_dir: Path, port: int, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - the child owns it for its lifetime
    command = [sys.executable, "app.py", "--data-dir", str(data_dir), "--host", HOST, "--port", str(port)]
    command += ["--model-preset", "tiny"]
    return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def wait_until_up(base: str, process: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the studio exited with status {process.returncode}; see its log")
        try:
            if httpx.get(base + "/", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the studio did not answer in time")


class Samples:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ms: dict[str, list[float]] = {"page": [], "config": [], "timeline": []}
        self.errors: dict[str, int] = {"page": 0, "config": 0, "timeline": 0}
        self.first_error: dict[str, str] = {}

    def add(self, endpoint: str, ms: float, error: str | None) -> None:
        with self.lock:
            self.ms[endpoint].append(ms)
            if error is not None:
                self.errors[endpoint] += 1
                self.first_error.setdefault(endpoint, error)


def client_loop(base: str, body: dict, stop_at: float, samples: Samples) -> None:
    with httpx.Client(base_url=base, timeout=60, headers={"Origin": base}) as client:
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if time.monotonic() >= stop_at:
                return
            for endpoint in ("page", "config", "timeline"):
                started = time.perf_counter()
                error = None
                try:
                    if endpoint in ("page", "config"):
                        responses = [client.get("/" if endpoint == "page" else "/config")]
                    else:
                        responses = [client.post("/gradio_api/component_server", json=body)]
                        if responses[0].status_code == 200 and not responses[0].json().get("ok"):
                            error = f"timeline refused: {responses[0].json().get('message')}"
                    bad = [r.status_code for r in responses if r.status_code != 200]
                    if bad:
                        error = f"HTTP {bad[0]}"
                except httpx.TransportError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                samples.add(endpoint, (time.perf_counter() - started) * 1000, error)


def keep_a_job_running(
    services, project_id: int, scene_id: int, stop_at: float, finished: list[int], states: list[str], job=None
) -> None:
    """Keep one generate_scene job of the scene queued or running until `stop_at`; record its status every 0.2 s
    (`states`) and the jobs that finish. `job`: the one already queued or running."""
    while time.monotonic() < stop_at:
        view = services.jobs.get(job.id) if job is not None else None
        if view is not None:
            states.append(view.status)
        if view is None or view.is_finished:
            if view is not None and view.status == "done":
                finished.append(view.id)
            job = services.jobs.enqueue(GenerateScene(scene_id=scene_id), project_id=project_id)
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--shots", type=int, default=20, help="shots of the project the timeline shows")
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 1 <= args.seconds <= MAX_SECONDS:
        parser.error(f"--clients must be 1-{MAX_CLIENTS} and --seconds 1-{MAX_SECONDS}")

    with tempfile.TemporaryDirectory(prefix="bench-load-", ignore_cleanup_errors=True) as tmp:
        data_dir = Path(tmp) / "data"
        services = build_services(load_settings(data_dir=data_dir, model_preset="tiny"))
        project = services.projects.create("load", preset="tiny", width=32, height=32, fps=8, steps=2)
        scene = services.storyboard.add_scene(project.id, caption="a lighthouse at night")
        shots = [services.storyboard.add_shot(scene.id, f"shot {n}, waves", num_frames=5) for n in range(args.shots)]
        port = free_port()
        base = f"http://{HOST}:{port}"
        studio = start_studio(data_dir, port, Path(tmp) / "studio.log")
        try:
            wait_until_up(base, studio)
            config = httpx.get(base + "/config", timeout=30).json()
            timeline_id = next(
                c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "sl-timeline"
            )
            body = {
                "session_hash": "bench-load",
                "component_id": timeline_id,
                "fn_name": "timeline_edit",
                "data": {
                    "op": "caption",
                    "project_id": project.id,
                    "shot_id": shots[0].id,
                    "caption": shots[0].caption,
                },
            }
            samples, finished, states = Samples(), [], []
            # The worker starts (imports, preloads the preset) and takes a first job before the clients start.
            first = services.jobs.enqueue(GenerateScene(scene_id=scene.id), project_id=project.id)
            deadline = time.monotonic() + 300
            while services.jobs.get(first.id).status == "queued" and time.monotonic() < deadline:
                time.sleep(0.5)
            if services.jobs.get(first.id).status == "queued":
                raise RuntimeError(
                    f"the studio's worker took no job in 300 s; log: {(Path(tmp) / 'studio.log').read_text()[-2000:]}"
                )
            load_before = os.getloadavg()[0]
            stop_at = time.monotonic() + args.seconds
            jobs = threading.Thread(
                target=keep_a_job_running,
                args=(services, project.id, scene.id, stop_at, finished, states, first),
                daemon=True,
            )
            jobs.start()
            clients = [
                threading.Thread(target=client_loop, args=(base, body, stop_at, samples), daemon=True)
                for _ in range(args.clients)
            ]
            started = time.perf_counter()
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join()
            elapsed = time.perf_counter() - started
            jobs.join()
            load_after = os.getloadavg()[0]
            first_view = services.jobs.get(first.id)
        finally:
            studio.terminate()
            try:
                studio.wait(timeout=60)
            except subprocess.TimeoutExpired:
                studio.kill()
            services.close()

    print(
        f"\n{args.clients} clients for {elapsed:.1f} s on {base} (studio + local worker, tiny preset, {args.shots} "
        f"shots); a generation job was running in {states.count('running')} of {len(states)} looks (every 0.2 s), "
        f"{len(finished)} finished; load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} CPUs\n"
    )
    print("| endpoint | requests | errors | p50 ms | p95 ms | max ms | requests/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for endpoint, label in (
        ("page", "page (GET /)"),
        ("config", "page config (GET /config)"),
        ("timeline", "timeline API (caption edit)"),
    ):
        values = samples.ms[endpoint]
        print(
            f"| {label} | {len(values)} | {samples.errors[endpoint]} | {statistics.median(values):.0f} | "
            f"{percentile(values, 0.95):.0f} | {max(values):.0f} | {len(values) / elapsed:.1f} |"
        )
    print(f"job states seen: {dict(Counter(states))}; first job: {first_view.status} {first_view.error or ''}".strip())
    for endpoint, message in samples.first_error.items():
        print(f"first {endpoint} error: {message}")


if __name__ == "__main__":
    main()
