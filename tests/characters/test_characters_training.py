"""The train_adapter job on tiny components: progress, registration, cancel, kill, staleness, on-demand queueing."""

from __future__ import annotations

import pytest
import torch
from character_helpers import BLUE, RED, png_bytes, tiny_project
from face_models import face_picture

from studio.characters.adapters import adapters_to_train, ensure_adapters, request_training
from studio.characters.training import run_train_adapter
from studio.services.errors import ValidationError


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _character_with_reference(services, kind="lora"):
    project = tiny_project(services)
    mara = services.characters.create(project.id, "Mara", description="a keeper in red", adapter_kind=kind)
    services.characters.add_reference(mara.id, "mara.png", png_bytes(face_picture([(20, 30, 64, RED)])))
    return project, mara


def _claimed(services, job):
    claimed = services.jobs.claim_next_job("test-worker", kinds=("train_adapter",))
    assert claimed.id == job.id
    return claimed


def test_training_job_registers_a_ready_adapter(services):
    project, mara = _character_with_reference(services)
    assert [(n.character_name, n.kind, n.reason) for n in adapters_to_train(services, project.id)] == [
        ("Mara", "lora", "missing")
    ]
    job = request_training(services, mara.id, hyperparameters={"steps": 20})
    assert request_training(services, mara.id).id == job.id  # queued once
    progress = []
    result = run_train_adapter(
        services,
        _claimed(services, job),
        lambda f, m="", step=None, total=None, **_: progress.append((f, step)),
        lambda: False,
    )
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert sum(1 for _, s in progress if s is not None and 1 <= s <= 20) >= 20  # one report per step
    adapter = services.characters.get_adapter(result["adapter_id"])
    assert (adapter.kind, adapter.status, adapter.version, adapter.base_preset) == ("lora", "ready", 1, "tiny")
    assert adapter.job_id == job.id and adapter.hyperparameters["steps"] == 20
    assert adapter.hyperparameters["trigger"] == "<mara>" and adapter.hyperparameters["trigger_text"] == "mara"
    assert len(adapter.metrics["loss_curve"]) == 20
    assert result["eval_loss_after"] < result["eval_loss_before"]
    weights = services.assets.read_bytes(adapter.weights_asset_id)
    assert weights[8:].lstrip(b" ").startswith(b"{")  # safetensors
    assert adapters_to_train(services, project.id) == []
    assert list((services.settings.data_dir / "tmp").glob("*")) == []

    # Running the same job again (a worker died after registering) does not train twice.
    again = run_train_adapter(services, services.jobs.get(job.id), lambda *a, **k: None, lambda: False)
    assert again["adapter_id"] == adapter.id and len(services.characters.list_adapters(mara.id)) == 1

    # New reference pictures make the adapter stale: "on demand" queues a retraining, once.
    services.jobs.finish(job.id, again)
    services.characters.add_reference(mara.id, "mara2.png", png_bytes(face_picture([(10, 10, 70, BLUE)])))
    [need] = adapters_to_train(services, project.id)
    assert need.reason == "references changed" and need.trainable and need.pending_job_id is None
    [queued] = ensure_adapters(services, project.id)
    assert queued.kind == "train_adapter" and queued.payload["character_id"] == mara.id and queued.priority == 1
    assert [j.id for j in ensure_adapters(services, project.id)] == [queued.id]
    assert adapters_to_train(services, project.id)[0].pending_job_id == queued.id


def test_cancel_and_kill_register_nothing(sqlite_services):
    services = sqlite_services
    _, mara = _character_with_reference(services, kind="embedding")
    job = _claimed(services, request_training(services, mara.id, hyperparameters={"steps": 50}))
    steps = []
    result = run_train_adapter(
        services, job, lambda f, m="", step=None, total=None, **_: steps.append(step), lambda: len(steps) > 5
    )
    assert result["cancelled"] and result["steps"] < 50
    assert services.characters.list_adapters(mara.id) == []

    class WorkerDied(Exception):
        pass

    calls = []

    def dies_mid_training():
        calls.append(1)
        if len(calls) > 4:
            raise WorkerDied("killed")
        return False

    with pytest.raises(WorkerDied):
        run_train_adapter(services, job, lambda *a, **k: None, dies_mid_training)
    assert services.characters.list_adapters(mara.id) == []
    assert list((services.settings.data_dir / "tmp").glob("*")) == []


def test_refusals(sqlite_services):
    services = sqlite_services
    project = tiny_project(services)
    tom = services.characters.create(project.id, "Tom", adapter_kind="lora")
    with pytest.raises(ValidationError, match="no reference pictures"):
        request_training(services, tom.id)
    [need] = adapters_to_train(services, project.id)
    assert not need.trainable and "no reference pictures" in need.reason
    assert ensure_adapters(services, project.id) == []  # nothing to queue: Tom renders without an adapter
    services.characters.add_reference(tom.id, "tom.png", png_bytes(face_picture([(20, 30, 64, RED)])))
    job = _claimed(services, request_training(services, tom.id, hyperparameters={"rank": 0}))
    with pytest.raises(ValidationError, match="rank"):
        run_train_adapter(services, job, lambda *a, **k: None, lambda: False)
    with pytest.raises(ValidationError, match="unknown lora setting"):
        run_train_adapter(
            services,
            job.__class__(**{**job.__dict__, "payload": {**job.payload, "hyperparameters": {"colour": 1}}}),
            lambda *a, **k: None,
            lambda: False,
        )


def test_training_loss_points_are_readable_while_the_job_runs(services):
    """The character panel draws the loss curve while training: the job's partial result has the points so far."""
    _, mara = _character_with_reference(services)
    job = request_training(services, mara.id, hyperparameters={"steps": 20})
    seen = {}

    def report(fraction, message="", step=None, total=None, **_):
        if step is not None and step > 0 and step not in seen:
            seen[step] = services.jobs.get(job.id).result

    result = run_train_adapter(services, _claimed(services, job), report, lambda: False)
    assert seen[1] is None  # nothing before the first write
    assert seen[11]["partial"] is True and [p[0] for p in seen[11]["loss_curve"]] == list(range(1, 11))
    running = services.jobs.get(job.id)
    assert running.status == "running" and len(running.result["loss_curve"]) == 20
    adapter = services.characters.get_adapter(result["adapter_id"])
    assert [p[1] for p in running.result["loss_curve"]] == pytest.approx(adapter.metrics["loss_curve"], abs=1e-5)
    done = services.jobs.finish(job.id, result)
    assert "partial" not in done.result and "loss_curve" not in done.result


def test_reference_captions_are_validated_follow_the_trigger_and_train_the_adapter(sqlite_services, monkeypatch):
    services = sqlite_services
    project, mara = _character_with_reference(services)
    first = services.characters.list_references(mara.id)[0]
    assert first.caption == ""
    with pytest.raises(ValidationError, match="must name Mara by the trigger <mara>"):
        services.characters.set_reference_caption(first.id, "close-up of a keeper")
    with pytest.raises(ValidationError, match="must name Mara by the trigger <mara>"):
        services.characters.add_reference(mara.id, "b.png", png_bytes(face_picture([(20, 30, 64, BLUE)])), "a keeper")
    assert len(services.characters.list_references(mara.id)) == 1  # the refused picture left no row
    second = services.characters.add_reference(
        mara.id, "b.png", png_bytes(face_picture([(20, 30, 64, BLUE)])), caption="  wide shot, <mara> walks  "
    )
    assert second.caption == "wide shot, <mara> walks"

    # The adapter trains on each reference's caption, or the trigger and description where there is none.
    seen = {}
    import adapters.lora

    real = adapters.lora.train_lora

    def spy(*args, captions=None, **kwargs):
        seen["captions"] = captions
        return real(*args, captions=captions, **kwargs)

    monkeypatch.setattr(adapters.lora, "train_lora", spy)
    job = request_training(services, mara.id, hyperparameters={"steps": 2})
    result = run_train_adapter(services, _claimed(services, job), lambda *a, **k: None, lambda: False)
    assert seen["captions"] == ["<mara>, a keeper in red", "wide shot, <mara> walks"]
    assert adapters_to_train(services, project.id) == []

    # A changed caption makes the adapter out of date; renaming the trigger rewrites the captions that use it.
    services.characters.set_reference_caption(first.id, "close-up shot, <mara> stays still")
    assert [(n.character_name, n.reason) for n in adapters_to_train(services, project.id)] == [
        ("Mara", "references changed")
    ]
    services.characters.update(mara.id, trigger="<keeper>")
    captions = [r.caption for r in services.characters.list_references(mara.id)]
    assert captions == ["close-up shot, <keeper> stays still", "wide shot, <keeper> walks"]
    assert services.characters.get_adapter(result["adapter_id"]).status == "ready"
