"""While a back-load keeps the embedded writer's queue full (a stretch), an evaluation waits until
its job has been queued `SETTLE_S`: a patient whose files keep coming is evaluated once, not once
a second (issue 13). Deferred evaluations are not lost: once the queue is drained, every touched
patient is evaluated, once, and nothing stays queued."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

import services.runner
from db.migrate import upgrade
from db.models import Job, SourceFile
from dxa.embedded import watch_once
from ingest.watcher import ReadinessTracker
from services.context import Context, build_context
from settings import Settings
from tests.integration.pipeline.support import Sample, check_accounting, drop, make_batch


def _evaluations(ctx: Context, state: str) -> list[int | None]:
    with ctx.sessions() as session:
        return list(session.scalars(select(Job.patient_id).where(Job.kind == "evaluate_patient", Job.state == state)))


@pytest.mark.parametrize("settle_s", [3600.0, 0.0])
def test_a_stretch_defers_its_evaluations_and_runs_each_once_when_drained(
    tmp_path: Path, samples: list[Sample], monkeypatch: pytest.MonkeyPatch, settle_s: float
) -> None:
    monkeypatch.setattr(services.runner, "FIRST_CLAIM", 4)  # a stretch of several claims
    monkeypatch.setattr(services.runner, "MAX_CLAIM", 4)
    monkeypatch.setattr(services.runner, "PART", 4)
    monkeypatch.setattr(services.runner, "EVALUATE_EVERY_S", 0.0)  # outside a stretch: every step
    monkeypatch.setattr(services.runner, "SETTLE_S", settle_s)
    settings = Settings(
        data_dir=tmp_path / "data", inbox=tmp_path / "inbox", database_url=None, broker_url=None, min_file_age_s=0
    )
    ctx = build_context(settings)
    upgrade(ctx.engine)
    files = make_batch(samples, 3 * len(samples))  # patients with files spread over the stretch
    inbox = ctx.settings.inbox_dir
    drop(files, inbox)
    tracker = ReadinessTracker(0)
    pipeline = services.runner.Pipeline(ctx)
    during: list[int] = []  # evaluations done while the stretch went on
    try:
        watch_once(ctx, tracker)  # seen
        assert watch_once(ctx, tracker) == len(files)
        while True:
            step = pipeline.step()
            if pipeline._stretch:
                during += [r.patient_id or 0 for r in step if r.kind == "evaluate_patient"]
            if not step and not pipeline.busy:
                break
    finally:
        pipeline.close()
    done = _evaluations(ctx, "done")
    with ctx.sessions() as session:
        patients = set(
            session.scalars(select(SourceFile.patient_id).where(SourceFile.patient_id.is_not(None)).distinct())
        )
        stored = session.scalar(select(func.count()).select_from(SourceFile).where(SourceFile.status == "ingested"))
    assert patients and (stored or 0) > len(patients), "patients with several files"
    assert not _evaluations(ctx, "queued") and not _evaluations(ctx, "running")
    assert set(done) == patients, "every touched patient evaluated"
    if settle_s:  # none had settled: all deferred to the end of the stretch, each patient once
        assert during == []
        assert sorted(done) == sorted(patients)
    else:  # settled at once: evaluated during the stretch (and again once touched again)
        assert during
    check_accounting(ctx.settings.data_dir, inbox, files, ctx.sessions)
    ctx.engine.dispose()
