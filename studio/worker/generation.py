"""Generation jobs: `generate_scene` and `regenerate_shot` turn storyboard shots into takes.

Both build the scene's `ShotSpec`s from the services, run the worker's warm `MultiShotPipeline`, then write one
take per generated shot through `services.takes.add_take` (MP4 at the project's fps, PNG thumbnail, the clean
latents as .safetensors for later regeneration, and every parameter sent to the pipeline). Takes are written only
after the last denoising step, each in one unit of work (files and row), so a job killed while denoising has
written nothing and simply runs again; one killed between two takes finishes the missing ones when it runs again.

What each job asks for is its spec (`studio.services.job_specs`: `GenerateScene`, `RegenerateShot`), read back
with `spec_of(job)`; the job's project_id names the project. A scene generation without `shot_ids` generates every
shot; with them (or with `only_missing`, what `python -m studio render` uses) only those, the scene's other shots
joining as context through their chosen takes, so a re-run never redoes a take that exists. A regeneration makes a
new take of one shot; its neighbours' chosen takes are the context and get no new take. Both wait for the jobs in
`after_jobs` (adapter trainings queued with them; one that failed or was cancelled fails the generation, naming
it). Every take a job writes becomes its shot's chosen take (the film-maker asked for it); earlier takes stay
listed.
"""

from __future__ import annotations

import io
import logging
import os
import random
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.registry import get_preset
from studio.services.job_specs import MAX_GENERATION_SEED, spec_of
from studio.worker.context import JobCancelled, JobContext, PrerequisiteFailed
from studio.worker.retry import retry_db

logger = logging.getLogger(__name__)

DENOISE_SHARE = 0.9  # fraction of a job's progress bar spent denoising; decoding and writing takes the rest


@dataclass
class ScenePlan:
    """What one generation job sends to the pipeline and which shots become takes."""

    project: Any
    scene: Any
    shots: list  # ShotViews sent to the pipeline, in scene order
    targets: list[int]  # indices into `shots` that get new takes
    context_latents: list  # per shot: clean latents (torch.Tensor) for context shots, None for targets
    seeds: list[int]  # one per shot in `shots`
    captions: list[str]  # captions as sent (trigger tokens substituted)
    adapters: tuple = ()  # ((adapter_id, version), ...) loaded for the scene
    adapter_names: dict = field(default_factory=dict)  # adapter id -> "Character/kind v#"
    skipped: list = field(default_factory=list)  # shot ids left out, with why
    # loaded LoRA name -> indices of the shots showing its character: the LoRA changes only those shots' tokens
    lora_shots: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------------
# Reading the storyboard


def _scene_of(services, project_id, scene_id):
    scene = services.storyboard.get_scene(scene_id)
    if scene.project_id != project_id or scene.in_bin:
        raise ValueError(
            f"scene {scene_id} is not a live scene of project {project_id}; restore it from the bin first"
        )
    return scene


def _scene_of_shot(services, project_id, shot_id):
    shot = services.storyboard.get_shot(shot_id)
    if shot.project_id != project_id or shot.in_bin:
        raise ValueError(f"shot {shot_id} is not a live shot of project {project_id}; restore it from the bin first")
    return _scene_of(services, project_id, shot.scene_id)


def _project_id_of(job) -> int:
    if job.project_id is None:
        raise ValueError(f"job {job.id} has no project; enqueue it with project_id")
    return job.project_id


def load_take_latents(services, take):
    import safetensors.torch

    asset_id = getattr(take, "latents_asset_id", None)
    if asset_id is None:
        return None
    return safetensors.torch.load(services.assets.read_bytes(asset_id))["latents"]


def expected_latent_frames(num_frames: int) -> int:
    return (num_frames - 1) // 4 + 1


def _take_fits(take, latents, shot, project) -> bool:
    """A take can serve as context only if it was made by this model at this size and the shot kept its length."""
    if take is None or latents is None:
        return False
    params = take.params or {}
    return (
        params.get("model") == project.preset
        and params.get("width") == project.width
        and params.get("height") == project.height
        and latents.shape[-3] == expected_latent_frames(shot.num_frames)
    )


def _characters_of(services, project_id, shots) -> dict:
    """Character views by id for the characters these shots use."""
    wanted = {character_id for shot in shots for character_id in shot.character_ids}
    if not wanted:
        return {}
    return {c.id: c for c in services.characters.list(project_id) if c.id in wanted}


def _caption_with_triggers(caption: str, characters: list, with_adapter: set) -> str:
    """Point each character of the shot at its adapter, or at its name when it has none.

    A character with an adapter is named in the caption by its trigger token (`<mara>`), which the character area
    swaps for what the adapter answers to once the adapters are on the pipeline; a caption may call it by name
    ("Mara climbs") or by trigger. A character without an adapter keeps (or gets back) its plain name, since a
    raw `<mara>` means nothing to the text encoder.
    """
    for character in characters:
        trigger = getattr(character, "trigger", None)
        if not trigger:
            continue
        if character.id in with_adapter:
            if trigger not in caption:
                caption = re.sub(rf"\b{re.escape(character.name)}\b", trigger, caption)
        else:
            caption = caption.replace(trigger, character.name)
    return caption


def plan_scene(
    services, project, scene, targets_ids: list[int] | None, seed: int | None, regenerate_seed: bool = False
) -> ScenePlan:
    """Decide which shots go to the pipeline, which are generated and which only serve as context.

    `targets_ids=None` generates every shot. Otherwise the targets are generated and every other shot with a
    chosen take whose latents still fit is context; shots with neither are left out of this run.
    """
    if targets_ids is not None and not targets_ids:
        return ScenePlan(project, scene, [], [], [], [], [])
    shots, targets, context, skipped = [], [], [], []
    for shot in scene.shots:
        if targets_ids is None or shot.id in targets_ids:
            shots.append(shot)
            targets.append(len(shots) - 1)
            context.append(None)
            continue
        take = services.takes.chosen_take(shot.id)
        latents = load_take_latents(services, take) if take is not None else None
        if _take_fits(take, latents, shot, project):
            shots.append(shot)
            context.append(latents)
        else:
            skipped.append({"shot_id": shot.id, "why": "no take" if take is None else "take does not fit the shot"})
    if not targets:
        return ScenePlan(project, scene, [], [], [], [], [])

    # Seeds: a context shot keeps its take's seed; a generated shot uses its own fixed seed when it has one (a
    # scene generated twice comes out the same), else one drawn from the job's seed (or at random). Regenerating
    # a shot always draws a new seed unless the job names one: a new take that repeats the old one is no use.
    rng = random.Random(seed) if seed is not None else random.SystemRandom()
    seeds = []
    for index, shot in enumerate(shots):
        if index not in targets:
            seeds.append(int(services.takes.chosen_take(shot.id).seed))
        elif regenerate_seed:
            seeds.append(int(seed) if seed is not None else rng.randint(0, MAX_GENERATION_SEED))
        else:
            seeds.append(int(shot.seed) if shot.seed is not None else rng.randint(0, MAX_GENERATION_SEED))

    characters = _characters_of(services, project.id, shots)
    adapters, adapter_names, with_adapter, lora_shots = [], {}, set(), {}
    if characters:
        from adapters.loading import lora_adapter_name
        from studio.characters.runtime import scene_adapters

        for adapter in scene_adapters(services, project.id, list(characters)):
            character = characters[adapter.character_id]
            adapters.append((adapter.id, adapter.version))
            adapter_names[adapter.id] = f"{character.name}/{adapter.kind} v{adapter.version}"
            with_adapter.add(character.id)
            if adapter.kind in ("lora", "imported"):
                name = lora_adapter_name(adapter.kind, adapter.id, adapter.version)
                lora_shots[name] = [k for k, shot in enumerate(shots) if character.id in shot.character_ids]
    captions = []
    for shot in shots:
        shot_characters = [characters[c] for c in shot.character_ids if c in characters]
        captions.append(_caption_with_triggers(shot.caption, shot_characters, with_adapter))
    return ScenePlan(
        project,
        scene,
        shots,
        targets,
        context,
        seeds,
        captions,
        tuple(sorted(adapters)),
        adapter_names,
        skipped,
        lora_shots,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Encoding results


def frames_to_uint8(frames) -> np.ndarray:
    """[F, H, W, 3] floats in [0, 1] (or uint8) -> uint8."""
    array = np.asarray(frames)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return array


def encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    """H.264 yuv420p MP4 bytes through the ffmpeg that imageio-ffmpeg ships (no system ffmpeg needed)."""
    import imageio_ffmpeg

    frames = frames_to_uint8(frames)
    count, height, width, _ = frames.shape
    handle, path = tempfile.mkstemp(suffix=".mp4")
    os.close(handle)
    try:
        writer = imageio_ffmpeg.write_frames(
            path,
            (width, height),
            fps=fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            macro_block_size=1,
            quality=None,
            output_params=["-crf", "18", "-preset", "veryfast", "-movflags", "+faststart"],
            ffmpeg_log_level="error",
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        with open(path, "rb") as file:
            return file.read()
    finally:
        os.unlink(path)


def encode_png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frames_to_uint8(frame[None])[0]).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_latents(latents, metadata: dict[str, str] | None = None) -> bytes:
    import safetensors.torch

    return safetensors.torch.save({"latents": latents.detach().to("cpu").contiguous()}, metadata=metadata)


# ---------------------------------------------------------------------------------------------------------------------
# Running the pipeline


class _StepCallback:
    """Per-step progress, optional preview, and cancel through `pipe._interrupt`.

    The pipeline checks `_interrupt` before every step and then returns at once without decoding, restoring its
    attention processors on the way out: cancelling costs at most the step in flight. Exceptions that must end the
    job (worker stopping, job lost) are kept and raised after the pipeline has returned, for the same reason.
    """

    def __init__(self, ctx: JobContext, total_steps: int, preview_every: int, preview_shot: int):
        self.ctx = ctx
        self.total_steps = total_steps
        self.preview_every = preview_every
        self.preview_shot = preview_shot
        self.stopped_at: int | None = None
        self.error: BaseException | None = None

    def __call__(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        done = step + 1
        preview = None
        if self.preview_every and done % self.preview_every == 0 and done < self.total_steps:
            preview = _preview_png(pipe, callback_kwargs.get("latents"), self.preview_shot)
        try:
            self.ctx.report_progress(
                DENOISE_SHARE * done / self.total_steps,
                f"denoising step {done}/{self.total_steps}",
                step=done,
                total=self.total_steps,
                preview=preview,
            )
            cancel = self.ctx.should_cancel()
        except Exception as error:  # noqa: BLE001 - re-raised once the pipeline has unwound
            self.error, cancel = error, True
        if cancel and done < self.total_steps:
            pipe._interrupt = True
            self.stopped_at = done
        elif cancel:
            self.stopped_at = done
        return callback_kwargs

    def raise_if_stopped(self) -> None:
        if self.error is not None:
            raise self.error
        if self.stopped_at is not None:
            raise JobCancelled(f"job {self.ctx.job_id} cancelled at step {self.stopped_at}/{self.total_steps}")


def _preview_png(pipe, latents, shot: int) -> bytes | None:
    """First frame of the shot decoded from the current latents (only when previews are on)."""
    if latents is None:
        return None
    try:
        return encode_png(pipe.preview_frame(latents, shot=shot))
    except Exception:  # noqa: BLE001 - a preview is a nicety; it never fails the job
        return None


def run_plan(ctx: JobContext, plan: ScenePlan, regenerate_mode: str | None = None, steps: int | None = None) -> dict:
    """Generate `plan`'s targets and write their takes; returns the job result."""
    import torch

    services, project = ctx.services, plan.project
    if not plan.targets:
        ctx.report_progress(1.0, "nothing to generate: every shot already has a take")
        return {"takes": [], "shots": [], "skipped": plan.skipped}
    from pipelines import ShotSpec

    preset = get_preset(project.preset)
    steps = int(steps or project.steps)
    acceleration = project_acceleration(project, ctx.pipelines)
    accelerator = accelerator_file(services, project)
    ctx.report_progress(0.0, f"loading model {preset.name}", step=0, total=steps)
    started = time.perf_counter()
    pipe = ctx.pipelines.get(
        preset.name, plan.adapters, context=services, acceleration=acceleration, accelerator=accelerator
    )
    from pipelines.acceleration import apply_runtime, regeneration_share

    partial = len(plan.targets) < len(plan.shots)
    mode = regenerate_mode or preset.regenerate_mode
    share = regeneration_share(
        [expected_latent_frames(shot.num_frames) for shot in plan.shots], plan.targets if partial else None, mode
    )
    apply_runtime(pipe, acceleration, steps, preset.name, share)
    timings = {"pipeline_s": round(time.perf_counter() - started, 4)}
    captions = list(plan.captions)
    if plan.adapters:
        from studio.characters.runtime import substitute_captions

        captions = substitute_captions(pipe, captions)  # "<mara>" -> what Mara's adapter answers to
    ctx.check_cancelled()

    specs = [
        ShotSpec(caption=caption, num_frames=shot.num_frames)
        for caption, shot in zip(captions, plan.shots, strict=True)
    ]
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in plan.seeds]
    params = {
        "model": preset.name,
        "width": project.width,
        "height": project.height,
        "fps": project.fps,
        "num_inference_steps": steps,
        "guidance_scale": project.guidance,
        "negative_prompt": project.negative_prompt or None,
        "global_caption": plan.scene.caption or None,
        "cross_attention": preset.cross_attention,
        "self_attention": preset.self_attention,
        "gap": preset.gap,
        "max_sequence_length": preset.max_sequence_length,
        "adapter_shots": plan.lora_shots,  # each character LoRA acted on these shots' tokens only
        "acceleration": acceleration.record(),  # step cache, attention backend, compile, VRAM profile as run
        "accelerator": _accelerator_record(pipe, project),  # the step-distillation LoRA on every shot, if any
    }
    step_callback = _StepCallback(ctx, steps, ctx.settings.preview_every, preview_shot=plan.targets[0])
    call_kwargs = dict(
        shots=specs,
        global_caption=params["global_caption"],
        negative_prompt=params["negative_prompt"],
        height=project.height,
        width=project.width,
        num_inference_steps=steps,
        guidance_scale=project.guidance,
        cross_attention=preset.cross_attention,
        self_attention=preset.self_attention,
        generator=generators,
        max_sequence_length=preset.max_sequence_length,
        output_type="np",
        callback_on_step_end=step_callback,
        callback_on_step_end_tensor_inputs=["latents"],
        adapter_shots=plan.lora_shots or None,
    )
    if preset.guidance_scale_2 is not None:
        # Two experts: the project's guidance drives the high-noise expert, the preset's the low-noise one.
        call_kwargs["guidance_scale_2"] = params["guidance_scale_2"] = preset.guidance_scale_2
    if partial:
        call_kwargs.update(regenerate=list(plan.targets), context_latents=plan.context_latents, regenerate_mode=mode)
    started = time.perf_counter()
    output = pipe(**call_kwargs)
    step_callback.raise_if_stopped()
    timings["generate_s"] = round(time.perf_counter() - started, 4)
    started = time.perf_counter()

    scene_captions = captions
    take_ids = []
    for order, index in enumerate(plan.targets):
        shot = plan.shots[index]
        ctx.report_progress(
            DENOISE_SHARE + (1 - DENOISE_SHARE) * order / len(plan.targets),
            f"writing take of shot {shot.id}",
            step=steps,
            total=steps,
        )
        frames = frames_to_uint8(output.shots[index])
        video = encode_mp4(frames, project.fps)
        thumbnail = encode_png(frames[len(frames) // 2])
        take_params = dict(
            params,
            caption=scene_captions[index],
            shot_caption=shot.caption,  # as the card said it (`take_drift` compares the card with it later)
            scene_captions=scene_captions,
            scene_shot_ids=[s.id for s in plan.shots],
            shot_index=index,
            num_frames=shot.num_frames,
            seed=plan.seeds[index],
            scene_seeds=list(plan.seeds),
            regenerated=list(plan.targets) if partial else None,
            regenerate_mode=mode if partial else None,
            adapters=[{"id": a, "version": v, "name": plan.adapter_names.get(a)} for a, v in plan.adapters],
            device=str(getattr(ctx.pipelines, "device", "")),
            dtype=str(getattr(ctx.pipelines, "dtype", "")).removeprefix("torch."),
            job_kind=ctx.job.kind,
            pipeline=output.parameters,
        )
        latents = encode_latents(output.latents[index], {"model": preset.name, "shot_id": str(shot.id)})
        # A cancel that lands while takes are written keeps the takes already written (they are complete and
        # cost the same to keep as to drop) and writes no more.
        if ctx.cancel_requested():
            raise JobCancelled(f"job {ctx.job_id} cancelled while writing takes")
        take = retry_db(
            services.takes.add_take,
            shot.id,
            ctx.job_id,
            video=video,
            thumbnail=thumbnail,
            latents=latents,
            seed=plan.seeds[index],
            params=take_params,
            choose=True,  # what was just asked for is what the card and the film show; older takes stay listed
        )
        take_ids.append(take.id)
        if shot.character_ids:
            _score_identity(services, take.id)
    ctx.report_progress(1.0, f"{len(take_ids)} take(s) written", step=steps, total=steps)
    timings["write_s"] = round(time.perf_counter() - started, 4)
    return {
        "takes": take_ids,
        "shots": [plan.shots[i].id for i in plan.targets],
        "skipped": plan.skipped,
        "timings": timings,
    }


def project_acceleration(project, pipelines):
    """The project's speed settings over the defaults, refused (`AccelerationUnavailable`, the job fails with its
    message) before any model is loaded when this worker cannot run them: no CUDA, a package missing, a cache the
    model has no calibration for. Nothing falls back silently."""
    from pipelines.acceleration import Acceleration, check_available

    values = {k: v for k, v in (getattr(project, "acceleration", None) or {}).items() if k != "accelerator"}
    acceleration = Acceleration.from_dict(values)
    device = getattr(pipelines, "device", None)
    device_type = getattr(device, "type", None) or str(device or "cpu").split(":")[0]
    check_available(acceleration, device_type, project.preset, getattr(pipelines, "offload", "none"))
    return acceleration


def accelerator_file(services, project):
    """Path of the project's accelerator LoRA (`<models>/accelerators/<name>.safetensors`), or None; a name whose
    file is not there fails the job before loading, naming the folder."""
    from pathlib import Path

    from pipelines.acceleration import AccelerationUnavailable

    name = (getattr(project, "acceleration", None) or {}).get("accelerator")
    if not name:
        return None
    folder = Path(services.settings.resolved_model_dir) / "accelerators"
    path = folder / f"{name}.safetensors"
    if not path.is_file():
        raise AccelerationUnavailable(
            f"accelerator LoRA {name!r} is not on this machine: put {name}.safetensors in {folder}, or clear the "
            "project's accelerator"
        )
    return path


def _accelerator_record(pipe, project) -> dict | None:
    name = (getattr(project, "acceleration", None) or {}).get("accelerator")
    loaded = getattr(pipe, "accelerator_load", None)
    if not name or loaded is None:
        return None
    return {
        "name": name,
        "layers": len(loaded.modules),
        "norm_differences_not_applied": len(loaded.norm_differences_skipped),
        "flow_shift": float(getattr(pipe.scheduler.config, "shift", 0.0) or 0.0),
    }


def _score_identity(services, take_id) -> None:
    """Identity scores of the take's characters (skipped without the face models); never fails the job."""
    try:
        from studio.characters.references import score_take

        score_take(services, take_id)
    except Exception:  # noqa: BLE001 - a score is advice for the film-maker; the take itself is complete
        logger.exception("identity scores of take %s failed", take_id)


def _written_by_this_job(ctx: JobContext, shots) -> dict[int, list[int]]:
    """Takes an earlier attempt of this very job already wrote (it died between two takes): shot id -> take ids.

    A re-queued job finishes what is missing instead of making those shots again, so a kill while takes are
    being written never leaves a shot with two takes from one request.
    """
    if (ctx.job.attempts or 0) <= 1:
        return {}
    written = {}
    for shot in shots:
        ids = [take.id for take in ctx.services.takes.list_takes(shot.id) if take.job_id == ctx.job_id]
        if ids:
            written[shot.id] = ids
    return written


def _with_earlier_takes(result: dict, written: dict[int, list[int]]) -> dict:
    if written:
        earlier = [take_id for ids in written.values() for take_id in ids]
        result = dict(result, takes=earlier + result["takes"], shots=list(written) + result["shots"])
    return result


def wait_for_training(ctx: JobContext, after_jobs: list[int], poll_s: float = 1.0, sleep=time.sleep) -> None:
    """A generation queued behind adapter trainings (`after_jobs`: the UI queues a wanted adapter's training when it
    queues the shots that need it) starts once they have all finished, so that with several workers it does not
    render without the adapter; a single worker claims the training first anyway (priority).

    A training that failed or was cancelled fails the generation with that reason (`PrerequisiteFailed`): run
    anyway, its shots would show the character by plain name, without the adapter asked for, and nothing would say
    so."""
    waiting = [int(i) for i in after_jobs]
    ended = {}
    while waiting:
        for job_id in waiting:
            job = retry_db(ctx.services.jobs.get, job_id)
            if job.is_finished:
                ended[job_id] = job
        waiting = [i for i in waiting if i not in ended]
        if waiting:
            ctx.report_progress(0.0, f"waiting for adapter training (job {', '.join(map(str, waiting))})")
            ctx.check_cancelled()
            sleep(poll_s)
    unfinished = [job for job in ended.values() if getattr(job, "status", "done") != "done"]
    if unfinished:
        raise PrerequisiteFailed(" ".join(_prerequisite_text(ctx.services, job) for job in unfinished))


def _prerequisite_text(services, job) -> str:
    """Why a job this generation waited for did not give it what it needed, and what to do, naming the character."""
    who = "the adapter"
    try:
        spec = spec_of(job)
        character = services.characters.get(spec.character_id)
        kind = {"lora": "LoRA", "embedding": "embedding"}[spec.kind]
        who = f"{character.name}'s {kind}"
    except Exception:  # noqa: BLE001 - the name is a courtesy; the job id says which training it was
        pass
    outcome = "was cancelled" if job.status == "cancelled" else f"failed ({job.error or job.message})"
    return (
        f"Not generated: the training of {who} it waited for (job {job.id}) {outcome}. Train it again (Characters "
        "tab) and generate again, or take the character out of the shot."
    )


def run_generate_scene(ctx: JobContext) -> dict:
    spec = ctx.spec
    wait_for_training(ctx, spec.after_jobs)
    project_id = _project_id_of(ctx.job)
    project = ctx.services.projects.get(project_id)
    scene = _scene_of(ctx.services, project_id, spec.scene_id)
    if not scene.shots:
        raise ValueError(f"scene {scene.id} has no shots; add a shot before generating it")
    if spec.only_missing:
        targets = [shot.id for shot in scene.shots if shot.chosen_take_id is None]
    else:
        targets = spec.shot_ids
    written = _written_by_this_job(ctx, scene.shots)
    if written:
        targets = [s.id for s in scene.shots if (targets is None or s.id in targets) and s.id not in written]
    plan = plan_scene(ctx.services, project, scene, targets, spec.seed)
    return _with_earlier_takes(run_plan(ctx, plan, steps=spec.steps), written)


def run_regenerate_shot(ctx: JobContext) -> dict:
    spec = ctx.spec
    wait_for_training(ctx, spec.after_jobs)
    project_id = _project_id_of(ctx.job)
    project = ctx.services.projects.get(project_id)
    scene = _scene_of_shot(ctx.services, project_id, spec.shot_id)
    written = _written_by_this_job(ctx, [s for s in scene.shots if s.id == spec.shot_id])
    targets = [] if written else [spec.shot_id]
    plan = plan_scene(ctx.services, project, scene, targets, spec.seed, regenerate_seed=True)
    return _with_earlier_takes(run_plan(ctx, plan, regenerate_mode=spec.mode, steps=spec.steps), written)
