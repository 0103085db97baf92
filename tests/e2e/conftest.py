"""A live server (uvicorn in a thread, free port, seeded SQLite) and Debian's Chromium driven by
Playwright. Every request that is not to the local server is aborted: the dashboard must work
with no internet. Screenshots go to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.conftest import skip_or_fail
from tests.web.seed import TODAY, Seeded, build

CHROMIUM = os.environ.get("DXA_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return build(tmp_path_factory.mktemp("e2e"))


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Run `app` under uvicorn in a thread on a free port; yields its base URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the web server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def live_server(seeded: Seeded) -> Iterator[str]:
    from web.app import create_app

    app = create_app(seeded.ctx, today=lambda: TODAY)
    with serve_app(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        skip_or_fail(f"Chromium not found at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def local_only(blocked: list[str]) -> Callable[[Any], None]:
    """A route handler that lets the app's own host through and notes (and aborts) anything else:
    the pages must work in a hospital network with no internet."""

    def guard(route: Any) -> None:
        if urlparse(route.request.url).hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    return guard


def signed_in_page(
    browser: Any, live_server: str, user: str, password: str, viewport: dict[str, int], blocked: list[str]
) -> Any:
    """A new browser context signed in as `user` through the login form, on the patients list."""
    ctx = browser.new_context(base_url=live_server, viewport=viewport, accept_downloads=True, locale="en-GB")
    ctx.route("**/*", local_only(blocked))
    page = ctx.new_page()
    page.set_default_timeout(20_000)
    page.goto("/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/patients$"))
    return page


@pytest.fixture
def page(browser: Any, live_server: str) -> Iterator[Any]:
    context = browser.new_context(base_url=live_server, viewport={"width": 1400, "height": 1000})
    blocked: list[str] = []
    context.route("**/*", local_only(blocked))
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    yield pg
    context.close()
    assert not blocked, f"the page tried to reach the network: {blocked}"


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
