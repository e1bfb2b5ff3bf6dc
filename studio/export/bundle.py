"""Project bundle: one zip holding a whole project, that imports back into any studio with nothing lost.

Layout of the zip:

    manifest.json     format, version, project name, schema revision, row counts, asset list with sha256
    storyboard.yaml   the storyboard file of the project (human readable; `python -m studio render` accepts it)
    refs/...          the reference images at the paths storyboard.yaml names, so the unzipped folder renders
    rows.json         every row of the project, table by table, as stored (ids included, datetimes ISO 8601)
    assets/<sha256><ext>   every file a row points at: references, crops, adapter weights, takes (video,
                      thumbnail, latents), job previews, exported films and timelines

Which rows: the project; its characters, reference images, adapters; its scenes and shots, those in the bin too;
the shots' character links; every take of those shots; the project's exports; the jobs of the project and every job a
take, adapter or export names. The rows are found from the ORM metadata, not a hand-kept column list, so a column a
migration adds travels without a change here.

Import (`import_bundle`) writes everything in ONE unit of work: asset files through the asset store (checked against
their sha256 first; content already in the store is shared), then rows in foreign-key order with new ids; every
foreign key is remapped through the ids given on import (the shot -> chosen take cycle is set once the takes exist).
A failure leaves nothing behind. Jobs that were queued or running when the bundle was made come back `cancelled`,
so importing a bundle never starts work on another machine by surprise; every other value comes back as it was.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Table, select, text, update
from sqlalchemy.orm import Session

from studio.db import models
from studio.services.errors import ConflictError, NotFoundError, ValidationError

BUNDLE_FORMAT = "shotline-bundle"
BUNDLE_VERSION = 1
# Insertion order on import: every table after the tables its foreign keys point at (the shot -> chosen take link
# is the one cycle, filled in after the takes).
TABLE_ORDER = (
    "projects",
    "jobs",
    "characters",
    "reference_images",
    "adapters",
    "scenes",
    "shots",
    "shot_characters",
    "takes",
    "exports",
)
DEFERRED_COLUMNS = {("shots", "chosen_take_id")}
LIVE_JOB_STATUSES = ("queued", "running")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BundleReport:
    path: Path
    project_id: int
    project_name: str
    rows: dict[str, int]
    assets: int
    asset_bytes: int


def _tables() -> dict[str, Table]:
    return {table.name: table for table in models.Base.metadata.sorted_tables}


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"__datetime__": value.isoformat()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__datetime__"}:
        return datetime.fromisoformat(value["__datetime__"])
    return value


def _row_dict(table: Table, row) -> dict[str, Any]:
    return {column.name: _encode(row._mapping[column]) for column in table.columns}


def _select_rows(session: Session, table: Table, column: Column, ids: set[int]) -> list[dict[str, Any]]:
    if not ids:
        return []
    rows = session.execute(select(table).where(column.in_(sorted(ids))).order_by(*table.primary_key.columns)).all()
    return [_row_dict(table, row) for row in rows]


def _asset_columns(table: Table) -> list[str]:
    return [
        column.name for column in table.columns if any(fk.column.table.name == "assets" for fk in column.foreign_keys)
    ]


def collect_project_rows(session: Session, project_id: int) -> dict[str, list[dict[str, Any]]]:
    """Every row of one project (see the module docstring), JSON-ready, each table ordered by primary key."""
    tables = _tables()
    project = session.get(models.Project, project_id)
    if project is None:
        raise NotFoundError(f"project {project_id} does not exist")
    rows: dict[str, list[dict[str, Any]]] = {}
    rows["projects"] = _select_rows(session, tables["projects"], tables["projects"].c.id, {project_id})

    def ids_where(table: str, column: str, values: set[int]) -> set[int]:
        if not values:
            return set()
        t = tables[table]
        return set(session.scalars(select(t.c.id).where(t.c[column].in_(values))))

    character_ids = ids_where("characters", "project_id", {project_id})
    scene_ids = ids_where("scenes", "project_id", {project_id})
    shot_ids = ids_where("shots", "scene_id", scene_ids)
    rows["characters"] = _select_rows(session, tables["characters"], tables["characters"].c.id, character_ids)
    rows["reference_images"] = _select_rows(
        session, tables["reference_images"], tables["reference_images"].c.character_id, character_ids
    )
    rows["adapters"] = _select_rows(session, tables["adapters"], tables["adapters"].c.character_id, character_ids)
    rows["scenes"] = _select_rows(session, tables["scenes"], tables["scenes"].c.id, scene_ids)
    rows["shots"] = _select_rows(session, tables["shots"], tables["shots"].c.id, shot_ids)
    links = tables["shot_characters"]
    rows["shot_characters"] = (
        [
            _row_dict(links, row)
            for row in session.execute(
                select(links)
                .where(links.c.shot_id.in_(sorted(shot_ids)))
                .order_by(links.c.shot_id, links.c.character_id)
            ).all()
        ]
        if shot_ids
        else []
    )
    rows["takes"] = _select_rows(session, tables["takes"], tables["takes"].c.shot_id, shot_ids)
    rows["exports"] = _select_rows(session, tables["exports"], tables["exports"].c.project_id, {project_id})
    job_ids = ids_where("jobs", "project_id", {project_id})
    for table in ("takes", "adapters", "exports"):
        job_ids |= {row["job_id"] for row in rows[table] if row.get("job_id") is not None}
    rows["jobs"] = _select_rows(session, tables["jobs"], tables["jobs"].c.id, job_ids)

    asset_ids: set[int] = set()
    for name, table_rows in rows.items():
        for column in _asset_columns(tables[name]):
            asset_ids |= {row[column] for row in table_rows if row.get(column) is not None}
    rows["assets"] = _select_rows(session, tables["assets"], tables["assets"].c.id, asset_ids)
    return {name: rows[name] for name in ("assets", *TABLE_ORDER)}


def _storyboard_files(services, project_id: int, folder: Path) -> str | None:
    """The storyboard text, with its reference images written under `folder` at the paths the text names, so the
    unzipped bundle renders on its own (`python -m studio render storyboard.yaml`)."""
    try:
        from studio.storyboard_file import export_storyboard
    except ImportError:
        return None
    return export_storyboard(services, project_id, base_dir=folder)


def _schema_revision(session: Session) -> str | None:
    try:
        with session.begin_nested():
            return session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception:  # noqa: BLE001 - a database without Alembic's table still exports; the field is informative
        return None


def export_bundle(services, project_id: int, out_path: str | Path) -> BundleReport:
    """Write the project's bundle to `out_path` (.zip, temp name then rename)."""
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".zip":
        raise ValidationError(f"a project bundle is a zip file; give a path ending in .zip, got {out_path}")
    with services.db.unit_of_work() as session:
        rows = collect_project_rows(session, project_id)
        revision = _schema_revision(session)
    project = rows["projects"][0]
    assets = []
    for asset in rows["assets"]:
        path = services.assets.path_for(asset["sha256"], asset["mime"])
        if not path.is_file():
            raise NotFoundError(
                f"the file of asset {asset['id']} ({asset['kind']}) is missing from {services.assets.root}; "
                "restart the studio so the start-up sweep drops rows whose files are gone, then export again"
            )
        assets.append((asset, path, f"assets/{path.name}"))
    scratch = Path(tempfile.mkdtemp(prefix="shotline-bundle-"))
    try:
        storyboard = _storyboard_files(services, project_id, scratch)
        side_files = sorted(path for path in scratch.rglob("*") if path.is_file())
        _write_bundle(out_path, rows, revision, assets, storyboard, side_files, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return BundleReport(
        path=out_path,
        project_id=project_id,
        project_name=project["name"],
        rows={name: len(table_rows) for name, table_rows in rows.items() if name != "assets"},
        assets=len(assets),
        asset_bytes=sum(a["size_bytes"] for a, _, _ in assets),
    )


def _write_bundle(out_path, rows, revision, assets, storyboard, side_files, side_root) -> None:
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "project": rows["projects"][0]["name"],
        "schema_revision": revision,
        "rows": {name: len(table_rows) for name, table_rows in rows.items()},
        "assets": [
            {"id": a["id"], "sha256": a["sha256"], "size_bytes": a["size_bytes"], "file": member}
            for a, _, member in assets
        ],
        "storyboard": storyboard is not None,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.stem}.partial.zip")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            archive.writestr("manifest.json", json.dumps(manifest, indent=2))
            archive.writestr("rows.json", json.dumps(rows, indent=1, sort_keys=True))
            if storyboard is not None:
                archive.writestr("storyboard.yaml", storyboard)
                for path in side_files:
                    archive.write(path, path.relative_to(side_root).as_posix())
            for asset, path, member in assets:
                # Videos and images are compressed already and float tensors barely deflate: store, do not recompress.
                compress = zipfile.ZIP_DEFLATED if asset["mime"] in ("application/json", "text/yaml") else None
                archive.write(path, member, compress_type=compress or zipfile.ZIP_STORED)
        partial.replace(out_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def read_bundle_manifest(path: str | Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        return _manifest(archive, Path(path))


def _manifest(archive: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(archive.read("manifest.json"))
    except KeyError:
        raise ValidationError(f"{path} is not a Shotline project bundle (no manifest.json)") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ValidationError(f"{path} is not a Shotline project bundle (format {manifest.get('format')!r})")
    if manifest.get("version", 0) > BUNDLE_VERSION:
        raise ValidationError(
            f"{path} is bundle version {manifest['version']}; this studio reads up to {BUNDLE_VERSION}: update it"
        )
    return manifest


def import_bundle(services, bundle_path: str | Path, name: str | None = None) -> BundleReport:
    """Recreate the bundled project in this studio; `name` renames it (needed when the name is taken)."""
    bundle_path = Path(bundle_path)
    if not bundle_path.is_file():
        raise NotFoundError(f"bundle not found: {bundle_path}")
    tables = _tables()
    with zipfile.ZipFile(bundle_path) as archive, tempfile.TemporaryDirectory(prefix="shotline-bundle-") as tmp:
        manifest = _manifest(archive, bundle_path)
        rows: dict[str, list[dict[str, Any]]] = json.loads(archive.read("rows.json"))
        project_row = rows["projects"][0]
        project_name = name or project_row["name"]
        # Unpack and check every file before touching the database.
        files: dict[int, Path] = {}
        for entry in manifest["assets"]:
            # The manifest is input: its sha256 names a scratch file, so it must be one, and no member may
            # unpack to more bytes than it declares (a zip bomb stops there).
            if not _SHA256_RE.fullmatch(str(entry.get("sha256", ""))):
                raise ValidationError(
                    f"{bundle_path}: manifest entry {entry!r} has no valid sha256; the bundle is damaged"
                )
            target = Path(tmp) / entry["sha256"]
            digest = hashlib.sha256()
            size = 0
            try:
                with archive.open(str(entry["file"])) as source, target.open("wb") as sink:
                    for chunk in iter(lambda source=source: source.read(1024 * 1024), b""):
                        size += len(chunk)
                        if size > int(entry["size_bytes"]):
                            break
                        digest.update(chunk)
                        sink.write(chunk)
            except KeyError:
                raise ValidationError(f"{bundle_path}: {entry['file']} is missing; the bundle is damaged") from None
            if size != int(entry["size_bytes"]) or digest.hexdigest() != entry["sha256"]:
                raise ValidationError(
                    f"{bundle_path}: {entry['file']} does not match its sha256; the bundle is damaged"
                )
            files[entry["id"]] = target

        with services.db.unit_of_work() as session:
            taken = session.scalar(select(models.Project.id).where(models.Project.name == project_name))
            if taken is not None:
                free = next(
                    candidate
                    for candidate in (f"{project_name} ({n})" for n in range(2, 10_000))
                    if session.scalar(select(models.Project.id).where(models.Project.name == candidate)) is None
                )
                raise ConflictError(
                    f"a project named {project_name!r} already exists; import the bundle under another name "
                    f"(e.g. {free!r})"
                )
            id_maps: dict[str, dict[int, int]] = {name: {} for name in tables}
            for asset in rows["assets"]:
                known = session.scalar(select(models.Asset.id).where(models.Asset.sha256 == asset["sha256"]))
                stored = services.assets.add_file(
                    session, files[asset["id"]], asset["kind"], asset["mime"], asset.get("original_name")
                )
                if known is None:
                    # A file new to this store keeps the row it had: kind, name and time as bundled.
                    stored.original_name = asset.get("original_name")
                    stored.created_at = _decode(asset["created_at"])
                id_maps["assets"][asset["id"]] = stored.id
            deferred: list[tuple[str, int, str, int, Any]] = []
            for table_name in TABLE_ORDER:
                table = tables[table_name]
                for row in rows.get(table_name, []):
                    values = {key: _decode(value) for key, value in row.items() if key in table.c}
                    if table_name == "projects":
                        values["name"] = project_name
                    if table_name == "jobs" and values.get("status") in LIVE_JOB_STATUSES:
                        values["status"] = "cancelled"
                        values["message"] = f"imported from a bundle while {row['status']}"
                    for column in table.columns:
                        target = _foreign_table(column)
                        if target is None or values.get(column.name) is None:
                            continue
                        if (table_name, column.name) in DEFERRED_COLUMNS:
                            deferred.append(
                                (table_name, row.get("id"), column.name, values[column.name], values.get("updated_at"))
                            )
                            values[column.name] = None
                            continue
                        old = values[column.name]
                        if old not in id_maps[target]:
                            raise ValidationError(
                                f"{bundle_path}: {table_name}.{column.name} = {old} points at a {target} row the "
                                "bundle does not hold; the bundle is damaged"
                            )
                        values[column.name] = id_maps[target][old]
                    old_id = values.pop("id", None) if "id" in table.c else None
                    result = session.execute(table.insert().values(**values))
                    if old_id is not None:
                        id_maps[table_name][old_id] = result.inserted_primary_key[0]
            for table_name, old_id, column_name, old_target, updated_at in deferred:
                table = tables[table_name]
                target = _foreign_table(table.c[column_name])
                values = {column_name: id_maps[target][old_target]}
                if "updated_at" in table.c:
                    values["updated_at"] = updated_at  # keep the stored time: this is the same edit, not a new one
                session.execute(update(table).where(table.c.id == id_maps[table_name][old_id]).values(**values))
            project_id = id_maps["projects"][project_row["id"]]
    return BundleReport(
        path=bundle_path,
        project_id=project_id,
        project_name=project_name,
        rows={name: len(rows.get(name, [])) for name in TABLE_ORDER},
        assets=len(rows["assets"]),
        asset_bytes=sum(a["size_bytes"] for a in rows["assets"]),
    )


def _foreign_table(column: Column) -> str | None:
    for foreign_key in column.foreign_keys:
        return foreign_key.column.table.name
    return None
