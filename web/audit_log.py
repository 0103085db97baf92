"""The audit page's reads: who did what, when (sign-ins, views, exports, saved studies,
re-processing, acknowledged alerts, refused comparisons), filtered and paged; the CSV holds
exactly the filtered rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from db.models import AuditEvent, Patient

PAGE_SIZE = 100
# What an auditor asks for, as groups of the actions the code records.
KINDS: dict[str, tuple[str, ...]] = {
    "sign-ins": ("login", "login_failed", "signout", "logout"),
    "views": ("patient_viewed",),
    "exports": ("patient_exported", "worklist_exported", "refused_comparisons_exported", "audit_exported", "export"),
    "saved studies": ("precision_study_saved", "cross_calibration_saved"),
    "re-processing": ("file_reprocess_requested",),
    "therapies": ("therapy_added", "therapy_stopped"),
    "alerts": ("alert_acknowledged",),
    "refused comparisons": ("comparison_refused",),
}


@dataclass(frozen=True)
class AuditFilter:
    kind: str | None
    action: str | None
    actor: str
    patient: str
    start: date | None
    end: date | None
    page: int


@dataclass(frozen=True)
class AuditRow:
    occurred_at: datetime
    actor: str
    action: str
    patient_id: str | None
    issuer: str | None
    detail: dict[str, Any]

    @property
    def detail_text(self) -> str:
        return json.dumps(self.detail, ensure_ascii=False, sort_keys=True, default=str) if self.detail else ""


def actions(session: Session) -> list[str]:
    return sorted(a for a in session.scalars(select(AuditEvent.action).distinct()) if a)


def _start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _conditions(f: AuditFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if f.kind in KINDS:
        conditions.append(AuditEvent.action.in_(KINDS[f.kind]))
    if f.action:
        conditions.append(AuditEvent.action == f.action)
    if f.actor.strip():
        conditions.append(func.lower(AuditEvent.actor).like(f"%{f.actor.strip().lower()}%"))
    if f.patient.strip():
        conditions.append(Patient.identifier == f.patient.strip())
    if f.start is not None:
        conditions.append(AuditEvent.occurred_at >= _start(f.start))
    if f.end is not None:
        conditions.append(AuditEvent.occurred_at < _start(f.end + timedelta(days=1)))
    return conditions


def events(session: Session, f: AuditFilter, *, page_size: int | None = PAGE_SIZE) -> tuple[list[AuditRow], int]:
    """Matching events, newest first: one page (or all with `page_size=None`), and the total."""
    conditions = _conditions(f)
    base = select(AuditEvent.id).outerjoin(Patient, Patient.id == AuditEvent.patient_id).where(*conditions)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    stmt = (
        select(
            AuditEvent.occurred_at,
            AuditEvent.actor,
            AuditEvent.action,
            Patient.identifier,
            Patient.issuer,
            AuditEvent.detail,
        )
        .outerjoin(Patient, Patient.id == AuditEvent.patient_id)
        .where(*conditions)
        .order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
    )
    if page_size is not None:
        stmt = stmt.limit(page_size).offset((max(f.page, 1) - 1) * page_size)
    rows = [
        AuditRow(when, actor, action, ident, issuer, dict(detail or {}))
        for when, actor, action, ident, issuer, detail in session.execute(stmt)
    ]
    return rows, total
