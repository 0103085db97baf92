"""Running jobs: claim them in the database, then run the use case of their kind.

A job is claimed before it runs, so a second delivery of the same Celery message, or a second
runner, finds it taken and does nothing. Jobs run in batches where that saves work: the embedded
runner claims up to `BATCH` of the oldest jobs of one kind (`run_batch`), a Celery task carries a
chunk of job ids (`run_jobs`); files of a batch are parsed one after the other and stored in one
transaction (`services.ingestion.ingest_batch`), evaluations likewise
(`services.evaluation.evaluate_jobs`). `run_job` and `run_next` run one job.

A job that has already been tried (its worker died with it, or it was requeued) runs alone, after
the rest of its batch: a file that kills its worker then takes no other file with it a second time.

On SQLite, whose writers queue on one lock, the embedded runner is one writer (`Pipeline`): it
claims a batch of files and hands it to a parser thread (which drives the parse child), stores the
batch parsed before meanwhile, and runs the evaluations that store queued; runner threads queueing
on `BEGIN IMMEDIATE` for each other's stores cost more than they parallelised. The overlap of parse
and store is `services.stages.Overlap`, the same that a Celery task's chunk goes through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from sqlalchemy.orm import Session

from db.jobs import JobKindName, claim_job, claim_jobs, claim_next_job, claim_next_jobs
from services.context import Context
from services.evaluation import evaluate_job, evaluate_jobs
from services.ingestion import ClaimedFile, ingest_batch, ingest_claimed, start_ingest, start_ingests
from services.liveness import heartbeat
from services.outcomes import ClaimedJob, JobResult, worker_name
from services.stages import Overlap, ingest_overlapped, release, run_or_release

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


BATCH = 16  # jobs claimed together by a runner; a quiet inbox's single file is a batch of one


def run_batch(ctx: Context, limit: int = BATCH, kind: JobKindName | None = None) -> list[JobResult]:
    """Claim up to `limit` of the oldest queued jobs of one kind (of `kind`) and run them (the
    embedded runner); empty when there is none."""
    with ctx.sessions.begin() as session:
        jobs = claim_next_jobs(session, limit=limit, kind=kind, worker=worker_name())
        started = [_start(ctx, session, ClaimedJob.of(job)) for job in jobs]
    return _execute_batch(ctx, started)


def run_jobs(ctx: Context, job_ids: Sequence[int]) -> list[JobResult]:
    """Run the given jobs (a Celery delivery of a chunk); those not queued any more are skipped."""
    with ctx.sessions.begin() as session:
        jobs = [ClaimedJob.of(job) for job in claim_jobs(session, job_ids, worker=worker_name())]
        started = _start_all(ctx, session, jobs)
    # A chunk's parse overlaps its store, part by part (a Celery worker process has no other work).
    return _execute_batch(ctx, started, ingest=ingest_overlapped)


def _start_all(
    ctx: Context, session: Session, jobs: Sequence[ClaimedJob]
) -> list[ClaimedJob | ClaimedFile | JobResult]:
    """`_start` for a claimed chunk, the ingest jobs' files marked `processing` in one statement."""
    files = iter(start_ingests(ctx, session, [job for job in jobs if job.kind == "ingest_file"]))
    return [next(files) if job.kind == "ingest_file" else job for job in jobs]


def _execute_batch(
    ctx: Context,
    started: Sequence[ClaimedJob | ClaimedFile | JobResult],
    ingest: Callable[[Context, Sequence[ClaimedFile]], list[JobResult]] = ingest_batch,
) -> list[JobResult]:
    results = [one for one in started if isinstance(one, JobResult)]
    files = [one for one in started if isinstance(one, ClaimedFile)]
    evaluations = [one for one in started if isinstance(one, ClaimedJob)]
    fresh = [one for one in files if one.job.attempts <= 1]
    groups: list[Sequence[ClaimedFile]] = [fresh] if fresh else []
    groups += [[one] for one in files if one.job.attempts > 1]
    for group in groups:
        ids = [one.job.id for one in group]
        results += run_or_release(ctx, ids, partial(ingest, ctx, group))
    if evaluations:
        ids = [one.id for one in evaluations]
        results += run_or_release(ctx, ids, partial(evaluate_jobs, ctx, evaluations))
    return results


EVALUATE_EVERY_S = 1.0  # the longest a queued evaluation waits while files keep coming


class Pipeline:
    """The one writer of the embedded runner on SQLite. Each `step` claims the next batch of files
    and feeds it to the `Overlap` (`services.stages`): its parse starts in the parser thread (the
    parse child does the work, outside this process's interpreter lock) while this thread stores
    the batch claimed in the previous step; then it runs a batch of the evaluations queued. Not
    thread-safe: one per runner thread."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parser")
        self._overlap = Overlap(ctx, self._parser)
        self._evaluated = time.monotonic()

    @property
    def busy(self) -> bool:
        """A batch is being parsed: call `step` again without waiting for new work."""
        return self._overlap.busy

    def step(self) -> list[JobResult]:
        ctx = self.ctx
        with ctx.sessions.begin() as session:
            jobs = claim_next_jobs(session, limit=BATCH, kind="ingest_file", worker=worker_name())
            started = _start_all(ctx, session, [ClaimedJob.of(job) for job in jobs])
        results = [one for one in started if isinstance(one, JobResult)]
        files = [one for one in started if isinstance(one, ClaimedFile)]
        results += self._overlap.feed([one for one in files if one.job.attempts <= 1])
        for one in files:  # tried before: alone (its own parse child), so it takes no other file with it
            if one.job.attempts > 1:
                results += run_or_release(ctx, [one.job.id], partial(ingest_batch, ctx, [one]))
        # Evaluations wait while files keep coming (a patient's queued evaluation then covers more
        # of its files), but never longer than EVALUATE_EVERY_S: the inbox's quiet single file is
        # evaluated at once.
        if len(jobs) < BATCH or time.monotonic() - self._evaluated >= EVALUATE_EVERY_S:
            results += run_batch(ctx, kind="evaluate_patient")
            self._evaluated = time.monotonic()
        return results

    def close(self) -> None:
        """Store what is being parsed (or put it back in the queue), and stop the parser thread."""
        try:
            self._overlap.drain()
        finally:
            self._parser.shutdown(wait=True)


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
                release(ctx, job.id)
            except Exception as again:
                log.warning("job %s could not be put back (%s); the sweeper will", job.id, type(again).__name__)
        raise


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
