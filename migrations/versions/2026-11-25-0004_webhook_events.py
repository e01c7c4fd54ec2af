"""webhook events and endpoint rotation

Revision ID: 9e210a2b682f
Revises: 5469cd40f90c
Create Date: 2026-11-25 13:12:40.039334
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "9e210a2b682f"
down_revision: str | None = "5469cd40f90c"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_event",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("project_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=60), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["project.id"],
            name=op.f("fk_webhook_event_project_id_project"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_event")),
    )
    op.create_index(
        op.f("ix_webhook_event_project_id_id"), "webhook_event", ["project_id", "id"], unique=False
    )
    op.add_column("webhook_endpoint", sa.Column("previous_secret", sa.Text(), nullable=True))
    op.add_column(
        "webhook_endpoint", sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("webhook_endpoint", sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True))
    op.add_column("webhook_endpoint", sa.Column("disabled_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("webhook_endpoint", "disabled_reason")
    op.drop_column("webhook_endpoint", "failing_since")
    op.drop_column("webhook_endpoint", "previous_secret_expires_at")
    op.drop_column("webhook_endpoint", "previous_secret")
    op.drop_index(op.f("ix_webhook_event_project_id_id"), table_name="webhook_event")
    op.drop_table("webhook_event")
