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
message, or a second runner, finds it taken and does nothing.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.calibration import PrecisionRepeat
from db.exams import lock_patient, store_report
from db.files import (
    claim_sop_instance_uid,
    get_source_file,
    mark_ingested,
    mark_processing,
    mark_quarantined,
    register_source_file,
)
from db.history import load_patient_history, save_evaluation
from db.jobs import claim_job, claim_next_job, enqueue_evaluation, enqueue_ingest, fail_job, finish_job
from db.models import Job, Patient, SourceFile
from ingest.errors import ParseError
from ingest.parse import ParseLimits, parse_file
from ingest.report import ParsedReport
from monitor.evaluate import evaluate_patient
from monitor.precision import precision_study
from workers.child import ChildFailed, ChildLimits, run_in_child
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

log = logging.getLogger(__name__)

PARSER_VERSION = "dxa-monitor 0.1.0"
WORKER_CRASH = "worker_crash"

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
    return register_claimed(ctx, work_path, display_name(path.name))


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
        if reg.outcome == "duplicate":
            result = IntakeResult(reg.file.id, "duplicate", None, reg.file.status)
        else:
            job = enqueue_ingest(session, reg.file.id)
            result = IntakeResult(reg.file.id, "queued", job.id)
    if result.outcome == "duplicate":
        # The same bytes are already kept (archived, quarantined or being processed): this
        # copy adds nothing, and keeping it would make `work/` grow with every re-drop.
        if _stored_path_of(ctx, result.source_file_id) != str(work_path):
            work_path.unlink(missing_ok=True)
    elif result.job_id is not None:
        ctx.submit(result.job_id, "ingest_file")
    return result


def _stored_path_of(ctx: Context, source_file_id: int) -> str | None:
    with ctx.sessions() as session:
        row = session.get(SourceFile, source_file_id)
        return row.stored_path if row is not None else None


# --------------------------------------------------------------------------- running jobs


def run_job(ctx: Context, job_id: int) -> JobResult | None:
    """Run one given job (a Celery delivery); None when it is not queued any more."""
    with ctx.sessions.begin() as session:
        job = claim_job(session, job_id, worker=worker_name())
        snapshot = _snapshot(job) if job is not None else None
    return _execute(ctx, snapshot) if snapshot is not None else None


def run_next(ctx: Context, kinds: tuple[str, ...] | None = None) -> JobResult | None:
    """Run the oldest queued job (the embedded runner); None when there is none."""
    with ctx.sessions.begin() as session:
        job = claim_next_job(session, kinds=kinds, worker=worker_name())  # type: ignore[arg-type]
        snapshot = _snapshot(job) if job is not None else None
    return _execute(ctx, snapshot) if snapshot is not None else None


@dataclass(frozen=True)
class _JobSnapshot:
    id: int
    kind: str
    attempts: int
    source_file_id: int | None
    patient_id: int | None


def _snapshot(job: Job) -> _JobSnapshot:
    return _JobSnapshot(job.id, job.kind, job.attempts, job.source_file_id, job.patient_id)


def _execute(ctx: Context, job: _JobSnapshot) -> JobResult:
    if job.kind == "ingest_file":
        return _ingest(ctx, job)
    return _evaluate(ctx, job)


def _parse_limits(ctx: Context) -> tuple[ParseLimits, ChildLimits]:
    s = ctx.settings
    return (
        ParseLimits(max_bytes=s.max_file_bytes, max_pdf_pages=s.max_pdf_pages),
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


def _parse_path(path: str, name: str, limits: ParseLimits) -> ParsedReport:
    """Runs in the child: the bytes are read there too, so a huge file never bloats the worker."""
    return parse_file(Path(path).read_bytes(), name, limits)


def _ingest(ctx: Context, job: _JobSnapshot) -> JobResult:
    assert job.source_file_id is not None
    with ctx.sessions.begin() as session:
        file = session.get(SourceFile, job.source_file_id)
        if file is None:
            finish_job(session, _job(session, job.id))
            return JobResult(job.id, job.kind, "skipped", "source file row is gone")
        work_path = file.stored_path or ""
        name = file.original_name
        if job.attempts > ctx.settings.max_attempts:
            text = (
                f"processing this file stopped its worker {job.attempts - 1} times "
                "(crash, time-out or memory); it was set aside so it cannot block the queue"
            )
            return _quarantine(ctx, session, job, file, WORKER_CRASH, text)
        mark_processing(session, file, parser_version=PARSER_VERSION)

    parse_limits, child_limits = _parse_limits(ctx)
    _warm_parsers()
    try:
        report: ParsedReport = run_in_child(_parse_path, (work_path, name, parse_limits), child_limits)
    except ParseError as exc:
        with ctx.sessions.begin() as session:
            file = _file(session, job.source_file_id)
            return _quarantine(ctx, session, job, file, exc.code, exc.message)
    except ChildFailed as exc:
        with ctx.sessions.begin() as session:
            file = _file(session, job.source_file_id)
            if job.attempts >= ctx.settings.max_attempts:
                return _quarantine(ctx, session, job, file, exc.code, exc.message)
            fail_job(
                session,
                _job(session, job.id),
                exc.message,
                retry=True,
                max_attempts=ctx.settings.max_attempts,
                backoff=timedelta(seconds=2**job.attempts),
            )
            file.status = "pending"
        ctx.submit(job.id, job.kind)
        return JobResult(job.id, job.kind, "retry", exc.message, job.source_file_id)

    return _store(ctx, job, report, work_path, name)


def _store(ctx: Context, job: _JobSnapshot, report: ParsedReport, work_path: str, name: str) -> JobResult:
    assert job.source_file_id is not None
    with ctx.sessions.begin() as session:
        file = _file(session, job.source_file_id)
        holder = claim_sop_instance_uid(session, file, report.sop_instance_uid)
        if holder is not None:  # same UID, other bytes: claim_sop_instance_uid marked it quarantined
            return _quarantine(ctx, session, job, file, file.reason_code or "uid_conflict", file.reason_text or "")
        stored = store_report(session, report, source_file=file)
        dest = archive_path(ctx.settings.archive_dir, file.sha256, name, _now().date())
        mark_ingested(session, file, stored_path=str(dest), parser_version=PARSER_VERSION)
        evaluation = enqueue_evaluation(session, stored.patient.id)
        finish_job(session, _job(session, job.id))
        conflicts = len(stored.measurements.conflicts)
        detail = f"{report.format}, exam {report.exam_date.isoformat()}, {len(report.measurements)} sites" + (
            f", {conflicts} values disagree (flagged for QA)" if conflicts else ""
        )
        patient_pk, evaluation_id = stored.patient.id, evaluation.id
    source = Path(work_path)
    move_durably(source, dest)
    if source.is_relative_to(ctx.settings.quarantine_dir):  # re-processed after a fix: the old reason is void
        source.with_name(source.name + ".json").unlink(missing_ok=True)
    ctx.submit(evaluation_id, "evaluate_patient")
    return JobResult(job.id, job.kind, "ingested", detail, job.source_file_id, patient_pk)


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
    finish_job(session, _job(session, job.id))
    sidecar = _sidecar(file, code, text)
    session.commit()
    if work_path.is_file():
        quarantine_file(work_path, ctx.settings.quarantine_dir, code, sidecar)
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


def evaluate(ctx: Context, patient_id: int, today: date | None = None) -> None:
    """Recompute one patient's comparisons, flags and next scan (same rows when run twice)."""
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
        )
        save_evaluation(session, patient_id, result)


def _evaluate(ctx: Context, job: _JobSnapshot) -> JobResult:
    assert job.patient_id is not None
    evaluate(ctx, job.patient_id)
    with ctx.sessions.begin() as session:
        finish_job(session, _job(session, job.id))
    return JobResult(job.id, job.kind, "ingested", "evaluated", patient_id=job.patient_id)


def evaluate_all(ctx: Context, today: date | None = None) -> int:
    """Every patient again: the daily refresh that moves due and overdue with the calendar."""
    with ctx.sessions() as session:
        ids = list(session.scalars(select(Patient.id).order_by(Patient.id)))
    for patient_id in ids:
        evaluate(ctx, patient_id, today)
    return len(ids)


def queue_evaluation(ctx: Context, patient_id: int) -> None:
    with ctx.sessions.begin() as session:
        job = enqueue_evaluation(session, patient_id)
        job_id = job.id
    ctx.submit(job_id, "evaluate_patient")


# --------------------------------------------------------------------------- recovery


def _pid_alive(worker: str | None) -> bool:
    if not worker or ":" not in worker:
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return True  # another machine's worker: only the age rule applies
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def recover(ctx: Context, *, stale_after: timedelta | None = None) -> dict[str, int]:
    """Put everything a crash left half-done back on its way. Safe to run at any time.

    - jobs `running` whose worker process on this host is gone, or older than `stale_after`,
      are queued again (their attempts count, so a file that kills workers ends in quarantine);
    - files in `work/` whose row already names their final place are moved there;
    - files in `work/` the database does not know are registered as new arrivals.
    """
    counts = {"requeued": recover_jobs(ctx, stale_after=stale_after), "moved": 0, "registered": 0}
    counts.update(recover_files(ctx))
    return counts


def recover_jobs(ctx: Context, *, stale_after: timedelta | None = None) -> int:
    """Requeue `running` jobs whose worker died (same host) or that ran far past any time limit."""
    requeued = 0
    limit = stale_after or timedelta(seconds=ctx.settings.parse_timeout_s * 3 + 120)
    cutoff = _now() - limit
    with ctx.sessions.begin() as session:
        running = session.scalars(select(Job).where(Job.state == "running").with_for_update(skip_locked=True))
        for job in running:
            started = job.started_at or cutoff
            if not _pid_alive(job.worker) or started < cutoff:
                job.state = "queued"
                job.worker = None
                requeued += 1
                if job.source_file is not None and job.source_file.status == "processing":
                    job.source_file.status = "pending"
    return requeued


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
            elif target and target != str(path) and status in ("ingested", "quarantined"):
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


def queued_jobs(ctx: Context, older_than: timedelta = timedelta(0)) -> list[tuple[int, str]]:
    """Queued jobs (id, kind), for the sweeper that re-sends messages a broker lost."""
    cutoff = _now() - older_than
    with ctx.sessions() as session:
        rows = session.execute(
            select(Job.id, Job.kind).where(Job.state == "queued", Job.updated_at <= cutoff).order_by(Job.id)
        ).all()
    return [(int(i), str(k)) for i, k in rows]
