"""Characters of a project: names, trigger tokens, reference images (validated uploads) and adapters."""

from __future__ import annotations

import json
import math
import re
import struct

from sqlalchemy import func, select

from studio.db import models
from studio.db.engine import Database
from studio.db.models import ADAPTER_KINDS, ADAPTER_STATUSES, utcnow
from studio.services import validation as check
from studio.services.assets import AssetStore
from studio.services.convert import adapter_view, character_view, reference_view
from studio.services.errors import ConflictError, NotFoundError, ValidationError, get_or_not_found
from studio.services.storyboard import film_shot_rows
from studio.services.views import AdapterView, CharacterView, ReferenceView

TRIGGER_PATTERN = re.compile(r"^<[a-z0-9][a-z0-9_-]{0,62}>$")
REFERENCE_FLAGS = ("no_face", "several_faces", "low_quality")
WANTED_ADAPTER_KINDS = ("none", "lora", "embedding")
EMBEDDING_SIZE = 512


def default_trigger(name: str) -> str:
    """`<name-lowercased>`, spaces to hyphens, other characters dropped: one token-friendly word."""
    slug = re.sub(r"[^a-z0-9_-]", "", re.sub(r"\s+", "-", name.strip().lower()))
    return f"<{slug or 'character'}>"


def check_trigger(trigger: str) -> str:
    if not isinstance(trigger, str) or not TRIGGER_PATTERN.match(trigger):
        raise ValidationError(
            f"trigger {trigger!r} must look like <mara>: lowercase letters, digits, '-' or '_' inside angle brackets"
        )
    return trigger


def check_safetensors(data: bytes) -> None:
    """Only .safetensors weights are accepted (no pickles): an 8-byte header size, then a JSON header."""
    if len(data) < 10:
        raise ValidationError("the adapter weights are not a .safetensors file (too short)")
    (header_size,) = struct.unpack("<Q", data[:8])
    if header_size <= 0 or 8 + header_size > len(data):
        raise ValidationError("the adapter weights are not a .safetensors file (bad header size)")
    try:
        header = json.loads(data[8 : 8 + header_size])
    except (ValueError, RecursionError):
        raise ValidationError("the adapter weights are not a .safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise ValidationError("the adapter weights are not a .safetensors file (header is not a JSON object)")


class CharacterService:
    def __init__(self, db: Database, assets: AssetStore) -> None:
        self.db = db
        self.assets = assets

    # Characters --------------------------------------------------------------------------------------------------

    def create(
        self,
        project_id: int,
        name: str,
        description: str = "",
        trigger: str | None = None,
        adapter_kind: str = "none",
    ) -> CharacterView:
        character_name = check.name(name, "character name")
        text = check.caption(description or "", "description", allow_empty=True)
        token = check_trigger(trigger) if trigger else default_trigger(character_name)
        wanted = self._wanted_adapter(adapter_kind)
        with self.db.unit_of_work() as session:
            if session.get(models.Project, project_id) is None:
                raise NotFoundError(f"project {project_id} does not exist")
            self._check_unique(session, project_id, character_name, token)
            character = models.Character(
                project_id=project_id, name=character_name, trigger=token, description=text, adapter_kind=wanted
            )
            session.add(character)
            session.flush()
            return character_view(character)

    def list(self, project_id: int) -> list[CharacterView]:
        with self.db.unit_of_work(read_only=True) as session:
            query = select(models.Character).where(models.Character.project_id == project_id)
            return [character_view(c) for c in session.scalars(query.order_by(models.Character.id))]

    def get(self, character_id: int) -> CharacterView:
        with self.db.unit_of_work(read_only=True) as session:
            return character_view(self._character(session, character_id))

    def update(
        self,
        character_id: int,
        name: str | None = None,
        description: str | None = None,
        trigger: str | None = None,
        adapter_kind: str | None = None,
    ) -> CharacterView:
        with self.db.unit_of_work() as session:
            character = self._character(session, character_id)
            new_name = check.name(name, "character name") if name is not None else character.name
            new_trigger = check_trigger(trigger) if trigger is not None else character.trigger
            self._check_unique(session, character.project_id, new_name, new_trigger, exclude_id=character.id)
            values = {"name": new_name, "trigger": new_trigger}
            if description is not None:
                values["description"] = check.caption(description, "description", allow_empty=True)
            if adapter_kind is not None:
                values["adapter_kind"] = self._wanted_adapter(adapter_kind)
            if new_trigger != character.trigger:  # reference captions name the character by its trigger: follow it
                for reference in character.references:
                    if reference.caption:
                        reference.caption = reference.caption.replace(character.trigger, new_trigger)
            for key, value in values.items():
                if getattr(character, key) != value:
                    setattr(character, key, value)
            session.flush()
            return character_view(character)

    def delete(self, character_id: int, force: bool = False) -> None:
        """Remove the character, its references and adapters for good; shots that named it no longer do.

        While a live shot of the storyboard names it, refused unless `force`: the shot would silently lose who is
        in it, and the references and trained adapters cannot be brought back."""
        with self.db.unit_of_work() as session:
            character = self._character(session, character_id)
            film = film_shot_rows(session, character.project_id)  # numbered as the storyboard cards are
            used = [n for n, shot in enumerate(film, 1) if any(c.id == character.id for c in shot.characters)]
            if used and not force:
                shots = ", ".join(f"#{n}" for n in used)
                raise ConflictError(
                    f"{character.name} is in shot{'s' if len(used) > 1 else ''} {shots} of the storyboard; take "
                    f"{character.name} out of {'them' if len(used) > 1 else 'it'} first (deleting also removes its "
                    "references and adapters for good)"
                )
            asset_ids = {r.asset_id for r in character.references} | {
                r.crop_asset_id for r in character.references if r.crop_asset_id
            }
            asset_ids |= {a.weights_asset_id for a in character.adapters if a.weights_asset_id}
            session.delete(character)
            session.flush()
            self.assets.delete_unreferenced(session, asset_ids)

    # References --------------------------------------------------------------------------------------------------

    def add_reference(self, character_id: int, filename: str, data: bytes, caption: str = "") -> ReferenceView:
        """Validate the image by content (PNG/JPEG/WEBP, size and pixel caps) and store it with its row.
        `caption`: what the picture shows, naming the character by its trigger ("" = none)."""
        info = self.assets.validate_image(data, filename)
        with self.db.unit_of_work() as session:
            character = self._character(session, character_id)
            caption = check.reference_caption(caption, character.name, character.trigger)
            asset = self.assets.add_bytes(session, data, "reference", info.mime, info.filename)
            duplicate = session.scalar(
                select(models.ReferenceImage).where(
                    models.ReferenceImage.character_id == character.id, models.ReferenceImage.asset_id == asset.id
                )
            )
            if duplicate is not None:
                raise ConflictError(
                    f"{info.filename} is already a reference of {character.name} "
                    f"(as {duplicate.original_name or 'an earlier upload'})"
                )
            reference = models.ReferenceImage(
                character_id=character.id,
                asset_id=asset.id,
                original_name=_display_name(filename),
                width=info.width,
                height=info.height,
                caption=caption,
                flags=[],
            )
            session.add(reference)
            session.flush()
            return reference_view(reference)

    def set_reference_caption(self, reference_id: int, caption: str) -> ReferenceView:
        """Replace what the reference's caption says ("" clears it: training then uses trigger and description)."""
        with self.db.unit_of_work() as session:
            reference = self._reference(session, reference_id)
            text = check.reference_caption(caption, reference.character.name, reference.character.trigger)
            if reference.caption != text:
                reference.caption = text
                session.flush()
            return reference_view(reference)

    def list_references(self, character_id: int) -> list[ReferenceView]:
        with self.db.unit_of_work(read_only=True) as session:
            character = self._character(session, character_id)
            return [reference_view(r) for r in character.references]

    def get_reference(self, reference_id: int) -> ReferenceView:
        with self.db.unit_of_work(read_only=True) as session:
            return reference_view(self._reference(session, reference_id))

    def delete_reference(self, reference_id: int) -> None:
        with self.db.unit_of_work() as session:
            reference = self._reference(session, reference_id)
            asset_ids = {reference.asset_id} | ({reference.crop_asset_id} if reference.crop_asset_id else set())
            session.delete(reference)
            session.flush()
            self.assets.delete_unreferenced(session, asset_ids)

    def set_reference_analysis(
        self,
        reference_id: int,
        face_box: tuple[float, float, float, float] | list[float] | None,
        embedding: list[float] | tuple[float, ...] | None,
        flags: list[str] | tuple[str, ...] = (),
        crop_asset_id: int | None = None,
    ) -> ReferenceView:
        """Record what face analysis found (box in pixels, ArcFace embedding of 512 floats, flags)."""
        box = None
        if face_box is not None:
            box = [float(v) for v in face_box]
            if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
                raise ValidationError(f"face_box must be [x0, y0, x1, y1] with x1 > x0 and y1 > y0, got {face_box!r}")
        vector = None
        if embedding is not None:
            vector = [float(v) for v in embedding]
            if len(vector) != EMBEDDING_SIZE or not all(math.isfinite(v) for v in vector):
                raise ValidationError(f"embedding must be {EMBEDDING_SIZE} finite floats, got {len(vector)} values")
        bad_flags = set(flags) - set(REFERENCE_FLAGS)
        if bad_flags:
            raise ValidationError(f"unknown flag(s) {sorted(bad_flags)}; use {', '.join(REFERENCE_FLAGS)}")
        with self.db.unit_of_work() as session:
            reference = self._reference(session, reference_id)
            if crop_asset_id is not None and session.get(models.Asset, crop_asset_id) is None:
                raise NotFoundError(f"asset {crop_asset_id} does not exist")
            reference.face_box = box
            reference.face_embedding = vector
            reference.flags = sorted(set(flags))
            reference.crop_asset_id = crop_asset_id
            reference.analyzed_at = utcnow()
            session.flush()
            return reference_view(reference)

    # Adapters ----------------------------------------------------------------------------------------------------

    def add_adapter(
        self,
        character_id: int,
        kind: str,
        base_preset: str,
        hyperparameters: dict | None = None,
        status: str = "pending",
        job_id: int | None = None,
        weights: bytes | None = None,
        filename: str | None = None,
    ) -> AdapterView:
        """A new adapter version (versions count per character and kind). `weights` must be .safetensors."""
        if kind not in ADAPTER_KINDS:
            raise ValidationError(f"unknown adapter kind {kind!r}; use one of: {', '.join(ADAPTER_KINDS)}")
        if status not in ADAPTER_STATUSES:
            raise ValidationError(f"unknown adapter status {status!r}; use one of: {', '.join(ADAPTER_STATUSES)}")
        check.preset_of(base_preset)
        params = dict(hyperparameters or {})
        _json(params, "hyperparameters")
        if weights is not None:
            check_safetensors(weights)
        elif kind == "imported":
            raise ValidationError("an imported adapter needs its .safetensors weights")
        with self.db.unit_of_work() as session:
            character = self._character(session, character_id)
            version = (
                session.scalar(
                    select(func.max(models.Adapter.version)).where(
                        models.Adapter.character_id == character.id, models.Adapter.kind == kind
                    )
                )
                or 0
            ) + 1
            adapter = models.Adapter(
                character_id=character.id,
                kind=kind,
                base_preset=base_preset,
                status=status,
                hyperparameters=params,
                metrics={},
                version=version,
                job_id=job_id,
            )
            if weights is not None:
                name = filename or f"{character.name}-{kind}-v{version}.safetensors"
                adapter.weights_asset_id = self.assets.add_bytes(
                    session, weights, "weights", "application/x-safetensors", name
                ).id
            session.add(adapter)
            session.flush()
            return adapter_view(adapter)

    def list_adapters(self, character_id: int) -> list[AdapterView]:
        with self.db.unit_of_work(read_only=True) as session:
            character = self._character(session, character_id)
            return [adapter_view(a) for a in character.adapters]

    def get_adapter(self, adapter_id: int) -> AdapterView:
        with self.db.unit_of_work(read_only=True) as session:
            return adapter_view(self._adapter(session, adapter_id))

    def update_adapter_status(
        self,
        adapter_id: int,
        status: str,
        message: str = "",
        metrics: dict | None = None,
        weights: bytes | None = None,
        job_id: int | None = None,
    ) -> AdapterView:
        """Move an adapter along (pending -> training -> ready | failed | cancelled); weights saved atomically."""
        if status not in ADAPTER_STATUSES:
            raise ValidationError(f"unknown adapter status {status!r}; use one of: {', '.join(ADAPTER_STATUSES)}")
        if metrics is not None:
            _json(metrics, "metrics")
        if weights is not None:
            check_safetensors(weights)
        with self.db.unit_of_work() as session:
            adapter = self._adapter(session, adapter_id)
            if status == "ready" and weights is None and adapter.weights_asset_id is None:
                raise ValidationError("an adapter can only be ready with its weights; pass weights=")
            adapter.status = status
            adapter.message = message
            if metrics is not None:
                adapter.metrics = dict(metrics)
            if job_id is not None:
                adapter.job_id = job_id
            if weights is not None:
                character = adapter.character
                name = f"{character.name}-{adapter.kind}-v{adapter.version}.safetensors"
                adapter.weights_asset_id = self.assets.add_bytes(
                    session, weights, "weights", "application/x-safetensors", name
                ).id
            session.flush()
            return adapter_view(adapter)

    def latest_ready_adapter(self, character_id: int, kind: str | None = None) -> AdapterView | None:
        with self.db.unit_of_work(read_only=True) as session:
            query = select(models.Adapter).where(
                models.Adapter.character_id == character_id, models.Adapter.status == "ready"
            )
            if kind is not None:
                query = query.where(models.Adapter.kind == kind)
            adapter = session.scalars(query.order_by(models.Adapter.id.desc()).limit(1)).first()
            return adapter_view(adapter) if adapter is not None else None

    # Internals ---------------------------------------------------------------------------------------------------

    @staticmethod
    def _wanted_adapter(kind: str) -> str:
        if kind not in WANTED_ADAPTER_KINDS:
            raise ValidationError(f"adapter must be one of {', '.join(WANTED_ADAPTER_KINDS)}, got {kind!r}")
        return kind

    @staticmethod
    def _check_unique(session, project_id: int, name: str, trigger: str, exclude_id: int | None = None) -> None:
        others = select(models.Character).where(models.Character.project_id == project_id)
        if exclude_id is not None:
            others = others.where(models.Character.id != exclude_id)
        for other in session.scalars(others):
            if other.name.lower() == name.lower():
                raise ConflictError(f"this project already has a character named {other.name!r}; choose another name")
            if other.trigger == trigger:
                raise ConflictError(f"trigger {trigger} is already used by {other.name}; choose another trigger")

    @staticmethod
    def _character(session, character_id: int) -> models.Character:
        return get_or_not_found(session, models.Character, character_id, "character")

    @staticmethod
    def _reference(session, reference_id: int) -> models.ReferenceImage:
        return get_or_not_found(session, models.ReferenceImage, reference_id, "reference image")

    @staticmethod
    def _adapter(session, adapter_id: int) -> models.Adapter:
        return get_or_not_found(session, models.Adapter, adapter_id, "adapter")


def _display_name(filename: str | None) -> str:
    """What the user called the file (kept for display and for the storyboard file's reference paths).

    Stored as text only; it is never opened as a path by the studio (assets live under their sha256 names).
    """
    text = "".join(ch for ch in (filename or "") if ch.isprintable())[:255]
    return text or "image"


def _json(value, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValidationError(f"{what} must be JSON data: {error}") from None
