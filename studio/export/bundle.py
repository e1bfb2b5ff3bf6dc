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

Import (`import_bundle`) treats the bundle as hostile input. It is first validated whole, writing nothing: member
names, the manifest, rows.json (size-capped while unpacking, checked against the schema, references resolved) and
every file through the asset store's content gate (size counted, sha256 checked, type from the content, images'
pixel count). Then ONE unit of work writes the files through the same gate (content already in the store is
shared) and the rows in foreign-key order with new ids; every foreign key is remapped through the ids given on
import (the shot -> chosen take cycle is set once the takes exist). A refusal is one line and leaves nothing behind.
Jobs that were queued or running when the bundle was made come back `cancelled`, so importing a bundle never starts
work on another machine by surprise; every other value comes back as it was.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    String,
    Table,
    UniqueConstraint,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from studio.db import models
from studio.services import validation as check
from studio.services.assets import EXTENSIONS, IMAGE_TYPES, OCTET_STREAM, check_image, sanitize_filename
from studio.services.errors import ConflictError, NotFoundError, ServiceError, ValidationError

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


def _storyboard_files(services, project_id: int, folder: Path) -> str:
    """The storyboard text, with its reference images written under `folder` at the paths the text names, so the
    unzipped bundle renders on its own (`python -m studio render storyboard.yaml`)."""
    from studio.storyboard_file import export_storyboard

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
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            return _manifest(archive, path, _Meter(archive, path, MANIFEST_MAX_BYTES))
    except zipfile.BadZipFile:
        raise ValidationError(f"{path} is not a Shotline project bundle (not a zip file)") from None


# What a bundle may hold beyond the settings' caps; a real bundle stays far inside these.
MAX_MEMBERS = 100_000
MANIFEST_MAX_BYTES = 16 * 1024 * 1024
# Unpacked bytes per packed byte of one member. Media is stored as is (ratio 1) and JSON deflates about 10x, so a
# member expanding 100x past its first MiBs is a zip bomb and is refused while it is being read.
MAX_EXPANSION = 100
EXPANSION_FLOOR = 4 * 1024 * 1024
JSON_MAX_DEPTH = 32
SIDE_FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")


def _damaged(path: Path, message: str) -> ValidationError:
    return ValidationError(f"{path.name}: {message}; the bundle is damaged or not from a Shotline studio")


class _Meter:
    """Reads members of an open bundle counting unpacked bytes while reading: against a per-member cap, the
    bundle's total cap and the expansion bound (zip bombs), so nothing trusts a size the zip or manifest declares."""

    def __init__(self, archive: zipfile.ZipFile, path: Path, total_max: int, hint: str = "") -> None:
        self.archive = archive
        self.path = path
        self.file_size = path.stat().st_size
        self.total_max = total_max
        self.hint = hint
        self.total = 0

    def open(self, name: str, max_bytes: int, hint: str) -> _MeteredReader:
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise _damaged(self.path, f"{name} is missing") from None
        return _MeteredReader(self, info, max_bytes, hint)

    def read(self, name: str, max_bytes: int, hint: str) -> bytes:
        with self.open(name, max_bytes, hint) as reader:
            return reader.read_all()


class _MeteredReader:
    def __init__(self, meter: _Meter, info: zipfile.ZipInfo, max_bytes: int, hint: str) -> None:
        self.meter, self.info, self.max_bytes, self.hint = meter, info, max_bytes, hint
        # The zip reader never consumes more than the member's packed size, nor more than the file holds.
        self.packed_bound = max(1, min(info.compress_size, meter.file_size))
        self.size = 0
        try:
            self.source = meter.archive.open(info)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError) as error:
            raise _damaged(meter.path, f"{info.filename} cannot be read ({error})") from None

    def __enter__(self) -> _MeteredReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.source.close()

    def read(self, n: int = -1) -> bytes:
        try:
            chunk = self.source.read(1024 * 1024 if n is None or n < 0 else min(n, 1024 * 1024))
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as error:
            raise _damaged(self.meter.path, f"{self.info.filename} cannot be unpacked ({error})") from None
        self.size += len(chunk)
        self.meter.total += len(chunk)
        name = self.info.filename
        if self.size > self.max_bytes:
            raise ValidationError(
                f"{self.meter.path.name}: {name} unpacks to more than {self.max_bytes:,} bytes {self.hint}".rstrip()
            )
        if self.size > EXPANSION_FLOOR and self.size > MAX_EXPANSION * self.packed_bound:
            raise ValidationError(
                f"{self.meter.path.name}: {name} unpacks to over {MAX_EXPANSION} times its packed size: a zip bomb"
            )
        if self.meter.total > self.meter.total_max:
            raise ValidationError(
                f"{self.meter.path.name}: the bundle unpacks to more than {self.meter.total_max:,} bytes "
                f"{self.meter.hint}".rstrip()
            )
        return chunk

    def read_all(self) -> bytes:
        parts = []
        while chunk := self.read():
            parts.append(chunk)
        return b"".join(parts)


def _json(data: bytes, what: str, path: Path) -> Any:
    # Parsed JSON takes far more memory than its text, most for many tiny containers (`[{},{},...]` is 25x): a
    # real bundle has one container per ~100 bytes, so more than one per 32 is refused before parsing.
    containers = data.count(b"{") + data.count(b"[")
    if containers > len(data) // 32 + 1000:
        raise _damaged(
            path, f"{what} holds {containers:,} objects and lists in {len(data):,} bytes, far more than rows do"
        )
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise _damaged(path, f"{what} is nested deeper than {JSON_MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _damaged(path, f"{what} is not valid JSON ({error})") from None
    if _depth_over(value, JSON_MAX_DEPTH):
        raise _damaged(path, f"{what} is nested deeper than {JSON_MAX_DEPTH} levels")
    return value


def _depth_over(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _manifest(archive: zipfile.ZipFile, path: Path, meter: _Meter) -> dict[str, Any]:
    if "manifest.json" not in archive.NameToInfo:
        raise ValidationError(f"{path} is not a Shotline project bundle (no manifest.json)")
    manifest = _json(meter.read("manifest.json", MANIFEST_MAX_BYTES, ""), "manifest.json", path)
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValidationError(f"{path} is not a Shotline project bundle (format {got!r})")
    version = manifest.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise _damaged(path, f"manifest.json has version {version!r}, not a number")
    if version > BUNDLE_VERSION:
        raise ValidationError(
            f"{path} is bundle version {manifest['version']}; this studio reads up to {BUNDLE_VERSION}: update it"
        )
    return manifest


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _safe_member_name(name: str) -> bool:
    if not name or "\x00" in name or "\\" in name or name.startswith("/") or _DRIVE_RE.match(name):
        return False
    return all(part not in ("", ".", "..") for part in name.removesuffix("/").split("/"))


@dataclass(frozen=True)
class _CheckedAsset:
    row: dict[str, Any]
    member: str
    sha256: str
    size_bytes: int
    mime: str  # what the content is


@dataclass(frozen=True)
class _CheckedBundle:
    rows: dict[str, list[dict[str, Any]]]  # decoded values, ready to insert
    assets: list[_CheckedAsset]


def _check_members(archive: zipfile.ZipFile, path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Every member has a safe name, appears once, and is one a bundle holds; returns the manifest's asset entries
    by member name."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _damaged(path, f"it holds {len(infos):,} files, more than the {MAX_MEMBERS:,} a bundle may hold")
    entries = manifest.get("assets")
    if not isinstance(entries, list):
        raise _damaged(path, "manifest.json has no asset list")
    by_member: dict[str, dict[str, Any]] = {}
    ids, hashes = set(), set()
    for entry in entries:
        if not isinstance(entry, dict) or not _is_int(entry.get("id")) or not _is_int(entry.get("size_bytes")):
            raise _damaged(path, f"manifest.json has a bad asset entry {str(entry)[:200]!r}")
        if not _SHA256_RE.fullmatch(str(entry.get("sha256", ""))):
            raise _damaged(path, f"manifest entry {str(entry)[:200]!r} has no valid sha256")
        member = entry.get("file")
        if not isinstance(member, str) or not member.startswith("assets/") or not _safe_member_name(member):
            raise _damaged(path, f"manifest entry {entry['id']} names the file {member!r}, not one under assets/")
        if entry["id"] in ids or entry["sha256"] in hashes or member in by_member:
            raise _damaged(path, f"manifest.json lists asset {entry['id']} ({member}) twice")
        if entry["size_bytes"] < 0:
            raise _damaged(path, f"manifest entry {entry['id']} has a negative size")
        ids.add(entry["id"])
        hashes.add(entry["sha256"])
        by_member[member] = entry
    seen = set()
    storyboard = manifest.get("storyboard") is True
    for info in infos:
        name = info.filename
        if not _safe_member_name(name):
            raise _damaged(path, f"it holds a file named {name!r} (absolute, with '..' or a drive): refused")
        if name in seen:
            raise _damaged(path, f"it holds {name} twice")
        seen.add(name)
        if info.is_dir() and info.file_size == 0:
            continue
        side_file = storyboard and not name.startswith("assets/") and name.lower().endswith(SIDE_FILE_SUFFIXES)
        if name in ("manifest.json", "rows.json") or (storyboard and name == "storyboard.yaml") or side_file:
            continue
        if name not in by_member:
            raise _damaged(path, f"it holds {name}, which its manifest does not list")
    for member in by_member:
        if member not in seen:
            raise _damaged(path, f"{member} is missing")
    if "rows.json" not in seen:
        raise _damaged(path, "rows.json is missing")
    return by_member


def _check_value(column: Column, value: Any, where: str) -> Any:
    """A rows.json value checked against its column's type; returns it decoded (datetimes)."""
    kind = column.type
    if value is None:
        if not column.nullable:
            raise ValueError(f"{where} is empty, but must have a value")
        return None
    if isinstance(kind, DateTime):
        text_value = value.get("__datetime__") if isinstance(value, dict) and len(value) == 1 else None
        try:
            return datetime.fromisoformat(text_value)
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be a date and time, got {str(value)[:80]!r}") from None
    if isinstance(kind, Boolean):
        ok = isinstance(value, bool)
    elif isinstance(kind, Integer):
        ok = _is_int(value)
    elif isinstance(kind, Float):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    elif isinstance(kind, String):
        ok = isinstance(value, str) and (kind.length is None or len(value) <= kind.length)
        if isinstance(value, str) and not ok:
            raise ValueError(f"{where} has {len(value)} characters, more than its {kind.length}")
    else:  # JSON: any JSON value (depth already bounded when rows.json was parsed)
        ok = True
    if not ok:
        raise ValueError(f"{where} must be a {kind.python_type.__name__}, got {str(value)[:80]!r}")
    return value


def _check_rows(raw: Any, path: Path) -> dict[str, list[dict[str, Any]]]:
    """rows.json against the schema: known tables, typed values, required columns, unique ids, one project, and
    every reference between rows resolved inside the bundle."""
    tables = _tables()
    known = ("assets", *TABLE_ORDER)
    if not isinstance(raw, dict):
        raise _damaged(path, "rows.json is not a table -> rows mapping")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise _damaged(path, f"rows.json has tables this studio does not know: {', '.join(unknown)[:200]}")
    rows: dict[str, list[dict[str, Any]]] = {}
    ids: dict[str, set[int]] = {}
    for table_name in known:
        table = tables[table_name]
        table_rows = raw.get(table_name, [])
        if not isinstance(table_rows, list):
            raise _damaged(path, f"rows.json: {table_name} is not a list of rows")
        checked, seen = [], set()
        for number, row in enumerate(table_rows, 1):
            where = f"rows.json: {table_name} row {number}"
            if not isinstance(row, dict):
                raise _damaged(path, f"{where} is not a mapping")
            values = {}
            try:
                for column in table.columns:
                    if column.name in row:
                        values[column.name] = _check_value(column, row[column.name], f"{column.name}")
                    elif not column.nullable and column.default is None and column.server_default is None:
                        raise ValueError(f"{column.name} is missing")
            except ValueError as error:
                raise _damaged(path, f"{where}: {error}") from None
            key = values.get("id") if "id" in table.c else tuple(values.get(c.name) for c in table.primary_key)
            if key in seen:
                raise _damaged(path, f"{where} repeats the id {key}")
            seen.add(key)
            checked.append(values)
        rows[table_name] = checked
        if "id" in table.c:
            ids[table_name] = set(seen)
        for columns in _unique_column_sets(table):
            values_seen: set[tuple] = set()
            for number, values in enumerate(checked, 1):
                key = tuple(values.get(column) for column in columns)
                if key in values_seen and None not in key:
                    raise _damaged(path, f"rows.json: {table_name} row {number} repeats {', '.join(columns)} {key}")
                values_seen.add(key)
    if len(rows["projects"]) != 1:
        raise _damaged(path, f"rows.json holds {len(rows['projects'])} projects, not one")
    for table_name in TABLE_ORDER:
        table = tables[table_name]
        for number, values in enumerate(rows[table_name], 1):
            for column in table.columns:
                target = _foreign_table(column)
                if target is not None and values.get(column.name) is not None:
                    if values[column.name] not in ids.get(target, set()):
                        raise _damaged(
                            path,
                            f"rows.json: {table_name}.{column.name} = {values[column.name]} (row {number}) points "
                            f"at no row of {target} in the bundle",
                        )
    return rows


def _unique_column_sets(table: Table) -> list[tuple[str, ...]]:
    """The column sets the database keeps unique (beyond the primary key), so a clash is refused before writing."""
    sets = [tuple(column.name for column in c.columns) for c in table.constraints if isinstance(c, UniqueConstraint)]
    sets += [(column.name,) for column in table.columns if column.unique]
    return list(dict.fromkeys(sets))


def _check_bundle(services, archive: zipfile.ZipFile, path: Path, meter: _Meter) -> _CheckedBundle:
    """Validate the whole bundle, reading every byte once and writing none (see `import_bundle`)."""

    manifest = _manifest(archive, path, meter)
    by_member = _check_members(archive, path, manifest)
    settings = services.settings
    rows_data = meter.read("rows.json", settings.bundle_rows_max_bytes, "(setting bundle_rows_max_bytes)")
    rows = _check_rows(_json(rows_data, "rows.json", path), path)
    entries = {entry["id"]: (member, entry) for member, entry in by_member.items()}
    asset_rows = {row["id"]: row for row in rows["assets"]}
    for asset_id in sorted(set(entries) ^ set(asset_rows)):
        where = "rows.json has no row for" if asset_id in entries else "manifest.json lists no file for"
        raise _damaged(path, f"{where} asset {asset_id}")
    declared_total = sum(row["size_bytes"] for row in asset_rows.values())
    if declared_total > settings.bundle_max_bytes:
        raise ValidationError(
            f"{path.name}: its files add up to {declared_total:,} bytes, over the limit of "
            f"{settings.bundle_max_bytes:,} (setting bundle_max_bytes)"
        )
    checked_assets = []
    for asset_id, row in sorted(asset_rows.items()):
        member, entry = entries[asset_id]
        if row["sha256"] != entry["sha256"] or row["size_bytes"] != entry["size_bytes"]:
            raise _damaged(path, f"asset {asset_id}: rows.json and manifest.json disagree on its sha256 or size")
        if row["mime"] not in EXTENSIONS and row["mime"] != OCTET_STREAM:
            raise _damaged(path, f"asset {asset_id} claims the type {row['mime'][:100]!r}, which no asset can have")
        with meter.open(member, row["size_bytes"], "(its size in manifest.json)") as reader:
            content = services.assets.check_stream(reader, member, row["mime"], row["size_bytes"])
        if content.size_bytes != row["size_bytes"] or content.sha256 != row["sha256"]:
            raise _damaged(path, f"{member} does not match its sha256")
        if content.mime in IMAGE_TYPES:
            # The pixel count is checked from the header before any pixel is decoded (a PNG bomb stops there).
            with archive.open(member) as image_file:
                check_image(image_file, f"{path.name}: {member}", settings.image_max_pixels)
        checked_assets.append(_CheckedAsset(row, member, content.sha256, content.size_bytes, content.mime))
    return _CheckedBundle(rows=rows, assets=checked_assets)


def import_bundle(services, bundle_path: str | Path, name: str | None = None) -> BundleReport:
    """Recreate the bundled project in this studio; `name` renames it (needed when the name is taken).

    Two passes. First the whole bundle is validated without writing anything: member names (no absolute paths,
    no '..', nothing the manifest does not list, nothing missing), manifest.json and rows.json read with caps
    while unpacking (`bundle_rows_max_bytes`, `bundle_max_bytes`, and a bound on expansion that stops zip bombs),
    rows.json against the schema with every reference between rows resolved, and every file through the asset
    store's content gate (size counted, sha256 checked, type from the content, images' pixel count). Then one unit
    of work writes the files through the same gate and the rows: all or nothing. Any refusal is one line.
    """
    bundle_path = Path(bundle_path)
    if not bundle_path.is_file():
        raise NotFoundError(f"bundle not found: {bundle_path}")
    tables = _tables()
    try:
        archive = zipfile.ZipFile(bundle_path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise ValidationError(
            f"{bundle_path.name} is not a Shotline project bundle (not a readable zip: {error})"
        ) from None
    total_hint = "(setting bundle_max_bytes)"
    with archive:
        meter = _Meter(archive, bundle_path, services.settings.bundle_max_bytes, total_hint)
        try:
            bundle = _check_bundle(services, archive, bundle_path, meter)
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as error:
            if isinstance(error, ServiceError):
                raise
            # Every rule above has its own message; a shape nobody foresaw still gets one line, not a traceback.
            raise _damaged(bundle_path, f"it is malformed ({type(error).__name__}: {str(error)[:200]})") from None
        rows = bundle.rows
        project_row = rows["projects"][0]
        project_name = check.name(name or project_row["name"], "project name", check.MAX_PROJECT_NAME_CHARS)
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
            meter.total = 0  # the second read of the same files: counted afresh against the same cap
            for asset in bundle.assets:
                row = asset.row
                known = session.scalar(select(models.Asset.id).where(models.Asset.sha256 == asset.sha256))
                with meter.open(asset.member, asset.size_bytes, "(its size in manifest.json)") as reader:
                    stored = services.assets.add_stream(
                        session,
                        reader,
                        row["kind"],
                        row["mime"],
                        row.get("original_name"),
                        max_bytes=asset.size_bytes,
                        expected_sha256=asset.sha256,
                    )
                if known is None:
                    # A file new to this store keeps the row it had: kind, name and time as bundled.
                    bundled_name = row.get("original_name")
                    stored.original_name = sanitize_filename(bundled_name, "") if bundled_name else bundled_name
                    if row.get("created_at") is not None:
                        stored.created_at = row["created_at"]
                id_maps["assets"][row["id"]] = stored.id
            deferred: list[tuple[str, int, str, int, Any]] = []
            for table_name in TABLE_ORDER:
                table = tables[table_name]
                for row in rows.get(table_name, []):
                    values = dict(row)
                    if table_name == "projects":
                        values["name"] = project_name
                    if table_name == "jobs" and values.get("status") in LIVE_JOB_STATUSES:
                        values["message"] = f"imported from a bundle while {values['status']}"
                        values["status"] = "cancelled"
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
                        values[column.name] = id_maps[target][values[column.name]]
                    old_id = values.pop("id", None) if "id" in table.c else None
                    try:
                        result = session.execute(table.insert().values(**values))
                    except IntegrityError as error:  # e.g. two takes of one shot with the same number
                        detail = str(error.orig).strip().splitlines()[0][:200]
                        raise _damaged(
                            bundle_path, f"rows.json: a {table_name} row breaks a rule ({detail})"
                        ) from None
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
        assets=len(bundle.assets),
        asset_bytes=sum(asset.size_bytes for asset in bundle.assets),
    )


def _foreign_table(column: Column) -> str | None:
    for foreign_key in column.foreign_keys:
        return foreign_key.column.table.name
    return None
