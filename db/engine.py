"""Engines and sessions for SQLite (embedded) and PostgreSQL (scaled), set up the same way everywhere.

SQLite: WAL (readers never block the writer), foreign keys on (off by default in SQLite), a busy
timeout so concurrent writers wait instead of failing, and transactions begun with `BEGIN
IMMEDIATE` so a read-then-write transaction (find-or-create, job claim) takes the write lock up
front instead of failing with "database is locked" when it tries to upgrade. pysqlite's own
transaction handling is switched off for that, which is also what makes SAVEPOINT work.

PostgreSQL goes through psycopg 3 with a small pre-pinged pool.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalise_url(url: str | URL) -> URL:
    """`postgresql://` and `postgres://` mean psycopg 3 here (SQLAlchemy would pick psycopg2)."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _is_memory_sqlite(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or "mode=memory" in str(url)


def _configure_sqlite(engine: Engine, *, immediate: bool, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (see module docstring)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str | URL, *, echo: bool = False, sqlite_immediate: bool = True, **kwargs: Any) -> Engine:
    """An engine for `url` with the service's connection settings.

    `sqlite_immediate=False` gives plain deferred transactions, for read-only tools that should
    not queue behind writers. Extra keyword arguments go to `create_engine`.
    """
    parsed = normalise_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        memory = _is_memory_sqlite(parsed)
        if not memory and parsed.database:
            directory = os.path.dirname(os.path.abspath(parsed.database))
            os.makedirs(directory, exist_ok=True)
        engine = create_engine(parsed, echo=echo, **kwargs)
        _configure_sqlite(engine, immediate=sqlite_immediate, wal=not memory)
        return engine
    if backend == "postgresql":
        options: dict[str, Any] = {
            "pool_size": 5,
            "max_overflow": 10,
            "pool_pre_ping": True,
            "pool_recycle": 1800,
            "pool_timeout": 30,
        }
        options.update(kwargs)
        return create_engine(parsed, echo=echo, **options)
    return create_engine(parsed, echo=echo, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit: use cases return rows to adapters that
    render them after the transaction ended."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def dispose_after_fork(engine: Engine) -> None:
    """Call in a forked child (Celery's `worker_process_init`) before it touches the database:
    drops the pooled connections inherited from the parent without closing the parent's sockets."""
    engine.dispose(close=False)


def install_fork_hook(engine: Engine) -> None:
    """Have every future `os.fork()` child dispose `engine`'s inherited pool automatically."""
    ref = weakref.ref(engine)

    def _after_in_child() -> None:
        live = ref()
        if live is not None:
            dispose_after_fork(live)

    os.register_at_fork(after_in_child=_after_in_child)
