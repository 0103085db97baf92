"""Database reads behind the web pages and API, as plain dataclasses (writes are use cases of
`services`).

Routes stay thin: each one calls a function here and renders or serialises what it returns. The
shapes mirror the JSON export object so the pages, the JSON API and the exports agree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased, selectinload

from db.models import (
    AlertRow,
    ComparisonRow,
    CrossCalibrationRow,
    Device,
    Exam,
    Job,
    Measurement,
    NextScanRow,
    Patient,
    PrecisionMeasurement,
    PrecisionStudy,
    SourceFile,
    TherapyRow,
    User,
)
from web.latest_change import SiteChange, latest_changes

PAGE_SIZE = 50


# --------------------------------------------------------------------------- users, tokens, audit


def user_by_id(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


# --------------------------------------------------------------------------- patients list


@dataclass(frozen=True)
class PatientSummary:
    pk: int
    patient_id: str
    issuer: str
    name: str | None
    last_exam: date | None
    who_category: str | None
    latest_change: str | None
    latest_significance: str | None
    next_due: date | None
    overdue: bool
    open_alerts: int
    changes: tuple[SiteChange, ...] = ()  # per primary site, the latest comparison's verdict


def _conditions(q: str, overdue: bool, alerts: bool, today: date) -> list[ColumnElement[bool]]:
    """The filters of the patients list, as conditions on `Patient`.

    The search is a case-insensitive substring of the identifier or the name. On PostgreSQL,
    migration 0002 adds trigram indexes on exactly these `lower(...)` expressions when pg_trgm is
    available, so the search does not read all patients; elsewhere it is a scan.
    """
    conditions: list[ColumnElement[bool]] = []
    text = q.strip()
    if text:
        like = f"%{text.lower()}%"
        conditions.append(or_(func.lower(Patient.identifier).like(like), func.lower(Patient.name).like(like)))
    if overdue:
        conditions.append(
            select(NextScanRow.patient_id).where(NextScanRow.patient_id == Patient.id, NextScanRow.due < today).exists()
        )
    if alerts:
        conditions.append(_has_open_alert(Patient.id))
    return conditions


def _has_open_alert(patient_id: ColumnElement[int] | InstrumentedAttribute[int]) -> ColumnElement[bool]:
    return select(AlertRow.id).where(AlertRow.patient_id == patient_id, AlertRow.state == "open").exists()


def _count_patients(session: Session, q: str, overdue: bool, alerts: bool, today: date) -> int:
    """How many patients pass the filters, counted from the table that narrows them most.

    Counting `patients` joined to the filters makes the database hash-join all 100 000 patients
    for an overdue or alerts count; counting the overdue next scans (index on next_scans (due,
    patient_id)) or the patients with an open alert (index on alerts (patient_id, state)) reads
    only those indexes. A search narrows most, so with one the count starts from the matches.
    """
    if overdue and not q.strip():
        stmt = select(func.count()).select_from(NextScanRow).where(NextScanRow.due < today)
        if alerts:
            stmt = stmt.where(_has_open_alert(NextScanRow.patient_id))
    elif alerts and not q.strip():
        stmt = select(func.count(AlertRow.patient_id.distinct())).where(AlertRow.state == "open")
    else:
        stmt = select(func.count()).select_from(Patient).where(*_conditions(q, overdue, alerts, today))
    return session.scalar(stmt) or 0


def list_patients(
    session: Session,
    *,
    today: date,
    q: str = "",
    overdue: bool = False,
    alerts: bool = False,
    page: int = 1,
    page_size: int = PAGE_SIZE,
) -> tuple[list[PatientSummary], int]:
    """One page of patients (by identifier) with the columns of the patients page, and the total.

    The page is chosen on `patients` alone, walking its (identifier, issuer, id) index, and only
    its rows are then joined to their next scan, last exam and open alerts: joining first would
    make the database join every patient before the OFFSET of a deep page.
    """
    total = _count_patients(session, q, overdue, alerts, today)
    chosen = (
        select(Patient.id, Patient.identifier, Patient.issuer)
        .where(*_conditions(q, overdue, alerts, today))
        .order_by(Patient.identifier, Patient.issuer)
        .limit(page_size)
        .offset((max(page, 1) - 1) * page_size)
        .subquery()
    )
    last_exam = select(func.max(Exam.exam_date)).where(Exam.patient_id == chosen.c.id).scalar_subquery()
    open_alerts = (
        select(func.count())
        .select_from(AlertRow)
        .where(AlertRow.patient_id == chosen.c.id, AlertRow.state == "open")
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Patient.id,
            Patient.identifier,
            Patient.issuer,
            Patient.name,
            NextScanRow.due,
            NextScanRow.who_category,
            last_exam,
            open_alerts,
        )
        .select_from(chosen)
        .join(Patient, Patient.id == chosen.c.id)
        .outerjoin(NextScanRow, NextScanRow.patient_id == chosen.c.id)
        .order_by(chosen.c.identifier, chosen.c.issuer)
    ).all()
    if not rows:
        return [], total
    changes = latest_changes(session, [row.id for row in rows])
    result = []
    for pk, identifier, issuer, name, due, who, last, alert_count in rows:
        sites = changes.get(pk, ())
        change = _headline(sites)
        result.append(
            PatientSummary(
                pk=pk,
                patient_id=identifier,
                issuer=issuer,
                name=name,
                last_exam=last,
                who_category=who,
                latest_change=change[0] if change else None,
                latest_significance=change[1] if change else None,
                next_due=due,
                overdue=due is not None and due < today,
                open_alerts=alert_count or 0,
                changes=sites,
            )
        )
    return result, total


def _headline(sites: tuple[SiteChange, ...]) -> tuple[str, str] | None:
    """The first primary site's latest verdict as one text (the `latest_change` of the API)."""
    if not sites:
        return None
    c = sites[0]
    pct = f" {c.percent_change:+.2f} %" if c.percent_change is not None and not c.status.startswith("rejected") else ""
    return f"{site_label(c.site, c.side)}: {c.verdict}{pct} ({c.when.isoformat()})", c.significance or c.verdict


# --------------------------------------------------------------------------- one patient


SITE_NAMES = {
    "femoral_neck": "Femoral neck",
    "total_hip": "Total hip",
    "trochanter": "Trochanter",
    "intertrochanter": "Intertrochanter",
    "wards": "Ward's triangle",
    "radius_33": "1/3 radius",
    "radius_ud": "Ultradistal radius",
    "radius_total": "Total radius",
    "total_body": "Total body",
}


def site_label(site: str, side: str | None) -> str:
    name = SITE_NAMES.get(site, site if site.startswith("L") else site.replace("_", " "))
    if side == "mean":
        return f"{name} (mean of both sides)"
    return f"{name} ({side})" if side else name


@dataclass(frozen=True)
class DeviceView:
    pk: int
    manufacturer: str
    model: str
    serial: str | None

    @property
    def label(self) -> str:
        return f"{self.manufacturer} {self.model} ({'S/N ' + self.serial if self.serial else 'no serial'})"


@dataclass(frozen=True)
class MeasurementView:
    site: str
    side: str | None
    bmd: float
    t_score: float | None
    z_score: float | None
    provenance: dict[str, Any]


@dataclass(frozen=True)
class ExamView:
    pk: int
    exam_id: str
    date: date
    device: DeviceView
    machine_key: str  # equal only for exams on the very same serial-identified machine
    measurements: tuple[MeasurementView, ...]
    software_version: str | None


@dataclass(frozen=True)
class ComparisonView:
    site: str
    side: str | None
    from_exam: str
    to_exam: str
    from_date: date
    to_date: date
    from_device: str
    to_device: str
    reference: str
    status: str
    delta_g_cm2: float | None
    percent_change: float | None
    lsc_g_cm2: float | None
    lsc_source: str | None
    significance: str | None
    dissimilar: bool
    reason: str | None
    vendor_percent_change: float | None = None

    @property
    def refused(self) -> bool:
        return self.status.startswith("rejected")


@dataclass(frozen=True)
class TherapyView:
    pk: int
    agent: str
    drug_class: str
    start: date
    stop: date | None
    glucocorticoid: bool


@dataclass(frozen=True)
class NextScanView:
    due: date | None
    rule_id: str | None
    reason: str
    alerts: tuple[dict[str, Any], ...]
    who_category: str | None
    z_below_expected: bool


@dataclass(frozen=True)
class PatientDetail:
    pk: int
    patient_id: str
    issuer: str
    name: str | None
    birth_date: date | None
    sex: str | None
    exams: tuple[ExamView, ...]
    comparisons: tuple[ComparisonView, ...]
    therapies: tuple[TherapyView, ...]
    next_scan: NextScanView | None
    open_alerts: tuple[dict[str, Any], ...] = field(default_factory=tuple)


def _machine_key(device_pk: int, identity_strength: str, serial: str | None, exam_pk: int) -> str:
    # A device without serial is never "the same machine" as anything, not even itself.
    return f"d{device_pk}" if identity_strength == "serial" and serial else f"weak-exam{exam_pk}"


def vendor_change(provenance: dict[str, Any], reference: str) -> float | None:
    """The vendor's printed % change for this measurement, when ingestion kept it.

    Expected under `provenance["vendor_change_pct"] = {"baseline": x, "previous": y}`; absent
    until ingestion stores it there (see the report to the db/ingest owners).
    """
    printed = provenance.get("vendor_change_pct") if isinstance(provenance, dict) else None
    if isinstance(printed, dict):
        value = printed.get(reference)
        if isinstance(value, int | float):
            return float(value)
    return None


def _exam_views(session: Session, patient_pk: int) -> list[ExamView]:
    """The patient's exams in date order, each with its device and measurements, in one query.

    Plain columns rather than ORM objects: building and tracking entities for every measurement
    cost more than the whole query on a patient followed for years.
    """
    rows = session.execute(
        select(
            Exam.id,
            Exam.exam_date,
            Exam.software_version,
            Device.id,
            Device.manufacturer,
            Device.model,
            Device.serial,
            Device.identity_strength,
            Measurement.site,
            Measurement.side,
            Measurement.bmd,
            Measurement.t_score,
            Measurement.z_score,
            Measurement.provenance,
        )
        .join(Device, Device.id == Exam.device_id)
        .outerjoin(Measurement, Measurement.exam_id == Exam.id)
        .where(Exam.patient_id == patient_pk)
        .order_by(Exam.exam_date, Exam.id, Measurement.site, Measurement.side)
    ).all()
    heads: dict[int, tuple[Any, ...]] = {}
    measurements: dict[int, list[MeasurementView]] = defaultdict(list)
    for exam_pk, day, software, device_pk, maker, model, serial, strength, site, side, bmd, t, z, prov in rows:
        heads.setdefault(exam_pk, (day, software, device_pk, maker, model, serial, strength))
        if site is not None:
            measurements[exam_pk].append(MeasurementView(site, side, bmd, t, z, dict(prov or {})))
    return [
        ExamView(
            pk=exam_pk,
            exam_id=str(exam_pk),
            date=day,
            device=DeviceView(device_pk, maker, model, serial),
            machine_key=_machine_key(device_pk, strength, serial, exam_pk),
            measurements=tuple(measurements[exam_pk]),
            software_version=software,
        )
        for exam_pk, (day, software, device_pk, maker, model, serial, strength) in heads.items()
    ]


def patient_detail(session: Session, patient: Patient) -> PatientDetail:
    exams = _exam_views(session, patient.id)
    exam_views = {exam.pk: exam for exam in exams}
    comparisons = []
    for row in session.execute(
        select(
            ComparisonRow.site,
            ComparisonRow.side,
            ComparisonRow.from_exam_id,
            ComparisonRow.to_exam_id,
            ComparisonRow.reference,
            ComparisonRow.status,
            ComparisonRow.delta_g_cm2,
            ComparisonRow.percent_change,
            ComparisonRow.lsc_g_cm2,
            ComparisonRow.lsc_source,
            ComparisonRow.significance,
            ComparisonRow.dissimilar,
            ComparisonRow.reason,
        )
        .where(ComparisonRow.patient_id == patient.id)
        .order_by(ComparisonRow.position)
    ):
        src, dst = exam_views.get(row.from_exam_id), exam_views.get(row.to_exam_id)
        if src is None or dst is None:
            continue
        provenance = next((m.provenance for m in dst.measurements if m.site == row.site and m.side == row.side), {})
        vendor = vendor_change(provenance, row.reference)
        comparisons.append(
            ComparisonView(
                site=row.site,
                side=row.side,
                from_exam=src.exam_id,
                to_exam=dst.exam_id,
                from_date=src.date,
                to_date=dst.date,
                from_device=src.device.label,
                to_device=dst.device.label,
                reference=row.reference,
                status=row.status,
                delta_g_cm2=row.delta_g_cm2,
                percent_change=row.percent_change,
                lsc_g_cm2=row.lsc_g_cm2,
                lsc_source=row.lsc_source,
                significance=row.significance,
                dissimilar=row.dissimilar,
                reason=row.reason,
                vendor_percent_change=vendor,
            )
        )
    therapies = tuple(
        TherapyView(*row)
        for row in session.execute(
            select(
                TherapyRow.id,
                TherapyRow.agent,
                TherapyRow.drug_class,
                TherapyRow.start_date,
                TherapyRow.stop_date,
                TherapyRow.glucocorticoid,
            )
            .where(TherapyRow.patient_id == patient.id)
            .order_by(TherapyRow.start_date)
        )
    )
    nxt_row = session.execute(
        select(
            NextScanRow.due,
            NextScanRow.rule_id,
            NextScanRow.reason,
            NextScanRow.alerts,
            NextScanRow.who_category,
            NextScanRow.z_below_expected,
        ).where(NextScanRow.patient_id == patient.id)
    ).first()
    nxt = (
        NextScanView(
            due=nxt_row.due,
            rule_id=nxt_row.rule_id,
            reason=nxt_row.reason,
            alerts=tuple(a if isinstance(a, dict) else {"code": str(a), "message": str(a)} for a in nxt_row.alerts),
            who_category=nxt_row.who_category,
            z_below_expected=nxt_row.z_below_expected,
        )
        if nxt_row
        else None
    )
    open_alerts = tuple(
        {"code": code, "message": message, "raised_at": raised_at.date().isoformat()}
        for code, message, raised_at in session.execute(
            select(AlertRow.code, AlertRow.message, AlertRow.raised_at)
            .where(AlertRow.patient_id == patient.id, AlertRow.state == "open")
            .order_by(AlertRow.id)
        )
    )
    return PatientDetail(
        pk=patient.id,
        patient_id=patient.identifier,
        issuer=patient.issuer,
        name=patient.name,
        birth_date=patient.birth_date,
        sex=patient.sex,
        exams=tuple(exams),
        comparisons=tuple(comparisons),
        therapies=therapies,
        next_scan=nxt,
        open_alerts=open_alerts,
    )


# --------------------------------------------------------------------------- worklist


@dataclass(frozen=True)
class WorklistItem:
    patient_id: str
    name: str | None
    due: date
    overdue: bool
    rule_id: str | None
    reason: str
    last_exam: date | None
    issuer: str = ""  # for the link only (the JSON and CSV columns are fixed by web.routes.worklist)


def worklist(
    session: Session, *, today: date, start: date, end: date, include_overdue: bool = True, limit: int = 5000
) -> list[WorklistItem]:
    """Scans due between `start` and `end`, plus every overdue one when asked, soonest first."""
    window = and_(NextScanRow.due >= start, NextScanRow.due <= end)
    cond = or_(window, NextScanRow.due < today) if include_overdue else window
    # per listed patient (index on exams (patient_id, exam_date, ...)), not grouped over every exam
    last_exam = select(func.max(Exam.exam_date)).where(Exam.patient_id == Patient.id).scalar_subquery()
    rows = session.execute(
        select(Patient, NextScanRow, last_exam)
        .join(NextScanRow, NextScanRow.patient_id == Patient.id)
        .where(NextScanRow.due.is_not(None), cond)
        .order_by(NextScanRow.due, Patient.identifier)
        .limit(limit)
    ).all()
    return [
        WorklistItem(p.identifier, p.name, n.due, n.due < today, n.rule_id, n.reason, last, p.issuer)
        for p, n, last in rows
        if n.due is not None
    ]


# --------------------------------------------------------------------------- QA: refused comparisons


@dataclass(frozen=True)
class RefusedComparison:
    patient_id: str
    site: str
    side: str | None
    reference: str
    from_date: date
    to_date: date
    from_device: str
    to_device: str
    status: str
    reason: str | None
    issuer: str = ""  # with patient_id, names the patient unambiguously (for the link)


def refused_comparisons(
    session: Session,
    *,
    device_pk: int | None = None,
    start: date | None = None,
    end: date | None = None,
    status: str | None = None,
    limit: int = 5000,
) -> list[RefusedComparison]:
    src, dst = aliased(Exam), aliased(Exam)
    dev_a, dev_b = aliased(Device), aliased(Device)
    stmt = (
        select(ComparisonRow, Patient.identifier, Patient.issuer, src.exam_date, dst.exam_date, dev_a, dev_b)
        .join(Patient, Patient.id == ComparisonRow.patient_id)
        .join(src, src.id == ComparisonRow.from_exam_id)
        .join(dst, dst.id == ComparisonRow.to_exam_id)
        .join(dev_a, dev_a.id == src.device_id)
        .join(dev_b, dev_b.id == dst.device_id)
        .where(ComparisonRow.status.in_(("rejected_cross_machine", "rejected_unknown_machine")))
    )
    if device_pk is not None:
        stmt = stmt.where(or_(src.device_id == device_pk, dst.device_id == device_pk))
    if status is not None:
        stmt = stmt.where(ComparisonRow.status == status)
    if start is not None:
        stmt = stmt.where(dst.exam_date >= start)
    if end is not None:
        stmt = stmt.where(dst.exam_date <= end)
    rows = session.execute(
        stmt.order_by(dst.exam_date.desc(), Patient.identifier, ComparisonRow.position).limit(limit)
    ).all()
    return [
        RefusedComparison(
            patient_id=ident,
            site=row.site,
            side=row.side,
            reference=row.reference,
            from_date=d_from,
            to_date=d_to,
            from_device=DeviceView(a.id, a.manufacturer, a.model, a.serial).label,
            to_device=DeviceView(b.id, b.manufacturer, b.model, b.serial).label,
            status=row.status,
            reason=row.reason,
            issuer=issuer,
        )
        for row, ident, issuer, d_from, d_to, a, b in rows
    ]


# --------------------------------------------------------------------------- QA: devices


@dataclass(frozen=True)
class StudyView:
    pk: int
    site: str
    performed_on: date | None
    rms_sd_g_cm2: float | None
    lsc_g_cm2: float | None
    technologists: tuple[str, ...]


@dataclass(frozen=True)
class CrossCalView:
    other: str
    kind: str
    sites: tuple[str, ...]
    performed_on: date | None
    lsc_g_cm2: dict[str, Any]


@dataclass(frozen=True)
class DeviceDetail:
    device: DeviceView
    identity_strength: str
    software_versions: tuple[str, ...]
    exam_count: int
    studies: tuple[StudyView, ...]
    crosscals: tuple[CrossCalView, ...]


def all_devices(session: Session) -> list[DeviceView]:
    return [
        DeviceView(d.id, d.manufacturer, d.model, d.serial)
        for d in session.scalars(select(Device).order_by(Device.manufacturer, Device.model, Device.serial))
    ]


def device_details(session: Session) -> list[DeviceDetail]:
    devices = list(session.scalars(select(Device).order_by(Device.manufacturer, Device.model, Device.serial)))
    counts = dict(session.execute(select(Exam.device_id, func.count()).group_by(Exam.device_id)).all())
    studies: dict[int, list[StudyView]] = defaultdict(list)
    for study in session.scalars(
        select(PrecisionStudy).options(selectinload(PrecisionStudy.measurements)).order_by(PrecisionStudy.site)
    ):
        studies[study.device_id].append(
            StudyView(
                study.id,
                study.site,
                study.performed_on,
                study.rms_sd_g_cm2,
                study.lsc_g_cm2,
                tuple(sorted({m.technologist for m in study.measurements})),
            )
        )
    crosscals: dict[int, list[CrossCalView]] = defaultdict(list)
    for cc in session.scalars(select(CrossCalibrationRow)):
        a = DeviceView(cc.device_a.id, cc.device_a.manufacturer, cc.device_a.model, cc.device_a.serial)
        b = DeviceView(cc.device_b.id, cc.device_b.manufacturer, cc.device_b.model, cc.device_b.serial)
        crosscals[a.pk].append(CrossCalView(b.label, cc.kind, tuple(cc.sites), cc.performed_on, dict(cc.lsc_g_cm2)))
        crosscals[b.pk].append(CrossCalView(a.label, cc.kind, tuple(cc.sites), cc.performed_on, dict(cc.lsc_g_cm2)))
    return [
        DeviceDetail(
            device=DeviceView(d.id, d.manufacturer, d.model, d.serial),
            identity_strength=d.identity_strength,
            software_versions=tuple(d.software_versions or ()),
            exam_count=counts.get(d.id, 0),
            studies=tuple(studies.get(d.id, ())),
            crosscals=tuple(crosscals.get(d.id, ())),
        )
        for d in devices
    ]


def precision_repeats(session: Session, study_pk: int) -> list[tuple[str, str, int, float]]:
    return [
        (m.technologist, m.patient_code, m.scan_index, m.bmd)
        for m in session.scalars(select(PrecisionMeasurement).where(PrecisionMeasurement.study_id == study_pk))
    ]


# --------------------------------------------------------------------------- QA: ingest


@dataclass(frozen=True)
class FileView:
    pk: int
    name: str
    format: str | None
    status: str
    reason_code: str | None
    reason_text: str | None
    received_at: datetime
    attempts: int
    job_state: str | None


def recent_files(session: Session, *, status: str | None = None, limit: int = 200) -> list[FileView]:
    latest_job = (
        select(Job.source_file_id, func.max(Job.id).label("job_id"))
        .where(Job.kind == "ingest_file")
        .group_by(Job.source_file_id)
        .subquery()
    )
    stmt = (
        select(SourceFile, Job.state)
        .outerjoin(latest_job, latest_job.c.source_file_id == SourceFile.id)
        .outerjoin(Job, Job.id == latest_job.c.job_id)
    )
    if status:
        stmt = stmt.where(SourceFile.status == status)
    rows = session.execute(stmt.order_by(SourceFile.received_at.desc(), SourceFile.id.desc()).limit(limit)).all()
    return [
        FileView(
            f.id,
            f.original_name,
            f.format,
            f.status,
            f.reason_code,
            f.reason_text,
            f.received_at,
            f.attempts,
            s,
        )
        for f, s in rows
    ]


# --------------------------------------------------------------------------- health


def database_answers(session: Session) -> bool:
    session.execute(select(1))
    return True
