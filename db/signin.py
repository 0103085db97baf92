"""Server-side web sessions and the sign-in throttle.

A session cookie only carries a random secret; the row (its SHA-256) says whose session it is and
whether it still holds: revoked at sign-out, on a password change and when the account is
disabled, over after `idle` unused or `absolute` after sign-in. A stolen or saved cookie therefore
stops working when the user signs out, instead of for as long as its signature is valid.

The throttle counts failed sign-ins in a sliding window by the name typed (whether or not such an
account exists, so the answer reveals nothing) and by client address. Once either reaches its
limit, sign-in is refused without checking the password until the oldest counted failure leaves
the window. It lives in the database, so several web processes share it. Nothing here commits.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, NamedTuple

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from db.models import LoginFailure, User, WebSession, utcnow

TOUCH_EVERY = timedelta(seconds=60)  # last_seen_at is written at most this often per session


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SessionTimes:
    idle: timedelta = timedelta(minutes=30)
    absolute: timedelta = timedelta(hours=8)


def open_session(session: Session, user: User, *, now: datetime | None = None) -> str:
    """A new session for `user`; returns the secret for the cookie (only its hash is kept)."""
    moment = now or utcnow()
    secret = secrets.token_urlsafe(32)
    session.add(WebSession(token_hash=_hash(secret), user_id=user.id, created_at=moment, last_seen_at=moment))
    session.flush()
    return secret


class SessionUser(NamedTuple):
    """The user of a session, as a page needs it: read as plain columns with the session row."""

    id: int
    username: str
    role: str
    locale: str | None
    active: bool


@dataclass(frozen=True)
class FoundSession:
    """A session row looked up by its secret: its user while it holds, whether it must now be
    ended (idle or too old, its user disabled or gone), whether its last use is worth stamping."""

    user: SessionUser | None
    must_end: bool = False
    touch_due: bool = False


# Every page asks this: one statement, built once, plain columns (loading and tracking a session
# and a user entity cost a page more than the query, issue 13).
_FIND = (
    select(
        WebSession.revoked_at,
        WebSession.last_seen_at,
        WebSession.created_at,
        User.id,
        User.username,
        User.role,
        User.locale,
        User.active,
    )
    .outerjoin(User, User.id == WebSession.user_id)
    .where(WebSession.token_hash == bindparam("token_hash"))
)


def find_session(
    session: Session, secret: str, times: SessionTimes, *, now: datetime | None = None
) -> FoundSession | None:
    """Reads only (a page's sign-in check must not queue for the write lock); None when the
    session is unknown or already ended. The caller ends it (`revoke_session`) or stamps it
    (`touch_session`) in a write of its own."""
    moment = now or utcnow()
    found = session.connection().execute(_FIND, {"token_hash": _hash(secret)}).one_or_none()
    if found is None or found[0] is not None:
        return None
    _, last_seen_at, created_at, user_id, username, role, locale, active = found
    expired = moment - last_seen_at > times.idle or moment - created_at > times.absolute
    if user_id is None or not active or expired:
        return FoundSession(None, must_end=True)
    return FoundSession(
        SessionUser(user_id, username, role, locale, active), touch_due=moment - last_seen_at >= TOUCH_EVERY
    )


def touch_session(session: Session, secret: str, *, now: datetime | None = None) -> None:
    """Stamp the session's last use (the idle timeout counts from it)."""
    session.execute(
        update(WebSession)
        .where(WebSession.token_hash == _hash(secret), WebSession.revoked_at.is_(None))
        .values(last_seen_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )


def session_user(
    session: Session, secret: str, times: SessionTimes, *, now: datetime | None = None
) -> SessionUser | None:
    """The active user of a live session, its last use recorded; None when the session is unknown,
    revoked, idle too long or too old (it is then revoked, so it cannot come back). In one
    transaction that writes: for tools and tests; the web app splits it (`services.accounts`)."""
    found = find_session(session, secret, times, now=now)
    if found is None:
        return None
    if found.must_end:
        revoke_session(session, secret, now=now)
        return None
    if found.touch_due:
        touch_session(session, secret, now=now)
    return found.user


def revoke_session(session: Session, secret: str, *, now: datetime | None = None) -> None:
    session.execute(
        update(WebSession)
        .where(WebSession.token_hash == _hash(secret), WebSession.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )


def revoke_user_sessions(session: Session, user_id: int, *, now: datetime | None = None) -> int:
    """End every session of a user (password changed, account disabled); how many were live."""
    result = session.execute(
        update(WebSession)
        .where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --------------------------------------------------------------------------- throttle


@dataclass(frozen=True)
class ThrottleRule:
    window: timedelta = timedelta(minutes=15)
    per_account: int = 5
    per_address: int = 20


@dataclass(frozen=True)
class Throttled:
    by: Literal["account", "address"]
    retry_after_s: int


def _key(username: str) -> str:
    return username.strip().lower()[:128]


def _wait(
    session: Session, column: InstrumentedAttribute[str], value: str, limit: int, rule: ThrottleRule, now: datetime
) -> int:
    """Seconds until fewer than `limit` failures for `value` remain in the window (0: not locked)."""
    since = now - rule.window
    times = list(
        session.scalars(
            select(LoginFailure.occurred_at)
            .where(column == value, LoginFailure.occurred_at > since)
            .order_by(LoginFailure.occurred_at.desc())
            .limit(limit)
        )
    )
    if len(times) < limit:
        return 0
    return max(1, int((times[-1] + rule.window - now).total_seconds()) + 1)


def throttled(
    session: Session, username: str, address: str, rule: ThrottleRule, *, now: datetime | None = None
) -> Throttled | None:
    moment = now or utcnow()
    account = _wait(session, LoginFailure.username, _key(username), rule.per_account, rule, moment)
    if account:
        return Throttled("account", account)
    by_address = _wait(session, LoginFailure.address, address[:64], rule.per_address, rule, moment)
    return Throttled("address", by_address) if by_address else None


def record_failure(
    session: Session, username: str, address: str, rule: ThrottleRule, *, now: datetime | None = None
) -> None:
    moment = now or utcnow()
    session.add(LoginFailure(username=_key(username), address=address[:64], occurred_at=moment))
    session.execute(delete(LoginFailure).where(LoginFailure.occurred_at < moment - 2 * rule.window))
    session.flush()


def clear_failures(session: Session, username: str) -> None:
    """A successful sign-in forgives the account's earlier mistakes (not the address's)."""
    session.execute(delete(LoginFailure).where(LoginFailure.username == _key(username)))


def failure_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(LoginFailure)) or 0)
