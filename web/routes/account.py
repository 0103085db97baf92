"""The signed-in user's own account: a new password (every other session of the user ends; audited)."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from services.accounts import PasswordRefused, change_own_password
from services.users import MIN_PASSWORD_LENGTH
from web.auth import (
    BUSY_MESSAGE,
    check_csrf,
    client_address,
    give_back_password_slot,
    take_password_slot,
    throttle_rule,
)
from web.deps import App, User, actor, render
from web.i18n import N_

router = APIRouter()

REFUSALS = {
    "wrong_current": (N_("The current password is wrong."), 400),
    "too_short": (N_("The new password must have at least 8 characters."), 422),
    "same": (N_("The new password must differ from the current one."), 422),
    "throttled": (N_("Too many wrong passwords for this account. Try again in a few minutes."), 429),
}


def _page(request: Request, error: str | None = None, done: bool = False, status_code: int = 200) -> Response:
    context = {"error": error, "done": done, "min_length": MIN_PASSWORD_LENGTH}
    return render(request, "account_password.html", context, status_code=status_code)


@router.get("/account/password", include_in_schema=False)
def password_form(request: Request, _: User) -> Response:
    return _page(request)


@router.post("/account/password", include_in_schema=False)
async def change_password(
    request: Request,
    app: App,
    user: User,
    current_password: Annotated[str, Form()],
    new_password: Annotated[str, Form()],
    new_password_again: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, csrf_token)
    if new_password != new_password_again:
        return _page(request, N_("The two new passwords differ."), status_code=422)
    if not await take_password_slot(request):  # two Argon2 computations: they queue like sign-ins
        response = _page(request, BUSY_MESSAGE, status_code=503)
        response.headers["Retry-After"] = "5"
        return response
    secret = request.session.get("sid")
    try:
        changed = await run_in_threadpool(
            partial(
                change_own_password,
                app.ctx,
                actor(user),
                current_password,
                new_password,
                client_address(request),
                throttle_rule(request),
                min_length=MIN_PASSWORD_LENGTH,
                old_secret=secret if isinstance(secret, str) else "",
            )
        )
    except PasswordRefused as refused:
        message, status = REFUSALS[refused.reason]
        return _page(request, message, status_code=status)
    finally:
        give_back_password_slot(request)
    request.session["sid"] = changed.session_secret  # this browser stays signed in, on a new session
    return _page(request, done=True)
