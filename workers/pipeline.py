"""The ingestion use cases, shared by the embedded runner, Celery tasks and `dxa ingest`.

The order of steps is what makes "nothing lost, nothing doubled" hold through a crash at
any point:

1. claim: the file leaves the inbox by an atomic rename (or a flushed copy) into `work/`;
2. register: its SHA-256 and an `ingest_file` job are committed together; a crash between 1
   and 2 leaves an unregistered file in `work/`, which `recover` registers;
3. parse in a killable child, then commit the rows and the file's final place in one
   transaction, and only then move the bytes; a crash between the commit and the move leaves
   a file in `work/` whose row already says where it goes, which `recover` finishes.

A job is claimed in the database before it runs, so a second delivery of the same Celery
message, or a second runner, finds it taken and does nothing. A file costs three commits: its
registration, its claim (the job `running`, the file `processing` and its attempt counted, before
the parse, so a file that kills its worker is known), and its store (rows, the file's final
state, the job done and the patient's evaluation queued, all at once). The evaluation is one more
commit after its claim, shared by every file of the patient stored while it was queued.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import socket
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from db.calibration import PrecisionRepeat
from db.exams import lock_patient, same_stored_results, store_report
from db.files import (
    UID_CONFLICT,
    UID_CONFLICT_TEXT,
    finish_ingested,
    get_source_file,
    mark_duplicate,
    mark_quarantined,
    register_source_file,
    reset_for_reprocess,
    start_processing,
    uid_holder,
)
from db.history import load_patient_history, save_evaluation
from db.jobs import (
    claim_job,
    claim_next_job,
    enqueue_ingest,
    fail_job,
    finish_job_id,
    lost_dispatches,
    queue_evaluation_once,
    stamp_dispatched,
    worker_gone,
)
from db.models import Job, Patient, SourceFile
from db.operations import STALE_AFTER
from db.vendor_lsc import patients_on_device
from ingest.errors import ParseError, TooComplex
from ingest.parse import ParseLimits, parse_file_reports
from ingest.report import ParsedReport
from monitor.evaluate import evaluate_patient
from monitor.precision import precision_study
from workers.child import ChildFailed, ChildLimits, ReusableChild, run_in_child
from workers.context import Context
from workers.files import (
    archive_path,
    claim_by_copy,
    claim_by_rename,
    display_name,
    move_durably,
    quarantine_code,
    quarantine_file,
    sha256_of,
)
from workers.liveness import heartbeat

log = logging.getLogger(__name__)

PARSER_VERSION = "dxa-monitor 0.1.0"
WORKER_CRASH = "worker_crash"
STORE_REFUSED = "store_refused"

FileOutcome = Literal["ingested", "duplicate", "quarantined", "retry", "skipped"]


@dataclass(frozen=True)
class IntakeResult:
    source_file_id: int
    outcome: Literal["queued", "duplicate"]
    job_id: int | None
    prior_status: str | None = None


@dataclass(frozen=True)
class JobResult:
    job_id: int
    kind: str
    outcome: FileOutcome
    detail: str
    source_file_id: int | None = None
    patient_id: int | None = None


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- intake


def intake(ctx: Context, path: Path, *, copy: bool) -> IntakeResult:
    """Claim one file and register it with its job (steps 1 and 2)."""
    work_dir = ctx.settings.work_dir
    work_path = claim_by_copy(path, work_dir) if copy else claim_by_rename(path, work_dir)
    try:
        return register_claimed(ctx, work_path, display_name(path.name))
    except Exception:
        # Not registered (the database locked or away): undo the claim so the file is seen again
        # at the next scan, rather than waiting in work/ for the next start-up's recovery.
        if copy:
            work_path.unlink(missing_ok=True)
        elif not path.exists():
            with contextlib.suppress(OSError):
                move_durably(work_path, path)
        raise


def register_claimed(ctx: Context, work_path: Path, original_name: str) -> IntakeResult:
    sha = sha256_of(work_path)
    with ctx.sessions.begin() as session:
        reg = register_source_file(
            session,
            sha256=sha,
            original_name=original_name,
            size_bytes=work_path.stat().st_size,
            stored_path=str(work_path),
        )
        kept_at = reg.file.stored_path
        if reg.outcome == "duplicate" and _worth_another_try(session, reg.file):
            prior = reg.file.status
            reset_for_reprocess(session, reg.file)
            if not (kept_at and Path(kept_at).is_file()):  # the kept copy is gone: use this one
                reg.file.stored_path = kept_at = str(work_path)
            job = enqueue_ingest(session, reg.file.id)
            result = IntakeResult(reg.file.id, "queued", job.id, prior)
        elif reg.outcome == "duplicate":
            result = IntakeResult(reg.file.id, "duplicate", None, reg.file.status)
        else:
            job = enqueue_ingest(session, reg.file.id)
            result = IntakeResult(reg.file.id, "queued", job.id)
    # The same bytes are already kept (archived, quarantined or being processed): this copy adds
    # nothing, and keeping it would make `work/` grow with every re-drop.
    if (result.outcome == "duplicate" or result.prior_status is not None) and kept_at != str(work_path):
        work_path.unlink(missing_ok=True)
    if result.job_id is not None:
        ctx.submit(result.job_id, "ingest_file")
    return result


# Quarantine reasons that say something about our process, not about the bytes.
_NOT_THE_FILES_FAULT = frozenset({WORKER_CRASH, STORE_REFUSED, "timeout", "memory", "crash", "parse_fault"})


def _worth_another_try(session: Session, file: SourceFile) -> bool:
    """Whether the same bytes dropped again should be processed again rather than answer
    `duplicate`: a file refused by an older parser, refused for a fault of ours (a crash, the
    database), or left `pending`/`processing` with no live job (an older version's stuck file)
    would otherwise never be looked at again. A refusal by this parser of these bytes stands."""
    if file.status == "quarantined":
        return file.parser_version != PARSER_VERSION or (file.reason_code or "") in _NOT_THE_FILES_FAULT
    if file.status in ("pending", "processing"):
        live = session.scalars(
            select(Job.id).where(Job.source_file_id == file.id, Job.state.in_(("queued", "running")))
        ).first()
        return live is None
    return False


# --------------------------------------------------------------------------- running jobs


def run_job(ctx: Context, job_id: int) -> JobResult | None:
    """Run one given job (a Celery delivery); None when it is not queued any more."""
    with ctx.sessions.begin() as session:
        job = claim_job(session, job_id, worker=worker_name())
        started = _start(ctx, session, _snapshot(job)) if job is not None else None
    return _execute_or_release(ctx, started) if started is not None else None


def run_next(ctx: Context, kinds: tuple[str, ...] | None = None) -> JobResult | None:
    """Run the oldest queued job (the embedded runner); None when there is none."""
    with ctx.sessions.begin() as session:
        job = claim_next_job(session, kinds=kinds, worker=worker_name())  # type: ignore[arg-type]
        started = _start(ctx, session, _snapshot(job)) if job is not None else None
    return _execute_or_release(ctx, started) if started is not None else None


def _execute_or_release(ctx: Context, started: _JobSnapshot | _Parse | JobResult) -> JobResult:
    """A job that fails by a fault (the database went away, the disk filled) goes back to `queued`
    at once, its file to `pending`, so neither stays `running`/`processing` until the sweeper's
    age rule (the Celery retry of the same message then claims it again). If even that cannot be
    written, the sweeper's rule remains."""
    try:
        return _execute(ctx, started)
    except Exception as exc:
        job = started.job if isinstance(started, _Parse) else started
        if isinstance(job, _JobSnapshot):
            log.warning("job %s failed by a fault (%s); put back in the queue", job.id, type(exc).__name__)
            try:
                _release(ctx, job.id)
            except Exception as again:
                log.warning("job %s could not be put back (%s); the sweeper will", job.id, type(again).__name__)
        raise


def _release(ctx: Context, job_id: int) -> None:
    with ctx.sessions.begin() as session:
        job = session.get(Job, job_id)
        if job is None or job.state != "running" or job.worker != worker_name():
            return
        job.state = "queued"
        job.worker = None
        if job.source_file is not None and job.source_file.status == "processing":
            job.source_file.status = "pending"


@dataclass(frozen=True)
class _JobSnapshot:
    id: int
    kind: str
    attempts: int
    source_file_id: int | None
    patient_id: int | None


@dataclass(frozen=True)
class _Parse:
    """An ingest job claimed with its file marked `processing`: what the parse and store need."""

    job: _JobSnapshot
    source_file_id: int
    work_path: str
    name: str
    sha256: str


def _snapshot(job: Job) -> _JobSnapshot:
    return _JobSnapshot(job.id, job.kind, job.attempts, job.source_file_id, job.patient_id)


def _start(ctx: Context, session: Session, job: _JobSnapshot) -> _JobSnapshot | _Parse | JobResult:
    """In the claim's transaction: an ingest job's file is marked `processing` (its attempt counted)
    in the same commit, or set aside when it has stopped its worker too often."""
    if job.kind != "ingest_file":
        return job
    assert job.source_file_id is not None
    if job.attempts > ctx.settings.max_attempts:
        file = session.get(SourceFile, job.source_file_id)
        if file is not None:
            text = (
                f"processing this file stopped its worker {job.attempts - 1} times "
                "(crash, time-out or memory); it was set aside so it cannot block the queue"
            )
            return _quarantine(ctx, session, job, file, WORKER_CRASH, text)
        started = None
    else:
        started = start_processing(session, job.source_file_id, parser_version=PARSER_VERSION)
    if started is None:
        finish_job_id(session, job.id)
        return JobResult(job.id, job.kind, "skipped", "source file row is gone")
    return _Parse(job, started.id, started.stored_path or "", started.original_name, started.sha256)


def _execute(ctx: Context, started: _JobSnapshot | _Parse | JobResult) -> JobResult:
    if isinstance(started, JobResult):
        return started
    job_id = started.job.id if isinstance(started, _Parse) else started.id
    with heartbeat(ctx.sessions, job_id, worker_name()):
        if isinstance(started, _Parse):
            return _ingest(ctx, started)
        return _evaluate(ctx, started)


def _parse_limits(ctx: Context) -> tuple[ParseLimits, ChildLimits]:
    s = ctx.settings
    return (
        ParseLimits(max_bytes=s.max_file_bytes, max_pdf_pages=s.max_pdf_pages, today=_now().date()),
        ChildLimits(timeout_s=s.parse_timeout_s, memory_mb=s.parse_memory_mb),
    )


_parsers_warm = False


def _warm_parsers() -> None:
    """Load, once per worker process, what the parsers otherwise load lazily (pdfplumber, pdfminer,
    the PDF templates), then freeze the heap from the garbage collector. Every forked parse child
    then starts with them already in (shared, copy-on-write) memory instead of importing them
    again for each file, and the collector does not touch, hence copy, the inherited pages:
    about 45 ms less per file (bench/pipeline.py)."""
    global _parsers_warm
    if _parsers_warm:
        return
    import gc

    import pdfminer.pdfdocument  # noqa: F401
    import pdfplumber  # noqa: F401

    from ingest.pdf import parse_pdf  # noqa: F401
    from ingest.pdf.template import builtin_templates

    builtin_templates()
    gc.freeze()
    _parsers_warm = True


def _parse_path(path: str, name: str, limits: ParseLimits) -> tuple[ParsedReport, ...]:
    """Runs in the child: the bytes are read there too, so a huge file never bloats the worker."""
    return parse_file_reports(Path(path).read_bytes(), name, limits)


_children = threading.local()  # a parse child per runner thread (per Celery pool process)


def parse_in_child(
    path: str, name: str, parse_limits: ParseLimits, child_limits: ChildLimits
) -> tuple[ParsedReport, ...]:
    """Parse in this thread's reusable child. When a child that had parsed other files before fails
    (crash, time-out, memory), the file is parsed again in a fresh child and that verdict counts:
    what a child did before must never get a file quarantined."""
    child = getattr(_children, "child", None)
    if child is None:
        child = _children.child = ReusableChild()
    reused = child.calls > 0 and child.pid is not None
    try:
        reports: tuple[ParsedReport, ...] = child.run(_parse_path, (path, name, parse_limits), child_limits)
    except ChildFailed as exc:
        if not exc.reused:
            raise
        log.info("a reused parse child failed (%s); parsing the file again in a fresh one", exc.code)
        reports = run_in_child(_parse_path, (path, name, parse_limits), child_limits)
    except TooComplex:
        if not reused:
            raise
        # Out of memory in a child that had parsed others may be their heap, not this file's need.
        log.info("a reused parse child ran out of memory; parsing the file again in a fresh one")
        reports = run_in_child(_parse_path, (path, name, parse_limits), child_limits)
    return reports


def _ingest(ctx: Context, work: _Parse) -> JobResult:
    job = work.job
    parse_limits, child_limits = _parse_limits(ctx)
    _warm_parsers()
    try:
        reports = parse_in_child(work.work_path, work.name, parse_limits, child_limits)
    except ParseError as exc:
        with ctx.sessions.begin() as session:
            file = _file(session, work.source_file_id)
            return _quarantine(ctx, session, job, file, exc.code, exc.message)
    except ChildFailed as exc:
        return _retry_later(ctx, work, exc.code, exc.message)
    except (OSError, EOFError, pickle.UnpicklingError) as exc:
        # A fault around the parse (the work file unreadable, the child's pipe broken), not a
        # verdict on the bytes: retried like a crash. Parsers themselves only raise ParseError.
        log.warning("job %s: parsing could not run (%s); retried", job.id, type(exc).__name__)
        return _retry_later(ctx, work, "parse_fault", f"parsing could not run ({type(exc).__name__})")

    try:
        return _store(ctx, work, reports, check_uid=False)
    except IntegrityError:
        # A unique key was taken: nearly always the file's DICOM instance UID, owned by a file with
        # other bytes (rare enough that checking it first for every file would cost more). Nothing
        # was kept; the second try looks for the owner first, and quarantines a UID conflict.
        log.info("store of job %s hit a unique key (a UID conflict?); checking first this time", job.id)
        try:
            return _store(ctx, work, reports, check_uid=True)
        except (IntegrityError, DataError) as exc:
            return _refused_by_database(ctx, work, exc)
    except DataError as exc:
        return _refused_by_database(ctx, work, exc)


def _retry_later(ctx: Context, work: _Parse, code: str, message: str) -> JobResult:
    """A crash, time-out or fault: the job queues again with backoff, until its attempts run out."""
    job = work.job
    with ctx.sessions.begin() as session:
        file = _file(session, work.source_file_id)
        if job.attempts >= ctx.settings.max_attempts:
            return _quarantine(ctx, session, job, file, code, message)
        fail_job(
            session,
            _job(session, job.id),
            message,
            retry=True,
            max_attempts=ctx.settings.max_attempts,
            backoff=timedelta(seconds=2**job.attempts),
        )
        file.status = "pending"
    ctx.submit(job.id, job.kind)
    return JobResult(job.id, job.kind, "retry", message, job.source_file_id)


def _refused_by_database(ctx: Context, work: _Parse, exc: Exception) -> JobResult:
    """The database refused a value the plausibility checks let through (a CHECK, a column too
    short): the same bytes would be refused again, so the file is quarantined now with that reason
    rather than retried or mistaken for a UID conflict. The driver's text quotes the values, so
    only the exception type is kept."""
    log.warning("job %s: the database refused the parsed values (%s)", work.job.id, type(exc).__name__)
    text = (
        "the database refused a value read from this file (out of range or too long); "
        "report it: a plausibility check is missing"
    )
    with ctx.sessions.begin() as session:
        return _quarantine(ctx, session, work.job, _file(session, work.source_file_id), STORE_REFUSED, text)


def _store(ctx: Context, work: _Parse, reports: tuple[ParsedReport, ...], *, check_uid: bool) -> JobResult:
    """One transaction: the rows of every report the file holds, the file's final state, the job
    done, each patient's evaluation queued; so a file of several reports is stored whole or not at
    all, and counted once. The file row links the first report's patient and exam; every
    measurement row names the file. Without `check_uid`, a DICOM instance UID another file owns
    fails the transaction (the unique index of `source_files.sop_instance_uid`), and nothing is kept."""
    job = work.job
    if not reports:  # parsers raise rather than return nothing; never count an empty file as ingested
        raise LookupError("parser returned no report")
    first = reports[0]
    with ctx.sessions.begin() as session:
        holder = uid_holder(session, work.source_file_id, first.sop_instance_uid) if check_uid else None
        if holder is not None and len(reports) == 1 and same_stored_results(session, holder, first):
            return _reencoded_duplicate(ctx, session, work, holder)
        if holder is not None:  # same UID, other results: QA decides which is right
            file = _file(session, work.source_file_id)
            file.conflict_with_id = holder
            return _quarantine(ctx, session, job, file, UID_CONFLICT, UID_CONFLICT_TEXT)
        stored = [store_report(session, report, source_file_id=work.source_file_id) for report in reports]
        dest = archive_path(ctx.settings.archive_dir, work.sha256, work.name, _now().date())
        finish_ingested(
            session,
            work.source_file_id,
            stored_path=str(dest),
            patient_id=stored[0].patient.id,
            exam_id=stored[0].exam.id,
            format=first.format,
            sop_instance_uid=first.sop_instance_uid,
            parser_version=PARSER_VERSION,
        )
        patients = list(dict.fromkeys(s.patient.id for s in stored))
        for one in stored:  # a machine's new printed LSC applies to everyone it scanned
            if one.lsc_changed:
                patients += [p for p in patients_on_device(session, one.device.id) if p not in patients]
        evaluations = [queue_evaluation_once(session, patient) for patient in patients]
        finish_job_id(session, job.id)
        details = []
        for report, one in zip(reports, stored, strict=True):
            conflicts = len(one.measurements.conflicts)
            details.append(
                f"{report.format}, exam {report.exam_date.isoformat()}, {len(report.measurements)} sites"
                + (f", {conflicts} values disagree (flagged for QA)" if conflicts else "")
            )
        detail = details[0] if len(details) == 1 else f"{len(details)} reports: " + "; ".join(details)
        patient_pk = stored[0].patient.id
    source = Path(work.work_path)
    move_durably(source, dest)
    if source.is_relative_to(ctx.settings.quarantine_dir):  # re-processed after a fix: the old reason is void
        source.with_name(source.name + ".json").unlink(missing_ok=True)
    for evaluation_id in evaluations:
        if evaluation_id is not None:  # else the patient's queued evaluation (already sent) covers this file
            ctx.submit(evaluation_id, "evaluate_patient")
    return JobResult(job.id, job.kind, "ingested", detail, work.source_file_id, patient_pk)


REENCODED_TEXT = (
    "the same DICOM instance as a file already ingested, re-encoded on the way (transfer syntax, "
    "pixel data or private elements changed); its results are identical, nothing new to store"
)


def _reencoded_duplicate(ctx: Context, session: Session, work: _Parse, holder: int) -> JobResult:
    """Same instance UID, other bytes, equal results: a router's re-encoding, not a conflict. The
    file is kept in the archive and counted once, as a duplicate of its first copy."""
    file = _file(session, work.source_file_id)
    dest = archive_path(ctx.settings.archive_dir, work.sha256, work.name, _now().date())
    file.conflict_with_id = holder
    file.stored_path = str(dest)
    file.parser_version = PARSER_VERSION
    mark_duplicate(session, file, reason_text=REENCODED_TEXT)
    finish_job_id(session, work.job.id)
    session.commit()
    move_durably(Path(work.work_path), dest)
    return JobResult(work.job.id, work.job.kind, "duplicate", REENCODED_TEXT, work.source_file_id)


def _quarantine(ctx: Context, session: Session, job: _JobSnapshot, file: SourceFile, code: str, text: str) -> JobResult:
    """Record the reason, commit (by leaving the caller's `begin()` block) and move the bytes."""
    folder = ctx.settings.quarantine_dir / quarantine_code(code)
    work_path = Path(file.stored_path or "")
    dest = folder / f"{file.sha256}{work_path.suffix}"
    mark_quarantined(
        session,
        file,
        reason_code=code,
        reason_text=text,
        stored_path=str(dest),
        parser_version=PARSER_VERSION,
    )
    finish_job_id(session, job.id)
    sidecar = _sidecar(file, code, text)
    session.commit()
    if work_path.is_file():
        quarantine_file(work_path, ctx.settings.quarantine_dir, code, sidecar)
        if work_path != dest and work_path.is_relative_to(ctx.settings.quarantine_dir):  # re-processed
            work_path.with_name(work_path.name + ".json").unlink(missing_ok=True)
    return JobResult(job.id, job.kind, "quarantined", f"{code}: {text}", job.source_file_id)


def _sidecar(file: SourceFile, code: str, text: str) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- evaluation


def _precision(repeats: Any) -> tuple[float, float]:
    grouped: dict[tuple[str, str], list[float]] = {}
    for r in repeats:
        assert isinstance(r, PrecisionRepeat)
        grouped.setdefault((r.technologist, r.patient_code), []).append(r.bmd)
    # Studies were checked for enough degrees of freedom when imported; here only recompute.
    result = precision_study("stored", grouped_values(grouped), min_degrees_of_freedom=1)
    return result.rms_sd_g_cm2, result.lsc_g_cm2


def grouped_values(grouped: dict[tuple[str, str], list[float]]) -> list[list[float]]:
    return [values for values in grouped.values() if len(values) >= 2]


def evaluate(ctx: Context, patient_id: int, today: date | None = None, *, job_id: int | None = None) -> None:
    """Recompute one patient's comparisons, flags and next scan (same rows when run twice); with
    `job_id`, that evaluation job is marked done in the same commit."""
    with ctx.sessions.begin() as session:
        # Lock first, read second: an evaluation that read the history before a concurrent store
        # committed must not save its stale result over a newer evaluation's (PostgreSQL; SQLite's
        # BEGIN IMMEDIATE already serialises the whole transaction).
        lock_patient(session, patient_id)
        history = load_patient_history(session, patient_id, precision_calculator=_precision)
        result = evaluate_patient(
            history.exams,
            history.therapies,
            history.lscs,
            history.cross_calibrations,
            ctx.monitoring,
            today or date.today(),
            birth_date=history.birth_date,
            vendor_lscs=history.vendor_lscs,
        )
        save_evaluation(session, patient_id, result, own_exams={e.exam_id for e in history.exams})
        if job_id is not None:
            finish_job_id(session, job_id)


def _evaluate(ctx: Context, job: _JobSnapshot) -> JobResult:
    assert job.patient_id is not None
    evaluate(ctx, job.patient_id, job_id=job.id)
    return JobResult(job.id, job.kind, "ingested", "evaluated", patient_id=job.patient_id)


def evaluate_all(ctx: Context, today: date | None = None) -> int:
    """Every patient again: the daily refresh that moves due and overdue with the calendar."""
    with ctx.sessions() as session:
        ids = list(session.scalars(select(Patient.id).order_by(Patient.id)))
    for patient_id in ids:
        evaluate(ctx, patient_id, today)
    return len(ids)


def queue_evaluation(ctx: Context, patient_id: int) -> None:
    """Queue the patient's re-evaluation (once: a queued one, already sent, covers it)."""
    with ctx.sessions.begin() as session:
        job_id = queue_evaluation_once(session, patient_id)
    if job_id is not None:
        ctx.submit(job_id, "evaluate_patient")


# --------------------------------------------------------------------------- recovery


def recover(ctx: Context, *, stale_after: timedelta | None = None) -> dict[str, int]:
    """Put everything a crash left half-done back on its way. Safe to run at any time.

    - jobs `running` whose worker process on this host is gone, or whose heartbeat stopped for
      `stale_after` (default `db.operations.STALE_AFTER`), are queued again (their attempts
      count, so a file that kills workers ends in quarantine);
    - files in `work/` whose row already names their final place are moved there;
    - files in `work/` the database does not know are registered as new arrivals.
    """
    counts = {"requeued": recover_jobs(ctx, stale_after=stale_after), "moved": 0, "registered": 0}
    counts.update(recover_files(ctx))
    return counts


def recover_jobs(ctx: Context, *, stale_after: timedelta | None = None) -> int:
    """Requeue `running` jobs whose worker died (a process of this host that is gone) or went
    silent (no heartbeat for `stale_after`, any host), and hand them to the workers again (a no-op
    in embedded mode, where the table is the queue). Their attempts go on counting."""
    requeued: list[tuple[int, str]] = []
    silent_since = _now() - (stale_after or STALE_AFTER)
    with ctx.sessions.begin() as session:
        running = session.scalars(select(Job).where(Job.state == "running").with_for_update(skip_locked=True))
        for job in running:
            if worker_gone(job.worker) or job.updated_at < silent_since:
                log.info(
                    "job %s taken over: its worker %s", job.id, "is gone" if worker_gone(job.worker) else "fell silent"
                )
                job.state = "queued"
                job.worker = None
                requeued.append((job.id, job.kind))
                if job.source_file is not None and job.source_file.status == "processing":
                    job.source_file.status = "pending"
    for job_id, kind in requeued:
        ctx.submit(job_id, kind)
    return len(requeued)


def recover_files(ctx: Context, *, settled_for: timedelta | None = None) -> dict[str, int]:
    """Finish moves a crash interrupted, and register files claimed but never recorded.

    Without `settled_for` (a process starting up, before it runs anything): every file in
    `work/`. With it (the periodic sweeper, which runs beside live jobs and the watcher): only
    files whose row finished at least that long ago are moved (a live job may be between its
    commit and its move), and unknown files are left alone (the watcher may be between its claim
    and its commit); the watcher registers those when it starts.
    """
    counts = {"moved": 0, "registered": 0}
    work_dir = ctx.settings.work_dir
    cutoff = _now() - settled_for if settled_for is not None else None
    if work_dir.is_dir():
        for path in sorted(work_dir.iterdir()):
            if not path.is_file() or path.name.endswith(".partial"):
                continue
            with ctx.sessions() as session:
                row = get_source_file(session, sha256_of(path))
                known = row is not None
                target = row.stored_path if row is not None else None
                status = row.status if row is not None else None
                finished = row.finished_at if row is not None else None
                sidecar = _sidecar(row, row.reason_code or "", row.reason_text or "") if row is not None else None
            if not known:
                if cutoff is None:
                    register_claimed(ctx, path, path.name)
                    counts["registered"] += 1
            elif target and target != str(path) and status in ("ingested", "duplicate", "quarantined"):
                if cutoff is not None and (finished is None or finished > cutoff):
                    continue
                _finish_move(path, Path(target), sidecar if status == "quarantined" else None)
                counts["moved"] += 1
    return counts


def _finish_move(path: Path, dest: Path, sidecar: dict[str, Any] | None) -> None:
    """Put a committed file where its row says; a quarantined one gets its sidecar too (the crash
    may have come before it was written)."""
    if sidecar is not None:
        side = dest.with_name(dest.name + ".json")
        if not side.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            side.write_text(json.dumps(sidecar, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    if dest.exists():
        path.unlink()
    else:
        move_durably(path, dest)


def resend_lost_jobs(
    ctx: Context,
    *,
    broker_idle: bool,
    min_age: timedelta = timedelta(seconds=20),
    max_age: timedelta = timedelta(minutes=10),
) -> list[tuple[int, str]]:
    """The sweeper's re-send: queued jobs whose message is most likely lost (`db.jobs.lost_dispatches`)
    are stamped as dispatched now and sent again; a job merely waiting behind a backlog is not."""
    with ctx.sessions.begin() as session:
        lost = lost_dispatches(session, min_age=min_age, max_age=max_age, broker_idle=broker_idle)
        stamp_dispatched(session, [job_id for job_id, _ in lost])
    for job_id, kind in lost:
        ctx.submit(job_id, kind)
    return lost
