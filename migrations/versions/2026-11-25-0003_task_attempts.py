"""task attempts

Revision ID: 5469cd40f90c
Revises: fc796e9ac6b6
Create Date: 2026-11-25 12:58:57.688764
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "5469cd40f90c"
down_revision: str | None = "fc796e9ac6b6"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_attempt",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_task_attempt")),
    )


def downgrade() -> None:
    op.drop_table("task_attempt")
