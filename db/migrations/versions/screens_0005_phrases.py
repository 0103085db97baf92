"""Refusal reasons and alerts as phrases (a code and its arguments, monitor.phrases), so the
dashboard words them in the reader's language; the English `reason`/`message` stay for the
exports. NULL on rows written before: the page shows their English text until the next evaluation.

Revision ID: screens_0005_phrases
Revises: screens_0004_user_locale
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "screens_0005_phrases"
down_revision: str | None = "screens_0004_user_locale"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("comparisons") as batch:
        batch.add_column(sa.Column("notes", sa.JSON(), nullable=True))
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("phrase", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("phrase")
    with op.batch_alter_table("comparisons") as batch:
        batch.drop_column("notes")
