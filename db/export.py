"""The docs/architecture.md, "Exports" JSON export, one object per patient, built from stored rows only.

Exam ids are the strings the comparisons use; exams come oldest first with measurements
ordered by site and side, and comparisons in the order the monitor produced them, so two
exports of the same data are identical.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from db.converters import comparison_to_export, exam_to_export, next_scan_to_export, patient_key
from db.models import ComparisonRow, Exam, NextScanRow, Patient


def _build(patient: Patient, comparisons: Sequence[ComparisonRow], next_scan: NextScanRow | None) -> dict[str, Any]:
    return {
        "patient_id": patient_key(patient),
        "exams": [exam_to_export(e) for e in sorted(patient.exams, key=lambda e: (e.exam_date, e.id))],
        "comparisons": [comparison_to_export(c) for c in comparisons],
        "next_scan": next_scan_to_export(next_scan),
    }


def _batch(session: Session, patients: Sequence[Patient]) -> Iterator[dict[str, Any]]:
    ids = [p.id for p in patients]
    comparisons: dict[int, list[ComparisonRow]] = {i: [] for i in ids}
    for row in session.scalars(
        select(ComparisonRow)
        .where(ComparisonRow.patient_id.in_(ids))
        .order_by(ComparisonRow.patient_id, ComparisonRow.position)
    ):
        comparisons[row.patient_id].append(row)
    next_scans = {r.patient_id: r for r in session.scalars(select(NextScanRow).where(NextScanRow.patient_id.in_(ids)))}
    for patient in patients:
        yield _build(patient, comparisons[patient.id], next_scans.get(patient.id))


def export_patients(
    session: Session, *, identifier: str | None = None, batch_size: int = 200
) -> Iterator[dict[str, Any]]:
    """Every patient (or those with `identifier`, any issuer), ordered by identifier, in batches
    so a large database streams instead of loading at once."""
    last: tuple[str, str, int] | None = None
    while True:
        stmt = (
            select(Patient)
            .options(selectinload(Patient.exams).selectinload(Exam.measurements))
            .order_by(Patient.identifier, Patient.issuer, Patient.id)
            .limit(batch_size)
            .execution_options(populate_existing=True)
        )
        if identifier is not None:
            stmt = stmt.where(Patient.identifier == identifier)
        if last is not None:
            ident, issuer, pid = last
            stmt = stmt.where(
                (Patient.identifier > ident)
                | ((Patient.identifier == ident) & (Patient.issuer > issuer))
                | ((Patient.identifier == ident) & (Patient.issuer == issuer) & (Patient.id > pid))
            )
        patients = list(session.scalars(stmt))
        if not patients:
            return
        yield from _batch(session, patients)
        tail = patients[-1]
        last = (tail.identifier, tail.issuer, tail.id)
        if len(patients) < batch_size:
            return


def export_patient(session: Session, patient_id: int) -> dict[str, Any]:
    """One patient's export object by database id."""
    patient = session.scalars(
        select(Patient)
        .where(Patient.id == patient_id)
        .options(selectinload(Patient.exams).selectinload(Exam.measurements))
        .execution_options(populate_existing=True)
    ).one_or_none()
    if patient is None:
        raise LookupError("no such patient")
    return next(_batch(session, [patient]))
