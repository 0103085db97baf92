"""The user's language for the dashboard: saved on the account, so it follows the user to any
browser; until chosen, the browser's Accept-Language decides (web.i18n)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from services.users import set_language
from web.auth import check_csrf
from web.deps import App, User, actor

router = APIRouter()


def _same_site(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") else "/patients"


@router.post("/settings/language", include_in_schema=False)
def choose_language(
    request: Request,
    app: App,
    user: User,
    locale: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/patients",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, csrf_token)
    try:
        set_language(app.ctx, actor(user), locale or None)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    return RedirectResponse(_same_site(next), status_code=303)
