"""One patient: exams with machines and measurements, comparisons, therapies, next scan and open
alerts, read in a few plain-column queries. Whether two exams are on one machine is asked of
`monitor.identity`, as the comparisons do, so the charts never join what the evaluation refused.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from sqlalchemy import BindParameter, bindparam, select, text
from sqlalchemy.orm import Session

from db.converters import phrases_from_json
from db.models import AlertRow, ComparisonRow, Device, Exam, Measurement, NextScanRow, Patient, TherapyRow
from db.patients import AmbiguousPatient, find_patient
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


def _exam_views(rows: list[Any] | tuple[Any, ...]) -> list[ExamView]:
    """The patient's exams in date order, each with its device and measurements, from the rows of
    `_EXAMS` (one per measurement, exam columns repeated).

    Plain columns rather than ORM objects: building and tracking entities for every measurement
    cost more than the whole query on a patient followed for years.
    """
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


class _PatientRow(NamedTuple):
    pk: int
    identifier: str
    issuer: str
    name: str | None
    birth_date: date | None
    sex: str | None


class _Rows(NamedTuple):
    """The page's rows, one list per table, in the column order of `_EXAMS`, `_COMPARISONS`..."""

    exams: list[Any]
    comparisons: list[Any]
    therapies: list[Any]
    next_scan: Any | None
    live_alerts: list[Any]


def patient_detail(session: Session, patient: Patient) -> PatientDetail:
    """Everything the patient page shows, in one query per table. Plain columns through the
    session's connection: the ORM's statement handling costs more than these short reads."""
    connection = session.connection()
    params = {"patient_pk": patient.id}
    rows = _Rows(
        exams=list(connection.execute(_EXAMS, params)),
        comparisons=list(connection.execute(_COMPARISONS, params)),
        therapies=list(connection.execute(_THERAPIES, params)),
        next_scan=connection.execute(_NEXT_SCAN, params).first(),
        live_alerts=list(connection.execute(_LIVE_ALERTS, params)),
    )
    head = _PatientRow(patient.id, patient.identifier, patient.issuer, patient.name, patient.birth_date, patient.sex)
    return _detail(head, rows)


def _detail(patient: _PatientRow, rows: _Rows) -> PatientDetail:
    exams = _exam_views(rows.exams)
    exam_views = {exam.pk: exam for exam in exams}
    comparisons = []
    for (
        site,
        side,
        from_exam_id,
        to_exam_id,
        reference,
        status,
        delta,
        percent,
        lsc,
        lsc_source,
        significance,
        dissimilar,
        reason,
        notes,
    ) in rows.comparisons:
        src, dst = exam_views.get(from_exam_id), exam_views.get(to_exam_id)
        if src is None or dst is None:
            continue
        measured = dst.measurement(site, side)
        provenance = measured.provenance if measured is not None else {}
        comparisons.append(
            ComparisonView(
                site=site,
                side=side,
                from_exam=src.exam_id,
                to_exam=dst.exam_id,
                from_date=src.date,
                to_date=dst.date,
                from_device=src.device.label,
                to_device=dst.device.label,
                reference=reference,
                status=status,
                delta_g_cm2=delta,
                percent_change=percent,
                lsc_g_cm2=lsc,
                lsc_source=lsc_source,
                significance=significance,
                dissimilar=dissimilar,
                reason=reason,
                vendor_percent_change=vendor_change(provenance, reference),
                notes=phrases_from_json(notes),
            )
        )
    therapies = tuple(TherapyView(*row) for row in rows.therapies)
    nxt = None
    if rows.next_scan is not None:
        due, rule_id, reason, alerts, who_category, z_below_expected = rows.next_scan
        nxt = NextScanView(
            due=due,
            rule_id=rule_id,
            reason=reason,
            alerts=tuple(a if isinstance(a, dict) else {"code": str(a), "message": str(a)} for a in alerts),
            who_category=who_category,
            z_below_expected=z_below_expected,
        )
    live_alerts = tuple(LiveAlert(*row) for row in rows.live_alerts)
    open_alerts = tuple(
        {"code": a.code, "message": a.message, "raised_at": a.raised_at.date().isoformat()}
        for a in live_alerts
        if a.state == "open"
    )
    return PatientDetail(
        pk=patient.pk,
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


# On PostgreSQL the page reads the patient and its five tables in ONE statement, each table
# aggregated to a JSON array in the order the separate queries above return it (issue 13: the
# five round trips and their statement handling cost several times the reads themselves). JSON
# brings dates as ISO text, put back below; doubles travel as text, since JSON would turn -0.0
# (a T-score of "-0.0") into 0 and 1.0 into an integer. PostgreSQL 12 and later print doubles
# exactly (shortest round-trip digits), so the page shows the same numbers.
_PAGE_SELECT = """
SELECT p.id, p.identifier, p.issuer, p.name, p.birth_date, p.sex,
  (SELECT json_agg(json_build_array(e.id, e.exam_date, e.software_version, e.source, d.id, d.manufacturer,
          d.model, d.serial, d.identity_strength, m.site, m.side, m.bmd::text, m.t_score::text, m.z_score::text,
          m.provenance)
          ORDER BY e.exam_date, e.id, m.site, m.side)
     FROM exams e JOIN devices d ON d.id = e.device_id LEFT JOIN measurements m ON m.exam_id = e.id
    WHERE e.patient_id = p.id),
  (SELECT json_agg(json_build_array(c.site, c.side, c.from_exam_id, c.to_exam_id, c.reference, c.status,
          c.delta_g_cm2::text, c.percent_change::text, c.lsc_g_cm2::text, c.lsc_source, c.significance,
          c.dissimilar, c.reason, c.notes) ORDER BY c.position)
     FROM comparisons c WHERE c.patient_id = p.id),
  (SELECT json_agg(json_build_array(t.id, t.agent, t.drug_class, t.start_date, t.stop_date, t.glucocorticoid)
          ORDER BY t.start_date)
     FROM therapies t WHERE t.patient_id = p.id),
  (SELECT json_build_array(n.due, n.rule_id, n.reason, n.alerts, n.who_category, n.z_below_expected)
     FROM next_scans n WHERE n.patient_id = p.id),
  (SELECT json_agg(json_build_array(a.id, a.code, a.message, a.state, a.raised_at, a.acknowledged_at,
          a.acknowledged_by, a.ack_comment, a.phrase) ORDER BY a.id)
     FROM alerts a WHERE a.patient_id = p.id AND a.state IN ('open', 'acknowledged'))
FROM patients p WHERE p.identifier = :identifier"""
_PAGE_ANY_ISSUER = text(_PAGE_SELECT + " LIMIT 10")
_PAGE_OF_ISSUER = text(_PAGE_SELECT + " AND p.issuer = :issuer LIMIT 10")


def read_patient(session: Session, identifier: str, issuer: str | None) -> PatientDetail | None:
    """The patient an identifier names (`db.patients.find_patient`'s rule: any issuer unless one
    is given, `AmbiguousPatient` when several have it) with everything its page shows; None when
    there is no such patient. One statement on PostgreSQL, one per table elsewhere."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        patient = find_patient(session, identifier, issuer)
        return patient_detail(session, patient) if patient is not None else None
    params = {"identifier": identifier.strip()}
    if issuer is not None:
        params["issuer"] = issuer.strip()
    found = connection.execute(_PAGE_ANY_ISSUER if issuer is None else _PAGE_OF_ISSUER, params).all()
    if len(found) > 1:
        raise AmbiguousPatient(sorted(row[2] for row in found))
    if not found:
        return None
    pk, identifier, issuer, name, birth, sex, exams, comparisons, therapies, next_scan, alerts = found[0]
    rows = _Rows(
        exams=[
            (e[0], _day(e[1]), *e[2:11], _double(e[11]), _double(e[12]), _double(e[13]), e[14]) for e in exams or ()
        ],
        comparisons=[(*c[:6], _double(c[6]), _double(c[7]), _double(c[8]), *c[9:]) for c in comparisons or ()],
        therapies=[(*t[:3], _day(t[3]), _day(t[4]), t[5]) for t in therapies or ()],
        next_scan=(_day(next_scan[0]), *next_scan[1:]) if next_scan is not None else None,
        live_alerts=[(*a[:4], _moment(a[4]), _moment(a[5]), *a[6:]) for a in alerts or ()],
    )
    return _detail(_PatientRow(pk, identifier, issuer, name, birth, sex), rows)


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value is not None else None


def _double(value: str | None) -> float | None:
    return float(value) if value is not None else None


def _moment(value: str | None) -> datetime | None:
    """A timestamptz as JSON text, in UTC as `db.models.UtcDateTime` returns it."""
    return datetime.fromisoformat(value).astimezone(UTC) if value is not None else None
