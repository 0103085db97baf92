"""Celery tasks: each translates a message (a job id, or a chunk of ids run as one batch) into one
call of a use case of `services`.

The evaluations that a task's stores queue are run by the same task once its files are stored
(`_evaluating_here`), all of them in one batch, instead of each store's being sent to the broker:
sent, they waited behind every ingest message of a burst and then ran as dozens of tasks of two
or three patients, a broker round trip, a claim and a transaction each (bench/pipeline.py, 300
files, one worker: 35 such tasks, over a quarter of the burst's time, after the last file was
stored). Their job rows are
committed with the stores as before; should the task die before it evaluates them, the sweeper
sends them (`services.recovery.resend_lost_jobs`), and should it fail, they are sent at once.

Transient failures (the database restarting, a lost connection) are retried with backoff;
a second delivery of a message whose job already ran finds it claimed and does nothing.

The tasks are bound to the project's app (not `shared_task`): a process that only imports this
module to submit jobs (`dxa watch`, `dxa storescp`) must publish to DXA_BROKER_URL, not to the
default app's amqp://localhost, where `delay()` would hang the watcher.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta

from celery import Celery
from sqlalchemy.exc import OperationalError

from db.engine import dispose_after_fork
from services import evaluation, recovery, runner, stages
from services.context import Context, build_context
from services.logsafe import describe
from workers.celery_app import app

log = logging.getLogger(__name__)

SETTLED_S = 60  # a file finished this long ago and still in work/ was left there by a crash
TRANSIENT = (OperationalError, ConnectionError, TimeoutError)


class TransientFault(Exception):
    """A TRANSIENT error with its text dropped: Celery logs a retried task's exception, and a
    driver's message quotes the statement's parameters (patient names, IDs)."""


def _run_many(job_ids: list[int]) -> list[str]:
    """A chunk, and then the oldest queued files while any wait (`services.stages.taking_more`):
    the parse child goes on from one chunk's files to the next ones without a pause, and two pool
    processes share a burst evenly. The evaluations the stores queue run between parts, every few
    seconds (`services.stages.EVALUATE_EVERY_S`), and at the end."""
    with _evaluating_here() as outcomes, stages.taking_more(evaluate=lambda: _evaluate_deferred(outcomes)):
        try:
            results = runner.run_jobs(_ctx(), job_ids)
            # A chunk another process took meanwhile (it was taking queued files): take the queue's
            # files here too, or this process would idle while the other one stores the burst.
            results += stages.take_queued_files(_ctx())
        except TRANSIENT as exc:
            raise TransientFault(describe(exc)) from None
    return [result.outcome for result in results] + outcomes


def _run(job_id: int) -> str | None:
    with _evaluating_here():
        try:
            result = runner.run_job(_ctx(), job_id)
        except TRANSIENT as exc:
            raise TransientFault(describe(exc)) from None
    return result.outcome if result else None


_deferred: list[int] | None = None  # evaluation jobs queued by the task running in this process


@contextmanager
def _evaluating_here() -> Iterator[list[str]]:
    """Keep the evaluation jobs the block's transactions queue (and committed) instead of sending
    them; when the block ends, run them here as one batch (their outcomes are added to the list
    yielded), or send them to the broker if the block or their run failed. A pool process runs
    one task at a time, and a task's stores all run in its calling thread."""
    global _deferred
    outer, _deferred = _deferred, []
    outcomes: list[str] = []
    ok = False
    try:
        yield outcomes
        ok = True
    finally:
        evaluations, _deferred = _deferred, outer
        if evaluations and ok:
            _run_evaluations(evaluations, outcomes)
        elif evaluations:
            _send([(job_id, "evaluate_patient") for job_id in evaluations])


def _evaluate_deferred(outcomes: list[str]) -> None:
    """Run the evaluations the task's stores queued so far (between the parts of a long task)."""
    if _deferred:
        evaluations = list(_deferred)
        _deferred.clear()
        _run_evaluations(evaluations, outcomes)


def _run_evaluations(evaluations: list[int], outcomes: list[str]) -> None:
    """Run deferred evaluation jobs as one batch here; if that fails, they are put back in the
    queue by the runner and sent to the broker."""
    try:
        outcomes += [one.outcome for one in runner.run_jobs(_ctx(), evaluations)]
    except Exception as exc:
        log.warning("%d evaluations failed here (%s); sent to the queue", len(evaluations), describe(exc))
        _send([(job_id, "evaluate_patient") for job_id in evaluations])


def submit(job_id: int, kind: str) -> None:
    """Hand a committed job to the broker. If the broker is down, the sweeper re-sends it."""
    if kind == "evaluate_patient" and _deferred is not None:
        _deferred.append(job_id)  # run by this task once its files are stored (`_evaluating_here`)
        return
    _send([(job_id, kind)])


CHUNK = 32  # job ids per `dxa.run_jobs` message: parsed and stored in parts (`services.stages`)


def submit_batch(jobs: Sequence[tuple[int, str]]) -> None:
    """Hand a transaction's committed jobs to the broker in chunks of `CHUNK` ids, each a
    `dxa.run_jobs` task run as a batch (`services.runner.run_jobs`). A chunk the broker does not
    take stays queued in the database; the sweeper re-sends its jobs one by one. Evaluations
    queued by a task's stores are kept for that task (`_evaluating_here`)."""
    if _deferred is not None:
        _deferred.extend(job_id for job_id, kind in jobs if kind == "evaluate_patient")
        jobs = [(job_id, kind) for job_id, kind in jobs if kind != "evaluate_patient"]
    _send(jobs)


def _send(jobs: Sequence[tuple[int, str]]) -> None:
    if len(jobs) == 1:
        job_id, kind = jobs[0]
        task = ingest_file if kind == "ingest_file" else evaluate_patient
        try:
            task.delay(job_id)
        except Exception as exc:  # the job row stays queued; sweep_jobs sends it again
            log.warning("broker unavailable, job %s stays queued for the sweeper: %s", job_id, type(exc).__name__)
        return
    ids = [job_id for job_id, _ in jobs]
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        try:
            run_jobs.delay(chunk)
        except Exception as exc:
            log.warning("broker unavailable, %d jobs stay queued for the sweeper: %s", len(chunk), type(exc).__name__)


_current: Context | None = None
PING_IDLE_S = 10.0  # a pool process's PostgreSQL connection is pinged on checkout only after this long unused


def _ctx() -> Context:
    """The worker process's context (Celery tasks have no other place to keep it); its jobs are
    sent on through `submit`, like the web app's and the command line's.

    Its pooled connections are pinged only after sitting idle (`db.engine.ping_when_idle`): a
    ping on every checkout was a round trip more for each of a task's transactions (a part's
    claim, its store, the evaluations, the heartbeats; ~3 % of a pool process's time in a burst,
    bench/pipeline.py --profile). A connection the server ended a moment ago fails its statement
    instead: the task is retried as for any transient fault (`TransientFault`), its jobs put back."""
    global _current
    if _current is None:
        _current = build_context(submit=submit, submit_batch=submit_batch, ping_idle_after_s=PING_IDLE_S)
    return _current


def reset_after_fork() -> None:
    """A forked pool process must not reuse the parent's database connections."""
    if _current is not None:
        dispose_after_fork(_current.engine)


@app.task(
    name="dxa.ingest_file", autoretry_for=(TransientFault,), retry_backoff=True, retry_backoff_max=120, max_retries=10
)
def ingest_file(job_id: int) -> str | None:
    return _run(job_id)


@app.task(
    name="dxa.run_jobs", autoretry_for=(TransientFault,), retry_backoff=True, retry_backoff_max=120, max_retries=10
)
def run_jobs(job_ids: list[int]) -> list[str]:
    """A chunk of jobs (a watcher's scan, a batch's evaluations) run as one batch."""
    return _run_many(job_ids)


@app.task(
    name="dxa.evaluate_patient",
    autoretry_for=(TransientFault,),
    retry_backoff=True,
    retry_backoff_max=120,
    max_retries=10,
)
def evaluate_patient(job_id: int) -> str | None:
    return _run(job_id)


@app.task(name="dxa.refresh_schedules", autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def refresh_schedules() -> int:
    """Daily: due and overdue states move with the calendar even when no file arrives."""
    return evaluation.evaluate_all(_ctx())


def broker_depth(celery: Celery = app) -> int | None:
    """Messages waiting in the broker's task queue; None when the broker cannot be asked."""
    queue = celery.conf.task_default_queue
    try:
        with celery.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            declared = conn.default_channel.queue_declare(queue=queue, passive=True)
            return int(declared.message_count)
    except Exception as exc:
        # A queue that does not exist holds nothing (Redis drops an empty list's key).
        return 0 if getattr(exc, "reply_code", None) == 404 or "NOT_FOUND" in str(exc) else None


def broker_idle(celery: Celery = app) -> bool:
    """True when the broker's task queue holds no message at all (then the message of a job queued
    a while ago is gone, not waiting); False when it holds some, or cannot be asked."""
    return broker_depth(celery) == 0


@app.task(name="dxa.sweep_jobs")
def sweep_jobs() -> int:
    """Requeue (and re-send) jobs of dead workers, re-send queued jobs whose message was lost, and
    finish the moves of files whose worker died between its commit and its move (nothing else
    would, short of restarting `dxa watch`). A job waiting its turn behind a backlog is not sent
    again (`db.jobs.lost_dispatches`)."""
    ctx = _ctx()
    recovery.recover_jobs(ctx)
    recovery.recover_files(ctx, settled_for=timedelta(seconds=SETTLED_S))
    return len(recovery.resend_lost_jobs(ctx, broker_idle=broker_idle()))
