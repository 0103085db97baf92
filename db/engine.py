"""Engines and sessions for SQLite (embedded) and PostgreSQL (scaled), set up the same way everywhere.

SQLite: WAL (readers never block the writer), foreign keys on (off by default in SQLite), a busy
timeout so concurrent writers wait instead of failing, and transactions begun with `BEGIN
IMMEDIATE` so a read-then-write transaction (find-or-create, job claim) takes the write lock up
front instead of failing with "database is locked" when it tries to upgrade. pysqlite's own
transaction handling is switched off for that, which is also what makes SAVEPOINT work. A
transaction that only reads (`reading`) begins deferred instead: it never queues for the write
lock, so a page or a sign-in check reads while a writer (another process, a long ingest) holds it.
A write that may be skipped when the lock is busy (a session's last-seen stamp) waits only
briefly for it (`brief_lock_wait`), not the full busy timeout.

PostgreSQL goes through psycopg 3 with a small pool, pre-pinged (or pinged only after sitting idle:
`ping_when_idle`, the web app's reads).
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "dxa_read_only"  # a connection execution option: begin a deferred (reading) transaction
_SHORT_WAIT = "dxa_short_busy_timeout"  # set on a pooled connection's info by brief_lock_wait


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

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        if record is not None and record.info.pop(_SHORT_WAIT, False) and dbapi_connection is not None:
            dbapi_connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        deferred = not immediate or connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")


def make_engine(
    url: str | URL,
    *,
    echo: bool = False,
    sqlite_immediate: bool = True,
    ping_idle_after_s: float | None = None,
    **kwargs: Any,
) -> Engine:
    """An engine for `url` with the service's connection settings.

    `sqlite_immediate=False` gives plain deferred transactions, for read-only tools that should
    not queue behind writers. `ping_idle_after_s` (PostgreSQL): instead of pinging every pooled
    connection on every checkout, ping only one that sat idle in the pool longer than that (see
    `ping_when_idle`). Extra keyword arguments go to `create_engine`.
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
        if ping_idle_after_s is not None:
            options["pool_pre_ping"] = False
        options.update(kwargs)
        engine = create_engine(parsed, echo=echo, **options)
        if ping_idle_after_s is not None:
            ping_when_idle(engine, ping_idle_after_s)
        return engine
    return create_engine(parsed, echo=echo, **kwargs)


_IDLE_SINCE = "dxa_idle_since"


def ping_when_idle(engine: Engine, after_s: float) -> None:
    """Ping a pooled connection on checkout only when it sat idle in the pool for more than
    `after_s` (a dead one is replaced, as with `pool_pre_ping`).

    The pre-ping is a round trip to the server on every checkout: for a page that otherwise needs
    a handful of short queries, a tenth of its time, and more on a busy machine where each round
    trip waits for the server process to be scheduled. A connection that sat idle is the one a
    restart, a firewall or an idle timeout most likely ended; one checked in a moment ago is
    almost always alive, and when it is not (a restart in that moment) the statement fails with
    a disconnect, SQLAlchemy invalidates the whole pool, and the caller's retry for transient
    faults gets fresh connections (the web app runs a read again: `web.app.QuietErrors`)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is None or time.monotonic() - since <= after_s:
            return  # new, or used a moment ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # any failure of the ping: take another connection
            raise DisconnectionError("pooled connection failed its ping") from exc
        if not alive:
            raise DisconnectionError("pooled connection failed its ping")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit: use cases return rows to adapters that
    render them after the transaction ended."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def reading(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reads of the sessions' engine that takes no write lock on SQLite (a deferred
    transaction; WAL lets it read while a writer holds the lock). It may still write: the write
    then asks for the lock when it happens (see `brief_lock_wait`). Ends without committing
    unless the caller commits."""
    with sessions() as session:
        session.connection(execution_options={READ_ONLY: True})
        yield session


def brief_lock_wait(session: Session, seconds: float) -> None:
    """For the rest of `session`'s transaction, a write waits at most `seconds` for SQLite's write
    lock (instead of the busy timeout), then fails with OperationalError: for writes worth doing
    only when they cost nothing, like a session's last-seen stamp. Call it before the transaction
    reads anything (a deferred transaction that read first cannot wait for the lock at all).
    PostgreSQL: the same bound on row locks (`lock_timeout`, this transaction only)."""
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        connection.info[_SHORT_WAIT] = True  # the pool's check-in puts the busy timeout back
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
    elif connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SET LOCAL lock_timeout = {int(seconds * 1000)}")


T = TypeVar("T")
RETRY_WITHIN_S = 20.0  # a restarting PostgreSQL refuses connections for a few seconds


def transient_fault(exc: BaseException) -> bool:
    """A fault of the database connection, not of the work: a connection ended by a server
    restart or pg_terminate_backend (SQLAlchemy invalidated it), a server not answering yet, a
    lock, the pool busy. The same work may well succeed a moment later on a new connection."""
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return transient_fault(exc.exceptions[0])
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (OperationalError, InterfaceError, PoolTimeout))


def retry_transient(work: Callable[[], T], within_s: float = RETRY_WITHIN_S) -> T:
    """`work()`, run again with a growing pause while it fails on a transient fault, for up to
    `within_s` (the pool pings connections before use, so a new try gets a live one). Only for
    work that is safe to repeat: reads, or writes not yet committed."""
    deadline = time.monotonic() + within_s
    pause = 0.1
    while True:
        try:
            return work()
        except Exception as exc:
            if not transient_fault(exc) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


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
