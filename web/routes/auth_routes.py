"""Sign-in, sign-out and the health check (the only routes open without a login)."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from db.signin import Throttled
from services.accounts import check_password, finish_sign_in, sign_out, start_sign_in
from web.auth import (
    BUSY_MESSAGE,
    check_csrf,
    client_address,
    give_back_password_slot,
    take_password_slot,
    throttle_rule,
)
from web.deps import App, User, render, services
from web.queries import health as health_q

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only a local path: `next` must never send a user to another site after signing in."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/patients"


@router.get("/healthz", include_in_schema=False)
def healthz(request: Request) -> Response:
    try:
        with services(request).read_sessions() as session:
            health_q.database_answers(session)
    except SQLAlchemyError:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


@router.get("/", include_in_schema=False)
def home(_: User) -> RedirectResponse:
    return RedirectResponse("/patients", status_code=303)


@router.get("/login", include_in_schema=False)
def login_form(request: Request, next: str | None = None) -> Response:
    return render(request, "login.html", {"next": _safe_next(next), "error": None})


@router.post("/login", include_in_schema=False)
async def login(
    request: Request,
    app: App,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/patients",
) -> Response:
    """Sign-ins queue for a password-check slot (`web.auth.take_password_slot`) for the Argon2
    check only, never while waiting for the database; one that cannot get a slot within
    `DXA_SIGNIN_QUEUE_SECONDS` is asked to try again (503, Retry-After)."""
    check_csrf(request, csrf_token)
    old = request.session.get("sid")
    attempt = await run_in_threadpool(start_sign_in, app.ctx, username, client_address(request), throttle_rule(request))
    matches = False
    if attempt.locked is None:
        if not await take_password_slot(request):
            context = {"next": _safe_next(next), "error": BUSY_MESSAGE}
            response = render(request, "login.html", context, status_code=503)
            response.headers["Retry-After"] = "5"
            return response
        try:
            matches = await run_in_threadpool(check_password, attempt, password)
        finally:
            give_back_password_slot(request)
    outcome = await run_in_threadpool(
        partial(finish_sign_in, app.ctx, attempt, password, matches, old_secret=old if isinstance(old, str) else None)
    )
    if isinstance(outcome, Throttled):
        minutes = max(1, -(-outcome.retry_after_s // 60))
        who = "this user name" if outcome.by == "account" else "this computer"
        error = (
            f"Too many failed sign-ins for {who}. Sign-in is paused for {minutes} minute"
            f"{'s' if minutes != 1 else ''}; try again then, or ask an administrator to reset the password."
        )
        response = render(request, "login.html", {"next": _safe_next(next), "error": error}, status_code=429)
        response.headers["Retry-After"] = str(outcome.retry_after_s)
        return response
    if outcome is None:
        context = {"next": _safe_next(next), "error": "Wrong user name or password."}
        return render(request, "login.html", context, status_code=401)
    request.session.clear()  # a fresh session (and CSRF token) on every sign-in
    request.session.update({"sid": outcome.session_secret, "role": outcome.role})
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout", include_in_schema=False)
def logout(request: Request, app: App, csrf_token: Annotated[str, Form()] = "") -> Response:
    """Ends the session on the server too: a copy of the cookie saved before is worthless after."""
    check_csrf(request, csrf_token)
    secret = request.session.get("sid")
    if isinstance(secret, str):
        sign_out(app.ctx, secret)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
