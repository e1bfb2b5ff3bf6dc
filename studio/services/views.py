"""Frozen views returned by services: plain data copied out of the ORM inside the unit of work.

Callers (UI, CLI, worker) never hold live ORM objects, so no lazy load can hit a closed session and no caller can
change the database behind a service's back. Timestamps are naive UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class AssetView:
    id: int
    sha256: str
    kind: str
    mime: str
    size_bytes: int
    original_name: str | None
    created_at: datetime


@dataclass(frozen=True)
class ProjectView:
    id: int
    name: str
    preset: str
    width: int
    height: int
    fps: int
    steps: int
    guidance: float
    negative_prompt: str
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    acceleration: dict = field(default_factory=dict)  # speed settings over the preset's (services.projects)

    @property
    def in_bin(self) -> bool:
        return self.deleted_at is not None


@dataclass(frozen=True)
class CharacterView:
    id: int
    project_id: int
    name: str
    trigger: str
    description: str
    adapter_kind: str  # what the storyboard asks to train: none | lora | embedding
    reference_count: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ReferenceView:
    id: int
    character_id: int
    asset_id: int
    original_name: str
    width: int
    height: int
    caption: str
    face_box: tuple[float, float, float, float] | None
    face_embedding: tuple[float, ...] | None
    flags: tuple[str, ...]
    crop_asset_id: int | None
    analyzed_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class AdapterView:
    id: int
    character_id: int
    kind: str
    base_preset: str
    status: str
    message: str
    hyperparameters: dict[str, Any]
    weights_asset_id: int | None
    metrics: dict[str, Any]
    version: int
    job_id: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ShotView:
    id: int
    scene_id: int
    project_id: int
    position: int  # 0-based within its scene
    caption: str
    num_frames: int
    character_ids: tuple[int, ...]
    character_names: tuple[str, ...]
    shot_size: str | None
    camera_move: str | None
    transition_type: str  # cut | dissolve | fade, into this shot
    transition_seconds: float
    trim_in: int
    trim_out: int
    seed: int | None
    chosen_take_id: int | None
    take_count: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None

    @property
    def in_bin(self) -> bool:
        return self.deleted_at is not None


@dataclass(frozen=True)
class SceneView:
    id: int
    project_id: int
    position: int  # 0-based within the project
    caption: str
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    shots: tuple[ShotView, ...] = field(default_factory=tuple)  # live shots in order

    @property
    def in_bin(self) -> bool:
        return self.deleted_at is not None


@dataclass(frozen=True)
class BinView:
    """What a project's bin holds: deleted scenes (with their shots) and deleted shots of live scenes."""

    scenes: tuple[SceneView, ...]
    shots: tuple[ShotView, ...]


@dataclass(frozen=True)
class TakeView:
    id: int
    shot_id: int
    number: int  # 1, 2, ... within the shot
    job_id: int | None
    video_asset_id: int
    thumbnail_asset_id: int
    latents_asset_id: int | None
    seed: int
    params: dict[str, Any]
    identity_scores: dict[str, Any] | None
    is_chosen: bool
    created_at: datetime
    deleted_at: datetime | None = None  # in the shot's take bin (restorable) since then


@dataclass(frozen=True)
class JobView:
    id: int
    kind: str
    status: str  # queued | running | done | failed | cancelled
    priority: int
    project_id: int | None
    payload: dict[str, Any]
    result: dict[str, Any] | None
    progress: float  # 0..1
    message: str
    error: str | None
    attempts: int
    cancel_requested: bool
    step: int | None
    total_steps: int | None
    eta_s: float | None
    preview_asset_id: int | None
    worker_id: str | None
    heartbeat_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    joined: bool = False  # an enqueue answered with this pending job instead of queueing the same request twice

    @property
    def is_finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled")


@dataclass(frozen=True)
class ExportView:
    id: int
    project_id: int
    job_id: int | None
    settings: dict[str, Any]
    video_asset_id: int
    timeline_asset_id: int | None
    created_at: datetime
