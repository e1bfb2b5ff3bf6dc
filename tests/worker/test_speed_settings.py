"""Speed settings of a project (step cache, attention backend, compile, VRAM profile): stored, applied by the
worker to its warm pipeline, recorded with each take, and refused before loading when this machine cannot run them."""

from __future__ import annotations

import pytest
import torch

from pipelines.acceleration import Acceleration
from studio.services.errors import ValidationError
from studio.services.job_specs import GenerateScene
from studio.worker.cache import PipelineCache
from studio.worker.process import Worker
from tests.worker.helpers import tiny_project


def run_all(services):
    torch.set_num_threads(1)
    return Worker(services, worker_id="in-process", poll_interval_s=0.01).run(exit_when_idle=True)


def test_speed_settings_are_stored_without_their_defaults(sqlite_services):
    services = sqlite_services
    project, _, _ = tiny_project(services)
    assert project.acceleration == {}
    updated = services.projects.update_settings(
        project.id, acceleration={"step_cache": "first-block", "cache_threshold": 0.1, "attention_backend": "native"}
    )
    assert updated.acceleration == {"step_cache": "first-block", "cache_threshold": 0.1}
    assert services.projects.get(project.id).acceleration == updated.acceleration
    services.projects.update_settings(project.id, acceleration={})
    assert services.projects.get(project.id).acceleration == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"step_cache": "teacache"}, "step_cache must be one of"),
        ({"attention_backend": "sage_hub"}, "hub backends download kernels"),
        ({"cache_threshold": 3}, "cache_threshold must be between"),
        ({"vram_profile": "fp4"}, "vram_profile must be one of"),
        ({"accelerator": "../fast"}, "accelerator must be the name of a LoRA file"),
        ("first-block", "speed settings must be a mapping"),
    ],
)
def test_bad_speed_settings_are_refused_with_what_to_change(sqlite_services, value, message):
    project, _, _ = tiny_project(sqlite_services)
    with pytest.raises(ValidationError, match=message):
        sqlite_services.projects.update_settings(project.id, acceleration=value)
    assert sqlite_services.projects.get(project.id).acceleration == {}


def test_a_step_cache_runs_on_the_worker_and_is_recorded_with_each_take(sqlite_services):
    services = sqlite_services
    project, scene_id, shot_ids = tiny_project(services, steps=6)
    services.projects.update_settings(project.id, acceleration={"step_cache": "first-block", "cache_threshold": 0.5})
    job = services.jobs.enqueue(GenerateScene(scene_id=scene_id, seed=3), project.id)
    run_all(services)
    assert services.jobs.get(job.id).status == "done", services.jobs.get(job.id).error
    for shot_id in shot_ids:
        (take,) = services.takes.list_takes(shot_id)
        assert take.params["acceleration"] == {
            "step_cache": "first-block",
            "cache_threshold": 0.5,
            "cache_interval": None,
            "attention_backend": "native",
            "compile": False,
            "vram_profile": "default",
        }


@pytest.mark.parametrize(
    ("acceleration", "message"),
    [
        ({"attention_backend": "flash"}, "attention backend 'flash' needs a CUDA GPU"),
        ({"compile": True}, "compile needs a CUDA GPU"),
        ({"vram_profile": "fp8-group"}, "group offload\\) needs a CUDA GPU"),
        ({"step_cache": "magcache"}, "no calibrated magnitude ratios for model 'tiny'"),
    ],
)
def test_a_setting_this_worker_cannot_run_fails_the_job_before_loading(sqlite_services, acceleration, message):
    services = sqlite_services
    project, scene_id, shot_ids = tiny_project(services)
    services.projects.update_settings(project.id, acceleration=acceleration)
    job = services.jobs.enqueue(GenerateScene(scene_id=scene_id), project.id)
    run_all(services)
    failed = services.jobs.get(job.id)
    assert failed.status == "failed"
    assert message.replace("\\", "") in failed.error or pytest.fail(failed.error)
    assert all(services.takes.list_takes(shot_id) == [] for shot_id in shot_ids)


def test_vram_profile_and_compile_reload_while_cache_and_backend_do_not():
    loads = []

    def loader(preset, device, dtype, offload, vae_tiling, model_root, **extra):
        loads.append((offload, extra))
        return type("Pipe", (), {})()

    cache = PipelineCache(torch.device("cpu"), torch.float32, loader=loader, adapter_loader=lambda *a: None)
    first = cache.get("tiny", acceleration=Acceleration())
    assert cache.get("tiny", acceleration=Acceleration(step_cache="first-block")) is first
    assert cache.get("tiny", acceleration=Acceleration(attention_backend="sage")) is first
    fp8 = cache.get("tiny", acceleration=Acceleration(vram_profile="fp8"))
    assert fp8 is not first
    assert loads == [("none", {}), ("none", {"fp8_storage": True})]
    assert cache.get("tiny") is not fp8  # back to the worker's own profile: loaded again


def test_a_caller_without_speed_settings_gets_the_model_without_cache_hooks():
    """Adapter training reuses the warm pipeline: a step cache a generation left on it must not follow it there
    (diffusers' cache hooks need a denoising loop's cache context)."""
    from pipelines.acceleration import apply_runtime
    from pipelines.loading import load_pipeline

    def loader(preset, device, dtype, offload, vae_tiling, model_root, **extra):
        return load_pipeline(preset, device="cpu", dtype="fp32", **extra)

    cache = PipelineCache(torch.device("cpu"), torch.float32, loader=loader, adapter_loader=lambda *a: None)
    setting = Acceleration(step_cache="first-block", cache_threshold=0.2)
    pipe = cache.get("tiny", acceleration=setting)
    apply_runtime(pipe, setting, 4, "tiny")
    assert pipe.transformer.is_cache_enabled
    assert cache.get("tiny") is pipe  # same model, no reload
    assert not pipe.transformer.is_cache_enabled
    transformer = pipe.transformer
    hidden = torch.randn(1, 16, 1, 4, 4)
    transformer(hidden, torch.tensor([500.0]), torch.randn(1, 3, 32), return_dict=False)  # no cache context needed


def _write_accelerator(services, name="lightx2v"):
    from safetensors.torch import save_file

    from pipelines.tiny import build_tiny_components
    from tests.pipelines.test_accelerator_lora import lightx2v_style

    folder = services.settings.resolved_model_dir / "accelerators"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(lightx2v_style(build_tiny_components()["transformer"]), str(folder / f"{name}.safetensors"))


def test_an_accelerator_lora_brings_few_step_defaults_and_runs_on_every_shot(sqlite_services):
    services = sqlite_services
    project, scene_id, shot_ids = tiny_project(services)
    _write_accelerator(services)
    updated = services.projects.update_settings(project.id, acceleration={"accelerator": "lightx2v"})
    assert (updated.steps, updated.guidance) == (4, 1.0)  # what step-distilled LoRAs are made for
    job = services.jobs.enqueue(GenerateScene(scene_id=scene_id, seed=5), project.id)
    run_all(services)
    assert services.jobs.get(job.id).status == "done", services.jobs.get(job.id).error
    for shot_id in shot_ids:
        (take,) = services.takes.list_takes(shot_id)
        assert (take.params["num_inference_steps"], take.params["guidance_scale"]) == (4, 1.0)
        assert take.params["accelerator"] == {
            "name": "lightx2v",
            "layers": 10,  # 2 blocks x 4 projections, the time embedding and the head
            "norm_differences_not_applied": 2,
            "flow_shift": 5.0,
        }
    cleared = services.projects.update_settings(project.id, acceleration={})
    assert (cleared.steps, cleared.guidance) == (2, 5.0)  # the tiny preset's own again


def test_a_missing_accelerator_file_fails_the_job_naming_the_folder(sqlite_services):
    services = sqlite_services
    project, scene_id, _ = tiny_project(services)
    services.projects.update_settings(project.id, acceleration={"accelerator": "causvid"})
    job = services.jobs.enqueue(GenerateScene(scene_id=scene_id), project.id)
    run_all(services)
    failed = services.jobs.get(job.id)
    assert failed.status == "failed" and "put causvid.safetensors in" in failed.error
    assert str(services.settings.resolved_model_dir / "accelerators") in failed.error


def test_swapping_character_adapters_keeps_the_accelerator_active():
    from adapters.loading import apply_adapters, loaded_loras
    from pipelines import MultiShotPipeline
    from pipelines.acceleration import load_accelerator
    from pipelines.tiny import build_tiny_components
    from tests.pipelines.test_accelerator_lora import lightx2v_style

    pipe = MultiShotPipeline(**build_tiny_components())
    load_accelerator(pipe, lightx2v_style(pipe.transformer))
    apply_adapters(pipe, [])  # a scene without character adapters
    assert loaded_loras(pipe) == ["accelerator"] and pipe.get_active_adapters() == ["accelerator"]
