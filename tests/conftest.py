"""Fixtures shared by every test package: migrated databases on SQLite and PostgreSQL.

- `db_url`: URL of a migrated database; parametrized over `sqlite` (a temporary file) and
  `postgres` (a throwaway `dxa_test_<random>` database on 127.0.0.1:5432, created once per test
  session and dropped at the end). Session-scoped: tests of one backend share the database.
- `engine`: an engine on `db_url`, with every table emptied before the test.
- `session`: a session on `engine` (expire_on_commit=False); the test commits what it needs.
- `sqlite_url` / `postgres_url`: the same databases, for tests that need one backend only.

PostgreSQL tests skip when the server is unreachable, unless DXA_REQUIRE_SERVICES=1 (CI), when
they fail. The server can be changed with DXA_TEST_POSTGRES_URL (an admin URL on any database).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

POSTGRES_ADMIN_URL = os.environ.get("DXA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def services_required() -> bool:
    return os.environ.get("DXA_REQUIRE_SERVICES", "0") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip a test whose service is missing, or fail it when services are required (CI)."""
    if services_required():
        pytest.fail(f"{reason} (DXA_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


def _admin_conninfo() -> str:
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_ADMIN_URL)
    parts = {
        "host": url.host or "127.0.0.1",
        "port": str(url.port or 5432),
        "user": url.username or "postgres",
        "dbname": url.database or "postgres",
    }
    if url.password:
        parts["password"] = str(url.password)
    return " ".join(f"{k}={v}" for k, v in parts.items())


def create_postgres_database(prefix: str = "dxa_test") -> str:
    """Create an empty database on the test server; returns its SQLAlchemy URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    with psycopg.connect(_admin_conninfo(), autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a reachable PostgreSQL server (skips or fails otherwise)."""
    try:
        import psycopg

        with psycopg.connect(_admin_conninfo(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any reason the server cannot be used
        skip_or_fail(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL.split('@')[-1]}: {type(exc).__name__}")
    return POSTGRES_ADMIN_URL


@pytest.fixture(scope="session")
def postgres_url(postgres_server: str) -> Iterator[str]:
    from db.migrate import upgrade

    url = create_postgres_database()
    try:
        upgrade(url)
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    from db.migrate import upgrade

    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'dxa.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


def clear_tables(engine: Engine) -> None:
    """Empty every table of the models (the migration bookkeeping stays)."""
    from sqlalchemy import text

    from db.models import Base

    tables = [t.name for t in Base.metadata.sorted_tables]
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in reversed(tables):
                conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    from db.engine import make_engine

    eng = make_engine(db_url)
    clear_tables(eng)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    from db.engine import session_factory

    with session_factory(engine)() as s:
        yield s


SHARED_SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "samples")


def pytest_sessionstart(session: pytest.Session) -> None:
    """In CI the shared samples must be there: several test modules skip without them, and a
    skip there would hide that the parsers and the monitor were never checked against the truth."""
    shared = os.environ.get("DXA_SHARED_DIR")
    samples = os.path.join(shared, "samples") if shared else SHARED_SAMPLES
    if services_required() and not os.path.isdir(samples):
        raise pytest.UsageError(f"shared samples not found at {samples} and DXA_REQUIRE_SERVICES=1")
