"""Signing in and out: a password checked (throttled, and every attempt audited), a server-side
session opened, resumed on each request (and ended when idle, too old, or its user changed), an
API token resolved (its last use stamped). Each in a transaction of its own, so the web app's
request sessions only read.
"""

from __future__ import annotations

from dataclasses import dataclass

from db import accounts, signin
from services.audit import ANONYMOUS, Actor, record
from services.context import Context


@dataclass(frozen=True)
class SignedIn:
    id: int
    username: str
    role: str
    session_secret: str = ""  # for the cookie, when a session was opened

    @property
    def actor(self) -> Actor:
        return Actor(self.username, self.id)


def sign_in(
    ctx: Context, username: str, password: str, address: str, rule: signin.ThrottleRule, *, old_secret: str | None
) -> SignedIn | signin.Throttled | None:
    """The user with a new session when the password is right; `Throttled` while too many recent
    failures for this user name or address; None for a wrong password. All audited."""
    with ctx.sessions.begin() as session:
        locked = signin.throttled(session, username, address, rule)
        if locked is not None:
            record(session, ANONYMOUS, "login_throttled", by=locked.by)
            return locked
        user = accounts.verify_user(session, username, password)
        if user is None:
            signin.record_failure(session, username, address, rule)
            record(session, ANONYMOUS, "login_failed")
            return None
        signin.clear_failures(session, username)
        if old_secret:
            signin.revoke_session(session, old_secret)
        signed = SignedIn(user.id, user.username, user.role, signin.open_session(session, user))
        record(session, signed.actor, "login")
    return signed


def resume_session(ctx: Context, secret: str, role: object, times: signin.SessionTimes) -> SignedIn | None:
    """The user of a live session whose role is still the one it was opened with; else None (and
    a session whose user's role changed is ended)."""
    with ctx.sessions.begin() as session:
        user = signin.session_user(session, secret, times)
        if user is None or user.role != role:
            if user is not None:
                signin.revoke_session(session, secret)
            return None
        return SignedIn(user.id, user.username, user.role)


def sign_out(ctx: Context, secret: str) -> None:
    """End the session on the server: a copy of the cookie saved before is worthless after."""
    with ctx.sessions.begin() as session:
        signin.revoke_session(session, secret)


def token_user(ctx: Context, token: str) -> SignedIn | None:
    """The active user behind a non-revoked API token (only its SHA-256 is stored)."""
    with ctx.sessions.begin() as session:
        user = accounts.verify_api_token(session, token)
        return SignedIn(user.id, user.username, user.role) if user is not None else None
