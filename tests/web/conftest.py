from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.web.seed import PASSWORDS, TODAY, Seeded, build
from web.app import create_app


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return build(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def app(seeded: Seeded) -> FastAPI:
    return create_app(seeded.ctx, today=lambda: TODAY)


@pytest.fixture
def anon(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=False) as client:
        yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(client: TestClient, user: str) -> TestClient:
    token = csrf_of(client.get("/login").text)
    response = client.post(
        "/login",
        data={"username": user, "password": PASSWORDS[user], "csrf_token": token, "next": "/patients"},
    )
    assert response.status_code == 303, response.text
    return client


@pytest.fixture
def login(app: FastAPI) -> Iterator[Callable[[str], TestClient]]:
    clients: list[TestClient] = []

    def make(user: str) -> TestClient:
        client = TestClient(app, follow_redirects=False)
        clients.append(client)
        return sign_in(client, user)

    yield make
    for client in clients:
        client.close()
