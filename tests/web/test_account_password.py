"""A signed-in user changes their own password on a page: the current password is required (and
a wrong one counts towards the sign-in throttle), every other session of the user ends, this
browser stays signed in, and the change is audited without the passwords."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from db.models import AuditEvent, LoginFailure
from tests.web.conftest import csrf_of, sign_in
from tests.web.seed import PASSWORDS, TODAY, Seeded, build
from web.app import create_app

NEW = "a-new-password-for-qa-1"


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[Seeded, FastAPI]]:
    seeded = build(tmp_path)  # its own database: this test changes a password
    yield seeded, create_app(seeded.ctx, today=lambda: TODAY)
    seeded.ctx.engine.dispose()


def _change(client: TestClient, current: str, new: str, again: str | None = None) -> tuple[int, str]:
    token = csrf_of(client.get("/account/password").text)
    form = {"current_password": current, "new_password": new, "new_password_again": again or new, "csrf_token": token}
    response = client.post("/account/password", data=form)
    return response.status_code, response.text


def _password_works(app: FastAPI, user: str, password: str) -> bool:
    with TestClient(app, follow_redirects=False) as client:
        token = csrf_of(client.get("/login").text)
        response = client.post("/login", data={"username": user, "password": password, "csrf_token": token})
    return response.status_code == 303


def test_changing_ones_password_ends_the_other_sessions(fresh: tuple[Seeded, FastAPI]) -> None:
    seeded, app = fresh
    here = sign_in(TestClient(app, follow_redirects=False), "qa")
    elsewhere = sign_in(TestClient(app, follow_redirects=False), "qa")
    colleague = sign_in(TestClient(app, follow_redirects=False), "admin")
    assert 'href="/account/password"' in here.get("/patients").text

    status, text = _change(here, "not-the-password", NEW)
    assert status == 400 and "The current password is wrong." in text
    with seeded.factory() as session:
        assert session.scalars(select(LoginFailure.username)).all() == ["qa"], "counted like a failed sign-in"
    assert _change(here, PASSWORDS["qa"], NEW, NEW + "x")[0] == 422
    assert _change(here, PASSWORDS["qa"], "short")[0] == 422
    assert _change(here, PASSWORDS["qa"], PASSWORDS["qa"])[0] == 422
    assert elsewhere.get("/patients").status_code == 200, "refused changes change nothing"

    status, text = _change(here, PASSWORDS["qa"], NEW)
    assert status == 200 and "Your password was changed" in text
    assert here.get("/patients").status_code == 200, "this browser stays signed in"
    assert here.post("/logout", data={"csrf_token": csrf_of(here.get("/patients").text)}).status_code == 303
    gone = elsewhere.get("/patients")
    assert gone.status_code == 303 and gone.headers["location"].startswith("/login")
    assert colleague.get("/patients").status_code == 200, "other users keep their sessions"
    assert not _password_works(app, "qa", PASSWORDS["qa"]) and _password_works(app, "qa", NEW)

    with seeded.factory() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "user_password_changed")).all()
        refused = session.scalars(select(AuditEvent).where(AuditEvent.action == "password_change_refused")).all()
    assert [(e.actor, e.detail) for e in events] == [("qa", {"by": "self", "other_sessions_ended": 1})]
    assert len(refused) == 1
    assert all(NEW not in str(e.detail) and PASSWORDS["qa"] not in str(e.detail) for e in [*events, *refused])
    for client in (here, elsewhere, colleague):
        client.close()


def test_the_password_page_needs_a_session_and_the_form_token(fresh: tuple[Seeded, FastAPI]) -> None:
    _, app = fresh
    with TestClient(app, follow_redirects=False) as anon:
        assert anon.get("/account/password").status_code == 303
    client = sign_in(TestClient(app, follow_redirects=False), "clin")
    form = {"current_password": PASSWORDS["clin"], "new_password": NEW, "new_password_again": NEW}
    assert client.post("/account/password", data={**form, "csrf_token": "forged"}).status_code == 403
    assert _password_works(app, "clin", PASSWORDS["clin"])
    client.close()
