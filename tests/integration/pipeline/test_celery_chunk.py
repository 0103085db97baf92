"""A Celery task's chunk of files (issue 13): the evaluations its stores queue are run by the same
task once the files are stored, as one batch, not sent to the broker behind every ingest message
of a burst; when they cannot run there, they are sent, and the job table keeps them either way.

The task's body (`workers.tasks._run_many`) runs in this process on SQLite, its broker replaced by
a recorder (the scaled pipeline end to end is `test_celery.py`'s)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

import services.evaluation
import services.intake
import services.runner
import services.stages
from db.migrate import upgrade
from db.models import Job
from services.context import Context, build_context
from settings import Settings
from tests.conftest import skip_or_fail
from tests.integration.pipeline.support import SAMPLES
from workers import tasks

PATIENT = SAMPLES / "patients" / "4555466_same_machine_gain_loss"
NAMES = ("20130416_SP_DICOM.dcm", "20150505_SP_DICOM.dcm", "20170425_SP_DICOM.dcm", "20130416_L_HIP_DICOM.dcm")


@pytest.fixture
def sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, str]]]:
    """The worker's context on a database of its own, its broker a recorder of what is sent."""
    if not PATIENT.is_dir():
        skip_or_fail(f"shared sample patient not found at {PATIENT}")
    settings = Settings(data_dir=tmp_path / "data", inbox=tmp_path / "inbox", database_url=None, broker_url=None)
    ctx = build_context(settings, submit=tasks.submit, submit_batch=tasks.submit_batch)
    upgrade(ctx.engine)
    record: list[tuple[int, str]] = []
    monkeypatch.setattr(tasks, "_send", record.extend)
    monkeypatch.setattr(tasks, "_current", ctx)
    yield record
    ctx.engine.dispose()


def _chunk(ctx: Context) -> list[int]:
    results = services.intake.intake_many(ctx, [PATIENT / name for name in NAMES], copy=True)
    ids = [r.job_id for r in results if not isinstance(r, Exception) and r.job_id is not None]
    assert len(ids) == len(NAMES), results
    return ids


def _jobs(ctx: Context, kind: str) -> list[tuple[str, str | None]]:
    with ctx.sessions() as session:
        return [(j.state, j.worker) for j in session.scalars(select(Job).where(Job.kind == kind))]


def test_a_chunks_evaluations_run_in_its_task_and_are_not_sent(sent: list[tuple[int, str]]) -> None:
    ctx = tasks._ctx()
    ids = _chunk(ctx)
    assert [kind for _, kind in sent] == ["ingest_file"] * len(NAMES)  # the watcher's message(s)
    sent.clear()

    outcomes = tasks._run_many(ids)

    assert outcomes[: len(ids)] == ["ingested"] * len(ids)
    evaluations = _jobs(ctx, "evaluate_patient")
    assert len(evaluations) == 1 and evaluations[0][0] == "done", evaluations  # one patient, evaluated once
    assert len(outcomes) == len(ids) + 1, "the evaluation ran in the same task"
    assert sent == [], "nothing went to the broker"
    assert tasks._deferred is None


def test_evaluations_that_fail_in_the_task_are_sent_and_stay_queued(
    sent: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = tasks._ctx()
    ids = _chunk(ctx)
    sent.clear()

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("the evaluation failed")

    monkeypatch.setattr(services.evaluation, "_evaluate_in_batch", broken)
    outcomes = tasks._run_many(ids)

    assert outcomes == ["ingested"] * len(ids), "the files stay stored"
    evaluations = _jobs(ctx, "evaluate_patient")
    assert evaluations == [("queued", None)], "put back in the queue, for the worker the message reaches"
    with ctx.sessions() as session:
        job_id = session.scalars(select(Job.id).where(Job.kind == "evaluate_patient")).one()
    assert sent == [(job_id, "evaluate_patient")]
    assert tasks._deferred is None


def test_a_chunk_that_fails_by_a_fault_sends_the_evaluations_of_the_parts_it_stored(
    sent: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task's chunk stored part by part: a fault in a later part (the database went away) is
    retried by Celery; the evaluations the earlier parts committed are sent at once."""
    ctx = tasks._ctx()
    ids = _chunk(ctx)
    sent.clear()
    real = services.stages.ingest_overlapped

    def one_part_then_a_fault(ctx: Context, files: list[object]) -> list[object]:
        real(ctx, files[:1])  # type: ignore[arg-type]
        raise OperationalError("INSERT", {}, ConnectionError("the database went away"))

    monkeypatch.setattr(services.runner, "ingest_overlapped", one_part_then_a_fault)
    with pytest.raises(tasks.TransientFault):
        tasks._run_many(ids)

    with ctx.sessions() as session:
        job_id = session.scalars(select(Job.id).where(Job.kind == "evaluate_patient")).one()
    assert sent == [(job_id, "evaluate_patient")]
    assert _jobs(ctx, "evaluate_patient") == [("queued", None)]
    assert tasks._deferred is None


def test_a_file_sent_alone_is_evaluated_by_its_own_task(sent: list[tuple[int, str]]) -> None:
    """A quiet inbox's single file (`dxa.ingest_file`): stored and its patient evaluated in the one
    task, with no second message to wait for behind whatever the broker holds."""
    ctx = tasks._ctx()
    intake = services.intake.intake(ctx, PATIENT / NAMES[0], copy=True)
    assert intake.job_id is not None and sent == [(intake.job_id, "ingest_file")]
    sent.clear()

    assert tasks._run(intake.job_id) == "ingested"

    assert [state for state, _ in _jobs(ctx, "evaluate_patient")] == ["done"]
    assert sent == [], "no evaluation message"


def test_a_task_takes_the_queued_files_beyond_its_chunk_and_their_messages_do_nothing(
    sent: list[tuple[int, str]],
) -> None:
    """A task goes on with the files still queued (`services.stages.taking_more`): the parse child
    does not stop between chunks. Their own message, delivered later, finds them claimed. A file
    tried before is left to its own message (it runs alone)."""
    ctx = tasks._ctx()
    ids = _chunk(ctx)
    sent.clear()
    with ctx.sessions.begin() as session:  # the last file's job was tried once before (its worker died)
        session.execute(update(Job).where(Job.id == ids[-1]).values(attempts=1))

    outcomes = tasks._run_many(ids[:1])

    assert outcomes[:3] == ["ingested"] * 3, "its own file, then the queued first tries"
    with ctx.sessions() as session:
        states = {int(i): str(s) for i, s in session.execute(select(Job.id, Job.state).where(Job.id.in_(ids)))}
    assert [states[i] for i in ids] == ["done", "done", "done", "queued"]
    assert tasks._run_many(ids[1:3]) == [], "their message finds them done"
    assert {state for state, _ in _jobs(ctx, "evaluate_patient")} == {"done"}, "evaluated in the task"
    assert sent == []
    assert tasks._run_many(ids[3:])[:1] == ["ingested"]
