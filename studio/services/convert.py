"""ORM row -> frozen view. Called inside a unit of work (relationships may lazy-load there)."""

from __future__ import annotations

import copy

from studio.db import models
from studio.services import views


def asset_view(row: models.Asset) -> views.AssetView:
    return views.AssetView(
        id=row.id,
        sha256=row.sha256,
        kind=row.kind,
        mime=row.mime,
        size_bytes=row.size_bytes,
        original_name=row.original_name,
        created_at=row.created_at,
    )


def project_view(row: models.Project) -> views.ProjectView:
    return views.ProjectView(
        id=row.id,
        name=row.name,
        preset=row.preset,
        width=row.width,
        height=row.height,
        fps=row.fps,
        steps=row.steps,
        guidance=row.guidance,
        negative_prompt=row.negative_prompt,
        created_at=row.created_at,
        updated_at=row.updated_at,
        deleted_at=row.deleted_at,
    )


def character_view(row: models.Character) -> views.CharacterView:
    return views.CharacterView(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        trigger=row.trigger,
        description=row.description,
        adapter_kind=row.adapter_kind,
        reference_count=len(row.references),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def reference_view(row: models.ReferenceImage) -> views.ReferenceView:
    return views.ReferenceView(
        id=row.id,
        character_id=row.character_id,
        asset_id=row.asset_id,
        original_name=row.original_name,
        width=row.width,
        height=row.height,
        face_box=tuple(row.face_box) if row.face_box is not None else None,
        face_embedding=tuple(row.face_embedding) if row.face_embedding is not None else None,
        flags=tuple(row.flags or ()),
        crop_asset_id=row.crop_asset_id,
        analyzed_at=row.analyzed_at,
        created_at=row.created_at,
    )


def adapter_view(row: models.Adapter) -> views.AdapterView:
    return views.AdapterView(
        id=row.id,
        character_id=row.character_id,
        kind=row.kind,
        base_preset=row.base_preset,
        status=row.status,
        message=row.message,
        hyperparameters=copy.deepcopy(row.hyperparameters or {}),
        weights_asset_id=row.weights_asset_id,
        metrics=copy.deepcopy(row.metrics or {}),
        version=row.version,
        job_id=row.job_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def shot_view(row: models.Shot, project_id: int | None = None) -> views.ShotView:
    return views.ShotView(
        id=row.id,
        scene_id=row.scene_id,
        project_id=project_id if project_id is not None else row.scene.project_id,
        position=row.position,
        caption=row.caption,
        num_frames=row.num_frames,
        character_ids=tuple(c.id for c in row.characters),
        character_names=tuple(c.name for c in row.characters),
        shot_size=row.shot_size,
        camera_move=row.camera_move,
        transition_type=row.transition_type,
        transition_seconds=row.transition_seconds,
        trim_in=row.trim_in,
        trim_out=row.trim_out,
        seed=row.seed,
        chosen_take_id=row.chosen_take_id,
        take_count=len(row.takes),
        created_at=row.created_at,
        updated_at=row.updated_at,
        deleted_at=row.deleted_at,
    )


def scene_view(row: models.Scene, include_binned_shots: bool = False) -> views.SceneView:
    shots = sorted(
        (s for s in row.shots if include_binned_shots or s.deleted_at is None), key=lambda s: (s.position, s.id)
    )
    return views.SceneView(
        id=row.id,
        project_id=row.project_id,
        position=row.position,
        caption=row.caption,
        created_at=row.created_at,
        updated_at=row.updated_at,
        deleted_at=row.deleted_at,
        shots=tuple(shot_view(s, row.project_id) for s in shots),
    )


def take_view(row: models.Take, chosen_take_id: int | None) -> views.TakeView:
    return views.TakeView(
        id=row.id,
        shot_id=row.shot_id,
        number=row.number,
        job_id=row.job_id,
        video_asset_id=row.video_asset_id,
        thumbnail_asset_id=row.thumbnail_asset_id,
        latents_asset_id=row.latents_asset_id,
        seed=row.seed,
        params=copy.deepcopy(row.params or {}),
        identity_scores=copy.deepcopy(row.identity_scores),
        is_chosen=row.id == chosen_take_id,
        created_at=row.created_at,
    )


def job_view(row: models.Job) -> views.JobView:
    return views.JobView(
        id=row.id,
        kind=row.kind,
        status=row.status,
        priority=row.priority,
        project_id=row.project_id,
        payload=copy.deepcopy(row.payload or {}),
        result=copy.deepcopy(row.result),
        progress=row.progress,
        message=row.message,
        error=row.error,
        attempts=row.attempts,
        cancel_requested=row.cancel_requested,
        step=row.step,
        total_steps=row.total_steps,
        eta_s=row.eta_s,
        preview_asset_id=row.preview_asset_id,
        worker_id=row.worker_id,
        heartbeat_at=row.heartbeat_at,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def export_view(row: models.Export) -> views.ExportView:
    return views.ExportView(
        id=row.id,
        project_id=row.project_id,
        job_id=row.job_id,
        settings=copy.deepcopy(row.settings or {}),
        video_asset_id=row.video_asset_id,
        timeline_asset_id=row.timeline_asset_id,
        created_at=row.created_at,
    )
