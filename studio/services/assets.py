"""Content-addressed asset store under data_dir/assets, and upload validation.

Every byte that enters the store, whatever the door (upload, storyboard or bundle import, worker output), passes one
gate (`ContentGate`, in `AssetStore._add`): it is counted while it is read (a cap stops the read, a declared size is
never trusted), hashed, and its type is taken from the content (`sniff_mime`), never from the caller. HTML, SVG and
XML are refused; a PNG, JPEG or WEBP is decoded only after its header's pixel count passed `image_max_pixels`;
content the store does not recognise is kept as application/octet-stream (served only as a download).

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
import socket
import struct
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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
    return check_image(io.BytesIO(data), name, max_pixels)


def check_image(source: BinaryIO | Path, name: str, max_pixels: int) -> ImageInfo:
    """Open an image by content, check format and pixel count from its header, and only then decode it whole."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Image.open reads the header only: format and size are known before any pixel is decoded.
            with Image.open(source) as image:
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


# The gate every byte entering the store passes ------------------------------------------------------------------

# Bytes of a file's start kept for recognising its type (a JPEG's size marker can sit after a large EXIF block,
# but the type itself is known from the first bytes).
SNIFF_BYTES = 64 * 1024
# The largest safetensors header the format allows (the safetensors library's own limit).
SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024
IMAGE_TYPES = frozenset(UPLOAD_IMAGE_FORMATS.values())
OCTET_STREAM = "application/octet-stream"
_UTF8_BOM = b"\xef\xbb\xbf"


def sniff_mime(head: bytes) -> str | None:
    """The type of a file from its first bytes (magic numbers), or None when it is none the store knows.

    The caller's word is never asked: what the store records, and later serves, is what the content is.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[4:8] == b"ftyp":  # ISO base media (MP4): audio-only brands are M4A/M4B
        return "audio/mp4" if head[8:12] in (b"M4A ", b"M4B ") else "video/mp4"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"ID3"):
        return "audio/mpeg"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "audio/aac"  # ADTS frame header
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "audio/mpeg"  # MPEG audio frame sync
    if head.startswith(b"PK\x03\x04"):
        return "application/zip"
    if len(head) >= 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= SAFETENSORS_MAX_HEADER:
            return "application/x-safetensors"
    text = head.removeprefix(_UTF8_BOM).lstrip(b" \t\r\n")
    if text[:1] in (b"{", b"["):
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as error:
            if error.start < len(head) - 4:  # only a character cut at the end of the head is allowed
                return None
        return "application/vnd.opentimelineio+json" if b'"OTIO_SCHEMA"' in text else "application/json"
    return None


def is_markup(head: bytes) -> bool:
    """HTML, SVG or XML (a browser could run script in them): the store never takes them, whatever their name."""
    for bom in (_UTF8_BOM, b"\xff\xfe", b"\xfe\xff"):
        if head.startswith(bom):
            head = head[len(bom) :]
            break
    return head.replace(b"\x00", b"").lstrip(b" \t\r\n\x0c")[:1] == b"<"


@dataclass(frozen=True)
class CheckedContent:
    sha256: str
    size_bytes: int
    mime: str  # from the content, never from the caller


class ContentGate:
    """Counts, hashes and sniffs bytes as they are read; refuses past `max_bytes` while reading, not after.

    `what` names the file in messages; `limit_hint` says which setting or declaration set `max_bytes`.
    """

    def __init__(self, what: str, max_bytes: int | None = None, limit_hint: str = "") -> None:
        self.what = what
        self.max_bytes = max_bytes
        self.limit_hint = limit_hint
        self.size = 0
        self.digest = hashlib.sha256()
        self.head = b""

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise ValidationError(
                f"{self.what}: more than {self.max_bytes:,} bytes {self.limit_hint}".rstrip()
                + "; the file is too large or not what it claims to be"
            )
        self.digest.update(chunk)
        if len(self.head) < SNIFF_BYTES:
            self.head += bytes(chunk[: SNIFF_BYTES - len(self.head)])

    def mime(self, declared: str | None = None) -> str:
        """The content's type. Markup is refused; so is a file said to be an image that is no PNG, JPEG or WEBP."""
        if is_markup(self.head):
            raise ValidationError(
                f"{self.what}: the content is HTML/SVG/XML markup, which the studio never stores or serves"
            )
        sniffed = sniff_mime(self.head)
        if declared in IMAGE_TYPES and sniffed not in IMAGE_TYPES:
            raise ValidationError(f"{self.what}: not a PNG, JPEG or WEBP image although it is stored as one")
        return sniffed or OCTET_STREAM

    def result(self, declared: str | None = None) -> CheckedContent:
        return CheckedContent(sha256=self.digest.hexdigest(), size_bytes=self.size, mime=self.mime(declared))


def read_capped(path: Path, max_bytes: int, what: str, limit_hint: str = "") -> bytes:
    """A file's bytes, counted while reading: a file larger than `max_bytes` is refused without reading it all."""
    with Path(path).open("rb") as reader:
        data = reader.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValidationError(f"{what}: more than {max_bytes:,} bytes {limit_hint}".rstrip() + "; use a smaller file")
    return data


# The sweep refuses to remove more than half of what exists once there are more than this many candidates.
SWEEP_SAFETY_MIN = 10


def _looks_mismatched(removable: int, total: int) -> bool:
    return removable > SWEEP_SAFETY_MIN and removable * 2 > total


def _chunks(reader: BinaryIO) -> Iterator[bytes]:
    while chunk := reader.read(_CHUNK):
        yield chunk


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
        """Session-level helper: write the file now, add the row to `session` (committed with the caller's work).

        `mime` is what the caller expects; the row records what the content is (see `ContentGate`)."""
        view = memoryview(data)
        return self._add(session, (view[i : i + _CHUNK] for i in range(0, len(view), _CHUNK)), kind, mime, filename)

    def add_file(
        self, session: Session, path: Path, kind: str, mime: str, filename: str | None = None
    ) -> models.Asset:
        source = Path(path)
        if not source.is_file():
            raise NotFoundError(f"{source} is not a file")
        with source.open("rb") as reader:
            return self.add_stream(session, reader, kind, mime, filename or source.name)

    def add_stream(
        self,
        session: Session,
        reader: BinaryIO,
        kind: str,
        mime: str,
        filename: str | None = None,
        max_bytes: int | None = None,
        expected_sha256: str | None = None,
        limit_hint: str = "",
    ) -> models.Asset:
        """Store what `reader` yields (streamed, never fully in memory). `max_bytes` is enforced while reading;
        with `expected_sha256`, content that hashes otherwise is refused before it gets a name in the store."""
        return self._add(
            session, _chunks(reader), kind, mime, filename, max_bytes, expected_sha256, limit_hint=limit_hint
        )

    def check_stream(
        self, reader: BinaryIO, name: str, declared_mime: str | None, max_bytes: int | None, limit_hint: str = ""
    ) -> CheckedContent:
        """The gate without the write: count, hash and sniff `reader` (for checking a whole batch before storing)."""
        gate = ContentGate(name, max_bytes, limit_hint)
        for chunk in _chunks(reader):
            gate.feed(chunk)
        return gate.result(declared_mime)

    def _add(
        self,
        session: Session,
        chunks: Iterable[bytes],
        kind: str,
        mime: str,
        filename: str | None,
        max_bytes: int | None = None,
        expected_sha256: str | None = None,
        limit_hint: str = "",
    ) -> models.Asset:
        # The one way in: bytes are counted (and capped) while read, hashed and sniffed; the row gets the type of
        # the content, images are decoded only after their pixel count passed, markup is refused.
        name = sanitize_filename(filename, "")
        gate = ContentGate(name or kind, max_bytes, limit_hint)
        temp_path = self.root / temp_file_name()
        try:
            with temp_path.open("wb") as handle:
                for chunk in chunks:
                    gate.feed(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            checked = gate.result(mime)
            if expected_sha256 is not None and checked.sha256 != expected_sha256:
                raise ValidationError(f"{gate.what}: the content does not match its sha256 {expected_sha256}")
            if checked.mime in IMAGE_TYPES:
                check_image(temp_path, gate.what, self.image_max_pixels)
            sha256 = checked.sha256
            existing = session.scalar(select(models.Asset).where(models.Asset.sha256 == sha256))
            final_path = self.path_for(sha256, existing.mime if existing else checked.mime)
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
            sha256=sha256, kind=kind, mime=checked.mime, size_bytes=checked.size_bytes, original_name=name
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
