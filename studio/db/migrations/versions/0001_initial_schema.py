"""Initial schema: the ten tables of docs/ARCHITECTURE.md, "Data model".

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamps(*, updated: bool = True, deleted: bool = False) -> list[sa.Column]:
    columns = [sa.Column("created_at", sa.DateTime(), nullable=False)]
    if updated:
        columns.append(sa.Column("updated_at", sa.DateTime(), nullable=False))
    if deleted:
        columns.append(sa.Column("deleted_at", sa.DateTime(), nullable=True))
    return columns


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"

    op.create_table(
        "assets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("mime", sa.String(100), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("original_name", sa.String(255), nullable=True),
        *_timestamps(updated=False),
        sa.PrimaryKeyConstraint("id", name="pk_assets"),
        sa.UniqueConstraint("sha256", name="uq_assets_sha256"),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("preset", sa.String(100), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("fps", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("guidance", sa.Float(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), nullable=False),
        *_timestamps(deleted=True),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
        sa.UniqueConstraint("name", name="uq_projects_name"),
    )
    op.create_table(
        "characters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("trigger", sa.String(100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("adapter_kind", sa.String(20), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_characters_project_id_projects", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_characters"),
        sa.UniqueConstraint("project_id", "name", name="uq_characters_project_id_name"),
    )
    op.create_index("ix_characters_project_id", "characters", ["project_id"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=True),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("result", JSONType, nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("total_steps", sa.Integer(), nullable=True),
        sa.Column("eta_s", sa.Float(), nullable=True),
        sa.Column("preview_asset_id", sa.Integer(), nullable=True),
        sa.Column("worker_id", sa.String(200), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["preview_asset_id"], ["assets.id"], name="fk_jobs_preview_asset_id_assets", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_jobs_project_id_projects", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_project_id", "jobs", ["project_id"])
    op.create_index("ix_jobs_status_priority_id", "jobs", ["status", "priority", "id"])
    op.create_table(
        "scenes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("caption", sa.Text(), nullable=False),
        *_timestamps(deleted=True),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_scenes_project_id_projects", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_scenes"),
    )
    op.create_index("ix_scenes_project_id", "scenes", ["project_id"])
    op.create_table(
        "adapters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("character_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("base_preset", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("hyperparameters", JSONType, nullable=False),
        sa.Column("weights_asset_id", sa.Integer(), nullable=True),
        sa.Column("metrics", JSONType, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["character_id"], ["characters.id"], name="fk_adapters_character_id_characters", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_adapters_job_id_jobs", ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["weights_asset_id"], ["assets.id"], name="fk_adapters_weights_asset_id_assets"),
        sa.PrimaryKeyConstraint("id", name="pk_adapters"),
    )
    op.create_index("ix_adapters_character_id", "adapters", ["character_id"])
    op.create_table(
        "exports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("settings", JSONType, nullable=False),
        sa.Column("video_asset_id", sa.Integer(), nullable=False),
        sa.Column("timeline_asset_id", sa.Integer(), nullable=True),
        *_timestamps(updated=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_exports_job_id_jobs", ondelete="SET NULL"),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_exports_project_id_projects", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["timeline_asset_id"], ["assets.id"], name="fk_exports_timeline_asset_id_assets"),
        sa.ForeignKeyConstraint(["video_asset_id"], ["assets.id"], name="fk_exports_video_asset_id_assets"),
        sa.PrimaryKeyConstraint("id", name="pk_exports"),
    )
    op.create_index("ix_exports_project_id", "exports", ["project_id"])
    op.create_table(
        "reference_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("character_id", sa.Integer(), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("original_name", sa.String(255), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("face_box", JSONType, nullable=True),
        sa.Column("face_embedding", JSONType, nullable=True),
        sa.Column("flags", JSONType, nullable=False),
        sa.Column("crop_asset_id", sa.Integer(), nullable=True),
        sa.Column("analyzed_at", sa.DateTime(), nullable=True),
        *_timestamps(updated=False),
        sa.ForeignKeyConstraint(["asset_id"], ["assets.id"], name="fk_reference_images_asset_id_assets"),
        sa.ForeignKeyConstraint(
            ["character_id"], ["characters.id"], name="fk_reference_images_character_id_characters", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["crop_asset_id"], ["assets.id"], name="fk_reference_images_crop_asset_id_assets"),
        sa.PrimaryKeyConstraint("id", name="pk_reference_images"),
    )
    op.create_index("ix_reference_images_asset_id", "reference_images", ["asset_id"])
    op.create_index("ix_reference_images_character_id", "reference_images", ["character_id"])

    # shots.chosen_take_id -> takes.id closes a cycle. SQLite cannot add a constraint later without copying the
    # table, but it accepts a reference to a table that does not exist yet; PostgreSQL needs ALTER after `takes`.
    chosen_take_fk = (
        [
            sa.ForeignKeyConstraint(
                ["chosen_take_id"], ["takes.id"], name="fk_shots_chosen_take_id_takes", ondelete="SET NULL"
            )
        ]
        if sqlite
        else []
    )
    op.create_table(
        "shots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scene_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("caption", sa.Text(), nullable=False),
        sa.Column("num_frames", sa.Integer(), nullable=False),
        sa.Column("shot_size", sa.String(40), nullable=True),
        sa.Column("camera_move", sa.String(40), nullable=True),
        sa.Column("transition_type", sa.String(20), nullable=False),
        sa.Column("transition_seconds", sa.Float(), nullable=False),
        sa.Column("trim_in", sa.Integer(), nullable=False),
        sa.Column("trim_out", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("chosen_take_id", sa.Integer(), nullable=True),
        *_timestamps(deleted=True),
        sa.ForeignKeyConstraint(["scene_id"], ["scenes.id"], name="fk_shots_scene_id_scenes", ondelete="CASCADE"),
        *chosen_take_fk,
        sa.PrimaryKeyConstraint("id", name="pk_shots"),
    )
    op.create_index("ix_shots_scene_id", "shots", ["scene_id"])
    op.create_table(
        "shot_characters",
        sa.Column("shot_id", sa.Integer(), nullable=False),
        sa.Column("character_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["character_id"], ["characters.id"], name="fk_shot_characters_character_id_characters", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["shot_id"], ["shots.id"], name="fk_shot_characters_shot_id_shots", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("shot_id", "character_id", name="pk_shot_characters"),
    )
    op.create_table(
        "takes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shot_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("video_asset_id", sa.Integer(), nullable=False),
        sa.Column("thumbnail_asset_id", sa.Integer(), nullable=False),
        sa.Column("latents_asset_id", sa.Integer(), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("params", JSONType, nullable=False),
        sa.Column("identity_scores", JSONType, nullable=True),
        *_timestamps(updated=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_takes_job_id_jobs", ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["latents_asset_id"], ["assets.id"], name="fk_takes_latents_asset_id_assets"),
        sa.ForeignKeyConstraint(["shot_id"], ["shots.id"], name="fk_takes_shot_id_shots", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["thumbnail_asset_id"], ["assets.id"], name="fk_takes_thumbnail_asset_id_assets"),
        sa.ForeignKeyConstraint(["video_asset_id"], ["assets.id"], name="fk_takes_video_asset_id_assets"),
        sa.PrimaryKeyConstraint("id", name="pk_takes"),
        sa.UniqueConstraint("shot_id", "number", name="uq_takes_shot_id_number"),
    )
    op.create_index("ix_takes_shot_id", "takes", ["shot_id"])
    op.create_index("ix_takes_video_asset_id", "takes", ["video_asset_id"])
    if not sqlite:
        op.create_foreign_key(
            "fk_shots_chosen_take_id_takes", "shots", "takes", ["chosen_take_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_shots_chosen_take_id_takes", "shots", type_="foreignkey")
    for table in (
        "takes",
        "shot_characters",
        "shots",
        "reference_images",
        "exports",
        "adapters",
        "scenes",
        "jobs",
        "characters",
        "projects",
        "assets",
    ):
        op.drop_table(table)
