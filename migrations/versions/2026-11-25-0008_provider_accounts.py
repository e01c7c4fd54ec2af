"""provider accounts: per-project providers with encrypted keys; tunes name theirs, record a
deployment, a deprecation warning and what a retune does on success

Revision ID: 7c3f0e5a2b18
Revises: 5b2e7c1d9a40
Create Date: 2026-11-25 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "7c3f0e5a2b18"
down_revision: str | None = "5b2e7c1d9a40"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "provider_account",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("project_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=False),
        sa.Column("api_version", sa.String(length=40), nullable=True),
        sa.Column("api_key", sa.Text(), nullable=False),
        sa.Column("key_hint", sa.String(length=20), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("options", JSON, nullable=False),
        sa.Column("management_key", sa.Text(), nullable=True),
        sa.Column("catalog", JSON, nullable=True),
        sa.Column("catalog_refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["project.id"],
            name=op.f("fk_provider_account_project_id_project"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_account")),
        sa.UniqueConstraint("project_id", "name", name=op.f("uq_provider_account_project_id_name")),
    )
    # Batch mode, so the foreign key can be added on SQLite (the embedded default) too.
    with op.batch_alter_table("tune") as batch:
        batch.add_column(sa.Column("provider_account_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("deployment", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("deprecation_warned_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("retune_of", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("on_success", JSON, nullable=True))
        batch.create_index(batch.f("ix_tune_provider_account_id"), ["provider_account_id"], unique=False)
        batch.create_foreign_key(
            batch.f("fk_tune_provider_account_id_provider_account"),
            "provider_account",
            ["provider_account_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("tune") as batch:
        batch.drop_constraint(batch.f("fk_tune_provider_account_id_provider_account"), type_="foreignkey")
        batch.drop_index(batch.f("ix_tune_provider_account_id"))
        batch.drop_column("on_success")
        batch.drop_column("retune_of")
        batch.drop_column("deprecation_warned_at")
        batch.drop_column("deployment")
        batch.drop_column("provider_account_id")
    op.drop_table("provider_account")
