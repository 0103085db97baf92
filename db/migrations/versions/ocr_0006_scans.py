"""Scanned, faxed and photographed reports read by OCR wait for a person (issue 14): the `scans`
queue and the crops each value was read from, a file status `held` while they wait, and the source
of an exam (`file`, or `ocr` once a person confirmed a scan's values).

Revision ID: ocr_0006_scans
Revises: screens_0005_phrases
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "ocr_0006_scans"
down_revision: str | None = "screens_0005_phrases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = "status IN ('pending', 'processing', 'ingested', 'duplicate', 'quarantined')"
_NEW = "status IN ('pending', 'processing', 'ingested', 'duplicate', 'quarantined', 'held')"


def upgrade() -> None:
    with op.batch_alter_table("source_files") as batch:
        batch.drop_constraint(op.f("ck_source_files_status"), type_="check")
        batch.create_check_constraint(op.f("ck_source_files_status"), _NEW)
    with op.batch_alter_table("exams") as batch:
        batch.add_column(sa.Column("source", sa.String(length=16), nullable=False, server_default="file"))
    op.create_table(
        "scans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_file_id", sa.Integer(), nullable=False),
        sa.Column("report_index", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("engine", sa.String(length=32), nullable=False),
        sa.Column("reading", sa.JSON(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.String(length=128), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("patient_id", sa.Integer(), nullable=True),
        sa.Column("exam_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('pending', 'confirmed', 'rejected')", name=op.f("ck_scans_status")),
        sa.ForeignKeyConstraint(
            ["source_file_id"],
            ["source_files.id"],
            name=op.f("fk_scans_source_file_id_source_files"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_scans_patient_id_patients"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(["exam_id"], ["exams.id"], name=op.f("fk_scans_exam_id_exams"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scans")),
    )
    op.create_index(op.f("ix_scans_source_file_id"), "scans", ["source_file_id"])
    op.create_index("ix_scans_status_id", "scans", ["status", "id"])
    op.create_table(
        "scan_crops",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scan_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("png", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["scan_id"], ["scans.id"], name=op.f("fk_scan_crops_scan_id_scans"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scan_crops")),
        sa.UniqueConstraint("scan_id", "key", name=op.f("uq_scan_crops_scan_id_key")),
    )
    op.create_index(op.f("ix_scan_crops_scan_id"), "scan_crops", ["scan_id"])


def downgrade() -> None:
    op.drop_table("scan_crops")
    op.drop_index("ix_scans_status_id", table_name="scans")
    op.drop_table("scans")
    with op.batch_alter_table("exams") as batch:
        batch.drop_column("source")
    with op.batch_alter_table("source_files") as batch:
        batch.drop_constraint(op.f("ck_source_files_status"), type_="check")
        batch.create_check_constraint(op.f("ck_source_files_status"), _OLD)
