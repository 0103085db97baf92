"""Faults in the middle of a 200-file batch: nothing lost, nothing doubled.

The batch (support.make_batch): the 78 shared samples, 10 exact re-drops of samples (must count
as duplicates, no row and no file of their own), 3 DICOM files carrying a sample's SOP Instance
UID with other bytes (one of each pair must end in quarantine/uid_conflict), and 109 distinct
variants (DICOM samples as new patients, PDFs with a trailing comment: the same exam again).

- Celery: a pool process is SIGKILLed while it runs a job, the broker (a private redis-server,
  no persistence) is killed and restarted, then the whole worker (main process and pool) is
  SIGKILLed and started again. Lost messages come back through `dxa.sweep_jobs`, which the test
  sends every few seconds as beat would.
- Embedded: `dxa serve` is SIGKILLed twice mid-batch and restarted.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from db.engine import make_engine, session_factory
from db.models import Job, SourceFile
from services.context import build_context
from tests.conftest import skip_or_fail
from tests.integration.pipeline.support import (
    BatchFile,
    PrivateRedis,
    Proc,
    Sample,
    celery_worker,
    check_end_state,
    drop,
    dxa,
    files_below,
    finished_files,
    free_port,
    make_batch,
    pipeline_idle,
    scaled_env,
    send_sweep,
    service_env,
    wait_until,
)

pytestmark = [pytest.mark.slow]

BATCH = 200


@pytest.fixture(scope="module")
def batch(samples: list[Sample]) -> list[BatchFile]:
    files = make_batch(samples, BATCH)
    shas = [f.sha256 for f in files]
    assert len(files) == BATCH
    assert len(shas) - len(set(shas)) == 10, "exactly the 10 re-drops repeat bytes"
    assert sum(f.role == "uid_conflict" for f in files) == 3
    return files


def _assert_batch_end_state(data_dir: Path, inbox: Path, batch: list[BatchFile], sessions: Any, samples: list[Sample],
                            scenarios: list[dict[str, Any]]) -> None:  # fmt: skip
    state = check_end_state(data_dir, inbox, batch, sessions, samples, scenarios, variants=True)
    rejected = {f.sha256 for f in batch if f.sample is not None and f.sample.expect == "reject"}
    assert state.duplicates == 10
    assert len(state.quarantined) == len(rejected) + 3, state.summary()
    assert len(state.archived) == BATCH - 10 - len(rejected) - 3, state.summary()


def _running_job_pid(sessions: Any, pids: list[int]) -> int | None:
    """The pid of a pool process that is running an ingest job right now."""
    with sessions() as session:
        workers = session.scalars(select(Job.worker).where(Job.state == "running", Job.kind == "ingest_file")).all()
    for w in workers:
        pid = int(str(w).rsplit(":", 1)[-1])
        if pid in pids:
            return pid
    return None


class Beat(threading.Thread):
    """Sends `dxa.sweep_jobs` every few seconds (beat's schedule says 30 s; a test cannot wait)."""

    def __init__(self, broker_url: str, every: float = 4.0) -> None:
        super().__init__(daemon=True)
        self.broker_url, self.every, self.sent = broker_url, every, 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            self.sent += int(send_sweep(self.broker_url))


@pytest.mark.postgres
@pytest.mark.redis
def test_celery_batch_survives_killed_workers_and_a_broker_restart(
    tmp_path: Path, logs: Path, pg_url: str, batch: list[BatchFile], samples: list[Sample],
    scenarios: list[dict[str, Any]],
) -> None:  # fmt: skip
    try:
        redis = PrivateRedis(logs / "redis.log")
    except FileNotFoundError:
        skip_or_fail("redis-server binary not found")
    redis.start()
    data_dir, inbox = tmp_path / "data", tmp_path / "inbox"
    work = data_dir / "work"
    env, settings = scaled_env(data_dir, inbox, redis.url, pg_url)
    ctx = build_context(settings)
    distinct = len({f.sha256 for f in batch})
    worker = celery_worker(env, logs / "worker.log", concurrency=2).start()
    watch = dxa(["watch"], env, logs / "watch.log").start()
    beat = Beat(redis.url)
    try:
        worker.wait_log("ready.", 60)
        beat.start()
        drop(batch, inbox)

        # 1. SIGKILL the pool process that is running an ingest job.
        wait_until(lambda: finished_files(ctx.sessions) >= 20, 90, "20 files done")
        victim: list[int] = []

        def busy_pool_process() -> bool:
            pid = _running_job_pid(ctx.sessions, worker.children())
            victim[:] = [pid] if pid else []
            return bool(victim)

        wait_until(busy_pool_process, 60, "a pool process running a job", every=0.02)
        os.kill(victim[0], signal.SIGKILL)

        # 2. The broker dies (no persistence: every queued message is lost) and comes back.
        wait_until(lambda: finished_files(ctx.sessions) >= 70, 300, "70 files done")
        redis.kill()
        time.sleep(3)  # the watcher's submits fail meanwhile; jobs stay queued in the database
        redis.start()

        # 3. The whole worker (main process and pool) is SIGKILLed, then started again.
        wait_until(lambda: finished_files(ctx.sessions) >= 120, 300, "120 files done")
        worker.kill()
        assert finished_files(ctx.sessions) < distinct, "the worker should die mid-batch"
        worker.start()
        worker.wait_log("ready.", 60)

        # work/ empties too: a file whose worker died between commit and move is finished by the
        # sweeper once its row is a minute old.
        wait_until(
            lambda: not files_below(inbox) and pipeline_idle(ctx.sessions, len(batch)) and not files_below(work),
            240,
            "the batch to finish",
        )
        with ctx.sessions() as session:
            retried = session.scalar(select(func.count()).select_from(Job).where(Job.attempts > 1))
            attempts = session.scalar(select(func.max(SourceFile.attempts)))
    finally:
        beat.stopped.set()
        watch.stop()
        worker.stop()
        redis.stop()
    assert beat.sent > 0
    assert retried and retried >= 1, "the killed jobs should have run again"
    assert attempts is not None and attempts <= ctx.settings.max_attempts
    _assert_batch_end_state(data_dir, inbox, batch, ctx.sessions, samples, scenarios)
    ctx.engine.dispose()


def test_embedded_serve_killed_mid_batch_and_restarted(
    tmp_path: Path, logs: Path, batch: list[BatchFile], samples: list[Sample], scenarios: list[dict[str, Any]]
) -> None:
    data_dir, inbox = tmp_path / "data", tmp_path / "inbox"
    port = free_port()
    env = service_env(
        DXA_DATA_DIR=str(data_dir),
        DXA_INBOX=str(inbox),
        DXA_MIN_FILE_AGE_S="0",
        DXA_SCAN_INTERVAL_S="0.2",
        DXA_PORT=str(port),
    )
    assert "DXA_BROKER_URL" not in env
    distinct = len({f.sha256 for f in batch})
    serve: Proc = dxa(["serve"], env, logs / "serve.log").start()
    engine = make_engine(f"sqlite:///{data_dir / 'dxa.db'}", sqlite_immediate=False)
    sessions = session_factory(engine)
    try:
        serve.wait_log("DXA monitor (embedded)", 60)
        drop(batch, inbox)
        for threshold in (50, 130):
            wait_until(lambda n=threshold: finished_files(sessions) >= n, 300, f"{threshold} files done")
            serve.kill()
            assert finished_files(sessions) < distinct, "the service should die mid-batch"
            serve.start()
            serve.wait_log("DXA monitor (embedded)", 60)
        wait_until(lambda: not files_below(inbox) and pipeline_idle(sessions, len(batch)), 420, "the batch to finish")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert response.status == 200
    finally:
        serve.stop()
    assert serve.log().count("recovered after an interruption") >= 1
    _assert_batch_end_state(data_dir, inbox, batch, sessions, samples, scenarios)
    engine.dispose()
