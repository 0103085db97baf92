"""The embedded runner on SQLite as one writer (issue 13): a batch is parsed in the parser thread
while the batch before it is stored (`services.runner.Pipeline`), and the watcher hands it the
files it claims instead of registering them itself. A file that kills the parse
child still sinks only itself, with a typed reason, and the others of its batch are stored whole
(their measurements written by one executemany INSERT)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import services.intake
import services.parsing
import services.runner
from db.migrate import upgrade
from db.models import Job, Measurement, SourceFile
from dxa.embedded import watch_once
from ingest.parse import ParseLimits, parse_file_or_scan
from ingest.watcher import ReadinessTracker
from services.context import Context, build_context
from services.outcomes import JobResult
from settings import Settings
from tests.integration.pipeline.support import BatchFile, Sample, check_accounting, drop, make_batch

CRASHING = "crashes-the-parser.dcm"


def _context(tmp_path: Path, **overrides: Any) -> Context:
    settings = Settings(
        data_dir=tmp_path / "data", inbox=tmp_path / "inbox", database_url=None, broker_url=None, **overrides
    )
    ctx = build_context(settings)
    upgrade(ctx.engine)
    return ctx


def _run_until_idle(ctx: Context) -> list[JobResult]:
    pipeline = services.runner.Pipeline(ctx)
    results: list[JobResult] = []
    try:
        while True:
            step = pipeline.step()
            results += step
            if not step and not pipeline.busy:
                return results
    finally:
        pipeline.close()


def test_the_writer_stores_a_batch_around_a_file_that_kills_the_parse_child(
    tmp_path: Path, samples: list[Sample], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = _context(tmp_path, max_attempts=1)  # the first crash quarantines: no backoff to wait for
    dicom = [s for s in samples if s.expect == "accept" and s.rel.endswith(".dcm")]
    variants = [f for f in make_batch(dicom, len(dicom) + 13 + 7) if f.role == "variant"][:7]
    assert len(variants) == 7
    # The crashing file sits mid-batch: the child that dies has parsed others before it.
    files = [*variants[:3], BatchFile(CRASHING, variants[3].data + b"\0", "variant"), *variants[4:]]
    drops = tmp_path / "drops"
    drop(files, drops)
    received = services.intake.intake_many(ctx, [drops / f.rel for f in files], copy=False)
    assert all(not isinstance(r, Exception) for r in received), received

    real = services.parsing.parse_file_or_scan

    def crash_on_one(data: bytes, name: str, limits: ParseLimits) -> Any:
        if name == CRASHING:  # in the parse child: it dies as a segfaulting parser would
            os.kill(os.getpid(), signal.SIGKILL)
        return real(data, name, limits)

    monkeypatch.setattr(services.parsing, "parse_file_or_scan", crash_on_one)
    results = _run_until_idle(ctx)

    with ctx.sessions() as session:
        rows = {f.sha256: f for f in session.scalars(select(SourceFile))}
        stored = {
            file_id: {
                (m.site, m.side)
                for m in session.scalars(select(Measurement).where(Measurement.source_file_id == file_id))
            }
            for file_id in (row.id for row in rows.values())
        }
    crashed = rows[files[3].sha256]
    assert (crashed.status, crashed.reason_code) == ("quarantined", "crash")
    good = [f for f in files if f.rel != CRASHING]
    assert {rows[f.sha256].status for f in good} == {"ingested"}
    for f in good:  # every measurement of every report, written in bulk, is there
        reports = parse_file_or_scan(f.data, Path(f.rel).name, ParseLimits())
        assert isinstance(reports, tuple)
        wanted = {(m.site, m.side) for report in reports for m in report.measurements}
        assert stored[rows[f.sha256].id] == wanted and wanted
    evaluated = {r.patient_id for r in results if r.kind == "evaluate_patient"}
    assert evaluated == {rows[f.sha256].patient_id for f in good}
    check_accounting(ctx.settings.data_dir, drops, files, ctx.sessions)
    ctx.engine.dispose()


def test_a_batch_whose_parse_fails_by_a_fault_goes_back_to_the_queue(
    tmp_path: Path, samples: list[Sample], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a verdict on the files (the parser thread itself failed): their jobs are queued again
    and their files pending, never quarantined; the next steps store them."""
    ctx = _context(tmp_path)
    dicom = [s for s in samples if s.expect == "accept" and s.rel.endswith(".dcm")][:3]
    files = [BatchFile(s.rel, s.data, "original", s) for s in dicom]
    drops = tmp_path / "drops"
    drop(files, drops)
    services.intake.intake_many(ctx, [drops / f.rel for f in files], copy=False)

    def broken(*_: Any) -> Any:
        raise RuntimeError("the parser thread failed")

    monkeypatch.setattr(services.runner, "parse_batch_ahead", broken)
    pipeline = services.runner.Pipeline(ctx)
    try:
        with pytest.raises(RuntimeError):  # claimed, its parse failed in the parser thread: storing it finds the fault
            for _ in range(3):
                pipeline.step()
        assert not pipeline.busy
    finally:
        pipeline.close()
    with ctx.sessions() as session:
        assert {f.status for f in session.scalars(select(SourceFile))} == {"pending"}
    monkeypatch.undo()
    results = _run_until_idle(ctx)
    assert sorted(r.outcome for r in results if r.kind == "ingest_file") == ["ingested"] * 3
    check_accounting(ctx.settings.data_dir, drops, files, ctx.sessions)
    ctx.engine.dispose()


def test_the_watcher_hands_its_claims_to_the_writer_which_registers_them(tmp_path: Path, samples: list[Sample]) -> None:
    """With the writer running, the watcher only renames files into work/ (it takes no turn on the
    database's write lock); the writer registers and stores them. Once the writer has stopped, the
    watcher registers what it claims itself."""
    ctx = _context(tmp_path, min_file_age_s=0)
    files = make_batch(samples, len(samples) + 13)
    inbox = ctx.settings.inbox_dir
    drop(files, inbox)
    tracker = ReadinessTracker(0)
    pipeline = services.runner.Pipeline(ctx)
    try:
        assert services.runner.writer_for(ctx) is pipeline
        watch_once(ctx, tracker)  # seen
        assert watch_once(ctx, tracker) == len(files)  # unchanged since: claimed
        with ctx.sessions() as session:
            assert session.scalars(select(SourceFile)).first() is None, "the watcher wrote nothing"
        assert pipeline.busy
        results: list[JobResult] = []
        while True:
            step = pipeline.step()
            results += step
            if not step and not pipeline.busy:
                break
    finally:
        pipeline.close()
    assert services.runner.writer_for(ctx) is None
    with ctx.sessions() as session:
        assert session.scalars(select(Job).where(Job.state.in_(("queued", "running")))).first() is None
    check_accounting(ctx.settings.data_dir, inbox, files, ctx.sessions)

    late = [f for f in make_batch(samples, len(samples) + 20) if f.role == "variant"][-2:]
    drop(late, inbox)
    watch_once(ctx, tracker)
    assert watch_once(ctx, tracker) == 2
    with ctx.sessions() as session:  # no writer: registered by the watcher at once
        known = {f.sha256 for f in session.scalars(select(SourceFile))}
    assert {f.sha256 for f in late} <= known
    ctx.engine.dispose()


def test_a_writer_that_stops_registers_the_claims_it_was_handed(tmp_path: Path, samples: list[Sample]) -> None:
    ctx = _context(tmp_path, min_file_age_s=0)
    files = [BatchFile(s.rel, s.data, "original", s) for s in samples[:4]]
    drop(files, ctx.settings.inbox_dir)
    tracker = ReadinessTracker(0)
    pipeline = services.runner.Pipeline(ctx)
    watch_once(ctx, tracker)
    assert watch_once(ctx, tracker) == len(files)
    pipeline.close()  # before any step
    with ctx.sessions() as session:
        jobs = list(session.scalars(select(Job).where(Job.kind == "ingest_file")))
    assert len(jobs) == len({f.sha256 for f in files}) and {j.state for j in jobs} == {"queued"}
    assert not any(ctx.settings.inbox_dir.rglob("*.*")), "nothing went back to the inbox"
    ctx.engine.dispose()


def test_a_file_its_writer_closed_is_claimed_without_a_second_scan_and_one_still_open_is_not(
    tmp_path: Path, samples: list[Sample]
) -> None:
    """With inotify (`ingest.file_events`, as `watch_forever` uses it): a file written in place is
    claimed at the first scan after its writer closed it; while its writer holds it open, not even
    a second scan claims it if it was written meanwhile, and a file moved in whole is claimed at
    once. Without events, two scans (the test above)."""
    from ingest.file_events import ClosedFiles

    ctx = _context(tmp_path, min_file_age_s=0)
    inbox = ctx.settings.inbox_dir
    inbox.mkdir(parents=True)
    events = ClosedFiles.open(inbox)
    if events is None:
        pytest.skip("no inotify here")
    first, second = samples[0], samples[1]
    tracker = ReadinessTracker(0)
    try:
        target = inbox / "sub" / Path(first.rel).name
        target.parent.mkdir()
        events.drain()  # the new folder watched
        with target.open("wb") as out:
            out.write(first.data[: len(first.data) // 2])
            out.flush()
            assert watch_once(ctx, tracker, events=events) == 0  # open, half written
            out.write(first.data[len(first.data) // 2 :])
            out.flush()
            assert watch_once(ctx, tracker, events=events) == 0  # grew since the scan before
        assert watch_once(ctx, tracker, events=events) == 1  # closed: claimed at once
        # `.part`, then renamed, in a watched folder (a folder made with the file in it has no watch
        # yet when the file is written: that file waits for the two scans)
        drop([BatchFile(Path(second.rel).name, second.data, "original", second)], inbox)
        assert watch_once(ctx, ReadinessTracker(0), events=events) == 1  # a fresh tracker: one scan
    finally:
        events.close()
    assert not [p for p in inbox.rglob("*") if p.is_file()]
    with ctx.sessions() as session:
        assert {f.sha256 for f in session.scalars(select(SourceFile))} == {first.sha256, second.sha256}
    ctx.engine.dispose()
