"""Patients: found by identifier for every caller, created or completed from a parsed file, and
locked while one of their exams is assembled or evaluated.

Nothing here commits (the caller's use case owns the transaction). The patient row is locked
(`SELECT … FOR UPDATE` on PostgreSQL; SQLite serialises writers anyway) so two files of one exam
processed at once cannot both create it, and an evaluation never saves over a newer one. A patient
is locked at most once per transaction: the lock holds until the commit.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, literal_column, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from db.converters import patient_values
from db.inserts import insert_unless_exists
from db.models import Patient
from db.transaction_cache import transaction_cache
from ingest.report import PatientInfo

_LOCKED = "dxa_locked_patients"


def _locked_patients(session: Session) -> dict[int, Patient]:
    """The patients this session's current transaction has locked (row locks last until it ends),
    held here too: the session's identity map keeps rows only while something refers to them."""
    locked: dict[int, Patient] = transaction_cache(session, _LOCKED)
    return locked


def lock_patient(session: Session, patient_id: int) -> Patient:
    """Serialise work on one patient's exams (a row lock on PostgreSQL; a no-op on SQLite, where
    `BEGIN IMMEDIATE` already serialises writers). Once per transaction: a second call finds the
    lock held and the row in the session."""
    held = _locked_patients(session).get(patient_id)
    if held is not None:
        return held
    patient = session.scalars(select(Patient).where(Patient.id == patient_id).with_for_update()).one()
    _locked_patients(session)[patient_id] = patient
    return patient


def lock_patients(session: Session, patient_ids: Iterable[int]) -> list[Patient]:
    """`lock_patient` for several patients in one statement (a batch of evaluations), locked in
    `patient_lock_order` (PostgreSQL locks the rows as the sorted rows come out; "C" collation so
    its order is Python's, the one a batch of stores sorts by). The patients found, in that order;
    one deleted meanwhile is missing."""
    locked = _locked_patients(session)
    ids = list(dict.fromkeys(patient_ids))
    wanted = [i for i in ids if i not in locked]
    if wanted:
        order: list[ColumnElement[str]] = [Patient.identifier.expression, func.coalesce(Patient.issuer, "")]
        if session.get_bind().dialect.name == "postgresql":
            order = [column.collate("C") for column in order]
        stmt = select(Patient).where(Patient.id.in_(wanted)).order_by(*order, Patient.id)
        for patient in session.scalars(stmt.with_for_update()):
            locked[patient.id] = patient
    found = [locked[i] for i in ids if i in locked]
    return sorted(found, key=lambda p: (str(p.identifier), str(p.issuer or "")))


def patient_lock_order(session: Session, patient_ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """patient id -> (identifier, issuer): the one order in which work on several patients takes
    their locks (a batch of files is stored in that order, a batch of evaluations follows it)."""
    ids = list(dict.fromkeys(patient_ids))
    if not ids:
        return {}
    rows = session.execute(select(Patient.id, Patient.identifier, Patient.issuer).where(Patient.id.in_(ids)))
    return {int(pk): (str(identifier), str(issuer or "")) for pk, identifier, issuer in rows}


class AmbiguousPatient(LookupError):
    """One identifier names patients of several issuers: the caller must say which."""

    def __init__(self, issuers: list[str]) -> None:
        super().__init__("identifier used by several issuers")
        self.issuers = issuers


def find_patient(session: Session, identifier: str, issuer: str | None = None) -> Patient | None:
    """The patient an identifier names, for every caller (pages, API, imports). Without `issuer`,
    any issuer's patient of that identifier, unless several have it (`AmbiguousPatient`: picking
    one would risk the wrong patient); with it, exactly that issuer's."""
    stmt = select(Patient).where(Patient.identifier == identifier.strip())
    if issuer is not None:
        stmt = stmt.where(Patient.issuer == issuer.strip())
    found = list(session.scalars(stmt.limit(10)))
    if len(found) > 1:
        raise AmbiguousPatient(sorted(p.issuer for p in found))
    return found[0] if found else None


def upsert_patient(session: Session, info: PatientInfo) -> Patient:
    """The patient row for (identifier, issuer); demographics fill gaps but never overwrite, since
    an old archive back-loaded later must not replace what newer files said."""
    return _upsert_patient(session, info, lock=False)[0]


def _upsert_patient(session: Session, info: PatientInfo, *, lock: bool) -> tuple[Patient, bool]:
    """(patient, created); with `lock`, the row is locked for this transaction as it is read (one
    query for both). A row this transaction inserted is as good as locked: nobody else sees it."""
    values = patient_values(info)
    if not values["identifier"]:
        raise ValueError("patient identifier is empty")
    if lock:
        batch = _batch_patients(session)
        held = batch.get((values["identifier"], values["issuer"]))
        if held is not None:  # locked (or created) with the batch's others: `lock_batch_patients`
            batch[(values["identifier"], values["issuer"])] = (held[0], False)  # created once only
            return held
    stmt = select(Patient).where(Patient.identifier == values["identifier"], Patient.issuer == values["issuer"])
    if lock:
        stmt = stmt.with_for_update()
    patient = session.scalars(stmt).one_or_none()
    created = False
    if patient is None:
        patient = insert_unless_exists(session, Patient, values, ["identifier", "issuer"])
        created = patient is not None
        if patient is None:  # a concurrent transaction created it first (and has committed)
            patient = session.scalars(stmt).one()
    if lock:
        _locked_patients(session)[patient.id] = patient
    for name in ("name", "birth_date", "sex"):
        if getattr(patient, name) is None and values[name] is not None:
            setattr(patient, name, values[name])
    return patient, created


def upsert_patient_locked(session: Session, info: PatientInfo) -> tuple[Patient, bool]:
    """(patient, created), the row locked for this transaction as it is read (one query for both)."""
    return _upsert_patient(session, info, lock=True)


_BATCH = "dxa_batch_patients"


def _batch_patients(session: Session) -> dict[tuple[str, str], tuple[Patient, bool]]:
    """(identifier, issuer) -> (patient, created by this transaction and not used yet), for the
    patients `lock_batch_patients` locked or created in the current transaction."""
    batch: dict[tuple[str, str], tuple[Patient, bool]] = transaction_cache(session, _BATCH)
    return batch


def lock_batch_patients(session: Session, infos: Iterable[PatientInfo]) -> None:
    """Before a batch of files is stored: every patient they name created or locked, in patient
    order, in one statement (`INSERT … ON CONFLICT DO UPDATE … RETURNING`: a new row is inserted,
    an existing one locked as it is read, each in turn like the files one after the other would,
    so batches of several workers still wait for each other, never in a circle). The gaps in an
    existing patient's demographics are filled from the first file that has them, as the files
    stored one by one would. `upsert_patient_locked` then finds each patient without a query.

    Only the files sure to be stored may be given: a patient created here stays with the batch.
    On SQLite (writers serialised, no row locks) the patients that exist already are read first,
    to tell the new ones; PostgreSQL says it of each row (`xmax = 0`: not an update)."""
    wanted: dict[tuple[str, str], dict[str, Any]] = {}
    for info in infos:
        values = patient_values(info)
        if not values["identifier"]:
            continue  # refused file by file (`upsert_patient_locked`)
        have = wanted.setdefault((values["identifier"], values["issuer"]), values)
        for name in _DEMOGRAPHICS:
            if have[name] is None and values[name] is not None:
                have[name] = values[name]
    if not wanted:
        return
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        return  # the portable path: one file at a time
    session.flush()
    known: set[tuple[str, str]] | None = None
    if dialect == "sqlite":
        keys = sorted(wanted)
        rows = session.execute(
            select(Patient.identifier, Patient.issuer).where(Patient.identifier.in_({k for k, _ in keys}))
        )
        known = {(str(i), str(s)) for i, s in rows}
    batch = _batch_patients(session)
    locked = _locked_patients(session)
    ordered = [wanted[key] for key in sorted(wanted)]  # one multi-row INSERT, its rows in this order
    options = {"populate_existing": True, "render_nulls": True}  # NULLs sent: all rows one shape, one statement
    result = session.execute(_upsert(dialect), ordered, execution_options=options)
    for patient, fresh in result:
        key = (patient.identifier, patient.issuer)
        created = bool(fresh) if known is None else key not in known
        if created:  # nothing refers to a row inserted just now
            set_committed_value(patient, "exams", [])
        batch[key] = (patient, created)
        locked[patient.id] = patient


def batch_patient_ids(session: Session) -> dict[tuple[str, str], tuple[int, bool]]:
    """(identifier, issuer) -> (patient id, created by this transaction) of the patients
    `lock_batch_patients` locked or created in the current transaction."""
    return {key: (patient.id, created) for key, (patient, created) in _batch_patients(session).items()}


_DEMOGRAPHICS = ("name", "birth_date", "sex")


@functools.cache
def _upsert(dialect: str) -> Any:
    """`lock_batch_patients`' statement, built once: executed with a list of rows, SQLAlchemy
    sends them in one multi-row INSERT from the statement compiled once (a `.values(rows)` would
    be compiled again for every batch)."""
    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(Patient)
    new = stmt.excluded
    changed = or_(*(and_(getattr(Patient, n).is_(None), getattr(new, n).is_not(None)) for n in _DEMOGRAPHICS))
    stmt = stmt.on_conflict_do_update(
        index_elements=["identifier", "issuer"],
        set_={
            **{n: func.coalesce(getattr(Patient, n), getattr(new, n)) for n in _DEMOGRAPHICS},
            "updated_at": case((changed, new.updated_at), else_=Patient.updated_at),
        },
    )
    inserted = literal_column("xmax = 0") if dialect == "postgresql" else literal(False)
    return stmt.returning(Patient, inserted)


# --------------------------------------------------------------------------- batches of two workers

PATIENT_LOCKS = 0x0D7A_0002  # the advisory lock space of patients' keys (the migrations' lock is a one-key lock)
# With `wait` False: the keys another batch holds (its advisory lock), and those of existing patients
# whose row another transaction holds (an evaluation's lock); the others' rows locked now. Never waits.
_TRY = text(
    """
    WITH wanted AS (
        SELECT * FROM unnest(CAST(:keys AS integer[]), CAST(:ids AS text[]), CAST(:issuers AS text[])) AS w(k, i, s)
    ),
    held AS (SELECT k FROM wanted WHERE NOT pg_try_advisory_xact_lock(:space, k)),
    mine AS (
        SELECT p.id FROM patients p JOIN wanted w ON p.identifier = w.i AND p.issuer = w.s
        WHERE w.k NOT IN (SELECT k FROM held) FOR UPDATE OF p SKIP LOCKED
    )
    SELECT k FROM held
    UNION
    SELECT w.k FROM wanted w JOIN patients p ON p.identifier = w.i AND p.issuer = w.s
    WHERE w.k NOT IN (SELECT k FROM held) AND p.id NOT IN (SELECT id FROM mine)
    """
)
_WAIT = text("SELECT count(pg_advisory_xact_lock(:space, k)) FROM unnest(CAST(:keys AS integer[])) AS k")


def patient_key(info: PatientInfo) -> int:
    """A patient's (identifier, issuer) as the 32-bit key of its advisory lock (two patients that
    share one only wait for each other now and then)."""
    values = patient_values(info)
    digest = zlib.crc32(f"{values['identifier']}\x1f{values['issuer']}".encode())
    return digest - (1 << 32) if digest >= 1 << 31 else digest


def claim_patients(session: Session, infos: Iterable[PatientInfo], *, wait: bool) -> set[int]:
    """PostgreSQL, first thing in a batch's transaction: the batch's patients claimed for it until
    its commit (transaction-scoped advisory locks on `patient_key`), so that two workers' batches
    rarely meet on a patient's row. With `wait` False, nothing is waited for: the keys of the
    patients another batch holds, or whose row another transaction has locked (an evaluation),
    are returned (busy), and the rows of the others that exist are locked now; the caller stores
    the busy patients' files later, in a transaction of its own, rather than waiting with every
    other patient of the batch locked (and its own Python work to do meanwhile). With `wait`, each
    key is waited for in key order (two waiting batches never wait in a circle; a try never waits),
    and the rows are locked afterwards in patient order (`lock_batch_patients`). Nothing on other
    databases (SQLite serialises writers)."""
    if session.get_bind().dialect.name != "postgresql":
        return set()
    wanted: dict[int, tuple[str, str]] = {}
    for info in infos:
        values = patient_values(info)
        if values["identifier"]:
            wanted[patient_key(info)] = (values["identifier"], values["issuer"])
    if not wanted:
        return set()
    keys = sorted(wanted)
    if wait:
        session.execute(_WAIT, {"space": PATIENT_LOCKS, "keys": keys})
        return set()
    params = {
        "space": PATIENT_LOCKS,
        "keys": keys,
        "ids": [wanted[k][0] for k in keys],
        "issuers": [wanted[k][1] for k in keys],
    }
    return {int(k) for k in session.scalars(_TRY, params)}
