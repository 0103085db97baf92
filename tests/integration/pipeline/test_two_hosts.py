"""Workers on any host (DXA_FILE_STORE=database): the watcher and a Celery worker share no
folder at all, only PostgreSQL and Redis. The worker has a data directory of its own, empty; the
bytes of each claimed file travel through the database. Every sample still ends ingested or
quarantined, with the watcher's host holding the archive and quarantine copies, and the worker's
directory holds nothing afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from db.models import FileBlob, SourceFile
from services.context import build_context
from settings import Settings
from tests.integration.pipeline.support import (
    BatchFile,
    Sample,
    celery_worker,
    check_end_state,
    drop,
    dxa,
    files_below,
    pipeline_idle,
    service_env,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def _host_copies_written(sessions: Any) -> bool:
    with sessions() as session:
        pending = session.scalar(
            select(func.count()).select_from(SourceFile).where(SourceFile.stored_path.like("database:%"))
        )
    return pending == 0


def test_a_worker_sharing_no_folder_with_the_watcher_ingests_the_samples(
    tmp_path: Path,
    logs: Path,
    redis_db: str,
    pg_url: str,
    samples: list[Sample],
    scenarios: list[dict[str, Any]],
) -> None:
    watcher_host, worker_host, inbox = tmp_path / "watcher-host", tmp_path / "worker-host", tmp_path / "inbox"
    worker_host.mkdir()
    common = {"DXA_BROKER_URL": redis_db, "DXA_DATABASE_URL": pg_url, "DXA_FILE_STORE": "database"}
    watch_env = service_env(
        **common,
        DXA_DATA_DIR=str(watcher_host),
        DXA_INBOX=str(inbox),
        DXA_MIN_FILE_AGE_S="0",
        DXA_SCAN_INTERVAL_S="0.2",
    )
    # The worker is told of no inbox or archive; its data directory is its own.
    worker_env = service_env(**common, DXA_DATA_DIR=str(worker_host))
    ctx = build_context(Settings(data_dir=watcher_host, inbox=inbox, database_url=pg_url, broker_url=redis_db))
    batch = [BatchFile(s.rel, s.data, "original", s) for s in samples]
    worker = celery_worker(worker_env, logs / "worker.log", concurrency=2).start()
    watch = dxa(["watch"], watch_env, logs / "watch.log").start()
    try:
        worker.wait_log("ready.", 90)
        drop(batch, inbox)
        wait_until(
            lambda: (
                not files_below(inbox)
                and pipeline_idle(ctx.sessions, len(batch))
                and _host_copies_written(ctx.sessions)
            ),
            240,
            "every sample ingested or quarantined, and its copy on the watcher's host",
        )
    finally:
        watch.stop()
        worker.stop()

    check_end_state(watcher_host, inbox, batch, ctx.sessions, samples, scenarios)
    with ctx.sessions() as session:
        blobs = session.scalar(select(func.count()).select_from(FileBlob))
    assert blobs == len({f.sha256 for f in batch}), "every distinct file's bytes are kept in the database"
    assert files_below(worker_host) == [], "the worker left files in its own directory"
    assert "Traceback" not in worker.log(), worker.log()[-3000:]
    ctx.engine.dispose()
