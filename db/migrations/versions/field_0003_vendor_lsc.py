"""Comparisons may use the LSC the machine printed in the file (`lsc_source` "vendor", issue 10).

`device_lscs` keeps each machine's printed LSC per site with the file it came from. The CHECK of
`comparisons.lsc_source` admits "vendor"; SQLite rewrites the table for it (batch mode),
PostgreSQL drops and adds the constraint. Comparisons are recomputed by every evaluation, so the
downgrade turns a "vendor" source back into "default" before restoring the old CHECK.

Revision ID: field_0003_vendor_lsc
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "field_0003_vendor_lsc"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NEW = "lsc_source IS NULL OR lsc_source IN ('study', 'vendor', 'default', 'crosscal')"
_OLD = "lsc_source IS NULL OR lsc_source IN ('study', 'default', 'crosscal')"


def upgrade() -> None:
    op.create_table(
        "device_lscs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=32), nullable=False),
        sa.Column("lsc_g_cm2", sa.Double(), nullable=False),
        sa.Column("exam_date", sa.Date(), nullable=False),
        sa.Column("source_file_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("lsc_g_cm2 > 0", name=op.f("ck_device_lscs_lsc_positive")),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_device_lscs_device_id_devices"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["source_file_id"],
            ["source_files.id"],
            name=op.f("fk_device_lscs_source_file_id_source_files"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_lscs")),
        sa.UniqueConstraint("device_id", "site", name=op.f("uq_device_lscs_device_id_site")),
    )
    with op.batch_alter_table("comparisons") as batch:
        batch.drop_constraint(op.f("ck_comparisons_lsc_source"), type_="check")
        batch.create_check_constraint("lsc_source", _NEW)


def downgrade() -> None:
    op.drop_table("device_lscs")
    op.execute("UPDATE comparisons SET lsc_source = 'default' WHERE lsc_source = 'vendor'")
    with op.batch_alter_table("comparisons") as batch:
        batch.drop_constraint(op.f("ck_comparisons_lsc_source"), type_="check")
        batch.create_check_constraint("lsc_source", _OLD)
