"""Sign-in, sessions, tokens, CSRF and roles: no data without a login, no QA page for clinicians."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker
from starlette.routing import Route

from db.models import AuditEvent
from tests.web.conftest import csrf_of
from tests.web.seed import PASSWORDS, REPLACED, Seeded
from web.app import create_app
from web.routes import auth_routes, patients, qa, qa_devices, worklist

OPEN = {"/healthz", "/login", "/logout"}  # /logout shows no data and needs its CSRF token
QA_GET = ["/qa/comparisons", "/qa/devices", "/qa/ingest", "/qa/comparisons.csv"]
QA_API = ["/api/qa/comparisons", "/api/qa/devices", "/api/qa/ingest"]


def _concrete(path: str) -> str:
    return path.replace("{patient_id}", REPLACED).replace("{therapy_pk}", "1").replace("{file_pk}", "1")


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    routes = [*app.routes, *(r for m in (auth_routes, patients, qa, qa_devices, worklist) for r in m.router.routes)]
    for route in routes:  # FastAPI's routes and the patient page's plain Starlette one
        if isinstance(route, Route) and route.path not in OPEN:
            found.extend((method, _concrete(route.path)) for method in sorted(route.methods or ()))
    return found


def test_healthz_answers_without_login(anon: TestClient) -> None:
    response = anon.get("/healthz")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"


def test_healthz_is_503_when_the_database_does_not_answer(seeded: Seeded) -> None:
    nowhere = create_engine("postgresql+psycopg://dxa@127.0.0.1:1/nothing", connect_args={"connect_timeout": 2})
    broken = replace(seeded.ctx, engine=nowhere, sessions=sessionmaker(bind=nowhere))
    with TestClient(create_app(broken)) as client:
        assert client.get("/healthz").status_code == 503


def test_every_route_but_healthz_and_login_needs_a_login(app: FastAPI, anon: TestClient) -> None:
    routes = _routes(app)
    assert len(routes) >= 25
    assert ("GET", f"/patients/{REPLACED}") in routes  # the patient page, a Starlette route
    for method, path in routes:
        response = anon.request(method, path)
        if path.startswith("/api/"):
            assert response.status_code == 401, (method, path, response.status_code)
            assert response.json()["detail"] == "authentication required"
        else:
            assert response.status_code == 303, (method, path, response.status_code)
            assert response.headers["location"].startswith("/login?next=")


def test_wrong_password_is_refused_and_audited(anon: TestClient, seeded: Seeded) -> None:
    token = csrf_of(anon.get("/login").text)
    response = anon.post("/login", data={"username": "clin", "password": "nope", "csrf_token": token})
    assert response.status_code == 401
    assert "Wrong user name or password" in response.text
    assert anon.get("/patients").status_code == 303
    with seeded.factory() as session:
        assert session.scalar(select(AuditEvent).where(AuditEvent.action == "login_failed")) is not None


def test_login_form_needs_its_csrf_token(anon: TestClient) -> None:
    anon.get("/login")
    response = anon.post("/login", data={"username": "clin", "password": PASSWORDS["clin"], "csrf_token": "forged"})
    assert response.status_code == 403
    assert anon.get("/patients").status_code == 303


def test_session_cookie_flags(app: FastAPI) -> None:
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        token = csrf_of(client.get("/login").text)
        response = client.post("/login", data={"username": "clin", "password": PASSWORDS["clin"], "csrf_token": token})
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "secure" in cookie
    with TestClient(app, follow_redirects=False) as client:
        cookie = client.get("/login").headers["set-cookie"].lower()
        assert "secure" not in cookie and "httponly" in cookie


def test_next_never_leaves_the_site(anon: TestClient) -> None:
    token = csrf_of(anon.get("/login").text)
    data = {
        "username": "clin",
        "password": PASSWORDS["clin"],
        "csrf_token": token,
        "next": "//evil.example/x",
    }
    assert anon.post("/login", data=data).headers["location"] == "/patients"


def test_logout_ends_the_session(login: Callable[[str], TestClient]) -> None:
    client = login("clin")
    token = csrf_of(client.get("/patients").text)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    assert client.get("/patients").status_code == 303


def test_security_headers(login: Callable[[str], TestClient]) -> None:
    response = login("clin").get("/patients")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("path", QA_GET + QA_API)
def test_clinician_cannot_open_qa(login: Callable[[str], TestClient], path: str) -> None:
    response = login("clin").get(path)
    assert response.status_code == 403


@pytest.mark.parametrize("user", ["qa", "admin"])
def test_qa_and_admin_open_qa(login: Callable[[str], TestClient], user: str) -> None:
    client = login(user)
    for path in QA_GET + QA_API:
        assert client.get(path).status_code == 200, path


def test_clinician_nav_has_no_qa_links(login: Callable[[str], TestClient]) -> None:
    html = login("clin").get("/patients").text
    assert "/qa/comparisons" not in html
    assert "/qa/comparisons" in login("qa").get("/patients").text


def test_bearer_token_for_the_api_only(anon: TestClient, seeded: Seeded) -> None:
    good = {"Authorization": f"Bearer {seeded.token}"}
    assert anon.get("/api/patients", headers=good).status_code == 200
    assert anon.get("/api/patients", headers={"Authorization": "Bearer dxa_wrong"}).status_code == 401
    assert anon.get("/patients", headers=good).status_code == 303  # pages need a signed-in session
    assert anon.get("/api/qa/comparisons", headers=good).status_code == 403  # the clinician's token
    qa = {"Authorization": f"Bearer {seeded.qa_token}"}
    assert anon.get("/api/qa/comparisons", headers=qa).status_code == 200


def test_openapi_is_served_behind_login(anon: TestClient, seeded: Seeded) -> None:
    assert anon.get("/api/openapi.json").status_code == 401
    schema = anon.get("/api/openapi.json", headers={"Authorization": f"Bearer {seeded.token}"}).json()
    assert "/api/patients/{patient_id}/trend" in schema["paths"]


def test_api_token_last_use_is_stamped_at_most_once_a_minute(
    anon: TestClient, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11: an integration polling every second must not cost a write per call."""
    from datetime import timedelta

    from db import accounts
    from db.models import ApiToken

    def stamps() -> list[object]:
        with seeded.factory() as session:
            return list(session.scalars(select(ApiToken.last_used_at).order_by(ApiToken.id)))

    good = {"Authorization": f"Bearer {seeded.token}"}
    assert anon.get("/api/patients", headers=good).status_code == 200
    first = stamps()
    assert any(stamp is not None for stamp in first)
    writes: list[int] = []
    real_touch = accounts.touch_api_token

    def counted(*args: Any, **kwargs: Any) -> None:
        writes.append(1)
        real_touch(*args, **kwargs)

    monkeypatch.setattr(accounts, "touch_api_token", counted)
    for _ in range(5):
        assert anon.get("/api/patients", headers=good).status_code == 200
    assert writes == [] and stamps() == first, "a stamp less than a minute old is not written again"
    monkeypatch.setattr(accounts, "TOKEN_TOUCH_EVERY", timedelta(0))
    assert anon.get("/api/patients", headers=good).status_code == 200
    assert writes == [1] and stamps() != first, "an old stamp is renewed"
