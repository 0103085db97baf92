"""The user's language for the dashboard: saved on the account, so it follows the user to any
browser; until chosen, the browser's Accept-Language decides (web.i18n)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from db.models import User as UserRow
from web import i18n, queries
from web.auth import check_csrf
from web.deps import DbSession, User

router = APIRouter()


def _same_site(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") else "/patients"


@router.post("/settings/language", include_in_schema=False)
def choose_language(
    request: Request,
    session: DbSession,
    user: User,
    locale: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/patients",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, csrf_token)
    if locale not in (*i18n.LOCALES, ""):
        raise HTTPException(422, "unknown language")
    row = session.get(UserRow, user.id)
    if row is None:
        raise HTTPException(404, "no such user")
    row.locale = locale or None
    queries.add_audit(session, user, "language_chosen", None, locale=locale or "browser")
    session.commit()
    return RedirectResponse(_same_site(next), status_code=303)
