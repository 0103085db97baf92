"""An exception no handler takes is answered 500 and logged by type and place, never with its text
(a database error quotes the statement's parameters: names, IDs). A read that hit a transient
database fault (a connection ended mid-query, a server restarting) is tried again; a form post
never is."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError, OperationalError

from web.app import QuietErrors


def _app(error: Exception, fail_times: int, retry_s: float) -> tuple[FastAPI, list[str]]:
    app = FastAPI()
    calls: list[str] = []

    @app.get("/read")
    def read() -> dict[str, str]:
        calls.append("get")
        if len(calls) <= fail_times:
            raise error
        return {"ok": "yes"}

    @app.post("/write")
    def write() -> dict[str, str]:
        calls.append("post")
        raise error

    app.add_middleware(QuietErrors, retry_s=retry_s)
    return app, calls


def _fault() -> OperationalError:
    return OperationalError("SELECT * FROM patients WHERE name = ?", ("DOE^JANE",), Exception("terminating connection"))


def test_unhandled_errors_are_quiet(caplog: pytest.LogCaptureFixture) -> None:
    bug = IntegrityError("INSERT INTO patients (name) VALUES (?)", ("DOE^JANE",), Exception("constraint"))
    app, calls = _app(bug, fail_times=99, retry_s=5)
    with caplog.at_level(logging.DEBUG), TestClient(app) as client:
        response = client.get("/read")
    assert response.status_code == 500 and "DOE" not in response.text
    assert calls == ["get"], "an error of the request itself is not tried again"
    assert "request failed (IntegrityError at test_quiet_errors.py:" in caplog.text
    assert "DOE" not in caplog.text


def test_a_read_is_tried_again_through_a_lost_connection(caplog: pytest.LogCaptureFixture) -> None:
    app, calls = _app(_fault(), fail_times=2, retry_s=30)
    with caplog.at_level(logging.DEBUG), TestClient(app) as client:
        response = client.get("/read")
    assert response.status_code == 200 and response.json() == {"ok": "yes"}
    assert calls == ["get", "get", "get"]
    assert "read tried again after a database fault (OperationalError" in caplog.text
    assert "DOE" not in caplog.text


def test_a_database_that_stays_away_is_a_503_and_a_post_is_never_repeated() -> None:
    app, calls = _app(_fault(), fail_times=10_000, retry_s=0.5)
    with TestClient(app) as client:
        read = client.get("/read")
        assert read.status_code == 503 and read.headers["retry-after"] == "5"
        assert "not answering" in read.text and "DOE" not in read.text
        assert len(calls) >= 2, "tried again before giving up"
        calls.clear()
        write = client.post("/write")
    assert write.status_code == 503 and calls == ["post"]
