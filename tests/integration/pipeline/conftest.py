"""Fixtures of the pipeline tests: the shared samples, a Redis database of our own, a throwaway
PostgreSQL database. Services that are absent skip the tests (fail with DXA_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import create_postgres_database, drop_postgres_database, skip_or_fail
from tests.integration.pipeline.support import SAMPLES, Sample, load_samples, load_scenarios, redis_ping

SHARED_REDIS = "redis://127.0.0.1:6379"
# Where the tests that run `dxa` in process read the samples (DXA_SAMPLES does not move them).
LOCAL_SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "samples"


@pytest.fixture(scope="session")
def samples() -> list[Sample]:
    if not SAMPLES.is_dir():
        skip_or_fail(f"shared samples not found at {SAMPLES}")
    return load_samples()


@pytest.fixture(scope="session")
def scenarios(samples: list[Sample]) -> list[dict[str, Any]]:
    return load_scenarios()


@pytest.fixture
def redis_db() -> Iterator[str]:
    """A database number of its own on the shared Redis (empty when taken, flushed after)."""
    import redis

    if not redis_ping(f"{SHARED_REDIS}/0"):
        skip_or_fail(f"Redis not reachable at {SHARED_REDIS}")
    owner = uuid.uuid4().hex
    for number in range(15, 0, -1):
        client = redis.Redis.from_url(f"{SHARED_REDIS}/{number}")
        if client.dbsize() == 0 and client.set("dxa-test-owner", owner, nx=True) and client.dbsize() == 1:
            break
    else:
        skip_or_fail("no empty Redis database number left on the shared server")
    try:
        yield f"{SHARED_REDIS}/{number}"
    finally:
        if client.get("dxa-test-owner") == owner.encode():
            client.flushdb()
        client.close()


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """A migrated, throwaway PostgreSQL database for one test."""
    from db.migrate import upgrade

    url = create_postgres_database("dxa_pipeline")
    try:
        upgrade(url)
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture
def local_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`dxa` run in this process on a data directory (and SQLite database) of its own, with no
    broker: the samples it reads must be there."""
    if not LOCAL_SAMPLES.is_dir():
        skip_or_fail("../shared/samples not present")
    data_dir = tmp_path / "var"
    monkeypatch.setenv("DXA_DATA_DIR", str(data_dir))
    monkeypatch.delenv("DXA_DATABASE_URL", raising=False)
    monkeypatch.delenv("DXA_BROKER_URL", raising=False)
    return data_dir


@pytest.fixture
def logs(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A folder for service logs; their tails are printed when the test fails."""
    folder = tmp_path / "logs"
    folder.mkdir()
    yield folder
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for log in sorted(folder.glob("*.log")):
            print(f"\n----- {log.name} (tail)\n{log.read_text('utf-8', errors='replace')[-4000:]}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
