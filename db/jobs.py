"""The job table: the source of truth for pending work; Celery and the embedded runner only
carry job ids (issue 4).

Claiming is atomic on both backends with one code path: the candidate is selected `FOR UPDATE
SKIP LOCKED` (PostgreSQL; SQLite renders no locking clause) and then moved to `running` by an
`UPDATE … WHERE state = 'queued'` whose row count says whether this caller won. Nothing here
commits; a claimer should commit right after claiming so its row lock is short.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Job, utcnow

JobKindName = Literal["ingest_file", "evaluate_patient"]
MAX_ERROR_LENGTH = 4000
_CLAIM_TRIES = 5


def enqueue_job(
    session: Session,
    kind: JobKindName,
    *,
    source_file_id: int | None = None,
    patient_id: int | None = None,
    dedup_key: str | None = None,
    run_after: datetime | None = None,
) -> Job:
    """Queue a job. With a `dedup_key`, an already queued job with that key is returned instead
    (re-running a step enqueues nothing new)."""

    def queued() -> Job | None:
        if dedup_key is None:
            return None
        return session.scalars(select(Job).where(Job.dedup_key == dedup_key)).one_or_none()

    existing = queued()
    if existing is not None:
        return existing
    job = Job(
        kind=kind,
        state="queued",
        source_file_id=source_file_id,
        patient_id=patient_id,
        dedup_key=dedup_key,
        run_after=run_after,
        attempts=0,
    )
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        existing = queued()
        if existing is None:
            raise
        return existing
    return job


def enqueue_ingest(session: Session, source_file_id: int) -> Job:
    return enqueue_job(session, "ingest_file", source_file_id=source_file_id, dedup_key=f"ingest_file:{source_file_id}")


def enqueue_evaluation(session: Session, patient_id: int) -> Job:
    """At most one queued evaluation per patient; one may queue behind a running one."""
    return enqueue_job(session, "evaluate_patient", patient_id=patient_id, dedup_key=f"evaluate_patient:{patient_id}")


def _take(session: Session, job_id: int, worker: str | None, now: datetime) -> Job | None:
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == "queued")
        .values(
            state="running",
            attempts=Job.attempts + 1,
            dedup_key=None,
            worker=worker,
            started_at=now,
            finished_at=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        return None
    return session.get(Job, job_id, populate_existing=True)


def claim_next_job(
    session: Session,
    *,
    kinds: Iterable[JobKindName] | None = None,
    worker: str | None = None,
    now: datetime | None = None,
) -> Job | None:
    """The oldest runnable queued job, now `running` and owned by this caller; None when idle."""
    moment = now or utcnow()
    stmt = (
        select(Job.id)
        .where(Job.state == "queued", or_(Job.run_after.is_(None), Job.run_after <= moment))
        .order_by(Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if kinds is not None:
        stmt = stmt.where(Job.kind.in_(list(kinds)))
    for _ in range(_CLAIM_TRIES):
        job_id = session.scalars(stmt).first()
        if job_id is None:
            return None
        job = _take(session, job_id, worker, moment)
        if job is not None:
            return job
    return None


def claim_job(session: Session, job_id: int, *, worker: str | None = None, now: datetime | None = None) -> Job | None:
    """Claim one given job (a Celery task carrying its id); None when it is not queued any more
    (another delivery of the same message already ran it) or another transaction is claiming it
    right now; never waits for that transaction."""
    free = session.scalars(
        select(Job.id).where(Job.id == job_id, Job.state == "queued").with_for_update(skip_locked=True)
    ).first()
    if free is None:
        return None
    return _take(session, job_id, worker, now or utcnow())


def finish_job(session: Session, job: Job, *, now: datetime | None = None) -> None:
    moment = now or utcnow()
    job.state = "done"
    job.last_error = None
    job.finished_at = moment
    session.flush()


def fail_job(
    session: Session,
    job: Job,
    error: str,
    *,
    retry: bool = False,
    max_attempts: int = 3,
    backoff: timedelta = timedelta(seconds=0),
    now: datetime | None = None,
) -> Literal["queued", "failed"]:
    """Record a failure; with `retry` and attempts left the job queues again after `backoff`.
    `error` is stored for QA: callers keep patient data out of it."""
    moment = now or utcnow()
    job.last_error = error[:MAX_ERROR_LENGTH]
    if retry and job.attempts < max_attempts:
        job.state = "queued"
        job.run_after = moment + backoff
        job.worker = None
    else:
        job.state = "failed"
        job.finished_at = moment
    session.flush()
    return "queued" if job.state == "queued" else "failed"


def requeue_stale_jobs(
    session: Session, *, started_before: datetime, max_attempts: int, now: datetime | None = None
) -> tuple[list[int], list[int]]:
    """Jobs left `running` by a worker that died: queued again, or failed once they used up
    `max_attempts` (a file that kills its worker must not loop forever). Returns (requeued, failed)."""
    moment = now or utcnow()
    stale = list(
        session.scalars(
            select(Job)
            .where(Job.state == "running", Job.started_at < started_before)
            .order_by(Job.id)
            .with_for_update(skip_locked=True)
        )
    )
    requeued: list[int] = []
    failed: list[int] = []
    for job in stale:
        if job.attempts >= max_attempts:
            job.state = "failed"
            job.finished_at = moment
            job.last_error = job.last_error or "worker stopped while running this job"
            failed.append(job.id)
        else:
            job.state = "queued"
            job.worker = None
            requeued.append(job.id)
    session.flush()
    return requeued, failed


def job_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
    return {str(state): int(count) for state, count in rows}


def list_jobs(session: Session, *, state: str | None = None, limit: int = 100) -> list[Job]:
    stmt = select(Job).order_by(Job.id.desc()).limit(limit)
    if state is not None:
        stmt = stmt.where(Job.state == state)
    return list(session.scalars(stmt))
