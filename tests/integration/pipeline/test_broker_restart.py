"""The Celery worker keeps consuming through Redis restarts (issue 11: the fault test once stalled
for five minutes after its Redis restart).

The cause, reproduced here: when Redis drops while a task's late acknowledgement is pending,
kombu's Redis transport tried the acknowledgement on a detached connection and raised an
AttributeError; Celery took it for an unrecoverable error and the worker shut down, so nothing ran
until the worker was started again. `workers.broker_transport` turns that into the connection
error it is, which Celery logs and recovers from by reconnecting.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from kombu import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.conftest import skip_or_fail
from tests.integration.pipeline.support import (
    PrivateRedis,
    celery_worker,
    scaled_env,
    send_sweep,
    wait_until,
)
from workers.broker_transport import Transport, transport_for
from workers.celery_app import make_celery

SUCCEEDED = re.compile(r"Task dxa\.sweep_jobs\[[^\]]+\] succeeded")


def _private_redis(log: Path) -> PrivateRedis:
    try:
        return PrivateRedis(log)
    except FileNotFoundError:
        skip_or_fail("redis-server binary not found")
        raise


def test_the_celery_app_uses_the_mended_transport_for_redis() -> None:
    assert transport_for("redis://127.0.0.1:6379/0") == "workers.broker_transport:Transport"
    assert transport_for("rediss://example:6380/1") == "workers.broker_transport:Transport"
    assert transport_for(None) is None and transport_for("memory://") is None
    from settings import Settings

    app = make_celery(Settings(broker_url="redis://127.0.0.1:1/0"))
    with app.connection_for_write() as conn:
        assert isinstance(conn.transport, Transport)


@pytest.mark.redis
def test_an_acknowledgement_after_the_connection_was_dropped_is_a_connection_error(tmp_path: Path) -> None:
    """The exact state of the crash: a channel that must make a new client (its pool was closed
    with the lost connection) while its transport is already detached from the connection."""
    redis = _private_redis(tmp_path / "redis.log")
    redis.start()
    try:
        with Connection(redis.url, transport=Transport) as conn:
            channel = conn.channel()
            assert channel.client.ping()
            channel.connection.client = None
            with pytest.raises(RedisConnectionError):
                channel._connparams()
            assert RedisConnectionError in conn.connection_errors, "Celery reconnects on it"
    finally:
        redis.stop()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_the_worker_keeps_consuming_through_repeated_redis_restarts(tmp_path: Path, logs: Path, pg_url: str) -> None:
    redis = _private_redis(logs / "redis.log")
    redis.start()
    env, _ = scaled_env(tmp_path / "data", tmp_path / "inbox", redis.url, pg_url)
    worker = celery_worker(env, logs / "worker.log", concurrency=2).start()

    def done() -> int:
        return len(SUCCEEDED.findall(worker.log()))

    try:
        worker.wait_log("ready.", 90)
        for round_ in range(6):
            before = done()
            for _ in range(12):  # tasks finishing (and being acknowledged) while Redis goes away
                assert send_sweep(redis.url)
            wait_until(lambda b=before: done() >= b + 4, 120, f"round {round_}: sweeps running")
            redis.kill()
            time.sleep(2)  # the broker stays away a moment, as in a restart
            redis.start()
            after = done()
            for _ in range(3):
                assert send_sweep(redis.url)
            wait_until(lambda a=after: done() >= a + 3, 120, f"round {round_}: sweeps after the restart")
            assert worker.popen is not None and worker.popen.poll() is None, "the worker is still running"
        assert "Unrecoverable error" not in worker.log()
    finally:
        worker.stop()
        redis.stop()
