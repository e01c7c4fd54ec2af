"""evals: evals, their items and every provider call's output

Revision ID: 5b2e7c1d9a40
Revises: 104c6d815837
Create Date: 2026-11-25 15:37:58
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "5b2e7c1d9a40"
down_revision: str | None = "104c6d815837"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eval",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("project_id", sa.String(length=40), nullable=False),
        sa.Column("dataset_id", sa.String(length=40), nullable=False),
        sa.Column("split", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column(
            "models",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "options",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("items_total", sa.Integer(), nullable=True),
        sa.Column(
            "metrics",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("error_code", sa.String(length=60), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column(
            "webhook_events",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["dataset_id"], ["dataset.id"], name=op.f("fk_eval_dataset_id_dataset")),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_eval_project_id_project"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval")),
    )
    op.create_index(op.f("ix_eval_dataset_id"), "eval", ["dataset_id"], unique=False)
    op.create_index(op.f("ix_eval_project_id_id"), "eval", ["project_id", "id"], unique=False)
    op.create_index(
        "ix_eval_unfinished_updated_at",
        "eval",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("status IN ('queued', 'running')"),
        sqlite_where=sa.text("status IN ('queued', 'running')"),
    )
    op.create_table(
        "eval_item",
        sa.Column("eval_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column(
            "messages",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["eval_id"], ["eval.id"], name=op.f("fk_eval_item_eval_id_eval"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("eval_id", "position", name=op.f("pk_eval_item")),
    )
    op.create_table(
        "eval_output",
        sa.Column("eval_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("slot", sa.String(length=40), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("finish_reason", sa.String(length=40), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column(
            "error",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "scores",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["eval_id"], ["eval.id"], name=op.f("fk_eval_output_eval_id_eval"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("eval_id", "position", "slot", name=op.f("pk_eval_output")),
    )


def downgrade() -> None:
    op.drop_table("eval_output")
    op.drop_table("eval_item")
    op.drop_index(
        "ix_eval_unfinished_updated_at",
        table_name="eval",
        postgresql_where=sa.text("status IN ('queued', 'running')"),
        sqlite_where=sa.text("status IN ('queued', 'running')"),
    )
    op.drop_index(op.f("ix_eval_project_id_id"), table_name="eval")
    op.drop_index(op.f("ix_eval_dataset_id"), table_name="eval")
    op.drop_table("eval")
