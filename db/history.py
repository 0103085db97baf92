"""A patient's history for the monitor, and the monitor's verdict stored back atomically.

`load_patient_history` gives everything `evaluate_patient` needs in monitor types (exam ids
are the string of the database id). `save_evaluation` replaces the patient's comparisons and
next scan in the caller's transaction, keeps alerts open while they are raised, and writes an
audit event for each refused comparison the first time it is refused, so re-running an
evaluation leaves the same rows.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, selectinload

from db.calibration import PrecisionCalculator, load_cross_calibrations, load_site_lscs
from db.converters import alerts_to_json, comparison_row, comparison_to_domain, exam_id_str, exam_to_domain
from db.models import AlertRow, AuditEvent, ComparisonRow, NextScanRow, Patient, utcnow
from db.models import Exam as ExamRow
from db.patients import lock_patient
from db.therapies import load_therapies
from db.vendor_lsc import load_vendor_lscs
from monitor.model import Alert, Comparison, CrossCalibration, Exam, PatientEvaluation, SiteLsc, Therapy, VendorLsc
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
    session: Session,
    patient_id: int,
    *,
    precision_calculator: PrecisionCalculator | None = None,
    machines: dict[tuple[int, ...], MachineData] | None = None,
) -> PatientHistory:
    """Exams (oldest first), therapies, and the LSCs and cross-calibrations of the patient's
    machines. `machines`: what was read for a set of machines already, in this transaction (a
    batch of evaluations, whose patients mostly share their machines), read once per set."""
    patient = session.get(Patient, patient_id)
    if patient is None:
        raise LookupError("no such patient")
    rows = exam_rows(session, patient_id)
    device_ids = tuple(sorted({r.device_id for r in rows}))
    known = machines.get(device_ids) if machines is not None else None
    if known is None:
        known = (
            load_site_lscs(session, calculator=precision_calculator, device_ids=device_ids),
            load_cross_calibrations(session, device_ids=device_ids),
            load_vendor_lscs(session, device_ids),
        )
        if machines is not None:
            machines[device_ids] = known
    lscs, cross_calibrations, vendor_lscs = known
    return PatientHistory(
        patient_id=patient.id,
        identifier=patient.identifier,
        birth_date=patient.birth_date,
        sex=patient.sex,
        exams=tuple(exam_to_domain(r) for r in rows),
        therapies=load_therapies(session, patient_id),
        lscs=lscs,
        cross_calibrations=cross_calibrations,
        vendor_lscs=vendor_lscs,
    )


def comparison_rows(session: Session, patient_id: int) -> list[ComparisonRow]:
    return list(
        session.scalars(
            select(ComparisonRow).where(ComparisonRow.patient_id == patient_id).order_by(ComparisonRow.position)
        )
    )


def load_comparisons(session: Session, patient_id: int) -> tuple[Comparison, ...]:
    return tuple(comparison_to_domain(r) for r in comparison_rows(session, patient_id))


def _refusal_key(c: Comparison | ComparisonRow) -> tuple[Any, ...]:
    if isinstance(c, ComparisonRow):
        return (c.site, c.side, exam_id_str(c.from_exam_id), exam_id_str(c.to_exam_id), c.reference, c.status)
    return (c.site, c.side, c.from_exam, c.to_exam, c.reference, c.status)


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
    moment = now or utcnow()
    lock_patient(session, patient_id)
    if own_exams is None:
        ids = session.scalars(select(ExamRow.id).where(ExamRow.patient_id == patient_id))
        own_exams = {exam_id_str(i) for i in ids}
    for c in evaluation.comparisons:
        if c.from_exam not in own_exams or c.to_exam not in own_exams:
            raise ValueError("comparison names an exam that is not this patient's")

    refused_before = {_refusal_key(r) for r in comparison_rows(session, patient_id) if r.status in _REJECTED}
    session.execute(delete(ComparisonRow).where(ComparisonRow.patient_id == patient_id))
    for position, c in enumerate(evaluation.comparisons):
        row = comparison_row(c, patient_id=patient_id, position=position)
        row.computed_at = moment
        session.add(row)
        if c.status in _REJECTED and _refusal_key(c) not in refused_before:
            session.add(
                AuditEvent(
                    occurred_at=moment,
                    actor=actor,
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
            )

    alerts = _all_alerts(evaluation)
    next_scan = session.get(NextScanRow, patient_id)
    if next_scan is None:
        next_scan = NextScanRow(patient_id=patient_id)
        session.add(next_scan)
    next_scan.due = evaluation.next_scan.due
    next_scan.rule_id = evaluation.next_scan.rule_id
    next_scan.reason = evaluation.next_scan.reason
    next_scan.alerts = alerts_to_json(alerts)
    next_scan.who_category = evaluation.who_category
    next_scan.z_below_expected = evaluation.z_below_expected
    next_scan.computed_at = moment

    _sync_alerts(session, patient_id, alerts, moment)
    session.flush()


def _sync_alerts(session: Session, patient_id: int, alerts: list[Alert], moment: datetime) -> None:
    """Keep one live (open or acknowledged) row per raised alert code.

    A code no longer raised is resolved. An acknowledged row stays acknowledged while the alert
    is raised on the same basis (re-evaluating changes nothing); raised on another basis,
    something new happened: the acknowledged row is resolved and a new open one raised."""
    live = {
        r.code: r
        for r in session.scalars(
            select(AlertRow)
            .where(AlertRow.patient_id == patient_id, AlertRow.state.in_(("open", "acknowledged")))
            .order_by(AlertRow.id)
        )
    }
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
    return row


def open_alerts(session: Session, patient_id: int | None = None) -> list[AlertRow]:
    stmt = select(AlertRow).where(AlertRow.state == "open").order_by(AlertRow.raised_at, AlertRow.id)
    if patient_id is not None:
        stmt = stmt.where(AlertRow.patient_id == patient_id)
    return list(session.scalars(stmt))
