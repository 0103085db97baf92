"""SQLAlchemy 2.0 tables of the service. Rows, not domain objects: `db.converters` translates.

Kept apart from `ingest.report` and `monitor.model` so the pure code never sees an ORM object and
the schema can carry bookkeeping (timestamps, status, provenance) the domain does not need.

Conventions:
- every constraint is named (`NAMING_CONVENTION`) so SQLite batch migrations can address it;
- closed vocabularies are strings with a CHECK constraint, not native enums, so adding a value is
  a one-line migration on both backends;
- timestamps are stored in UTC and always come back timezone-aware (`UtcDateTime`), because
  SQLite forgets the offset and PostgreSQL does not, and code must not care which it talks to.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, ClassVar, Final, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    literal_column,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION: Final = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

FileStatus = Literal["pending", "processing", "ingested", "duplicate", "quarantined", "held"]
JobKind = Literal["ingest_file", "evaluate_patient"]
JobState = Literal["queued", "running", "done", "failed"]
Role = Literal["clinician", "qa", "admin"]
IdentityStrength = Literal["serial", "weak"]

# "held": a scan read by OCR, waiting for a person to confirm or reject it (`services.scans`)
FILE_STATUSES: Final = ("pending", "processing", "ingested", "duplicate", "quarantined", "held")
SCAN_STATUSES: Final = ("pending", "confirmed", "rejected")
EXAM_SOURCES: Final = ("file", "ocr")
JOB_KINDS: Final = ("ingest_file", "evaluate_patient")
JOB_STATES: Final = ("queued", "running", "done", "failed")
ROLES: Final = ("clinician", "qa", "admin")
IDENTITY_STRENGTHS: Final = ("serial", "weak")
SIDES: Final = ("left", "right", "mean")
REFERENCES: Final = ("baseline", "previous")
COMPARISON_STATUSES: Final = (
    "ok",
    "ok_cross_calibrated",
    "rejected_cross_machine",
    "rejected_unknown_machine",
)
SIGNIFICANCES: Final = ("gain", "loss", "stable")
LSC_SOURCES: Final = ("study", "vendor", "default", "crosscal")
CROSSCAL_KINDS: Final = ("phantom", "in_vivo")
CONFLICT_STATES: Final = ("open", "resolved")
ALERT_STATES: Final = ("open", "acknowledged", "resolved")


def one_of(column: str, values: tuple[str, ...], *, nullable: bool = False) -> str:
    """SQL text of a CHECK that `column` takes one of `values` (shared with the migrations)."""
    listed = ", ".join(f"'{v}'" for v in values)
    check = f"{column} IN ({listed})"
    return f"{column} IS NULL OR {check}" if nullable else check


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and returned timezone-aware on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime,
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# --------------------------------------------------------------------------- people and machines


class Patient(Timestamped, Base):
    """A patient as the issuing system names them. `issuer` is "" when the file names none, so
    (identifier, issuer) stays unique on PostgreSQL, where NULLs are never equal."""

    __tablename__ = "patients"
    __table_args__ = (
        UniqueConstraint("identifier", "issuer"),
        # the patients list pages in identifier order; with the id a deep page reads only the index
        Index("ix_patients_identifier_issuer_id", "identifier", "issuer", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    identifier: Mapped[str] = mapped_column(String(128))
    issuer: Mapped[str] = mapped_column(String(128), default="", server_default=text("''"))
    name: Mapped[str | None] = mapped_column(String(256))
    birth_date: Mapped[date | None]
    sex: Mapped[str | None] = mapped_column(String(1))

    exams: Mapped[list[Exam]] = relationship(back_populates="patient", order_by="(Exam.exam_date, Exam.id)")


# The patients list searches lower(identifier) and lower(name) for a substring: on PostgreSQL,
# trigram (pg_trgm) indexes answer that without reading every patient. Migration 0002 creates
# them only where pg_trgm is available; SQLite has no such index.
for _column in (Patient.identifier, Patient.name):
    Index(
        f"ix_patients_{_column.key}_trgm",
        func.lower(_column).label(f"lower_{_column.key}"),
        postgresql_using="gin",
        postgresql_ops={f"lower_{_column.key}": "gin_trgm_ops"},
    ).ddl_if(dialect="postgresql")
# A two-letter search has no trigram: the two-letter pieces of both (migration page_0007, which
# also creates the function; web/queries/patient_list.py).
Index(
    "ix_patients_search_bigrams",
    func.dxa_bigrams(Patient.identifier, Patient.name),
    postgresql_using="gin",
).ddl_if(dialect="postgresql")


class Device(Timestamped, Base):
    """A densitometer. `identity_key` is the normalised (manufacturer, model, serial); devices
    without a serial share one weak row per manufacturer and model, which the monitor never treats
    as the same machine as anything (docs/architecture.md, "Vocabulary")."""

    __tablename__ = "devices"
    __table_args__ = (
        CheckConstraint(one_of("identity_strength", IDENTITY_STRENGTHS), name="identity_strength"),
        CheckConstraint("(identity_strength = 'serial') = (serial IS NOT NULL)", name="serial_matches_strength"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    manufacturer: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(128))
    serial: Mapped[str | None] = mapped_column(String(128))
    identity_key: Mapped[str] = mapped_column(String(400), unique=True)
    model_key: Mapped[str] = mapped_column(String(260), index=True)
    identity_strength: Mapped[str] = mapped_column(String(8))
    software_versions: Mapped[list[str]] = mapped_column(default=list)


class DeviceLsc(Base):
    """The LSC a machine prints on its reports at one site (a facility's precision study entered
    on the scanner), as last read from one of its files. Used when no precision study was loaded
    here (`lsc_source` "vendor"); the file it came from is kept for the audit."""

    __tablename__ = "device_lscs"
    __table_args__ = (UniqueConstraint("device_id", "site"), CheckConstraint("lsc_g_cm2 > 0", name="lsc_positive"))

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    site: Mapped[str] = mapped_column(String(32))
    lsc_g_cm2: Mapped[float] = mapped_column(Double)
    exam_date: Mapped[date]
    source_file_id: Mapped[int | None] = mapped_column(ForeignKey("source_files.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# --------------------------------------------------------------------------- files and jobs


class SourceFile(Base):
    """One received file, by its bytes. Re-dropping the same bytes finds this row again
    (`times_seen` counts arrivals); the same SOP Instance UID with other bytes is quarantined
    and points at the file that owns the UID (`conflict_with_id`)."""

    __tablename__ = "source_files"
    __table_args__ = (
        CheckConstraint(one_of("status", FILE_STATUSES), name="status"),
        Index("ix_source_files_status_received_at", "status", "received_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64), unique=True)
    original_name: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    format: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason_code: Mapped[str | None] = mapped_column(String(64))
    reason_text: Mapped[str | None] = mapped_column(Text)
    parser_version: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(default=0)
    times_seen: Mapped[int] = mapped_column(default=1)
    stored_path: Mapped[str | None] = mapped_column(String(1024))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id", ondelete="SET NULL"), index=True)
    exam_id: Mapped[int | None] = mapped_column(ForeignKey("exams.id", ondelete="SET NULL"), index=True)
    conflict_with_id: Mapped[int | None] = mapped_column(ForeignKey("source_files.id", ondelete="SET NULL"))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]


class FileBlob(Base):
    """The bytes of a received file, by SHA-256 (scaled mode, `DXA_FILE_STORE=database`): the
    watcher puts them here in the transaction that registers the file, so a worker on any host
    needs the database and the broker and no shared folder. Content-addressed: a re-drop adds
    nothing. The watcher's host keeps the archive and quarantine folders as copies."""

    __tablename__ = "file_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """Pending work; the source of truth Celery only transports.

    `dedup_key` is set while a job is queued and cleared when it is claimed: at most one queued
    job per key (say one `evaluate_patient` per patient), while a new one may queue behind a
    running one. A unique column of mostly NULLs works the same on SQLite and PostgreSQL.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(one_of("kind", JOB_KINDS), name="kind"),
        CheckConstraint(one_of("state", JOB_STATES), name="state"),
        Index("ix_jobs_state_id", "state", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="queued")
    source_file_id: Mapped[int | None] = mapped_column(ForeignKey("source_files.id", ondelete="CASCADE"), index=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    dedup_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(128))
    run_after: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    source_file: Mapped[SourceFile | None] = relationship()


# --------------------------------------------------------------------------- exams and results


class Exam(Timestamped, Base):
    """One visit on one machine: every file of that visit merged (unique patient+date+device)."""

    __tablename__ = "exams"
    __table_args__ = (UniqueConstraint("patient_id", "exam_date", "device_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    exam_date: Mapped[date]
    scan_types: Mapped[list[str]] = mapped_column(default=list)
    vertebral_set: Mapped[str | None] = mapped_column(String(16))
    scan_mode: Mapped[str | None] = mapped_column(String(64))
    reference_database: Mapped[str | None] = mapped_column(String(128))
    analysis_protocol: Mapped[str | None] = mapped_column(String(128))
    software_version: Mapped[str | None] = mapped_column(String(128))
    # "ocr": its values were read from a scan by OCR and confirmed by a person (`services.scans`)
    source: Mapped[str] = mapped_column(String(16), default="file", server_default="file")

    patient: Mapped[Patient] = relationship(back_populates="exams")
    device: Mapped[Device] = relationship(lazy="joined")
    measurements: Mapped[list[Measurement]] = relationship(
        back_populates="exam", order_by="(Measurement.site, Measurement.side)", cascade="all, delete-orphan"
    )


class Measurement(Base):
    """The accepted value at one site and side of an exam: the first file's. A later file that
    disagrees is recorded in `measurement_conflicts`, never written over this row.

    Unique on (exam, site, coalesce(side, '')): side is NULL for spine and total body, and a plain
    unique constraint would let NULL sides repeat on both backends."""

    __tablename__ = "measurements"
    __table_args__ = (
        CheckConstraint(one_of("side", SIDES, nullable=True), name="side"),
        CheckConstraint("bmd > 0", name="bmd_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    exam_id: Mapped[int] = mapped_column(ForeignKey("exams.id", ondelete="CASCADE"))
    site: Mapped[str] = mapped_column(String(32))
    side: Mapped[str | None] = mapped_column(String(8))
    bmd: Mapped[float] = mapped_column(Double)
    bmc_g: Mapped[float | None] = mapped_column(Double)
    area_cm2: Mapped[float | None] = mapped_column(Double)
    t_score: Mapped[float | None] = mapped_column(Double)
    z_score: Mapped[float | None] = mapped_column(Double)
    provenance: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source_file_id: Mapped[int | None] = mapped_column(ForeignKey("source_files.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    exam: Mapped[Exam] = relationship(back_populates="measurements")


Index(
    "uq_measurements_exam_site_side",
    Measurement.exam_id,
    Measurement.site,
    func.coalesce(Measurement.side, literal_column("''")),
    unique=True,
)


class MeasurementConflict(Base):
    """A second file's value for a site and side that disagrees with the accepted one, for QA."""

    __tablename__ = "measurement_conflicts"
    __table_args__ = (
        UniqueConstraint("measurement_id", "source_file_id"),
        CheckConstraint(one_of("state", CONFLICT_STATES), name="state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    measurement_id: Mapped[int] = mapped_column(ForeignKey("measurements.id", ondelete="CASCADE"))
    exam_id: Mapped[int] = mapped_column(ForeignKey("exams.id", ondelete="CASCADE"), index=True)
    source_file_id: Mapped[int | None] = mapped_column(ForeignKey("source_files.id", ondelete="SET NULL"))
    site: Mapped[str] = mapped_column(String(32))
    side: Mapped[str | None] = mapped_column(String(8))
    accepted_bmd: Mapped[float] = mapped_column(Double)
    conflicting_bmd: Mapped[float] = mapped_column(Double)
    conflicting_t_score: Mapped[float | None] = mapped_column(Double)
    conflicting_z_score: Mapped[float | None] = mapped_column(Double)
    provenance: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]


# --------------------------------------------------------------------------- clinical context


class TherapyRow(Base):
    __tablename__ = "therapies"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    agent: Mapped[str] = mapped_column(String(128))
    drug_class: Mapped[str] = mapped_column(String(32))
    start_date: Mapped[date]
    stop_date: Mapped[date | None]
    glucocorticoid: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PrecisionStudy(Base):
    """An ISCD precision study on one device at one site; raw repeats in `precision_measurements`.
    `rms_sd_g_cm2`/`lsc_g_cm2` cache what `monitor.precision` computed from them."""

    __tablename__ = "precision_studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    site: Mapped[str] = mapped_column(String(32))
    performed_on: Mapped[date | None]
    rms_sd_g_cm2: Mapped[float | None] = mapped_column(Double)
    lsc_g_cm2: Mapped[float | None] = mapped_column(Double)
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    measurements: Mapped[list[PrecisionMeasurement]] = relationship(
        back_populates="study",
        cascade="all, delete-orphan",
        order_by="(PrecisionMeasurement.technologist, PrecisionMeasurement.patient_code, "
        "PrecisionMeasurement.scan_index)",
    )
    device: Mapped[Device] = relationship()


class PrecisionMeasurement(Base):
    __tablename__ = "precision_measurements"
    __table_args__ = (
        UniqueConstraint(
            "study_id", "technologist", "patient_code", "scan_index", name="uq_precision_measurements_repeat"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("precision_studies.id", ondelete="CASCADE"))
    technologist: Mapped[str] = mapped_column(String(128))
    patient_code: Mapped[str] = mapped_column(String(64))
    scan_index: Mapped[int] = mapped_column(Integer)
    bmd: Mapped[float] = mapped_column(Double)

    study: Mapped[PrecisionStudy] = relationship(back_populates="measurements")


class CrossCalibrationRow(Base):
    __tablename__ = "cross_calibrations"
    __table_args__ = (
        CheckConstraint(one_of("kind", CROSSCAL_KINDS), name="kind"),
        CheckConstraint("device_a_id <> device_b_id", name="two_devices"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    device_a_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    device_b_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    sites: Mapped[list[str]] = mapped_column(default=list)
    slope: Mapped[float] = mapped_column(Double, default=1.0)
    intercept: Mapped[float] = mapped_column(Double, default=0.0)
    lsc_g_cm2: Mapped[dict[str, Any]] = mapped_column(default=dict)  # site -> LSC g/cm²
    performed_on: Mapped[date | None]
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    device_a: Mapped[Device] = relationship(foreign_keys=[device_a_id])
    device_b: Mapped[Device] = relationship(foreign_keys=[device_b_id])


# --------------------------------------------------------------------------- evaluation results


class ComparisonRow(Base):
    """A comparison in the docs/architecture.md, "Exports" export shape; replaced whole on each evaluation."""

    __tablename__ = "comparisons"
    __table_args__ = (
        CheckConstraint(one_of("reference", REFERENCES), name="reference"),
        CheckConstraint(one_of("status", COMPARISON_STATUSES), name="status"),
        CheckConstraint(one_of("significance", SIGNIFICANCES, nullable=True), name="significance"),
        CheckConstraint(one_of("lsc_source", LSC_SOURCES, nullable=True), name="lsc_source"),
        CheckConstraint(one_of("side", SIDES, nullable=True), name="side"),
        Index("ix_comparisons_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    site: Mapped[str] = mapped_column(String(32))
    side: Mapped[str | None] = mapped_column(String(8))
    from_exam_id: Mapped[int] = mapped_column(ForeignKey("exams.id", ondelete="CASCADE"), index=True)
    to_exam_id: Mapped[int] = mapped_column(ForeignKey("exams.id", ondelete="CASCADE"), index=True)
    reference: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(32))
    delta_g_cm2: Mapped[float | None] = mapped_column(Double)
    percent_change: Mapped[float | None] = mapped_column(Double)
    lsc_g_cm2: Mapped[float | None] = mapped_column(Double)
    lsc_source: Mapped[str | None] = mapped_column(String(16))
    significance: Mapped[str | None] = mapped_column(String(16))
    dissimilar: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    # `reason` as phrases (monitor.phrases.to_data), for the reader's language; NULL before they existed
    notes: Mapped[list[Any] | None] = mapped_column(JSON)
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)


class NextScanRow(Base):
    """The patient's current next-scan decision (one row per patient) and display flags."""

    __tablename__ = "next_scans"
    __table_args__ = (
        # due ranges (worklist, overdue filter); with the patient id, counts join from the index alone
        Index("ix_next_scans_due_patient_id", "due", "patient_id"),
        # the patients list's "open alerts" filters count and pick from this alone (migration page_0008)
        Index(
            "ix_next_scans_open_alert_due",
            "due",
            "patient_id",
            postgresql_where=text("open_alert"),
            sqlite_where=text("open_alert"),
        ),
    )

    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), primary_key=True)
    due: Mapped[date | None]
    rule_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")
    alerts: Mapped[list[Any]] = mapped_column(JSON, default=list)
    who_category: Mapped[str | None] = mapped_column(String(32))
    z_below_expected: Mapped[bool] = mapped_column(Boolean, default=False)
    computed_at: Mapped[datetime] = mapped_column(default=utcnow)
    # whether the patient has an open alert: kept with the alerts by `db.history` (evaluation,
    # acknowledgement), so the list's "overdue and open alerts" count reads one index, not a join
    # of every overdue patient with every open alert (issue 13)
    open_alert: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))


class AlertRow(Base):
    """An alert raised for a patient; stays `open` while evaluations keep raising it, until a
    clinician acknowledges it (with a comment). An acknowledged alert stays quiet while it is
    raised on the same `basis`; new facts raise it again as a new open alert."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint(one_of("state", ALERT_STATES), name="state"),
        Index("ix_alerts_patient_id_state", "patient_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="open")
    raised_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]
    basis: Mapped[str] = mapped_column(Text, default="", server_default=text("''"))
    # `message` as a phrase (monitor.phrases.to_data), for the reader's language; NULL before they existed
    phrase: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(128))
    ack_comment: Mapped[str | None] = mapped_column(Text)


# --------------------------------------------------------------------------- users and audit


class User(Timestamped, Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(one_of("role", ROLES), name="role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_login_at: Mapped[datetime | None]
    locale: Mapped[str | None] = mapped_column(String(16))  # dashboard language; NULL follows the browser


class ApiToken(Base):
    """An integration token; only its SHA-256 is stored (tokens are random, so no slow hash)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()


class ScanRow(Base):
    """One report read by OCR from a scanned, faxed or photographed file, waiting for a QA user
    (issue 14). Its values are not results: nothing of it is trended, compared, scheduled or
    exported until it is confirmed, when its exam is stored like a file's (`source` "ocr").
    `reading` holds the values as read (text, confidence, failed checks, page and box) and the
    report's other fields; `crops` the image of the row each value was read from."""

    __tablename__ = "scans"
    __table_args__ = (
        CheckConstraint(one_of("status", SCAN_STATUSES), name="status"),
        Index("ix_scans_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    source_file_id: Mapped[int] = mapped_column(ForeignKey("source_files.id", ondelete="CASCADE"), index=True)
    report_index: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    engine: Mapped[str] = mapped_column(String(32), default="tesseract")
    reading: Mapped[dict[str, Any]] = mapped_column(default=dict)
    problems: Mapped[list[str]] = mapped_column(default=list)
    reason: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[str | None] = mapped_column(String(128))
    decided_at: Mapped[datetime | None]
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id", ondelete="SET NULL"))
    exam_id: Mapped[int | None] = mapped_column(ForeignKey("exams.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    source_file: Mapped[SourceFile] = relationship()


class ScanCrop(Base):
    """A PNG cut from a scan: the row a value was read from (its value boxed), or a page."""

    __tablename__ = "scan_crops"
    __table_args__ = (UniqueConstraint("scan_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    png: Mapped[bytes] = mapped_column(LargeBinary)


class AuditEvent(Base):
    """Append-only trail: who viewed/exported which patient, every refused comparison, imports."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_action_occurred_at", "action", "occurred_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))  # a username, or "system"
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id", ondelete="SET NULL"), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class WebSession(Base):
    """A signed-in browser. The cookie carries a random secret; only its SHA-256 is kept here, so
    the server can end a session (sign-out, password change, account disabled, timeouts) instead
    of trusting a signed cookie until it expires."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class LoginFailure(Base):
    """A failed sign-in, kept for the throttle: by the name typed (lower-cased, whether or not such
    a user exists) and by the client address. Rows older than the throttle window are pruned."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_username_at", "username", "occurred_at"),
        Index("ix_login_failures_address_at", "address", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(128))
    address: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
