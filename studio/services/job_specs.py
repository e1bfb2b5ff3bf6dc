"""What each job kind carries: one frozen, validated, versioned spec per kind.

The UI, the CLI and the worker build and read jobs only through these. `JobService.enqueue(spec, ...)` stores
`spec.to_payload()` as the job's JSON payload; a handler reads it back with `spec_of(job)`. A spec checks its fields
when it is made, so a bad request is refused at enqueue with a message that says what to change, not by a worker
later. The payload records its spec's `version`; a payload written by a newer version than this code knows is
refused by name, and an older one is read with today's defaults for fields it lacks.

The project a job belongs to is the job's `project_id`, not part of its spec.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import PurePath
from typing import Any, ClassVar

from studio.services import validation as check
from studio.services.errors import ValidationError

MAX_GENERATION_SEED = 2**31 - 1  # seeds the generation draws and accepts (numpy's and torch's common range)
TRAINABLE_KINDS = ("lora", "embedding")  # adapter kinds a `train_adapter` job can make
REGENERATE_MODES = ("inpaint", "context")  # how a regeneration holds its neighbours (see MultiShotPipeline)


def _id(value: Any, what: str) -> int:
    return check.integer(value, what, 1, check.MAX_ID)


def _ids(value: Any, what: str) -> list[int]:
    if not isinstance(value, list | tuple):
        raise ValidationError(f"{what} must be a list of ids, got {value!r}")
    return [_id(i, what) for i in value]


def _optional(value: Any, checker, *args) -> Any:
    return None if value is None else checker(value, *args)


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{what} must be true or false, got {value!r}")
    return value


def _check_generation(spec: Any) -> None:
    """The fields both generation specs have."""
    _optional(spec.seed, check.integer, "seed", 0, MAX_GENERATION_SEED)
    _optional(spec.steps, check.integer, "steps", 1, check.MAX_STEPS)
    _ids(spec.after_jobs, "after_jobs")
    _optional(spec.target_shot_ids, _ids, "target_shot_ids")


@dataclass(frozen=True)
class JobSpec:
    """Base of the specs: `job_kind` names the kind, `version` the payload layout this code writes."""

    job_kind: ClassVar[str] = ""
    version: ClassVar[int] = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # each spec checks its own fields
        pass

    def to_payload(self) -> dict[str, Any]:
        return {"version": self.version, **asdict(self)}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> JobSpec:
        """The spec of a stored payload. Unknown keys are refused (a typo must not pass as a default)."""
        if not isinstance(payload, dict):
            raise ValidationError(f"a {cls.job_kind} payload must be a dict, got {type(payload).__name__}")
        version = payload.get("version", 1)
        if not isinstance(version, int) or version > cls.version:
            raise ValidationError(
                f"this {cls.job_kind} job was written by a newer studio (payload version {version!r}, this one "
                f"reads up to {cls.version}); run it with that studio's worker"
            )
        names = {f.name for f in fields(cls)}
        # "project_id" is the job's column; payloads may name it too, and it is read from the column
        unknown = sorted(set(payload) - names - {"version", "project_id"})
        if unknown:
            raise ValidationError(
                f"unknown {cls.job_kind} field(s) {', '.join(unknown)}; use any of: {', '.join(sorted(names))}"
            )
        return cls(**{key: value for key, value in payload.items() if key in names})


@dataclass(frozen=True)
class GenerateScene(JobSpec):
    """Takes for a scene's shots, generated together; the scene's other shots join as context with their takes."""

    job_kind: ClassVar[str] = "generate_scene"
    scene_id: int
    shot_ids: list[int] | None = None  # the shots that get new takes; None: every live shot of the scene
    only_missing: bool = False  # only the shots without a chosen take (what `python -m studio render` queues)
    seed: int | None = None  # a seed for the whole scene; None: each shot's stored seed, or a new one
    steps: int | None = None  # denoising steps; None: the project's
    after_jobs: list[int] = field(default_factory=list)  # adapter trainings to wait for (a failed one fails this)
    target_shot_ids: list[int] | None = None  # the shots it makes takes of, recorded by `JobService.enqueue`

    def validate(self) -> None:
        _id(self.scene_id, "scene_id")
        if self.shot_ids is not None:
            if not _ids(self.shot_ids, "shot_ids"):
                raise ValidationError("shot_ids is empty; leave it out to generate every shot of the scene")
            if self.only_missing:
                raise ValidationError("give shot_ids or only_missing, not both")
        _flag(self.only_missing, "only_missing")
        _check_generation(self)


@dataclass(frozen=True)
class RegenerateShot(JobSpec):
    """A new take of one shot; its neighbours' chosen takes are the context and get no new take."""

    job_kind: ClassVar[str] = "regenerate_shot"
    shot_id: int
    seed: int | None = None  # None: a new seed is drawn when the job runs
    mode: str | None = None  # "inpaint" | "context"; None: the model's own (its preset's regenerate_mode)
    steps: int | None = None  # denoising steps; None: the project's
    after_jobs: list[int] = field(default_factory=list)  # adapter trainings to wait for
    target_shot_ids: list[int] | None = None  # [shot_id], recorded by `JobService.enqueue`

    def validate(self) -> None:
        _id(self.shot_id, "shot_id")
        if self.mode is not None and self.mode not in REGENERATE_MODES:
            raise ValidationError(f"mode must be one of {', '.join(REGENERATE_MODES)}, got {self.mode!r}")
        _check_generation(self)


@dataclass(frozen=True)
class TrainAdapter(JobSpec):
    """Train a character's adapter from its reference pictures; it is registered once training finished."""

    job_kind: ClassVar[str] = "train_adapter"
    character_id: int
    kind: str = "lora"  # one of TRAINABLE_KINDS
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # overrides of the preset's training defaults

    def validate(self) -> None:
        _id(self.character_id, "character_id")
        if self.kind not in TRAINABLE_KINDS:
            raise ValidationError(f"adapter kind must be one of {', '.join(TRAINABLE_KINDS)}, got {self.kind!r}")
        if not isinstance(self.hyperparameters, dict):
            raise ValidationError(f"hyperparameters must be a dict of settings, got {self.hyperparameters!r}")


@dataclass(frozen=True)
class ExportFilm(JobSpec):
    """The project's chosen takes cut into a film (MP4) and a timeline (OTIO), stored as an export."""

    job_kind: ClassVar[str] = "export_film"
    music_asset_id: int | None = None  # an uploaded music file in the asset store, or
    music_path: str | None = None  # a music file on the worker's disk
    music_fade_seconds: float = 1.0  # fade-out of the music
    placeholder: bool = False  # a shot without a take becomes a grey card naming it (else the export is refused)
    allow_fast_path: bool = True  # False forces a re-encode even when the takes could be joined as they are
    out_path: str | None = None  # also write the film (.mp4) and its .otio there, on the worker's disk

    def validate(self) -> None:
        _optional(self.music_asset_id, _id, "music_asset_id")
        if self.music_asset_id is not None and self.music_path is not None:
            raise ValidationError("give music_asset_id or music_path, not both")
        if self.music_path is not None and not isinstance(self.music_path, str):
            raise ValidationError(f"music_path must be a file path, got {self.music_path!r}")
        check.number(self.music_fade_seconds, "music_fade_seconds", 0.0, 3600.0)
        _flag(self.placeholder, "placeholder")
        _flag(self.allow_fast_path, "allow_fast_path")
        if self.out_path is not None:
            if not isinstance(self.out_path, str) or PurePath(self.out_path).suffix.lower() != ".mp4":
                raise ValidationError(f"out_path must be a path ending in .mp4, got {self.out_path!r}")


SPECS: dict[str, type[JobSpec]] = {
    spec.job_kind: spec for spec in (GenerateScene, RegenerateShot, TrainAdapter, ExportFilm)
}
GENERATION_SPECS = (GenerateScene, RegenerateShot)


def job_spec(kind: str, payload: dict[str, Any]) -> JobSpec:
    """The spec of `kind` made from a payload dict (what a stored job or a script holds)."""
    if kind not in SPECS:
        raise ValidationError(f"unknown job kind {kind!r}; use one of: {', '.join(SPECS)}")
    return SPECS[kind].from_payload(payload)


def spec_of(job: Any) -> JobSpec:
    """The spec of a job row or view (its `kind` and `payload`)."""
    return job_spec(job.kind, job.payload or {})
