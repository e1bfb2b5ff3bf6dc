"""SQLAlchemy 2 models of the studio (docs/ARCHITECTURE.md, "Data model").

Portable to SQLite and PostgreSQL: JSON columns (JSONB on PostgreSQL), naive UTC timestamps, named constraints
(Alembic batch migrations on SQLite need names). Projects, scenes and shots are deleted to a bin (`deleted_at`) and
only removed for good when the user empties it; takes are never overwritten.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSONB on PostgreSQL (comparable, compact), JSON text on SQLite.
JSONType = JSON().with_variant(JSONB(), "postgresql")

JOB_KINDS = ("generate_scene", "regenerate_shot", "train_adapter", "export_film")
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
ADAPTER_KINDS = ("lora", "embedding", "imported")
ADAPTER_STATUSES = ("pending", "training", "ready", "failed", "cancelled")
TRANSITION_TYPES = ("cut", "dissolve", "fade")


def utcnow() -> datetime:
    """Naive UTC now: SQLite keeps no time zone, so every timestamp in the database is naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Asset(Base):
    """A content-addressed file under data_dir/assets (path derived from sha256 and mime)."""

    __tablename__ = "assets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # reference, video, thumbnail, latents, preview, weights, ...
    mime: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    original_name: Mapped[str | None] = mapped_column(String(255))  # sanitised display name, never a path
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    preset: Mapped[str] = mapped_column(String(100))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    fps: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    guidance: Mapped[float] = mapped_column(Float)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    # Speed settings over the preset's defaults (pipelines.acceleration.Acceleration fields, plus "accelerator": the
    # id of an imported LoRA applied to every shot); {} = the preset's defaults.
    acceleration: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime)

    characters: Mapped[list[Character]] = relationship(
        back_populates="project", cascade="all, delete-orphan", passive_deletes=True, order_by="Character.id"
    )
    scenes: Mapped[list[Scene]] = relationship(
        back_populates="project", cascade="all, delete-orphan", passive_deletes=True, order_by="Scene.position"
    )


shot_characters = Table(
    "shot_characters",
    Base.metadata,
    Column("shot_id", ForeignKey("shots.id", ondelete="CASCADE"), primary_key=True),
    Column("character_id", ForeignKey("characters.id", ondelete="CASCADE"), primary_key=True),
)


class Character(Base):
    __tablename__ = "characters"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_characters_project_id_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    trigger: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    adapter_kind: Mapped[str] = mapped_column(String(20), default="none")  # what the storyboard asks: none|lora|...
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    project: Mapped[Project] = relationship(back_populates="characters")
    references: Mapped[list[ReferenceImage]] = relationship(
        back_populates="character", cascade="all, delete-orphan", passive_deletes=True, order_by="ReferenceImage.id"
    )
    adapters: Mapped[list[Adapter]] = relationship(
        back_populates="character", cascade="all, delete-orphan", passive_deletes=True, order_by="Adapter.id"
    )


class ReferenceImage(Base):
    __tablename__ = "reference_images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    character_id: Mapped[int] = mapped_column(ForeignKey("characters.id", ondelete="CASCADE"), index=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"), index=True)
    original_name: Mapped[str] = mapped_column(String(255), default="")  # as uploaded / as written in the file
    # What the picture shows, naming the character by its trigger ("close-up shot, <kai> stays still"); adapters
    # train on it, so they learn the character where storyboard captions put it. "" = trigger and description.
    caption: Mapped[str] = mapped_column(Text, default="", server_default="")
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    face_box: Mapped[list[float] | None] = mapped_column(JSONType)  # [x0, y0, x1, y1] in pixels
    face_embedding: Mapped[list[float] | None] = mapped_column(JSONType)  # ArcFace, 512 floats
    flags: Mapped[list[str]] = mapped_column(JSONType, default=list)  # no_face | several_faces | low_quality
    crop_asset_id: Mapped[int | None] = mapped_column(ForeignKey("assets.id"))
    analyzed_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    character: Mapped[Character] = relationship(back_populates="references")


class Adapter(Base):
    __tablename__ = "adapters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    character_id: Mapped[int] = mapped_column(ForeignKey("characters.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # lora | embedding | imported
    base_preset: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    message: Mapped[str] = mapped_column(Text, default="")
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    weights_asset_id: Mapped[int | None] = mapped_column(ForeignKey("assets.id"))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    character: Mapped[Character] = relationship(back_populates="adapters")


class Scene(Base):
    __tablename__ = "scenes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # 0-based among the project's live scenes
    caption: Mapped[str] = mapped_column(Text, default="")  # global caption: location, look, who is there
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime)

    project: Mapped[Project] = relationship(back_populates="scenes")
    shots: Mapped[list[Shot]] = relationship(
        back_populates="scene", cascade="all, delete-orphan", passive_deletes=True, order_by="Shot.position"
    )


class Shot(Base):
    __tablename__ = "shots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scene_id: Mapped[int] = mapped_column(ForeignKey("scenes.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # 0-based among the scene's live shots
    caption: Mapped[str] = mapped_column(Text)
    num_frames: Mapped[int] = mapped_column(Integer)
    shot_size: Mapped[str | None] = mapped_column(String(40))
    camera_move: Mapped[str | None] = mapped_column(String(40))
    transition_type: Mapped[str] = mapped_column(String(20), default="cut")  # transition into this shot
    transition_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    trim_in: Mapped[int] = mapped_column(Integer, default=0)  # frames cut from the start in the edit
    trim_out: Mapped[int] = mapped_column(Integer, default=0)  # frames cut from the end in the edit
    seed: Mapped[int | None] = mapped_column(BigInteger)
    # Shot -> Take -> Shot is a cycle: the constraint is added after both tables exist (use_alter).
    chosen_take_id: Mapped[int | None] = mapped_column(
        ForeignKey("takes.id", ondelete="SET NULL", use_alter=True, name="fk_shots_chosen_take_id_takes")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime)

    scene: Mapped[Scene] = relationship(back_populates="shots")
    characters: Mapped[list[Character]] = relationship(secondary=shot_characters, order_by="Character.id")
    takes: Mapped[list[Take]] = relationship(
        back_populates="shot",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Take.number",
        foreign_keys="Take.shot_id",
    )


class Take(Base):
    __tablename__ = "takes"
    __table_args__ = (UniqueConstraint("shot_id", "number", name="uq_takes_shot_id_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shot_id: Mapped[int] = mapped_column(ForeignKey("shots.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per shot
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    video_asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"), index=True)
    thumbnail_asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"))
    latents_asset_id: Mapped[int | None] = mapped_column(ForeignKey("assets.id"))
    seed: Mapped[int] = mapped_column(BigInteger)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # everything sent to the pipeline
    identity_scores: Mapped[dict[str, Any] | None] = mapped_column(JSONType)  # character name -> score
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime)  # in the shot's take bin: restorable

    shot: Mapped[Shot] = relationship(back_populates="takes", foreign_keys=[shot_id])


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_priority_id", "status", "priority", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    step: Mapped[int | None] = mapped_column(Integer)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    eta_s: Mapped[float | None] = mapped_column(Float)
    preview_asset_id: Mapped[int | None] = mapped_column(ForeignKey("assets.id", ondelete="SET NULL"))
    worker_id: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class Export(Base):
    __tablename__ = "exports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    video_asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id"))
    timeline_asset_id: Mapped[int | None] = mapped_column(ForeignKey("assets.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# Every column that points at an asset: (table, column, nullable). The orphan sweep and garbage collection read it.
ASSET_REFERENCES: tuple[tuple[type[Base], str], ...] = (
    (ReferenceImage, "asset_id"),
    (ReferenceImage, "crop_asset_id"),
    (Adapter, "weights_asset_id"),
    (Take, "video_asset_id"),
    (Take, "thumbnail_asset_id"),
    (Take, "latents_asset_id"),
    (Job, "preview_asset_id"),
    (Export, "video_asset_id"),
    (Export, "timeline_asset_id"),
)
