"""The `train_adapter` job: train a character's LoRA or embedding on the worker and register it when complete.

    run_train_adapter(services, job, report_progress, should_cancel, pipelines=None) -> dict

Payload: `{"character_id": int, "kind": "lora" | "embedding", "hyperparameters": {...overrides}}`.
The Adapter row and its weights are written in one unit of work only after training finished, so a job that is
killed, cancelled or fails leaves no adapter behind (the run starts over when the job is queued again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from pathlib import Path

from studio.characters.adapters import reference_fingerprint
from studio.services.errors import ValidationError
from studio.services.job_specs import spec_of

logger = logging.getLogger(__name__)

PREPARE_SHARE = 0.05  # progress fraction for loading the model and encoding the references
SAVE_SHARE = 0.03  # and for writing the weights at the end
LOSS_EVERY_STEPS = 10  # the loss points so far are written to the job (its partial result) every this many steps
COMPONENT_NAMES = ("tokenizer", "text_encoder", "vae", "transformer", "scheduler")
# Hyper-parameters a payload may override, per kind (the rest comes from the preset's defaults).
OVERRIDABLE = {
    "lora": ("rank", "alpha", "steps", "learning_rate", "batch_size", "augment_variants", "seed"),
    "embedding": ("num_vectors", "steps", "learning_rate", "batch_size", "augment_variants", "seed", "init_text"),
}


def training_components(services, preset: str, pipelines=None) -> dict:
    """The base model's components: from the worker's warm pipeline (no adapters on it) when there is one."""
    if pipelines is not None:
        pipe = pipelines.get(preset, (), context=services)
    else:
        from pipelines import load_pipeline

        settings = services.settings
        pipe = load_pipeline(
            preset, device=settings.device, dtype=settings.dtype, model_root=settings.resolved_model_dir
        )
    return {name: getattr(pipe, name) for name in COMPONENT_NAMES}


def _config(kind: str, preset: str, overrides: dict):
    from adapters.embedding import EmbeddingTrainingConfig
    from adapters.lora import LoraTrainingConfig

    unknown = set(overrides) - set(OVERRIDABLE[kind])
    if unknown:
        raise ValidationError(
            f"unknown {kind} setting(s) {sorted(unknown)}; use any of: {', '.join(OVERRIDABLE[kind])}"
        )
    config_class = LoraTrainingConfig if kind == "lora" else EmbeddingTrainingConfig
    config = config_class.for_preset(preset, **overrides)
    try:
        config.validate()
    except ValueError as error:
        raise ValidationError(str(error)) from None
    return config


def reference_captions(references, trigger: str, description: str) -> list[str] | None:
    """One training caption per reference: its own caption where the film-maker wrote one, else the trigger and
    the description. None when no reference has a caption (the trainers' default, the same words)."""
    if not any(r.caption for r in references):
        return None
    from adapters.common import training_captions

    fallback = training_captions(trigger, description)[0]
    return [r.caption or fallback for r in references]


def _file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's size, first and last MiB: tells retrained weights apart without reading gigabytes."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(chunk))
        if path.stat().st_size > chunk:
            handle.seek(-min(chunk, path.stat().st_size - chunk), 2)
            digest.update(handle.read(chunk))
    return digest.hexdigest()


def model_fingerprint(services, preset: str) -> str:
    """What identifies the base model's weights an adapter is trained on (a LoRA of other weights is stale):
    the digests of the model folder's component files, or `code:NAME` for a preset built in code."""
    from pipelines import get_preset
    from pipelines.loading import DEMO_MODEL_DIR, find_model

    spec = get_preset(preset)
    if spec.source == "code":
        return f"code:{spec.name}"
    checkpoints: list[Path] = []
    if spec.source == "bundled":
        folder = DEMO_MODEL_DIR
    else:  # found as the worker finds it: MODEL_DIR/<preset>/, a repo-named folder, the HF cache, single files
        location = find_model(spec, model_root=services.settings.resolved_model_dir)
        folder, checkpoints = location.folder, sorted(Path(p) for p in (location.checkpoints or {}).values())
    digest = hashlib.sha256()
    for name in COMPONENT_NAMES:
        for path in sorted((Path(folder) / name).rglob("*")):
            # training.json is the folder's provenance record (how it was trained, in words and numbers), not
            # weights or configuration: editing its text must not make every adapter of the model stale.
            if path.is_file() and path.name != "training.json":
                digest.update(f"{path.relative_to(folder).as_posix()}:{_file_digest(path)};".encode())
    for path in checkpoints:  # single-file experts replace the folder's transformer weights
        digest.update(f"{path.name}:{_file_digest(path)};".encode())
    return digest.hexdigest()[:16]


def training_recipe(services, character, references, kind: str, config) -> dict:
    """Everything a training run's result depends on, in content terms (no database ids): the base model, the
    character's trigger and description, each reference picture (sha256) with the caption it trains on, and the
    training settings. Two runs with the same recipe train the same adapter; a shipped LoRA is used only when
    its recorded recipe equals the one the studio would train now."""
    from dataclasses import asdict

    captions = reference_captions(references, character.trigger, character.description) or [""] * len(references)
    pictures = sorted(
        [services.assets.get(r.asset_id).sha256, caption] for r, caption in zip(references, captions, strict=True)
    )
    return {
        "kind": kind,
        "preset": services.projects.get(character.project_id).preset,
        "model": model_fingerprint(services, services.projects.get(character.project_id).preset),
        "trigger": character.trigger,
        "description": character.description,
        "references": pictures,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
    }


def recipe_fingerprint(recipe: dict) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def run_train_adapter(services, job, report_progress, should_cancel, pipelines=None) -> dict:
    from dataclasses import asdict

    from adapters.embedding import train_embedding
    from adapters.lora import train_lora

    spec = spec_of(job)
    kind = spec.kind
    character = services.characters.get(spec.character_id)
    project = services.projects.get(character.project_id)
    preset = project.preset
    config = _config(kind, preset, dict(spec.hyperparameters))
    references = services.characters.list_references(character.id)
    if not references:
        raise ValidationError(f"{character.name} has no reference pictures: add at least one before training")
    done = [a for a in services.characters.list_adapters(character.id) if a.job_id == job.id and a.status == "ready"]
    if done:
        # This job already registered its adapter before the worker died: running it again must not train twice.
        adapter = done[-1]
        report_progress(1.0, f"{character.name}'s {kind} v{adapter.version} is ready")
        return {"adapter_id": adapter.id, "character_id": character.id, "kind": kind, "version": adapter.version}
    fingerprint = reference_fingerprint(references)
    images = [services.assets.read_bytes(r.asset_id) for r in references]
    captions = reference_captions(references, character.trigger, character.description)
    recipe = training_recipe(services, character, references, kind, config)

    report_progress(0.0, f"loading {preset} for {character.name}'s {kind}", step=0, total=config.steps)
    components = training_components(services, preset, pipelines)
    if should_cancel():
        return {"cancelled": True, "steps": 0}
    report_progress(PREPARE_SHARE, f"training {character.name}'s {kind}", step=0, total=config.steps)

    curve: list[list[float]] = []  # [step, loss] so far, shown as the live loss curve while the job runs

    def progress(step: int, total: int, loss: float) -> None:
        fraction = PREPARE_SHARE + (1 - PREPARE_SHARE - SAVE_SHARE) * step / total
        report_progress(fraction, f"{kind} step {step}/{total}, loss {loss:.4f}", step=step, total=total)
        curve.append([int(step), round(float(loss), 6)])
        if step % LOSS_EVERY_STEPS == 0 or step == total:
            try:
                services.jobs.report_partial_result(job.id, {"loss_curve": curve})
            except Exception:  # the live curve is a view: a failed write never stops the training
                logger.warning("could not write the loss curve of job %s at step %s", job.id, step, exc_info=True)

    tmp_dir = Path(services.settings.data_dir) / "tmp"
    output = tmp_dir / f"adapter-job{job.id}-{uuid.uuid4().hex[:8]}.safetensors"
    train = train_lora if kind == "lora" else train_embedding
    # The LoRA file carries its recipe, so a copy shipped elsewhere can be checked before it is used.
    extra = {"record": {"recipe": recipe, "recipe_fingerprint": recipe_fingerprint(recipe)}} if kind == "lora" else {}
    try:
        result = train(
            components,
            images,
            trigger=character.trigger,
            output_path=output,
            config=config,
            description=character.description,
            preset=preset,
            progress=progress,
            should_stop=should_cancel,
            captions=captions,
            **extra,
        )
        if result.stopped:
            return {"cancelled": True, "steps": result.steps_done}
        report_progress(1 - SAVE_SHARE, f"saving {character.name}'s {kind}", step=config.steps, total=config.steps)
        weights = result.path.read_bytes()
        # A cancel that arrived while saving still wins: nothing is registered.
        if should_cancel():
            return {"cancelled": True, "steps": result.steps_done}
        hyperparameters = {
            **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
            "trigger": character.trigger,
            "trigger_text": result.metadata.get("trigger_text"),
            "references": sorted(int(r.asset_id) for r in references),
            "reference_fingerprint": fingerprint,
            "recipe_fingerprint": recipe_fingerprint(recipe),
        }
        adapter = services.characters.add_adapter(
            character.id,
            kind,
            preset,
            hyperparameters=hyperparameters,
            status="ready",
            job_id=job.id,
            weights=weights,
        )
        adapter = services.characters.update_adapter_status(
            adapter.id, "ready", message=f"trained {result.steps_done} steps", metrics=result.metrics
        )
    finally:
        output.unlink(missing_ok=True)
    report_progress(
        1.0, f"{character.name}'s {kind} v{adapter.version} is ready", step=config.steps, total=config.steps
    )
    metrics = result.metrics
    return {
        "adapter_id": adapter.id,
        "character_id": character.id,
        "kind": kind,
        "version": adapter.version,
        "steps": result.steps_done,
        "loss_first": metrics["loss_first"],
        "loss_last": metrics["loss_last"],
        "eval_loss_before": metrics["eval_loss_before"],
        "eval_loss_after": metrics["eval_loss_after"],
    }
