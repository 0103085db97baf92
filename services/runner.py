"""Running one job: claim it in the database, then run the use case of its kind.

A job is claimed before it runs, so a second delivery of the same Celery message, or a second
runner, finds it taken and does nothing. The Celery tasks call `run_job` with the id they carry;
the embedded runner and `dxa ingest` call `run_next`.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from db.jobs import JobKindName, claim_job, claim_next_job
from services.context import Context
from services.evaluation import evaluate_job
from services.ingestion import ClaimedFile, ingest_claimed, start_ingest
from services.liveness import heartbeat
from services.outcomes import ClaimedJob, JobResult, worker_name


def run_job(ctx: Context, job_id: int) -> JobResult | None:
    """Run one given job (a Celery delivery); None when it is not queued any more."""
    with ctx.sessions.begin() as session:
        job = claim_job(session, job_id, worker=worker_name())
        started = _start(ctx, session, ClaimedJob.of(job)) if job is not None else None
    return _execute(ctx, started) if started is not None else None


def run_next(ctx: Context, kinds: tuple[JobKindName, ...] | None = None) -> JobResult | None:
    """Run the oldest queued job (the embedded runner); None when there is none."""
    with ctx.sessions.begin() as session:
        job = claim_next_job(session, kinds=kinds, worker=worker_name())
        started = _start(ctx, session, ClaimedJob.of(job)) if job is not None else None
    return _execute(ctx, started) if started is not None else None


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
