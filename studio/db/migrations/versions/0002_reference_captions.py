"""Reference images get a caption: what the picture shows, naming the character by its trigger; adapters train on it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing references keep training as before: an empty caption means "trigger and description".
    with op.batch_alter_table("reference_images") as batch:
        batch.add_column(sa.Column("caption", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("reference_images") as batch:
        batch.drop_column("caption")
