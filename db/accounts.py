"""Users (Argon2 password hashes), API tokens (SHA-256 of a random secret) and the audit trail.

Verification does the same Argon2 work for an unknown user as for a known one, so response
time does not reveal which usernames exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from db.models import ROLES, ApiToken, AuditEvent, User, utcnow
from db.signin import revoke_user_sessions

RoleName = Literal["clinician", "qa", "admin"]
TOKEN_PREFIX = "dxa_"

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not a password anyone has")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def get_user(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username.strip())).one_or_none()


def create_user(session: Session, username: str, password: str, role: RoleName) -> User:
    name = username.strip()
    if not name:
        raise ValueError("username is empty")
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    if not password:
        raise ValueError("password is empty")
    if get_user(session, name) is not None:
        raise ValueError(f"user {name!r} exists")
    user = User(username=name, password_hash=hash_password(password), role=role, active=True)
    session.add(user)
    session.flush()
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def count_users(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(User)) or 0)


def delete_user(session: Session, user: User) -> None:
    """Remove the account and its API tokens; audit events keep the name as the actor."""
    session.delete(user)
    session.flush()


def set_password(session: Session, user: User, password: str) -> None:
    """A new password ends every web session of the user: whoever knew the old one is out."""
    if not password:
        raise ValueError("password is empty")
    set_password_hash(session, user, hash_password(password))


def set_password_hash(session: Session, user: User, hashed: str) -> int:
    """`set_password` with the Argon2 work done beforehand, outside the transaction; returns how
    many live sessions it ended."""
    user.password_hash = hashed
    ended = revoke_user_sessions(session, user.id)
    session.flush()
    return ended


def set_active(session: Session, user: User, active: bool) -> None:
    user.active = active
    if not active:
        revoke_user_sessions(session, user.id)
    session.flush()


def verify_user(session: Session, username: str, password: str, *, now: datetime | None = None) -> User | None:
    """The active user with this password, or None, in one transaction (the command line, tests).
    The web sign-in splits this in three (`stored_hash`, `password_matches`, `confirm_user`) so that
    no transaction stays open during the Argon2 work."""
    stored = stored_hash(session, username)
    if not password_matches(stored, password):
        return None
    assert stored is not None
    return confirm_user(session, username, stored, password, now=now)


def stored_hash(session: Session, username: str) -> str | None:
    """The password hash of the active user of this name; None when there is no such user."""
    user = get_user(session, username)
    return user.password_hash if user is not None and user.active else None


def password_matches(stored: str | None, password: str) -> bool:
    """Argon2 verification, with the same work for an unknown user (`stored` None) as for a known
    one. Pure CPU and memory (64 MiB per call): called outside any transaction."""
    if stored is None:
        with contextlib.suppress(VerificationError):
            _hasher.verify(_DUMMY_HASH, password)
        return False
    try:
        return bool(_hasher.verify(stored, password))
    except (VerificationError, InvalidHashError):
        return False


def confirm_user(
    session: Session, username: str, checked: str, password: str, *, now: datetime | None = None
) -> User | None:
    """The user whose password `checked` (the hash `password_matches` accepted) still is and who
    is still active: a password changed or an account disabled while the hash was being checked
    wins. Stamps the sign-in; upgrades the stored hash when Argon2's parameters were raised."""
    user = get_user(session, username)
    if user is None or not user.active or user.password_hash != checked:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = now or utcnow()
    session.flush()
    return user


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_api_token(session: Session, user: User, name: str) -> tuple[ApiToken, str]:
    """A new token; the secret is returned once and only its hash is kept."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=name.strip() or "token", token_hash=_token_hash(secret))
    session.add(row)
    session.flush()
    return row, secret


TOKEN_TOUCH_EVERY = timedelta(seconds=60)  # an API token's last_used_at is written at most this often


@dataclass(frozen=True)
class FoundToken:
    token_id: int
    user: User
    touch_due: bool  # its last use is older than TOKEN_TOUCH_EVERY (or never stamped)


def find_api_token(session: Session, token: str, *, now: datetime | None = None) -> FoundToken | None:
    """The live token and its active user, in one read that writes nothing (the caller stamps the
    last use with `touch_api_token` when `touch_due`); None for an unknown, revoked or disabled one."""
    found = session.execute(
        select(ApiToken.id, ApiToken.last_used_at, ApiToken.revoked_at, User)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == _token_hash(token.strip()))
    ).one_or_none()
    if found is None:
        return None
    token_id, last_used, revoked, user = found
    if revoked is not None or not user.active:
        return None
    moment = now or utcnow()
    return FoundToken(token_id, user, last_used is None or moment - last_used >= TOKEN_TOUCH_EVERY)


def touch_api_token(session: Session, token_id: int, *, now: datetime | None = None) -> None:
    session.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id)
        .values(last_used_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )


def verify_api_token(session: Session, token: str, *, now: datetime | None = None) -> User | None:
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == _token_hash(token.strip()))).one_or_none()
    if row is None or row.revoked_at is not None or not row.user.active:
        return None
    row.last_used_at = now or utcnow()
    session.flush()
    return row.user


def revoke_api_token(session: Session, token_id: int, *, now: datetime | None = None) -> bool:
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = now or utcnow()
    session.flush()
    return True


def record_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    patient_id: int | None = None,
    user_id: int | None = None,
    detail: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> AuditEvent:
    """Append an audit event (e.g. action "patient_viewed", "patient_exported")."""
    event = AuditEvent(**_audit_values(actor, action, patient_id, user_id, detail, now))
    session.add(event)
    session.flush()
    return event


def append_audit(
    session: Session,
    *,
    actor: str,
    action: str,
    patient_id: int | None = None,
    user_id: int | None = None,
    detail: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    """`record_audit` as one plain INSERT: no object to track, no id read back (the unit of work,
    and then the ORM's bulk-insert path, cost a page more than the insert itself, issue 13)."""
    if session.autoflush:
        session.flush()  # as session.execute would: pending rows first
    session.connection().execute(_AUDIT_INSERT, _audit_values(actor, action, patient_id, user_id, detail, now))


_AUDIT_INSERT = insert(AuditEvent.__table__).inline()  # type: ignore[arg-type]  # built once; no RETURNING


def _audit_values(
    actor: str,
    action: str,
    patient_id: int | None,
    user_id: int | None,
    detail: dict[str, Any] | None,
    now: datetime | None,
) -> dict[str, Any]:
    return {
        "occurred_at": now or utcnow(),
        "actor": actor,
        "user_id": user_id,
        "action": action,
        "patient_id": patient_id,
        "detail": dict(detail or {}),
    }


def list_audit_events(
    session: Session,
    *,
    action: str | None = None,
    patient_id: int | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    stmt = select(AuditEvent).order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc()).limit(limit)
    if action is not None:
        stmt = stmt.where(AuditEvent.action == action)
    if patient_id is not None:
        stmt = stmt.where(AuditEvent.patient_id == patient_id)
    if since is not None:
        stmt = stmt.where(AuditEvent.occurred_at >= since)
    return list(session.scalars(stmt))
