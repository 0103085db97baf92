"""Batches (issue 13): files claimed, parsed and stored together, each still with its own outcome,
and a file dropped alone into a quiet inbox still evaluated at once (a batch closes on what is
queued now, it never waits to fill)."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

import services.ingestion
import services.intake
import services.runner
from db.migrate import upgrade
from db.models import Job, SourceFile
from dxa.embedded import run_jobs_forever, watch_forever
from ingest.report import ParsedReport
from services.context import Context, build_context
from services.files import display_name
from settings import Settings
from tests.integration.pipeline.support import (
    SAMPLES,
    BatchFile,
    Sample,
    check_accounting,
    drop,
    make_batch,
    rewrite_dicom,
    same_uid_other_bytes,
    wait_until,
)


def _context(tmp_path: Path, **overrides: Any) -> Context:
    settings = Settings(
        data_dir=tmp_path / "data", inbox=tmp_path / "inbox", database_url=None, broker_url=None, **overrides
    )
    ctx = build_context(settings)
    upgrade(ctx.engine)
    return ctx


def _commits(ctx: Context) -> list[int]:
    count = [0]

    def commit(*_: Any) -> None:
        count[0] += 1

    event.listen(ctx.engine, "commit", commit)
    return count


def _zero_bmd(report: ParsedReport) -> ParsedReport:
    """A value only the database's CHECK refuses (the parsers' plausibility checks stop it first)."""
    first = dataclasses.replace(report.measurements[0], bmd=0.0)
    return dataclasses.replace(report, measurements=(first, *report.measurements[1:]))


def _variants(dicom_samples: list[Sample], n: int) -> list[BatchFile]:
    """`n` distinct DICOM files made from the samples as new patients (support.make_batch)."""
    batch = make_batch(dicom_samples, len(dicom_samples) + 13 + n)
    return [f for f in batch if f.role == "variant"][:n]


def _evaluated(ctx: Context, sha256: str) -> bool:
    """The file is stored and its patient's evaluation finished after its rows were committed."""
    with ctx.sessions() as session:
        file = session.scalars(select(SourceFile).where(SourceFile.sha256 == sha256)).one_or_none()
        if file is None or file.status != "ingested" or file.finished_at is None:
            return False
        done = session.scalars(
            select(Job.finished_at).where(
                Job.kind == "evaluate_patient", Job.patient_id == file.patient_id, Job.state == "done"
            )
        ).all()
    return any(moment is not None and moment >= file.finished_at for moment in done)


def test_a_batch_stores_every_file_in_one_commit_and_a_bad_file_only_sinks_itself(
    tmp_path: Path, samples: list[Sample], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _context(tmp_path)
    accepted = [s for s in samples if s.expect == "accept" and s.rel.endswith(".dcm")]
    good = [BatchFile(s.rel, s.data, "original", s) for s in accepted[:6]]
    garbage = BatchFile("garbage.pdf", b"%PDF-1.4\n" + b"\x00" * 64, "original")
    conflict = BatchFile("conflict.dcm", rewrite_dicom(good[0].data, same_uid_other_bytes), "uid_conflict")
    refused = BatchFile("refused.dcm", _variants(accepted, 1)[0].data, "variant")
    files = [*good, garbage, conflict, refused]
    drops = tmp_path / "drops"
    drop(files, drops)
    # The watcher's way: one chunk claimed and registered in one commit.
    commits = _commits(ctx)
    received = services.intake.intake_many(ctx, [drops / f.rel for f in files], copy=False)
    assert commits[0] == 1 and all(not isinstance(r, Exception) for r in received), received

    parse = services.ingestion.parse_in_child

    def parse_refusing_one(path: str, name: str, *args: Any) -> tuple[ParsedReport, ...]:
        reports = parse(path, name, *args)
        return (_zero_bmd(reports[0]),) if name == "refused.dcm" else reports

    monkeypatch.setattr(services.ingestion, "parse_in_child", parse_refusing_one)
    before = commits[0]
    results = services.runner.run_batch(ctx, limit=len(files))
    assert commits[0] - before == 2, "the claim of the batch, then every file's outcome: two commits"
    by_file = {r.source_file_id: r for r in results}
    with ctx.sessions() as session:
        rows = {f.sha256: f for f in session.scalars(select(SourceFile))}
    outcome = {f.rel: (by_file[rows[f.sha256].id].outcome, rows[f.sha256].reason_code) for f in files}
    assert outcome == {
        **{f.rel: ("ingested", None) for f in good},
        "garbage.pdf": ("quarantined", "unreadable"),
        "conflict.dcm": ("quarantined", "uid_conflict"),
        "refused.dcm": ("quarantined", "store_refused"),
    }
    # The batch's patients are evaluated once each, in one batch of their own.
    patients = {rows[f.sha256].patient_id for f in good}
    evaluations = services.runner.run_batch(ctx)
    assert sorted(r.patient_id for r in evaluations) == sorted(patients)  # type: ignore[type-var]
    assert services.runner.run_batch(ctx) == []
    check_accounting(ctx.settings.data_dir, drops, files, ctx.sessions)
    ctx.engine.dispose()


def test_a_file_dropped_alone_into_a_quiet_inbox_is_evaluated_within_two_seconds(
    tmp_path: Path, samples: list[Sample]
) -> None:
    ctx = _context(tmp_path, min_file_age_s=0, scan_interval_s=0.2)
    accepted = [s for s in samples if s.expect == "accept" and s.rel.endswith(".dcm")]
    first, second = _variants(accepted, 2)  # two new patients
    stop = threading.Event()
    threads = [threading.Thread(target=watch_forever, args=(ctx, stop), daemon=True)]
    threads += [threading.Thread(target=run_jobs_forever, args=(ctx, stop), daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        # The first file warms the runners' parse children (a fork and the parsers' imports).
        drop([first], ctx.settings.inbox_dir)
        wait_until(lambda: _evaluated(ctx, first.sha256), 60, "the first file to be evaluated")
        dropped = time.monotonic()
        drop([second], ctx.settings.inbox_dir)
        wait_until(lambda: _evaluated(ctx, second.sha256), 2.0, "the lone file to be evaluated", every=0.02)
        assert time.monotonic() - dropped <= 2.5
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    ctx.engine.dispose()


def test_a_chunk_the_database_refuses_as_a_whole_is_registered_file_by_file(
    tmp_path: Path, samples: list[Sample], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk's one transaction fails (one file's row refused): the others are registered one by
    one and the refused one goes back to the inbox, to be claimed at the next scan."""
    ctx = _context(tmp_path)
    files = [BatchFile(s.rel, s.data, "original", s) for s in samples if s.expect == "accept"][:4]
    drops = tmp_path / "drops"
    drop(files, drops)
    real = services.intake._register

    def refuse_one(work: Any, work_path: Path, original_name: str, **kwargs: Any) -> Any:
        if original_name == display_name(files[1].rel):
            raise ValueError("refused")
        return real(work, work_path, original_name, **kwargs)

    real_new = services.intake._register_new

    def refuse_in_bulk(work: Any, claimed: Any) -> Any:  # the bulk registration of new bytes
        if any(name == display_name(files[1].rel) for _, name in claimed):
            raise ValueError("refused")
        return real_new(work, claimed)

    monkeypatch.setattr(services.intake, "_register", refuse_one)
    monkeypatch.setattr(services.intake, "_register_new", refuse_in_bulk)
    results = services.intake.intake_many(ctx, [drops / f.rel for f in files], copy=False)
    assert [isinstance(r, Exception) for r in results] == [False, True, False, False]
    assert (drops / files[1].rel).is_file(), "the refused claim is undone"
    assert not (drops / files[0].rel).exists()
    with ctx.sessions() as session:
        registered = set(session.scalars(select(SourceFile.sha256)))
    assert registered == {f.sha256 for i, f in enumerate(files) if i != 1}
    ctx.engine.dispose()


def test_the_same_file_given_twice_in_one_chunk_gets_a_result_for_each(tmp_path: Path, samples: list[Sample]) -> None:
    """`dxa ingest a a`: two copies of one file in one chunk. Each copy has its own result, in
    order (keyed by path, the first copy's job would be lost to the caller)."""
    ctx = _context(tmp_path)
    files = [BatchFile(s.rel, s.data, "original", s) for s in samples if s.expect == "accept"][:2]
    drops = tmp_path / "drops"
    drop(files, drops)
    first, other = (drops / f.rel for f in files)
    results = services.intake.intake_many(ctx, [first, other, first], copy=True)
    assert not any(isinstance(r, Exception) for r in results), results
    outcomes = [r.outcome for r in results if not isinstance(r, Exception)]
    assert outcomes == ["queued", "queued", "duplicate"], outcomes
    jobs = [r.job_id for r in results if not isinstance(r, Exception)]
    assert jobs[0] is not None and jobs[1] is not None and jobs[0] != jobs[1]
    ctx.engine.dispose()


def test_the_true_copy_stored_after_a_conflicting_one_is_not_taken_for_its_re_encoding(
    tmp_path: Path, samples: list[Sample]
) -> None:
    """Batches run in parallel store a patient's files in any order. The patient's row keeps the
    first birth date it was given, so once a file with the same UID and another birth date is
    stored, the true copy matches the stored rows: only the holder's own bytes say they differ."""
    ctx = _context(tmp_path)
    folder = SAMPLES / "patients" / "4555466_same_machine_gain_loss"
    earlier, original = folder / "20130416_SP_DICOM.dcm", folder / "20150505_SP_DICOM.dcm"
    conflict = BatchFile("conflict.dcm", rewrite_dicom(original.read_bytes(), same_uid_other_bytes), "uid_conflict")
    drops = tmp_path / "drops"
    drop([conflict], drops)
    for path in (earlier, drops / "conflict.dcm", original):  # the conflicting copy first
        services.intake.intake(ctx, path, copy=True)
        assert [r.outcome for r in services.runner.run_batch(ctx, kind="ingest_file")] == ["ingested"] or (
            path == original
        )
    with ctx.sessions() as session:
        rows = {f.original_name: f for f in session.scalars(select(SourceFile))}
    assert rows["conflict.dcm"].status == "ingested"
    assert (rows[original.name].status, rows[original.name].reason_code) == ("quarantined", "uid_conflict")
    ctx.engine.dispose()
