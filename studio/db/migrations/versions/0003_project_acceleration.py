"""Projects get speed settings: step cache, attention backend, compile, VRAM profile, accelerator LoRA (JSON).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # Existing projects run as before: an empty mapping means the preset's defaults (no cache, native attention).
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("acceleration", JSONType, nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("acceleration")
