"""Job specs: each kind's fields are checked when the spec is made, payloads round-trip, and a payload no spec
reads (a typo, a newer studio's) is refused by name."""

from __future__ import annotations

import pytest

from studio.db.models import JOB_KINDS
from studio.services.errors import ValidationError
from studio.services.job_specs import (
    SPECS,
    ExportFilm,
    GenerateScene,
    RegenerateShot,
    TrainAdapter,
    job_spec,
    spec_of,
)
from studio.services.views import JobView


def test_every_job_kind_has_one_spec():
    assert set(SPECS) == set(JOB_KINDS)


@pytest.mark.parametrize(
    "spec",
    [
        GenerateScene(scene_id=3, shot_ids=[4, 5], seed=7, steps=12, after_jobs=[1]),
        GenerateScene(scene_id=3, only_missing=True),
        RegenerateShot(shot_id=4, seed=0, mode="context"),
        TrainAdapter(character_id=2, kind="embedding", hyperparameters={"steps": 5}),
        ExportFilm(music_asset_id=9, music_fade_seconds=2.5, placeholder=True, out_path="/tmp/film.mp4"),
    ],
)
def test_a_payload_reads_back_as_the_spec_it_was_written_from(spec):
    payload = spec.to_payload()
    assert payload["version"] == 1
    assert job_spec(spec.job_kind, payload) == spec


def test_an_older_payload_reads_with_todays_defaults_and_its_project_id_is_ignored():
    assert job_spec("regenerate_shot", {"project_id": 1, "shot_id": 4}) == RegenerateShot(shot_id=4)
    assert job_spec("export_film", {}) == ExportFilm(music_fade_seconds=1.0, placeholder=False, allow_fast_path=True)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: GenerateScene(scene_id="3"), "scene_id must be a whole number"),
        (lambda: GenerateScene(scene_id=3, shot_ids=[]), "shot_ids is empty"),
        (lambda: GenerateScene(scene_id=3, shot_ids=[4], only_missing=True), "shot_ids or only_missing, not both"),
        (lambda: GenerateScene(scene_id=3, steps=0), "steps must be between 1 and 1000"),
        (lambda: GenerateScene(scene_id=3, seed=2**31), "seed must be between 0"),
        (lambda: GenerateScene(scene_id=3, only_missing="yes"), "only_missing must be true or false"),
        (lambda: GenerateScene(scene_id=3, after_jobs=7), "after_jobs must be a list of ids"),
        (lambda: RegenerateShot(shot_id=4, mode="blend"), "mode must be one of inpaint, context"),
        (lambda: TrainAdapter(character_id=2, kind="dreambooth"), "adapter kind must be one of lora, embedding"),
        (lambda: TrainAdapter(character_id=2, hyperparameters=[1]), "hyperparameters must be a dict"),
        (lambda: ExportFilm(music_asset_id=1, music_path="a.mp3"), "music_asset_id or music_path, not both"),
        (lambda: ExportFilm(music_fade_seconds=-1), "music_fade_seconds must be between 0.0 and 3600.0"),
        (lambda: ExportFilm(out_path="film.mov"), "out_path must be a path ending in .mp4"),
    ],
)
def test_a_bad_field_is_refused_saying_what_to_change(make, message):
    with pytest.raises(ValidationError, match=message):
        make()


def test_unknown_fields_kinds_and_newer_versions_are_refused_by_name():
    with pytest.raises(ValidationError, match="unknown generate_scene field\\(s\\) shots; use any of: after_jobs"):
        job_spec("generate_scene", {"scene_id": 3, "shots": [1]})
    with pytest.raises(ValidationError, match="unknown job kind 'paint'"):
        job_spec("paint", {})
    with pytest.raises(ValidationError, match="written by a newer studio \\(payload version 2"):
        job_spec("export_film", {"version": 2})
    with pytest.raises(ValidationError, match="a train_adapter payload must be a dict"):
        job_spec("train_adapter", [1])


def test_spec_of_reads_a_job_view():
    view = JobView(
        id=1, kind="train_adapter", status="queued", priority=0, project_id=1,
        payload={"version": 1, "character_id": 2, "kind": "lora", "hyperparameters": {}}, result=None, progress=0.0,
        message="", error=None, attempts=0, cancel_requested=False, step=None, total_steps=None, eta_s=None,
        preview_asset_id=None, worker_id=None, heartbeat_at=None, created_at=None, started_at=None, finished_at=None,
    )  # fmt: skip
    assert spec_of(view) == TrainAdapter(character_id=2)
