"""A patient's history for the monitor, and the monitor's verdict stored back atomically.

`load_patient_history` gives everything `evaluate_patient` needs in monitor types (exam ids
are the string of the database id). `save_evaluation` replaces the patient's comparisons and
next scan in the caller's transaction, keeps alerts open while they are raised, and writes an
audit event for each refused comparison the first time it is refused, so re-running an
evaluation leaves the same rows.

Both work on a batch of patients too (`load_histories`, `save_evaluations`: the runners' batches,
the daily refresh's chunks), in a fixed number of statements for the batch; one patient is a
batch of one, so both paths save the same rows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, exists, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from db.calibration import PrecisionCalculator, load_cross_calibrations, load_site_lscs
from db.converters import (
    PlainRow,
    alerts_to_json,
    comparison_to_domain,
    comparison_values,
    exam_id_str,
    exam_to_domain,
    measurement_from_columns,
)
from db.models import AlertRow, AuditEvent, ComparisonRow, Device, NextScanRow, Patient, utcnow
from db.models import Exam as ExamRow
from db.models import Measurement as MeasurementRow
from db.patients import lock_patients
from db.therapies import load_therapies_of
from db.vendor_lsc import load_vendor_lscs
from monitor.model import (
    Alert,
    Comparison,
    CrossCalibration,
    Exam,
    Machine,
    PatientEvaluation,
    SiteLsc,
    Therapy,
    VendorLsc,
)
from monitor.phrases import to_data

REFUSED_COMPARISON = "comparison_refused"
_REJECTED = ("rejected_cross_machine", "rejected_unknown_machine")


@dataclass(frozen=True)
class PatientHistory:
    patient_id: int
    identifier: str
    birth_date: date | None
    sex: str | None
    exams: tuple[Exam, ...]
    therapies: tuple[Therapy, ...]
    lscs: tuple[SiteLsc, ...]
    cross_calibrations: tuple[CrossCalibration, ...]
    vendor_lscs: tuple[VendorLsc, ...] = ()


def exam_rows(session: Session, patient_id: int) -> list[ExamRow]:
    return list(
        session.scalars(
            select(ExamRow)
            .where(ExamRow.patient_id == patient_id)
            .options(selectinload(ExamRow.measurements))
            .order_by(ExamRow.exam_date, ExamRow.id)
        )
    )


def load_exams(session: Session, patient_id: int) -> tuple[Exam, ...]:
    return tuple(exam_to_domain(r) for r in exam_rows(session, patient_id))


MachineData = tuple[tuple[SiteLsc, ...], tuple[CrossCalibration, ...], tuple[VendorLsc, ...]]


def load_patient_history(
    session: Session, patient_id: int, *, precision_calculator: PrecisionCalculator | None = None
) -> PatientHistory:
    """Exams (oldest first), therapies, and the LSCs and cross-calibrations of the patient's
    machines: `load_histories` for one patient. LookupError when there is no such patient."""
    history = load_histories(session, [patient_id], precision_calculator=precision_calculator).get(patient_id)
    if history is None:
        raise LookupError("no such patient")
    return history


def load_histories(
    session: Session, patient_ids: Sequence[int], *, precision_calculator: PrecisionCalculator | None = None
) -> dict[int, PatientHistory]:
    """The history of each patient found (a batch of evaluations), in a handful of queries for
    the whole batch: the patients, their exams, the exams' measurements, their therapies, and the
    calibration data of all their machines, read once and given to each patient for its own
    machines only (what reading them per patient would give). Read as plain rows: building ORM
    objects cost more than the evaluation itself."""
    ids = list(dict.fromkeys(patient_ids))
    if not ids:
        return {}
    patients = session.execute(
        select(Patient.id, Patient.identifier, Patient.birth_date, Patient.sex).where(Patient.id.in_(ids))
    ).all()
    found = [row.id for row in patients]
    exams = session.execute(
        select(
            ExamRow.id,
            ExamRow.patient_id,
            ExamRow.exam_date,
            ExamRow.scan_mode,
            ExamRow.analysis_protocol,
            ExamRow.device_id,
            Device.manufacturer,
            Device.model,
            Device.serial,
        )
        .join(Device, Device.id == ExamRow.device_id)
        .where(ExamRow.patient_id.in_(found))
        .order_by(ExamRow.patient_id, ExamRow.exam_date, ExamRow.id)
    ).all()
    measurements: dict[int, list[PlainRow]] = {row.id: [] for row in exams}
    if exams:
        for m in session.execute(
            select(
                MeasurementRow.exam_id,
                MeasurementRow.site,
                MeasurementRow.side,
                MeasurementRow.bmd,
                MeasurementRow.t_score,
                MeasurementRow.z_score,
                MeasurementRow.area_cm2,
                MeasurementRow.provenance,
            )
            .join(ExamRow, ExamRow.id == MeasurementRow.exam_id)
            .where(ExamRow.patient_id.in_(found))
        ):
            measurements[m.exam_id].append(m)
    machines: dict[int, Machine] = {}
    by_patient: dict[int, list[Exam]] = {i: [] for i in found}
    for row in exams:
        machine = machines.get(row.device_id)
        if machine is None:
            machine = machines[row.device_id] = Machine(
                manufacturer=row.manufacturer, model=row.model, serial=row.serial
            )
        own = sorted(measurements[row.id], key=lambda m: (m.site, m.side or ""))  # as `sorted_measurements`
        by_patient[row.patient_id].append(
            Exam(
                exam_id=exam_id_str(row.id),
                date=row.exam_date,
                machine=machine,
                measurements=tuple(
                    measurement_from_columns(m.site, m.side, m.bmd, m.t_score, m.z_score, m.area_cm2, m.provenance)
                    for m in own
                ),
                scan_mode=row.scan_mode,
                analysis_protocol=row.analysis_protocol,
            )
        )
    therapies = load_therapies_of(session, found)
    calibration = _calibration_of(session, list(machines), precision_calculator)
    out: dict[int, PatientHistory] = {}
    for patient in patients:
        history = tuple(by_patient[patient.id])
        lscs, cross_calibrations, vendor_lscs = calibration({e.machine for e in history})
        out[patient.id] = PatientHistory(
            patient_id=patient.id,
            identifier=patient.identifier,
            birth_date=patient.birth_date,
            sex=patient.sex,
            exams=history,
            therapies=therapies[patient.id],
            lscs=lscs,
            cross_calibrations=cross_calibrations,
            vendor_lscs=vendor_lscs,
        )
    return out


def _calibration_of(
    session: Session, device_ids: list[int], calculator: PrecisionCalculator | None
) -> Callable[[set[Machine]], MachineData]:
    """The LSCs, cross-calibrations and vendor LSCs of a batch's machines, read once; for a set of
    those machines, what reading them for that set alone gives (the same order: each loader's
    order is by device or by row id, which a filter keeps). A machine names one device: devices
    are unique on their identity, which their (manufacturer, model, serial) determine."""
    ids = sorted(device_ids)
    lscs = load_site_lscs(session, calculator=calculator, device_ids=ids) if ids else ()
    cross_calibrations = load_cross_calibrations(session, device_ids=ids) if ids else ()
    vendor_lscs = load_vendor_lscs(session, ids)
    given: dict[frozenset[Machine], MachineData] = {}

    def of(machines: set[Machine]) -> MachineData:
        key = frozenset(machines)
        known = given.get(key)
        if known is None:
            known = given[key] = (
                tuple(lsc for lsc in lscs if lsc.machine in key),
                tuple(cc for cc in cross_calibrations if cc.machine_a in key or cc.machine_b in key),
                tuple(v for v in vendor_lscs if v.machine in key),
            )
        return known

    return of


def comparison_rows(session: Session, patient_id: int) -> list[ComparisonRow]:
    return list(
        session.scalars(
            select(ComparisonRow).where(ComparisonRow.patient_id == patient_id).order_by(ComparisonRow.position)
        )
    )


def load_comparisons(session: Session, patient_id: int) -> tuple[Comparison, ...]:
    return tuple(comparison_to_domain(r) for r in comparison_rows(session, patient_id))


def _refusal_key(c: Comparison) -> tuple[Any, ...]:
    return (c.site, c.side, c.from_exam, c.to_exam, c.reference, c.status)


def _stored_refusal_key(row: ComparisonRow | PlainRow) -> tuple[Any, ...]:
    """`_refusal_key` of a stored comparison (an ORM row or a plain row of its columns)."""
    return (row.site, row.side, exam_id_str(row.from_exam_id), exam_id_str(row.to_exam_id), row.reference, row.status)


def _all_alerts(evaluation: PatientEvaluation) -> list[Alert]:
    seen: dict[str, Alert] = {}
    for alert in (*evaluation.alerts, *evaluation.next_scan.alerts):
        seen.setdefault(alert.code, alert)
    return list(seen.values())


def save_evaluation(
    session: Session,
    patient_id: int,
    evaluation: PatientEvaluation,
    *,
    actor: str = "system",
    now: datetime | None = None,
    own_exams: Collection[str] | None = None,
) -> None:
    """Replace the patient's comparisons and next scan with `evaluation`, in the caller's
    transaction (readers see the old set or the new one, never a mix, once it commits).
    `own_exams`: the patient's exam ids as the evaluation named them, when the caller read them
    under the same lock (`load_patient_history` after `lock_patient`); else they are read here."""
    save_evaluations(session, [Verdict(patient_id, evaluation, own_exams)], actor=actor, now=now)


@dataclass(frozen=True)
class Verdict:
    """One patient's evaluation to save; `own_exams` as `save_evaluation` takes it."""

    patient_id: int
    evaluation: PatientEvaluation
    own_exams: Collection[str] | None = None


def save_evaluations(
    session: Session, verdicts: Sequence[Verdict], *, actor: str = "system", now: datetime | None = None
) -> None:
    """`save_evaluation` for a batch of patients, with the same rows as saving them one by one,
    in a fixed number of statements for the whole batch: the refused comparisons read once (a
    refusal is audited the first time only), one DELETE of the comparisons, one insert of many
    for the new ones, one upsert of many for the next scans, the live alerts read once (their
    changes flushed together). One verdict per patient."""
    if not verdicts:
        return
    moment = now or utcnow()
    ids = [v.patient_id for v in verdicts]
    if len(set(ids)) != len(ids):
        raise ValueError("one verdict per patient")
    if len(lock_patients(session, ids)) != len(ids):
        raise LookupError("no such patient")
    unknown = [v.patient_id for v in verdicts if v.own_exams is None]
    read: dict[int, set[str]] = {i: set() for i in unknown}
    if unknown:
        for pid, exam_id in session.execute(
            select(ExamRow.patient_id, ExamRow.id).where(ExamRow.patient_id.in_(unknown))
        ):
            read[pid].add(exam_id_str(exam_id))
    for v in verdicts:
        own = read[v.patient_id] if v.own_exams is None else v.own_exams
        for c in v.evaluation.comparisons:
            if c.from_exam not in own or c.to_exam not in own:
                raise ValueError("comparison names an exam that is not this patient's")

    refused_before = {
        (row.patient_id, _stored_refusal_key(row))
        for row in session.execute(
            select(
                ComparisonRow.patient_id,
                ComparisonRow.site,
                ComparisonRow.side,
                ComparisonRow.from_exam_id,
                ComparisonRow.to_exam_id,
                ComparisonRow.reference,
                ComparisonRow.status,
            ).where(ComparisonRow.patient_id.in_(ids), ComparisonRow.status.in_(_REJECTED))
        )
    }
    session.execute(delete(ComparisonRow).where(ComparisonRow.patient_id.in_(ids)))
    comparisons: list[dict[str, Any]] = []
    refusals: list[dict[str, Any]] = []  # audit events, one INSERT for all
    next_scans: list[dict[str, Any]] = []
    alerts: dict[int, list[Alert]] = {}
    for v in verdicts:
        pid, evaluation = v.patient_id, v.evaluation
        for position, c in enumerate(evaluation.comparisons):
            comparisons.append({**comparison_values(c, patient_id=pid, position=position), "computed_at": moment})
            if c.status in _REJECTED and (pid, _refusal_key(c)) not in refused_before:
                refusals.append(_refusal_event(pid, c, actor, moment))
        alerts[pid] = _all_alerts(evaluation)
        next_scans.append(
            {
                "patient_id": pid,
                "due": evaluation.next_scan.due,
                "rule_id": evaluation.next_scan.rule_id,
                "reason": evaluation.next_scan.reason,
                "alerts": alerts_to_json(alerts[pid]),
                "who_category": evaluation.who_category,
                "z_below_expected": evaluation.z_below_expected,
                "computed_at": moment,
            }
        )
    session.flush()  # what the ORM wrote so far goes first: the next statements bypass it
    connection = session.connection()
    dialect = connection.dialect.name
    if comparisons:
        connection.execute(_insert_comparisons(), comparisons)
    if refusals:
        connection.execute(_insert_audit_events(), refusals)
    connection.execute(_upsert_next_scans(dialect), next_scans)
    for pid in ids:  # a next scan the session holds is stale now
        held = session.identity_map.get(session.identity_key(NextScanRow, (pid,)))
        if held is not None:
            session.expire(held)

    live: dict[int, list[AlertRow]] = {i: [] for i in ids}
    for row in session.scalars(
        select(AlertRow)
        .where(AlertRow.patient_id.in_(ids), AlertRow.state.in_(("open", "acknowledged")))
        .order_by(AlertRow.id)
    ):
        live[row.patient_id].append(row)
    for pid in ids:
        _sync_alerts(session, pid, alerts[pid], live[pid], moment)
    session.flush()
    flag_open_alerts(session, ids)


def _refusal_event(patient_id: int, c: Comparison, actor: str, moment: datetime) -> dict[str, Any]:
    """The audit event's row (the ORM inserted each event in a statement of its own)."""
    return dict(
        occurred_at=moment,
        actor=actor,
        user_id=None,
        action=REFUSED_COMPARISON,
        patient_id=patient_id,
        detail={
            "site": c.site,
            "side": c.side,
            "from_exam": c.from_exam,
            "to_exam": c.to_exam,
            "reference": c.reference,
            "status": c.status,
            "reason": c.reason,
        },
    )


@functools.cache
def _insert_audit_events() -> Any:
    return insert(cast(Table, AuditEvent.__table__))


@functools.cache
def _insert_comparisons() -> Any:
    """Built once (values bound at execution, many rows per execution): through the ORM each row
    was an object to build and flush."""
    return insert(cast(Table, ComparisonRow.__table__))


@functools.cache
def _upsert_next_scans(dialect: str) -> Any:
    """One statement inserts or replaces each patient's next scan (PostgreSQL and SQLite alike)."""
    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(cast(Table, NextScanRow.__table__))
    columns = ("due", "rule_id", "reason", "alerts", "who_category", "z_below_expected", "computed_at")
    return stmt.on_conflict_do_update(
        index_elements=["patient_id"], set_={name: stmt.excluded[name] for name in columns}
    )


def flag_open_alerts(session: Session, patient_ids: list[int]) -> None:
    """Set `next_scans.open_alert` of these patients from their alert rows (flushed): the patients
    list counts and filters "open alerts" by that flag (issue 13). Only rows whose flag changes
    are written."""
    session.connection().execute(_FLAG_OPEN_ALERTS, {"patient_ids": patient_ids})


_HAS_OPEN_ALERT = exists().where(AlertRow.patient_id == NextScanRow.patient_id, AlertRow.state == "open")
_FLAG_OPEN_ALERTS = (
    update(NextScanRow)
    .where(
        NextScanRow.patient_id.in_(bindparam("patient_ids", expanding=True)),
        NextScanRow.open_alert.is_distinct_from(_HAS_OPEN_ALERT),
    )
    .values(open_alert=_HAS_OPEN_ALERT)
    .execution_options(synchronize_session=False)
)


def _sync_alerts(
    session: Session, patient_id: int, alerts: list[Alert], rows: list[AlertRow], moment: datetime
) -> None:
    """Keep one live (open or acknowledged) row per raised alert code; `rows`: the live rows (by id).

    A code no longer raised is resolved. An acknowledged row stays acknowledged while the alert
    is raised on the same basis (re-evaluating changes nothing); raised on another basis,
    something new happened: the acknowledged row is resolved and a new open one raised."""
    live = {r.code: r for r in rows}
    raised = {a.code: a for a in alerts}
    for code, row in live.items():
        alert = raised.get(code)
        if alert is None or (row.state == "acknowledged" and row.basis != alert.basis):
            row.state = "resolved"
            row.resolved_at = moment
            if alert is not None:
                live[code] = _new_alert(session, patient_id, alert, moment)
            continue
        row.message = alert.message
        row.basis = alert.basis
        row.phrase = to_data(alert.phrase) if alert.phrase else None
    for code, alert in raised.items():
        if code not in live:
            _new_alert(session, patient_id, alert, moment)


def _new_alert(session: Session, patient_id: int, alert: Alert, moment: datetime) -> AlertRow:
    row = AlertRow(
        patient_id=patient_id,
        code=alert.code,
        message=alert.message,
        basis=alert.basis,
        phrase=to_data(alert.phrase) if alert.phrase else None,
        state="open",
        raised_at=moment,
    )
    session.add(row)
    return row


def acknowledge_alert(
    session: Session, patient_id: int, alert_id: int, *, actor: str, user_id: int | None, comment: str
) -> AlertRow:
    """A clinician acknowledges an open alert with a comment; recorded in the audit trail.
    LookupError when the patient has no such open alert; ValueError for an empty comment."""
    text = comment.strip()
    if not text:
        raise ValueError("say why in a comment to acknowledge an alert")
    # the patient's next scan row (its `open_alert` flag changes below) is locked before the alert,
    # in the order an evaluation takes them: the two never wait for each other in a circle
    session.execute(select(NextScanRow.patient_id).where(NextScanRow.patient_id == patient_id).with_for_update())
    row = session.get(AlertRow, alert_id)
    if row is None or row.patient_id != patient_id or row.state != "open":
        raise LookupError("no such open alert")
    moment = utcnow()
    row.state = "acknowledged"
    row.acknowledged_at = moment
    row.acknowledged_by = actor
    row.ack_comment = text[:2000]
    session.add(
        AuditEvent(
            occurred_at=moment,
            actor=actor,
            user_id=user_id,
            action="alert_acknowledged",
            patient_id=patient_id,
            detail={"alert": row.id, "code": row.code, "comment": row.ack_comment},
        )
    )
    session.flush()
    flag_open_alerts(session, [patient_id])
    return row


def open_alerts(session: Session, patient_id: int | None = None) -> list[AlertRow]:
    stmt = select(AlertRow).where(AlertRow.state == "open").order_by(AlertRow.raised_at, AlertRow.id)
    if patient_id is not None:
        stmt = stmt.where(AlertRow.patient_id == patient_id)
    return list(session.scalars(stmt))
