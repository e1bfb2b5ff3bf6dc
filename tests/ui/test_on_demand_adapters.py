"""The UI trains a wanted adapter on demand, as `python -m studio render` does: generating shots of a character
that asks for a LoRA queues its training first, and the generation waits for it."""

from __future__ import annotations

from types import SimpleNamespace

from studio.ui.storyboard import apply_edit
from studio.worker.generation import wait_for_training
from tests.core_services.helpers import png_bytes


def test_generating_a_shot_of_a_character_that_wants_a_lora_queues_its_training_first(services):
    project = services.projects.create("On demand", preset="tiny")
    mara = services.characters.create(project.id, "Mara", adapter_kind="lora")
    services.characters.add_reference(mara.id, "mara.png", png_bytes(64, 64))
    plain = services.characters.create(project.id, "Tom")  # wants no adapter
    scene = services.storyboard.add_scene(project.id, "a beach")
    shot = services.storyboard.add_shot(scene.id, "Mara runs", characters=[mara.id, plain.id])
    message, _ = apply_edit(services, project.id, {"op": "generate_scene", "scene_id": scene.id})
    jobs = {job.kind: job for job in services.jobs.list_jobs(project_id=project.id)}
    assert set(jobs) == {"train_adapter", "generate_scene"}
    training, generation = jobs["train_adapter"], jobs["generate_scene"]
    assert training.payload["character_id"] == mara.id and training.payload["kind"] == "lora"
    assert training.priority > generation.priority  # a worker claims the training first
    assert generation.payload["after_jobs"] == [training.id]
    # how long the wait will be, said before it starts (no training has run here yet to time it)
    estimate = "training Mara's LoRA first (150 steps; no training has run on this machine yet to time it)"
    waits = f"after the adapter training it needs (job {training.id}): {estimate}"
    assert message == f"generation queued (job {generation.id}), {waits}"
    # a regeneration of that shot waits for the same training, not a second one (once the scene's generation is
    # called off: while it is pending, a second take of the shot is refused)
    services.jobs.request_cancel(generation.id)
    message, _ = apply_edit(services, project.id, {"op": "regenerate", "shot_id": shot.id})
    assert message.endswith(waits)
    assert [j.kind for j in services.jobs.list_jobs(project_id=project.id)].count("train_adapter") == 1


def test_a_scene_without_wanted_adapters_is_queued_alone(services):
    project = services.projects.create("Plain", preset="tiny")
    tom = services.characters.create(project.id, "Tom")
    scene = services.storyboard.add_scene(project.id, "a road")
    services.storyboard.add_shot(scene.id, "Tom walks", characters=[tom.id])
    message, _ = apply_edit(services, project.id, {"op": "generate_scene", "scene_id": scene.id})
    (job,) = services.jobs.list_jobs(project_id=project.id)
    assert message == f"generation queued (job {job.id})" and job.payload["after_jobs"] == []


def test_the_generation_waits_until_its_trainings_have_finished():
    finished_after = {7: 3, 8: 2}  # job id -> polls until it reads finished
    polls, progress = {7: 0, 8: 0}, []

    def get(job_id):
        polls[job_id] += 1
        return SimpleNamespace(is_finished=polls[job_id] >= finished_after[job_id])

    ctx = SimpleNamespace(
        services=SimpleNamespace(jobs=SimpleNamespace(get=get)),
        report_progress=lambda fraction, message: progress.append(message),
        check_cancelled=lambda: None,
    )
    wait_for_training(ctx, [7, 8], poll_s=0.0)
    assert progress == ["waiting for adapter training (job 7, 8)", "waiting for adapter training (job 7)"]
    assert polls == {7: 3, 8: 2}  # a finished job is not asked again
    wait_for_training(ctx, [], poll_s=0.0)  # nothing to wait for
    assert len(progress) == 2


def test_train_while_training_says_so_instead_of_queueing_again(services):
    from studio.ui.app import build_app

    project = services.projects.create("Twice", preset="tiny")
    mara = services.characters.create(project.id, "Mara")
    services.characters.add_reference(mara.id, "mara.png", png_bytes(64, 64))
    on_train = next(f.fn for f in build_app(services).fns.values() if getattr(f.fn, "__name__", "") == "on_train")
    first = on_train(project.id, mara.id, "lora")[-1]
    assert first.startswith("Training queued (job ")
    job = services.jobs.claim_next_job("w1")  # a worker has started it
    second = on_train(project.id, mara.id, "lora")[-1]
    assert second.startswith(f"Already training (job {job.id}); a new version can be trained once it ends.")
    assert [j.kind for j in services.jobs.list_jobs(project_id=project.id)] == ["train_adapter"]


def test_a_generation_whose_training_was_cancelled_or_failed_fails_with_that_reason(sqlite_services):
    from studio.worker.process import Worker

    services = sqlite_services
    project = services.projects.create("Called off", preset="tiny", width=32, height=32, steps=2)
    mara = services.characters.create(project.id, "Mara", adapter_kind="lora")
    services.characters.add_reference(mara.id, "mara.png", png_bytes(64, 64))
    scene = services.storyboard.add_scene(project.id, "a beach")
    shot = services.storyboard.add_shot(scene.id, "Mara runs", characters=[mara.id], num_frames=5)
    apply_edit(services, project.id, {"op": "generate_scene", "scene_id": scene.id})
    jobs = {job.kind: job for job in services.jobs.list_jobs(project_id=project.id)}
    services.jobs.request_cancel(jobs["train_adapter"].id)
    worker = Worker(
        services, worker_id="test-worker", kinds=("generate_scene", "regenerate_shot"), poll_interval_s=0.01
    )
    worker.run_once()
    generation = services.jobs.get(jobs["generate_scene"].id)
    assert generation.status == "failed"
    assert generation.error == (
        f"Not generated: the training of Mara's LoRA it waited for (job {jobs['train_adapter'].id}) was cancelled. "
        "Train it again (Characters tab) and generate again, or take the character out of the shot."
    )
    assert services.takes.list_takes(shot.id) == []  # no take made without the adapter
    # a failed training says how it failed
    apply_edit(services, project.id, {"op": "regenerate", "shot_id": shot.id})
    training = next(
        j for j in services.jobs.list_jobs(project_id=project.id) if j.status == "queued" and j.kind == "train_adapter"
    )
    services.jobs.claim_next_job("trainer", kinds=("train_adapter",))
    services.jobs.fail(training.id, "no references left")
    worker.run_once()
    regeneration = next(j for j in services.jobs.list_jobs(project_id=project.id) if j.kind == "regenerate_shot")
    assert regeneration.status == "failed" and f"(job {training.id}) failed (no references left)" in regeneration.error
    assert services.takes.list_takes(shot.id) == []
