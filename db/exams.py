"""Exam assembly: the one exam each file of a visit belongs to (the rule is `monitor.assembly`),
its description merged from every file, and two exams found late to be one folded together.
Nothing here commits; the patient is locked while its exams are assembled (`db.patients`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, text, tuple_, update
from sqlalchemy.orm import Session, joinedload, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from db.files import flush_finished
from db.inserts import insert_unless_exists
from db.measurements import as_site, flush_measurements, record_conflict
from db.models import ComparisonRow, Device, Exam, MeasurementConflict, Patient, SourceFile
from db.patients import lock_patient
from db.transaction_cache import transaction_cache
from monitor.assembly import DayExam, FileMachine, Strength, assemble, bmd_agree


def _same_day_exams(session: Session, patient_id: int, exam_date: date) -> list[Exam]:
    """The patient's exams on that date, oldest first, each with its measurements (joined: the
    file's values are merged into one of them next, which would load them in a query of its own;
    the device is the batch's, in the session already)."""
    return list(session.scalars(_SAME_DAY, {"patient_id": patient_id, "exam_date": exam_date}).unique())


_SAME_DAY = (
    select(Exam)
    .where(Exam.patient_id == bindparam("patient_id"), Exam.exam_date == bindparam("exam_date"))
    .options(joinedload(Exam.measurements))
    .order_by(Exam.id)
)  # built once: its cache key is computed once too

_DAYS = "dxa_same_day_exams"


def _prefetched(session: Session) -> dict[tuple[int, date], list[Exam]]:
    """(patient id, exam date) -> that day's exams, oldest first, for the pairs a batch
    prefetched in the current transaction, kept up to date by `find_or_create_exam`."""
    days: dict[tuple[int, date], list[Exam]] = transaction_cache(session, _DAYS)
    return days


def prefetch_same_day_exams(session: Session, days: Iterable[tuple[int, date]], new_patients: Iterable[int]) -> None:
    """Before a batch's files are assembled into exams (their patients locked, `db.patients.
    lock_batch_patients`): the exams of every (patient, date) of the batch read in one query, not
    one per file. `new_patients`, created by this transaction, have no exam to read. Only for a
    transaction without savepoints: a savepoint rolled back would leave exams here that are gone."""
    cache = _prefetched(session)
    new = set(new_patients)
    wanted = {key for key in days if key not in cache}
    for key in wanted:
        cache[key] = []
    old = {key for key in wanted if key[0] not in new}
    if old:
        pairs = tuple_(Exam.patient_id, Exam.exam_date).in_(sorted(old))  # those pairs only, not their cross product
        stmt = select(Exam).where(pairs).options(joinedload(Exam.measurements)).order_by(Exam.id)
        for exam in session.scalars(stmt).unique():
            cache[(exam.patient_id, exam.exam_date)].append(exam)
    # The days with no exam yet: the new exams the batch will most likely make (`_next_exam_id`).
    ids = transaction_cache(session, _NEXT_ID)
    ids["expected"] = ids.get("expected", 0) + sum(1 for key in wanted if not cache[key])


def find_or_create_exam(
    session: Session,
    patient: Patient,
    exam_date: date,
    device: Device,
    *,
    details: Mapping[str, Any] | None = None,
    patient_is_new: bool = False,
    defer: bool = False,
) -> Exam:
    """The one exam of `patient` on `exam_date` on `device`; files of one visit never make two
    (`monitor.assembly.assemble` decides which, from the same-day exams' machines).

    `details` (the `merge_exam_details` keywords) go straight into a new exam's row; an existing
    exam is left for the caller to merge them into. `patient_is_new`: the patient was created in
    this transaction, so it has no exam to look for. `defer` (a batch stored without savepoints,
    `deferred_exams`): a new exam is written at the session's next flush, with the others.
    """
    lock_patient(session, patient.id)
    day = _prefetched(session).get((patient.id, exam_date))
    if day is not None:
        same_day = list(day)
    else:
        same_day = [] if patient_is_new else _same_day_exams(session, patient.id, exam_date)
    by_id = {e.id: e for e in same_day}
    placed = assemble(
        FileMachine(device.id, device.model_key, _strength(device)),
        [DayExam(e.id, e.device_id, e.device.model_key, _strength(e.device)) for e in same_day],
    )
    if placed.exam_id is None:
        exam = _create_exam(session, patient.id, exam_date, device, details, defer=defer)
    else:
        exam = by_id[placed.exam_id]
    if placed.adopt:
        exam.device_id = device.id
        exam.device = device
        session.flush()
    for other in placed.absorb:
        merge_exams(session, source=by_id[other], target=exam)
    if day is not None:  # what a query would read now
        day[:] = [e for e in same_day if e.id not in placed.absorb]
        if all(e.id != exam.id for e in day):
            day.append(exam)
    return exam


def _strength(device: Device) -> Strength:
    return "serial" if device.identity_strength == "serial" else "weak"


def _exam_columns(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """A new exam's description columns from `merge_exam_details` keywords."""
    given = dict(details or {})
    scan_type = given.pop("scan_type", None)
    columns = {name: value or None for name, value in given.items()}
    columns["scan_types"] = [scan_type] if scan_type else []
    return columns


def deferred_exams(session: Session) -> bool:
    """Whether a batch's new exams may wait for the session's next flush (`find_or_create_exam`'s
    `defer`), with ids given now (`_next_exam_id`): on SQLite, whose one writer holds the
    database's write lock for the whole transaction, the ids the database would give them; on
    PostgreSQL, ids taken from the exams' sequence, which no other transaction is given. Nobody
    else makes these exams meanwhile: their patients are locked. Their INSERTs then go together,
    and the rows the files change (exams, measurements kept) are flushed once for the batch rather
    than once per file (issue 13: an INSERT … RETURNING and a flush per file were a fifth of the
    embedded store, and a sixth of a Celery pool process's time on PostgreSQL, bench/pipeline.py
    --profile)."""
    return session.get_bind().dialect.name in ("sqlite", "postgresql")


_NEXT_ID = "dxa_next_exam_id"
# As many ids as asked for, from the exams' own sequence (the one a plain INSERT draws from).
_RESERVE_IDS = text("SELECT nextval(pg_get_serial_sequence('exams', 'id')) FROM generate_series(1, :n)")


def _next_exam_id(session: Session) -> int:
    """The id of the next exam of this transaction. SQLite: the one it would give (no
    AUTOINCREMENT: the largest rowid + 1), counting the exams given one already and not flushed
    yet. PostgreSQL: the next of the ids reserved from the sequence for this transaction, as many
    at once as the batch's days without an exam (`prefetch_same_day_exams`); an id left unused is
    a gap in the sequence, as a rolled-back INSERT leaves one."""
    cache = transaction_cache(session, _NEXT_ID)
    if session.get_bind().dialect.name == "postgresql":
        free: list[int] = cache.setdefault("free", [])
        if not free:
            wanted = max(1, cache.get("expected", 0) - cache.get("given", 0))
            free += sorted(int(i) for i in session.scalars(_RESERVE_IDS, {"n": wanted}))
            cache["given"] = cache.get("given", 0) + len(free)
        return free.pop(0)
    given = cache.get("next")
    if given is None:
        given = int(session.scalar(select(func.max(Exam.id))) or 0) + 1
    cache["next"] = given + 1
    return int(given)


_NEW = "dxa_new_exams"
_TABLE = cast(Table, Exam.__table__)
_WRITTEN = [c.key for c in _TABLE.c if c.key not in ("created_at", "updated_at")]  # those: the columns' defaults


def flush_new_exams(session: Session) -> None:
    """The exams `find_or_create_exam(defer=True)` made in this transaction and no flush wrote yet,
    written by one executemany INSERT (the unit of work wrote each with an INSERT … RETURNING of
    its own), then persistent in the session as if read back. Called before the session's flush
    at a batch's end; any earlier flush writes them its own way."""
    made: list[Exam] = transaction_cache(session, _NEW).pop("exams", [])
    pending = [exam for exam in made if exam in session.new]
    if not pending:
        return
    session.connection().execute(insert(_TABLE), [{name: getattr(exam, name) for name in _WRITTEN} for exam in pending])
    for exam in pending:
        device = exam.device
        session.expunge(exam)
        make_transient_to_detached(exam)  # its values are the row's now; the timestamps load if read
        session.add(exam)
        set_committed_value(exam, "device", device)


def _create_exam(
    session: Session,
    patient_id: int,
    exam_date: date,
    device: Device,
    details: Mapping[str, Any] | None = None,
    *,
    defer: bool = False,
) -> Exam:
    key = {"patient_id": patient_id, "exam_date": exam_date, "device_id": device.id}
    if defer and deferred_exams(session):
        # The patient is locked (and on SQLite the whole database): nobody else makes this exam.
        pending = Exam(id=_next_exam_id(session), **key, **_exam_columns(details), source="file")
        set_committed_value(pending, "measurements", [])  # a new row: nothing to load
        pending.device = device
        session.add(pending)
        transaction_cache(session, _NEW).setdefault("exams", []).append(pending)
        return pending
    transaction_cache(session, _NEXT_ID).pop("next", None)  # this INSERT takes the next id itself
    exam = insert_unless_exists(session, Exam, {**key, **_exam_columns(details)}, list(key))
    if exam is None:  # made meanwhile (the patient lock normally rules this out); the caller merges
        return session.scalars(select(Exam).filter_by(**key)).one()
    set_committed_value(exam, "measurements", [])  # a new row: nothing to load
    set_committed_value(exam, "device", device)
    return exam


def merge_exam_details(
    exam: Exam,
    *,
    scan_type: str | None = None,
    vertebral_set: str | None = None,
    scan_mode: str | None = None,
    analysis_protocol: str | None = None,
    reference_database: str | None = None,
    software_version: str | None = None,
) -> None:
    """Add one file's description of the exam: scan types accumulate, other fields fill gaps
    (the first file to say it wins, like measurements)."""
    if scan_type and scan_type not in exam.scan_types:
        exam.scan_types = sorted({*exam.scan_types, scan_type})
    for name, value in (
        ("vertebral_set", vertebral_set),
        ("scan_mode", scan_mode),
        ("analysis_protocol", analysis_protocol),
        ("reference_database", reference_database),
        ("software_version", software_version),
    ):
        if value and getattr(exam, name) is None:
            setattr(exam, name, value)


def merge_exams(session: Session, *, source: Exam, target: Exam) -> None:
    """Fold `source` into `target` (same visit, found to be one exam late): measurements move
    unless `target` has the site already (then they are compared like a new file's), files and
    conflicts follow, comparisons that named `source` are dropped for re-evaluation."""
    if source.id == target.id or source.patient_id != target.patient_id:
        raise ValueError("can only merge two different exams of one patient")
    flush_new_exams(session)  # exams of the batch not written yet (`deferred_exams`): the files' rows name them
    session.flush()
    flush_finished(session)  # files of the batch linked to `source` and not written yet follow it too
    flush_measurements(session)  # and rows held back (`merge_measurements`)
    merge_exam_details(
        target,
        vertebral_set=source.vertebral_set,
        scan_mode=source.scan_mode,
        analysis_protocol=source.analysis_protocol,
        reference_database=source.reference_database,
        software_version=source.software_version,
    )
    for scan_type in source.scan_types:
        merge_exam_details(target, scan_type=scan_type)
    existing = {(m.site, m.side): m for m in target.measurements}
    for moving in list(source.measurements):
        kept = existing.get((moving.site, moving.side))
        if kept is None:
            source.measurements.remove(moving)
            target.measurements.append(moving)
            existing[(moving.site, moving.side)] = moving
            session.execute(
                update(MeasurementConflict)
                .where(MeasurementConflict.measurement_id == moving.id)
                .values(exam_id=target.id)
                .execution_options(synchronize_session=False)
            )
        elif not bmd_agree(kept.bmd, moving.bmd):
            record_conflict(session, kept, as_site(moving), moving.source_file_id)
    session.flush()
    session.execute(
        update(SourceFile)
        .where(SourceFile.exam_id == source.id)
        .values(exam_id=target.id)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        delete(ComparisonRow)
        .where((ComparisonRow.from_exam_id == source.id) | (ComparisonRow.to_exam_id == source.id))
        .execution_options(synchronize_session=False)
    )
    session.delete(source)
    session.flush()
