"""A patient's drug history: a therapy added or stopped on the patient page, or a whole history
imported from a CSV (`dxa therapies import`). Each changes the next scan the rules give, so the
patient is re-evaluated at once: the clinician sees the recalculated date on the next page.

CSV: `patient_id, agent, start_date, stop_date`. The file is authoritative for each patient it
names (their history is replaced, so importing twice changes nothing).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from pathlib import Path

from db import therapies as repo
from db.models import TherapyRow
from db.patients import AmbiguousPatient, find_patient, upsert_patient
from ingest.report import PatientInfo
from monitor.drugs import UnknownAgent, therapy_from_agent
from monitor.model import Therapy
from services.audit import CLI, Actor, record
from services.context import Context
from services.csv_rows import ImportError_, date_field, parse_rows, read_text
from services.evaluation import evaluate_now
from services.queue import unit_of_work

COLUMNS = ("patient_id", "agent", "start_date", "stop_date")


def add_therapy(ctx: Context, actor: Actor, patient_id: int, agent: str, start: date, stop: date | None) -> str | None:
    """Add a therapy (`UnknownAgent` or `ValueError` for one that cannot be) and re-evaluate the
    patient. Returns a warning when the re-evaluation had to be queued."""
    therapy = therapy_from_agent(agent, start, stop)
    with ctx.sessions.begin() as session:
        repo.add_therapy(session, patient_id, therapy, source=f"web:{actor.username}")
        record(session, actor, "therapy_added", patient_id, drug_class=therapy.drug_class)
    return evaluate_now(ctx, patient_id)


def stop_therapy(ctx: Context, actor: Actor, patient_id: int, therapy_id: int, stop: date) -> str | None:
    """Stop one of the patient's therapies (`LookupError` when it is not theirs) and re-evaluate."""
    with ctx.sessions.begin() as session:
        row = session.get(TherapyRow, therapy_id)
        if row is None or row.patient_id != patient_id:
            raise LookupError("no such therapy")
        repo.update_therapy(session, row.id, therapy_from_agent(row.agent, row.start_date, stop))
        record(session, actor, "therapy_stopped", patient_id, therapy=row.id)
    return evaluate_now(ctx, patient_id)


def read_therapies(text: str, path: str | Path) -> dict[str, list[Therapy]]:
    """Every row of a therapies CSV, checked, by patient identifier."""
    by_patient: dict[str, list[Therapy]] = defaultdict(list)
    for row in parse_rows(text, path, COLUMNS):
        patient = row.values["patient_id"]
        if not patient:
            raise ImportError_(f"{path}: line {row.line}: field patient_id is empty")
        start = date_field(path, row, "start_date", required=True)
        stop = date_field(path, row, "stop_date", required=False)
        assert start is not None
        if stop is not None and stop < start:
            raise ImportError_(f"{path}: line {row.line}: field stop_date is before start_date")
        try:
            therapy = therapy_from_agent(row.values["agent"], start, stop)
        except UnknownAgent as exc:
            raise ImportError_(f"{path}: line {row.line}: field agent: {exc}") from None
        by_patient[patient].append(therapy)
    return by_patient


def import_therapies(ctx: Context, path: Path, actor: Actor = CLI) -> list[int]:
    """Replace the drug history of every patient the file names, all or nothing, and queue their
    re-evaluation. A patient not seen yet is created (their scans may come later). Returns their
    ids."""
    by_patient = read_therapies(read_text(path), path)
    touched: list[int] = []
    with unit_of_work(ctx) as work:
        session = work.session
        for identifier, therapies in by_patient.items():
            try:
                patient = find_patient(session, identifier) or upsert_patient(session, PatientInfo(identifier))
            except AmbiguousPatient:
                raise ImportError_(f"{path}: patient_id used by several issuers; cannot tell which patient") from None
            repo.replace_therapies(session, patient.id, therapies, source=f"import:{path.name}")
            touched.append(patient.id)
        record(session, actor, "therapies_imported", None, patients=len(touched))
        work.queue_evaluations(touched)
    return touched
