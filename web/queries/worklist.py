"""The worklist: scans due in a date range, and the overdue ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from db.models import Exam, NextScanRow, Patient


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
