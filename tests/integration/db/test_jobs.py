"""The job table: enqueue with de-duplication, exclusive claims, retries, stale recovery."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from db.engine import make_engine, session_factory
from db.files import register_source_file
from db.jobs import (
    claim_job,
    claim_next_job,
    enqueue_evaluation,
    enqueue_ingest,
    fail_job,
    finish_job,
    job_counts,
    lost_dispatches,
    queue_evaluation_once,
    stamp_dispatched,
    worker_gone,
)
from db.models import Job, utcnow
from db.patients import upsert_patient
from ingest.report import PatientInfo
from tests.conftest import clear_tables
from tests.integration.db.helpers import sha


def _files(session: Session, n: int) -> list[int]:
    ids = [register_source_file(session, sha256=sha(f"f{i}"), original_name=f"{i}.dcm").file.id for i in range(n)]
    session.commit()
    return ids


def test_enqueue_is_deduplicated_while_queued(session: Session) -> None:
    patient = upsert_patient(session, PatientInfo("J1"))
    first = enqueue_evaluation(session, patient.id)
    again = enqueue_evaluation(session, patient.id)
    session.commit()
    assert first.id == again.id
    claimed = claim_next_job(session, worker="w1")
    session.commit()
    assert claimed is not None and claimed.id == first.id and claimed.dedup_key is None
    behind = enqueue_evaluation(session, patient.id)  # may queue behind the running one
    session.commit()
    assert behind.id != first.id and behind.state == "queued"


def test_claim_order_and_life_cycle(session: Session) -> None:
    a, b = (enqueue_ingest(session, f) for f in _files(session, 2))
    session.commit()
    job = claim_next_job(session, worker="w1")
    assert job is not None and job.id == a.id
    assert (job.state, job.attempts, job.worker) == ("running", 1, "w1")
    assert job.started_at is not None and job.started_at.tzinfo is not None
    finish_job(session, job)
    session.commit()
    assert claim_job(session, a.id) is None  # done jobs cannot be claimed again
    second = claim_job(session, b.id, worker="w2")
    assert second is not None and claim_job(session, b.id) is None
    session.commit()
    assert claim_next_job(session) is None
    assert job_counts(session) == {"done": 1, "running": 1}


def test_kinds_filter(session: Session) -> None:
    [f] = _files(session, 1)
    enqueue_ingest(session, f)
    patient = upsert_patient(session, PatientInfo("J2"))
    evaluate = enqueue_evaluation(session, patient.id)
    session.commit()
    job = claim_next_job(session, kinds=["evaluate_patient"])
    assert job is not None and job.id == evaluate.id


def test_failure_retries_with_backoff_then_fails(session: Session) -> None:
    [f] = _files(session, 1)
    enqueue_ingest(session, f)
    session.commit()
    now = utcnow()
    job = claim_next_job(session, now=now)
    assert job is not None
    assert (
        fail_job(session, job, "timeout", retry=True, max_attempts=2, backoff=timedelta(minutes=5), now=now) == "queued"
    )
    session.commit()
    assert claim_next_job(session, now=now + timedelta(minutes=1)) is None  # still backing off
    job = claim_next_job(session, now=now + timedelta(minutes=6))
    assert job is not None and job.attempts == 2
    assert fail_job(session, job, "timeout again", retry=True, max_attempts=2) == "failed"
    session.commit()
    assert (job.state, job.last_error) == ("failed", "timeout again")


def test_many_claimers_never_share_a_job(engine: Engine) -> None:
    make = session_factory(engine)
    with make() as s:
        expected = {enqueue_ingest(s, f).id for f in _files(s, 40)}
        s.commit()
    got: list[list[int]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def claimer(i: int) -> None:
        try:
            with make() as s:
                barrier.wait()
                while True:
                    job = claim_next_job(s, worker=f"w{i}")
                    s.commit()
                    if job is None:
                        return
                    got[i].append(job.id)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    claimed = [j for g in got for j in g]
    assert sorted(claimed) == sorted(expected)  # every job once, none twice
    assert len(set(claimed)) == len(claimed)


@pytest.mark.postgres
def test_a_locked_job_is_skipped_not_shared_on_postgres(postgres_url: str) -> None:
    """Two open transactions: the second claimer skips the row the first holds, without waiting."""
    engine = make_engine(postgres_url)
    clear_tables(engine)
    make = session_factory(engine)
    with make() as s:
        first_id, second_id = (enqueue_ingest(s, f).id for f in _files(s, 2))
        s.commit()
    with make() as a, make() as b:
        b.connection().exec_driver_sql("SET lock_timeout = '2s'")
        job_a = claim_next_job(a, worker="a")  # transaction still open: row locked
        job_b = claim_next_job(b, worker="b")
        assert job_a is not None and job_b is not None
        assert (job_a.id, job_b.id) == (first_id, second_id)
        assert claim_job(b, first_id) is None  # held by a: skipped, not waited for
        b.commit()
        a.commit()
    with make() as s:
        states = {j.id: (j.state, j.worker) for j in s.scalars(select(Job))}
        assert states == {first_id: ("running", "a"), second_id: ("running", "b")}
    engine.dispose()


def _dead_local_worker() -> str:
    """ "host:pid" of a process of this host that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}"


def test_a_job_left_running_by_a_dead_local_worker_is_taken_over(session: Session) -> None:
    dead = _dead_local_worker()
    assert worker_gone(dead)
    alive = f"{socket.gethostname()}:{os.getpid()}"
    assert not worker_gone(alive) and not worker_gone("another-host:1") and not worker_gone(None)

    ids = [enqueue_ingest(session, f).id for f in _files(session, 3)]
    session.commit()
    for job_id, worker in zip(ids, (dead, alive, "another-host:1"), strict=True):
        assert claim_job(session, job_id, worker=worker) is not None
    session.commit()

    taken = claim_job(session, ids[0], worker="next-delivery")
    assert taken is not None and (taken.state, taken.worker, taken.attempts) == ("running", "next-delivery", 2)
    assert claim_job(session, ids[1], worker="next-delivery") is None  # its worker still runs it
    assert claim_job(session, ids[2], worker="next-delivery") is None  # another host's: the age rule only
    session.commit()
    assert claim_job(session, ids[0], worker="third") is None  # the new owner is alive
    finish_job(session, taken)
    session.commit()
    assert claim_job(session, ids[0], worker="third") is None  # done stays done


def test_queue_evaluation_once_coalesces_into_the_queued_job(session: Session) -> None:
    patient = upsert_patient(session, PatientInfo("J3"))
    first = queue_evaluation_once(session, patient.id)
    assert first is not None
    assert queue_evaluation_once(session, patient.id) is None  # covered by the queued one
    session.commit()
    assert claim_next_job(session, worker="w") is not None
    session.commit()
    behind = queue_evaluation_once(session, patient.id)  # the first one runs: this file needs another
    assert behind is not None and behind != first


def _dispatched(session: Session, n: int, ago: timedelta, *, state: str = "queued", now: datetime) -> list[int]:
    """n ingest jobs (of new files) created and last dispatched `ago`, in `state`."""
    files = [
        register_source_file(session, sha256=sha(f"{ago}{state}{i}"), original_name="x.dcm").file for i in range(n)
    ]
    ids = [enqueue_ingest(session, f.id).id for f in files]
    session.execute(update(Job).where(Job.id.in_(ids)).values(state=state, created_at=now - ago, updated_at=now - ago))
    session.commit()
    return ids


def test_the_sweeper_resends_stale_dispatches_only(session: Session) -> None:
    now = utcnow()
    [recent] = _dispatched(session, 1, timedelta(seconds=5), now=now)
    [long_ago] = _dispatched(session, 1, timedelta(minutes=30), now=now)
    [minute] = _dispatched(session, 1, timedelta(seconds=60), now=now)
    _dispatched(session, 1, timedelta(seconds=90), state="running", now=now)  # taken, but queued before `minute`

    # A backlog: `minute` may be waiting its turn in the broker (nothing queued after it was taken).
    assert lost_dispatches(session, now=now) == [(long_ago, "ingest_file")]
    # The broker holds nothing: every job dispatched a while ago lost its message; a fresh one may be on its way.
    assert {i for i, _ in lost_dispatches(session, now=now, broker_idle=True)} == {long_ago, minute}

    # A job queued after `minute` was dispatched has been taken: the broker went past `minute`.
    _dispatched(session, 1, timedelta(seconds=30), state="done", now=now)
    assert {i for i, _ in lost_dispatches(session, now=now)} == {long_ago, minute}
    assert recent not in {i for i, _ in lost_dispatches(session, now=now + timedelta(seconds=10))}

    stamp_dispatched(session, [long_ago, minute], now=now)
    session.commit()
    assert lost_dispatches(session, now=now + timedelta(seconds=1), broker_idle=True) == []


@pytest.mark.postgres
def test_claim_next_files_takes_the_oldest_first_tries_with_their_files_and_skips_locked_ones(
    postgres_url: str,
) -> None:
    """A Celery task taking the queue's files (`services.stages`): one statement claims the oldest
    runnable first tries and marks their files `processing`; a job tried before, one waiting for
    its retry time and one another open transaction holds are left."""
    from db.jobs import claim_next_files
    from db.models import SourceFile

    engine = make_engine(postgres_url)
    clear_tables(engine)
    make = session_factory(engine)
    with make() as s:
        files = _files(s, 6)
        jobs = [enqueue_ingest(s, f).id for f in files]
        s.execute(update(Job).where(Job.id == jobs[1]).values(attempts=1))  # tried before: runs alone
        s.execute(update(Job).where(Job.id == jobs[2]).values(run_after=utcnow() + timedelta(minutes=5)))
        s.commit()
    with make() as a, make() as b:
        b.connection().exec_driver_sql("SET lock_timeout = '2s'")
        held = claim_next_files(a, limit=1, worker="a", parser_version="p1")  # transaction open: row locked
        rows = claim_next_files(b, limit=10, worker="b", parser_version="p1")
        b.commit()
        a.commit()
    assert held is not None and [r.job_id for r in held] == [jobs[0]]
    assert rows is not None and [(r.job_id, r.source_file_id, r.attempts) for r in rows] == [
        (jobs[3], files[3], 1),
        (jobs[4], files[4], 1),
        (jobs[5], files[5], 1),
    ]
    assert [r.original_name for r in rows] == ["3.dcm", "4.dcm", "5.dcm"] and rows[0].sha256 == sha("f3")
    with make() as s:
        states = {j.id: (j.state, j.worker, j.attempts) for j in s.scalars(select(Job))}
        statuses = {f.id: (f.status, f.attempts, f.parser_version) for f in s.scalars(select(SourceFile))}
    assert states[jobs[1]] == ("queued", None, 1) and states[jobs[2]][0] == "queued"
    assert all(states[j] == ("running", "b", 1) for j in jobs[3:])
    assert all(statuses[f] == ("processing", 1, "p1") for f in [files[0], *files[3:]])
    assert statuses[files[1]][0] == "pending"
    engine.dispose()
