"""Sign-in throttling per account and per address, server-side sessions ended at sign-out and on a
password change, idle and absolute timeouts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update

from db import accounts
from db.models import LoginFailure, User, WebSession, utcnow
from tests.web.conftest import csrf_of
from tests.web.seed import PASSWORDS, Seeded


@pytest.fixture(autouse=True)
def _fresh_throttle(seeded: Seeded) -> Iterator[None]:
    with seeded.factory.begin() as session:
        session.execute(delete(LoginFailure))
    yield
    with seeded.factory.begin() as session:
        session.execute(delete(LoginFailure))


def _post_login(client: TestClient, user: str, password: str) -> tuple[int, str, dict[str, str]]:
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"username": user, "password": password, "csrf_token": token, "next": "/patients"})
    return r.status_code, r.text, dict(r.headers)


def _signed_in(app: FastAPI, user: str = "clin") -> TestClient:
    client = TestClient(app, follow_redirects=False)
    status, text, _ = _post_login(client, user, PASSWORDS[user])
    assert status == 303, text
    assert client.get("/patients").status_code == 200
    return client


def test_saved_cookie_is_worthless_after_sign_out(app: FastAPI) -> None:
    client = _signed_in(app)
    saved = dict(client.cookies)
    token = csrf_of(client.get("/patients").text)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    with TestClient(app, follow_redirects=False, cookies=saved) as thief:
        response = thief.get("/patients")
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


def test_password_change_ends_every_session(app: FastAPI, seeded: Seeded) -> None:
    first, second = _signed_in(app, "qa"), _signed_in(app, "qa")
    other = _signed_in(app, "admin")
    with seeded.factory.begin() as session:
        user = accounts.get_user(session, "qa")
        assert user is not None
        accounts.set_password(session, user, PASSWORDS["qa"])  # same text, new hash: still a change
    assert first.get("/patients").status_code == 303
    assert second.get("/patients").status_code == 303
    assert other.get("/patients").status_code == 200


def test_disabled_account_is_out_at_once(app: FastAPI, seeded: Seeded) -> None:
    client = _signed_in(app, "admin")
    with seeded.factory.begin() as session:
        user = accounts.get_user(session, "admin")
        assert user is not None
        accounts.set_active(session, user, False)
    try:
        assert client.get("/patients").status_code == 303
    finally:
        with seeded.factory.begin() as session:
            session.execute(update(User).where(User.username == "admin").values(active=True))


def _age_sessions(seeded: Seeded, **ages: timedelta) -> None:
    now = utcnow()
    with seeded.factory.begin() as session:
        session.execute(update(WebSession).values({k: now - v for k, v in ages.items()}))


def test_idle_timeout(app: FastAPI, seeded: Seeded) -> None:
    client = _signed_in(app)
    _age_sessions(seeded, last_seen_at=timedelta(minutes=29))
    assert client.get("/patients").status_code == 200  # used within the idle limit: still in
    _age_sessions(seeded, last_seen_at=timedelta(minutes=31))
    assert client.get("/patients").status_code == 303
    _age_sessions(seeded, last_seen_at=timedelta(0))
    assert client.get("/patients").status_code == 303  # ended for good, not just paused


def test_absolute_timeout(app: FastAPI, seeded: Seeded) -> None:
    client = _signed_in(app)
    _age_sessions(seeded, created_at=timedelta(hours=7, minutes=59))
    assert client.get("/patients").status_code == 200
    _age_sessions(seeded, created_at=timedelta(hours=8, minutes=1))
    assert client.get("/patients").status_code == 303


def test_throttle_per_account(app: FastAPI, seeded: Seeded) -> None:
    with TestClient(app, follow_redirects=False) as client:
        for _ in range(5):
            assert _post_login(client, "clin", "wrong")[0] == 401
        status, text, headers = _post_login(client, "clin", PASSWORDS["clin"])  # even the right one
        assert status == 429
        assert "Too many failed sign-ins for this user name" in text and "15 minutes" in text
        assert 840 <= int(headers["retry-after"]) <= 901
        assert _post_login(client, "CLIN ", PASSWORDS["clin"])[0] == 429  # same account, other spelling
        assert _post_login(client, "qa", PASSWORDS["qa"])[0] == 303  # other accounts are not locked
        assert _post_login(client, "nobody", "x")[0] == 401  # unknown names are counted the same way
    with seeded.factory.begin() as session:  # the window passes
        session.execute(update(LoginFailure).values(occurred_at=utcnow() - timedelta(minutes=16)))
    with TestClient(app, follow_redirects=False) as client:
        assert _post_login(client, "clin", PASSWORDS["clin"])[0] == 303
    with seeded.factory() as session:  # a success clears the account's failures
        assert not list(session.scalars(select(LoginFailure).where(LoginFailure.username == "clin")))


def test_throttle_per_address(app: FastAPI) -> None:
    with TestClient(app, follow_redirects=False) as client:
        for i in range(20):
            assert _post_login(client, f"guess{i}", "wrong")[0] == 401
        status, text, _ = _post_login(client, "admin", PASSWORDS["admin"])
        assert status == 429 and "Too many failed sign-ins for this computer" in text
