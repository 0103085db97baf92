"""Signing in and out: a password checked (throttled, and every attempt audited), a server-side
session opened, resumed on each request (and ended when idle, too old, or its user changed), an
API token resolved (its last use stamped). Each in a transaction of its own, so the web app's
request sessions only read.

Short transactions, because the embedded database has one writer at a time and the ingestion
needs it: a sign-in reads, checks the password (Argon2: a large fraction of a second of CPU on a
busy machine) outside any transaction, then writes in a short one; resuming a session on each
page only reads, and stamps the session's last use at most once a minute, skipping the stamp
(until the next page) rather than waiting when another writer holds the lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from db import accounts, signin
from db.engine import brief_lock_wait, reading, retry_transient
from services.audit import ANONYMOUS, Actor, record
from services.context import Context
from services.logsafe import describe

log = logging.getLogger(__name__)

TOUCH_WAIT_S = 1.0  # how long a page waits for the write lock to stamp its session's last use


@dataclass(frozen=True)
class SignedIn:
    id: int
    username: str
    role: str
    session_secret: str = ""  # for the cookie, when a session was opened
    locale: str | None = None  # the dashboard language saved on the account (None: the browser's)

    @property
    def actor(self) -> Actor:
        return Actor(self.username, self.id)


@dataclass(frozen=True)
class SignInAttempt:
    """What a sign-in read before the password is checked: a throttle in force, or the stored
    hash (None for an unknown or disabled user: the check then does the same work for nothing)."""

    username: str
    address: str
    rule: signin.ThrottleRule
    locked: signin.Throttled | None
    stored: str | None


def start_sign_in(ctx: Context, username: str, address: str, rule: signin.ThrottleRule) -> SignInAttempt:
    """Step 1 of 3, reads only (tried again through a database restart)."""

    def look() -> SignInAttempt:
        with reading(ctx.sessions) as session:
            locked = signin.throttled(session, username, address, rule)
            stored = accounts.stored_hash(session, username) if locked is None else None
            return SignInAttempt(username, address, rule, locked, stored)

    return retry_transient(look)


def check_password(attempt: SignInAttempt, password: str) -> bool:
    """Step 2 of 3: the Argon2 check, with no transaction open (a fraction of a CPU second and
    64 MiB: the web app runs a few at a time, `DXA_SIGNIN_CONCURRENCY`)."""
    return attempt.locked is None and accounts.password_matches(attempt.stored, password)


def finish_sign_in(
    ctx: Context, attempt: SignInAttempt, password: str, matches: bool, *, old_secret: str | None
) -> SignedIn | signin.Throttled | None:
    """Step 3 of 3, a short write: the user with a new session when the password was right;
    `Throttled` while too many recent failures for this user name or address (asked again here,
    so sign-ins checked side by side cannot slip past it); None for a wrong password. All audited.
    Work lost with its connection before the commit is done again on a new one."""

    def write() -> tuple[Session, SignedIn | signin.Throttled | None]:
        session = ctx.sessions()
        try:
            session.begin()
            return session, _outcome(session, attempt, password, matches, old_secret)
        except BaseException:
            session.close()
            raise

    session, outcome = retry_transient(write)
    with session:
        session.commit()  # never repeated: a commit whose answer was lost may have happened
    return outcome


def sign_in(
    ctx: Context, username: str, password: str, address: str, rule: signin.ThrottleRule, *, old_secret: str | None
) -> SignedIn | signin.Throttled | None:
    """The three steps in one call (the command line, tests); the web app queues step 2."""
    attempt = start_sign_in(ctx, username, address, rule)
    return finish_sign_in(ctx, attempt, password, check_password(attempt, password), old_secret=old_secret)


def _outcome(
    session: Session, attempt: SignInAttempt, password: str, matches: bool, old_secret: str | None
) -> SignedIn | signin.Throttled | None:
    locked = attempt.locked or signin.throttled(session, attempt.username, attempt.address, attempt.rule)
    if locked is not None:
        record(session, ANONYMOUS, "login_throttled", by=locked.by)
        return locked
    user = None
    if matches and attempt.stored:
        user = accounts.confirm_user(session, attempt.username, attempt.stored, password)
    if user is None:
        signin.record_failure(session, attempt.username, attempt.address, attempt.rule)
        record(session, ANONYMOUS, "login_failed")
        return None
    signin.clear_failures(session, attempt.username)
    if old_secret:
        signin.revoke_session(session, old_secret)
    signed = SignedIn(user.id, user.username, user.role, signin.open_session(session, user))
    record(session, signed.actor, "login")
    session.flush()
    return signed


def resume_session(
    ctx: Context, secret: str, role: object, times: signin.SessionTimes, *, reader: Session | None = None
) -> SignedIn | None:
    """The user of a live session whose role is still the one it was opened with; else None (and
    a session that ran out, or whose user's role changed, is ended).

    `reader`: the request's own read session, so a page's sign-in check costs no connection and
    no transaction of its own (a fault there fails the request, which the web app tries again)."""

    def look(session: Session) -> tuple[signin.FoundSession | None, SignedIn | None]:
        found = signin.find_session(session, secret, times)
        user = found.user if found is not None else None
        live = SignedIn(user.id, user.username, user.role, locale=user.locale) if user is not None else None
        return found, live

    def look_apart() -> tuple[signin.FoundSession | None, SignedIn | None]:
        with reading(ctx.sessions) as session:
            return look(session)

    found, live = look(reader) if reader is not None else retry_transient(look_apart)
    if found is None:
        return None
    if live is None or live.role != role:
        with ctx.sessions.begin() as session:
            signin.revoke_session(session, secret)
        return None
    if found.touch_due:
        _stamp_last_use(ctx, secret)
    return live


def _stamp_last_use(ctx: Context, secret: str) -> None:
    """Best effort: when the write lock is not free within TOUCH_WAIT_S, the next page stamps it
    (the idle timeout is 30 minutes; a stamp is due once a minute)."""
    try:
        with reading(ctx.sessions) as session:
            brief_lock_wait(session, TOUCH_WAIT_S)
            signin.touch_session(session, secret)
            session.commit()
    except SQLAlchemyError as exc:  # a lock, a lost connection: never a reason to fail the page
        log.debug("session last-use stamp skipped: %s", describe(exc))


def sign_out(ctx: Context, secret: str) -> None:
    """End the session on the server: a copy of the cookie saved before is worthless after."""
    with ctx.sessions.begin() as session:
        signin.revoke_session(session, secret)


def token_user(ctx: Context, token: str, *, reader: Session | None = None) -> SignedIn | None:
    """The active user behind a non-revoked API token (only its SHA-256 is stored), read with
    `reader` (the request's read session) when given. Its last use is stamped at most once a
    minute (`accounts.TOKEN_TOUCH_EVERY`), in a short write of its own that is skipped rather than
    waited for when the lock is busy: an integration polling every second costs no write per call."""

    def look(session: Session) -> tuple[accounts.FoundToken | None, SignedIn | None]:
        found = accounts.find_api_token(session, token)
        if found is None:
            return None, None
        user = found.user
        return found, SignedIn(user.id, user.username, user.role, locale=user.locale)

    def look_apart() -> tuple[accounts.FoundToken | None, SignedIn | None]:
        with reading(ctx.sessions) as session:
            return look(session)

    found, live = look(reader) if reader is not None else retry_transient(look_apart)
    if found is not None and found.touch_due:
        try:
            with reading(ctx.sessions) as session:
                brief_lock_wait(session, TOUCH_WAIT_S)
                accounts.touch_api_token(session, found.token_id)
                session.commit()
        except SQLAlchemyError as exc:  # a lock, a lost connection: never a reason to fail the call
            log.debug("API token last-use stamp skipped: %s", describe(exc))
    return live


class PasswordRefused(Exception):
    """Why a password change was refused: `wrong_current`, `too_short`, `same`, `throttled`."""

    def __init__(self, reason: str, retry_after_s: int = 0) -> None:
        super().__init__(reason)
        self.reason, self.retry_after_s = reason, retry_after_s


@dataclass(frozen=True)
class PasswordChanged:
    session_secret: str  # a new session for the browser that made the change
    other_sessions_ended: int


def change_own_password(
    ctx: Context,
    actor: Actor,
    current: str,
    new: str,
    address: str,
    rule: signin.ThrottleRule,
    *,
    min_length: int,
    old_secret: str,
) -> PasswordChanged:
    """A signed-in user sets a new password. The current one must be given (a session left open
    on a shared workstation is not the account), and a wrong one counts against the sign-in
    throttle like a failed sign-in. Every session of the user ends, the others included (whoever
    knew the old password is out); this browser gets a new one. Audited, without the passwords.
    The Argon2 work (checking the old, hashing the new) runs outside any transaction."""
    if len(new) < min_length:
        raise PasswordRefused("too_short")
    attempt = start_sign_in(ctx, actor.username, address, rule)
    if attempt.locked is not None:
        raise PasswordRefused("throttled", attempt.locked.retry_after_s)
    if not check_password(attempt, current):
        with ctx.sessions.begin() as session:
            signin.record_failure(session, actor.username, address, rule)
            record(session, actor, "password_change_refused", reason="wrong current password")
        raise PasswordRefused("wrong_current")
    if new == current:
        raise PasswordRefused("same")
    hashed = accounts.hash_password(new)
    with ctx.sessions.begin() as session:
        user = accounts.get_user(session, actor.username)
        if user is None or not user.active or user.id != actor.user_id or user.password_hash != attempt.stored:
            raise PasswordRefused("wrong_current")  # changed or disabled meanwhile: check again
        ended = accounts.set_password_hash(session, user, hashed)
        signin.revoke_session(session, old_secret)
        secret = signin.open_session(session, user)
        others = max(0, ended - 1)
        record(session, actor, "user_password_changed", by="self", other_sessions_ended=others)
    return PasswordChanged(secret, others)
