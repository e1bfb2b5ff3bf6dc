"""The character flow through the real worker loop: on-demand training job, then the scene's adapters swapped
onto the worker's warm pipeline with the cache's adapter hook, captions substituted, generation changed."""

from __future__ import annotations

import torch
from character_helpers import RED, png_bytes, tiny_project
from face_models import face_picture

from studio.characters.adapters import ensure_adapters
from studio.characters.runtime import apply_adapters, scene_adapters, substitute_captions
from studio.worker.cache import PipelineCache
from studio.worker.process import Worker


def _latent(pipe, caption: str) -> torch.Tensor:
    from pipelines import ShotSpec

    out = pipe(
        shots=[ShotSpec(caption=caption, num_frames=1)],
        height=32,
        width=32,
        num_inference_steps=2,
        guidance_scale=1.0,
        max_sequence_length=16,
        output_type="latent",
        generator=torch.Generator().manual_seed(3),
    )
    return out.latents[0]


def test_train_on_the_worker_then_generate_with_the_adapter(sqlite_services):
    services = sqlite_services
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        project = tiny_project(services)
        mara = services.characters.create(project.id, "Mara", adapter_kind="lora")
        services.characters.add_reference(mara.id, "mara.png", png_bytes(face_picture([(20, 30, 64, RED)])))
        [job] = ensure_adapters(services, project.id, [mara.id])
        pipelines = PipelineCache(torch.device("cpu"), torch.float32, adapter_loader=apply_adapters)
        worker = Worker(services, worker_id="test-worker", pipelines=pipelines)
        worker.run(max_jobs=1, exit_when_idle=True)
        done = services.jobs.get(job.id)
        assert done.status == "done", done.error
        assert done.progress == 1.0 and done.result["kind"] == "lora"
        [adapter] = scene_adapters(services, project.id, [mara.id])
        assert adapter.id == done.result["adapter_id"] and ensure_adapters(services, project.id) == []

        # The training ran on the worker's warm base model and left it clean: no reload, no LoRA on it.
        base_pipe = pipelines.get("tiny", (), context=services)
        assert pipelines.stats.loads == 1 and not getattr(base_pipe.transformer, "peft_config", {})
        without = _latent(base_pipe, "<mara> climbs")
        pipe = pipelines.get("tiny", ((adapter.id, adapter.version),), context=services)
        assert pipe is base_pipe and pipelines.stats.adapter_swaps == 1
        [caption] = substitute_captions(pipe, ["<mara> climbs"])
        assert caption == "mara climbs"
        with_adapter = _latent(pipe, caption)
        assert (with_adapter - without).abs().max() > 0.05
    finally:
        torch.set_num_threads(previous)
