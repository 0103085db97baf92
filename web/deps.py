"""What every route needs, as FastAPI dependencies: the app's context, a read session, the user.

Routes read through `DbSession` (on SQLite a deferred transaction, so a page being rendered never
holds the write lock) and change things only by calling a use case of `services` with `app.ctx`:
the use case owns its transaction, and routes never commit.

FastAPI runs a plain `def` dependency in a worker thread, a hop there and back for each (with its
GIL hand-over): a page with five such dependencies spent more on the hops than on its queries
(issue 13). The dependencies that do no I/O are therefore `async def` and run on the event loop;
the sign-in check (a query) is the one dependency left in a thread, beside the route itself."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from monitor.config import MonitoringConfig
from services.audit import Actor
from services.context import Context
from settings import Settings
from web import i18n
from web.auth import CLINICAL_ROLES, QA_ROLES, CurrentUser, Forbidden, authenticate, csrf_token


@dataclass(frozen=True)
class Services:
    ctx: Context  # for the use cases
    read_sessions: sessionmaker[Session]  # for the pages' reads
    templates: Jinja2Templates
    today: Callable[[], date]

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def monitoring(self) -> MonitoringConfig:
        return self.ctx.monitoring


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


async def _services(request: Request) -> Services:
    return services(request)


async def db_session(request: Request) -> AsyncIterator[Session]:
    session = open_read_session(request)
    try:
        yield session
    finally:
        await close_read_session(request, session)


def open_read_session(request: Request) -> Session:
    """The request's read session. Opening it does no I/O (the connection is taken at the first
    query, in the route's thread)."""
    session = services(request).read_sessions()
    request.state.db = session  # the request's other reads (its user's language) reuse it
    return session


async def close_read_session(request: Request, session: Session) -> None:
    """Closing does I/O only while a transaction is open (the rollback that returns the
    connection), and then in a worker thread."""
    request.state.db = None  # an error page rendered later must not reopen a closed session
    if session.in_transaction():
        await run_in_threadpool(session.close)
    else:
        session.close()


DbSession = Annotated[Session, Depends(db_session)]
App = Annotated[Services, Depends(_services)]


def current_user(request: Request, session: DbSession) -> CurrentUser:
    user = authenticate(request, session, services(request).ctx)
    request.state.user = user
    return user


async def any_user(user: Annotated[CurrentUser, Depends(current_user)]) -> CurrentUser:
    if user.role not in CLINICAL_ROLES:
        raise Forbidden()
    return user


def clinical_user(request: Request, session: Session) -> CurrentUser:
    """The `User` dependency's check (signed in, a clinical role), for a route that runs it itself
    in the worker thread of its reads (the patient page: one thread hop instead of two)."""
    user = current_user(request, session)
    if user.role not in CLINICAL_ROLES:
        raise Forbidden()
    return user


async def qa_user(user: Annotated[CurrentUser, Depends(current_user)]) -> CurrentUser:
    if user.role not in QA_ROLES:
        raise Forbidden()
    return user


def actor(user: CurrentUser) -> Actor:
    """How the use cases name the signed-in user in the audit trail."""
    return Actor(user.username, user.id)


User = Annotated[CurrentUser, Depends(any_user)]
QaUser = Annotated[CurrentUser, Depends(qa_user)]


def saved_locale(request: Request) -> str | None:
    """The language the signed-in user chose, None when they follow the browser."""
    user = getattr(request.state, "user", None)
    return user.locale if isinstance(user, CurrentUser) else None  # read with the session check (web.auth)


def activate_request_locale(request: Request) -> tuple[str, str | None]:
    """Sets the request's language and formatting locale (web.i18n); returns the language and
    the user's saved choice (None: the browser's language)."""
    found: tuple[str, str, str | None] | None = getattr(request.state, "locales", None)
    if found is None:
        saved = saved_locale(request)
        accept = request.headers.get("accept-language")
        language = i18n.choose(saved, accept)
        found = (language, i18n.format_locale(language, accept), saved)
        request.state.locales = found
    i18n.activate(found[0], found[1])
    return found[0], found[2]


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    app = services(request)
    locale, saved = activate_request_locale(request)
    base = {
        "saved_locale": saved,
        "user": getattr(request.state, "user", None),
        "csrf": csrf_token(request),
        "today": app.today(),
        "path": request.url.path,
        "locale": locale,
        "locales": i18n.LOCALES,
        "html_lang": "zh-Hans" if locale == "zh_CN" else "en",
    }
    response: Response = app.templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)
    return response
