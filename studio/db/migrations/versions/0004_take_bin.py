"""Takes can go to their shot's bin (restorable): a `deleted_at` time, NULL for the takes the shot shows.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every existing take stays where it is: shown with its shot, none in the bin.
    with op.batch_alter_table("takes") as batch:
        batch.add_column(sa.Column("deleted_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("takes") as batch:
        batch.drop_column("deleted_at")
