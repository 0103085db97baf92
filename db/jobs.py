"""The job table: the source of truth for pending work; Celery and the embedded runner only
carry job ids (docs/architecture.md).

Claiming is atomic on both backends with one code path: the candidate is selected `FOR UPDATE
SKIP LOCKED` (PostgreSQL; SQLite renders no locking clause) and then moved to `running` by an
`UPDATE … WHERE state = 'queued' RETURNING …` that says whether this caller won. A job left
`running` by a worker process of this host that is gone can be claimed again at once by the next
delivery of its message (`claim_job`), instead of waiting for the sweeper. Nothing here commits; a
claimer should commit right after claiming so its row lock is short.

`updated_at` of a queued job is its last dispatch: set when it was queued (and handed to the
broker right after the commit) and again each time the sweeper re-sends it (`stamp_dispatched`).
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import Select, Table, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, aliased

from db.inserts import insert_unless_exists
from db.models import Job, SourceFile, utcnow

JobKindName = Literal["ingest_file", "evaluate_patient"]
MAX_ERROR_LENGTH = 4000
_CANDIDATE = aliased(Job, name="candidate")  # the claim's subquery, apart from the updated table


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
    for _ in range(3):
        job = _insert_job(session, kind, source_file_id, patient_id, dedup_key, run_after)
        if job is None:  # the key is taken by a queued job, unless a worker claimed it just now
            job = session.scalars(select(Job).where(Job.dedup_key == dedup_key)).one_or_none()
        if job is not None:
            return job
    raise RuntimeError("could not queue the job: its key kept changing hands")


def _insert_job(
    session: Session,
    kind: JobKindName,
    source_file_id: int | None,
    patient_id: int | None,
    dedup_key: str | None,
    run_after: datetime | None,
) -> Job | None:
    """The new queued job, or None when `dedup_key` belongs to a queued job already."""
    values = {
        "kind": kind,
        "state": "queued",
        "source_file_id": source_file_id,
        "patient_id": patient_id,
        "dedup_key": dedup_key,
        "run_after": run_after,
        "attempts": 0,
    }
    return insert_unless_exists(session, Job, values, ["dedup_key"])


def enqueue_ingest(session: Session, source_file_id: int) -> Job:
    return enqueue_job(session, "ingest_file", source_file_id=source_file_id, dedup_key=f"ingest_file:{source_file_id}")


def enqueue_ingests(session: Session, source_file_ids: Sequence[int]) -> dict[int, int]:
    """`enqueue_ingest` for several files in one INSERT: source file id -> its queued job's id
    (a file whose job is queued already is looked up like `enqueue_ingest` does)."""
    ids = list(dict.fromkeys(source_file_ids))
    dialect = session.get_bind().dialect.name
    if len(ids) < 2 or dialect not in ("postgresql", "sqlite"):
        return {i: enqueue_ingest(session, i).id for i in ids}
    rows = [
        {
            "kind": "ingest_file",
            "state": "queued",
            "source_file_id": i,
            "patient_id": None,
            "dedup_key": f"ingest_file:{i}",
            "run_after": None,
            "attempts": 0,
        }
        for i in ids
    ]
    if session.autoflush:
        session.flush()  # as session.execute would: pending rows first
    queued = {
        int(file_id or 0): int(job_id)
        for file_id, job_id in session.connection().execute(_insert_ingests(dialect), rows)
    }
    for i in ids:
        if i not in queued:
            queued[i] = enqueue_ingest(session, i).id
    return queued


@functools.cache
def _insert_ingests(dialect: str) -> Any:
    """`enqueue_ingests`' statement, built once and executed with the rows (compiled once)."""
    module = postgresql if dialect == "postgresql" else sqlite
    table = cast(Table, Job.__table__)
    stmt = module.insert(table).on_conflict_do_nothing(index_elements=["dedup_key"])
    return stmt.returning(table.c.source_file_id, table.c.id)


def enqueue_evaluation(session: Session, patient_id: int) -> Job:
    """At most one queued evaluation per patient; one may queue behind a running one."""
    return enqueue_job(session, "evaluate_patient", patient_id=patient_id, dedup_key=_evaluation_key(patient_id))


def queue_evaluation_once(session: Session, patient_id: int) -> int | None:
    """Queue the patient's evaluation; the new job's id, or None when one is queued already.

    None means the evaluation is coalesced into the queued one: that job has not been claimed yet
    (claiming clears its key), so when it runs it reads what this transaction commits (an
    evaluation locks the patient before it reads). Its message was sent when it was queued, hence
    nothing to send again."""
    job = _insert_job(session, "evaluate_patient", None, patient_id, _evaluation_key(patient_id), None)
    return job.id if job is not None else None


def queue_evaluations_once(session: Session, patient_ids: Sequence[int]) -> list[int]:
    """`queue_evaluation_once` for several patients in one statement (in the order given, which
    is the order their keys are taken in): the ids of the jobs queued, without those coalesced."""
    ids = list(dict.fromkeys(patient_ids))
    if not ids:
        return []
    if len(ids) == 1:
        one = queue_evaluation_once(session, ids[0])
        return [one] if one is not None else []
    rows = [
        {
            "kind": "evaluate_patient",
            "state": "queued",
            "source_file_id": None,
            "patient_id": patient_id,
            "dedup_key": _evaluation_key(patient_id),
            "run_after": None,
            "attempts": 0,
        }
        for patient_id in ids
    ]
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        return [i for i in (queue_evaluation_once(session, p) for p in ids) if i is not None]
    if session.autoflush:
        session.flush()  # as session.execute would: pending rows first
    # One multi-row INSERT, its rows in the order given, from a statement compiled once.
    return [int(job_id) for (job_id,) in session.connection().execute(_insert_evaluations(dialect), rows)]


@functools.cache
def _insert_evaluations(dialect: str) -> Any:
    module = postgresql if dialect == "postgresql" else sqlite
    table = cast(Table, Job.__table__)
    return module.insert(table).on_conflict_do_nothing(index_elements=["dedup_key"]).returning(table.c.id)


def _evaluation_key(patient_id: int) -> str:
    return f"evaluate_patient:{patient_id}"


def worker_gone(worker: str | None) -> bool:
    """True when `worker` ("host:pid") names a process of this host that no longer exists. A
    worker of another host is never declared gone from here (only the age rule applies to it)."""
    if not worker or ":" not in worker:
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except (ValueError, OverflowError, PermissionError):  # not a pid, or a process of another user
        return False
    return False


def _claim_values(worker: str | None, now: datetime) -> dict[str, object]:
    return {
        "state": "running",
        "attempts": Job.attempts + 1,
        "dedup_key": None,
        "worker": worker,
        "started_at": now,
        "finished_at": None,
        "updated_at": now,
    }


def _take_first(session: Session, candidates: Select[int], worker: str | None, now: datetime) -> Job | None:
    """Claim the first queued job of `candidates` (a select of ids from `_CANDIDATE`) in one
    statement: `UPDATE … WHERE id = (SELECT … LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING …` (a scalar
    subquery, run once; `IN` would let the planner run it again per row). A row another transaction
    holds is skipped, never waited for."""
    picked = candidates.where(_CANDIDATE.state == "queued").limit(1).with_for_update(skip_locked=True)
    return session.scalars(
        update(Job)
        .where(Job.id == picked.scalar_subquery(), Job.state == "queued")
        .values(**_claim_values(worker, now))
        .returning(Job)
        .execution_options(populate_existing=True, synchronize_session=False)
    ).one_or_none()


def _take_over(session: Session, job_id: int, worker: str | None, now: datetime, from_worker: str) -> Job | None:
    """Move a job that `from_worker` left `running` to this caller."""
    return session.scalars(
        update(Job)
        .where(Job.id == job_id, Job.state == "running", Job.worker == from_worker)
        .values(**_claim_values(worker, now))
        .returning(Job)
        .execution_options(populate_existing=True, synchronize_session=False)
    ).one_or_none()


def claim_next_job(
    session: Session,
    *,
    kinds: Iterable[JobKindName] | None = None,
    worker: str | None = None,
    now: datetime | None = None,
) -> Job | None:
    """The oldest runnable queued job, now `running` and owned by this caller; None when idle."""
    moment = now or utcnow()
    candidates = (
        select(_CANDIDATE.id)
        .where(or_(_CANDIDATE.run_after.is_(None), _CANDIDATE.run_after <= moment))
        .order_by(_CANDIDATE.id)
    )
    if kinds is not None:
        candidates = candidates.where(_CANDIDATE.kind.in_(list(kinds)))
    return _take_first(session, candidates, worker, moment)


def claim_next_jobs(
    session: Session,
    *,
    limit: int,
    kind: JobKindName | None = None,
    worker: str | None = None,
    now: datetime | None = None,
    first_tries: bool = False,
    queued_before: datetime | None = None,
) -> list[Job]:
    """Up to `limit` of the oldest runnable queued jobs (of the oldest job's kind, or of `kind`),
    now `running` and owned by this caller; empty when idle. The candidates are locked `FOR UPDATE
    SKIP LOCKED` (PostgreSQL), so two claimers take disjoint batches and never wait for each
    other; the `UPDATE … WHERE state = 'queued'` then keeps only what is still queued.
    `first_tries`: only jobs never claimed before (one tried before runs alone). `queued_before`:
    only jobs queued by then (the embedded writer's evaluations during a back-load, whose patients'
    files stop arriving a while after the first: `services.runner.SETTLE_S`)."""
    moment = now or utcnow()
    runnable = or_(Job.run_after.is_(None), Job.run_after <= moment)
    if first_tries:
        runnable = and_(runnable, Job.attempts == 0)
    if queued_before is not None:
        runnable = and_(runnable, Job.created_at <= queued_before)
    wanted: str | None = kind
    if wanted is None:
        wanted = session.scalars(
            select(Job.kind).where(Job.state == "queued", runnable).order_by(Job.id).limit(1)
        ).first()
        if wanted is None:
            return []
    ids = list(
        session.scalars(
            select(Job.id)
            .where(Job.state == "queued", Job.kind == wanted, runnable)
            .order_by(Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        return []
    jobs = session.scalars(
        update(Job)
        .where(Job.id.in_(ids), Job.state == "queued")
        .values(**_claim_values(worker, moment))
        .returning(Job)
        .execution_options(populate_existing=True, synchronize_session=False)
    ).all()
    return sorted(jobs, key=lambda job: job.id)


@dataclass(frozen=True)
class ClaimedFileRow:
    """A file's ingest job claimed by `claim_next_files`, and its file as it now is (`processing`)."""

    job_id: int
    attempts: int
    source_file_id: int | None  # None: the file's row is gone
    stored_path: str
    original_name: str
    sha256: str


def claim_next_files(
    session: Session, *, limit: int, worker: str | None, parser_version: str, now: datetime | None = None
) -> list[ClaimedFileRow] | None:
    """Up to `limit` of the oldest runnable queued ingest jobs never claimed before, now `running`
    and this caller's, their files marked `processing` (their attempt counted), in one statement
    (PostgreSQL: the claim and `db.files.start_processing_many` as data-modifying CTEs, plain
    columns back, where the two statements and their ORM rows cost a Celery pool process ~6 % of
    its time, bench/pipeline.py). In job id order; a job whose file row is gone comes without it
    (`source_file_id` None). None on other databases: `claim_next_jobs` with `first_tries` there."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    moment = now or utcnow()
    picked = (
        select(_CANDIDATE.id)
        .where(
            _CANDIDATE.state == "queued",
            _CANDIDATE.kind == "ingest_file",
            _CANDIDATE.attempts == 0,
            or_(_CANDIDATE.run_after.is_(None), _CANDIDATE.run_after <= moment),
        )
        .order_by(_CANDIDATE.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    claimed = (
        update(Job)
        .where(Job.id == picked.c.id, Job.state == "queued")
        .values(**_claim_values(worker, moment))
        .returning(Job.id, Job.attempts, Job.source_file_id)
        .cte("claimed")
    )
    started = (
        update(SourceFile)
        .where(SourceFile.id == claimed.c.source_file_id)
        .values(status="processing", attempts=SourceFile.attempts + 1, parser_version=parser_version, updated_at=moment)
        .returning(SourceFile.id, SourceFile.stored_path, SourceFile.original_name, SourceFile.sha256)
        .cte("started")
    )
    rows = session.execute(
        select(
            claimed.c.id,
            claimed.c.attempts,
            started.c.id,
            started.c.stored_path,
            started.c.original_name,
            started.c.sha256,
        )
        .select_from(claimed.outerjoin(started, started.c.id == claimed.c.source_file_id))
        .order_by(claimed.c.id)
    ).all()
    return [
        ClaimedFileRow(
            int(job_id),
            int(attempts),
            None if file_id is None else int(file_id),
            str(path or ""),
            str(name or ""),
            str(sha or ""),
        )
        for job_id, attempts, file_id, path, name, sha in rows
    ]


def claim_job(session: Session, job_id: int, *, worker: str | None = None, now: datetime | None = None) -> Job | None:
    """Claim one given job (a Celery task carrying its id); None when it is not queued any more
    (another delivery of the same message already ran it) or another transaction is claiming it
    right now; never waits for that transaction.

    A job `running` under a worker process of this host that is gone (`worker_gone`: a pool
    process killed mid-job, whose message the broker delivers again) is taken over at once; its
    attempts go on counting, so a file that kills every worker still ends in quarantine."""
    moment = now or utcnow()
    job = _take_first(session, select(_CANDIDATE.id).where(_CANDIDATE.id == job_id), worker, moment)
    if job is not None:
        return job
    row = session.execute(
        select(Job.state, Job.worker).where(Job.id == job_id).with_for_update(skip_locked=True)
    ).first()
    if row is not None and row.state == "running" and row.worker != worker and worker_gone(row.worker):
        return _take_over(session, job_id, worker, moment, row.worker)
    return None


def claim_jobs(
    session: Session, job_ids: Sequence[int], *, worker: str | None = None, now: datetime | None = None
) -> list[Job]:
    """`claim_job` for a chunk of ids (a Celery task's) in one statement: those still queued, now
    `running` and this caller's, in the order given; a row another transaction holds is skipped.
    The rare ids left (`running` under a worker process of this host that is gone) are taken over
    one by one, as `claim_job` does."""
    ids = list(dict.fromkeys(job_ids))
    if not ids:
        return []
    moment = now or utcnow()
    picked = (
        select(_CANDIDATE.id)
        .where(_CANDIDATE.id.in_(ids), _CANDIDATE.state == "queued")
        .with_for_update(skip_locked=True)
    )
    claimed = {
        job.id: job
        for job in session.scalars(
            update(Job)
            .where(Job.id.in_(picked), Job.state == "queued")
            .values(**_claim_values(worker, moment))
            .returning(Job)
            .execution_options(populate_existing=True, synchronize_session=False)
        )
    }
    left = [i for i in ids if i not in claimed]
    if left:
        rows = session.execute(
            select(Job.id, Job.state, Job.worker)
            .where(Job.id.in_(left), Job.state == "running")
            .with_for_update(skip_locked=True)
        ).all()
        for job_id, _, owner in rows:
            if owner is not None and owner != worker and worker_gone(owner):
                taken = _take_over(session, job_id, worker, moment, owner)
                if taken is not None:
                    claimed[job_id] = taken
    return [claimed[i] for i in ids if i in claimed]


def finish_job(session: Session, job: Job, *, now: datetime | None = None) -> None:
    moment = now or utcnow()
    job.state = "done"
    job.last_error = None
    job.finished_at = moment
    session.flush()


def finish_job_id(session: Session, job_id: int, *, now: datetime | None = None) -> None:
    """`finish_job` by id, in one UPDATE (no need to load the row)."""
    moment = now or utcnow()
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(state="done", last_error=None, finished_at=moment, updated_at=moment)
        .execution_options(synchronize_session=False)
    )


def finish_job_ids(session: Session, job_ids: Sequence[int], *, now: datetime | None = None) -> None:
    """`finish_job_id` for several jobs (a batch's) in one UPDATE."""
    if not job_ids:
        return
    moment = now or utcnow()
    session.execute(
        update(Job)
        .where(Job.id.in_(list(job_ids)))
        .values(state="done", last_error=None, finished_at=moment, updated_at=moment)
        .execution_options(synchronize_session=False)
    )


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


def lost_dispatches(
    session: Session,
    *,
    now: datetime | None = None,
    min_age: timedelta = timedelta(seconds=20),
    max_age: timedelta = timedelta(minutes=10),
    broker_idle: bool = False,
    margin: timedelta = timedelta(seconds=2),
) -> list[tuple[int, str]]:
    """Queued jobs (id, kind) whose message the broker has most likely lost, for the sweeper.

    A job dispatched (queued or re-sent) less than `min_age` ago is never among them: its message
    may simply be on its way. An older one is, when
    - the broker holds no message waiting (`broker_idle`, the caller asked it): a message of this
      job would be there, or already delivered and the job claimed;
    - or a job queued after this one's dispatch (more than `margin` after: clocks and commits of
      several processes) has already been taken by a worker: the broker delivers in order, so this
      job's message would have come first;
    - or its dispatch is older than `max_age` (a safety net, should the order ever not hold).
    A job merely waiting its turn behind a deep backlog is none of these, so a big batch is not
    flooded with duplicate deliveries (each of which a worker would find claimed and drop)."""
    moment = now or utcnow()
    fresh = moment - min_age
    if broker_idle:
        cutoff = fresh
    else:
        newest_taken = session.scalars(
            select(Job.created_at).where(Job.state != "queued").order_by(Job.id.desc()).limit(1)
        ).first()
        cutoff = moment - max_age
        if newest_taken is not None:
            cutoff = max(cutoff, min(newest_taken - margin, fresh))
    rows = session.execute(
        select(Job.id, Job.kind).where(Job.state == "queued", Job.updated_at <= cutoff).order_by(Job.id)
    ).all()
    return [(int(i), str(k)) for i, k in rows]


def stamp_dispatched(session: Session, job_ids: Sequence[int], *, now: datetime | None = None) -> None:
    """Record that these queued jobs were (re-)sent to the broker just now."""
    if job_ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(list(job_ids)), Job.state == "queued")
            .values(updated_at=now or utcnow())
            .execution_options(synchronize_session=False)
        )


def touch_running(
    session: Session, job_id: int | Sequence[int], worker: str | None, *, now: datetime | None = None
) -> bool:
    """The heartbeat of a running job (or of a batch's jobs): its `updated_at` is now. False when
    none is this worker's any more (finished, or taken over after the worker was silent too long)."""
    ids = [job_id] if isinstance(job_id, int) else list(job_id)
    result = session.execute(
        update(Job)
        .where(Job.id.in_(ids), Job.state == "running", Job.worker == worker)
        .values(updated_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def job_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
    return {str(state): int(count) for state, count in rows}


def list_jobs(session: Session, *, state: str | None = None, limit: int = 100) -> list[Job]:
    stmt = select(Job).order_by(Job.id.desc()).limit(limit)
    if state is not None:
        stmt = stmt.where(Job.state == state)
    return list(session.scalars(stmt))
