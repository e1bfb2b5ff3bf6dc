"""Content-addressed asset store under data_dir/assets, and upload validation.

Write rule: bytes go to a temp name inside the asset folder, are fsynced, renamed to their sha256 name (rename is
atomic within one file system), and the row is added in the caller's unit of work. If that unit of work rolls back,
the new file is removed again unless a committed row already names it. A crash between file and commit leaves a
file without a row; the start-up sweep removes it (and rows whose file vanished, with what pointed at them).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import socket
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from studio.db import models
from studio.db.engine import AFTER_COMMIT_UNLINK, ON_ROLLBACK, Database
from studio.services.convert import asset_view
from studio.services.errors import NotFoundError, ValidationError, get_or_not_found
from studio.services.views import AssetView

logger = logging.getLogger(__name__)

# Files younger than this are left alone by the sweep: another process may be between its rename and its commit.
ORPHAN_GRACE_S = 15 * 60
TEMP_PREFIX = "tmp-"
# A temp file names its writer: tmp-<host>-<pid>-<uuid>. The next writer on the same host removes those of a pid that
# is gone at once; files of other hosts (a shared data folder) or of the older tmp-<uuid> form wait for the sweep.
_TEMP_NAME = re.compile(r"^tmp-(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-[0-9a-f]{32}$")
_CHUNK = 1024 * 1024

EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "video/mp4": ".mp4",
    "audio/mpeg": ".mp3",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/aac": ".aac",
    "audio/mp4": ".m4a",
    "audio/ogg": ".ogg",
    "audio/flac": ".flac",
    "application/zip": ".zip",
    "application/json": ".json",
    "application/x-safetensors": ".safetensors",
    "application/vnd.opentimelineio+json": ".otio",
    "text/yaml": ".yaml",
}
UPLOAD_IMAGE_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._ -]+")


def _this_host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname() or "host")[:64]


def temp_file_name() -> str:
    """The name a write in progress has in the asset folder, tied to this process (see `_TEMP_NAME`)."""
    return f"{TEMP_PREFIX}{_this_host()}-{os.getpid()}-{uuid.uuid4().hex}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    except OSError:
        return True
    return True


def sanitize_filename(filename: str | None, default: str = "file") -> str:
    """A display name safe to store and show: last path component, no control or odd characters, <= 100 chars.

    The result is never used as a path; assets live under their sha256 name.
    """
    if not filename:
        return default
    name = re.split(r"[\\/]", filename)[-1]
    name = _UNSAFE_NAME_CHARS.sub("_", name).strip(" .")
    name = name.lstrip("-")
    if len(name) > 100:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: 100 - len(ext) - 1] + "." + ext) if dot and len(ext) <= 10 else name[:100]
    return name or default


@dataclass(frozen=True)
class ImageInfo:
    mime: str
    width: int
    height: int
    filename: str


def validate_image(data: bytes, filename: str | None, max_bytes: int, max_pixels: int) -> ImageInfo:
    """Accept only PNG, JPEG or WEBP, recognised by content; refuse oversize files and pixel bombs before decoding."""
    name = sanitize_filename(filename, default="image")
    if not data:
        raise ValidationError(f"{name}: the file is empty; upload a PNG, JPEG or WEBP image")
    if len(data) > max_bytes:
        raise ValidationError(
            f"{name}: {len(data) / 1e6:.1f} MB is over the upload limit of {max_bytes / 1e6:.1f} MB "
            "(setting upload_max_bytes); upload a smaller image"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Image.open reads the header only: format and size are known before any pixel is decoded.
            with Image.open(io.BytesIO(data)) as image:
                image_format = image.format
                width, height = image.size
                if image_format not in UPLOAD_IMAGE_FORMATS:
                    raise ValidationError(
                        f"{name}: {image_format or 'unknown'} images are not accepted; upload PNG, JPEG or WEBP"
                    )
                if width * height > max_pixels:
                    raise ValidationError(
                        f"{name}: {width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,} "
                        "(setting image_max_pixels); upload a smaller image"
                    )
                image.load()  # decode fully: a truncated or corrupt file fails here, not later in the worker
    except ValidationError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValidationError(
            f"{name}: the image has far more pixels than the limit of {max_pixels:,} (setting image_max_pixels); "
            "upload a smaller image"
        ) from None
    except Exception:
        raise ValidationError(f"{name}: not a readable PNG, JPEG or WEBP image") from None
    return ImageInfo(mime=UPLOAD_IMAGE_FORMATS[image_format], width=width, height=height, filename=name)


# The sweep refuses to remove more than half of what exists once there are more than this many candidates.
SWEEP_SAFETY_MIN = 10


def _looks_mismatched(removable: int, total: int) -> bool:
    return removable > SWEEP_SAFETY_MIN and removable * 2 > total


def _fsync_dir(path: Path) -> None:
    # Make the rename itself durable (POSIX). Windows cannot open directories; skipping is harmless there.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AssetStore:
    """Files named by content under `root`; rows in the `assets` table."""

    def __init__(self, db: Database, root: Path, upload_max_bytes: int, image_max_pixels: int) -> None:
        self.db = db
        self.root = Path(root)
        self.upload_max_bytes = upload_max_bytes
        self.image_max_pixels = image_max_pixels
        self.root.mkdir(parents=True, exist_ok=True)

    # Paths -------------------------------------------------------------------------------------------------------

    def path_for(self, sha256: str, mime: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}{EXTENSIONS.get(mime, '.dat')}"

    def path_of(self, asset_id: int) -> Path:
        with self.db.unit_of_work(read_only=True) as session:
            row = self._row(session, asset_id)
            return self.path_for(row.sha256, row.mime)

    def get(self, asset_id: int) -> AssetView:
        with self.db.unit_of_work(read_only=True) as session:
            return asset_view(self._row(session, asset_id))

    def read_bytes(self, asset_id: int) -> bytes:
        path = self.path_of(asset_id)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"the file of asset {asset_id} is missing from {self.root}") from None

    def validate_image(self, data: bytes, filename: str | None) -> ImageInfo:
        return validate_image(data, filename, self.upload_max_bytes, self.image_max_pixels)

    # Writing -----------------------------------------------------------------------------------------------------

    def put_bytes(self, data: bytes, kind: str, mime: str, filename: str | None = None) -> AssetView:
        """Store bytes in their own unit of work (same content twice -> the same asset)."""
        with self.db.unit_of_work() as session:
            return asset_view(self.add_bytes(session, data, kind, mime, filename))

    def put_file(self, path: Path, kind: str, mime: str, filename: str | None = None) -> AssetView:
        """Store a file's content (streamed, never fully in memory) in its own unit of work."""
        with self.db.unit_of_work() as session:
            return asset_view(self.add_file(session, path, kind, mime, filename))

    def add_bytes(
        self, session: Session, data: bytes, kind: str, mime: str, filename: str | None = None
    ) -> models.Asset:
        """Session-level helper: write the file now, add the row to `session` (committed with the caller's work)."""
        return self._add(session, lambda handle: handle.write(data), kind, mime, filename)

    def add_file(
        self, session: Session, path: Path, kind: str, mime: str, filename: str | None = None
    ) -> models.Asset:
        source = Path(path)
        if not source.is_file():
            raise NotFoundError(f"{source} is not a file")

        def copy(handle) -> None:
            with source.open("rb") as reader:
                shutil.copyfileobj(reader, handle, _CHUNK)

        return self._add(session, copy, kind, mime, filename or source.name)

    def _add(self, session: Session, write, kind: str, mime: str, filename: str | None) -> models.Asset:
        temp_path = self.root / temp_file_name()
        digest = hashlib.sha256()
        size = 0
        try:
            with temp_path.open("wb") as handle:

                class _Hashing:
                    def write(self, chunk: bytes) -> int:
                        nonlocal size
                        digest.update(chunk)
                        size += len(chunk)
                        return handle.write(chunk)

                write(_Hashing())
                handle.flush()
                os.fsync(handle.fileno())
            sha256 = digest.hexdigest()
            existing = session.scalar(select(models.Asset).where(models.Asset.sha256 == sha256))
            final_path = self.path_for(sha256, existing.mime if existing else mime)
            if final_path.exists():
                temp_path.unlink()
                created_file = False
            else:
                final_path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(temp_path, final_path)
                _fsync_dir(final_path.parent)
                created_file = True
        except BaseException:
            temp_path.unlink(missing_ok=True)
            raise
        if existing is not None:
            return existing
        row = models.Asset(
            sha256=sha256, kind=kind, mime=mime, size_bytes=size, original_name=sanitize_filename(filename, "")
        )
        session.add(row)
        session.flush()
        if created_file:
            session.info.setdefault(ON_ROLLBACK, []).append(lambda: self._discard_uncommitted(sha256, final_path))
        return row

    def _discard_uncommitted(self, sha256: str, path: Path) -> None:
        with self.db.unit_of_work() as session:
            if session.scalar(select(models.Asset.id).where(models.Asset.sha256 == sha256)) is None:
                path.unlink(missing_ok=True)

    def delete_unreferenced(self, session: Session, asset_ids: set[int]) -> int:
        """Remove the given assets (rows now, files after commit) where nothing points at them any more."""
        removable = set(asset_ids)
        if not removable:
            return 0
        for model, column in models.ASSET_REFERENCES:
            attribute = getattr(model, column)
            removable -= set(session.scalars(select(attribute).where(attribute.in_(removable))))
        if not removable:
            return 0
        rows = session.scalars(select(models.Asset).where(models.Asset.id.in_(removable))).all()
        paths = [self.path_for(r.sha256, r.mime) for r in rows]
        session.execute(delete(models.Asset).where(models.Asset.id.in_(removable)))
        session.info.setdefault(AFTER_COMMIT_UNLINK, []).extend(paths)
        return len(rows)

    # Start-up sweep ----------------------------------------------------------------------------------------------

    def sweep_dead_writers(self) -> int:
        """Remove the temp files of writers on this host whose process is gone (a worker killed mid-write); a live
        writer's file stays. Run by every process that opens the store (`build_services`). Returns the count."""
        host = _this_host()
        removed = 0
        for path in self.root.glob(f"{TEMP_PREFIX}*"):
            match = _TEMP_NAME.match(path.name)
            if match is None or match["host"] != host or _pid_alive(int(match["pid"])):
                continue
            try:
                path.unlink()
                removed += 1
                logger.info("removed %s, left by writer pid %s that is gone", path, match["pid"])
            except FileNotFoundError:
                continue
        return removed

    def sweep_orphans(self, grace_s: float = ORPHAN_GRACE_S) -> tuple[int, int]:
        """Remove files without a row (older than `grace_s`) and rows without a file; returns (files, rows).

        Whatever pointed at a vanished file is handled: references and exports are removed, takes are removed (the
        shot's chosen take moves to its newest remaining take), adapters lose their weights and are marked failed,
        optional links (latents, crops, previews, timelines) are cleared.
        """
        now = time.time()
        with self.db.unit_of_work(read_only=True) as session:
            rows = session.execute(select(models.Asset.id, models.Asset.sha256, models.Asset.mime)).all()
        known_paths = {self.path_for(sha, mime) for _, sha, mime in rows}

        files = [path for path in self.root.rglob("*") if path.is_file()]
        orphans = []
        for path in files:
            if path in known_paths:
                continue
            try:
                if now - path.stat().st_mtime >= grace_s:
                    orphans.append(path)
            except FileNotFoundError:
                continue
        missing = {asset_id for asset_id, sha, mime in rows if not self.path_for(sha, mime).exists()}

        # A data folder and a database that do not belong together (a wrong --data-dir or --db, an unmounted
        # share) look like "every file is an orphan" or "every row lost its file". Sweeping then would destroy a
        # project's takes or another database's files, so a sweep that would remove most of either does nothing.
        if _looks_mismatched(len(orphans), len(files)) or _looks_mismatched(len(missing), len(rows)):
            logger.error(
                "asset sweep skipped: %d of %d files have no row and %d of %d rows have no file in %s; is this the "
                "data folder of this database (--data-dir / --db)?",
                len(orphans),
                len(files),
                len(missing),
                len(rows),
                self.root,
            )
            return 0, 0

        files_removed = 0
        for path in orphans:
            try:
                path.unlink()
                files_removed += 1
                logger.info("removed orphan asset file %s", path)
            except FileNotFoundError:
                continue
        if missing:
            with self.db.unit_of_work() as session:
                self._drop_missing(session, missing)
            logger.warning("removed %d asset rows whose files were missing", len(missing))
        return files_removed, len(missing)

    def _drop_missing(self, session: Session, missing: set[int]) -> None:
        references = models.ReferenceImage
        session.execute(delete(references).where(references.asset_id.in_(missing)))
        session.execute(update(references).where(references.crop_asset_id.in_(missing)).values(crop_asset_id=None))
        session.execute(
            update(models.Adapter)
            .where(models.Adapter.weights_asset_id.in_(missing))
            .values(weights_asset_id=None, status="failed", message="the weights file went missing; train it again")
        )
        take = models.Take
        lost_takes = session.execute(
            select(take.id, take.shot_id).where(
                take.video_asset_id.in_(missing) | take.thumbnail_asset_id.in_(missing)
            )
        ).all()
        if lost_takes:
            lost_ids = {take_id for take_id, _ in lost_takes}
            session.execute(
                update(models.Shot).where(models.Shot.chosen_take_id.in_(lost_ids)).values(chosen_take_id=None)
            )
            session.execute(delete(take).where(take.id.in_(lost_ids)))
            for shot_id in {shot_id for _, shot_id in lost_takes}:
                shot = session.get(models.Shot, shot_id)
                if shot is not None and shot.chosen_take_id is None:
                    newest = session.scalar(
                        select(take.id).where(take.shot_id == shot_id).order_by(take.number.desc()).limit(1)
                    )
                    shot.chosen_take_id = newest
        session.execute(update(take).where(take.latents_asset_id.in_(missing)).values(latents_asset_id=None))
        session.execute(
            update(models.Job).where(models.Job.preview_asset_id.in_(missing)).values(preview_asset_id=None)
        )
        session.execute(delete(models.Export).where(models.Export.video_asset_id.in_(missing)))
        session.execute(
            update(models.Export).where(models.Export.timeline_asset_id.in_(missing)).values(timeline_asset_id=None)
        )
        session.execute(delete(models.Asset).where(models.Asset.id.in_(missing)))

    # Internals ---------------------------------------------------------------------------------------------------

    @staticmethod
    def _row(session: Session, asset_id: int) -> models.Asset:
        return get_or_not_found(session, models.Asset, asset_id, "asset")
