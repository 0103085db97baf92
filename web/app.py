"""The dashboard and HTTP API: `create_app(ctx)` builds the FastAPI app.

Server-rendered pages (Jinja2, no JavaScript needed, every asset vendored under web/static) and a
JSON API under /api/ that mirrors them. The composition root (`dxa serve` / `dxa web`) passes the
context the use cases run with: in the scaled mode its `submit` sends jobs to Celery, so work a
page queues (a precision study's re-evaluations, a file to re-process) starts at once.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
from base64 import b64decode, b64encode
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import Session as CookieSession
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import cookie_parser
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db.engine import make_engine, session_factory, transient_fault
from services.context import Context
from services.logsafe import describe
from web import filters
from web.auth import CsrfFailed, Forbidden, LoginRequired, is_api, load_secret_key
from web.deps import Services, User, render
from web.metrics import BrokerDepth, OperationsCollector, make_registry
from web.routes import (
    account,
    alerts,
    auth_routes,
    language,
    operations,
    patients,
    qa,
    qa_devices,
    qa_records,
    qa_scans,
    worklist,
)

HERE = Path(__file__).resolve().parent
log = logging.getLogger(__name__)
SESSION_COOKIE = "dxa_session"

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
]


READ_RETRY_S = 20.0  # how long a page read is tried again through a database fault


class QuietErrors:
    """The outermost layer: an exception no handler took becomes a plain 500, logged by type and
    place only. Left to the server, it would be logged with its text, and a database error's text
    quotes the statement's parameters (a patient's name or ID in a search, an audit row).

    A read (GET, HEAD) that failed on a transient database fault is run again, with a growing
    pause, for up to `retry_s` (pooled connections are pinged before use, but one can be ended
    in the middle of a query, and a restarting server refuses connections for a few seconds);
    if the database is still not answering, 503 says so. A form post is never run twice."""

    def __init__(self, app: ASGIApp, retry_s: float = READ_RETRY_S) -> None:
        self.app = app
        self.retry_s = retry_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        received: list[Message] = []

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def recording() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                received.append(message)
            return message

        readonly = scope.get("method") in ("GET", "HEAD")
        deadline = time.monotonic() + self.retry_s
        pause = 0.1
        while True:
            try:
                await self.app(scope, _replay(list(received), recording), tracking)
                return
            except Exception as exc:
                transient = transient_fault(exc)
                if readonly and transient and not started and time.monotonic() < deadline:
                    log.info("read tried again after a database fault (%s)", describe(exc))
                    await anyio.sleep(pause)
                    pause = min(pause * 2, 2.0)
                    continue
                log.warning("request failed (%s)", describe(exc))
                if started:
                    return
                if transient:
                    busy = PlainTextResponse(
                        "The database is not answering at the moment. Try again shortly.", 503, {"Retry-After": "5"}
                    )
                    await busy(scope, receive, send)
                else:
                    await PlainTextResponse("Internal error: the request could not be completed.", 500)(
                        scope, receive, send
                    )
                return


def _replay(messages: list[Message], then: Receive) -> Receive:
    """A `receive` that hands the request body read by an earlier try out again, then reads on."""

    async def receive() -> Message:
        return messages.pop(0) if messages else await then()

    return receive


class SignedSessions(SessionMiddleware):
    """Starlette's signed-cookie session (the same cookie, signature, expiry and Set-Cookie), with
    each cookie value's verification remembered: a browser sends the same cookie with every page
    until the session changes, and checking its signature and decoding it each time cost a page
    more than its sign-in query (issue 13). What is remembered is the outcome of verifying that
    exact string under this process's key, so a forged or altered cookie never reaches it; the
    expiry (`max_age`, from the cookie's signed timestamp) is checked on every request as before.
    The server's session row still decides, on every request, whether a session is live
    (`web.auth.authenticate`)."""

    MAX_REMEMBERED = 4096  # cookie values remembered at once (then all forgotten)

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        super().__init__(app, **options)
        self.verified: dict[str, tuple[dict[str, Any], int]] = {}

    def _load(self, value: str) -> dict[str, Any] | None:
        """The session data a cookie value carries; None when forged, altered or expired."""
        found = self.verified.get(value)
        if found is None:
            try:
                data, signed = self.signer.unsign(value.encode("utf-8"), max_age=self.max_age, return_timestamp=True)
                content = json.loads(b64decode(data))
            except (BadSignature, ValueError):
                return None
            if not isinstance(content, dict):
                return None
            if len(self.verified) >= self.MAX_REMEMBERED:
                self.verified.clear()
            found = self.verified[value] = (content, int(signed.timestamp()))
        content, signed_at = found
        if self.max_age is not None and not 0 <= int(time.time()) - signed_at <= self.max_age:
            return None  # as `TimestampSigner.unsign` says: older than max_age, or from the future
        return content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        cookie = None
        for name, value in scope["headers"]:
            if name == b"cookie":  # as `Request.cookies`: every Cookie header, the last one wins
                cookie = cookie_parser(value.decode("latin-1")).get(self.session_cookie, cookie)
        content = self._load(cookie) if cookie is not None else None
        initial_session_was_empty = content is None
        scope["session"] = CookieSession(content or {})  # a copy: the remembered data stays as signed

        async def send_wrapper(message: Message) -> None:
            # Starlette's SessionMiddleware.send_wrapper, unchanged
            if message["type"] == "http.response.start":
                session: CookieSession = scope["session"]
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                if session.accessed:
                    headers.add_vary_header("Cookie")
                if session.modified and session:
                    data = b64encode(json.dumps(session).encode("utf-8"))
                    data = self.signer.sign(data)
                    max_age = f"Max-Age={self.max_age}; " if self.max_age is not None else ""
                    value = f"{self.session_cookie}={data.decode('utf-8')}; path={self.path}; {max_age}"
                    headers.append("Set-Cookie", value + self.security_flags)
                elif session.modified and not initial_session_was_empty:
                    expires = "expires=Thu, 01 Jan 1970 00:00:00 GMT; "
                    headers.append(
                        "Set-Cookie", f"{self.session_cookie}=null; path={self.path}; {expires}{self.security_flags}"
                    )
            await send(message)

        await self.app(scope, receive, send_wrapper)


class SecurityHeaders:
    """Security headers on every answer; patient data is never cached; the session cookie is
    marked Secure whenever the request came over https (directly or via a trusted proxy)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"
        static = str(scope.get("path", "")).startswith("/static/")

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = []
                for name, value in message.get("headers", []):
                    if https and name.lower() == b"set-cookie" and b"secure" not in value.lower():
                        value = value + b"; Secure"
                    headers.append((name, value))
                headers.extend(_SECURITY_HEADERS)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, wrapped)


class Dashboard(FastAPI):
    """The FastAPI app, with the patient page answered through a shorter stack of its own.

    The page clinicians open most is a plain Starlette route (`patients.PAGE_ROUTE`); served by
    the app it also went through FastAPI's and Starlette's layers (error and exception
    middlewares, exit stack, telemetry and body-limit checks, the router) and their wrappers
    around every message sent, which cost it more CPU than its queries (issue 13). A GET that
    this route matches goes straight to `page_stack`: the same three middlewares of ours in the
    same order (`QuietErrors`, `SecurityHeaders`, the signed session), then the route, whose
    exceptions go to the app's own handlers as the exception middleware would send them. Every
    other request (a HEAD or POST of that path included) is served by the full app."""

    page_stack: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.page_stack is not None and scope["type"] == "http":
            match, child = patients.PAGE_ROUTE.matches(scope)
            if match is Match.FULL:
                scope.update(child)
                scope["app"] = self
                scope["router"] = self.router
                await self.page_stack(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def handled(self, endpoint: Callable[[Request], Awaitable[Response]]) -> ASGIApp:
        """`endpoint` as an ASGI app whose exceptions go to this app's exception handlers (looked
        up as Starlette's exception middleware does: by status code, then along the class's MRO);
        one without a handler is raised to `QuietErrors`."""

        async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
            request = Request(scope, receive, send)
            try:
                response = await endpoint(request)
            except Exception as exc:
                handler = self._handler_for(exc)
                if handler is None:
                    raise
                if inspect.iscoroutinefunction(handler):
                    response = await handler(request, exc)
                else:
                    response = await run_in_threadpool(handler, request, exc)
            await response(scope, receive, send)

        return asgi

    def _handler_for(self, exc: Exception) -> Callable[..., Any] | None:
        handlers = self.exception_handlers
        if isinstance(exc, StarletteHTTPException) and exc.status_code in handlers:
            return handlers[exc.status_code]
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        return None


READ_PING_IDLE_S = 10.0  # a page's pooled PostgreSQL connection is pinged only after this long unused


def _read_sessions(ctx: Context) -> sessionmaker[Session]:
    """Sessions for the pages' reads. On SQLite every transaction of the use cases' engine begins
    IMMEDIATE (it takes the write lock); a page's reads must not hold that lock while the use case
    it calls waits for it, so they get deferred transactions of their own (WAL: readers never
    block the writer). PostgreSQL reads take no such lock; they get a pool of their own whose
    connections are pinged only after sitting idle (`db.engine.ping_when_idle`): a page is a few
    short queries, and the ping on every checkout was a round trip more for each. A connection
    that died meanwhile fails the read, which `QuietErrors` runs again on a fresh one."""
    if ctx.engine.dialect.name == "sqlite":
        # one connection per server thread (SQLite connections are cheap): a page never waits for one
        return session_factory(make_engine(ctx.engine.url, sqlite_immediate=False, pool_size=10, max_overflow=40))
    if ctx.engine.dialect.name == "postgresql":
        return session_factory(make_engine(ctx.engine.url, ping_idle_after_s=READ_PING_IDLE_S))
    return ctx.sessions


def create_app(
    ctx: Context, *, today: Callable[[], date] = date.today, broker_depth: BrokerDepth | None = None
) -> FastAPI:
    """The web application over `ctx` (`today` is injectable for tests). `broker_depth()` counts
    the messages waiting in the broker (scaled mode) for the operations page and /metrics."""
    settings = ctx.settings
    app = Dashboard(
        title="DXA monitor",
        version="0.1.0",
        docs_url=None,  # Swagger UI loads from a CDN; the schema is at /api/openapi.json (login required)
        redoc_url=None,
        openapi_url=None,
    )
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    filters.install(templates.env)
    read_sessions = _read_sessions(ctx)
    app.state.services = Services(ctx=ctx, read_sessions=read_sessions, templates=templates, today=today)
    app.state.signin_slots = threading.BoundedSemaphore(settings.signin_concurrency)
    session_options: dict[str, Any] = {
        "secret_key": load_secret_key(settings.secret_key, settings.data_dir),
        "session_cookie": SESSION_COOKIE,
        "max_age": int(settings.session_max_hours * 3600),  # the server's row decides; this only tidies
        "same_site": "lax",
        "https_only": False,  # SecurityHeaders adds Secure per request when served over https
    }
    app.add_middleware(SignedSessions, **session_options)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(QuietErrors)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    app.state.operations = OperationsCollector(read_sessions, broker_depth)
    app.state.metrics_registry = make_registry(read_sessions, broker_depth)
    routers = (
        auth_routes,
        account,
        language,
        patients,
        alerts,
        worklist,
        qa,
        qa_devices,
        qa_records,
        qa_scans,
        operations,
    )
    app.router.routes.append(patients.PAGE_ROUTE)  # a Starlette route: see its docstring
    for module in routers:
        app.include_router(module.router)
    _install_error_handlers(app)
    # the patient page's own stack: the middlewares above, in the same order, around the route
    app.page_stack = QuietErrors(SecurityHeaders(SignedSessions(app.handled(patients.patient_page), **session_options)))

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi(_: User) -> JSONResponse:
        return JSONResponse(app.openapi())

    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _: LoginRequired) -> Response:
        if is_api(request):
            return JSONResponse(
                {"detail": "authentication required"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        # the raw path: decoding it would turn an identifier's %2F into a separator
        raw = request.scope.get("raw_path")
        path = raw.decode("latin-1") if raw else request.url.path
        target = path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={_quote(target)}", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, _: Forbidden) -> Response:
        if is_api(request):
            return JSONResponse({"detail": "your role may not open this"}, status_code=403)
        message = "Your role may not open this page."
        response: Response = render(request, "error.html", {"title": "Not allowed", "message": message}, 403)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if is_api(request) or exc.status_code < 400:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        titles = {404: "Not found", 405: "Not allowed", 409: "Which patient?", 413: "Too large"}
        context = {"title": titles.get(exc.status_code, "Error"), "message": str(exc.detail)}
        response: Response = render(request, "error.html", context, exc.status_code)
        return response

    @app.exception_handler(CsrfFailed)
    async def csrf_failed(request: Request, _: CsrfFailed) -> Response:
        if is_api(request):
            return JSONResponse({"detail": "CSRF token missing or wrong"}, status_code=403)
        message = "The form had expired. Go back, reload the page and try again."
        response: Response = render(request, "error.html", {"title": "Form expired", "message": message}, 403)
        return response


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")
