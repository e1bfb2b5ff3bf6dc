"""Project bundle round trip: rows and files come back identical in an empty data dir (ids aside)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from datetime import datetime

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import insert

from studio import storyboard_file
from studio.db import models
from studio.export.bundle import (
    collect_project_rows,
    export_bundle,
    import_bundle,
    read_bundle_manifest,
)
from studio.services.errors import ConflictError, ValidationError


def png_bytes(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), colour, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def populate(services, solid_video) -> int:
    """A project with every kind of row and asset: characters, references, adapters, scenes, shots (one in the bin),
    takes, jobs (one still queued), an export."""
    project = services.projects.create("The Lighthouse", width=32, height=32, fps=8)
    assets = services.assets
    with services.db.unit_of_work() as session:

        def asset(data: bytes, kind: str, mime: str, name: str) -> int:
            return assets.add_bytes(session, data, kind, mime, name).id

        mara = models.Character(
            project_id=project.id, name="Mara", trigger="<mara>", description="red scarf", adapter_kind="lora"
        )
        tom = models.Character(project_id=project.id, name="Tom", trigger="<tom>")
        session.add_all([mara, tom])
        session.flush()
        session.add(
            models.ReferenceImage(
                character_id=mara.id,
                asset_id=asset(png_bytes((200, 10, 10)), "reference", "image/png", "mara_1.png"),
                crop_asset_id=asset(png_bytes((190, 20, 20)), "crop", "image/png", "mara_1_crop.png"),
                original_name="mara_1.png",
                caption="close-up shot, <mara> stays still",
                width=8,
                height=8,
                face_box=[1.0, 1.5, 6.0, 7.25],
                face_embedding=[float(x) / 7 for x in range(512)],
                flags=["low_quality"],
                analyzed_at=datetime(2026, 11, 1, 12, 30, 15, 123456),
            )
        )
        train = models.Job(
            kind="train_adapter",
            status="done",
            project_id=project.id,
            payload={"character": "Mara"},
            result={"loss": 0.125},
            progress=1.0,
            attempts=1,
            worker_id="w1",
        )
        generate = models.Job(
            kind="generate_scene",
            status="done",
            project_id=project.id,
            payload={"scene": 1},
            result={"takes": 2},
            progress=1.0,
        )
        queued = models.Job(kind="export_film", status="queued", project_id=project.id, payload={"music": None})
        session.add_all([train, generate, queued])
        session.flush()
        session.add(
            models.Adapter(
                character_id=mara.id,
                kind="lora",
                base_preset="demo",
                status="ready",
                job_id=train.id,
                version=2,
                hyperparameters={"rank": 4, "lr": 1e-4},
                metrics={"loss": [0.5, 0.25]},
                weights_asset_id=asset(b"safetensors-bytes" * 10, "weights", "application/x-safetensors", "mara.st"),
            )
        )
        scene = models.Scene(project_id=project.id, position=0, caption="a lighthouse at night")
        session.add(scene)
        session.flush()
        shots = [
            models.Shot(scene_id=scene.id, position=0, caption="wide, <mara> climbs", num_frames=9, seed=7),
            models.Shot(
                scene_id=scene.id,
                position=1,
                caption="close-up",
                num_frames=9,
                transition_type="dissolve",
                transition_seconds=0.25,
                trim_in=1,
                trim_out=2,
                shot_size="close-up",
                camera_move="static",
            ),
            models.Shot(
                scene_id=scene.id,
                position=2,
                caption="binned",
                num_frames=9,
                deleted_at=datetime(2026, 11, 2, 8, 0, 0),
            ),
        ]
        session.add_all(shots)
        session.flush()
        session.execute(
            insert(models.shot_characters).values(
                [
                    {"shot_id": shots[0].id, "character_id": mara.id},
                    {"shot_id": shots[1].id, "character_id": mara.id},
                    {"shot_id": shots[1].id, "character_id": tom.id},
                ]
            )
        )
        for number, (shot, grey) in enumerate(((shots[0], 40), (shots[1], 120), (shots[1], 200), (shots[2], 90))):
            video = solid_video([grey] * 9).read_bytes()
            take = models.Take(
                shot_id=shot.id,
                number=number + 1,
                job_id=generate.id,
                video_asset_id=asset(video, "video", "video/mp4", "take.mp4"),
                thumbnail_asset_id=asset(png_bytes((grey, grey, grey)), "thumbnail", "image/png", "thumb.png"),
                latents_asset_id=asset(bytes([grey]) * 64, "latents", "application/octet-stream", "latents.bin"),
                seed=1000 + number,
                params={"caption": shot.caption, "adapters": {"Mara": 2}},
                identity_scores={"Mara": 0.5 + number / 10},
            )
            session.add(take)
            session.flush()
            shot.chosen_take_id = take.id
        session.add(
            models.Export(
                project_id=project.id,
                job_id=queued.id,
                settings={"fps": 8},
                video_asset_id=asset(solid_video([10] * 4).read_bytes(), "film", "video/mp4", "film.mp4"),
                timeline_asset_id=asset(
                    b'{"OTIO_SCHEMA": "Timeline.1"}', "timeline", "application/vnd.opentimelineio+json", "film.otio"
                ),
            )
        )
    return project.id


def canonical(rows: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Rows with ids replaced by their rank in the table (assets by sha256), so two databases compare equal."""
    tables = {table.name: table for table in models.Base.metadata.sorted_tables}
    ranks = {
        name: {row["id"]: rank for rank, row in enumerate(table_rows)}
        for name, table_rows in rows.items()
        if table_rows and "id" in table_rows[0]
    }
    ranks["assets"] = {row["id"]: row["sha256"] for row in rows["assets"]}
    result = {}
    for name, table_rows in rows.items():
        converted = []
        for row in table_rows:
            row = dict(row)
            for column in tables[name].columns:
                targets = [fk.column.table.name for fk in column.foreign_keys]
                if targets and row.get(column.name) is not None:
                    row[column.name] = ranks[targets[0]][row[column.name]]
            if "id" in row:
                row["id"] = ranks[name][row["id"]]
            converted.append(row)
        result[name] = converted
    return result


def other_database_url(request, services) -> str | None:
    """A PostgreSQL database when the source is SQLite and the server answers; else None (SQLite in the data dir)."""
    if services.db.dialect != "sqlite":
        return None
    try:
        return request.getfixturevalue("postgres_url")
    except pytest.skip.Exception:
        return None


def test_bundle_round_trip_is_lossless(services, solid_video, tmp_path, request):
    from studio.config import load_settings
    from studio.services import build_services

    project_id = populate(services, solid_video)
    with services.db.unit_of_work() as session:
        before = collect_project_rows(session, project_id)
    assert {name: len(rows) for name, rows in before.items()} == {
        "assets": 17,
        "projects": 1,
        "jobs": 3,
        "characters": 2,
        "reference_images": 1,
        "adapters": 1,
        "scenes": 1,
        "shots": 3,
        "shot_characters": 3,
        "takes": 4,
        "exports": 1,
    }
    report = export_bundle(services, project_id, tmp_path / "lighthouse.zip")
    assert report.assets == 17 and report.rows["takes"] == 4
    manifest = read_bundle_manifest(report.path)
    assert manifest["project"] == "The Lighthouse" and len(manifest["assets"]) == 17
    with zipfile.ZipFile(report.path) as archive:
        # The storyboard and the references it names travel together: the unzipped folder renders on its own.
        doc = storyboard_file.parse_storyboard(archive.read("storyboard.yaml").decode(), source="storyboard.yaml")
        assert [len(scene.shots) for scene in doc.scenes] == [2]
        mara = next(character for character in doc.characters if character.name == "Mara")
        assert [archive.read(path) for path in mara.references] == [png_bytes((200, 10, 10))]

    # An empty studio on the other database: SQLite -> PostgreSQL and PostgreSQL -> SQLite.
    target_url = other_database_url(request, services)
    target = build_services(load_settings(data_dir=tmp_path / "elsewhere", database_url=target_url))
    assert target.db.dialect != services.db.dialect or target.db.dialect == "sqlite"
    try:
        imported = import_bundle(target, report.path)
        with target.db.unit_of_work() as session:
            after = collect_project_rows(session, imported.project_id)
        expected = canonical(json.loads(json.dumps(before, default=str)))
        # The queued job must not run again by surprise on the new machine.
        queued = next(row for row in expected["jobs"] if row["status"] == "queued")
        queued.update(status="cancelled", message="imported from a bundle while queued")
        assert canonical(after) == expected
        # Same bytes for every file.
        for row in after["assets"]:
            data = target.assets.path_for(row["sha256"], row["mime"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == row["sha256"] and len(data) == row["size_bytes"]
        assert sorted(r["sha256"] for r in after["assets"]) == sorted(r["sha256"] for r in before["assets"])

        with pytest.raises(
            ConflictError, match=r"already exists; .* under another name \(e.g. 'The Lighthouse \(2\)'\)"
        ):
            import_bundle(target, report.path)
        again = import_bundle(target, report.path, name="The Lighthouse (2)")  # the name it suggested
        assert again.project_id != imported.project_id
        # Files are shared by content: the second import adds rows, not files.
        assert len([p for p in target.assets.root.rglob("*") if p.is_file()]) == 17
    finally:
        target.close()


def test_damaged_bundle_is_refused_and_leaves_nothing(services, solid_video, tmp_path):
    from studio.config import load_settings
    from studio.services import build_services

    project_id = populate(services, solid_video)
    report = export_bundle(services, project_id, tmp_path / "lighthouse.zip")
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(report.path) as source, zipfile.ZipFile(damaged, "w") as sink:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith(".mp4"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            sink.writestr(item, data)
    # A manifest naming a path instead of a sha256 must not write outside the scratch folder.
    hostile = tmp_path / "hostile.zip"
    with zipfile.ZipFile(report.path) as source, zipfile.ZipFile(hostile, "w") as sink:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "manifest.json":
                manifest = json.loads(data)
                manifest["assets"][0]["sha256"] = "../../escaped"
                data = json.dumps(manifest).encode()
            sink.writestr(item, data)
    target = build_services(load_settings(data_dir=tmp_path / "elsewhere", database_url=None))
    try:
        with pytest.raises(ValidationError, match="does not match its sha256"):
            import_bundle(target, damaged)
        with pytest.raises(ValidationError, match="no valid sha256"):
            import_bundle(target, hostile)
        assert not list(tmp_path.parent.glob("escaped")) and not (tmp_path / "escaped").exists()
        assert target.projects.list() == []
        assert not [p for p in target.assets.root.rglob("*") if p.is_file()]
    finally:
        target.close()
