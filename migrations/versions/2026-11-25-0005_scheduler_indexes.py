"""scheduler indexes: partial indexes for the sweep's poll and stuck-submission claims

`ix_tune_next_poll_at` becomes partial (`next_poll_at IS NOT NULL`): finished tunes, whose
`next_poll_at` is cleared, leave it, so it stays the size of the tunes being followed. A new
partial index on `updated_at` for tunes not yet submitted replaces a full-table scan per sweep.

Revision ID: 335602ae0a03
Revises: 9e210a2b682f
Create Date: 2026-11-25 14:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "335602ae0a03"
down_revision: str | None = "9e210a2b682f"
branch_labels = None
depends_on = None

FOLLOWED = "next_poll_at IS NOT NULL"
UNSUBMITTED = "status IN ('created', 'uploading')"


def _where(predicate: str) -> dict[str, sa.TextClause]:
    return {"postgresql_where": sa.text(predicate), "sqlite_where": sa.text(predicate)}


def upgrade() -> None:
    op.drop_index("ix_tune_next_poll_at", table_name="tune")
    op.create_index("ix_tune_next_poll_at", "tune", ["next_poll_at"], unique=False, **_where(FOLLOWED))
    op.create_index(
        "ix_tune_unsubmitted_updated_at", "tune", ["updated_at"], unique=False, **_where(UNSUBMITTED)
    )


def downgrade() -> None:
    op.drop_index("ix_tune_unsubmitted_updated_at", table_name="tune")
    op.drop_index("ix_tune_next_poll_at", table_name="tune")
    op.create_index("ix_tune_next_poll_at", "tune", ["next_poll_at"], unique=False)
