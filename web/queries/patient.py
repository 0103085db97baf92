"""One patient: exams with machines and measurements, comparisons, therapies, next scan and open
alerts, read in a few plain-column queries. Whether two exams are on one machine is asked of
`monitor.identity`, as the comparisons do, so the charts never join what the evaluation refused.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

from sqlalchemy import BindParameter, bindparam, select
from sqlalchemy.orm import Session

from db.converters import phrases_from_json
from db.models import AlertRow, ComparisonRow, Device, Exam, Measurement, NextScanRow, Patient, TherapyRow
from monitor.identity import machine_key
from monitor.model import Machine, Phrase

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
    source: str = "file"  # "ocr": read from a scan and confirmed by a person (issue 14)

    def measurement(self, site: str, side: str | None) -> MeasurementView | None:
        """The exam's value at one site and side, None when that site was not measured."""
        return next((m for m in self.measurements if m.site == site and m.side == side), None)


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
    notes: tuple[Phrase, ...] = ()  # `reason` as phrases, for the reader's language (web.phrases)

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


class LiveAlert(NamedTuple):
    """An alert row still raised (open or acknowledged): read once with the patient, for the page's
    alert list and the API's open alerts alike."""

    id: int
    code: str
    message: str
    state: str
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    ack_comment: str | None
    phrase: dict[str, Any] | None


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
    live_alerts: tuple[LiveAlert, ...] = ()  # open and acknowledged, by id (web.alerts words them)


def _machine_key(manufacturer: str, model: str, serial: str | None, exam_pk: int) -> str:
    """Equal for two exams exactly when `monitor.identity` calls their machines the same; a machine
    without a serial is never the same as anything, not even itself."""
    key = machine_key(Machine(manufacturer, model, serial))
    return "machine:" + "|".join(key) if key is not None else f"weak-exam{exam_pk}"


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


# The page's statements, built once: constructing a statement and its cache key on every request
# cost about as much as running it (issue 13).
_PATIENT: BindParameter[int] = bindparam("patient_pk")
_EXAMS = (
    select(
        Exam.id,
        Exam.exam_date,
        Exam.software_version,
        Exam.source,
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
    .where(Exam.patient_id == _PATIENT)
    .order_by(Exam.exam_date, Exam.id, Measurement.site, Measurement.side)
)
_COMPARISONS = (
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
        ComparisonRow.notes,
    )
    .where(ComparisonRow.patient_id == _PATIENT)
    .order_by(ComparisonRow.position)
)
_THERAPIES = (
    select(
        TherapyRow.id,
        TherapyRow.agent,
        TherapyRow.drug_class,
        TherapyRow.start_date,
        TherapyRow.stop_date,
        TherapyRow.glucocorticoid,
    )
    .where(TherapyRow.patient_id == _PATIENT)
    .order_by(TherapyRow.start_date)
)
_NEXT_SCAN = select(
    NextScanRow.due,
    NextScanRow.rule_id,
    NextScanRow.reason,
    NextScanRow.alerts,
    NextScanRow.who_category,
    NextScanRow.z_below_expected,
).where(NextScanRow.patient_id == _PATIENT)
_LIVE_ALERTS = (
    select(
        AlertRow.id,
        AlertRow.code,
        AlertRow.message,
        AlertRow.state,
        AlertRow.raised_at,
        AlertRow.acknowledged_at,
        AlertRow.acknowledged_by,
        AlertRow.ack_comment,
        AlertRow.phrase,
    )
    .where(AlertRow.patient_id == _PATIENT, AlertRow.state.in_(("open", "acknowledged")))
    .order_by(AlertRow.id)
)


def _exam_views(session: Session, patient_pk: int) -> list[ExamView]:
    """The patient's exams in date order, each with its device and measurements, in one query.

    Plain columns rather than ORM objects: building and tracking entities for every measurement
    cost more than the whole query on a patient followed for years.
    """
    rows = session.connection().execute(_EXAMS, {"patient_pk": patient_pk}).all()
    heads: dict[int, tuple[Any, ...]] = {}
    measurements: dict[int, list[MeasurementView]] = defaultdict(list)
    for exam_pk, day, software, source, device_pk, maker, model, serial, strength, site, side, bmd, t, z, prov in rows:
        heads.setdefault(exam_pk, (day, software, device_pk, maker, model, serial, strength, source))
        if site is not None:
            measurements[exam_pk].append(MeasurementView(site, side, bmd, t, z, dict(prov or {})))
    return [
        ExamView(
            pk=exam_pk,
            exam_id=str(exam_pk),
            date=day,
            device=DeviceView(device_pk, maker, model, serial),
            machine_key=_machine_key(maker, model, serial, exam_pk),
            measurements=tuple(measurements[exam_pk]),
            software_version=software,
            source=source or "file",
        )
        for exam_pk, (day, software, device_pk, maker, model, serial, strength, source) in heads.items()
    ]


def patient_detail(session: Session, patient: Patient) -> PatientDetail:
    """Everything the patient page shows, in one query per table. Plain columns through the
    session's connection: the ORM's statement handling costs more than these short reads."""
    exams = _exam_views(session, patient.id)
    connection = session.connection()
    exam_views = {exam.pk: exam for exam in exams}
    comparisons = []
    for row in connection.execute(_COMPARISONS, {"patient_pk": patient.id}):
        src, dst = exam_views.get(row.from_exam_id), exam_views.get(row.to_exam_id)
        if src is None or dst is None:
            continue
        measured = dst.measurement(row.site, row.side)
        provenance = measured.provenance if measured is not None else {}
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
                notes=phrases_from_json(row.notes),
            )
        )
    therapies = tuple(TherapyView(*row) for row in connection.execute(_THERAPIES, {"patient_pk": patient.id}))
    nxt_row = connection.execute(_NEXT_SCAN, {"patient_pk": patient.id}).first()
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
    live_alerts = tuple(LiveAlert(*row) for row in connection.execute(_LIVE_ALERTS, {"patient_pk": patient.id}))
    open_alerts = tuple(
        {"code": a.code, "message": a.message, "raised_at": a.raised_at.date().isoformat()}
        for a in live_alerts
        if a.state == "open"
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
        live_alerts=live_alerts,
    )
