"""Ingest of a claimed file: parse it in a killable child, then store its rows, the file's final
place, the job done and the patient's evaluation queued in one transaction, and only then move
the bytes (to `archive/`, or `quarantine/<reason code>/` with a JSON sidecar saying why).

A crash between that commit and the move leaves a file in `work/` whose row already says where
it goes, which `services.recovery.recover_files` finishes. A file that stopped its worker more
often than `DXA_MAX_ATTEMPTS` is set aside (quarantined as `worker_crash`) when it is claimed
again, so it cannot block the queue.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from db.exams import flush_new_exams
from db.files import (
    UID_CONFLICT,
    UID_CONFLICT_TEXT,
    finish_ingested,
    flush_finished,
    mark_duplicate,
    mark_quarantined,
    start_processing,
    start_processing_many,
    uid_holder,
    uid_owners,
)
from db.jobs import fail_job, finish_job_id, finish_job_ids
from db.measurements import flush_measurements
from db.models import Job, SourceFile
from db.patients import claim_patients, lock_batch_patients, patient_key
from db.reports import (
    SharedWrites,
    is_lock_conflict,
    prefetch_exams,
    prepare_shared_rows,
    same_stored_results,
    store_report,
    write_shared,
)
from db.vendor_lsc import patients_on_device
from ingest.errors import ParseError
from ingest.ocr.read import ScanReading
from ingest.parse import ParseLimits
from ingest.report import ParsedReport
from services.bytestore import database_path, kept_in_database, parse_copy
from services.child import ChildFailed, ChildLimits
from services.context import Context
from services.files import Moves, archive_path, quarantine_code, quarantine_file
from services.outcomes import PARSER_VERSION, STORE_REFUSED, WORKER_CRASH, ClaimedJob, JobResult
from services.parsing import parse_in_child, parse_limits, parse_many_in_child, warm_parsers
from services.queue import unit_of_work
from services.scans import hold_scan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClaimedFile:
    """An ingest job claimed with its file marked `processing`: what the parse and store need."""

    job: ClaimedJob
    source_file_id: int
    work_path: str
    name: str
    sha256: str


def _now() -> datetime:
    return datetime.now(UTC)


def start_ingest(ctx: Context, session: Session, job: ClaimedJob) -> ClaimedFile | JobResult:
    """In the claim's transaction: the job's file is marked `processing` (its attempt counted) in
    the same commit, or set aside when it has stopped its worker too often."""
    assert job.source_file_id is not None
    if job.attempts > ctx.settings.max_attempts:
        file = session.get(SourceFile, job.source_file_id)
        if file is not None:
            text = (
                f"processing this file stopped its worker {job.attempts - 1} times "
                "(crash, time-out or memory); it was set aside so it cannot block the queue"
            )
            return quarantine(ctx, session, job, file, WORKER_CRASH, text)
        started = None
    else:
        started = start_processing(session, job.source_file_id, parser_version=PARSER_VERSION)
    if started is None:
        finish_job_id(session, job.id)
        return JobResult(job.id, job.kind, "skipped", "source file row is gone")
    return ClaimedFile(job, started.id, started.stored_path or "", started.original_name, started.sha256)


def start_ingests(ctx: Context, session: Session, jobs: Sequence[ClaimedJob]) -> list[ClaimedFile | JobResult]:
    """`start_ingest` for a claimed chunk: the files under their attempts limit are marked
    `processing` in one statement, the others one by one."""
    fresh = [job for job in jobs if job.attempts <= ctx.settings.max_attempts]
    ids = [job.source_file_id for job in fresh if job.source_file_id is not None]
    started = start_processing_many(session, ids, parser_version=PARSER_VERSION)
    out: list[ClaimedFile | JobResult] = []
    for job in jobs:
        if job.attempts > ctx.settings.max_attempts or job.source_file_id is None:
            out.append(start_ingest(ctx, session, job))
            continue
        row = started.get(job.source_file_id)
        if row is None:
            finish_job_id(session, job.id)
            out.append(JobResult(job.id, job.kind, "skipped", "source file row is gone"))
        else:
            out.append(ClaimedFile(job, row.id, row.stored_path or "", row.original_name, row.sha256))
    return out


@dataclass
class _Fault:
    """The parse could not give a verdict on the bytes (the child died, timed out, the work file
    was unreadable): retried later, never a refusal of the file."""

    code: str
    message: str


_Parsed = tuple[ParsedReport, ...] | ScanReading | ParseError | _Fault


@dataclass
class _Stored:
    """One file's outcome within a batch's transaction, and what to do with its bytes once it
    committed (`_finish_moves`)."""

    result: JobResult
    patients: list[int] = field(default_factory=list)  # to evaluate
    move_from: Path | None = None
    move_to: Path | None = None
    sidecar: dict[str, Any] | None = None  # a quarantine's reason, written beside the bytes
    code: str = ""
    resubmit: bool = False  # a retry: its job is sent again after the commit
    shared: SharedWrites | None = None  # what it writes to a machine's rows, at the batch's end
    done_job: int | None = None  # its job, marked done with the batch's others in one statement


def ingest_claimed(ctx: Context, work: ClaimedFile) -> JobResult:
    """Parse and store a claimed file: ingested, quarantined with a reason, or (the child died)
    queued again with a backoff until its attempts are used up."""
    return ingest_batch(ctx, [work])[0]


def ingest_batch(ctx: Context, works: Sequence[ClaimedFile]) -> list[JobResult]:
    """Parse claimed files one after the other in this thread's parse child, then store them all
    in one transaction (`parse_batch`, then `store_batch`)."""
    return store_batch(ctx, parse_batch(ctx, works))


ParsedFile = tuple[ClaimedFile, _Parsed]  # a claimed file and what its parse gave


def parse_batch(ctx: Context, works: Sequence[ClaimedFile]) -> list[ParsedFile]:
    """The parse half of `ingest_batch`: each file in this thread's parse child, within the
    per-file limits; a child that dies or overruns costs that file only (`parse_in_child`). No
    database work: a back-load parses the next chunk in threads of its own (each with its child)
    while the previous one is stored (`services.backload`)."""
    limits, child_limits = parse_limits(ctx.settings, _now().date())
    warm_parsers()
    return [(work, _parse(ctx, work, limits, child_limits)) for work in works]


def parse_batch_ahead(ctx: Context, works: Sequence[ClaimedFile]) -> list[ParsedFile]:
    """`parse_batch` with the child's requests written ahead (`services.parsing.parse_many_in_child`):
    the child goes from one file to the next without waiting for this process, whose interpreter
    lock a storing thread holds most of the time (the embedded writer, `services.runner.Pipeline`).
    The same per-file limits and verdicts as `parse_batch`."""
    limits, child_limits = parse_limits(ctx.settings, _now().date())
    warm_parsers()
    verdicts: dict[int, _Parsed] = {}
    with ExitStack() as copies:
        paths: list[tuple[int, str, str]] = []
        for n, work in enumerate(works):
            try:
                paths.append(
                    (n, copies.enter_context(parse_copy(ctx, work.sha256, work.work_path, work.name)), work.name)
                )
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                verdicts[n] = _parse_fault(work, exc)
        parses = parse_many_in_child([(path, name) for _, path, name in paths], limits, child_limits)
        for (n, _, _), parse in zip(paths, parses, strict=True):
            verdicts[n] = _verdict(works[n], parse)
    return [(work, verdicts[n]) for n, work in enumerate(works)]


def _verdict(work: ClaimedFile, parse: tuple[ParsedReport, ...] | ScanReading | Exception) -> _Parsed:
    """What a parse gave, as `_parse` tells it: a file's verdict, or a fault to retry."""
    if isinstance(parse, ParseError):
        return parse
    if isinstance(parse, ChildFailed):
        return _Fault(parse.code, parse.message)
    if isinstance(parse, OSError | EOFError | pickle.UnpicklingError):
        return _parse_fault(work, parse)
    if isinstance(parse, Exception):
        raise parse
    return parse


def _parse_fault(work: ClaimedFile, exc: Exception) -> _Fault:
    log.warning("job %s: parsing could not run (%s); retried", work.job.id, type(exc).__name__)
    return _Fault("parse_fault", f"parsing could not run ({type(exc).__name__})")


def store_batch(ctx: Context, parsed: Sequence[ParsedFile]) -> list[JobResult]:
    """The store half of `ingest_batch`: all files in one transaction, each isolated from the
    others: a file the database refuses, or whose UID another file owns, gets its own typed
    outcome and the others are stored. Every touched patient is queued for evaluation once, and
    after the commit the bytes are moved with one flush per destination folder. A fault of the
    database (it went away) rolls the whole batch back: its jobs are put back in the queue by the
    runner (`services.runner`)."""
    # Stored in patient order, the order evaluations lock patients in too (`evaluate_jobs`).
    ordered = sorted(parsed, key=_patient_order)
    outcomes: list[_Stored] = []
    try:
        # The files of patients another batch is storing right now are set aside (`claim_patients`)
        # and stored after the others' commit, in a second transaction that waits for them.
        aside = _store_isolated(ctx, ordered, outcomes, skip_busy=True)
        if aside:
            _store_isolated(ctx, aside, outcomes, skip_busy=False)
    except OperationalError as exc:
        if not is_lock_conflict(exc):
            raise
        # A safety net: the lock order (`db.reports.SharedWrites`) should leave no circle, but a
        # deadlock must not cost the batch's parse. Nothing of that transaction was kept; its files
        # are stored again at once (those of a first transaction that committed are not).
        done = {one.result.job_id for one in outcomes}
        left = [item for item in ordered if item[0].job.id not in done]
        log.warning("a batch of %d files met a lock conflict; stored again", len(left))
        _store_isolated(ctx, left, outcomes, skip_busy=False)
    _finish_moves(ctx, outcomes)
    return [one.result for one in outcomes]


def _store_isolated(
    ctx: Context, ordered: Sequence[ParsedFile], outcomes: list[_Stored], *, skip_busy: bool
) -> list[ParsedFile]:
    """The batch stored without a savepoint per file (two statements each, and the ORM's work
    around them), the UIDs owned by other files looked up for the whole batch first; should the
    database refuse anything all the same (a value out of range, a UID another batch took
    meanwhile), nothing was kept and the batch is stored again with a savepoint per file, which
    gives the file at fault its own outcome. The outcomes are added to `outcomes` once committed;
    with `skip_busy`, the files whose patients another batch holds are returned, not stored."""
    batch = _Batch(careful=False, skip_busy=skip_busy)
    try:
        outcomes += _store_batch(ctx, ordered, batch)
    except (IntegrityError, DataError) as exc:
        log.info(
            "a batch of %d files was refused a row (%s); stored again file by file", len(ordered), type(exc).__name__
        )
        outcomes += _store_batch(ctx, ordered, _Batch(careful=True))
        return []
    return batch.aside


@dataclass
class _Batch:
    """How a batch's transaction stores its files. `careful`: each file in a savepoint of its own
    (a refusal costs that file only). Otherwise `taken` holds the files whose DICOM instance UID
    another file owns (stored before, or earlier in the batch): they take the path that looks
    for the owner first."""

    careful: bool
    taken: set[int] = field(default_factory=set)  # source file ids
    skip_busy: bool = False  # set aside the files of patients another batch holds (`claim_patients`)
    aside: list[ParsedFile] = field(default_factory=list)  # those files, not stored by this transaction


def _store_batch(ctx: Context, parsed: Sequence[ParsedFile], batch: _Batch | None = None) -> list[_Stored]:
    """The batch's transaction. Locks come in one order whatever the batch (so batches of several
    workers wait for each other, never in a circle): new machines first, then the patients in
    patient order, then the machines' shared rows, then the evaluation jobs in patient id order."""
    batch = batch or _Batch(careful=True)
    outcomes: list[_Stored] = []
    with unit_of_work(ctx) as uow:
        parsed = _claim_patients(uow.session, parsed, batch)
        reports = [r for _, one in parsed if isinstance(one, tuple) for r in one]
        prepare_shared_rows(uow.session, reports)
        if not batch.careful:
            batch.taken = _uids_taken(uow.session, parsed)
            stored = [one for work, one in parsed if isinstance(one, tuple) and work.source_file_id not in batch.taken]
            lock_batch_patients(uow.session, [r.patient for one in stored for r in one])
            prefetch_exams(uow.session, [r for one in stored for r in one])
        for work, result in parsed:
            outcomes.append(_store_one(ctx, uow.session, work, result, batch))
        flush_new_exams(
            uow.session
        )  # the batch's new exams first (`db.exams.deferred_exams`): the files' rows name them
        uow.session.flush()
        flush_finished(uow.session)
        flush_measurements(uow.session)
        shared = SharedWrites()
        for one in outcomes:
            if one.shared is not None:
                shared.extend(one.shared)
        patients = {p for one in outcomes for p in one.patients}
        for device_id in sorted(write_shared(uow.session, shared)):  # a new printed LSC: everyone it scanned
            patients.update(patients_on_device(uow.session, device_id))
        finish_job_ids(uow.session, [one.done_job for one in outcomes if one.done_job is not None])
        # A patient's evaluation queued already (and sent) covers these files too.
        uow.queue_evaluations(sorted(patients))
        for one in outcomes:
            if one.resubmit:
                uow.outbox.append((one.result.job_id, one.result.kind))
    return outcomes


def _claim_patients(session: Session, parsed: Sequence[ParsedFile], batch: _Batch) -> Sequence[ParsedFile]:
    """First in the batch's transaction (before it holds any lock another batch could wait for):
    its patients claimed (`db.patients.claim_patients`). With `batch.skip_busy`, the files of a
    patient another transaction holds (a batch's claim, an evaluation's row lock) go to
    `batch.aside` and the others are returned; otherwise every patient is waited for. Each file's
    every report counts (a file of several patients)."""
    keys = {work.job.id: [patient_key(r.patient) for r in one] for work, one in parsed if isinstance(one, tuple)}
    patients = [r.patient for _, one in parsed if isinstance(one, tuple) for r in one]
    busy = claim_patients(session, patients, wait=not batch.skip_busy)
    if not busy:
        return parsed
    batch.aside = [item for item in parsed if busy.intersection(keys.get(item[0].job.id, ()))]
    return [item for item in parsed if not busy.intersection(keys.get(item[0].job.id, ()))]


def _uids_taken(session: Session, parsed: Sequence[ParsedFile]) -> set[int]:
    """The files of the batch whose DICOM instance UID another file owns: before the batch (one
    query), or an earlier file of the batch that is stored with it."""
    uids = [(r[0].sop_instance_uid or "").strip() for _, r in parsed if isinstance(r, tuple) and r]
    owners = uid_owners(session, uids)
    taken: set[int] = set()
    for work, result in parsed:
        uid = (result[0].sop_instance_uid or "").strip() if isinstance(result, tuple) and result else ""
        if not uid:
            continue
        owner = owners.setdefault(uid, work.source_file_id)
        if owner != work.source_file_id:
            taken.add(work.source_file_id)
    return taken


def _patient_order(item: tuple[ClaimedFile, _Parsed]) -> tuple[str, str, int]:
    work, parsed = item
    if isinstance(parsed, tuple) and parsed:
        patient = parsed[0].patient
        return (patient.patient_id.strip(), (patient.issuer or "").strip(), work.job.id)
    return ("", "", work.job.id)


def _parse(ctx: Context, work: ClaimedFile, limits: ParseLimits, child_limits: ChildLimits) -> _Parsed:
    try:
        with parse_copy(ctx, work.sha256, work.work_path, work.name) as path:
            return parse_in_child(path, work.name, limits, child_limits)
    except ParseError as exc:
        return exc
    except ChildFailed as exc:
        return _Fault(exc.code, exc.message)
    except (OSError, EOFError, pickle.UnpicklingError) as exc:
        # A fault around the parse (the work file unreadable, the child's pipe broken), not a
        # verdict on the bytes: retried like a crash. Parsers themselves only raise ParseError.
        log.warning("job %s: parsing could not run (%s); retried", work.job.id, type(exc).__name__)
        return _Fault("parse_fault", f"parsing could not run ({type(exc).__name__})")


def _store_one(
    ctx: Context, session: Session, work: ClaimedFile, parsed: _Parsed, batch: _Batch | None = None
) -> _Stored:
    if isinstance(parsed, ParseError):
        return _quarantined(ctx, session, work.job, _file(session, work.source_file_id), parsed.code, parsed.message)
    if isinstance(parsed, _Fault):
        return _retry_later(ctx, session, work, parsed.code, parsed.message)
    if isinstance(parsed, ScanReading):  # OCR of a scan: held for a person (issue 14)
        return _Stored(hold_scan(ctx, session, work.job, _file(session, work.source_file_id), parsed))
    if batch is not None and not batch.careful:
        # No savepoint: a refusal fails the batch, stored again carefully (`_store_isolated`).
        taken = work.source_file_id in batch.taken
        if taken:  # the rare path reads the batch's files: their rows written first
            flush_new_exams(session)
            session.flush()
            flush_finished(session)
            flush_measurements(session)
        return _store(ctx, session, work, parsed, check_uid=taken, defer=True)
    try:
        with session.begin_nested():
            return _store(ctx, session, work, parsed, check_uid=False)
    except IntegrityError:
        # A unique key was taken: nearly always the file's DICOM instance UID, owned by a file with
        # other bytes (rare enough that checking it first for every file would cost more). Nothing
        # was kept; the second try looks for the owner first, and quarantines a UID conflict.
        log.info("store of job %s hit a unique key (a UID conflict?); checking first this time", work.job.id)
        try:
            with session.begin_nested():
                return _store(ctx, session, work, parsed, check_uid=True)
        except (IntegrityError, DataError) as exc:
            return _refused_by_database(ctx, session, work, exc)
    except DataError as exc:
        return _refused_by_database(ctx, session, work, exc)


def _retry_later(ctx: Context, session: Session, work: ClaimedFile, code: str, message: str) -> _Stored:
    """A crash, time-out or fault: the job queues again with backoff, until its attempts run out."""
    job = work.job
    file = _file(session, work.source_file_id)
    if job.attempts >= ctx.settings.max_attempts:
        return _quarantined(ctx, session, job, file, code, message)
    fail_job(
        session,
        _job(session, job.id),
        message,
        retry=True,
        max_attempts=ctx.settings.max_attempts,
        backoff=timedelta(seconds=2**job.attempts),
    )
    file.status = "pending"
    return _Stored(JobResult(job.id, job.kind, "retry", message, job.source_file_id), resubmit=True)


def _refused_by_database(ctx: Context, session: Session, work: ClaimedFile, exc: Exception) -> _Stored:
    """The database refused a value the plausibility checks let through (a CHECK, a column too
    short): the same bytes would be refused again, so the file is quarantined now with that reason
    rather than retried or mistaken for a UID conflict. The driver's text quotes the values, so
    only the exception type is kept."""
    log.warning("job %s: the database refused the parsed values (%s)", work.job.id, type(exc).__name__)
    text = (
        "the database refused a value read from this file (out of range or too long); "
        "report it: a plausibility check is missing"
    )
    return _quarantined(ctx, session, work.job, _file(session, work.source_file_id), STORE_REFUSED, text)


def _store(
    ctx: Context,
    session: Session,
    work: ClaimedFile,
    reports: tuple[ParsedReport, ...],
    *,
    check_uid: bool,
    defer: bool = False,
) -> _Stored:
    """In the batch's transaction: the rows of every report the file holds, the file's final
    state, the job done; so a file of several reports is stored whole or not at all, and counted
    once. The file row links the first report's patient and exam; every measurement row names the
    file. Without `check_uid`, a DICOM instance UID another file owns fails the savepoint (the
    unique index of `source_files.sop_instance_uid`), and nothing of the file is kept."""
    job = work.job
    if not reports:  # parsers raise rather than return nothing; never count an empty file as ingested
        raise LookupError("parser returned no report")
    first = reports[0]
    holder = uid_holder(session, work.source_file_id, first.sop_instance_uid) if check_uid else None
    if (
        holder is not None
        and len(reports) == 1
        and same_stored_results(session, holder, first)
        and _holder_says_the_same(ctx, session, holder, first)
    ):
        return _reencoded_duplicate(ctx, session, work, holder)
    if holder is not None:  # same UID, other results: QA decides which is right
        file = _file(session, work.source_file_id)
        file.conflict_with_id = holder
        return _quarantined(ctx, session, job, file, UID_CONFLICT, UID_CONFLICT_TEXT)
    shared = SharedWrites()
    stored = [
        store_report(session, report, source_file_id=work.source_file_id, shared=shared, defer=defer)
        for report in reports
    ]
    in_db = kept_in_database(ctx, session, work.sha256)  # then the watcher's host writes the copy
    dest = archive_path(ctx.settings.archive_dir, work.sha256, work.name, _now().date())
    if in_db:
        dest = Path(database_path(work.sha256))
    finish_ingested(
        session,
        work.source_file_id,
        stored_path=str(dest),
        patient_id=stored[0].patient.id,
        exam_id=stored[0].exam.id,
        format=first.format,
        sop_instance_uid=first.sop_instance_uid,
        parser_version=PARSER_VERSION,
        defer=defer,
    )
    patients = list(dict.fromkeys(s.patient.id for s in stored))
    details = []
    for report, one in zip(reports, stored, strict=True):
        conflicts = len(one.measurements.conflicts)
        details.append(
            f"{report.format}, exam {report.exam_date.isoformat()}, {len(report.measurements)} sites"
            + (f", {conflicts} values disagree (flagged for QA)" if conflicts else "")
        )
    detail = details[0] if len(details) == 1 else f"{len(details)} reports: " + "; ".join(details)
    result = JobResult(job.id, job.kind, "ingested", detail, work.source_file_id, stored[0].patient.id)
    source = Path(work.work_path)
    move_from, move_to = (None, None) if in_db else (source, dest)
    return _Stored(result, patients, move_from=move_from, move_to=move_to, shared=shared, done_job=job.id)


def _holder_says_the_same(ctx: Context, session: Session, holder_id: int, report: ParsedReport) -> bool:
    """Whether the file owning the UID said, itself, what `report` says about the patient. The
    stored rows cannot tell: a patient's row keeps the first birth date it was given, so a file
    with another birth date, stored after the patient's other files, leaves no trace of it, and
    the true copy arriving later would pass for its re-encoding (files of one patient are stored
    in any order once they run in parallel batches). Its bytes are parsed again, in the child:
    a rare path (two files with one UID). Anything that cannot be read back is a conflict."""
    holder = session.get(SourceFile, holder_id)
    if holder is None or not holder.stored_path:
        return False
    limits, child_limits = parse_limits(ctx.settings, _now().date())
    try:
        with parse_copy(ctx, holder.sha256, holder.stored_path, holder.original_name) as path:
            theirs = parse_in_child(path, holder.original_name, limits, child_limits)
    except (ParseError, ChildFailed, OSError, EOFError, pickle.UnpicklingError):
        return False
    if isinstance(theirs, ScanReading) or len(theirs) != 1:
        return False
    mine, other = report.patient, theirs[0].patient
    return (mine.patient_id, mine.issuer, mine.birth_date, mine.sex) == (
        other.patient_id,
        other.issuer,
        other.birth_date,
        other.sex,
    ) and report.exam_date == theirs[0].exam_date


def _finish_moves(ctx: Context, outcomes: Sequence[_Stored]) -> None:
    """After the commit: every file to its place, each destination folder flushed once."""
    moves = Moves()
    try:
        for one in outcomes:
            source = one.move_from
            if source is None or one.move_to is None:
                continue
            if one.sidecar is not None:
                if not source.is_file():
                    continue
                quarantine_file(source, ctx.settings.quarantine_dir, one.code, one.sidecar, moves)
                if source != one.move_to and source.is_relative_to(ctx.settings.quarantine_dir):  # re-processed
                    source.with_name(source.name + ".json").unlink(missing_ok=True)
                continue
            moves.move(source, one.move_to)
            if source.is_relative_to(ctx.settings.quarantine_dir):  # re-processed after a fix: the old reason is void
                source.with_name(source.name + ".json").unlink(missing_ok=True)
    finally:
        moves.sync()


REENCODED_TEXT = (
    "the same DICOM instance as a file already ingested, re-encoded on the way (transfer syntax, "
    "pixel data or private elements changed); its results are identical, nothing new to store"
)


def _reencoded_duplicate(ctx: Context, session: Session, work: ClaimedFile, holder: int) -> _Stored:
    """Same instance UID, other bytes, equal results: a router's re-encoding, not a conflict. The
    file is kept in the archive and counted once, as a duplicate of its first copy."""
    file = _file(session, work.source_file_id)
    in_db = kept_in_database(ctx, session, work.sha256)
    dest = archive_path(ctx.settings.archive_dir, work.sha256, work.name, _now().date())
    if in_db:
        dest = Path(database_path(work.sha256))
    file.conflict_with_id = holder
    file.stored_path = str(dest)
    file.parser_version = PARSER_VERSION
    mark_duplicate(session, file, reason_text=REENCODED_TEXT)
    finish_job_id(session, work.job.id)
    result = JobResult(work.job.id, work.job.kind, "duplicate", REENCODED_TEXT, work.source_file_id)
    return _Stored(result, move_from=None if in_db else Path(work.work_path), move_to=None if in_db else dest)


def quarantine(ctx: Context, session: Session, job: ClaimedJob, file: SourceFile, code: str, text: str) -> JobResult:
    """Record the reason, commit (the caller's `begin()` block ends with nothing left to do) and
    move the bytes beside their sidecar."""
    one = _quarantined(ctx, session, job, file, code, text)
    session.commit()
    _finish_moves(ctx, [one])
    return one.result


def _quarantined(ctx: Context, session: Session, job: ClaimedJob, file: SourceFile, code: str, text: str) -> _Stored:
    """In the caller's transaction: the file quarantined with its reason, its job done; the bytes
    move beside their sidecar after the commit (`_finish_moves`)."""
    folder = ctx.settings.quarantine_dir / quarantine_code(code)
    work_path = Path(file.stored_path or "")
    dest = folder / f"{file.sha256}{work_path.suffix}"
    in_db = kept_in_database(ctx, session, file.sha256)
    if in_db:  # the watcher's host writes the copy and its sidecar (`services.host_copies`)
        dest = Path(database_path(file.sha256))
    mark_quarantined(
        session,
        file,
        reason_code=code,
        reason_text=text,
        stored_path=str(dest),
        parser_version=PARSER_VERSION,
    )
    finish_job_id(session, job.id)
    result = JobResult(job.id, job.kind, "quarantined", f"{code}: {text}", job.source_file_id)
    if in_db:
        return _Stored(result)
    return _Stored(result, move_from=work_path, move_to=dest, sidecar=sidecar(file, code, text), code=code)


def sidecar(file: SourceFile, code: str, text: str) -> dict[str, Any]:
    """The JSON written beside a quarantined file: why, and what it was (no patient data)."""
    return {
        "reason": text,
        "reason_code": code,
        "sha256": file.sha256,
        "original_name": file.original_name,
        "size_bytes": file.size_bytes,
        "parser_version": PARSER_VERSION,
        "received_at": file.received_at.isoformat() if file.received_at else None,
        "quarantined_at": _now().isoformat(),
    }


def _file(session: Session, source_file_id: int) -> SourceFile:
    file = session.get(SourceFile, source_file_id)
    if file is None:
        raise LookupError("source file row disappeared")
    return file


def _job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise LookupError("job row disappeared")
    return job
