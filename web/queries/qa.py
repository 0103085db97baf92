"""The QA pages: refused comparisons, machines with their precision studies and
cross-calibrations, and recently received files."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased, selectinload

from db.converters import phrases_from_json
from db.models import (
    ComparisonRow,
    CrossCalibrationRow,
    Device,
    Exam,
    Job,
    Patient,
    PrecisionMeasurement,
    PrecisionStudy,
    SourceFile,
)
from monitor.model import Phrase
from web.queries.patient import DeviceView


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
    notes: tuple[Phrase, ...] = ()  # `reason` as phrases, for the reader's language (web.phrases)


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
            notes=phrases_from_json(row.notes),
        )
        for row, ident, issuer, d_from, d_to, a, b in rows
    ]


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


@dataclass(frozen=True)
class RefusedTally:
    """How many refused comparisons involve one machine, per year of the later exam."""

    device: DeviceView
    years: tuple[tuple[int, int], ...]  # (year, count), latest year first


def refused_by_machine_and_year(session: Session) -> list[RefusedTally]:
    """The refused comparisons counted per machine involved (either exam's) and per year of the
    later exam: the QA page's one-click way to "every refusal on machine X in year Y"."""
    src, dst = aliased(Exam), aliased(Exam)
    year = func.extract("year", dst.exam_date)
    refused = ComparisonRow.status.in_(("rejected_cross_machine", "rejected_unknown_machine"))
    counts: dict[tuple[int, int], int] = defaultdict(int)
    for side, extra in ((dst.device_id, None), (src.device_id, src.device_id != dst.device_id)):
        stmt = (
            select(side, year, func.count())
            .select_from(ComparisonRow)
            .join(src, src.id == ComparisonRow.from_exam_id)
            .join(dst, dst.id == ComparisonRow.to_exam_id)
            .where(refused)
            .group_by(side, year)
        )
        if extra is not None:
            stmt = stmt.where(extra)
        for device_pk, found_year, n in session.execute(stmt):
            counts[(int(device_pk), int(found_year))] += int(n)
    devices = {d.pk: d for d in all_devices(session)}
    tallies = []
    for pk, device in devices.items():
        years = sorted(((y, n) for (d, y), n in counts.items() if d == pk), reverse=True)
        if years:
            tallies.append(RefusedTally(device, tuple(years)))
    return tallies


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
