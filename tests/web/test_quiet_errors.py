"""An exception no handler takes is answered 500 and logged by type and place, never with its text
(a database error quotes the statement's parameters: names, IDs)."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from web.app import QuietErrors


def test_unhandled_errors_are_quiet(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()

    @app.get("/boom")
    def boom() -> None:
        raise OperationalError("SELECT * FROM patients WHERE name = ?", ("DOE^JANE",), Exception("locked"))

    app.add_middleware(QuietErrors)
    with caplog.at_level(logging.DEBUG), TestClient(app, raise_server_exceptions=True) as client:
        response = client.get("/boom")
    assert response.status_code == 500 and "DOE" not in response.text
    assert "request failed (OperationalError at test_quiet_errors.py:" in caplog.text
    assert "DOE" not in caplog.text
