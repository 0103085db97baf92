"""Sign-in, sessions, API tokens, CSRF and role checks.

Pages and the API share one rule: no data without an authenticated user. A page without a
session redirects to /login; `/api/*` answers 401 JSON instead (integrations send
`Authorization: Bearer <token>`; only the token's SHA-256 is stored). Forms carry a per-session
CSRF token; bearer-token requests need none, since a browser never sends that header by itself.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import anyio
from fastapi import Request
from sqlalchemy.orm import Session

from db import signin
from services.accounts import resume_session, token_user
from services.context import Context
from web.i18n import N_

ROLES = ("clinician", "qa", "admin")
QA_ROLES = frozenset({"qa", "admin"})
CLINICAL_ROLES = frozenset(ROLES)


def load_secret_key(configured: str | None, data_dir: Path) -> str:
    """The configured key, else one generated once and kept (mode 600) under the data dir, so
    sessions survive a restart without anyone having to invent a secret."""
    if configured:
        return configured
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(key, encoding="utf-8")
    return key


@dataclass(frozen=True)
class CurrentUser:
    id: int
    username: str
    role: str
    via_token: bool = False
    locale: str | None = None  # read with the session: a page needs no second connection for it

    @property
    def is_qa(self) -> bool:
        return self.role in QA_ROLES


class LoginRequired(Exception):
    """Raised by the auth dependency; turned into a redirect (pages) or a 401 (API)."""


class Forbidden(Exception):
    """The user is signed in but their role may not open this."""


class CsrfFailed(Exception):
    pass


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/api"


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, submitted: str | None) -> None:
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not submitted or not hmac.compare_digest(expected, submitted):
        raise CsrfFailed()


def authenticate(request: Request, session: Session, ctx: Context) -> CurrentUser:
    """The user of this request, by bearer token (API only) or by session cookie."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer ") and is_api(request):
        user = token_user(ctx, header[7:].strip(), reader=session)
        if user is None:
            raise LoginRequired()
        return CurrentUser(user.id, user.username, user.role, via_token=True, locale=user.locale)
    secret = request.session.get("sid")
    if not isinstance(secret, str):
        raise LoginRequired()
    user = resume_session(ctx, secret, request.session.get("role"), session_times(request), reader=session)
    if user is None:
        request.session.clear()
        raise LoginRequired()
    return CurrentUser(user.id, user.username, user.role, locale=user.locale)


def session_times(request: Request) -> signin.SessionTimes:
    settings = request.app.state.services.settings
    return signin.SessionTimes(
        idle=timedelta(minutes=settings.session_idle_minutes), absolute=timedelta(hours=settings.session_max_hours)
    )


def throttle_rule(request: Request) -> signin.ThrottleRule:
    settings = request.app.state.services.settings
    return signin.ThrottleRule(
        window=timedelta(minutes=settings.signin_window_minutes),
        per_account=settings.signin_max_failures_per_account,
        per_address=settings.signin_max_failures_per_address,
    )


def client_address(request: Request) -> str:
    """The peer's address (a trusted reverse proxy is configured to pass the real one to uvicorn
    with --proxy-headers; an X-Forwarded-For from anyone else is not believed)."""
    return request.client.host if request.client else "unknown"


SLOT_POLL_S = 0.05


async def take_password_slot(request: Request) -> bool:
    """Wait for one of this web process's password-check slots (`DXA_SIGNIN_CONCURRENCY`) without
    holding a server thread, for up to `DXA_SIGNIN_QUEUE_SECONDS`; False when none came free.
    Fifty people signing in at once are then served a few at a time, each within seconds, instead
    of fifty Argon2 checks (64 MiB each) slowing the whole machine down together."""
    slots: threading.BoundedSemaphore = request.app.state.signin_slots
    deadline = time.monotonic() + request.app.state.services.settings.signin_queue_seconds
    while not slots.acquire(blocking=False):
        if time.monotonic() >= deadline:
            return False
        await anyio.sleep(SLOT_POLL_S)
    return True


def give_back_password_slot(request: Request) -> None:
    slots: threading.BoundedSemaphore = request.app.state.signin_slots
    slots.release()


BUSY_MESSAGE = N_("Many people are signing in at this moment. Please try again in a few seconds.")
