"""ORM row -> frozen view. Called inside a unit of work (relationships may lazy-load there)."""

from __future__ import annotations

import copy
import dataclasses
import functools
from typing import TypeVar

from studio.db import models
from studio.services import views

_V = TypeVar("_V")


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _view(cls: type[_V], row: object, **computed: object) -> _V:
    """A view whose every field is the row's attribute of the same name, except those given in `computed`."""
    return cls(**{name: getattr(row, name) for name in _field_names(cls) if name not in computed}, **computed)


def asset_view(row: models.Asset) -> views.AssetView:
    return _view(views.AssetView, row)


def project_view(row: models.Project) -> views.ProjectView:
    return _view(views.ProjectView, row, acceleration=dict(row.acceleration or {}))


def character_view(row: models.Character) -> views.CharacterView:
    return _view(views.CharacterView, row, reference_count=len(row.references))


def reference_view(row: models.ReferenceImage) -> views.ReferenceView:
    return _view(
        views.ReferenceView,
        row,
        face_box=tuple(row.face_box) if row.face_box is not None else None,
        face_embedding=tuple(row.face_embedding) if row.face_embedding is not None else None,
        flags=tuple(row.flags or ()),
    )


def adapter_view(row: models.Adapter) -> views.AdapterView:
    return _view(
        views.AdapterView,
        row,
        hyperparameters=copy.deepcopy(row.hyperparameters or {}),
        metrics=copy.deepcopy(row.metrics or {}),
    )


def shot_view(row: models.Shot, project_id: int | None = None) -> views.ShotView:
    return _view(
        views.ShotView,
        row,
        project_id=project_id if project_id is not None else row.scene.project_id,
        character_ids=tuple(c.id for c in row.characters),
        character_names=tuple(c.name for c in row.characters),
        take_count=sum(1 for take in row.takes if take.deleted_at is None),  # the bin's takes are not counted
    )


def scene_view(row: models.Scene, include_binned_shots: bool = False) -> views.SceneView:
    shots = sorted(
        (s for s in row.shots if include_binned_shots or s.deleted_at is None), key=lambda s: (s.position, s.id)
    )
    return _view(views.SceneView, row, shots=tuple(shot_view(s, row.project_id) for s in shots))


def take_view(row: models.Take, chosen_take_id: int | None) -> views.TakeView:
    return _view(
        views.TakeView,
        row,
        params=copy.deepcopy(row.params or {}),
        identity_scores=copy.deepcopy(row.identity_scores),
        is_chosen=row.id == chosen_take_id,
    )


def job_view(row: models.Job, joined: bool = False) -> views.JobView:
    return _view(
        views.JobView,
        row,
        payload=copy.deepcopy(row.payload or {}),
        result=copy.deepcopy(row.result),
        joined=joined,
    )


def export_view(row: models.Export) -> views.ExportView:
    return _view(views.ExportView, row, settings=copy.deepcopy(row.settings or {}))
