"""Running one job: claim it in the database, then run the use case of its kind.

A job is claimed before it runs, so a second delivery of the same Celery message, or a second
runner, finds it taken and does nothing. The Celery tasks call `run_job` with the id they carry;
the embedded runner and `dxa ingest` call `run_next`.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from db.jobs import JobKindName, claim_job, claim_next_job
from db.models import Job
from services.context import Context
from services.evaluation import evaluate_job
from services.ingestion import ClaimedFile, ingest_claimed, start_ingest
from services.liveness import heartbeat
from services.outcomes import ClaimedJob, JobResult, worker_name

log = logging.getLogger(__name__)


def run_job(ctx: Context, job_id: int) -> JobResult | None:
    """Run one given job (a Celery delivery); None when it is not queued any more."""
    with ctx.sessions.begin() as session:
        job = claim_job(session, job_id, worker=worker_name())
        started = _start(ctx, session, ClaimedJob.of(job)) if job is not None else None
    return _execute_or_release(ctx, started) if started is not None else None


def run_next(ctx: Context, kinds: tuple[JobKindName, ...] | None = None) -> JobResult | None:
    """Run the oldest queued job (the embedded runner); None when there is none."""
    with ctx.sessions.begin() as session:
        job = claim_next_job(session, kinds=kinds, worker=worker_name())
        started = _start(ctx, session, ClaimedJob.of(job)) if job is not None else None
    return _execute_or_release(ctx, started) if started is not None else None


def _execute_or_release(ctx: Context, started: ClaimedJob | ClaimedFile | JobResult) -> JobResult:
    """A job that fails by a fault (the database went away, the disk filled) goes back to `queued`
    at once, its file to `pending`, so neither stays `running`/`processing` until the sweeper's
    age rule (the Celery retry of the same message then claims it again). If even that cannot be
    written, the sweeper's rule remains."""
    try:
        return _execute(ctx, started)
    except Exception as exc:
        job = started.job if isinstance(started, ClaimedFile) else started
        if isinstance(job, ClaimedJob):
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


def _start(ctx: Context, session: Session, job: ClaimedJob) -> ClaimedJob | ClaimedFile | JobResult:
    """In the claim's transaction: an ingest job's file is marked `processing` at once."""
    return start_ingest(ctx, session, job) if job.kind == "ingest_file" else job


def _execute(ctx: Context, started: ClaimedJob | ClaimedFile | JobResult) -> JobResult:
    if isinstance(started, JobResult):
        return started
    job_id = started.job.id if isinstance(started, ClaimedFile) else started.id
    with heartbeat(ctx.sessions, job_id, worker_name()):  # a silent job is taken over (services.recovery)
        if isinstance(started, ClaimedFile):
            return ingest_claimed(ctx, started)
        return evaluate_job(ctx, started)
