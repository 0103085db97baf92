"""Crash windows too narrow for a random `kill -9` to hit reliably, opened on purpose.

- A worker that dies after committing a file's rows but before moving its bytes leaves the file
  in work/ with a row that says where it goes: recovery (at start-up, and the Celery sweeper once
  the row has settled) moves it, and a quarantined file gets its JSON sidecar.
- An evaluation that starts while another transaction is storing an exam of the same patient
  must not save a result computed without that exam (PostgreSQL, where readers do not wait).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import services.evaluation
import services.files
import services.ingestion
import services.intake
import services.recovery
import services.runner
from db.migrate import upgrade
from db.models import ComparisonRow, SourceFile
from db.patients import lock_patient
from db.reports import store_report
from ingest.parse import ParseLimits, parse_file
from services.context import Context, build_context
from settings import Settings
from tests.integration.pipeline.support import SAMPLES, BatchFile, Sample, check_accounting, files_below


class Crash(BaseException):
    """Stands for the process dying at this point (nothing below it runs)."""


def _crash(*args: Any, **kwargs: Any) -> None:
    raise Crash


def _context(tmp_path: Path, db_url: str | None = None) -> Context:
    settings = Settings(data_dir=tmp_path / "data", inbox=tmp_path / "inbox", database_url=db_url, broker_url=None)
    ctx = build_context(settings)
    upgrade(ctx.engine)
    return ctx


def _drain(ctx: Context) -> None:
    while services.runner.run_next(ctx) is not None:
        pass


def test_files_committed_but_not_moved_are_finished_by_recovery(
    tmp_path: Path, samples: list[Sample], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _context(tmp_path)
    good = next(s for s in samples if s.expect == "accept" and s.rel.endswith(".dcm"))
    bad = next(s for s in samples if s.expect == "reject" and s.path.stat().st_size > 0)
    for sample in (good, bad):
        services.intake.intake(ctx, sample.path, copy=True)

    monkeypatch.setattr(services.ingestion.Moves, "move", _crash)  # dies right after the archive commit
    monkeypatch.setattr(services.ingestion, "quarantine_file", _crash)  # ... and after the quarantine commit
    for _ in range(2):
        with pytest.raises(Crash):
            services.runner.run_next(ctx, kinds=("ingest_file",))
    monkeypatch.undo()

    assert len(files_below(ctx.settings.work_dir)) == 2
    with ctx.sessions() as session:
        assert sorted(session.scalars(select(SourceFile.status))) == ["ingested", "quarantined"]

    # The sweeper leaves a row that finished a moment ago alone (its job may still be moving it) ...
    assert services.recovery.recover_files(ctx, settled_for=timedelta(seconds=60)) == {"moved": 0, "registered": 0}
    assert len(files_below(ctx.settings.work_dir)) == 2
    # ... and finishes it once it has settled; so does a restart.
    assert services.recovery.recover_files(ctx, settled_for=timedelta(0)) == {"moved": 2, "registered": 0}
    _drain(ctx)  # the evaluation job was committed with the rows

    batch = [BatchFile(s.rel, s.data, "original", s) for s in (good, bad)]
    state = check_accounting(ctx.settings.data_dir, ctx.settings.inbox_dir, batch, ctx.sessions)
    assert set(state.archived) == {good.sha256} and set(state.quarantined) == {bad.sha256}
    sidecar = state.quarantined[bad.sha256][2]
    assert any(w in sidecar["reason"].lower() for w in bad.truth["reason_contains"]), sidecar
    assert json.loads(json.dumps(sidecar))["reason_code"] == state.quarantined[bad.sha256][0]
    ctx.engine.dispose()


def test_a_sidecar_cut_by_a_killed_worker_is_rewritten_by_recovery(
    tmp_path: Path, samples: list[Sample], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed while writing a quarantine sidecar leaves it empty or cut, with the file
    still in work/ (the sidecar is written before the move): recovery must not keep it."""
    ctx = _context(tmp_path)
    bad = next(s for s in samples if s.expect == "reject" and s.path.stat().st_size > 0)
    services.intake.intake(ctx, bad.path, copy=True)

    def cut(dest: Path, sidecar: dict[str, Any]) -> None:
        text = json.dumps(sidecar, indent=2)
        services.files.sidecar_path(dest).write_text(text[: len(text) // 2], encoding="utf-8")
        raise Crash

    monkeypatch.setattr(services.files, "write_sidecar", cut)
    with pytest.raises(Crash):
        services.runner.run_next(ctx, kinds=("ingest_file",))
    monkeypatch.undo()
    cut_sidecars = [p for p in files_below(ctx.settings.quarantine_dir) if p.name.endswith(".json")]
    assert len(cut_sidecars) == 1 and not services.files.readable_sidecar(cut_sidecars[0].with_suffix(""))

    assert services.recovery.recover_files(ctx) == {"moved": 1, "registered": 0}
    _drain(ctx)
    state = check_accounting(
        ctx.settings.data_dir, ctx.settings.inbox_dir, [BatchFile(bad.rel, bad.data, "original", bad)], ctx.sessions
    )
    sidecar = state.quarantined[bad.sha256][2]
    assert any(w in sidecar["reason"].lower() for w in bad.truth["reason_contains"]), sidecar
    ctx.engine.dispose()


@pytest.mark.postgres
def test_evaluation_started_during_a_store_sees_the_stored_exam(tmp_path: Path, pg_url: str) -> None:
    ctx = _context(tmp_path, pg_url)
    folder = SAMPLES / "patients" / "4555466_same_machine_gain_loss"
    for name in ("20130416_SP_DICOM.dcm", "20150505_SP_DICOM.dcm"):
        services.intake.intake(ctx, folder / name, copy=True)
    _drain(ctx)
    third = parse_file(
        (folder / "20170425_SP_DICOM.dcm").read_bytes(), "x.dcm", ParseLimits(max_bytes=10**8, max_pdf_pages=40)
    )

    with ctx.sessions() as storing:  # a worker storing the 2017 exam, not committed yet
        stored = store_report(storing, third)
        patient_id, new_exam = stored.patient.id, stored.exam.id
        lock_patient(storing, patient_id)
        evaluation = threading.Thread(target=services.evaluation.evaluate, args=(ctx, patient_id))
        evaluation.start()
        time.sleep(1.0)
        assert evaluation.is_alive(), "the evaluation should wait for the patient's lock"
        storing.commit()
    evaluation.join(timeout=30)
    assert not evaluation.is_alive()

    with ctx.sessions() as session:
        compared = set(session.scalars(select(ComparisonRow.to_exam_id).where(ComparisonRow.patient_id == patient_id)))
    assert new_exam in compared, "the evaluation saved comparisons computed without the exam stored meanwhile"
    ctx.engine.dispose()
