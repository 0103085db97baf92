"""Signing in: a password checked (and the attempt audited), an API token resolved (and its last
use stamped). Each in a transaction of its own, so the web app's request sessions only read.
"""

from __future__ import annotations

from dataclasses import dataclass

from db import accounts
from services.audit import ANONYMOUS, Actor, record
from services.context import Context


@dataclass(frozen=True)
class SignedIn:
    id: int
    username: str
    role: str

    @property
    def actor(self) -> Actor:
        return Actor(self.username, self.id)


def sign_in(ctx: Context, username: str, password: str) -> SignedIn | None:
    """The user when the password is right, else None; both audited (`login`, `login_failed`)."""
    with ctx.sessions.begin() as session:
        user = accounts.verify_user(session, username, password)
        if user is None:
            record(session, ANONYMOUS, "login_failed")
            return None
        signed = SignedIn(user.id, user.username, user.role)
        record(session, signed.actor, "login")
    return signed


def token_user(ctx: Context, token: str) -> SignedIn | None:
    """The active user behind a non-revoked API token (only its SHA-256 is stored)."""
    with ctx.sessions.begin() as session:
        user = accounts.verify_api_token(session, token)
        return SignedIn(user.id, user.username, user.role) if user is not None else None
