"""A training says how long it will take before it starts (steps times this machine's measured per-step time, else
the model folder's record), and the command line draws its progress as a bar with the job's ETA."""

from __future__ import annotations

import io
import json
import socket
from types import SimpleNamespace

from character_helpers import RED, png_bytes
from face_models import face_picture

from pipelines.loading import DEMO_MODEL_DIR
from studio.characters.adapters import request_training, training_estimate
from studio.config import load_settings
from studio.render import _ProgressPrinter, progress_bar
from studio.services import build_services


def _character(services, preset: str, name: str = "Kai"):
    project = services.projects.create(f"{name} {preset}", preset=preset)
    character = services.characters.create(project.id, name, "a teal hourglass", adapter_kind="lora")
    services.characters.add_reference(character.id, "kai.png", png_bytes(face_picture([(20, 30, 64, RED)])))
    return character


def _finish_training(services, character, worker_id: str, steps: int):
    job = request_training(services, character.id, "lora")
    claimed = services.jobs.claim_next_job(worker_id)
    assert claimed.id == job.id
    return services.jobs.finish(job.id, {"steps": steps})


def test_without_history_a_tiny_training_gives_its_steps_only(sqlite_services):
    job = request_training(sqlite_services, _character(sqlite_services, "tiny").id, "lora")
    estimate = training_estimate(sqlite_services, job)
    assert (estimate.steps, estimate.seconds) == (150, None)  # the tiny preset's LoRA steps; no record in code
    assert estimate.sentence() == (
        "training Kai's LoRA first (150 steps; no training has run on this machine yet to time it)"
    )


def test_this_machines_finished_trainings_time_the_next_one(sqlite_services):
    services = sqlite_services
    here = f"{socket.gethostname()}:render-1"
    done = _finish_training(services, _character(services, "tiny", "Mara"), here, 150)
    elsewhere = _finish_training(services, _character(services, "tiny", "Tom"), "gpu-box:1", 150)
    per_step = (done.finished_at - done.started_at).total_seconds() / 150
    job = request_training(services, _character(services, "tiny").id, "lora")
    estimate = training_estimate(services, job)
    assert estimate.basis == "on this machine" and elsewhere.worker_id.startswith("gpu-box")
    assert estimate.seconds == per_step * 150  # the other host's training is not this machine's speed
    assert estimate.sentence().startswith("training Kai's LoRA first, about ")
    assert estimate.sentence().endswith(" on this machine (150 steps)")


def test_on_the_cpu_the_demo_models_record_times_its_2000_steps(tmp_path):
    services = build_services(load_settings(data_dir=tmp_path / "data", device="cpu"))
    try:
        record = json.loads((DEMO_MODEL_DIR / "training.json").read_text())["adapter_training"]["lora"]
        job = request_training(services, _character(services, "demo").id, "lora")
        estimate = training_estimate(services, job)
        assert estimate.steps == 2000 and estimate.seconds == record["step_s"]["cpu"] * 2000
        minutes = max(1, round(estimate.seconds / 60))
        assert estimate.sentence() == (
            f"training Kai's LoRA first, about {minutes} min on {record['machine']} (the model's record) (2000 steps)"
        )
    finally:
        services.close()


def _view(**fields):
    values = dict(id=4, kind="train_adapter", status="running", progress=0.38, step=760, total_steps=2000, eta_s=190)
    values.update(fields)
    return SimpleNamespace(**values, is_finished=values["status"] in ("done", "failed", "cancelled"))


def test_progress_bar_shows_fraction_step_and_the_jobs_eta():
    bar = progress_bar(_view())
    assert bar == "[#########---------------]  38% step 760/2000, about 3m10s left (job 4 train_adapter)"
    assert progress_bar(_view(progress=1.0, eta_s=4)) == (
        "[########################] 100% step 760/2000, about 4s left (job 4 train_adapter)"
    )
    queued = _view(status="queued", progress=0.0, step=None, total_steps=None, eta_s=None)
    assert progress_bar(queued) == "[------------------------]   0%, queued (job 4 train_adapter)"


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_ends_with_a_newline():
    views = iter([_view(progress=0.1, step=200), _view(progress=0.5, step=1000)] + [_view(status="done")] * 50)
    services = SimpleNamespace(jobs=SimpleNamespace(get=lambda job_id: next(views)))
    terminal, logged = io.StringIO(), []
    printer = _ProgressPrinter(services, {4}, "training adapters", logged.append, every_s=5.0, stream=terminal)
    printer.start()
    printer.done.wait(1.8)
    printer.finish()
    text = terminal.getvalue()
    assert logged == [] and text.endswith("\n")
    frames = [frame for frame in text.rstrip("\n").split("\r") if frame]
    assert frames[0] == "\033[Ktraining adapters: " + progress_bar(_view(progress=0.1, step=200))
    assert frames[1] == "\033[Ktraining adapters: " + progress_bar(_view(progress=0.5, step=1000))
