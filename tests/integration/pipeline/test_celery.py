"""Scaled mode end to end: a real Celery worker process (prefork, 2 processes) on the shared
Redis, a throwaway PostgreSQL database, and `dxa watch` claiming the shared samples from the
inbox. The late-arriving file is registered with its message lost on the way, so only the
`dxa.sweep_jobs` task (what beat runs) can get it to a worker."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

import services.evaluation
import services.intake
import services.recovery
import services.runner
from db.models import Job, utcnow
from services.context import build_context, no_submit
from services.therapies import import_therapies
from tests.integration.pipeline.support import (
    SAMPLES,
    BatchFile,
    BrokerSubmit,
    Sample,
    celery_worker,
    check_end_state,
    drop,
    dxa,
    files_below,
    pipeline_idle,
    scaled_env,
    send_sweep,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def test_celery_worker_on_redis_and_postgres_processes_the_samples(
    tmp_path: Path,
    logs: Path,
    redis_db: str,
    pg_url: str,
    samples: list[Sample],
    scenarios: list[dict[str, Any]],
) -> None:
    data_dir, inbox = tmp_path / "data", tmp_path / "inbox"
    env, settings = scaled_env(data_dir, inbox, redis_db, pg_url)
    ctx = build_context(settings)  # the test's own view of the same database and folders
    submit = BrokerSubmit(redis_db)
    worker = celery_worker(env, logs / "worker.log", concurrency=2).start()
    watch = dxa(["watch"], env, logs / "watch.log").start()
    batch = [BatchFile(s.rel, s.data, "original", s) for s in samples]
    first = [f for f in batch if f.sample is not None and f.sample.arrival == 1]
    late = [f for f in batch if f.sample is not None and f.sample.arrival > 1]
    assert late, "the samples should hold a late-arriving file"
    try:
        worker.wait_log("ready.", 60)
        assert len(worker.children()) >= 2, "prefork pool should have 2 processes"
        drop(first, inbox)
        wait_until(lambda: not files_below(inbox) and pipeline_idle(ctx.sessions, len(first)), 120, "the first arrival")
        watch.stop()

        # The late file is claimed and registered, but its message never reaches the broker.
        ctx.submit = no_submit
        drop(late, inbox)
        lost = [services.intake.intake(ctx, inbox / f.rel, copy=False) for f in late]
        assert all(r.outcome == "queued" and r.job_id is not None for r in lost)
        with ctx.sessions.begin() as session:  # ... a minute ago
            session.execute(
                update(Job)
                .where(Job.id.in_([r.job_id for r in lost]))
                .values(updated_at=utcnow() - timedelta(seconds=60))
            )
        time.sleep(2)
        assert not pipeline_idle(ctx.sessions, len(batch)), "nothing but the sweeper should run the lost job"
        assert send_sweep(redis_db)
        wait_until(lambda: pipeline_idle(ctx.sessions, len(batch)), 60, "the sweeper to re-send the lost job")

        # Therapies change next scans: re-evaluation goes through the broker to the worker too.
        ctx.submit = submit
        assert import_therapies(ctx, SAMPLES / "therapies.csv")  # queues their re-evaluation, sent at once
        wait_until(lambda: pipeline_idle(ctx.sessions, len(batch)), 60, "re-evaluation after therapies")
    finally:
        watch.stop()
        worker.stop()
        submit.close()

    check_end_state(data_dir, inbox, batch, ctx.sessions, samples, scenarios)
    with ctx.sessions() as session:
        pids = {str(w).rsplit(":", 1)[-1] for w in session.scalars(select(Job.worker).where(Job.worker.is_not(None)))}
    assert len(pids) >= 2, "both pool processes should have run jobs"
    assert "Traceback" not in worker.log(), worker.log()[-3000:]
    ctx.engine.dispose()
