"""Takes (never overwritten, first becomes chosen) and exports (film + timeline stored with their row)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from studio.db import models
from studio.services.errors import NotFoundError, ValidationError
from studio.services.job_specs import ExportFilm
from tests.core_services.helpers import add_take, png_bytes


@pytest.fixture
def shot(services):
    project = services.projects.create("Takes")
    scene = services.storyboard.add_scene(project.id)
    return services.storyboard.add_shot(scene.id, "wide")


def test_takes_are_numbered_and_never_overwritten(services, shot):
    job = services.jobs.enqueue(ExportFilm())
    first = add_take(services, shot.id, seed=11, job_id=job.id)
    second = add_take(services, shot.id, seed=12)
    assert (first.number, second.number) == (1, 2)
    assert first.is_chosen and not second.is_chosen
    assert services.takes.chosen_take(shot.id).id == first.id
    assert services.assets.read_bytes(first.video_asset_id) == f"video of shot {shot.id} seed 11".encode()
    assert services.assets.get(first.thumbnail_asset_id).mime == "image/png"
    assert services.assets.get(first.latents_asset_id).kind == "latents"
    chosen = services.takes.choose_take(shot.id, second.id)
    assert chosen.is_chosen
    assert [(t.number, t.is_chosen) for t in services.takes.list_takes(shot.id)] == [(1, False), (2, True)]
    assert services.storyboard.get_shot(shot.id).chosen_take_id == second.id
    scored = services.takes.set_identity_scores(first.id, {"Mara": 0.71})
    assert scored.identity_scores == {"Mara": 0.71}


def test_take_errors(services, shot):
    other_scene = services.storyboard.add_scene(shot.project_id)
    other = services.storyboard.add_shot(other_scene.id, "other")
    take = add_take(services, other.id)
    with pytest.raises(ValidationError, match=f"belongs to shot {other.id}"):
        services.takes.choose_take(shot.id, take.id)
    with pytest.raises(NotFoundError, match="shot 999"):
        add_take(services, 999)
    with pytest.raises(ValidationError, match="thumbnail must be a PNG"):
        services.takes.add_take(shot.id, None, b"v", b"not an image", None, 1, {})
    assert services.takes.chosen_take(shot.id) is None


def test_failed_take_leaves_no_file(services, shot):
    with pytest.raises(ValidationError):
        services.takes.add_take(shot.id, None, b"video", png_bytes(), b"lat", 1, {"bad": float("nan")})
    with pytest.raises(NotFoundError):
        services.takes.add_take(shot.id, 424242, b"video-x", png_bytes(), b"lat-x", 1, {})
    assert [p for p in services.settings.assets_dir.rglob("*") if p.is_file()] == []
    with services.db.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(models.Asset)) == 0


def test_exports_store_video_from_bytes_or_path(services, shot, tmp_path):
    film = tmp_path / "film.mp4"
    film.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"x" * 1000)
    job = services.jobs.enqueue(ExportFilm(), project_id=shot.project_id)
    first = services.exports.create(shot.project_id, job.id, {"fps": 8, "music": None}, film, b'{"OTIO_SCHEMA": 1}')
    second = services.exports.create(shot.project_id, None, {"fps": 8}, b"other film")
    assert services.assets.read_bytes(first.video_asset_id) == film.read_bytes()
    assert services.assets.get(first.timeline_asset_id).mime == "application/vnd.opentimelineio+json"
    assert second.timeline_asset_id is None
    assert [e.id for e in services.exports.list(shot.project_id)] == [second.id, first.id]
    assert services.exports.get(first.id).settings == {"fps": 8, "music": None}
    with pytest.raises(NotFoundError, match="project 999"):
        services.exports.create(999, None, {}, b"x")


def test_a_deleted_take_goes_to_the_bin_hands_on_the_choice_and_comes_back(services):
    project = services.projects.create("take bin", preset="tiny")
    scene = services.storyboard.add_scene(project.id, caption="")
    shot = services.storyboard.add_shot(scene.id, "wide").id
    first, second, third = (add_take(services, shot, seed=seed) for seed in (1, 2, 3))
    services.takes.choose_take(shot, second.id)
    services.takes.delete_take(second.id)  # the chosen one: the newest left is chosen instead
    assert [t.number for t in services.takes.list_takes(shot)] == [1, 3]
    assert [t.number for t in services.takes.list_takes(shot, in_bin=True)] == [2]
    assert services.takes.chosen_take(shot).id == third.id
    assert services.storyboard.get_shot(shot).take_count == 2
    with pytest.raises(ValidationError, match="take 2 is in the bin"):
        services.takes.choose_take(shot, second.id)
    services.takes.delete_take(first.id)
    services.takes.delete_take(third.id)
    assert services.takes.list_takes(shot) == [] and services.takes.chosen_take(shot) is None
    restored = services.takes.restore_take(first.id)
    assert restored.is_chosen and restored.deleted_at is None  # a shot without a take gets the restored one
    assert add_take(services, shot, seed=4).number == 4  # a binned take's number is never reused
