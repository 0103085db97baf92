"""The watcher claims no more than `HANDED_AHEAD` files ahead of the embedded writer (issue 13): a
hospital's archive dropped at once waits in the inbox, not in the process's memory, and the inbox
is not listed while the writer has enough. Every file is still claimed, once, and accounted for."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

import dxa.embedded
import services.runner
from db.migrate import upgrade
from db.models import Job
from dxa.embedded import watch_once
from ingest.watcher import ReadinessTracker
from services.context import build_context
from settings import Settings
from tests.integration.pipeline.support import Sample, check_accounting, drop, files_below, make_batch


def test_the_watcher_hands_a_bounded_number_of_claims_ahead_of_the_writer(
    tmp_path: Path, samples: list[Sample], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dxa.embedded, "HANDED_AHEAD", 8)
    settings = Settings(
        data_dir=tmp_path / "data", inbox=tmp_path / "inbox", database_url=None, broker_url=None, min_file_age_s=0
    )
    ctx = build_context(settings)
    upgrade(ctx.engine)
    files = make_batch(samples, 30)
    inbox = ctx.settings.inbox_dir
    drop(files, inbox)
    tracker = ReadinessTracker(0)
    scans: list[int] = []
    real_scan = dxa.embedded.scan_inbox
    monkeypatch.setattr(dxa.embedded, "scan_inbox", lambda root: scans.append(1) or real_scan(root))
    pipeline = services.runner.Pipeline(ctx)
    try:
        watch_once(ctx, tracker)  # seen
        assert watch_once(ctx, tracker) == 8  # ready, but only 8 handed
        assert len(files_below(inbox)) == len(files) - 8
        listed = len(scans)
        assert watch_once(ctx, tracker) == 0 and len(scans) == listed  # the writer has enough: no listing
        claimed = 8
        for _ in range(200):
            pipeline.step()
            claimed += watch_once(ctx, tracker)  # the deferred files are ready at once, not after two scans
            if claimed < len(files):
                assert len(scans) == listed, "deferred files are handed without another listing"
            assert pipeline.handed <= 8
            if claimed == len(files) and not pipeline.busy:
                break
        while pipeline.busy:
            pipeline.step()
        pipeline.step()
    finally:
        pipeline.close()
    assert claimed == len(files)
    with ctx.sessions() as session:
        assert session.scalars(select(Job).where(Job.state.in_(("queued", "running")))).first() is None
    check_accounting(ctx.settings.data_dir, inbox, files, ctx.sessions)
    ctx.engine.dispose()


def test_a_deferred_file_written_again_meanwhile_waits_for_a_scan(
    tmp_path: Path, samples: list[Sample], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dxa.embedded, "HANDED_AHEAD", 4)
    settings = Settings(
        data_dir=tmp_path / "data", inbox=tmp_path / "inbox", database_url=None, broker_url=None, min_file_age_s=0
    )
    ctx = build_context(settings)
    upgrade(ctx.engine)
    files = make_batch(samples, 8)
    inbox = ctx.settings.inbox_dir
    drop(files, inbox)
    tracker = ReadinessTracker(0)
    pipeline = services.runner.Pipeline(ctx)
    try:
        watch_once(ctx, tracker)  # seen
        assert watch_once(ctx, tracker) == 4 and tracker.deferred == len(files) - 4
        rewritten = sorted(files_below(inbox))[0]
        rewritten.write_bytes(rewritten.read_bytes() + b"\n")  # written again after it was found ready
        while pipeline.handed:
            pipeline.step()
        assert watch_once(ctx, tracker) == len(files) - 5  # the others, without a listing
        assert files_below(inbox) == [rewritten]
        while pipeline.handed:
            pipeline.step()
        watch_once(ctx, tracker)  # seen again, changed
        assert watch_once(ctx, tracker) == 1  # then stable: claimed
    finally:
        pipeline.close()
    ctx.engine.dispose()
