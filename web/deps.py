"""What every route needs, as FastAPI dependencies: the app's services, a DB session, the user."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import User as UserRow
from dxa.settings import Settings
from monitor.config import MonitoringConfig
from web import i18n
from web.auth import CLINICAL_ROLES, QA_ROLES, CurrentUser, Forbidden, authenticate, csrf_token

TherapyHook = Callable[[sessionmaker[Session], Settings, int], Any]


@dataclass(frozen=True)
class Services:
    settings: Settings
    session_factory: sessionmaker[Session]
    templates: Jinja2Templates
    on_therapy_changed: TherapyHook | None
    today: Callable[[], date]
    monitoring: MonitoringConfig | None


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def db_session(request: Request) -> Iterator[Session]:
    with services(request).session_factory() as session:
        yield session


DbSession = Annotated[Session, Depends(db_session)]
App = Annotated[Services, Depends(services)]


def current_user(request: Request, session: DbSession) -> CurrentUser:
    user = authenticate(request, session)
    request.state.user = user
    return user


def any_user(user: Annotated[CurrentUser, Depends(current_user)]) -> CurrentUser:
    if user.role not in CLINICAL_ROLES:
        raise Forbidden()
    return user


def qa_user(user: Annotated[CurrentUser, Depends(current_user)]) -> CurrentUser:
    if user.role not in QA_ROLES:
        raise Forbidden()
    return user


User = Annotated[CurrentUser, Depends(any_user)]
QaUser = Annotated[CurrentUser, Depends(qa_user)]


def request_locale(request: Request) -> str:
    """The signed-in user's saved language, else the browser's, else English (web.i18n)."""
    user = getattr(request.state, "user", None)
    saved = None
    if user is not None:
        with services(request).session_factory() as session:
            saved = session.scalar(select(UserRow.locale).where(UserRow.id == user.id))
    return i18n.choose(saved, request.headers.get("accept-language"))


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    app = services(request)
    locale = request_locale(request)
    i18n.activate(locale)
    base = {
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
