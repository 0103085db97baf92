"""How jobs reach workers and how much a file costs the database (issue 4's follow-ups), on the
real pipeline with SQLite (and the broker check on the shared Redis):

- the sweeper re-sends a job whose message is most likely lost, not every job that waits;
- the next delivery of a job whose worker process died takes it over at once;
- a parsed file is stored in one commit, and files of one patient stored while its evaluation
  waits share that evaluation (queued and sent once).
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update

import services.evaluation
import services.ingestion
import services.intake
import services.recovery
import services.runner
from db.jobs import claim_job
from db.migrate import upgrade
from db.models import ComparisonRow, Job, Measurement, SourceFile, utcnow
from services.context import Context, build_context
from settings import Settings
from tests.conftest import skip_or_fail
from tests.integration.pipeline.support import SAMPLES, files_below, rewrite_dicom, same_uid_other_bytes

PATIENT = SAMPLES / "patients" / "4555466_same_machine_gain_loss"


class Sent(list[tuple[int, str]]):
    """A `Submit` that records what it would hand to the broker."""

    def __call__(self, job_id: int, kind: str) -> None:
        self.append((job_id, kind))


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    if not PATIENT.is_dir():
        skip_or_fail(f"shared sample patient not found at {PATIENT}")
    settings = Settings(data_dir=tmp_path / "data", inbox=tmp_path / "inbox", database_url=None, broker_url=None)
    context = build_context(settings)
    context.submit = Sent()
    upgrade(context.engine)
    yield context
    context.engine.dispose()


def _sent(ctx: Context) -> Sent:
    assert isinstance(ctx.submit, Sent)
    return ctx.submit


def _commits(ctx: Context) -> list[int]:
    """A counter of the engine's commits (element 0), kept up to date by an event listener."""
    count = [0]

    def on_commit(*_: Any) -> None:
        count[0] += 1

    event.listen(ctx.engine, "commit", on_commit)
    return count


def test_the_sweeper_resends_a_lost_message_not_a_waiting_one(ctx: Context) -> None:
    waiting, lost = (
        services.intake.intake(ctx, PATIENT / n, copy=True) for n in ("20130416_SP_DICOM.dcm", "20150505_SP_DICOM.dcm")
    )
    assert waiting.job_id is not None and lost.job_id is not None
    _sent(ctx).clear()
    with ctx.sessions.begin() as session:  # `waiting` was sent a moment ago; `lost` half an hour ago
        session.execute(update(Job).where(Job.id == lost.job_id).values(updated_at=utcnow() - timedelta(minutes=30)))

    assert services.recovery.resend_lost_jobs(ctx, broker_idle=False) == [(lost.job_id, "ingest_file")]
    assert _sent(ctx) == [(lost.job_id, "ingest_file")]
    # Stamped as sent just now: the next sweep does not send it again, even with the broker empty.
    assert services.recovery.resend_lost_jobs(ctx, broker_idle=True) == []
    assert len(_sent(ctx)) == 1


def test_the_next_delivery_takes_over_a_job_whose_worker_died(ctx: Context) -> None:
    intake = services.intake.intake(ctx, PATIENT / "20130416_SP_DICOM.dcm", copy=True)
    assert intake.job_id is not None
    child = subprocess.Popen(["true"])  # a worker process of this host, now gone
    child.wait()
    with ctx.sessions.begin() as session:
        assert claim_job(session, intake.job_id, worker=f"{socket.gethostname()}:{child.pid}") is not None

    result = services.runner.run_job(ctx, intake.job_id)  # Celery delivers the message again
    assert result is not None and result.outcome == "ingested", result
    with ctx.sessions() as session:
        job = session.get(Job, intake.job_id)
        assert job is not None and (job.state, job.attempts) == ("done", 2)
    assert len(files_below(ctx.settings.archive_dir)) == 1 and not files_below(ctx.settings.work_dir)


def test_a_file_is_stored_in_one_commit_and_its_patient_evaluated_once(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ("20130416_SP_DICOM.dcm", "20150505_SP_DICOM.dcm", "20170425_SP_DICOM.dcm")
    for name in names:
        services.intake.intake(ctx, PATIENT / name, copy=True)
    commits = _commits(ctx)
    after_parse: list[int] = []
    parse = services.ingestion.parse_in_child

    def parse_and_mark(*args: Any, **kwargs: Any) -> Any:
        report = parse(*args, **kwargs)
        after_parse.append(commits[0])
        return report

    monkeypatch.setattr(services.ingestion, "parse_in_child", parse_and_mark)
    _sent(ctx).clear()
    for _ in names:
        before = commits[0]
        result = services.runner.run_next(ctx, kinds=("ingest_file",))
        assert result is not None and result.outcome == "ingested", result
        assert after_parse[-1] - before == 1, "the claim (job running, file processing) is one commit"
        assert commits[0] - after_parse[-1] == 1, "rows, file state, job done and evaluation: one commit"

    # Three files of one patient, stored back to back: one evaluation, sent once.
    evaluations = [s for s in _sent(ctx) if s[1] == "evaluate_patient"]
    assert len(evaluations) == 1, _sent(ctx)
    with ctx.sessions() as session:
        queued = session.scalars(select(Job.id).where(Job.kind == "evaluate_patient")).all()
        assert queued == [evaluations[0][0]]
    before = commits[0]
    result = services.runner.run_next(ctx)
    assert result is not None and result.kind == "evaluate_patient"
    assert commits[0] - before == 2, "the claim, then the evaluation with its job done"
    assert services.runner.run_next(ctx) is None
    with ctx.sessions() as session:
        exams = set(session.scalars(select(SourceFile.exam_id)))
        compared = set(session.scalars(select(ComparisonRow.to_exam_id))) | set(
            session.scalars(select(ComparisonRow.from_exam_id))
        )
    assert len(exams) == 3 and exams <= compared, "the one evaluation saw all three exams"


def test_a_file_with_a_taken_uid_is_quarantined_and_leaves_no_rows(ctx: Context, tmp_path: Path) -> None:
    """Same DICOM instance UID, other bytes: the second file ends in quarantine/uid_conflict, linked to
    the owner, with no rows of its own (its UID is looked up only after its store hit the unique key)."""
    original = PATIENT / "20130416_SP_DICOM.dcm"
    twin = tmp_path / "twin.dcm"
    twin.write_bytes(rewrite_dicom(original.read_bytes(), same_uid_other_bytes))
    first = services.intake.intake(ctx, original, copy=True)
    second = services.intake.intake(ctx, twin, copy=True)
    outcomes = [services.runner.run_next(ctx, kinds=("ingest_file",)) for _ in range(2)]
    assert [r.outcome for r in outcomes if r is not None] == ["ingested", "quarantined"]
    with ctx.sessions() as session:
        owner, other = (session.get(SourceFile, r.source_file_id) for r in (first, second))
        assert owner is not None and other is not None
        assert (other.status, other.reason_code, other.conflict_with_id) == ("quarantined", "uid_conflict", owner.id)
        assert other.patient_id is None and other.exam_id is None and other.sop_instance_uid is None
        assert owner.sop_instance_uid and owner.status == "ingested"
        files = set(session.scalars(select(Measurement.source_file_id)))
    assert files == {owner.id}
    assert len(files_below(ctx.settings.quarantine_dir / "uid_conflict")) == 2  # the file and its reason


@pytest.mark.redis
def test_broker_idle_asks_the_broker_queue(redis_db: str) -> None:
    from celery import Celery

    from workers.tasks import broker_idle

    app = Celery("dxa-test-idle", broker=redis_db)
    try:
        assert broker_idle(app), "no queue yet: nothing waits"
        with app.connection_for_write() as conn:
            app.send_task("dxa.ingest_file", args=[1], connection=conn)
        assert not broker_idle(app), "a message waits in the queue"
    finally:
        app.close()
    assert not broker_idle(Celery("dxa-test-down", broker="redis://127.0.0.1:1/0")), "an unreachable broker is not idle"
