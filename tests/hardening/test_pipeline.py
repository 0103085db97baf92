"""The pipeline's side of the boundary, embedded mode on SQLite (the same `run_job` serves Celery):

- a damaged file whose reader raised a library exception is quarantined on its first attempt with
  a reason about the file, never retried as a worker crash, and no job is left `running`;
- values the database would refuse are quarantined as such, never taken for a UID conflict;
- a fault during the store (the database went away) puts the job back in the queue at once;
- a re-drop of a file refused for our fault, or by an older parser, is processed again;
- the samples and a mutant batch through the pipeline with DEBUG logging leave no patient data in
  the log, the quarantine sidecars or the stored reasons.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

import services.ingestion
import services.intake
import services.runner
from db.migrate import upgrade
from db.models import Job, SourceFile
from ingest.parse import ParseLimits, parse_file
from ingest.report import ParsedReport
from services.context import Context, build_context
from services.outcomes import JobResult
from settings import Settings
from tests.hardening.conftest import leaks
from tests.hardening.mutants import mutants, patient_strings, sample_files


def _context(tmp_path: Path) -> Context:
    settings = Settings(data_dir=tmp_path / "data", inbox=tmp_path / "inbox", database_url=None, broker_url=None)
    ctx = build_context(settings)
    upgrade(ctx.engine)
    return ctx


def _drain(ctx: Context) -> list[JobResult]:
    results = []
    while (result := services.runner.run_next(ctx)) is not None:
        results.append(result)
    return results


def _files(ctx: Context) -> list[SourceFile]:
    with ctx.sessions() as session:
        return list(session.scalars(select(SourceFile).order_by(SourceFile.id)))


def _jobs_open(ctx: Context) -> int:
    with ctx.sessions() as session:
        return len(list(session.scalars(select(Job.id).where(Job.state.in_(("running", "queued"))))))


def _good_sample(root: Path) -> Path:
    return next(p for p in sorted((root / "single" / "hologic").glob("*.dcm")))


def _drop(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "drops" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_samples_and_mutants_through_the_pipeline(samples_root: Path, tmp_path: Path, debug_log: Path) -> None:
    ctx = _context(tmp_path)
    originals = sample_files(samples_root)
    batch = [(p.name, p.read_bytes()) for p in originals]
    batch += [(f"m{i}.dcm", m.data) for i, m in enumerate(mutants(samples_root, per_sample=2))]
    for name, data in batch:
        services.intake.intake(ctx, _drop(tmp_path, name, data), copy=True)
    results = _drain(ctx)
    assert _jobs_open(ctx) == 0
    files = _files(ctx)
    # duplicate: a mutant that still reads, with its original's instance UID and equal results, is
    # the same instance re-encoded (issue 10), kept in the archive and counted once
    # held: a mutant PDF left without a text layer is read by OCR and waits for a person (issue 14)
    assert {f.status for f in files} <= {"ingested", "quarantined", "duplicate", "held"}
    assert all(f.conflict_with_id is not None for f in files if f.status == "duplicate")
    assert sum(1 for f in files if f.status == "ingested") >= len(originals) - 12
    quarantined = [f for f in files if f.status == "quarantined"]
    assert len(quarantined) > len(batch) // 4
    assert not [r for r in results if r.outcome == "retry"], "a deterministic failure was retried"
    for f in quarantined:
        assert f.attempts == 1, f"{f.reason_code} took {f.attempts} attempts"
        # (uid_conflict is right for a mutant that still reads, with its original's instance UID)
        assert f.reason_code not in ("worker_crash", "crash", "timeout", "memory", "store_refused"), f.reason_text
    secrets = patient_strings(samples_root)
    reasons = "\n".join(f"{f.reason_code} {f.reason_text}" for f in quarantined)
    sidecars = "\n".join(p.read_text("utf-8") for p in ctx.settings.quarantine_dir.rglob("*.json"))
    paths = "\n".join(str(p) for p in ctx.settings.data_dir.rglob("*"))
    assert not leaks(reasons, secrets) and not leaks(paths, secrets)
    assert not leaks(sidecars.replace("original_name", ""), secrets - {p.name for p in originals})
    log_text = debug_log.read_text("utf-8")
    assert "refused as unreadable" in log_text  # the boundary did log, without content
    assert not leaks(log_text, secrets), [line for line in log_text.splitlines() if leaks(line, secrets)][:3]


def _zero_bmd(report: ParsedReport) -> ParsedReport:
    first = dataclasses.replace(report.measurements[0], bmd=0.0)
    return dataclasses.replace(report, measurements=(first, *report.measurements[1:]))


def test_values_the_database_refuses_are_not_a_uid_conflict(
    samples_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plausibility checks stop a zero BMD at parse time; this is the net behind them."""
    ctx = _context(tmp_path)
    sample = _good_sample(samples_root)
    report = _zero_bmd(parse_file(sample.read_bytes(), sample.name, ParseLimits()))
    monkeypatch.setattr(services.ingestion, "parse_in_child", lambda *a, **k: (report,))
    services.intake.intake(ctx, sample, copy=True)
    (result,) = _drain(ctx)
    assert result.outcome == "quarantined"
    (file,) = _files(ctx)
    assert file.reason_code == "store_refused" and file.attempts == 1
    assert _jobs_open(ctx) == 0
    # A re-drop (after the fix) is processed again instead of answering `duplicate` forever.
    monkeypatch.undo()
    again = services.intake.intake(ctx, sample, copy=True)
    assert again.outcome == "queued" and again.prior_status == "quarantined"
    (result,) = [r for r in _drain(ctx) if r.kind == "ingest_file"]
    assert result.outcome == "ingested"
    assert not list(ctx.settings.quarantine_dir.rglob("*.json")), "the stale reason went with the file"


def test_a_fault_during_the_store_puts_the_job_back(
    samples_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _context(tmp_path)
    services.intake.intake(ctx, _good_sample(samples_root), copy=True)
    real_store = services.ingestion._store
    calls: list[int] = []

    def failing_once(*args: Any, **kwargs: Any) -> JobResult:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("INSERT", {}, Exception("server closed the connection"))
        return real_store(*args, **kwargs)

    monkeypatch.setattr(services.ingestion, "_store", failing_once)
    with pytest.raises(OperationalError):
        services.runner.run_next(ctx)
    with ctx.sessions() as session:
        job = session.scalars(select(Job)).one()
        assert job.state == "queued" and job.worker is None
        assert session.get(SourceFile, job.source_file_id).status == "pending"  # type: ignore[union-attr]
    (result,) = [r for r in _drain(ctx) if r.kind == "ingest_file"]
    assert result.outcome == "ingested"


def test_redrop_answers_duplicate_only_when_this_parser_refused_these_bytes(samples_root: Path, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    bad = _drop(tmp_path, "x.pdf", b"%PDF-1.4\n" + b"\x00" * 64)
    services.intake.intake(ctx, bad, copy=True)
    _drain(ctx)
    assert services.intake.intake(ctx, bad, copy=True).outcome == "duplicate"
    with ctx.sessions.begin() as session:  # as if an older release had refused it
        session.execute(update(SourceFile).values(parser_version="dxa-monitor 0.0.9"))
    again = services.intake.intake(ctx, bad, copy=True)
    assert again.outcome == "queued"
    (result,) = _drain(ctx)
    assert result.outcome == "quarantined"
    sidecars = list(ctx.settings.quarantine_dir.rglob("*.json"))
    assert len(sidecars) == 1 and json.loads(sidecars[0].read_text())["reason_code"] == "unreadable"
    assert not list(ctx.settings.work_dir.iterdir())


def test_a_claim_the_database_cannot_record_is_undone(
    samples_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite locked past its busy timeout (or PostgreSQL away) while the watcher registers a file:
    the file goes back where it was, to be claimed at the next scan, not left in work/ unknown."""
    ctx = _context(tmp_path)
    dropped = _drop(tmp_path, "DOE_JANE.dcm", _good_sample(samples_root).read_bytes())

    def locked(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("INSERT INTO source_files", {"original_name": "DOE_JANE.dcm"}, Exception("locked"))

    monkeypatch.setattr(services.intake, "register_claimed", locked)
    with pytest.raises(OperationalError):
        services.intake.intake(ctx, dropped, copy=False)
    assert dropped.is_file() and not list(ctx.settings.work_dir.iterdir())
    monkeypatch.undo()
    assert services.intake.intake(ctx, dropped, copy=False).outcome == "queued"
    assert not dropped.exists()


def test_log_lines_name_the_exception_type_not_its_text() -> None:
    from services.logsafe import describe

    try:
        raise OperationalError("INSERT", {"name": "DOE^JANE", "birth": "19500101"}, Exception("database is locked"))
    except OperationalError as exc:
        text = describe(exc)
    assert text.startswith("OperationalError at test_pipeline.py:")
    assert "DOE" not in text and "1950" not in text
