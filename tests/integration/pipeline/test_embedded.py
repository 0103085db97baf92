"""Embedded mode end to end (no Redis, no broker, SQLite): the shared samples dropped into a
watched inbox with subfolders, picked up by the watcher and the in-process job runners, exactly
as `dxa serve` runs them."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

import services.evaluation
import services.intake
import services.recovery
import services.runner
from db.migrate import upgrade
from db.models import Exam, NextScanRow, Patient
from dxa.embedded import run_jobs_forever, watch_forever
from monitor.who import age_at
from services.context import build_context, no_submit
from services.therapies import import_therapies
from settings import Settings
from tests.integration.pipeline.support import (
    SAMPLES,
    BatchFile,
    Sample,
    check_accounting,
    check_exports,
    check_outcomes,
    drop,
    export_all,
    files_below,
    pipeline_idle,
    wait_until,
)


def test_embedded_pipeline_ends_every_sample_where_its_truth_says(
    tmp_path: Path, samples: list[Sample], scenarios: list[dict[str, Any]]
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        inbox=tmp_path / "inbox",
        database_url=None,
        broker_url=None,
        min_file_age_s=0,
        scan_interval_s=0.2,
    )
    assert settings.embedded and settings.db_url.startswith("sqlite:")
    ctx = build_context(settings)
    assert ctx.submit is no_submit
    upgrade(ctx.engine)

    stop = threading.Event()
    threads = [threading.Thread(target=watch_forever, args=(ctx, stop), daemon=True)]
    threads += [threading.Thread(target=run_jobs_forever, args=(ctx, stop), daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    batch = [BatchFile(s.rel, s.data, "original", s) for s in samples]
    try:
        delivered = 0
        for arrival in sorted({s.arrival for s in samples}):
            wave = [f for f in batch if f.sample is not None and f.sample.arrival == arrival]
            drop(wave, settings.inbox_dir)
            delivered += len(wave)

            def settled(n: int = delivered) -> bool:
                return not files_below(settings.inbox_dir) and pipeline_idle(ctx.sessions, n)

            wait_until(settled, 120, f"arrival {arrival} to be processed")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)

    assert import_therapies(ctx, SAMPLES / "therapies.csv")  # queues the patients' re-evaluation
    while services.runner.run_next(ctx, kinds=("evaluate_patient",)) is not None:
        pass

    state = check_accounting(settings.data_dir, settings.inbox_dir, batch, ctx.sessions)
    check_outcomes(state, batch)
    assert state.duplicates == 0 and len(state.quarantined) == sum(s.expect == "reject" for s in samples)
    check_exports(export_all(ctx.sessions), samples, scenarios)
    check_who_follows_age(ctx.sessions)
    ctx.engine.dispose()


def check_who_follows_age(sessions: Any) -> None:
    """The evaluation reads the stored birth date: WHO categories from 50, Z-score only below."""
    with sessions() as session:
        rows = session.execute(
            select(Patient.birth_date, func.max(Exam.exam_date), NextScanRow.who_category)
            .join(Exam, Exam.patient_id == Patient.id)
            .join(NextScanRow, NextScanRow.patient_id == Patient.id)
            .group_by(Patient.id, Patient.birth_date, NextScanRow.who_category)
        ).all()
    young = [who for born, last, who in rows if born is not None and age_at(born, last) < 50]
    older = [who for born, last, who in rows if born is None or age_at(born, last) >= 50]
    assert young and all(who == "z_score_only" for who in young)  # the samples have one man of 38
    assert older and "z_score_only" not in older
