"""generate_scene / regenerate_shot jobs on the tiny preset, run by an in-process worker: takes and their files."""

from __future__ import annotations

import dataclasses
import functools
import io

import imageio_ffmpeg
import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from studio.db import models
from studio.services.job_specs import ExportFilm, GenerateScene, RegenerateShot, TrainAdapter, job_spec
from studio.worker.process import Worker
from tests.worker.helpers import tiny_project


def run_all(services):
    torch.set_num_threads(1)
    worker = Worker(services, worker_id="in-process", poll_interval_s=0.01)
    return worker.run(exit_when_idle=True)


def latents_of(services, take):
    return safetensors.torch.load(services.assets.read_bytes(take.latents_asset_id))["latents"]


def test_generate_scene_then_regenerate_one_shot(sqlite_services):
    services = sqlite_services
    project, scene_id, shot_ids = tiny_project(
        services, shots=((5, "a man walks"), (1, "close up of a red lamp"), (9, "a dog runs"))
    )
    first = services.jobs.enqueue(GenerateScene(scene_id=scene_id, seed=7), project.id)
    run_all(services)

    job = services.jobs.get(first.id)
    assert job.status == "done", job.error
    takes = [services.takes.list_takes(shot_id) for shot_id in shot_ids]
    assert [len(t) for t in takes] == [1, 1, 1]
    assert job.result["takes"] == [t[0].id for t in takes]
    for (take,), frames in zip(takes, (5, 1, 9), strict=True):
        assert take.is_chosen and take.job_id == first.id
        reader = imageio_ffmpeg.read_frames(str(services.assets.path_of(take.video_asset_id)))
        meta = next(reader)
        assert (meta["fps"], meta["size"], sum(1 for _ in reader)) == (8.0, (32, 32), frames)
        assert Image.open(io.BytesIO(services.assets.read_bytes(take.thumbnail_asset_id))).size == (32, 32)
        assert latents_of(services, take).shape == (1, 16, (frames - 1) // 4 + 1, 4, 4)
        params = take.params
        assert (params["model"], params["num_inference_steps"], params["fps"]) == ("tiny", 2, 8)
        assert params["scene_captions"] == ["a man walks", "close up of a red lamp", "a dog runs"]
        assert params["global_caption"] == "a lighthouse at night" and params["regenerated"] is None
    assert len({t[0].seed for t in takes}) == 3  # one seed per shot, recorded with its take

    # Regenerate the middle shot with a new seed: a second take for it, nothing new for the others.
    again = services.jobs.enqueue(RegenerateShot(shot_id=shot_ids[1], seed=1234), project.id)
    run_all(services)
    assert services.jobs.get(again.id).status == "done"
    after = [services.takes.list_takes(shot_id) for shot_id in shot_ids]
    assert [len(t) for t in after] == [1, 2, 1]
    first_takes = [dataclasses.replace(t[0], is_chosen=False) for t in takes]
    assert [dataclasses.replace(t[0], is_chosen=False) for t in after] == first_takes  # untouched, rows and files
    new_take = after[1][1]
    assert new_take.seed == 1234 and new_take.params["regenerated"] == [1]
    assert new_take.params["regenerate_mode"] == "context"  # the tiny preset's default
    assert new_take.params["scene_seeds"] == [takes[0][0].seed, 1234, takes[2][0].seed]
    assert not torch.equal(latents_of(services, new_take), latents_of(services, takes[1][0]))
    # the new take is what the card and the film show now; the first one is still listed, one click away
    assert services.takes.chosen_take(shot_ids[1]).id == new_take.id and new_take.is_chosen
    assert not after[1][0].is_chosen and after[1][0].id == takes[1][0].id
    assert [services.takes.chosen_take(i).id for i in (shot_ids[0], shot_ids[2])] == [takes[0][0].id, takes[2][0].id]

    # Each take records the card it was made from; editing the card (or choosing an older take) shows up as drift.
    assert services.takes.chosen_take_drift(project.id) == {}
    services.storyboard.update_shot(shot_ids[0], caption="a man runs", num_frames=9)
    services.takes.choose_take(shot_ids[1], takes[1][0].id)  # same caption: an older take of the same card
    assert services.takes.chosen_take_drift(project.id) == {
        shot_ids[0]: "take is 5 frames, the shot 9; take made from another caption"
    }
    services.storyboard.update_shot(shot_ids[0], caption="a man walks", num_frames=5)
    services.takes.choose_take(shot_ids[1], new_take.id)

    # A shot added later: only_missing (what `render` uses) generates it alone, with the others as context.
    added = services.storyboard.add_shot(scene_id, "a tree in the rain", num_frames=5).id
    missing = services.jobs.enqueue(GenerateScene(scene_id=scene_id, only_missing=True), project.id)
    run_all(services)
    result = services.jobs.get(missing.id).result
    assert result["shots"] == [added] and len(result["takes"]) == 1
    assert [len(services.takes.list_takes(s)) for s in [*shot_ids, added]] == [1, 2, 1, 1]
    assert services.takes.get(result["takes"][0]).params["regenerated"] == [3]

    # Nothing missing any more: the job is a no-op that loads no model.
    noop = services.jobs.enqueue(GenerateScene(scene_id=scene_id, only_missing=True), project.id)
    run_all(services)
    assert services.jobs.get(noop.id).result["takes"] == []


def test_previews_are_stored_every_n_steps(sqlite_settings):
    from studio.services import build_services

    services = build_services(sqlite_settings.model_copy(update={"preview_every": 1}))
    try:
        project, scene_id, shot_ids = tiny_project(services, shots=((5, "a man walks"),), steps=3)
        job = services.jobs.enqueue(GenerateScene(scene_id=scene_id), project.id)
        run_all(services)
        view = services.jobs.get(job.id)
        assert view.status == "done" and view.preview_asset_id is not None
        preview = Image.open(io.BytesIO(services.assets.read_bytes(view.preview_asset_id)))
        assert preview.size == (32, 32)
        assert np.asarray(preview).std() > 0  # a decoded frame, not a blank
        from sqlalchemy import func, select

        from studio.db import models

        with services.db.unit_of_work() as session:
            previews = session.scalar(select(func.count()).where(models.Asset.kind == "preview"))
        assert previews == 1  # 2 previews were made (steps 1 and 2 of 3); only the latest is kept
    finally:
        services.close()


def test_bad_payloads_fail_with_what_to_change(sqlite_services):
    services = sqlite_services
    project, scene_id, shot_ids = tiny_project(services)
    no_spec = services.jobs.enqueue(ExportFilm(), project.id)
    with services.db.unit_of_work() as session:  # a payload no spec reads (written by hand or by another tool)
        row = session.get(models.Job, no_spec.id)
        row.kind, row.payload = "generate_scene", {"scene": scene_id}
    binned = services.jobs.enqueue(RegenerateShot(shot_id=shot_ids[0]), project.id)
    services.storyboard.delete_shot(shot_ids[0])
    run_all(services)
    assert "unknown generate_scene field(s) scene; use any of" in services.jobs.get(no_spec.id).error
    assert "restore it from the bin" in services.jobs.get(binned.id).error


def lora_bytes(seed: int = 0) -> bytes:
    """A random diffusers-layout LoRA on every attention projection of the tiny transformer."""
    from pipelines.tiny import build_tiny_components

    transformer = build_tiny_components()["transformer"]
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in transformer.named_modules():
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0")) and isinstance(module, torch.nn.Linear):
            state[f"transformer.{name}.lora_A.weight"] = torch.randn(2, module.in_features, generator=generator)
            state[f"transformer.{name}.lora_B.weight"] = torch.randn(module.out_features, 2, generator=generator)
    return safetensors.torch.save(state)


def test_a_character_adapter_is_loaded_for_its_shots_and_recorded_with_the_take(sqlite_services):
    from adapters.loading import loaded_loras
    from studio.worker.cache import PipelineCache

    services = sqlite_services
    project, scene_id, (plain_shot,) = tiny_project(services, shots=((5, "a dog runs"),))
    mara = services.characters.create(project.id, "Mara", description="a keeper in a red scarf")
    adapter = services.characters.add_adapter(mara.id, "lora", "tiny", status="ready", weights=lora_bytes())
    other_scene = services.storyboard.add_scene(project.id, caption="the lamp room")
    mara_shot = services.storyboard.add_shot(other_scene.id, "Mara climbs the stairs", 5, characters=[mara.id]).id

    cache = PipelineCache(torch.device("cpu"), torch.float32)
    worker = Worker(services, worker_id="in-process", pipelines=cache)
    with_mara = services.jobs.enqueue(GenerateScene(scene_id=other_scene.id), project.id)
    worker.run(exit_when_idle=True)
    assert services.jobs.get(with_mara.id).status == "done", services.jobs.get(with_mara.id).error
    take = services.takes.chosen_take(mara_shot)
    assert [(a["id"], a["version"]) for a in take.params["adapters"]] == [(adapter.id, adapter.version)]
    assert "Mara" not in take.params["caption"] and "<mara>" not in take.params["caption"]  # the adapter's words
    assert cache.key == ("tiny", "fp32", ((adapter.id, adapter.version),))
    pipe = cache.get("tiny", ((adapter.id, adapter.version),))
    assert len(loaded_loras(pipe)) == 1

    # The next scene has no character: same warm model, adapter taken off, caption as written.
    plain = services.jobs.enqueue(GenerateScene(scene_id=scene_id), project.id)
    worker.run(exit_when_idle=True)
    assert services.jobs.get(plain.id).status == "done"
    assert services.takes.chosen_take(plain_shot).params["caption"] == "a dog runs"
    assert cache.key == ("tiny", "fp32", ()) and loaded_loras(pipe) == []
    assert (cache.stats.loads, cache.stats.adapter_swaps) == (1, 1)


def test_a_job_requeued_after_dying_between_two_takes_finishes_without_doubling_them(sqlite_services):
    from studio.worker.generation import encode_latents, encode_mp4, encode_png

    services = sqlite_services
    project, scene_id, (first_shot, second_shot) = tiny_project(services)
    job = services.jobs.enqueue(GenerateScene(scene_id=scene_id), project.id)
    assert services.jobs.claim_next_job("dead-worker").id == job.id
    frames = np.zeros((5, 32, 32, 3), dtype=np.uint8)
    written = services.takes.add_take(  # the first take was written, then the worker was killed
        first_shot,
        job.id,
        video=encode_mp4(frames, 8),
        thumbnail=encode_png(frames[0]),
        latents=encode_latents(torch.zeros(1, 16, 2, 4, 4)),
        seed=3,
        params={"model": "tiny", "width": 32, "height": 32},
    )
    (requeued,) = services.jobs.recover_stale_jobs(0.0, worker_id="dead-worker")
    assert requeued.status == "queued"

    run_all(services)

    view = services.jobs.get(job.id)
    assert (view.status, view.attempts) == ("done", 2)
    assert [t.id for t in services.takes.list_takes(first_shot)] == [written.id]  # not made again
    (second_take,) = services.takes.list_takes(second_shot)
    assert view.result["takes"] == [written.id, second_take.id]
    assert second_take.params["regenerated"] == [1]  # made with the first shot's take as its context


@pytest.mark.gpu
def test_generation_on_cuda_uses_bf16_and_records_the_device(sqlite_settings):
    from studio.services import build_services

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    services = build_services(sqlite_settings.model_copy(update={"device": "cuda", "dtype": "auto"}))
    try:
        project, scene_id, shot_ids = tiny_project(services)
        job = services.jobs.enqueue(GenerateScene(scene_id=scene_id), project.id)
        run_all(services)
        assert services.jobs.get(job.id).status == "done", services.jobs.get(job.id).error
        params = services.takes.chosen_take(shot_ids[0]).params
        assert params["device"].startswith("cuda") and params["dtype"] in ("bfloat16", "float16")
    finally:
        services.close()


def test_a_generation_waits_for_the_jobs_it_was_queued_after(sqlite_services, monkeypatch):
    """`after_jobs` (the page queues a wanted adapter's training with the shots): the generation job does not start
    rendering while one of them is unfinished, and goes on once it has finished (one that failed or was cancelled
    fails it instead: tests/ui/test_on_demand_adapters.py)."""
    import studio.worker.generation

    services = sqlite_services
    project, scene_id, shot_ids = tiny_project(services)
    # queued behind the generation (lower priority), so this one worker claims the generation first and must wait
    training = services.jobs.enqueue(TrainAdapter(character_id=999), project.id, priority=-1)
    payload = {"scene_id": scene_id, "after_jobs": [training.id]}
    generation = services.jobs.enqueue(job_spec("generate_scene", payload), project.id)
    waits = []

    def sleep(seconds):  # the training finishes (here: by another worker) while the generation waits
        waits.append(services.jobs.get(generation.id).message)
        assert [services.takes.chosen_take(i) for i in shot_ids] == [None, None]  # nothing rendered yet
        assert services.jobs.claim_next_job("trainer", kinds=("train_adapter",)).id == training.id
        services.jobs.finish(training.id, {})

    waiting = functools.partial(studio.worker.generation.wait_for_training, sleep=sleep)
    monkeypatch.setattr(studio.worker.generation, "wait_for_training", waiting)
    run_all(services)
    assert waits == [f"waiting for adapter training (job {training.id})"]
    assert services.jobs.get(generation.id).status == "done"
    assert all(services.takes.chosen_take(i) is not None for i in shot_ids)
