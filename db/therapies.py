"""A patient's drug history (from `dxa therapies import` and the patient page)."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.converters import therapy_row, therapy_to_domain
from db.models import TherapyRow
from monitor.model import DRUG_CLASSES, Therapy


def _check(therapy: Therapy) -> None:
    if therapy.drug_class not in DRUG_CLASSES:
        raise ValueError(f"unknown drug class {therapy.drug_class!r}")
    if therapy.stop is not None and therapy.stop < therapy.start:
        raise ValueError("therapy stops before it starts")


def add_therapy(session: Session, patient_id: int, therapy: Therapy, *, source: str | None = None) -> TherapyRow:
    _check(therapy)
    row = therapy_row(therapy, patient_id=patient_id, source=source)
    session.add(row)
    session.flush()
    return row


def update_therapy(session: Session, therapy_id: int, therapy: Therapy) -> TherapyRow:
    _check(therapy)
    row = session.get(TherapyRow, therapy_id)
    if row is None:
        raise LookupError("no such therapy")
    row.agent = therapy.agent
    row.drug_class = therapy.drug_class
    row.start_date = therapy.start
    row.stop_date = therapy.stop
    row.glucocorticoid = therapy.glucocorticoid
    session.flush()
    return row


def delete_therapy(session: Session, therapy_id: int) -> bool:
    result = session.execute(delete(TherapyRow).where(TherapyRow.id == therapy_id))
    return bool(getattr(result, "rowcount", 0))


def replace_therapies(
    session: Session, patient_id: int, therapies: Iterable[Therapy], *, source: str | None = None
) -> list[TherapyRow]:
    """Make `therapies` the patient's whole history (an import is authoritative for a patient);
    validated before anything is deleted, so a bad row leaves the old history in place."""
    items = list(therapies)
    for therapy in items:
        _check(therapy)
    session.execute(delete(TherapyRow).where(TherapyRow.patient_id == patient_id))
    rows = [therapy_row(t, patient_id=patient_id, source=source) for t in items]
    session.add_all(rows)
    session.flush()
    return rows


def therapy_rows(session: Session, patient_id: int) -> list[TherapyRow]:
    return list(
        session.scalars(
            select(TherapyRow).where(TherapyRow.patient_id == patient_id).order_by(TherapyRow.start_date, TherapyRow.id)
        )
    )


def load_therapies(session: Session, patient_id: int) -> tuple[Therapy, ...]:
    return tuple(therapy_to_domain(r) for r in therapy_rows(session, patient_id))


def load_therapies_of(session: Session, patient_ids: Collection[int]) -> dict[int, tuple[Therapy, ...]]:
    """Each patient's therapies (as `load_therapies`, none for a patient without) in one query for
    a batch of patients, read as plain rows (no ORM objects to build)."""
    found: dict[int, list[Therapy]] = {i: [] for i in patient_ids}
    if not found:
        return {}
    stmt = (
        select(
            TherapyRow.patient_id,
            TherapyRow.agent,
            TherapyRow.drug_class,
            TherapyRow.start_date,
            TherapyRow.stop_date,
            TherapyRow.glucocorticoid,
        )
        .where(TherapyRow.patient_id.in_(list(found)))
        .order_by(TherapyRow.patient_id, TherapyRow.start_date, TherapyRow.id)
    )
    for row in session.execute(stmt):
        found[row.patient_id].append(therapy_to_domain(row))
    return {i: tuple(therapies) for i, therapies in found.items()}
