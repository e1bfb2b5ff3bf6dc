"""The README's first film on a fresh machine, end to end: each step's time.

    .venv/bin/python bench/first_render.py [--train-steps 30] [--threads N]

Runs exactly what the README says, as subprocesses on a throw-away data folder (nothing from an earlier run):
`python -m studio render assets/examples/demo_world.yaml --out snow_day.mp4`, then the same with `--regenerate 1.2`.
Each job's time comes from its row (started / finished), start-up and import is the time from the command's start
to its first job, and the total is the command's wall time. Then "train it yourself": `--train-steps` steps of
Kai's LoRA as the studio trains it (the demo preset's settings, his six captioned stills), timed per step after the
first, and the 2,000 steps the preset trains projected from that. Prints markdown tables (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EXAMPLE = REPO / "assets" / "examples" / "demo_world.yaml"


def run_command(args: list[str], data_dir: Path, threads: int | None) -> tuple[float, datetime, str]:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    command = [sys.executable, "-m", "studio", "--data-dir", str(data_dir), *args]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    return time.monotonic() - t0, started, done.stderr


def job_rows(data_dir: Path, since: datetime) -> list:
    from studio.config import load_settings
    from studio.services import build_services

    services = build_services(load_settings(data_dir=data_dir), sweep=False)
    try:
        jobs = sorted((j for j in services.jobs.list_jobs() if j.started_at is not None), key=lambda j: j.id)
        scenes = {
            scene.id: len(scene.shots)
            for p in services.projects.list()
            for scene in services.storyboard.list_scenes(p.id)
        }
        rows = []
        for job in jobs:
            started = job.started_at.replace(tzinfo=UTC) if job.started_at.tzinfo is None else job.started_at
            if started < since:
                continue
            finished = job.finished_at.replace(tzinfo=UTC) if job.finished_at.tzinfo is None else job.finished_at
            rows.append((job, started, finished, scenes))
        return rows
    finally:
        services.close()


def describe(job, scenes: dict) -> str:
    payload = job.payload or {}
    if job.kind == "generate_scene":
        return f"generate a scene ({scenes.get(payload.get('scene_id'), '?')} shots, one joint generation)"
    if job.kind == "regenerate_shot":
        return "regenerate shot 1.2 (its neighbours kept)"
    if job.kind == "export_film":
        return "export the film (MP4 + OpenTimelineIO)"
    if job.kind == "train_adapter":
        return f"train a {payload.get('kind', 'lora')} ({(job.result or {}).get('steps')} steps)"
    return job.kind


def command_table(title: str, wall_s: float, started: datetime, rows: list) -> list[str]:
    lines = [f"| {title} | seconds |", "|---|---|"]
    if rows:
        lines.append(
            f"| start-up and import (python, migrations, the storyboard, Kai's shipped LoRA) | "
            f"{(rows[0][1] - started).total_seconds():.1f} |"
        )
    for job, job_start, job_end, scenes in rows:
        lines.append(f"| {describe(job, scenes)} | {(job_end - job_start).total_seconds():.1f} |")
    lines.append(f"| **total, the command's wall time** | **{wall_s:.1f}** |")
    return lines


def lora_steps(count: int) -> tuple[list[float], int]:
    """Seconds per step of Kai's LoRA as the studio trains it (the first step left out: it warms up)."""
    from adapters.lora import LoraTrainingConfig, train_lora
    from pipelines.loading import load_pipeline
    from studio.storyboard_file import load_storyboard

    doc = load_storyboard(EXAMPLE)
    kai = next(c for c in doc.characters if c.name == "Kai")
    images = [(EXAMPLE.parent / ref).read_bytes() for ref in kai.references]
    pipe = load_pipeline("demo", device="cpu", dtype="fp32")
    components = {n: getattr(pipe, n) for n in ("tokenizer", "text_encoder", "vae", "transformer", "scheduler")}
    full = LoraTrainingConfig.for_preset("demo").steps
    config = LoraTrainingConfig.for_preset("demo", steps=count)
    stamps: list[float] = []

    def progress(step: int, total: int, loss: float) -> None:
        stamps.append(time.monotonic())

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "kai.safetensors"
        captions = list(kai.reference_captions)
        train_lora(
            components, images, "<kai>", out, config, kai.description, "demo", captions=captions, progress=progress
        )
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)], full


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-steps", type=int, default=30, help="LoRA steps to time (0: skip)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the commands")
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="first-render-") as folder:
        data, film = Path(folder) / "studio-data", Path(folder) / "snow_day.mp4"
        render = ["render", str(EXAMPLE), "--out", str(film)]
        wall, started, log = run_command(render, data, args.threads)
        print(
            "\n".join(
                command_table(
                    "`render demo_world.yaml` on a fresh data folder", wall, started, job_rows(data, started)
                )
            )
        )
        print(f"\nfilm: {film.stat().st_size} bytes; the command said: {log.splitlines()[0] if log else ''}\n")
        wall, started, _ = run_command([*render, "--regenerate", "1.2"], data, args.threads)
        print("\n".join(command_table("`render ... --regenerate 1.2`", wall, started, job_rows(data, started))))
    if args.train_steps:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        per_step, full = lora_steps(args.train_steps)
        median = statistics.median(per_step)
        print("\n| train it yourself: Kai's LoRA | seconds |\n|---|---|")
        print(f"| one step (median of {len(per_step)}, {torch.get_num_threads()} torch threads) | {median:.3f} |")
        print(f"| the preset's {full} steps, projected | {median * full:.0f} ({median * full / 60:.1f} min) |")
    print(f"\nload average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
