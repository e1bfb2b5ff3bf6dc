"""A character's adapters through the services: which one is current, which are missing or stale ("on demand"),
queueing their training and saying how long it will take, and importing a LoRA.

Every function takes the `Services` bundle first and goes through its services only (no direct database access).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from studio.services.errors import ValidationError
from studio.services.job_specs import TRAINABLE_KINDS, TrainAdapter, spec_of

logger = logging.getLogger(__name__)

TRAIN_JOB = "train_adapter"


def reference_fingerprint(references) -> str:
    """Identifies a set of reference pictures by content (assets are content-addressed) and their captions (an
    adapter trained on other captions is out of date), order-free. Uncaptioned sets keep their old fingerprints."""
    entries = sorted((int(r.asset_id), r.caption or "") for r in references)
    parts = [f"{i}:{hashlib.sha256(c.encode()).hexdigest()[:12]}" if c else str(i) for i, c in entries]
    return hashlib.sha256(",".join(parts).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------
# Training requests and "on demand" staleness


@dataclass(frozen=True)
class TrainingNeed:
    character_id: int
    character_name: str
    kind: str  # lora | embedding
    reason: str  # "missing", "references changed", "trained for another model", or why it cannot be trained
    trainable: bool  # False when the character has no references
    pending_job_id: int | None  # a queued/running train_adapter job that will satisfy it


def _pending_training_jobs(services, project_id: int | None) -> list:
    jobs = []
    for status in ("queued", "running"):
        jobs += [j for j in services.jobs.list_jobs(status=status, project_id=project_id) if j.kind == TRAIN_JOB]
    return jobs


def _pending_job_for(services, character_id: int, kind: str, project_id: int | None):
    for job in _pending_training_jobs(services, project_id):
        spec = spec_of(job)
        if spec.character_id == character_id and spec.kind == kind:
            return job
    return None


def current_adapter(services, character_id: int, kind: str, preset: str):
    """The newest ready adapter that serves `kind` for `preset` (an imported LoRA serves a wanted LoRA)."""
    ready = [
        a
        for a in services.characters.list_adapters(character_id)
        if a.status == "ready" and a.weights_asset_id is not None and a.base_preset == preset
    ]
    kinds = ("lora", "imported") if kind == "lora" else (kind,)
    ready = [a for a in ready if a.kind in kinds]
    return max(ready, key=lambda a: (a.created_at, a.id), default=None)


def training_need(services, character, preset: str, kind: str | None = None) -> TrainingNeed | None:
    """Why `character` needs a (new) adapter of `kind` for `preset`, or None when its adapter is current."""
    kind = kind or character.adapter_kind
    if kind not in TRAINABLE_KINDS:
        return None
    references = services.characters.list_references(character.id)
    adapter = current_adapter(services, character.id, kind, preset)
    if adapter is not None and adapter.kind == "imported":
        return None  # the user brought this one: references do not make it stale
    if adapter is None:
        reason = "missing"
    elif adapter.hyperparameters.get("reference_fingerprint") != reference_fingerprint(references):
        reason = "references changed"
    else:
        return None
    pending = _pending_job_for(services, character.id, kind, character.project_id)
    if not references:
        return TrainingNeed(
            character.id,
            character.name,
            kind,
            f"{reason}, but {character.name} has no reference pictures: add some first",
            False,
            None,
        )
    return TrainingNeed(character.id, character.name, kind, reason, True, pending.id if pending else None)


def adapters_to_train(services, project_id: int, character_ids=None) -> list[TrainingNeed]:
    """Characters of the project (or only `character_ids`) whose wanted adapter is missing or stale."""
    project = services.projects.get(project_id)
    wanted = set(character_ids) if character_ids is not None else None
    needs = []
    for character in services.characters.list(project_id):
        if wanted is not None and character.id not in wanted:
            continue
        need = training_need(services, character, project.preset)
        if need is not None:
            needs.append(need)
    return needs


def request_training(
    services, character_id: int, kind: str | None = None, priority: int = 0, hyperparameters: dict | None = None
):
    """Queue a `train_adapter` job (or return the one already queued for this character and kind)."""
    character = services.characters.get(character_id)
    kind = kind or (character.adapter_kind if character.adapter_kind in TRAINABLE_KINDS else "lora")
    if kind not in TRAINABLE_KINDS:
        raise ValidationError(f"adapter kind must be one of {', '.join(TRAINABLE_KINDS)}, got {kind!r}")
    if not services.characters.list_references(character_id):
        raise ValidationError(f"{character.name} has no reference pictures: add at least one before training")
    pending = _pending_job_for(services, character_id, kind, character.project_id)
    if pending is not None:
        return pending
    spec = TrainAdapter(character_id=character_id, kind=kind, hyperparameters=dict(hyperparameters or {}))
    return services.jobs.enqueue(spec, project_id=character.project_id, priority=priority)


def ensure_adapters(services, project_id: int, character_ids=None, priority: int = 1) -> list:
    """The render path's "on demand" step: queue training for every missing or stale adapter of these characters
    and return the training jobs (new and already queued) the render should wait for. Characters that cannot be
    trained (no references) are left out: they render without an adapter."""
    jobs = []
    for need in adapters_to_train(services, project_id, character_ids):
        if not need.trainable:
            logger.warning("%s: %s", need.character_name, need.reason)
            continue
        if need.pending_job_id is not None:
            jobs.append(services.jobs.get(need.pending_job_id))
        else:
            jobs.append(request_training(services, need.character_id, need.kind, priority=priority))
    return jobs


# ---------------------------------------------------------------------------------------------------------------
# How long a training will take, said before it starts

KIND_WORDS = {"lora": "LoRA", "embedding": "embedding"}
RECENT_TRAININGS = 5  # the per-step time is the median of this many latest trainings on this machine


@dataclass(frozen=True)
class TrainingEstimate:
    character_name: str
    kind: str
    steps: int
    seconds: float | None  # None: neither this machine nor the model's record gives a per-step time
    basis: str  # where the per-step time comes from: "on this machine", "on a 2-core CPU (the model's record)"

    def sentence(self, first: bool = True) -> str:
        """`training Kai's LoRA first, about 6 min on this machine (2000 steps)` (`first`: before a generation)."""
        what = f"training {self.character_name}'s {KIND_WORDS.get(self.kind, self.kind)}{' first' if first else ''}"
        if self.seconds is None:
            return f"{what} ({self.steps} steps; no training has run on this machine yet to time it)"
        minutes = self.seconds / 60
        length = f"about {max(1, round(minutes))} min" if minutes >= 1 else f"about {max(1, round(self.seconds))} s"
        return f"{what}, {length} {self.basis} ({self.steps} steps)"


def _measured_step_seconds(services, kind: str, preset: str) -> float | None:
    """Median seconds a step of this machine's latest finished trainings of `kind` for `preset` took."""
    import socket
    import statistics

    host = f"{socket.gethostname()}:"
    per_step = []
    for job in services.jobs.list_jobs(status="done"):
        result = job.result or {}
        if (
            job.kind != TRAIN_JOB
            or (job.payload or {}).get("kind") != kind
            or not (job.worker_id or "").startswith(host)
        ):
            continue
        if not result.get("steps") or job.started_at is None or job.finished_at is None or job.project_id is None:
            continue
        try:
            if services.projects.get(job.project_id).preset != preset:
                continue
        except Exception:  # noqa: BLE001 - a purged project's job still timed this machine, but not for this preset
            continue
        per_step.append(((job.finished_at - job.started_at).total_seconds() / result["steps"], job.id))
    latest = [seconds for seconds, _ in sorted(per_step, key=lambda pair: pair[1])[-RECENT_TRAININGS:]]
    return statistics.median(latest) if latest else None


def _recorded_step_seconds(services, kind: str, preset: str) -> tuple[float, str] | None:
    """The per-step time the model's folder records for `kind` on the device this studio trains on."""
    from pipelines.loading import select_device_and_dtype
    from studio.services.model_limits import model_record

    record = model_record(preset, services.settings.resolved_model_dir).get("adapter_training", {}).get(kind, {})
    device = select_device_and_dtype(services.settings.device, services.settings.dtype)[0].type
    seconds = (record.get("step_s") or {}).get(device)
    if not seconds:
        return None
    return float(seconds), f"on {record.get('machine', device)} (the model's record)"


def training_estimate(services, job) -> TrainingEstimate:
    """How long the queued `train_adapter` job will take: its steps times this machine's measured per-step time
    (latest trainings here), else the time the model's folder records for this device."""
    from studio.characters.training import _config

    spec = spec_of(job)
    kind = spec.kind
    character = services.characters.get(spec.character_id)
    preset = services.projects.get(character.project_id).preset
    steps = _config(kind, preset, dict(spec.hyperparameters)).steps
    measured = _measured_step_seconds(services, kind, preset)
    if measured is not None:
        return TrainingEstimate(character.name, kind, steps, measured * steps, "on this machine")
    recorded = _recorded_step_seconds(services, kind, preset)
    if recorded is not None:
        return TrainingEstimate(character.name, kind, steps, recorded[0] * steps, recorded[1])
    return TrainingEstimate(character.name, kind, steps, None, "")


# ---------------------------------------------------------------------------------------------------------------
# Import


def transformer_config_for(preset_name: str, model_dir: Path | None = None):
    """The transformer config of a preset, without loading weights: what imported LoRAs are checked against."""
    import json

    from pipelines import get_preset

    preset = get_preset(preset_name)
    if preset.source == "code":
        from pipelines.tiny import build_tiny_components

        return build_tiny_components()["transformer"].config
    candidates = []
    if model_dir is not None:
        candidates.append(Path(model_dir) / preset.name)
        candidates.append(Path(model_dir))
    if preset.source == "bundled":
        candidates.append(Path(__file__).resolve().parents[2] / "assets" / preset.name)
    for folder in candidates:
        config = folder / "transformer" / "config.json"
        if config.is_file():
            return json.loads(config.read_text())
    if preset.repo_id:
        from pipelines.loading import find_model  # raises ModelWeightsMissingError with the fix

        # Where the pipeline would load it from: MODEL_DIR/<preset>/, the repo-named folder, the HF cache.
        folder = find_model(preset, model_root=model_dir).folder
        return json.loads((folder / "transformer" / "config.json").read_text())
    raise ValidationError(
        f"cannot check the LoRA against model {preset.name!r}: its weights are not installed "
        f"(looked in {', '.join(str(c) for c in candidates) or 'nowhere'})"
    )


def import_adapter(
    services,
    character_id: int,
    filename: str,
    data: bytes,
    trigger_text: str | None = None,
    weight: float = 1.0,
    transformer_config=None,
):
    """Validate a LoRA file against the project's model and register it as a ready `imported` adapter.

    Nothing is stored when the file is refused (`ValidationError` with the importer's reason)."""
    from adapters.importing import AdapterImportError, import_lora

    character = services.characters.get(character_id)
    project = services.projects.get(character.project_id)
    if not 0.0 <= float(weight) <= 2.0:
        raise ValidationError(f"adapter weight must be between 0 and 2, got {weight}")
    if transformer_config is None:
        try:
            transformer_config = transformer_config_for(project.preset, services.settings.resolved_model_dir)
        except ValueError as error:
            raise ValidationError(str(error)) from None
    try:
        normalised, imported = import_lora(
            data,
            transformer_config,
            filename=filename,
            trigger=character.trigger,
            trigger_text=trigger_text,
            preset=project.preset,
        )
    except AdapterImportError as error:
        raise ValidationError(str(error)) from None
    hyperparameters = {
        "rank": imported.rank,
        "layout": imported.layout,
        "modules": len(imported.modules),
        "source_file": Path(filename).name,
        "trigger_text": trigger_text,
        "weight": float(weight),
    }
    return services.characters.add_adapter(
        character_id,
        "imported",
        project.preset,
        hyperparameters=hyperparameters,
        status="ready",
        weights=normalised,
        filename=f"{character.name}-imported-{Path(filename).stem}.safetensors",
    )


__all__ = [
    "TRAINABLE_KINDS",
    "TrainingEstimate",
    "TrainingNeed",
    "adapters_to_train",
    "current_adapter",
    "ensure_adapters",
    "import_adapter",
    "reference_fingerprint",
    "request_training",
    "training_estimate",
    "training_need",
    "transformer_config_for",
]
