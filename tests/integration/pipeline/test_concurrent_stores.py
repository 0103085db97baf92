"""Two workers storing overlapping batches at once on PostgreSQL (issue 13): batches are no longer
serialised by one global lock, so their row locks must come in one order (`db.reports.SharedWrites`)
or they wait on each other in a circle. Both batches here share a machine (its software version and
printed LSC rows) and a patient, and are held in step so that each has stored a file before the
other goes on: no deadlock, no retry, and every row exactly once."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import services.ingestion
from db.models import Device, DeviceLsc, Exam, Job, Measurement, Patient, SourceFile
from db.reports import is_lock_conflict
from services.context import Context, build_context
from services.intake import intake_many
from services.runner import run_batch, run_jobs
from settings import Settings
from tests.integration.pipeline.support import SAMPLES, _new_patient, rewrite_dicom

FOLDER = SAMPLES / "patients" / "4555466_same_machine_gain_loss"
pytestmark = pytest.mark.postgres


def _file(tmp: Path, name: str, sample: str, patient: int) -> Path:
    """A sample of one machine (it prints its LSC) as patient `patient`'s, with a UID of its own."""
    path = tmp / name
    path.write_bytes(rewrite_dicom((FOLDER / sample).read_bytes(), _new_patient(patient)))
    return path


def _stepping(real: Any, barrier: threading.Barrier) -> Any:
    """`_store_one` that waits for the other batch after each file (at most 3 s: a batch blocked
    on the other's lock does not come, and the other then goes on to its commit)."""

    def store_one(*args: Any) -> Any:
        out = real(*args)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=3)
        return out

    return store_one


def test_two_workers_store_overlapping_batches_without_deadlock_and_exactly_once(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not FOLDER.is_dir():
        pytest.skip("shared samples not present")
    settings = Settings(data_dir=tmp_path / "data", inbox=tmp_path / "inbox", database_url=pg_url, broker_url=None)
    ctx: Context = build_context(settings)
    sources = tmp_path / "sources"
    sources.mkdir()
    # Patient order 4555466V1 < V2 < V3: batch A stores V1 then V2, batch B stores V2 then V3.
    early, later = "20130416_SP_DICOM.dcm", "20150505_SP_DICOM.dcm"
    first = [_file(sources, "a1.dcm", early, 1), _file(sources, "a2.dcm", early, 2)]
    second = [_file(sources, "b1.dcm", later, 2), _file(sources, "b2.dcm", early, 3)]
    batches = []
    for paths in (first, second):
        received = intake_many(ctx, paths, copy=True)
        batches.append([r.job_id for r in received if not isinstance(r, Exception) and r.job_id is not None])
    assert [len(b) for b in batches] == [2, 2]

    conflicts: list[BaseException] = []

    def seen_conflict(exc: BaseException) -> bool:
        conflicts.append(exc)
        return is_lock_conflict(exc)

    barrier = threading.Barrier(2)
    monkeypatch.setattr(services.ingestion, "_store_one", _stepping(services.ingestion._store_one, barrier))
    monkeypatch.setattr(services.ingestion, "is_lock_conflict", seen_conflict)
    outcomes: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            outcomes[index] = [r.outcome for r in run_jobs(ctx, batches[index])]
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not conflicts, "a lock conflict (deadlock) happened between the two batches"
    assert outcomes == {0: ["ingested", "ingested"], 1: ["ingested", "ingested"]}

    # The patients' evaluations, by two runners at once too.
    runners = [threading.Thread(target=run_batch, args=(ctx,), kwargs={"kind": "evaluate_patient"}) for _ in range(2)]
    for t in runners:
        t.start()
    for t in runners:
        t.join(timeout=120)
    run_batch(ctx, kind="evaluate_patient")  # whatever one runner left

    with ctx.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Device)) == 1
        assert session.scalar(select(func.count()).select_from(DeviceLsc)) == 1
        patients = dict(session.execute(select(Patient.identifier, Patient.id)).all())
        assert sorted(patients) == ["4555466V1", "4555466V2", "4555466V3"]
        exams = session.execute(select(Exam.patient_id, Exam.exam_date)).all()
        assert len(exams) == len(set(exams)) == 4  # V2 has two exams, V1 and V3 one each
        statuses = list(session.scalars(select(SourceFile.status)))
        assert sorted(statuses) == ["ingested"] * 4
        rows = session.execute(select(Measurement.exam_id, Measurement.site, Measurement.side)).all()
        assert len(rows) == len(set(rows)) > 0
        states = session.execute(select(Job.kind, Job.state)).all()
        assert {state for _, state in states} == {"done"}
        evaluated = set(session.scalars(select(Job.patient_id).where(Job.kind == "evaluate_patient")))
        assert evaluated == set(patients.values())
    ctx.engine.dispose()


@pytest.mark.parametrize("holder", ["batch", "evaluation"])
def test_a_batch_sets_aside_the_files_of_a_patient_another_transaction_holds_and_stores_the_others_at_once(
    tmp_path: Path, pg_url: str, holder: str
) -> None:
    """`db.patients.claim_patients`: while another transaction holds patient V1 (a batch storing
    its files: claimed and its row locked; an evaluation: the existing row locked), a batch of a V1
    file and a V2 file commits the V2 file without waiting for it; the V1 file is stored once the
    other transaction commits, in a transaction of its own. Without the claim, the V2 file waited
    with the V1 file's lock."""
    if not FOLDER.is_dir():
        pytest.skip("shared samples not present")
    from db.patients import claim_patients, lock_batch_patients, lock_patients, upsert_patient
    from ingest.parse import ParseLimits, parse_file
    from services.runner import run_jobs as run_chunk
    from tests.integration.pipeline.support import wait_until

    settings = Settings(data_dir=tmp_path / "data", inbox=tmp_path / "inbox", database_url=pg_url, broker_url=None)
    ctx: Context = build_context(settings)
    sources = tmp_path / "sources"
    sources.mkdir()
    paths = [_file(sources, "v1.dcm", "20130416_SP_DICOM.dcm", 1), _file(sources, "v2.dcm", "20130416_SP_DICOM.dcm", 2)]
    received = [r for r in intake_many(ctx, paths, copy=True) if not isinstance(r, Exception)]
    jobs = [r.job_id for r in received if r.job_id is not None]
    assert len(jobs) == 2

    def status(name: str) -> str:
        with ctx.sessions() as session:
            return str(session.scalars(select(SourceFile.status).where(SourceFile.original_name == name)).one())

    v1 = parse_file(paths[0].read_bytes(), paths[0].name, ParseLimits()).patient
    assert v1.patient_id == "4555466V1"
    results: list[str] = []
    if holder == "evaluation":
        with ctx.sessions.begin() as session:
            upsert_patient(session, v1)
    with ctx.sessions.begin() as other:  # not committed while the batch runs
        if holder == "batch":  # V1 claimed and its row locked (created), as a batch storing its files
            assert claim_patients(other, [v1], wait=False) == set()
            lock_batch_patients(other, [v1])
        else:  # its row locked, as `services.evaluation` does
            locked = lock_patients(other, [_patient_id(ctx, "4555466V1")])
            assert [p.identifier for p in locked] == ["4555466V1"]
        thread = threading.Thread(target=lambda: results.extend(r.outcome for r in run_chunk(ctx, jobs)))
        thread.start()
        wait_until(lambda: status("v2.dcm") == "ingested", 60, "the V2 file stored while V1 is held")
        assert status("v1.dcm") == "processing"  # waits for the other batch
        assert thread.is_alive()
    thread.join(timeout=60)
    assert sorted(results) == ["ingested", "ingested"]
    assert status("v1.dcm") == "ingested"
    with ctx.sessions() as session:
        assert sorted(session.scalars(select(Patient.identifier))) == ["4555466V1", "4555466V2"]
        assert {state for state in session.scalars(select(Job.state).where(Job.kind == "ingest_file"))} == {"done"}
    ctx.engine.dispose()


def _patient_id(ctx: Context, identifier: str) -> int:
    with ctx.sessions() as session:
        return int(session.scalars(select(Patient.id).where(Patient.identifier == identifier)).one())
