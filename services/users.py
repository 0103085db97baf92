"""Account administration for the `dxa users` command and first start: each change is audited.

The first administrator of a deployment comes from `DXA_ADMIN_USER` and `DXA_ADMIN_PASSWORD_FILE`
(a docker secret) when no account exists yet; there is never a default password. The demo account
(`dxa serve` only) is for a workstation trial: `dxa users passwd demo` changes its password and
`dxa users remove demo` removes it once real accounts exist.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from db.accounts import (
    RoleName,
    count_users,
    create_user,
    delete_user,
    get_user,
    list_users,
    record_audit,
    set_active,
    set_password,
)
from db.models import User
from services.audit import Actor, record
from services.context import Context
from settings import Settings

log = logging.getLogger("dxa")

MIN_PASSWORD_LENGTH = 8
ACTOR = "cli"


class AccountError(ValueError):
    """A request the operator can correct (unknown user, short password, last administrator)."""


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    active: bool
    last_login: str | None


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    return password


def _user(session: Session, username: str) -> User:
    user = get_user(session, username)
    if user is None:
        raise AccountError(f"no user {username!r}")
    return user


def _audit(session: Session, action: str, user: User, actor: str, **detail: object) -> None:
    record_audit(session, actor=actor, action=action, user_id=user.id, detail={"username": user.username, **detail})


def _other_active_admins(session: Session, user: User) -> int:
    return sum(1 for u in list_users(session) if u.role == "admin" and u.active and u.id != user.id)


def accounts(session: Session) -> list[Account]:
    return [
        Account(
            u.username, u.role, u.active, u.last_login_at.isoformat(timespec="minutes") if u.last_login_at else None
        )
        for u in list_users(session)
    ]


def add(session: Session, username: str, password: str, role: RoleName, *, actor: str = ACTOR) -> None:
    if get_user(session, username) is not None:
        raise AccountError(f"user {username!r} exists already")
    user = create_user(session, username, check_password(password), role)
    _audit(session, "user_added", user, actor, role=role)


def change_password(session: Session, username: str, password: str, *, actor: str = ACTOR) -> None:
    user = _user(session, username)
    set_password(session, user, check_password(password))
    _audit(session, "user_password_changed", user, actor)


def set_enabled(session: Session, username: str, enabled: bool, *, actor: str = ACTOR) -> None:
    user = _user(session, username)
    if not enabled and user.role == "admin" and not _other_active_admins(session, user):
        raise AccountError("this is the last active administrator: add another one first")
    set_active(session, user, enabled)
    _audit(session, "user_enabled" if enabled else "user_disabled", user, actor)


def remove(session: Session, username: str, *, actor: str = ACTOR) -> None:
    user = _user(session, username)
    if user.role == "admin" and user.active and not _other_active_admins(session, user):
        raise AccountError("this is the last active administrator: add another one first")
    _audit(session, "user_removed", user, actor, role=user.role)
    delete_user(session, user)


def ensure_first_admin(sessions: sessionmaker[Session], settings: Settings) -> str | None:
    """On a deployment without any account, create the administrator named by `DXA_ADMIN_USER`
    with the password of `DXA_ADMIN_PASSWORD_FILE`. Returns the name when it was created. Without
    those variables nothing is created and the operator is told how to make the first account."""
    with sessions.begin() as session:
        if count_users(session):
            return None
        if not settings.admin_user or not settings.admin_password:
            log.warning(
                "no account exists yet: set DXA_ADMIN_USER and DXA_ADMIN_PASSWORD_FILE, "
                "or run `dxa users add NAME --role admin`"
            )
            return None
        add(session, settings.admin_user, settings.admin_password, "admin", actor="first-start")
        log.info("first administrator account created from DXA_ADMIN_USER")
        return settings.admin_user


LANGUAGES = ("en", "zh_CN")


def set_language(ctx: Context, actor: Actor, locale: str | None) -> None:
    """The signed-in user's dashboard language (`en`, `zh_CN`; None follows the browser), kept on
    the account so it follows the user to any browser; audited."""
    if locale is not None and locale not in LANGUAGES:
        raise ValueError(f"unknown language {locale!r}")
    with ctx.sessions.begin() as session:
        user = session.get(User, actor.user_id) if actor.user_id is not None else None
        if user is None:
            raise LookupError("no such user")
        user.locale = locale
        record(session, actor, "language_chosen", None, locale=locale or "browser")
