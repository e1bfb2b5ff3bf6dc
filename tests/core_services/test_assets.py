"""Asset store: content addressing, atomic writes, rollback cleanup, the start-up sweep, upload validation."""

from __future__ import annotations

import io
import os
import time

import pytest
from PIL import Image
from sqlalchemy import func, select

from studio.db import models
from studio.services import build_services
from studio.services.assets import sanitize_filename, validate_image
from studio.services.errors import ValidationError
from tests.core_services.helpers import png_header_only


def png_bytes(width: int = 8, height: int = 8, color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _age(path, seconds: float = 3600) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def _files(root) -> list:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_put_bytes_is_content_addressed_and_deduplicated(services):
    first = services.assets.put_bytes(b"hello", "test", "application/json", filename="../../etc/passwd")
    again = services.assets.put_bytes(b"hello", "test", "application/json")
    assert first.id == again.id
    assert first.sha256 == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert first.size_bytes == 5
    assert first.original_name == "passwd"
    # The caller said JSON; the content is not, so the row says what the content is.
    assert first.mime == "application/octet-stream"
    path = services.assets.path_of(first.id)
    assert path == services.settings.assets_dir / "2c" / f"{first.sha256}.dat"
    assert services.assets.read_bytes(first.id) == b"hello"
    assert _files(services.settings.assets_dir) == [path]  # no temp file left


def test_put_file_streams_large_content(services, tmp_path):
    source = tmp_path / "film.mp4"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    asset = services.assets.put_file(source, "export", "video/mp4")
    assert asset.size_bytes == source.stat().st_size
    assert services.assets.path_of(asset.id).read_bytes() == source.read_bytes()


def test_failed_unit_of_work_removes_its_new_file(services):
    with pytest.raises(RuntimeError):
        with services.db.unit_of_work() as session:
            services.assets.add_bytes(session, b"never committed", "test", "application/json")
            raise RuntimeError("boom between file and commit")
    assert _files(services.settings.assets_dir) == []
    with services.db.unit_of_work() as session:
        assert session.scalar(select(func.count()).select_from(models.Asset)) == 0


def test_failed_unit_of_work_keeps_a_file_another_row_uses(services):
    kept = services.assets.put_bytes(b"shared", "test", "application/json")
    with pytest.raises(RuntimeError):
        with services.db.unit_of_work() as session:
            services.assets.add_bytes(session, b"shared", "test", "application/json")
            raise RuntimeError("boom")
    assert services.assets.read_bytes(kept.id) == b"shared"


def test_crash_between_file_and_row_leaves_nothing_after_restart(settings):
    """A process dies after renaming the file but before committing the row: the next start removes the file."""
    services = build_services(settings)
    try:
        session = services.db.session_factory()
        services.assets.add_bytes(session, b"orphan video", "video", "video/mp4")
        session.flush()
        # Crash: the transaction never commits and no rollback callback runs.
        session.connection().invalidate()
        session.close()
        orphans = _files(settings.assets_dir)
        assert len(orphans) == 1
        _age(orphans[0])  # the crash happened a while ago (younger files may belong to a live writer)
        # and a temp file from a write that died before its rename
        temp = settings.assets_dir / "tmp-deadbeef"
        temp.write_bytes(b"half written")
        _age(temp)
    finally:
        services.close()
    restarted = build_services(settings)
    try:
        assert _files(settings.assets_dir) == []
        with restarted.db.unit_of_work() as session:
            assert session.scalar(select(func.count()).select_from(models.Asset)) == 0
    finally:
        restarted.close()


def test_sweep_leaves_young_unreferenced_files_alone(services):
    young = services.settings.assets_dir / "tmp-inflight"
    young.write_bytes(b"being written by another process")
    assert services.assets.sweep_orphans() == (0, 0)
    assert young.exists()
    assert services.assets.sweep_orphans(grace_s=0) == (1, 0)


def test_rows_whose_file_vanished_are_removed_with_what_needs_them(services):
    project = services.projects.create("Sweep")
    video = services.assets.put_bytes(b"video-1", "video", "video/mp4")
    thumb = services.assets.put_bytes(png_bytes(), "thumbnail", "image/png")
    video2 = services.assets.put_bytes(b"video-2", "video", "video/mp4")
    with services.db.unit_of_work() as session:
        scene = models.Scene(project_id=project.id, position=0, caption="")
        session.add(scene)
        session.flush()
        shot = models.Shot(scene_id=scene.id, position=0, caption="c", num_frames=17)
        session.add(shot)
        session.flush()
        take1 = models.Take(shot_id=shot.id, number=1, video_asset_id=video.id, thumbnail_asset_id=thumb.id, seed=1)
        take2 = models.Take(shot_id=shot.id, number=2, video_asset_id=video2.id, thumbnail_asset_id=thumb.id, seed=2)
        session.add_all([take1, take2])
        session.flush()
        shot.chosen_take_id = take2.id
        shot_id, take1_id = shot.id, take1.id
    services.assets.path_of(video2.id).unlink()
    assert services.assets.sweep_orphans() == (0, 1)
    with services.db.unit_of_work() as session:
        shot = session.get(models.Shot, shot_id)
        assert [t.id for t in shot.takes] == [take1_id]
        assert shot.chosen_take_id == take1_id


def test_image_validation_accepts_png_jpeg_webp_by_content():
    for image_format, mime in (("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")):
        buffer = io.BytesIO()
        Image.new("RGB", (20, 10)).save(buffer, format=image_format)
        info = validate_image(buffer.getvalue(), "face.gif", max_bytes=10**6, max_pixels=10**6)
        assert (info.mime, info.width, info.height, info.filename) == (mime, 20, 10, "face.gif")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"GIF89a" + b"\0" * 100, "not a readable"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not a readable"),
    ],
)
def test_image_validation_refuses_other_content(data, message):
    with pytest.raises(ValidationError, match=message):
        validate_image(data, "x.png", max_bytes=10**6, max_pixels=10**6)


def test_image_validation_refuses_gif_even_if_decodable():
    buffer = io.BytesIO()
    Image.new("P", (4, 4)).save(buffer, format="GIF")
    with pytest.raises(ValidationError, match="GIF images are not accepted"):
        validate_image(buffer.getvalue(), "x.png", max_bytes=10**6, max_pixels=10**6)


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        (7000, 7000, "7000x7000 is 49,000,000 pixels, over the limit of 40,000,000"),
        (30000, 30000, "far more pixels than the limit of 40,000,000"),  # Pillow's own bomb guard fires first
    ],
)
def test_decompression_bomb_refused_before_decoding(width, height, message):
    bomb = png_header_only(width, height)
    assert len(bomb) < 200  # tiny file, huge claimed size: refused from the header alone
    with pytest.raises(ValidationError, match=message):
        validate_image(bomb, "bomb.png", max_bytes=10**7, max_pixels=40_000_000)


def test_oversize_upload_refused():
    with pytest.raises(ValidationError, match="upload limit"):
        validate_image(png_bytes(), "x.png", max_bytes=10, max_pixels=10**6)


def test_truncated_image_refused():
    data = png_bytes(64, 64, color=(1, 2, 3))
    with pytest.raises(ValidationError, match="not a readable"):
        validate_image(data[: len(data) // 2], "x.png", max_bytes=10**6, max_pixels=10**6)


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\face.png", "face.png"),
        ("..", "file"),
        ("-rf.png", "rf.png"),
        ("a\x00b<script>.png", "a_b_script_.png"),
        ("é" * 300 + ".png", "_.png"),
        (None, "file"),
    ],
)
def test_sanitize_filename(raw, safe):
    assert sanitize_filename(raw) == safe


def test_sweep_refuses_when_folder_and_database_do_not_match(tmp_path):
    """A wrong --data-dir (or --db) must not wipe the takes of a database or the files of another one."""
    from studio.config import load_settings

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = build_services(load_settings(data_dir=tmp_path / "a", database_url=url))
    try:
        ids = [first.assets.put_bytes(f"file {n}".encode(), "video", "video/mp4").id for n in range(12)]
    finally:
        first.close()
    for path in (tmp_path / "a" / "assets").rglob("*"):
        if path.is_file():
            _age(path)
    # Same database, another (empty) data folder: every row would lose its file.
    wrong_folder = build_services(load_settings(data_dir=tmp_path / "b", database_url=url))
    try:
        assert wrong_folder.assets.sweep_orphans() == (0, 0)
        assert [wrong_folder.assets.get(i).id for i in ids] == ids
    finally:
        wrong_folder.close()
    # Same data folder, another (empty) database: every file would be an orphan.
    other_db = build_services(load_settings(data_dir=tmp_path / "a", database_url=f"sqlite:///{tmp_path / 'o.db'}"))
    try:
        assert other_db.assets.sweep_orphans() == (0, 0)
        assert len(_files(tmp_path / "a" / "assets")) == 12
    finally:
        other_db.close()


# The gate every write passes (AssetStore._add) ------------------------------------------------------------------

MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 32


@pytest.mark.parametrize(
    ("data", "claimed", "recorded"),
    [
        (png_bytes(), "video/mp4", "image/png"),
        (MP4_HEAD, "application/json", "video/mp4"),
        (b"\x00\x00\x00\x18ftypM4A \x00\x00\x02\x00", "video/mp4", "audio/mp4"),
        (b'{"OTIO_SCHEMA": "Timeline.1", "tracks": []}', "application/json", "application/vnd.opentimelineio+json"),
        (b"just some text", "video/mp4", "application/octet-stream"),
    ],
    ids=["png-claimed-video", "mp4-claimed-json", "m4a", "otio", "unknown"],
)
def test_the_row_records_what_the_content_is_not_what_the_caller_says(services, data, claimed, recorded):
    asset = services.assets.put_bytes(data, "test", claimed)
    assert asset.mime == recorded
    assert services.assets.path_of(asset.id).read_bytes() == data


@pytest.mark.parametrize(
    ("data", "claimed", "message"),
    [
        (b"<html><script>alert(1)</script></html>", "video/mp4", "markup"),
        (b"\xef\xbb\xbf  <svg xmlns='http://www.w3.org/2000/svg'/>", "image/png", "markup"),
        (b"<?xml version='1.0'?><x/>", "application/octet-stream", "markup"),
        (MP4_HEAD, "image/png", "not a PNG, JPEG or WEBP image"),
        (b"\x89PNG\r\n\x1a\n truncated", "image/png", "not a readable"),
        (png_header_only(30000, 30000), "image/png", "far more pixels"),
        (png_header_only(7000, 7000), "video/mp4", "over the limit of"),  # an image whatever the caller calls it
    ],
    ids=["html", "svg-with-bom", "xml", "video-claimed-image", "broken-png", "png-bomb", "png-bomb-claimed-video"],
)
def test_the_gate_refuses_markup_fake_images_and_pixel_bombs(services, data, claimed, message):
    with pytest.raises(ValidationError, match=message):
        services.assets.put_bytes(data, "thumbnail", claimed)
    assert _files(services.settings.assets_dir) == []  # not even a temp file


class EndlessZeros:
    """A reader that never ends: a size cap must stop it while reading."""

    def __init__(self) -> None:
        self.served = 0

    def read(self, n: int = -1) -> bytes:
        n = 1024 * 1024 if n is None or n < 0 else n
        self.served += n
        return bytes(n)


def test_add_stream_counts_while_reading_and_stops_at_the_cap(services):
    reader = EndlessZeros()
    with pytest.raises(ValidationError, match=r"more than 3,000,000 bytes \(setting x\)"):
        with services.db.unit_of_work() as session:
            services.assets.add_stream(
                session, reader, "video", "video/mp4", max_bytes=3_000_000, limit_hint="(setting x)"
            )
    assert reader.served <= 4 * 1024 * 1024
    assert _files(services.settings.assets_dir) == []


def test_add_stream_refuses_content_whose_hash_is_not_the_expected_one(services):
    with pytest.raises(ValidationError, match="does not match its sha256"):
        with services.db.unit_of_work() as session:
            services.assets.add_stream(session, io.BytesIO(b"abc"), "video", "video/mp4", expected_sha256="0" * 64)
    assert _files(services.settings.assets_dir) == []
