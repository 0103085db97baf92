"""Initial schema: patients, devices, exams, measurements, files, jobs, evaluation, users, audit.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("manufacturer", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("serial", sa.String(length=128), nullable=True),
        sa.Column("identity_key", sa.String(length=400), nullable=False),
        sa.Column("model_key", sa.String(length=260), nullable=False),
        sa.Column("identity_strength", sa.String(length=8), nullable=False),
        sa.Column("software_versions", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(identity_strength = 'serial') = (serial IS NOT NULL)",
            name=op.f("ck_devices_serial_matches_strength"),
        ),
        sa.CheckConstraint("identity_strength IN ('serial', 'weak')", name=op.f("ck_devices_identity_strength")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("identity_key", name=op.f("uq_devices_identity_key")),
    )
    op.create_index("ix_devices_model_key", "devices", ["model_key"])

    op.create_table(
        "patients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("identifier", sa.String(length=128), nullable=False),
        sa.Column("issuer", sa.String(length=128), server_default=sa.text("''"), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("sex", sa.String(length=1), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patients")),
        sa.UniqueConstraint("identifier", "issuer", name=op.f("uq_patients_identifier_issuer")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("role IN ('clinician', 'qa', 'admin')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('open', 'resolved')", name=op.f("ck_alerts_state")),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_alerts_patient_id_patients"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index("ix_alerts_patient_id_state", "alerts", ["patient_id", "state"])

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_audit_events_patient_id_patients"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_audit_events_user_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index("ix_audit_events_action_occurred_at", "audit_events", ["action", "occurred_at"])
    op.create_index("ix_audit_events_occurred_at", "audit_events", ["occurred_at"])
    op.create_index("ix_audit_events_patient_id", "audit_events", ["patient_id"])

    op.create_table(
        "cross_calibrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_a_id", sa.Integer(), nullable=False),
        sa.Column("device_b_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("sites", sa.JSON(), nullable=False),
        sa.Column("slope", sa.Double(), nullable=False),
        sa.Column("intercept", sa.Double(), nullable=False),
        sa.Column("lsc_g_cm2", sa.JSON(), nullable=False),
        sa.Column("performed_on", sa.Date(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('phantom', 'in_vivo')", name=op.f("ck_cross_calibrations_kind")),
        sa.CheckConstraint("device_a_id <> device_b_id", name=op.f("ck_cross_calibrations_two_devices")),
        sa.ForeignKeyConstraint(
            ["device_a_id"],
            ["devices.id"],
            name=op.f("fk_cross_calibrations_device_a_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["device_b_id"],
            ["devices.id"],
            name=op.f("fk_cross_calibrations_device_b_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cross_calibrations")),
    )
    op.create_index("ix_cross_calibrations_device_a_id", "cross_calibrations", ["device_a_id"])
    op.create_index("ix_cross_calibrations_device_b_id", "cross_calibrations", ["device_b_id"])

    op.create_table(
        "exams",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("exam_date", sa.Date(), nullable=False),
        sa.Column("scan_types", sa.JSON(), nullable=False),
        sa.Column("vertebral_set", sa.String(length=16), nullable=True),
        sa.Column("scan_mode", sa.String(length=64), nullable=True),
        sa.Column("reference_database", sa.String(length=128), nullable=True),
        sa.Column("analysis_protocol", sa.String(length=128), nullable=True),
        sa.Column("software_version", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name=op.f("fk_exams_device_id_devices")),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_exams_patient_id_patients"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exams")),
        sa.UniqueConstraint(
            "patient_id", "exam_date", "device_id", name=op.f("uq_exams_patient_id_exam_date_device_id")
        ),
    )
    op.create_index("ix_exams_device_id", "exams", ["device_id"])

    op.create_table(
        "next_scans",
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("due", sa.Date(), nullable=True),
        sa.Column("rule_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("alerts", sa.JSON(), nullable=False),
        sa.Column("who_category", sa.String(length=32), nullable=True),
        sa.Column("z_below_expected", sa.Boolean(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_next_scans_patient_id_patients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_next_scans")),
    )
    op.create_index("ix_next_scans_due", "next_scans", ["due"])

    op.create_table(
        "precision_studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=32), nullable=False),
        sa.Column("performed_on", sa.Date(), nullable=True),
        sa.Column("rms_sd_g_cm2", sa.Double(), nullable=True),
        sa.Column("lsc_g_cm2", sa.Double(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_precision_studies_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_precision_studies")),
    )
    op.create_index("ix_precision_studies_device_id", "precision_studies", ["device_id"])

    op.create_table(
        "therapies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("agent", sa.String(length=128), nullable=False),
        sa.Column("drug_class", sa.String(length=32), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("stop_date", sa.Date(), nullable=True),
        sa.Column("glucocorticoid", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_therapies_patient_id_patients"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_therapies")),
    )
    op.create_index("ix_therapies_patient_id", "therapies", ["patient_id"])

    op.create_table(
        "comparisons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=True),
        sa.Column("from_exam_id", sa.Integer(), nullable=False),
        sa.Column("to_exam_id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("delta_g_cm2", sa.Double(), nullable=True),
        sa.Column("percent_change", sa.Double(), nullable=True),
        sa.Column("lsc_g_cm2", sa.Double(), nullable=True),
        sa.Column("lsc_source", sa.String(length=16), nullable=True),
        sa.Column("significance", sa.String(length=16), nullable=True),
        sa.Column("dissimilar", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "lsc_source IS NULL OR lsc_source IN ('study', 'default', 'crosscal')",
            name=op.f("ck_comparisons_lsc_source"),
        ),
        sa.CheckConstraint("reference IN ('baseline', 'previous')", name=op.f("ck_comparisons_reference")),
        sa.CheckConstraint("side IS NULL OR side IN ('left', 'right', 'mean')", name=op.f("ck_comparisons_side")),
        sa.CheckConstraint(
            "significance IS NULL OR significance IN ('gain', 'loss', 'stable')",
            name=op.f("ck_comparisons_significance"),
        ),
        sa.CheckConstraint(
            "status IN ('ok', 'ok_cross_calibrated', 'rejected_cross_machine', 'rejected_unknown_machine')",
            name=op.f("ck_comparisons_status"),
        ),
        sa.ForeignKeyConstraint(
            ["from_exam_id"], ["exams.id"], name=op.f("fk_comparisons_from_exam_id_exams"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_comparisons_patient_id_patients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["to_exam_id"], ["exams.id"], name=op.f("fk_comparisons_to_exam_id_exams"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comparisons")),
    )
    op.create_index("ix_comparisons_from_exam_id", "comparisons", ["from_exam_id"])
    op.create_index("ix_comparisons_patient_id", "comparisons", ["patient_id"])
    op.create_index("ix_comparisons_status", "comparisons", ["status"])
    op.create_index("ix_comparisons_to_exam_id", "comparisons", ["to_exam_id"])

    op.create_table(
        "precision_measurements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("technologist", sa.String(length=128), nullable=False),
        sa.Column("patient_code", sa.String(length=64), nullable=False),
        sa.Column("scan_index", sa.Integer(), nullable=False),
        sa.Column("bmd", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["precision_studies.id"],
            name=op.f("fk_precision_measurements_study_id_precision_studies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_precision_measurements")),
        sa.UniqueConstraint(
            "study_id", "technologist", "patient_code", "scan_index", name="uq_precision_measurements_repeat"
        ),
    )
    op.create_table(
        "source_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("original_name", sa.String(length=255), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("format", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason_code", sa.String(length=64), nullable=True),
        sa.Column("reason_text", sa.Text(), nullable=True),
        sa.Column("parser_version", sa.String(length=64), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("times_seen", sa.Integer(), nullable=False),
        sa.Column("stored_path", sa.String(length=1024), nullable=True),
        sa.Column("patient_id", sa.Integer(), nullable=True),
        sa.Column("exam_id", sa.Integer(), nullable=True),
        sa.Column("conflict_with_id", sa.Integer(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'ingested', 'duplicate', 'quarantined')",
            name=op.f("ck_source_files_status"),
        ),
        sa.ForeignKeyConstraint(
            ["conflict_with_id"],
            ["source_files.id"],
            name=op.f("fk_source_files_conflict_with_id_source_files"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["exam_id"], ["exams.id"], name=op.f("fk_source_files_exam_id_exams"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patients.id"],
            name=op.f("fk_source_files_patient_id_patients"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_source_files")),
        sa.UniqueConstraint("sha256", name=op.f("uq_source_files_sha256")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_source_files_sop_instance_uid")),
    )
    op.create_index("ix_source_files_exam_id", "source_files", ["exam_id"])
    op.create_index("ix_source_files_patient_id", "source_files", ["patient_id"])
    op.create_index("ix_source_files_status_received_at", "source_files", ["status", "received_at"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("source_file_id", sa.Integer(), nullable=True),
        sa.Column("patient_id", sa.Integer(), nullable=True),
        sa.Column("dedup_key", sa.String(length=128), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(length=128), nullable=True),
        sa.Column("run_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("kind IN ('ingest_file', 'evaluate_patient')", name=op.f("ck_jobs_kind")),
        sa.CheckConstraint("state IN ('queued', 'running', 'done', 'failed')", name=op.f("ck_jobs_state")),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_jobs_patient_id_patients"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["source_file_id"],
            ["source_files.id"],
            name=op.f("fk_jobs_source_file_id_source_files"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_jobs_dedup_key")),
    )
    op.create_index("ix_jobs_patient_id", "jobs", ["patient_id"])
    op.create_index("ix_jobs_source_file_id", "jobs", ["source_file_id"])
    op.create_index("ix_jobs_state_id", "jobs", ["state", "id"])

    op.create_table(
        "measurements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("exam_id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=True),
        sa.Column("bmd", sa.Double(), nullable=False),
        sa.Column("bmc_g", sa.Double(), nullable=True),
        sa.Column("area_cm2", sa.Double(), nullable=True),
        sa.Column("t_score", sa.Double(), nullable=True),
        sa.Column("z_score", sa.Double(), nullable=True),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.Column("source_file_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("side IS NULL OR side IN ('left', 'right', 'mean')", name=op.f("ck_measurements_side")),
        sa.CheckConstraint("bmd > 0", name=op.f("ck_measurements_bmd_positive")),
        sa.ForeignKeyConstraint(
            ["exam_id"], ["exams.id"], name=op.f("fk_measurements_exam_id_exams"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["source_file_id"],
            ["source_files.id"],
            name=op.f("fk_measurements_source_file_id_source_files"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_measurements")),
    )
    op.create_index("ix_measurements_source_file_id", "measurements", ["source_file_id"])

    op.create_table(
        "measurement_conflicts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("measurement_id", sa.Integer(), nullable=False),
        sa.Column("exam_id", sa.Integer(), nullable=False),
        sa.Column("source_file_id", sa.Integer(), nullable=True),
        sa.Column("site", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=8), nullable=True),
        sa.Column("accepted_bmd", sa.Double(), nullable=False),
        sa.Column("conflicting_bmd", sa.Double(), nullable=False),
        sa.Column("conflicting_t_score", sa.Double(), nullable=True),
        sa.Column("conflicting_z_score", sa.Double(), nullable=True),
        sa.Column("provenance", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('open', 'resolved')", name=op.f("ck_measurement_conflicts_state")),
        sa.ForeignKeyConstraint(
            ["exam_id"], ["exams.id"], name=op.f("fk_measurement_conflicts_exam_id_exams"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["measurement_id"],
            ["measurements.id"],
            name=op.f("fk_measurement_conflicts_measurement_id_measurements"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_file_id"],
            ["source_files.id"],
            name=op.f("fk_measurement_conflicts_source_file_id_source_files"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_measurement_conflicts")),
        sa.UniqueConstraint(
            "measurement_id",
            "source_file_id",
            name=op.f("uq_measurement_conflicts_measurement_id_source_file_id"),
        ),
    )
    op.create_index("ix_measurement_conflicts_exam_id", "measurement_conflicts", ["exam_id"])

    # Expression index: side is NULL for spine/total body and NULLs never collide in a plain UNIQUE.
    # Autogenerate cannot reflect it on SQLite, so it is written by hand.
    op.create_index(
        "uq_measurements_exam_site_side",
        "measurements",
        ["exam_id", "site", sa.text("coalesce(side, '')")],
        unique=True,
    )


def downgrade() -> None:
    for table in (
        "measurement_conflicts",
        "measurements",
        "jobs",
        "source_files",
        "precision_measurements",
        "comparisons",
        "therapies",
        "precision_studies",
        "next_scans",
        "exams",
        "cross_calibrations",
        "audit_events",
        "api_tokens",
        "alerts",
        "users",
        "patients",
        "devices",
    ):
        op.drop_table(table)
