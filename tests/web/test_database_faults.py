"""Signed-in users keep reading pages through database faults (issue 11's soak: 50 users saw
errors): a PostgreSQL connection ended mid-query, a PostgreSQL restart, another process holding
SQLite's write lock, and many people signing in at once.

The PostgreSQL faults run on a private server (tests/private_postgres.py), never on the shared one.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from db import accounts, signin
from db.models import WebSession
from tests import private_postgres
from tests.conftest import skip_or_fail
from tests.private_postgres import PrivatePostgres
from tests.web.conftest import csrf_of, sign_in
from tests.web.seed import PASSWORDS, TODAY, Seeded, build
from web.app import create_app

PAGES = ["/patients", "/worklist", "/qa/ingest", "/api/patients", "/qa/comparisons"]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Browsers:
    """Signed-in users reading pages in threads until stopped; every answer is kept."""

    def __init__(self, app: FastAPI, users: int) -> None:
        self.app, self.stopped = app, threading.Event()
        self.answers: list[tuple[str, int]] = []
        self.failures: list[str] = []
        self.signed_in = 0
        self.threads = [threading.Thread(target=self._browse, args=(i,), daemon=True) for i in range(users)]

    def _browse(self, index: int) -> None:
        try:
            with TestClient(self.app, follow_redirects=False) as client:
                sign_in(client, "qa")
                self.signed_in += 1
                i = index
                while not self.stopped.is_set():
                    path = PAGES[i % len(PAGES)]
                    i += 1
                    self.answers.append((path, client.get(path).status_code))
        except Exception as exc:  # reported by the test, not lost in a thread
            self.failures.append(repr(exc))

    def __enter__(self) -> Browsers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=120)

    def ready(self) -> bool:
        """Every user signed in and some pages served."""
        return self.signed_in == len(self.threads) and len(self.answers) >= 2 * len(self.threads)

    def served(self) -> int:
        return len(self.answers)

    def errors(self) -> list[tuple[str, int]]:
        return [a for a in self.answers if a[1] != 200]


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    if not private_postgres.available():
        skip_or_fail("no pg_ctl/initdb to start a private PostgreSQL server")
    server = PrivatePostgres()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def pg_seeded(private_pg: PrivatePostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    seeded = build(tmp_path_factory.mktemp("pgweb"), url=private_pg.create_database("dxa_web_faults"))
    yield seeded
    seeded.ctx.engine.dispose()


def _terminate_backends(server: PrivatePostgres, database: str) -> int:
    with psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres", autocommit=True) as c:
        row = c.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
def test_pages_are_served_while_connections_are_ended_mid_browsing(
    private_pg: PrivatePostgres, pg_seeded: Seeded
) -> None:
    app = create_app(pg_seeded.ctx, today=lambda: TODAY)
    database = str(pg_seeded.ctx.engine.url.database)
    ended = 0
    with Browsers(app, users=6) as users:
        wait_for(users.ready, 120, "the users' first pages")
        for _ in range(12):
            ended += _terminate_backends(private_pg, database)
            seen = users.served()
            wait_for(lambda n=seen: users.served() >= n + 4, 120, "pages after the connections ended")
    assert not users.failures, users.failures
    assert ended >= 12, "the connections in use should have been ended"
    assert users.served() >= 60
    assert users.errors() == [], users.errors()[:5]


@pytest.mark.slow
def test_pages_are_served_through_a_postgres_restart(private_pg: PrivatePostgres, pg_seeded: Seeded) -> None:
    app = create_app(pg_seeded.ctx, today=lambda: TODAY)
    late = TestClient(app, follow_redirects=False)
    form = _login_form(late, "clin")
    with Browsers(app, users=4) as users:
        wait_for(users.ready, 120, "the users' first pages")
        private_pg.stop()
        signing = threading.Thread(target=lambda: statuses.append(late.post("/login", data=form).status_code))
        statuses: list[int] = []
        signing.start()  # someone signs in while the server is down
        time.sleep(2)  # the server stays down a while (what is measured is what happens meanwhile)
        private_pg.start()
        signing.join(timeout=120)
        restarted = users.served()
        wait_for(lambda: users.served() >= restarted + 20, 120, "pages after the restart")
    assert not users.failures, users.failures
    assert users.errors() == [], users.errors()[:5]
    assert statuses == [303], "the sign-in during the restart went through once the server was back"
    assert late.get("/patients").status_code == 200
    late.close()


# --------------------------------------------------------------------------- SQLite


@pytest.fixture
def sqlite_seeded(tmp_path: Path) -> Iterator[Seeded]:
    seeded = build(tmp_path)
    yield seeded
    seeded.ctx.engine.dispose()


def _with_settings(seeded: Seeded, **changes: object) -> FastAPI:
    settings = seeded.settings.model_copy(update=changes)
    return create_app(dataclasses.replace(seeded.ctx, settings=settings), today=lambda: TODAY)


def test_pages_are_served_while_another_process_holds_the_write_lock(
    sqlite_seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every page wants to stamp its session's last use (due at once here): the stamp is skipped
    while the lock is held, instead of the page waiting the 30 s busy timeout and failing."""
    monkeypatch.setattr(signin, "TOUCH_EVERY", timedelta(0))
    app = create_app(sqlite_seeded.ctx, today=lambda: TODAY)
    clients = [sign_in(TestClient(app, follow_redirects=False), "clin") for _ in range(3)]
    release = tmp_path / "release"
    holder_code = (
        "import sqlite3, sys, time, pathlib\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None); c.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        "deadline = time.monotonic() + 120\n"
        "while not pathlib.Path(sys.argv[2]).exists() and time.monotonic() < deadline: time.sleep(0.05)\n"
        "c.execute('ROLLBACK')\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code, str(tmp_path / "web.db"), str(release)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        statuses = [
            client.get(page).status_code for client in clients for page in ("/patients", "/worklist", "/api/patients")
        ]
        assert holder.poll() is None, "the pages should have been served while the lock was held"
    finally:
        release.touch()
        holder.wait(timeout=130)
    assert statuses == [200] * len(statuses)
    with sqlite_seeded.factory() as session:
        before = max(session.scalars(select(WebSession.last_seen_at)))
    time.sleep(0.01)
    assert clients[0].get("/patients").status_code == 200
    with sqlite_seeded.factory() as session:
        after = max(session.scalars(select(WebSession.last_seen_at)))
    assert after > before, "once the lock is free, the session's last use is stamped again"
    for client in clients:
        client.close()


def _login_form(client: TestClient, user: str) -> dict[str, str]:
    return {"username": user, "password": PASSWORDS[user], "csrf_token": csrf_of(client.get("/login").text)}


def test_many_sign_ins_at_once_queue_for_a_few_password_checks(
    sqlite_seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """24 people sign in at the same moment: at most 2 Argon2 checks run at once, none of them
    inside a transaction (another writer can take SQLite's lock meanwhile), and everyone is in."""
    app = _with_settings(sqlite_seeded, signin_concurrency=2, signin_queue_seconds=300)
    real = accounts.password_matches
    lock = threading.Lock()
    running, peak, lock_free = [0], [0], [0]

    def watched(stored: str | None, password: str) -> bool:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            probe = sqlite3.connect(tmp_path / "web.db", timeout=20, isolation_level=None)
            probe.execute("BEGIN IMMEDIATE")  # would wait on this very sign-in if it held the lock
            probe.execute("ROLLBACK")
            probe.close()
            with lock:
                lock_free[0] += 1
            return real(stored, password)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(accounts, "password_matches", watched)
    count = 24
    clients = [TestClient(app, follow_redirects=False) for _ in range(count)]
    forms = [_login_form(client, "clin") for client in clients]
    gate = threading.Barrier(count)
    statuses: list[int] = []

    def go(i: int) -> None:
        gate.wait()
        statuses.append(clients[i].post("/login", data=forms[i]).status_code)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert sorted(statuses) == [303] * count
    assert peak[0] <= 2, f"{peak[0]} password checks ran at once"
    assert lock_free[0] == count, "a password was checked while its sign-in held the write lock"
    assert all(client.get("/patients").status_code == 200 for client in clients)
    for client in clients:
        client.close()


def test_a_full_sign_in_queue_asks_to_try_again(sqlite_seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _with_settings(sqlite_seeded, signin_concurrency=1, signin_queue_seconds=0.3)
    real = accounts.password_matches
    inside, release = threading.Event(), threading.Event()

    def slow(stored: str | None, password: str) -> bool:
        inside.set()
        release.wait(timeout=120)
        return real(stored, password)

    monkeypatch.setattr(accounts, "password_matches", slow)
    first = TestClient(app, follow_redirects=False)
    first_form = _login_form(first, "clin")
    outcome: list[int] = []
    holder = threading.Thread(target=lambda: outcome.append(first.post("/login", data=first_form).status_code))
    holder.start()
    try:
        assert inside.wait(timeout=60)
        with TestClient(app, follow_redirects=False) as second:
            busy = second.post("/login", data=_login_form(second, "qa"))
    finally:
        release.set()
        holder.join(timeout=120)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
    assert "Many people are signing in at this moment" in busy.text
    assert outcome == [303], "the sign-in that had the slot went through"
    first.close()


def test_fifty_signed_in_users_browse_at_once(sqlite_seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fifty users reading pages side by side (each server thread its own connection): none
    waits out the connection pool. A page used to take a second connection of the pool while
    holding its first (the user's language), and fifty of them held the whole pool waiting."""
    monkeypatch.setattr(accounts, "password_matches", lambda stored, password: password == PASSWORDS["qa"])
    app = create_app(sqlite_seeded.ctx, today=lambda: TODAY)
    with Browsers(app, users=50) as users:
        wait_for(lambda: users.signed_in == 50 and users.served() >= 250, 300, "fifty users reading pages")
    assert not users.failures, users.failures[:3]
    assert users.errors() == [], users.errors()[:5]
