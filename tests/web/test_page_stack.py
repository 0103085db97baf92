"""Issue 13: the patient page is answered through a short stack of its own (`web.app.Dashboard`)
with the same guards as every other page; the session cookie's verification is remembered per
cookie value; the page is drawn while its audit event is written, and sent only once that event
is committed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from starlette.types import Message, Receive, Scope, Send

from db.models import AuditEvent
from services import audit
from tests.web.seed import REPLACED, TODAY, Seeded
from web.app import SESSION_COOKIE, Dashboard, SignedSessions, create_app
from web.routes import patients


def _views(seeded: Seeded) -> int:
    with seeded.factory() as session:
        return int(session.scalar(select(func.count()).where(AuditEvent.action == "patient_viewed")) or 0)


@pytest.fixture
def fresh(seeded: Seeded) -> Dashboard:
    """An app of its own: the tests below wrap its stacks."""
    app = create_app(seeded.ctx, today=lambda: TODAY)
    assert isinstance(app, Dashboard)
    return app


@pytest.fixture
def clin(fresh: Dashboard, login: Callable[[str], TestClient]) -> Iterator[TestClient]:
    from tests.web.conftest import sign_in

    with TestClient(fresh, follow_redirects=False) as client:
        yield sign_in(client, "clin")


def _count_calls(app: FastAPI) -> list[str]:
    """Wraps the app's full middleware stack; the paths it served."""
    served: list[str] = []
    full = app.middleware_stack or app.build_middleware_stack()

    async def counting(scope: Scope, receive: Receive, send: Send) -> None:
        served.append(scope.get("path", ""))
        await full(scope, receive, send)

    app.middleware_stack = counting
    return served


SECURITY = ("x-content-type-options", "x-frame-options", "referrer-policy", "content-security-policy")


def test_the_page_skips_the_full_stack_and_keeps_its_guards(fresh: Dashboard, clin: TestClient, seeded: Seeded) -> None:
    served = _count_calls(fresh)
    before = _views(seeded)
    page = clin.get(f"/patients/{REPLACED}")
    assert page.status_code == 200 and 'class="point refused"' in page.text
    assert served == [], "the page went through its own stack"
    assert _views(seeded) == before + 1
    listed = clin.get("/patients")
    for name in SECURITY:
        assert page.headers[name] == listed.headers[name]
    assert page.headers["cache-control"] == "no-store", "patient data is never cached"
    assert served == ["/patients"], "every other page goes through the full app"

    missing = clin.get("/patients/no-such-patient")  # the app's own 404 handler, its error page
    assert missing.status_code == 404 and "no such patient" in missing.text and "Not found" in missing.text
    assert missing.headers["cache-control"] == "no-store" and "content-security-policy" in missing.headers
    assert clin.head(f"/patients/{REPLACED}").status_code == 405  # by the full app: GET only
    assert clin.post(f"/patients/{REPLACED}").status_code == 405
    assert _views(seeded) == before + 1

    with TestClient(fresh, follow_redirects=False) as anon:
        redirect = anon.get(f"/patients/{REPLACED}?issuer=")
        assert redirect.status_code == 303
        assert redirect.headers["location"] == f"/login?next=/patients/{REPLACED}%3Fissuer%3D"
        forged = clin.cookies.get(SESSION_COOKIE)
        assert forged
        anon.cookies.set(SESSION_COOKIE, forged[:-3] + ("AAA" if not forged.endswith("AAA") else "BBB"))
        assert anon.get(f"/patients/{REPLACED}").status_code == 303, "an altered cookie signs nobody in"
    assert _views(seeded) == before + 1


def test_a_view_is_committed_before_the_page_is_sent(
    fresh: Dashboard, clin: TestClient, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page is drawn while the event is written; here the write is held until the drawing is
    done, and the answer still waits for the write."""
    events: list[str] = []
    drawn = threading.Event()
    draw = patients._draw_page
    record = audit.record_read

    def drawing(*args: Any) -> Any:
        page = draw(*args)
        events.append("drawn")
        drawn.set()
        return page

    def recording(*args: Any, **kwargs: Any) -> None:
        assert drawn.wait(30), "the page is drawn while the event is written"
        record(*args, **kwargs)
        events.append("committed")

    monkeypatch.setattr(patients, "_draw_page", drawing)
    monkeypatch.setattr(patients, "record_read", recording)
    stack = fresh.page_stack
    assert stack is not None

    async def watching(scope: Scope, receive: Receive, send: Send) -> None:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                events.append("sent")
            await send(message)

        await stack(scope, receive, sending)

    fresh.page_stack = watching
    before = _views(seeded)
    assert clin.get(f"/patients/{REPLACED}").status_code == 200
    assert events == ["drawn", "committed", "sent"]
    assert _views(seeded) == before + 1


def test_a_failed_audit_write_shows_nothing(
    fresh: Dashboard, clin: TestClient, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*_: Any, **__: Any) -> None:
        raise RuntimeError("the audit table is full")

    monkeypatch.setattr(patients, "record_read", failing)
    page = clin.get(f"/patients/{REPLACED}")
    assert page.status_code == 500 and "refused" not in page.text
    assert "Internal error" in page.text


async def _noop(scope: Scope, receive: Receive, send: Send) -> None:
    return None


def _sessions(max_age: int = 3600) -> SignedSessions:
    return SignedSessions(_noop, secret_key="k", session_cookie="s", max_age=max_age)


def test_a_cookie_verified_once_is_remembered_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = _sessions()
    import base64
    import json

    value = sessions.signer.sign(base64.b64encode(json.dumps({"sid": "x", "role": "qa"}).encode())).decode()
    assert sessions._load(value) == {"sid": "x", "role": "qa"}
    assert value in sessions.verified
    unsign = sessions.signer.unsign
    calls: list[object] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return unsign(*args, **kwargs)

    monkeypatch.setattr(sessions.signer, "unsign", counting)
    assert sessions._load(value) == {"sid": "x", "role": "qa"}
    assert calls == [], "verified once per cookie value"
    altered = value[:-1] + ("A" if value[-1] != "A" else "B")
    assert sessions._load(altered) is None and altered not in sessions.verified
    assert _sessions()._load(value) is not None  # another process with the same key
    assert SignedSessions(_noop, secret_key="another", session_cookie="s")._load(value) is None

    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 3601)
    assert sessions._load(value) is None, "expired, though remembered"
    monkeypatch.setattr(time, "time", lambda: now - 120)
    assert sessions._load(value) is None, "signed in the future"
